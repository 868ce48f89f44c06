#!/bin/sh
# Builds the .rpm with rpmbuild and packaging/rpm/gce-guest.spec: build.sh VERSION BINARY OUTDIR.
set -eu
version=$1 bin=$(realpath "$2") out=$3
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/../.." && pwd)
top=$(mktemp -d)
trap 'rm -rf "$top"' EXIT
rpmbuild -bb --quiet \
	--define "_topdir $top" \
	--define "gce_version $version" \
	--define "gce_bin $bin" \
	--define "gce_src $src" \
	--define "_build_id_links none" \
	"$here/gce-guest.spec" >/dev/null
mkdir -p "$out"
cp "$top"/RPMS/x86_64/gce-guest-"$version"-1.x86_64.rpm "$out/"
echo "$out/gce-guest-$version-1.x86_64.rpm"
