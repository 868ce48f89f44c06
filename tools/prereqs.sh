#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages the tests use, those that are missing only (`make
# test` and .ci/run call it; it needs root to install, as the tests need root to run).
# The table below is the one list of them: each package with the programs the tests run
# from it. tests/common/tools.rs reads it too, so a test whose program is still missing
# fails with "install the PACKAGE package".
#   tools/prereqs.sh          install what is missing
#   tools/prereqs.sh --check  only print the missing packages (exit 1 if any)
set -euo pipefail

# package:program,program...
packages=(
  musl-tools:musl-gcc
  util-linux:unshare,nsenter,partx,blkid,mountpoint
  mount:mount,umount,losetup
  fdisk:sfdisk
  gdisk:sgdisk
  xfsprogs:mkfs.xfs,xfs_repair
  e2fsprogs:mkfs.ext4,e2fsck,resize2fs,dumpe2fs
  dmsetup:dmsetup
  iproute2:ip
  passwd:useradd,usermod,userdel,groupadd,gpasswd
  sudo:sudo,visudo
  openssh-server:sshd
  openssh-client:ssh,ssh-keygen
  dropbear:dropbear
  dropbear-bin:dropbearkey,dbclient
  busybox-static:busybox
  procps:pgrep
  binutils:readelf,strip
  file:file
  strace:strace
  python3:python3
  openssl:openssl
  curl:curl
  wget:wget
  dpkg-dev:dpkg-source
  make:make
  fakeroot:fakeroot
  rpm:rpm,rpmbuild
  lintian:lintian
  devscripts:checkbashisms
  systemd:systemd-analyze
  udev:udevadm
  openrc:openrc-run,supervise-daemon
  insserv:insserv
  dash:dash
  dpkg:dpkg-deb,start-stop-daemon
)

missing=()
for entry in "${packages[@]}"; do
  package=${entry%%:*}
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "${1:-}" = --check ]; then
  echo "${missing[*]}"
  exit 1
fi
if ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
  echo "tools/prereqs.sh: the tests need these packages: ${missing[*]} (install them as root, e.g. apt-get install ${missing[*]})" >&2
  exit 0
fi
echo "installing: ${missing[*]}"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
