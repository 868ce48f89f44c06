#!/usr/bin/env bash
# make demo: serve the sample metadata from the built-in emulator on 169.254.169.254:80
# inside a private sandbox (mount, network, pid namespaces; overlays on /etc, /var, /home,
# /root, /run; a private /dev whose console is a file), run the guest programs that have
# landed against it, and print what they changed and logged. The host is never touched.
set -euo pipefail
BIN=$(realpath "${1:?usage: demo.sh GCE_GUEST_BINARY_WITH_EMULATOR}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
METADATA="$ROOT/tests/data/metadata/sample.json"
if [ "$(id -u)" != 0 ]; then
  echo "make demo needs root: it builds its sandbox with unshare and overlay mounts" >&2
  exit 1
fi
DIR=$(mktemp -d /tmp/gce-guest-demo.XXXXXX)
cleanup() { rm -rf "$DIR"; }
trap cleanup EXIT
for d in etc var home root run; do mkdir -p "$DIR/upper/$d" "$DIR/work/$d"; done
mkdir -p "$DIR/dev"
: > "$DIR/console"

cat > "$DIR/inside.sh" <<'INSIDE'
set -eu
mount --make-rprivate /
for d in etc var home root run; do
  mount -t overlay overlay -o "lowerdir=/$d,upperdir=$DIR/upper/$d,workdir=$DIR/work/$d" "/$d"
done
mount -t tmpfs -o mode=755 tmpfs "$DIR/dev"
for n in null zero full random urandom tty; do : > "$DIR/dev/$n"; mount --bind "/dev/$n" "$DIR/dev/$n"; done
mkdir "$DIR/dev/pts" "$DIR/dev/shm"
mount --rbind /dev/pts "$DIR/dev/pts"; mount --rbind /dev/shm "$DIR/dev/shm"
: > "$DIR/dev/console"; mount --bind "$DIR/console" "$DIR/dev/console"
mount --rbind "$DIR/dev" /dev
ip link set lo up
ip addr add 169.254.169.254/32 dev lo
# A NIC with the sample's MAC (a veth pair in the private network namespace), and a sysfs
# that shows this namespace's interfaces, for the IP-forwarding daemon to find it by.
mount -t sysfs -o ro sysfs /sys
# Kernel knobs in /proc/sys (but net, which is per namespace) and IRQ affinities have no
# namespace: the host's must not change, so instance setup's tuning steps meet read-only
# files here and say so.
for p in /proc/sys /proc/irq /proc/sysrq-trigger; do
  [ -e "$p" ] || continue
  mount --bind "$p" "$p"; mount -o remount,bind,ro "$p"
done
mount --bind /proc/sys/net /proc/sys/net; mount -o remount,bind,rw /proc/sys/net
ip link add eth0 type veth peer name peer0
ip link set eth0 address 42:01:0a:80:00:02
ip link set eth0 up
ip link set peer0 up
"$BIN" google_metadata_emulator --listen 169.254.169.254:80 --metadata "$METADATA" \
  --admin-socket "$DIR/admin.sock" --ready-file "$DIR/ready" >/dev/null &
for _ in $(seq 200); do [ -e "$DIR/ready" ] && break; sleep 0.05; done
export GCE_GUEST_TIME_SCALE=0.1
# The system clock has no namespace: nothing here may set it. CAP_SYS_TIME is dropped for
# everything in the sandbox, and a stand-in hwclock records what the clock-skew daemon asks.
mkdir -p /run/demo-bin
printf '#!/bin/sh\necho "hwclock $*" >> "$DIR/hwclock.calls"\n' > /run/demo-bin/hwclock
chmod 755 /run/demo-bin/hwclock
export PATH=/run/demo-bin:$PATH

step() { printf '\n== %s\n' "$*"; }
landed() { # runs an applet; says so when its issue has not landed yet (status 3)
  set +e; "$BIN" "$@"; rc=$?; set -e
  [ $rc = 3 ] && echo "   ($1 has not landed yet)"
  return 0
}

step "metadata, read with google_metadata_get from 169.254.169.254"
for key in instance/id instance/hostname instance/zone instance/machine-type project/project-id; do
  printf '   %-24s %s\n' "$key" "$("$BIN" google_metadata_get "$key")"
done
printf '   %-24s %s\n' "instance/attributes/" "$("$BIN" google_metadata_get instance/attributes/ | tr '\n' ' ')"

step "google_instance_setup"
landed google_instance_setup

step "google_metadata_script_runner --script-type startup"
landed google_metadata_script_runner --script-type startup

step "google_guest_daemon for 3 seconds"
set +e
"$BIN" google_guest_daemon ${DEMO_DEBUG:+--debug} & pid=$!
sleep 3; kill -TERM $pid 2>/dev/null; wait $pid; rc=$?
set -e
[ $rc = 3 ] && echo "   (google_guest_daemon has not landed yet)"
printf '\n== forwarded IPs as local routes (ip route show table local proto 66)\n'
{ ip route show table local proto 66; ip -6 route show table local proto 66; } | sed 's/^/   /'
exit 0
INSIDE

export BIN DIR METADATA
unshare --mount --net --pid --uts --ipc --fork --kill-child --mount-proc \
  setpriv --inh-caps=-sys_time --bounding-set=-sys_time -- bash "$DIR/inside.sh"

printf '\n== what changed on the sandbox root\n'
( cd "$DIR/upper" && find . -mindepth 2 \( -type f -o -type l -o -type c \) | sed 's|^\./|   /|' | sort ) || true
[ -n "$(cd "$DIR/upper" && find . -mindepth 2 -type f | head -1)" ] || echo "   (nothing)"
printf '\n== accounts managed from metadata ssh-keys (/var/lib/google/google_users)\n'
if [ -s "$DIR/upper/var/lib/google/google_users" ]; then
  awk -F: 'NR == FNR { managed[$1] = 1; next } ($1 in managed) { printf "   %-8s uid %s  %s  %s\n", $1, $3, $6, $7 }' \
    "$DIR/upper/var/lib/google/google_users" "$DIR/upper/etc/passwd"
else
  echo "   (none)"
fi
for f in "$DIR"/upper/home/*/.ssh/authorized_keys; do
  [ -f "$f" ] || continue
  printf '   %s:\n' "${f#"$DIR"/upper}"
  cut -c1-100 "$f" | sed 's/^/      /'
  break
done
printf '\n== clock-setting requests (answered by a stand-in; the host clock is never set)\n'
if [ -s "$DIR/hwclock.calls" ]; then sed 's/^/   /' "$DIR/hwclock.calls"; else echo "   (none)"; fi
printf '\n== serial console (what the programs logged)\n'
if [ -s "$DIR/console" ]; then sed 's/^/   /' "$DIR/console"; else echo "   (nothing)"; fi
