#!/usr/bin/env bash
# Assembles the VM test guest under target/vm/ from Debian packages and the built binary:
#   kernel      the Debian cloud kernel (linux-image-cloud-amd64, apt-get download + dpkg -x)
#   initrd      a busybox initramfs: loads the virtio modules, runs
#               `google_disk_expand --partition-only` (init/busybox/initramfs-disk-expand.sh),
#               mounts the root (/dev/sda1) and switches to it
#   disk.raw    a GPT disk whose image is 1 GiB (one ext4 partition, made with sfdisk and
#               mkfs.ext4 -d, no mounting) holding busybox, dropbear and gce-guest installed
#               with `make install INIT=busybox`; run.sh grows a copy of it to 2 GiB
# Usage: build-guest.sh GCE_GUEST_BINARY   (root; the host is not changed beyond target/vm)
set -euo pipefail
BIN=$(realpath "${1:?usage: build-guest.sh GCE_GUEST_BINARY}")
[ "$(id -u)" = 0 ] || { echo "build-guest: needs root (the image's files must be root's)" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM="$ROOT/target/vm"
CACHE="$VM/cache"
HERE="$ROOT/tools/vm"
mkdir -p "$CACHE" "$VM/keys"
# ssh keys: the harness's (root's authorized key in the image) and the test user's (served
# in metadata ssh-keys).
for k in harness user; do
  [ -f "$VM/keys/$k" ] || ssh-keygen -q -t ed25519 -N '' -C "vm-$k@host" -f "$VM/keys/$k"
done

# --- kernel (cached) ---
if [ ! -d "$CACHE/kernel/boot" ]; then
  ( cd "$CACHE" && apt-get download linux-image-cloud-amd64 2>/dev/null )
  dep=$(dpkg-deb -f "$CACHE"/linux-image-cloud-amd64_*.deb Depends | grep -o 'linux-image-[^ ,]*-cloud-amd64' | head -n1)
  ( cd "$CACHE" && apt-get download "$dep" 2>/dev/null )
  rm -rf "$CACHE/kernel.tmp" && mkdir "$CACHE/kernel.tmp"
  dpkg -x "$CACHE/${dep}"_*.deb "$CACHE/kernel.tmp"
  mv "$CACHE/kernel.tmp" "$CACHE/kernel"
fi
KVER=$(basename "$(ls -d "$CACHE"/kernel/lib/modules/*/ | head -n1)")
[ -f "$CACHE/kernel/lib/modules/$KVER/modules.dep" ] || busybox depmod -b "$CACHE/kernel" "$KVER"
cp "$CACHE/kernel/boot/vmlinuz-$KVER" "$VM/vmlinuz"

# Module closure in load order (dependencies first), from modules.dep.
MODDIR="$CACHE/kernel/lib/modules/$KVER"
declare -A seen=()
order=()
add_module() { # NAME (as in modules.dep, e.g. kernel/drivers/net/virtio_net.ko)
  local path=$1 deps d
  [ -n "${seen[$path]:-}" ] && return 0
  seen[$path]=1
  deps=$(awk -v p="$path:" '$1 == p { $1 = ""; print }' "$MODDIR/modules.dep")
  for d in $deps; do add_module "$d"; done
  order+=("$path")
}
for m in virtio_pci virtio_scsi sd_mod virtio_net virtio-rng virtio_blk; do
  p=$(awk -F: -v m="/$m.ko" 'index($1, m) && substr($1, length($1) - length(m) + 1) == m { print $1; exit }' "$MODDIR/modules.dep")
  [ -n "$p" ] || { echo "build-guest: module $m not found in $KVER" >&2; exit 1; }
  add_module "$p"
done

# --- initramfs ---
IRD="$VM/initramfs"
rm -rf "$IRD" && mkdir -p "$IRD"/{bin,dev,proc,sys,run,newroot,usr/bin,etc,modules}
cp /bin/busybox "$IRD/bin/busybox"
ln -s busybox "$IRD/bin/sh"
cp "$BIN" "$IRD/usr/bin/gce-guest"
ln -s gce-guest "$IRD/usr/bin/google_disk_expand"
cp "$ROOT/init/busybox/initramfs-disk-expand.sh" "$IRD/etc/gce-disk-expand.sh"
: > "$IRD/modules/order"
for p in "${order[@]}"; do
  cp "$MODDIR/$p" "$IRD/modules/"
  basename "$p" >> "$IRD/modules/order"
done
cp "$HERE/initramfs-init" "$IRD/init"
chmod 755 "$IRD/init"
( cd "$IRD" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1 ) > "$VM/initrd"

# --- root file system tree ---
RFS="$VM/rootfs"
rm -rf "$RFS" && mkdir -p "$RFS"
mkdir -p "$RFS"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/dropbear,dev,proc,sys,run,tmp,root/.ssh,home,var/log,var/lib,lib/modules}
chmod 1777 "$RFS/tmp"
chmod 700 "$RFS/root" "$RFS/root/.ssh"
cp /bin/busybox "$RFS/bin/busybox"
for l in $(/bin/busybox --list-full); do
  [ -e "$RFS/$l" ] || [ -L "$RFS/$l" ] || ln -s /bin/busybox "$RFS/$l"
done
# dropbear; shadow's useradd & co. (Debian's busybox-static has no adduser/addgroup);
# sudo with its sudoers plugin and two PAM modules (pam_permit for account and session,
# pam_deny for passwords: only NOPASSWD rules can work): with the shared libraries they
# need, from the host's Debian packages.
copy_bin() { # FILE [MODE]
  mkdir -p "$RFS$(dirname "$1")"
  cp "$1" "$RFS$1"
  chmod "${2:-755}" "$RFS$1"
  for lib in $(ldd "$1" | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$RFS$(dirname "$lib")"
    [ -e "$RFS$lib" ] || cp "$(readlink -f "$lib")" "$RFS$lib"
  done
}
for b in /usr/sbin/dropbear /usr/bin/dropbearkey \
  /usr/sbin/useradd /usr/sbin/groupadd /usr/sbin/usermod /usr/sbin/userdel /usr/bin/gpasswd \
  /usr/libexec/sudo/sudoers.so /usr/libexec/sudo/group_file.so /usr/libexec/sudo/system_group.so \
  /usr/lib/x86_64-linux-gnu/security/pam_permit.so /usr/lib/x86_64-linux-gnu/security/pam_deny.so; do
  copy_bin "$b"
done
copy_bin /usr/bin/sudo 4755
[ -f /etc/login.defs ] && cp /etc/login.defs "$RFS/etc/login.defs"
cp -r "$HERE"/guest/etc/. "$RFS/etc/"
chmod 755 "$RFS"/etc/init.d/*
chmod 600 "$RFS/etc/shadow"
chmod 440 "$RFS/etc/sudoers"
mkdir -p "$RFS/etc/sudoers.d"
chmod 750 "$RFS/etc/sudoers.d"
cp "$VM/keys/harness.pub" "$RFS/root/.ssh/authorized_keys"
chmod 600 "$RFS/root/.ssh/authorized_keys"
# gce-guest, as a distribution would install it (appends to inittab and mdev.conf).
make -s -C "$ROOT" install DESTDIR="$RFS" INIT=busybox BIN="$BIN" >/dev/null
# The distribution's own shutdown lines go after gce-guest's shutdown-script line: stop
# the daemons (dropbear, the guest daemon) so that / can be remounted read-only.
cat >> "$RFS/etc/inittab" <<'EOF'
::shutdown:/bin/sh -c 'kill -TERM -1; sleep 1'
::shutdown:/bin/umount -a -r
EOF

# --- disk: GPT, one ext4 partition filling a 1 GiB image ---
DISK="$VM/disk.raw"
rm -f "$DISK" "$VM/root.ext4"
truncate -s 1G "$DISK"
printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' \
  | sfdisk --quiet "$DISK"
read -r start size < <(sfdisk -d "$DISK" | awk -F'[=,]' '/start=/ { gsub(/ /, ""); print $2, $4 }')
truncate -s $((size * 512)) "$VM/root.ext4"
mkfs.ext4 -q -F -L root -E root_owner=0:0 -d "$RFS" "$VM/root.ext4"
dd if="$VM/root.ext4" of="$DISK" bs=512 seek="$start" conv=notrunc,sparse status=none
rm -f "$VM/root.ext4"
echo "guest: kernel $KVER, initrd $(stat -c %s "$VM/initrd") bytes, disk $(du -h --apparent-size "$DISK" | cut -f1) (partition at sector $start, $size sectors)"
