# gce-guest: the partition step of google_disk_expand for a busybox/mdev initramfs.
# Source this file from your /init after `mdev -s` (the block devices exist) and before the
# root is mounted, then call gce_disk_expand; the file system is grown after / is mounted
# by /etc/init.d/S05google-disk-expand. Adapt the command here if needed.
GCE_DISK_EXPAND="${GCE_DISK_EXPAND:-/usr/bin/google_disk_expand --partition-only}"

gce_disk_expand() {
	if [ -x /usr/bin/gce-guest ]; then
		$GCE_DISK_EXPAND || echo "gce-disk-expand: $GCE_DISK_EXPAND failed; the root stays as it is" >&2
		# The partition may have changed size: refresh the device nodes.
		mdev -s
	fi
	return 0
}
