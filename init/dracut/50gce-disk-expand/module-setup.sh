#!/bin/sh
# dracut module: grow the root partition in the initramfs, before the root is mounted.
# The file system is grown after / is mounted, by google-disk-expand.service (or the
# init script of the other init systems).

check() {
	require_binaries google_disk_expand || return 1
	# Included whenever the program is installed: every boot may need it.
	return 0
}

depends() {
	return 0
}

install() {
	# google_disk_expand is a link to the gce-guest binary; inst follows it.
	inst_multiple google_disk_expand gce-guest
	inst_hook pre-mount 50 "$moddir/gce-disk-expand.sh"
}
