#!/usr/bin/env bash
# make vm-test: boots the guests built by build-guest.sh under QEMU (TCG unless KVM works)
# with gce-guest as their only agent, the metadata emulator at 169.254.169.254 on a tap in
# a private network namespace (GCE addressing: 10.128.0.1/20 on the host side, the guest
# 10.128.0.2), SMBIOS saying Google Compute Engine, a 4-queue virtio-net, -smp 4, a
# virtio-scsi and an NVMe local SSD, a 2 GiB boot disk holding a 1 GiB image and the RTC
# an hour behind; then prints one line per named check:
#   vm-check RUN/NAME: ok|FAILED (details, seconds)
# Two runs: `busybox` (gce-guest installed with INIT=busybox: the full list, an in-guest
# reboot with a new instance id, then poweroff) and `openrc` (INIT=openrc, OpenRC run by
# busybox init: boot, login, startup and shutdown scripts).
# Usage: run.sh PRODUCT_BINARY EMULATOR_BINARY [RUN...]   (root). Every wait is a bounded
# poll on a condition; a kernel panic ends QEMU (pvpanic) and fails the run at once; the
# namespace, the tap, QEMU and the emulator are removed on every exit path.
# The serial logs of the last run are copied to target/vm/last-run/; VM_KEEP=1 keeps the
# whole work directory; VM_SHOW_SERIAL=1 prints the first boot's console.
set -euo pipefail
BIN=$(realpath "${1:?usage: run.sh PRODUCT_BINARY EMULATOR_BINARY [RUN...]}")
EMU=$(realpath "${2:?usage: run.sh PRODUCT_BINARY EMULATOR_BINARY [RUN...]}")
shift 2
RUNS=("$@")
[ ${#RUNS[@]} -gt 0 ] || RUNS=(busybox openrc)
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM="$ROOT/target/vm"
[ "$(id -u)" = 0 ] || { echo "vm-test needs root (a network namespace and a tap)" >&2; exit 1; }
for r in "${RUNS[@]}"; do
  [ -f "$VM/disk-$r.raw" ] || { echo "vm-test: no $VM/disk-$r.raw (tools/vm/build-guest.sh makes it)" >&2; exit 1; }
done

T0=$(date +%s.%N)
WORK=$(mktemp -d /tmp/gce-guest-vm.XXXXXX)
NS="gcevm$$"
GUEST=10.128.0.2
QEMU_PID=
QEMU_RC=
EMU_PID=
cleanup() {
  set +e
  close_guest_shell 2>/dev/null
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
  [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  rm -rf "$VM/last-run" && mkdir -p "$VM/last-run" &&
    cp "$WORK"/serial-*.log "$WORK"/emulator.log "$WORK"/qemu-*.log "$VM/last-run/" 2>/dev/null
  if [ "${VM_KEEP:-0}" = 1 ]; then echo "vm-test: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
FAILED=0
SUMMARY=()
RUN=
# check NAME ok|FAILED DETAILS START
check() {
  echo "vm-check $RUN/$1: $2 ($3, $(since "$4")s)"
  [ "$2" = ok ] || FAILED=$((FAILED + 1))
}

# --- keys, metadata, network namespace, emulator ---
USER_PUB=$(cat "$VM/keys/user.pub")
python3 - "$ROOT/tests/data/metadata/sample.json" "$WORK/metadata.json" "$USER_PUB" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
attrs = doc["instance"]["attributes"]
attrs["ssh-keys"] = "vmtest:" + sys.argv[3]
attrs["startup-script"] = "#!/bin/sh\necho vm-startup-marker from the startup script\n"
attrs["shutdown-script"] = "#!/bin/sh\necho vm-shutdown-marker from the shutdown script\n"
doc["instance"]["id"] = 4520031799277581824
doc["instance"]["hostname"] = "vm-test.c.demo-project.internal"
doc["instance"]["name"] = "vm-test"
nic = doc["instance"]["networkInterfaces"][0]
nic["forwardedIps"] = []
nic["ipAliases"] = []
nic["targetInstanceIps"] = []
json.dump(doc, open(sys.argv[2], "w"))
PY

ip netns add "$NS"
ip -n "$NS" link set lo up
ip -n "$NS" tuntap add dev tap0 mode tap multi_queue
ip -n "$NS" addr add 10.128.0.1/20 dev tap0
ip -n "$NS" addr add 169.254.169.254/32 dev tap0
ip -n "$NS" link set tap0 up
ip netns exec "$NS" "$EMU" google_metadata_emulator --listen 169.254.169.254:80 \
  --metadata "$WORK/metadata.json" --admin-socket "$WORK/admin.sock" \
  --ready-file "$WORK/ready" >"$WORK/emulator.log" 2>&1 &
EMU_PID=$!
for _ in $(seq 100); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
[ -e "$WORK/ready" ] || { echo "vm-test: the metadata emulator did not start" >&2; exit 1; }

admin() { # METHOD PATH [BODY]
  curl -s --max-time 5 --unix-socket "$WORK/admin.sock" -X "$1" \
    ${3:+-H 'Content-Type: application/json' --data "$3"} "http://emulator$2"
}
in_ns() { ip netns exec "$NS" "$@"; }
ssh_as() { # USER KEY COMMAND...
  local user=$1 key=$2
  shift 2
  in_ns timeout 20 ssh -q -i "$key" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR "$user@$GUEST" "$@" </dev/null
}
as_root() { ssh_as root "$VM/keys/harness" "$@"; }

# The serial console of the current run is one file for all its boots; BOOT_OFF is the
# byte offset where the current boot starts, and console() prints it from there.
SERIAL=
BOOT_OFF=0
# The helpers grep a snapshot file, never a pipe (grep -q ending a pipe early would make
# the writer fail under pipefail).
console() { tail -c +$((BOOT_OFF + 1)) "$SERIAL" 2>/dev/null | tr -d '\r'; }
snapshot() { console >"$WORK/console.txt"; echo "$WORK/console.txt"; }
serial_has() { grep -aq -- "$1" "$(snapshot)"; }
serial_count() { grep -ac -- "$1" "$(snapshot)" || true; }
serial_value() { grep -a -- "$1" "$(snapshot)" | tail -n1; }
serial_first() { grep -a -m1 -- "$1" "$(snapshot)" || true; }
serial_line() { grep -an -m1 -- "$1" "$(snapshot)" | cut -d: -f1; }
# wait_serial PATTERN SECONDS: 0 when a line matching PATTERN appears in the current boot;
# 1 after SECONDS, or at once when QEMU has ended or the kernel panicked.
wait_serial() {
  local end=$(($(date +%s) + $2))
  while [ "$(date +%s)" -lt "$end" ]; do
    serial_has "$1" && return 0
    serial_has 'Kernel panic' && { echo "vm-test: kernel panic on the console" >&2; return 1; }
    [ -n "$QEMU_PID" ] && ! kill -0 "$QEMU_PID" 2>/dev/null && return 1
    sleep 0.2
  done
  return 1
}
# wait_for SECONDS COMMAND...: polls COMMAND (every 0.5 s) until it succeeds.
wait_for() {
  local end=$(($(date +%s) + $1))
  shift
  while :; do
    "$@" && return 0
    [ "$(date +%s)" -lt "$end" ] || return 1
    sleep 0.5
  done
}

ACCEL=tcg
if [ -w /dev/kvm ] && [ "${VM_KVM:-0}" = 1 ]; then ACCEL=kvm; fi

# boot INIT: a fresh copy of that guest's disk grown to 2 GiB and fresh local SSDs, then
# QEMU in the namespace with the RTC an hour behind the host. A guest reboot resets the
# machine in the same QEMU (the RTC keeps what the guest wrote to it); poweroff ends QEMU
# (status 0), a kernel panic too (pvpanic, status 1). The virtio-scsi queue is 1024 deep:
# with QEMU's default of 256 the local SSD's nr_requests stays at most 256 and instance
# setup's 512 fails with EINVAL (a warning); GCE's own virtio-scsi queue takes 512.
boot() {
  local rtc
  cp --sparse=always "$VM/disk-$1.raw" "$WORK/disk.raw"
  truncate -s 2G "$WORK/disk.raw"
  rm -f "$WORK/ssd.raw" "$WORK/scsi-ssd.raw"
  truncate -s 375M "$WORK/ssd.raw" "$WORK/scsi-ssd.raw"
  rtc=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%S)
  SERIAL="$WORK/serial-$1.log"
  BOOT_OFF=0
  : > "$SERIAL"
  ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -M pc -smp 4 -m 512 \
    -nodefaults -display none -monitor none -serial "file:$SERIAL" \
    -action reboot=reset,shutdown=poweroff,panic=exit-failure -device pvpanic-pci \
    -kernel "$VM/vmlinuz" -initrd "$VM/initrd" \
    -append "console=ttyS0 root=LABEL=root panic=0 scsi_mod.scan=sync loglevel=4" \
    -rtc "base=$rtc,clock=host" \
    -smbios "type=1,manufacturer=Google,product=Google Compute Engine,serial=GoogleCloud-VMTEST" \
    -device virtio-scsi-pci,id=scsi0,virtqueue_size=1024 \
    -drive "file=$WORK/disk.raw,if=none,id=boot,format=raw,cache=unsafe" \
    -device scsi-hd,drive=boot,bus=scsi0.0,scsi-id=0,lun=0,vendor=Google,product=PersistentDisk,serial=vm-test \
    -drive "file=$WORK/scsi-ssd.raw,if=none,id=scsissd,format=raw,cache=unsafe" \
    -device scsi-hd,drive=scsissd,bus=scsi0.0,scsi-id=1,lun=0,vendor=Google,product=EphemeralDisk,serial=local-ssd-0 \
    -drive "file=$WORK/ssd.raw,if=none,id=ssd,format=raw,cache=unsafe" \
    -device nvme,drive=ssd,serial=local-nvme-ssd-0 \
    -netdev tap,id=n0,ifname=tap0,script=no,downscript=no,queues=4 \
    -device virtio-net-pci,netdev=n0,mac=42:01:0a:80:00:02,mq=on,vectors=10 \
    -device virtio-rng-pci \
    >"$WORK/qemu-$1.log" 2>&1 &
  QEMU_PID=$!
  QEMU_RC=
}
# qemu_exited SECONDS: 0 when QEMU ended within SECONDS (its status in QEMU_RC).
qemu_exited() {
  local end=$(($(date +%s) + $1))
  while [ "$(date +%s)" -lt "$end" ]; do
    if ! kill -0 "$QEMU_PID" 2>/dev/null; then
      QEMU_RC=0
      wait "$QEMU_PID" 2>/dev/null || QEMU_RC=$?
      QEMU_PID=
      return 0
    fi
    sleep 0.2
  done
  return 1
}
stop_qemu() {
  [ -n "$QEMU_PID" ] || return 0
  kill "$QEMU_PID" 2>/dev/null || true
  qemu_exited 10 || true
}
# The host keys in guest attributes: "type=tail-of-key ...", empty when none.
hostkeys() { admin GET /emulator/guest-attributes | python3 -c '
import json, sys
keys = json.load(sys.stdin).get("hostkeys", {})
print(" ".join("%s=%s" % (t, keys[t].split()[-1][-12:]) for t in sorted(keys) if keys[t].split()))' 2>/dev/null || true; }
# reset_metadata: the run's metadata as at the start, no guest attributes.
reset_metadata() {
  admin PUT /emulator/metadata "$(cat "$WORK/metadata.json")" >/dev/null
  admin DELETE /emulator/guest-attributes >/dev/null
}
# The clock checks talk to the guest through one ssh session that runs each line it reads
# as a command and answers with one line: a round trip of milliseconds, where a new ssh
# login under TCG takes about a second (too coarse to compare clocks).
open_guest_shell() {
  coproc GSH { in_ns timeout 300 ssh -q -T -i "$VM/keys/harness" -o StrictHostKeyChecking=no \
    -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o ConnectTimeout=5 -o LogLevel=ERROR \
    "root@$GUEST" 'while IFS= read -r c; do echo "$(eval "$c" 2>&1 | tail -n 1)"; done' 2>/dev/null; }
  GSH_IN=${GSH[1]}
  GSH_OUT=${GSH[0]}
  GSH_PID_=$GSH_PID
  local hello=
  gsh hello 'echo ready' && [ "$hello" = ready ]
}
close_guest_shell() {
  [ -n "${GSH_PID_:-}" ] || return 0
  exec {GSH_IN}>&- {GSH_OUT}<&-
  wait "$GSH_PID_" 2>/dev/null || true
  GSH_PID_=
}
gsh() { # VAR COMMAND: runs COMMAND in the guest shell, its last output line into VAR
  echo "$2" >&"$GSH_IN" 2>/dev/null && IFS= read -r -t 20 "$1" <&"$GSH_OUT"
}
# guest_skew VAR [COMMAND]: the guest's system clock (or the time COMMAND prints) minus the
# host's, in seconds with one decimal, compared with the midpoint of the round trip.
guest_skew() {
  local a b g=
  a=$(now)
  gsh g "${2:-date +%s.%N}" || return 1
  b=$(now)
  [ -n "$g" ] || return 1
  printf -v "$1" '%s' "$(awk -v a="$a" -v b="$b" -v g="$g" 'BEGIN { printf "%.1f", g - (a + b) / 2 }')"
}
# set_clock_from_host: the guest's system clock and RTC set to the host's time: the host
# sends the next whole second exactly when it begins, the guest sets its clock to it
# (date -s) and writes the RTC from it (hwclock -w).
set_clock_from_host() {
  local t line=
  t=$(($(date +%s) + 1))
  sleep "$(awk -v t="$t" -v n="$(now)" 'BEGIN { w = t - n; printf "%.3f", (w > 0) ? w : 0 }')"
  gsh line "date -u -s @$t >/dev/null && hwclock -w -u && echo set" && [ "$line" = set ]
}
abs_below() { awk -v x="$1" -v m="$2" 'BEGIN { exit !(x < m && x > -m) }'; }

# check_boot: instance setup done, dropbear started after it, host keys published.
# Sets KEYS and BOOT_DONE_T (host time when the boot-done line was seen).
check_boot() {
  local s setup setup_line dropbear_line booted
  s=$(now)
  KEYS=
  if ! wait_serial 'vm-report boot-done' 150; then
    check boot FAILED "no boot-done marker on the console" "$s"
    console | tail -n 40 >&2
    return 1
  fi
  BOOT_DONE_T=$(now)
  setup=$(serial_value 'vm-report setup-done:')
  setup_line=$(serial_line 'Running instance setup')
  dropbear_line=$(serial_line 'vm-dropbear: keys')
  booted=$(serial_value 'vm-report boot-done' | awk '{ print $NF }')
  wait_for 10 eval 'KEYS=$(hostkeys); [ -n "$KEYS" ]' || true
  if [ "${setup##* }" = yes ] && [ -n "$KEYS" ] && [ "${setup_line:-0}" -gt 0 ] &&
    [ "${dropbear_line:-0}" -gt "${setup_line:-0}" ]; then
    check boot ok "boot services done at guest uptime $booted; /run/google-instance-setup.done; instance setup (console line $setup_line) before dropbear (line $dropbear_line); host keys in guest attributes: $KEYS" "$s"
  else
    check boot FAILED "setup done: ${setup##* }; setup/dropbear console lines ${setup_line:-none}/${dropbear_line:-none}; host keys: ${KEYS:-none}" "$s"
  fi
}

check_startup_script() {
  local s
  s=$(now)
  if wait_serial 'vm-startup-marker' 60; then
    check startup-script ok "$(serial_value 'vm-startup-marker' | cut -c1-100)" "$s"
  else
    check startup-script FAILED "no startup-script output on the console" "$s"
  fi
}

check_disk() {
  local s disk disk_bytes=0 part_bytes=0 fs_kib=0
  s=$(now)
  disk=$(serial_value 'vm-report disk:')
  eval "$(echo "$disk" | grep -o '[a-z_]*=[0-9]*' | tr '\n' ';')"
  if [ "$part_bytes" -gt $((1900 * 1048576)) ] && [ "$fs_kib" -gt $((1800 * 1024)) ]; then
    check disk-grown ok "disk $((disk_bytes / 1048576)) MiB, partition $((part_bytes / 1048576)) MiB, ext4 $((fs_kib / 1024)) MiB (image was 1024 MiB)" "$s"
  else
    check disk-grown FAILED "${disk:-no disk report}" "$s"
  fi
}

# check_login: ssh with the metadata key (the accounts daemon makes the user), sudo -n.
check_login() {
  local s login= sudo
  s=$(now)
  wait_for 60 eval 'login=$(ssh_as vmtest "$VM/keys/user" "echo \$(id -un) \$(hostname)" 2>/dev/null) && [ -n "$login" ]' || login=
  if [ -z "$login" ]; then
    check ssh-login FAILED "no login as vmtest within 60 s" "$s"
    return 0
  fi
  BOOT_TO_SSH=$(since "$BOOT_T")
  # The account was made by busybox's adduser: the guest has no shadow tools.
  local tools
  tools=$(as_root 'echo "useradd: $(command -v useradd || echo none), adduser: $(readlink "$(command -v adduser)")"' 2>/dev/null || true)
  if [ "$tools" = "useradd: none, adduser: /bin/busybox" ]; then
    check ssh-login ok "as $login, ${BOOT_TO_SSH}s after QEMU started; the account made by busybox adduser ($tools)" "$s"
  else
    check ssh-login FAILED "as $login, but the guest's user tools are not busybox's: ${tools:-unknown}" "$s"
  fi
  s=$(now)
  sudo=$(ssh_as vmtest "$VM/keys/user" 'sudo -n true && echo sudo-ok' 2>&1 | tr '\n' ' ' || true)
  if [ "${sudo% }" = sudo-ok ]; then
    check sudo ok "sudo -n true as vmtest (google-sudoers, NOPASSWD from the accounts daemon)" "$s"
  else
    check sudo FAILED "sudo -n true as vmtest: ${sudo:-no output}" "$s"
  fi
}

# check_poweroff: poweroff runs the shutdown script, its output and elapsed time reach the
# console, QEMU ends with status 0.
check_poweroff() {
  local s
  s=$(now)
  as_root 'poweroff' >/dev/null 2>&1 || true
  if qemu_exited 90 && [ "$QEMU_RC" = 0 ] && serial_has 'vm-shutdown-marker' &&
    serial_has 'Finished running shutdown scripts'; then
    check poweroff ok "QEMU ended (status 0); on the console: $(serial_value 'vm-shutdown-marker' | sed 's/.*INFO //'); $(serial_value 'Finished running shutdown scripts' | sed 's/.*INFO //')" "$s"
  else
    check poweroff FAILED "shutdown marker: $(serial_count vm-shutdown-marker), QEMU ended: $([ -z "$QEMU_PID" ] && echo "yes, status $QEMU_RC" || echo no)" "$s"
    stop_qemu
  fi
}

# ---------------------------------------------------------------------------------------
# The busybox run: everything the issue lists.
run_busybox() {
  local s hn mq xps_set pinned ssd boot_sys boot_rtc first synced_up started_up clk
  local sys rtc hwr dt d fixed= t_change wait_left rss r1 r2 old_pid off keys2 skew2 id2
  RUN=busybox
  reset_metadata
  echo "vm-test: busybox run: booting ($ACCEL, -smp 4 -m 512); serial console: $WORK/serial-busybox.log"
  BOOT_T=$(now)
  boot busybox
  check_boot || return 0
  local keys1=$KEYS
  admin GET /emulator/guest-attributes >"$WORK/guest-attributes.json" || true

  s=$(now)
  hn=$(serial_value 'vm-report hostname:')
  if echo "$hn" | grep -q 'hostname: vm-test hosts: .*10.128.0.2 vm-test.c.demo-project.internal vm-test'; then
    check hostname ok "${hn#vm-report hostname: }" "$s"
  else
    check hostname FAILED "${hn:-no hostname report}" "$s"
  fi
  check_startup_script
  check_disk
  check_login

  # Key removed from metadata -> login refused (a refusal, not a dead network: root's
  # own key still logs in).
  s=$(now)
  admin PATCH /emulator/metadata '{"instance":{"attributes":{"ssh-keys":""}}}' >/dev/null
  if wait_for 15 eval '! ssh_as vmtest "$VM/keys/user" true 2>/dev/null' && as_root true 2>/dev/null; then
    check key-revoked ok "vmtest refused $(since "$s")s after the key left metadata; root still logs in" "$s"
  else
    check key-revoked FAILED "vmtest still logs in 15 s after the key left metadata, or root login failed" "$s"
  fi

  # A forwarded IP answers a TCP connection from the host side of the tap.
  s=$(now)
  admin PUT /emulator/metadata "$(admin GET /emulator/metadata | python3 -c '
import json, sys
doc = json.load(sys.stdin)
doc["instance"]["networkInterfaces"][0]["forwardedIps"] = ["10.128.0.100"]
print(json.dumps(doc))')" >/dev/null
  local banner=
  if wait_for 20 eval 'banner=$(in_ns timeout 3 bash -c "exec 3<>/dev/tcp/10.128.0.100/22 && head -n 1 <&3" 2>/dev/null | tr -cd "[:print:]") && [ -n "$banner" ]'; then
    check forwarded-ip ok "10.128.0.100:22 answered: $banner" "$s"
  else
    check forwarded-ip FAILED "no answer from 10.128.0.100:22 within 20 s" "$s"
  fi

  # Multiqueue: 4 queue pairs, each queue's IRQ pinned to one CPU, XPS set on each tx
  # queue (instance setup's google_set_multiqueue), after the guest's scramble before it.
  s=$(now)
  mq=$(as_root '
    cd /sys/class/net/eth0/queues && echo "rx=$(ls -d rx-* | wc -l) tx=$(ls -d tx-* | wc -l)"
    for q in tx-*; do printf "xps:%s=%s " "$q" "$(cat $q/xps_cpus)"; done; echo
    grep virtio /proc/interrupts | while read -r irq rest; do
      irq=${irq%:}; name=${rest##* }
      printf "irq:%s=%s " "$name" "$(cat /proc/irq/$irq/smp_affinity_list)"
    done; echo' 2>/dev/null | tr '\n' ' ')
  echo "vm-note multiqueue: $mq"
  xps_set=$(echo "$mq" | grep -o 'xps:tx-[0-3]=[0-9a-f]*' | grep -cx 'xps:tx-0=1\|xps:tx-1=2\|xps:tx-2=4\|xps:tx-3=8' || true)
  pinned=$(echo "$mq" | grep -o 'irq:virtio[0-9]*-\(input\|output\)\.[0-9]*=[0-9-]*' | sed 's/.*\.\([0-9]*\)=\(.*\)/\1=\2/' | awk -F= '$1 == $2' | wc -l)
  if echo "$mq" | grep -q 'rx=4 tx=4' && serial_has 'vm-scramble: .* now input.0=3 tx-0=f' && [ "$xps_set" = 4 ] && [ "$pinned" = 8 ]; then
    check multiqueue ok "4 queue pairs; after a scramble before setup, queue N's 2 IRQs on CPU N and tx-N's XPS on CPU N" "$s"
  else
    check multiqueue FAILED "queues ${mq%% xps*}; XPS right on $xps_set of 4 tx queues; $pinned of 8 queue IRQs on their queue's CPU" "$s"
  fi

  # Local SSDs: a virtio-scsi one (model EphemeralDisk: the original queue settings and
  # its /dev/disk/by-id link) and an NVMe one (scheduler none; its interrupts are listed).
  s=$(now)
  ssd=$(as_root '
    for d in /sys/block/sd*; do
      grep -q EphemeralDisk $d/device/model || continue
      q=$d/queue
      echo "${d##*/}: scheduler=$(cat $q/scheduler | tr -d " ") add_random=$(cat $q/add_random) nr_requests=$(cat $q/nr_requests) rotational=$(cat $q/rotational) rq_affinity=$(cat $q/rq_affinity) nomerges=$(cat $q/nomerges);"
    done
    echo "nvme0n1: scheduler=$(cat /sys/block/nvme0n1/queue/scheduler | tr -d " ") irqs=$(for i in $(ls /sys/class/nvme/nvme0/device/msi_irqs); do printf "%s:%s," "$i" "$(cat /proc/irq/$i/smp_affinity_list)"; done);"
    echo "by-id: $(ls /dev/disk/by-id 2>/dev/null | tr "\n" " ")"' 2>/dev/null | tr '\n' ' ')
  if echo "$ssd" | grep -q 'sd[a-z]: scheduler=\[none\].* add_random=0 nr_requests=512 rotational=0 rq_affinity=0 nomerges=1;' &&
    echo "$ssd" | grep -q 'nvme0n1: scheduler=\[none\]' && echo "$ssd" | grep -q 'by-id:.* google-local-ssd-0' &&
    ! serial_has 'instance-setup: WARNING.*\(nr_requests\|sd[a-z]\)'; then
    check local-ssd ok "$ssd" "$s"
  else
    check local-ssd FAILED "want the scsi local SSD's queue settings (no warning), NVMe scheduler none, a google-local-ssd-0 link: $ssd" "$s"
  fi

  # Clock (a): at boot the system clock is the RTC's, an hour behind the host (read by the
  # guest's report just before boot-done; the host time is when the harness saw that line).
  s=$(now)
  clk=$(serial_value 'vm-report clock:')
  boot_sys=$(echo "$clk" | sed -n 's/.*sys=\([0-9]*\).*/\1/p')
  boot_rtc=$(echo "$clk" | sed -n 's/.*rtc=\([0-9]*\).*/\1/p')
  local boot_skew boot_rtc_skew
  boot_skew=$(awk -v g="${boot_sys:-0}" -v h="$BOOT_DONE_T" 'BEGIN { printf "%d", int(g - h + (g < h ? -0.5 : 0.5)) }')
  boot_rtc_skew=$(awk -v g="${boot_rtc:-0}" -v h="$BOOT_DONE_T" 'BEGIN { printf "%d", int(g - h + (g < h ? -0.5 : 0.5)) }')
  if abs_below $((boot_skew + 3600)) 30 && abs_below $((boot_rtc_skew + 3600)) 30; then
    check clock-boot ok "guest - host at boot: system clock $boot_skew s, RTC $boot_rtc_skew s (QEMU started the RTC an hour behind)" "$s"
  else
    check clock-boot FAILED "guest - host at boot: system clock $boot_skew s, RTC $boot_rtc_skew s (want about -3600)" "$s"
  fi

  # Clock (b): the clock daemon's first sync happened at its start (its log line on the
  # console; the guest's syslog gives the uptime of each line), and the system clock now
  # equals the RTC (hwclock -r and date read together in the guest), so the hour stays.
  s=$(now)
  synced_up=$(as_root "grep -m1 'google-clock-skew: INFO Synced system time' /run/vm-syslog.log | cut -d' ' -f1" 2>/dev/null || true)
  started_up=$(as_root "grep -m1 'google-guest-daemon: INFO Starting daemons' /run/vm-syslog.log | cut -d' ' -f1" 2>/dev/null || true)
  read -r sys rtc hwr < <(as_root 'echo "$(date +%s) $(cat /sys/class/rtc/rtc0/since_epoch) $(hwclock -r -u | tr -s " " | cut -d" " -f1-5) / date: $(date)"' 2>/dev/null || echo "0 0 -")
  first=$(serial_first 'google-clock-skew: INFO Synced system time')
  dt=$((${sys:-0} - ${rtc:-0}))
  if [ -n "$first" ] && [ -n "$synced_up" ] && [ -n "$started_up" ] && abs_below "$dt" 3 && abs_below $((boot_skew + 3600)) 30; then
    check clock-first-sync ok "'${first#* * * }' at guest uptime ${synced_up}s (daemon started at ${started_up}s); then system - RTC = $dt s (hwclock -r: $hwr), so the clock stays an hour behind the host" "$s"
  else
    check clock-first-sync FAILED "sync line: ${first:-none}; at uptime ${synced_up:-?}s; system - RTC = $dt s" "$s"
  fi

  # Clock (c): the RTC set right (hwclock -w from a system clock set to the host's), the
  # system clock then skewed by a day, and a drift-token change: the clock daemon sets
  # the system clock from the RTC again, within 2 s of the host.
  s=$(now)
  local rtc_skew=? skewed=? set=no line
  if open_guest_shell; then
    set_clock_from_host && set=yes
    guest_skew rtc_skew 'cat /sys/class/rtc/rtc0/since_epoch' || rtc_skew=?
    gsh line 'date -s @$(($(date +%s) + 86400)) >/dev/null' || true
    guest_skew skewed || skewed=?
  fi
  t_change=$(now)
  admin PATCH /emulator/metadata '{"instance":{"virtualClock":{"driftToken":"42"}}}' >/dev/null
  d=?
  if wait_for 30 eval 'guest_skew d && abs_below "$d" 2'; then
    check clock-drift-token ok "RTC set right (date -s, hwclock -w; RTC - host: $rtc_skew s, whole seconds), system clock skewed to $skewed s; after the drift-token change: $d s, $(since "$t_change")s after the change" "$s"
  else
    check clock-drift-token FAILED "RTC set: $set, RTC - host: $rtc_skew s; skewed to $skewed s; after the drift-token change: ${d:-?} s 30 s later (want within 2 s)" "$s"
  fi
  close_guest_shell

  # Idle: 60 s after boot, the agent's RSS, and the requests it made in a further 10 s.
  wait_left=$(awk -v a="$BOOT_DONE_T" -v b="$(now)" 'BEGIN { w = 60 - (b - a); print (w > 0) ? int(w + 1) : 0 }')
  sleep "$wait_left"
  s=$(now)
  count_requests() { admin GET /emulator/requests | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0; }
  rss=$(as_root 'for p in $(pidof google_guest_daemon); do echo "$(tr "\0" " " < /proc/$p/cmdline | cut -c1-40)$(grep VmRSS /proc/$p/status | tr -s " \t" " " | cut -d: -f2)"; done' 2>/dev/null | tr '\n' ';' || true)
  r1=$(count_requests)
  sleep 10
  r2=$(count_requests)
  if [ -n "$rss" ]; then
    check idle ok "RSS: ${rss%;}; requests to the metadata server: $r1 in the first 60+ s, $((r2 - r1)) in the next 10 s idle" "$s"
  else
    check idle FAILED "no google_guest_daemon found in the guest" "$s"
  fi

  # Reboot from inside the guest with a new instance id: the instance id changes in the
  # emulator, `reboot` runs in the guest, QEMU keeps running; the second boot makes new
  # host keys and publishes them.
  s=$(now)
  old_pid=$QEMU_PID
  id2=4520031799277582848
  admin DELETE /emulator/guest-attributes >/dev/null
  admin PATCH /emulator/metadata "{\"instance\":{\"id\":$id2}}" >/dev/null
  off=$(stat -c %s "$SERIAL")
  BOOT_OFF=$off
  as_root 'reboot' >/dev/null 2>&1 || true
  # The second boot starts where the initramfs prints its first line after the offset.
  if wait_serial 'vm-initramfs: start' 90; then
    local shutdown_on_reboot
    shutdown_on_reboot=$(serial_count 'vm-shutdown-marker')
    BOOT_OFF=$(grep -abo 'vm-initramfs: start' "$SERIAL" | awk -F: -v o="$off" '$1 >= o && !found { print $1; found = 1 }')
    BOOT_OFF=${BOOT_OFF:-$off}
    BOOT_T=$(now)
    keys2=
    if wait_serial 'vm-report boot-done' 150; then
      BOOT_DONE_T=$(now)
      wait_for 15 eval 'keys2=$(hostkeys); [ -n "$keys2" ]' || true
      clk=$(serial_value 'vm-report clock:')
      skew2=$(awk -v g="$(echo "$clk" | sed -n 's/.*sys=\([0-9]*\).*/\1/p')" -v h="$BOOT_DONE_T" 'BEGIN { printf "%d", int(g - h + (g < h ? -0.5 : 0.5)) }')
      if [ "$QEMU_PID" = "$old_pid" ] && kill -0 "$QEMU_PID" 2>/dev/null && [ -n "$keys2" ] &&
        [ "$keys2" != "$keys1" ] && serial_has "Generating SSH host keys for instance $id2" &&
        [ "$shutdown_on_reboot" -ge 1 ]; then
        check reboot-new-id ok "same QEMU (pid $QEMU_PID); the shutdown script ran on reboot; second boot done at guest uptime $(serial_value 'vm-report boot-done' | awk '{ print $NF }'), host keys for instance $id2: $keys2 (before: $keys1); clock at the second boot: guest - host $skew2 s (the RTC kept the hwclock -w value)" "$s"
      else
        check reboot-new-id FAILED "QEMU pid $old_pid -> ${QEMU_PID:-ended}; shutdown script on reboot: $shutdown_on_reboot; keys before: $keys1; after: ${keys2:-none}" "$s"
      fi
    else
      check reboot-new-id FAILED "no boot-done marker on the second boot" "$s"
      console | tail -n 40 >&2
      stop_qemu
      return 0
    fi
  else
    check reboot-new-id FAILED "no second boot on the console within 90 s (QEMU $([ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null && echo running || echo ended))" "$s"
    stop_qemu
    return 0
  fi
  # root logs in on the second boot (dropbear with the new keys), then poweroff.
  wait_for 30 eval 'as_root true 2>/dev/null' || true
  check_poweroff
}

# ---------------------------------------------------------------------------------------
# The openrc run: OpenRC starts gce-guest's services (make install INIT=openrc).
run_openrc() {
  local s services
  RUN=openrc
  reset_metadata
  echo "vm-test: openrc run: booting ($ACCEL, -smp 4 -m 512); serial console: $WORK/serial-openrc.log"
  BOOT_T=$(now)
  boot openrc
  check_boot || { stop_qemu; return 0; }
  s=$(now)
  services=$(as_root 'rc-status -a 2>/dev/null | grep -E "google|dropbear" | tr -s " " | tr "\n" ";"' 2>/dev/null || true)
  if echo "$services" | grep -q 'google-guest-daemon \[ started' && echo "$services" | grep -q 'google-instance-setup \[ started' && echo "$services" | grep -q 'dropbear \[ started'; then
    check services ok "rc-status: $services" "$s"
  else
    check services FAILED "rc-status: ${services:-nothing}" "$s"
  fi
  check_disk
  check_startup_script
  check_login
  check_poweroff
}

for r in "${RUNS[@]}"; do
  case "$r" in
  busybox) run_busybox ;;
  openrc) run_openrc ;;
  *) echo "vm-test: unknown run $r" >&2; exit 2 ;;
  esac
  stop_qemu
  SUMMARY+=("$r boot to ssh ${BOOT_TO_SSH:-?}s")
  BOOT_TO_SSH=
done

echo "vm-test: $(IFS=';'; echo "${SUMMARY[*]}" | sed 's/;/; /g'); total $(since "$T0")s; $FAILED failed"
if [ "${VM_SHOW_SERIAL:-0}" = 1 ]; then
  echo "--- serial console (first boot) ---"
  tr -d '\r' <"$WORK/serial-${RUNS[0]}.log"
fi
[ "$FAILED" = 0 ]
