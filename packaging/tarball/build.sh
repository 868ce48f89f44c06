#!/bin/sh
# Builds gce-guest-VERSION-x86_64.tar.gz: the binary, the init files of every init system,
# install.sh (`./install.sh --init systemd|sysvinit|upstart|openrc|busybox`), README and
# LICENSE. build.sh VERSION BINARY OUTDIR.
set -eu
version=$1 bin=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
dir=$stage/gce-guest-$version
mkdir -p "$dir"
install -m 0755 "$bin" "$dir/gce-guest"
install -m 0755 "$src/packaging/install.sh" "$dir/install.sh"
cp -R "$src/init" "$dir/init"
install -m 0644 "$src/README.md" "$src/LICENSE" "$dir/"
mkdir -p "$out"
out=$(cd "$out" && pwd)
tar -C "$stage" --owner=0 --group=0 --numeric-owner --sort=name \
	-czf "$out/gce-guest-$version-x86_64.tar.gz" "gce-guest-$version"
echo "$out/gce-guest-$version-x86_64.tar.gz"
