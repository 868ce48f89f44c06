#!/bin/sh
# Installs gce-guest: the binary and its applet links, the init files of one init system,
# the config files of the original google_configs package, and
# /etc/default/instance_configs.cfg when it is absent. Used by `make install` and shipped
# in the tarball; POSIX sh, so it runs on busybox images too.
#
#   install.sh [--init systemd|sysvinit|upstart|openrc|busybox] [--destdir DIR]
#              [--bin FILE] [--rsyslog] [--no-links]
set -eu

usage() {
	sed -n 's/^#   //p' "$0" >&2
	exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
# In the tarball init/ lies beside this script; in the source tree one level up.
if [ -d "$here/init" ]; then src="$here/init"; else src="$here/../init"; fi
bin=
[ -f "$here/gce-guest" ] && bin="$here/gce-guest"
init=systemd
destdir=
rsyslog=0
links=1

while [ $# -gt 0 ]; do
	case "$1" in
	--init) [ $# -ge 2 ] || usage; init=$2; shift ;;
	--init=*) init=${1#--init=} ;;
	--destdir) [ $# -ge 2 ] || usage; destdir=$2; shift ;;
	--destdir=*) destdir=${1#--destdir=} ;;
	--bin) [ $# -ge 2 ] || usage; bin=$2; shift ;;
	--bin=*) bin=${1#--bin=} ;;
	--rsyslog) rsyslog=1 ;;
	--no-links) links=0 ;;
	-h|--help) usage ;;
	*) echo "install.sh: unknown argument $1" >&2; usage ;;
	esac
	shift
done

case "$init" in
systemd|sysvinit|upstart|openrc|busybox) ;;
*) echo "install.sh: --init must be systemd, sysvinit, upstart, openrc or busybox, not $init" >&2; exit 2 ;;
esac
[ -n "$bin" ] && [ -f "$bin" ] || { echo "install.sh: no binary (give --bin FILE)" >&2; exit 2; }

# Paths, overridable from the environment (as make passes them).
: "${BINDIR:=/usr/bin}"
: "${SYSTEMDUNITDIR:=/usr/lib/systemd/system}"
: "${SYSTEMDPRESETDIR:=/usr/lib/systemd/system-preset}"
: "${UDEVRULESDIR:=/usr/lib/udev/rules.d}"
: "${DRACUTMODDIR:=/usr/lib/dracut/modules.d}"
: "${INITRAMFSTOOLSDIR:=/usr/share/initramfs-tools}"
: "${DATADIR:=/usr/share/gce-guest}"

# put MODE SOURCE TARGET: copies one file, making the directories.
put() {
	mkdir -p "$destdir$(dirname "$3")"
	cp "$2" "$destdir$3.tmp.$$"
	chmod "$1" "$destdir$3.tmp.$$"
	mv -f "$destdir$3.tmp.$$" "$destdir$3"
	echo "$3"
}

# append_once FRAGMENT TARGET: appends a fragment to an existing file (inittab,
# mdev.conf) unless its first line is already there.
append_once() {
	[ -f "$destdir$2" ] || return 0
	first=$(sed -n 1p "$1")
	grep -qxF "$first" "$destdir$2" && return 0
	cat "$1" >>"$destdir$2"
	echo "$2 (appended)"
}

put 0755 "$bin" "$BINDIR/gce-guest"
if [ "$links" = 1 ]; then
	"$destdir$BINDIR/gce-guest" --install -s -f "$destdir$BINDIR" >/dev/null
fi

# Config files of the original google_configs package.
put 0644 "$src/sysctl/11-gce-network-security.conf" /etc/sysctl.d/11-gce-network-security.conf
put 0644 "$src/modprobe/gce-blacklist.conf" /etc/modprobe.d/gce-blacklist.conf
put 0644 "$src/udev/64-gce-disk-removal.rules" "$UDEVRULESDIR/64-gce-disk-removal.rules"
put 0644 "$src/udev/65-gce-disk-naming.rules" "$UDEVRULESDIR/65-gce-disk-naming.rules"
# The rules call google_nvme_id by name, which udev looks up in its own directory.
udevdir=$(dirname "$UDEVRULESDIR")
mkdir -p "$destdir$udevdir"
ln -sfn "$BINDIR/gce-guest" "$destdir$udevdir/google_nvme_id"
echo "$udevdir/google_nvme_id"
if [ "$rsyslog" = 1 ]; then
	put 0644 "$src/rsyslog/90-google.conf" /etc/rsyslog.d/90-google.conf
fi
# The configuration itself: never overwritten.
if [ ! -e "$destdir/etc/default/instance_configs.cfg" ]; then
	put 0644 "$src/instance_configs.cfg" /etc/default/instance_configs.cfg
fi

# Disk expand before the root is mounted: dracut, initramfs-tools, a busybox /init.
initramfs_hooks() {
	for f in "$src"/dracut/50gce-disk-expand/*; do
		put 0755 "$f" "$DRACUTMODDIR/50gce-disk-expand/$(basename "$f")"
	done
	put 0755 "$src/initramfs-tools/hooks/gce-disk-expand" "$INITRAMFSTOOLSDIR/hooks/gce-disk-expand"
	put 0755 "$src/initramfs-tools/scripts/local-premount/gce-disk-expand" \
		"$INITRAMFSTOOLSDIR/scripts/local-premount/gce-disk-expand"
}
put 0644 "$src/busybox/initramfs-disk-expand.sh" "$DATADIR/initramfs-disk-expand.sh"

case "$init" in
systemd)
	for f in "$src"/systemd/*.service; do
		put 0644 "$f" "$SYSTEMDUNITDIR/$(basename "$f")"
	done
	put 0644 "$src/systemd/90-gce-guest.preset" "$SYSTEMDPRESETDIR/90-gce-guest.preset"
	initramfs_hooks
	;;
sysvinit)
	for f in "$src"/sysvinit/google-*; do
		put 0755 "$f" "/etc/init.d/$(basename "$f")"
	done
	put 0644 "$src/sysvinit/insserv.conf.d-google" /etc/insserv.conf.d/google
	initramfs_hooks
	;;
upstart)
	for f in "$src"/upstart/*; do
		put 0644 "$f" "/etc/init/$(basename "$f")"
	done
	initramfs_hooks
	;;
openrc)
	for f in "$src"/openrc/google-*; do
		put 0755 "$f" "/etc/init.d/$(basename "$f")"
	done
	;;
busybox)
	for f in "$src"/busybox/init.d/S*; do
		put 0755 "$f" "/etc/init.d/$(basename "$f")"
	done
	put 0644 "$src/busybox/inittab" "$DATADIR/inittab"
	put 0644 "$src/busybox/mdev.conf" "$DATADIR/mdev.conf"
	append_once "$src/busybox/inittab" /etc/inittab
	append_once "$src/busybox/mdev.conf" /etc/mdev.conf
	;;
esac
