#!/bin/sh
# dracut pre-mount hook: the partition step of google_disk_expand, before the root file
# system is mounted (the program finds the root device from the kernel command line).
# Adapt the command here if needed.
GCE_DISK_EXPAND="google_disk_expand --partition-only"

command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=30
$GCE_DISK_EXPAND || warn "gce-disk-expand: $GCE_DISK_EXPAND failed (status $?); the root stays as it is"
command -v udevadm >/dev/null 2>&1 && udevadm settle --timeout=30
true
