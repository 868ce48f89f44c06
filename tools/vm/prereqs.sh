#!/bin/sh
# Installs what make vm-test needs when it is missing: QEMU 7.2 from Debian (qemu-utils
# pinned to the same version: the machine image may carry a newer one from backports),
# busybox-static (the initramfs), dropbear-bin, sudo and openrc copied into the guests,
# dpkg-dev for the guests' busybox built from source (tests/busybox/build.sh), the host's
# ssh client, sfdisk, mkfs.ext4, curl, python3, ip. build-guest.sh fetches the kernel.
set -eu
missing=
command -v qemu-system-x86_64 >/dev/null || missing=qemu
[ -x /bin/busybox ] && /bin/busybox --list | grep -qx switch_root || missing="$missing busybox-static"
for p in /usr/sbin/dropbear:dropbear-bin /usr/bin/ssh:openssh-client /usr/bin/dpkg-source:dpkg-dev \
  /usr/sbin/sfdisk:fdisk /usr/sbin/mkfs.ext4:e2fsprogs /usr/bin/curl:curl /usr/bin/sudo:sudo \
  /sbin/openrc:openrc /usr/bin/python3:python3 /sbin/ip:iproute2; do
  [ -x "${p%%:*}" ] || missing="$missing ${p#*:}"
done
[ -z "$missing" ] && exit 0
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
pkgs=
for m in $missing; do
  case "$m" in
  qemu)
    v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ { print $2 }')
    apt-get install -y -qq --no-install-recommends --allow-downgrades qemu-system-x86 "qemu-utils=$v" >/dev/null
    ;;
  *) pkgs="$pkgs $m" ;;
  esac
done
[ -z "$pkgs" ] || apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
