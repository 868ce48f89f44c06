#!/bin/sh
# Builds the .deb with dpkg-deb: build.sh VERSION BINARY OUTDIR. The package carries the
# systemd units and the sysvinit scripts (Debian's init systems), the google_configs files
# and the initramfs-tools hook; its maintainer scripts are in this directory.
set -eu
version=$1 bin=$2 out=$3
here=$(cd "$(dirname "$0")" && pwd)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root=$stage/root
mkdir -p "$root/DEBIAN"

# Debian bookworm keeps units and udev rules under /lib.
export SYSTEMDUNITDIR=/lib/systemd/system SYSTEMDPRESETDIR=/lib/systemd/system-preset \
	UDEVRULESDIR=/lib/udev/rules.d
sh "$here/../install.sh" --destdir "$root" --bin "$bin" --init systemd >/dev/null
sh "$here/../install.sh" --destdir "$root" --bin "$bin" --init sysvinit --no-links >/dev/null
# instance_configs.cfg is created by postinst when absent, never shipped as a conffile.
rm -f "$root/etc/default/instance_configs.cfg"
rmdir "$root/etc/default"
install -D -m 0644 "$here/../../init/instance_configs.cfg" "$root/usr/share/gce-guest/instance_configs.cfg"

doc=$root/usr/share/doc/gce-guest
install -D -m 0644 "$here/copyright" "$doc/copyright"
sed "s/@VERSION@/$version/; s/@DATE@/$(date -R -u -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")/" \
	"$here/changelog.in" | gzip -9n >"$doc/changelog.gz"
install -D -m 0644 "$here/lintian-overrides" "$root/usr/share/lintian/overrides/gce-guest"

for s in postinst prerm postrm; do
	install -m 0755 "$here/$s" "$root/DEBIAN/$s"
done
(cd "$root" && find etc -type f | sort | sed 's|^|/|') >"$root/DEBIAN/conffiles"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -print | sort | sed 's|^\./||' |
	xargs md5sum) >"$root/DEBIAN/md5sums"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed "s/@VERSION@/$version/; s/@SIZE@/$size/" "$here/control.in" >"$root/DEBIAN/control"

mkdir -p "$out"
fakeroot dpkg-deb --root-owner-group -Zxz --build "$root" "$out/gce-guest_${version}_amd64.deb" >/dev/null
echo "$out/gce-guest_${version}_amd64.deb"
