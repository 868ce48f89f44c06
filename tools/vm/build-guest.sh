#!/usr/bin/env bash
# Assembles the VM test guest under target/vm/ from Debian packages and the built binary:
#   kernel      the Debian cloud kernel (linux-image-cloud-amd64, apt-get download + dpkg -x)
#   initrd      a busybox initramfs: loads the virtio modules, runs
#               `google_disk_expand --partition-only` (init/busybox/initramfs-disk-expand.sh),
#               mounts the root (/dev/sda1) and switches to it
#   disk-INIT.raw  for each INIT (busybox, openrc): a GPT disk whose image is 1 GiB (one
#               ext4 partition, made with sfdisk and mkfs.ext4 -d, no mounting) holding
#               busybox (with adduser & co., tests/busybox/build.sh), dropbear, sudo and
#               gce-guest installed with `make install INIT=...`:
#               busybox init running rcS.d-style scripts, or busybox init running OpenRC
#               (Debian's openrc binaries) as Alpine does; run.sh grows a copy to 2 GiB
# Usage: build-guest.sh GCE_GUEST_BINARY [INIT...]   (root; the host is not changed beyond
# target/vm; INIT defaults to busybox openrc)
set -euo pipefail
BIN=$(realpath "${1:?usage: build-guest.sh GCE_GUEST_BINARY [INIT...]}")
shift
INITS=("$@")
[ ${#INITS[@]} -gt 0 ] || INITS=(busybox openrc)
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
# apt_download PACKAGE: into the cache; the package lists are refreshed once when apt
# does not know the package (a fresh machine may have none).
apt_download() {
  ( cd "$CACHE" && apt-get download -q "$1" >/dev/null 2>&1 ) && return 0
  apt-get update -qq
  ( cd "$CACHE" && apt-get download -q "$1" >/dev/null ) ||
    { echo "build-guest: apt-get download $1 failed" >&2; exit 1; }
}
if [ ! -d "$CACHE/kernel/boot" ]; then
  rm -f "$CACHE"/linux-image-*.deb
  apt_download linux-image-cloud-amd64
  dep=$(dpkg-deb -f "$CACHE"/linux-image-cloud-amd64_*.deb Depends | grep -o 'linux-image-[^ ,]*-cloud-amd64' | head -n1)
  [ -n "$dep" ] || { echo "build-guest: no kernel package in linux-image-cloud-amd64's Depends" >&2; exit 1; }
  apt_download "$dep"
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
# pvpanic-pci: a kernel panic ends QEMU (-action panic=exit-failure) instead of hanging.
for m in virtio_pci virtio_scsi sd_mod virtio_net virtio-rng virtio_blk pvpanic-pci; do
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

# copy_bin RFS FILE [MODE]: a host program or library into the guest tree, with the shared
# libraries it needs (ldd).
copy_bin() {
  local rfs=$1 file=$2 lib
  mkdir -p "$rfs$(dirname "$file")"
  cp "$file" "$rfs$file"
  chmod "${3:-755}" "$rfs$file"
  for lib in $(ldd "$file" | grep -o '/[^ ]*\.so[^ ]*'); do
    mkdir -p "$rfs$(dirname "$lib")"
    [ -e "$rfs$lib" ] || cp "$(readlink -f "$lib")" "$rfs$lib"
  done
}

# --- root file system tree of one INIT flavour ---
build_tree() { # INIT RFS
  local init=$1 RFS=$2 l b f
  rm -rf "$RFS" && mkdir -p "$RFS"
  mkdir -p "$RFS"/{bin,sbin,usr/bin,usr/sbin,etc/init.d,etc/dropbear,dev,proc,sys,run,tmp,root/.ssh,home,var/log,var/lib,lib/modules}
  chmod 1777 "$RFS/tmp"
  chmod 700 "$RFS/root" "$RFS/root/.ssh"
  ln -s /run "$RFS/var/run"
  ln -s /run/lock "$RFS/var/lock"
  # busybox built from Debian's source with adduser & co. (Debian's busybox-static has no
  # adduser/addgroup/deluser/delgroup): the accounts daemon runs its busybox commands, as
  # there are no shadow tools in the guest.
  cp "$BUSYBOX" "$RFS/bin/busybox"
  for l in $("$BUSYBOX" --list-full); do
    [ -e "$RFS/$l" ] || [ -L "$RFS/$l" ] || ln -s /bin/busybox "$RFS/$l"
  done
  # dropbear; sudo with its sudoers plugin and two PAM modules (pam_permit for account and
  # session, pam_deny for passwords: only NOPASSWD rules can work): with the shared
  # libraries they need, from the host's Debian packages.
  for b in /usr/sbin/dropbear /usr/bin/dropbearkey \
    /usr/libexec/sudo/sudoers.so /usr/libexec/sudo/group_file.so /usr/libexec/sudo/system_group.so \
    /usr/lib/x86_64-linux-gnu/security/pam_permit.so /usr/lib/x86_64-linux-gnu/security/pam_deny.so; do
    copy_bin "$RFS" "$b"
  done
  copy_bin "$RFS" /usr/bin/sudo 4755
  cp -r "$HERE"/guest/. "$RFS/"
  cp -r "$HERE/guest-$init"/. "$RFS/"
  if [ "$init" = openrc ]; then
    # OpenRC from the host's Debian package (tools/prereqs.sh installs it): the programs,
    # /lib/rc (its shell library and helpers) and the libraries they need.
    for b in /sbin/openrc /sbin/openrc-run /sbin/rc-service /sbin/supervise-daemon /bin/rc-status; do
      copy_bin "$RFS" "$b"
    done
    mkdir -p "$RFS/lib"
    cp -a /lib/rc "$RFS/lib/"
    rm -rf "$RFS/lib/rc/cache" "$RFS/lib/rc/init.d"
    for f in "$RFS"/lib/rc/bin/* "$RFS"/lib/rc/sbin/*; do
      [ -L "$f" ] && continue
      for l in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*\.so[^ ]*'); do
        mkdir -p "$RFS$(dirname "$l")"
        [ -e "$RFS$l" ] || cp "$(readlink -f "$l")" "$RFS$l"
      done
    done
    cp /etc/rc.conf "$RFS/etc/rc.conf"
    # Debian's OpenRC reads insserv's configuration for LSB scripts (there are none here).
    : > "$RFS/etc/insserv.conf"
    mkdir -p "$RFS/etc/insserv.conf.d"
  fi
  chmod 755 "$RFS"/etc/init.d/* "$RFS"/usr/libexec/vm/*
  chmod 600 "$RFS/etc/shadow"
  chmod 440 "$RFS/etc/sudoers"
  mkdir -p "$RFS/etc/sudoers.d"
  chmod 750 "$RFS/etc/sudoers.d"
  cp "$VM/keys/harness.pub" "$RFS/root/.ssh/authorized_keys"
  chmod 600 "$RFS/root/.ssh/authorized_keys"
  # gce-guest, as a distribution would install it (INIT=busybox appends to inittab and
  # mdev.conf; INIT=openrc puts its openrc-run scripts in /etc/init.d).
  make -s -C "$ROOT" install DESTDIR="$RFS" INIT="$init" BIN="$BIN" >/dev/null
  case "$init" in
  busybox)
    # The distribution's own shutdown lines go after gce-guest's shutdown-script line: stop
    # the daemons (dropbear, the guest daemon) so that / can be remounted read-only.
    cat >> "$RFS/etc/inittab" <<'EOT'
::shutdown:/bin/sh -c 'kill -TERM -1; sleep 1'
::shutdown:/bin/umount -a -r
EOT
    ;;
  openrc)
    # The runlevels, as the distribution (or rc-update) would set them.
    mkdir -p "$RFS"/etc/runlevels/{sysinit,boot,default,shutdown,nonetwork}
    for l in sysinit:vm-early boot:vm-net boot:google-disk-expand default:vm-scramble \
      default:google-instance-setup default:dropbear default:google-guest-daemon \
      default:google-startup-scripts default:google-shutdown-scripts default:vm-report; do
      [ -e "$RFS/etc/init.d/${l#*:}" ] || { echo "build-guest: no /etc/init.d/${l#*:} in the openrc guest" >&2; exit 1; }
      ln -sfn "/etc/init.d/${l#*:}" "$RFS/etc/runlevels/${l%%:*}/${l#*:}"
    done
    ;;
  esac
  # An image's files are older than its first boot (OpenRC warns about files from the
  # future: the guest's clock starts an hour behind the host's).
  find "$RFS" -exec touch -h -d '2024-01-01 00:00:00 UTC' {} +
}

# --- disk: GPT, one ext4 partition filling a 1 GiB image ---
build_disk() { # RFS DISK
  local RFS=$1 DISK=$2 start size
  rm -f "$DISK" "$DISK.ext4"
  truncate -s 1G "$DISK"
  printf 'label: gpt\nstart=2048, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root\n' \
    | sfdisk --quiet "$DISK"
  read -r start size < <(sfdisk -d "$DISK" | awk -F'[=,]' '/start=/ { gsub(/ /, ""); print $2, $4 }')
  truncate -s $((size * 512)) "$DISK.ext4"
  mkfs.ext4 -q -F -L root -E root_owner=0:0 -d "$RFS" "$DISK.ext4"
  dd if="$DISK.ext4" of="$DISK" bs=512 seek="$start" conv=notrunc,sparse status=none
  rm -f "$DISK.ext4"
  echo "guest: disk $(basename "$DISK") $(du -h --apparent-size "$DISK" | cut -f1) (partition at sector $start, $size sectors), $(du -sh "$RFS" | cut -f1) of files"
}

# The guests' busybox (tests/busybox/build.sh: built once, cached outside the tree).
BUSYBOX=$(bash "$ROOT/tests/busybox/build.sh")
"$BUSYBOX" adduser --help >/dev/null 2>&1 || { echo "build-guest: $BUSYBOX has no adduser" >&2; exit 1; }
echo "guest: kernel $KVER, initrd $(stat -c %s "$VM/initrd") bytes, busybox $BUSYBOX"
for init in "${INITS[@]}"; do
  case "$init" in busybox|openrc) ;; *) echo "build-guest: INIT must be busybox or openrc, not $init" >&2; exit 2 ;; esac
  build_tree "$init" "$VM/rootfs-$init"
  build_disk "$VM/rootfs-$init" "$VM/disk-$init.raw"
done
rm -rf "$VM/rootfs" "$VM/disk.raw"
