#!/usr/bin/env bash
# make vm-test: boots the guest built by build-guest.sh under QEMU (TCG unless KVM works)
# with gce-guest as its only agent, the metadata emulator at 169.254.169.254 on a tap in a
# private network namespace (GCE addressing: 10.128.0.1/20 on the host side, the guest
# 10.128.0.2), SMBIOS saying Google Compute Engine, a 4-queue virtio-net, -smp 4, an NVMe
# local SSD, a 2 GiB boot disk holding a 1 GiB image and the RTC an hour behind; then
# prints one line per named check: `vm-check NAME: ok|FAILED (details, seconds)`.
# Usage: run.sh PRODUCT_BINARY EMULATOR_BINARY   (root). Every wait is bounded; the
# namespace, the tap, QEMU and the emulator are removed on every exit path.
# The serial logs of the last run are copied to target/vm/last-run/; VM_KEEP=1 keeps the
# whole work directory.
set -euo pipefail
BIN=$(realpath "${1:?usage: run.sh PRODUCT_BINARY EMULATOR_BINARY}")
EMU=$(realpath "${2:?usage: run.sh PRODUCT_BINARY EMULATOR_BINARY}")
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
VM="$ROOT/target/vm"
[ "$(id -u)" = 0 ] || { echo "vm-test needs root (a network namespace and a tap)" >&2; exit 1; }

T0=$(date +%s.%N)
WORK=$(mktemp -d /tmp/gce-guest-vm.XXXXXX)
NS="gcevm$$"
GUEST=10.128.0.2
QEMU_PID=
EMU_PID=
cleanup() {
  set +e
  [ -n "$QEMU_PID" ] && kill "$QEMU_PID" 2>/dev/null && wait "$QEMU_PID" 2>/dev/null
  [ -n "$EMU_PID" ] && kill "$EMU_PID" 2>/dev/null && wait "$EMU_PID" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
  mkdir -p "$VM/last-run" && cp "$WORK"/serial*.log "$WORK"/emulator.log "$VM/last-run/" 2>/dev/null
  if [ "${VM_KEEP:-0}" = 1 ]; then echo "vm-test: work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
FAILED=0
RESULTS=()
# check NAME ok|FAILED DETAILS START
check() {
  local line
  line="vm-check $1: $2 ($3, $(since "$4")s)"
  echo "$line"
  RESULTS+=("$line")
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
# wait_serial FILE PATTERN SECONDS: 0 when a line matching PATTERN appears, else 1 (also
# at once when QEMU has ended).
wait_serial() {
  local end=$(( $(date +%s) + $3 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    grep -aq -- "$2" "$1" 2>/dev/null && return 0
    [ -n "$QEMU_PID" ] && ! kill -0 "$QEMU_PID" 2>/dev/null && return 1
    sleep 0.2
  done
  return 1
}
serial_value() { grep -a -- "$2" "$1" | tail -n1 | tr -d '\r'; }

ACCEL=tcg
if [ -w /dev/kvm ] && [ "${VM_KVM:-0}" = 1 ]; then ACCEL=kvm; fi
cp --sparse=always "$VM/disk.raw" "$WORK/disk.raw"
truncate -s 2G "$WORK/disk.raw"
truncate -s 375M "$WORK/ssd.raw" "$WORK/scsi-ssd.raw"

# boot SERIAL_LOG: starts QEMU in the namespace (the RTC an hour behind the host).
boot() {
  local rtc
  rtc=$(date -u -d '-1 hour' +%Y-%m-%dT%H:%M:%S)
  : > "$1"
  ip netns exec "$NS" qemu-system-x86_64 -accel "$ACCEL" -M pc -smp 4 -m 512 \
    -nodefaults -display none -monitor none -no-reboot -serial "file:$1" \
    -kernel "$VM/vmlinuz" -initrd "$VM/initrd" \
    -append "console=ttyS0 root=LABEL=root panic=-1 scsi_mod.scan=sync loglevel=4" \
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
    >"$WORK/qemu.log" 2>&1 &
  QEMU_PID=$!
}
# qemu_exited SECONDS: 0 when QEMU ended within SECONDS.
qemu_exited() {
  local end=$(( $(date +%s) + $1 ))
  while [ "$(date +%s)" -lt "$end" ]; do
    kill -0 "$QEMU_PID" 2>/dev/null || { wait "$QEMU_PID" 2>/dev/null || true; QEMU_PID=; return 0; }
    sleep 0.2
  done
  return 1
}
hostkeys() { admin GET /emulator/guest-attributes | python3 -c '
import json, sys
keys = json.load(sys.stdin).get("hostkeys", {})
print(" ".join("%s=%s" % (t, keys[t].split()[-1][-12:]) for t in sorted(keys) if keys[t].split()))' || true; }

SERIAL="$WORK/serial.log"
echo "vm-test: booting ($ACCEL, -smp 4 -m 512); serial console: $SERIAL"
BOOT_T=$(now)
boot "$SERIAL"

# 1. first boot: instance setup done, dropbear after it, host keys published.
s=$(now)
if wait_serial "$SERIAL" 'vm-report boot-done' 150; then
  setup=$(serial_value "$SERIAL" 'vm-report setup-done:')
  setup_line=$(grep -an 'Running instance setup' "$SERIAL" | head -n1 | cut -d: -f1)
  dropbear_line=$(grep -an 'vm-dropbear: keys' "$SERIAL" | head -n1 | cut -d: -f1)
  booted=$(serial_value "$SERIAL" 'vm-report boot-done' | awk '{ print $NF }')
  keys=
  for _ in $(seq 50); do keys=$(hostkeys); [ -n "$keys" ] && break; sleep 0.2; done
  if [ "${setup##* }" = yes ] && [ -n "$keys" ] && [ "${setup_line:-0}" -gt 0 ] &&
    [ "${dropbear_line:-0}" -gt "${setup_line:-0}" ]; then
    check boot ok "rcS done at guest uptime $booted; /run/google-instance-setup.done; instance setup before dropbear; host keys in guest attributes: $keys" "$s"
  else
    check boot FAILED "setup done: ${setup##* }; setup/dropbear console lines ${setup_line:-none}/${dropbear_line:-none}; host keys: ${keys:-none}" "$s"
  fi
else
  check boot FAILED "no boot-done marker on the console" "$s"
  tail -n 30 "$SERIAL" >&2
  exit 1
fi
KEYS1=$keys
BOOT_DONE_T=$(now)
admin GET /emulator/guest-attributes > "$WORK/guest-attributes.json" || true

# 1b. host name and /etc/hosts from metadata.
s=$(now)
hn=$(serial_value "$SERIAL" 'vm-report hostname:')
if echo "$hn" | grep -q 'hostname: vm-test hosts: .*10.128.0.2 vm-test.c.demo-project.internal vm-test'; then
  check hostname ok "${hn#vm-report hostname: }" "$s"
else
  check hostname FAILED "${hn:-no hostname report}" "$s"
fi

# 2. startup script output on the console.
s=$(now)
if wait_serial "$SERIAL" 'vm-startup-marker' 60; then
  check startup-script ok "$(serial_value "$SERIAL" 'vm-startup-marker' | cut -c1-100)" "$s"
else
  check startup-script FAILED "no startup-script output on the console" "$s"
fi

# 3. disk grown: partition and ext4 read in the guest.
s=$(now)
disk=$(serial_value "$SERIAL" 'vm-report disk:')
eval "$(echo "$disk" | grep -o '[a-z_]*=[0-9]*' | tr '\n' ';')"
if [ "${part_bytes:-0}" -gt $((1900 * 1048576)) ] && [ "${fs_kib:-0}" -gt $((1800 * 1024)) ]; then
  check disk-grown ok "disk $((disk_bytes / 1048576)) MiB, partition $((part_bytes / 1048576)) MiB, ext4 $((fs_kib / 1024)) MiB (image was 1024 MiB)" "$s"
else
  check disk-grown FAILED "${disk:-no disk report}" "$s"
fi

# 4. ssh login with the metadata key (the accounts daemon makes the user).
s=$(now)
login=
for _ in $(seq 60); do
  login=$(ssh_as vmtest "$VM/keys/user" 'echo "$(id -un) $(hostname)"' 2>/dev/null) && break
  login=
  sleep 1
done
if [ -n "$login" ]; then
  check ssh-login ok "as $login, $(since "$BOOT_T")s after QEMU started" "$s"
  BOOT_TO_SSH=$(since "$BOOT_T")
  s=$(now)
  sudo=$(ssh_as vmtest "$VM/keys/user" 'sudo -n true && echo sudo-ok' 2>&1 | tr '\n' ' ' || true)
  if [ "${sudo% }" = sudo-ok ]; then
    check sudo ok "sudo -n true as vmtest (google-sudoers, NOPASSWD from the accounts daemon)" "$s"
  else
    check sudo FAILED "sudo -n true as vmtest: ${sudo:-no output}" "$s"
  fi
else
  check ssh-login FAILED "no login as vmtest within 60 s" "$s"
fi

# 5. key removed from metadata -> login refused.
s=$(now)
admin PATCH /emulator/metadata '{"instance":{"attributes":{"ssh-keys":""}}}' >/dev/null
refused=
for _ in $(seq 30); do
  ssh_as vmtest "$VM/keys/user" true 2>/dev/null || { refused=1; break; }
  sleep 0.5
done
# A refusal, not a dead network: root's own key still logs in.
if [ -n "$refused" ] && ssh_as root "$VM/keys/harness" true 2>/dev/null; then
  check key-revoked ok "vmtest refused $(since "$s")s after the key left metadata; root still logs in" "$s"
else
  check key-revoked FAILED "vmtest refused: ${refused:-no (15 s)}; root login afterwards failed or not tried" "$s"
fi

# 6. forwarded IP answers a TCP connection from the host side of the tap.
s=$(now)
doc=$(admin GET /emulator/metadata | python3 -c '
import json, sys
doc = json.load(sys.stdin)
doc["instance"]["networkInterfaces"][0]["forwardedIps"] = ["10.128.0.100"]
print(json.dumps(doc))')
admin PUT /emulator/metadata "$doc" >/dev/null
banner=
for _ in $(seq 40); do
  banner=$(in_ns timeout 3 bash -c 'exec 3<>/dev/tcp/10.128.0.100/22 && head -n 1 <&3' 2>/dev/null | tr -cd '[:print:]') && [ -n "$banner" ] && break
  banner=
  sleep 0.5
done
if [ -n "$banner" ]; then
  check forwarded-ip ok "10.128.0.100:22 answered: $banner" "$s"
else
  check forwarded-ip FAILED "no answer from 10.128.0.100:22 within 20 s" "$s"
fi

# 6b. multiqueue: 4 queue pairs, each queue's IRQ pinned to one CPU, XPS set on each
# tx queue (instance setup's google_set_multiqueue).
s=$(now)
mq=$(ssh_as root "$VM/keys/harness" '
  cd /sys/class/net/eth0/queues && echo "rx=$(ls -d rx-* | wc -l) tx=$(ls -d tx-* | wc -l)"
  for q in tx-*; do printf "xps:%s=%s " "$q" "$(cat $q/xps_cpus)"; done; echo
  grep virtio /proc/interrupts | while read -r irq rest; do
    irq=${irq%:}; name=${rest##* }
    printf "irq:%s=%s " "$name" "$(cat /proc/irq/$irq/smp_affinity_list)"
  done; echo' 2>/dev/null | tr '\n' ' ')
echo "vm-note multiqueue: $mq"
# S30vm-scramble put every queue IRQ on CPU 3 and XPS on all CPUs before instance setup:
# queue N's IRQs on CPU N and XPS of tx-N on CPU N only are instance setup's doing.
xps_set=$(echo "$mq" | grep -o 'xps:tx-[0-3]=[0-9a-f]*' | grep -cx 'xps:tx-0=1\|xps:tx-1=2\|xps:tx-2=4\|xps:tx-3=8' || true)
pinned=$(echo "$mq" | grep -o 'irq:virtio[0-9]*-\(input\|output\)\.[0-9]*=[0-9-]*' | sed 's/.*\.\([0-9]*\)=\(.*\)/\1=\2/' | awk -F= '$1 == $2' | wc -l)
if echo "$mq" | grep -q 'rx=4 tx=4' && grep -aq 'vm-scramble: .* now input.0=3 tx-0=f' "$SERIAL" && [ "$xps_set" = 4 ] && [ "$pinned" = 8 ]; then
  check multiqueue ok "4 queue pairs; after a scramble before setup, queue N's 2 IRQs on CPU N and tx-N's XPS on CPU N" "$s"
else
  check multiqueue FAILED "queues ${mq%% xps*}; XPS right on $xps_set of 4 tx queues; $pinned of 8 queue IRQs on their queue's CPU" "$s"
fi

# 6c. local SSDs: a virtio-scsi one (model EphemeralDisk: the original queue settings and
# its /dev/disk/by-id link) and an NVMe one (scheduler none; its interrupts are listed).
s=$(now)
ssd=$(ssh_as root "$VM/keys/harness" '
  for d in /sys/block/sd*; do
    grep -q EphemeralDisk $d/device/model || continue
    q=$d/queue
    echo "${d##*/}: scheduler=$(cat $q/scheduler | tr -d " ") add_random=$(cat $q/add_random) nr_requests=$(cat $q/nr_requests) rotational=$(cat $q/rotational) rq_affinity=$(cat $q/rq_affinity) nomerges=$(cat $q/nomerges);"
  done
  echo "nvme0n1: scheduler=$(cat /sys/block/nvme0n1/queue/scheduler | tr -d " ") irqs=$(for i in $(ls /sys/class/nvme/nvme0/device/msi_irqs); do printf "%s:%s," "$i" "$(cat /proc/irq/$i/smp_affinity_list)"; done);"
  echo "by-id: $(ls /dev/disk/by-id 2>/dev/null | tr "\n" " ")"' 2>/dev/null | tr '\n' ' ')
if echo "$ssd" | grep -q 'sd[a-z]: scheduler=\[none\].* add_random=0 nr_requests=512 rotational=0 rq_affinity=0 nomerges=1;' &&
  echo "$ssd" | grep -q 'nvme0n1: scheduler=\[none\]' && echo "$ssd" | grep -q 'by-id:.* google-local-ssd-0'; then
  check local-ssd ok "$ssd" "$s"
else
  check local-ssd FAILED "want the scsi local SSD's queue settings, NVMe scheduler none, a google-local-ssd-0 link: $ssd" "$s"
fi

# 7. clock: an hour behind at boot (the RTC started so); then the RTC is set right
# (hwclock -w from a right system clock), the system clock skewed by a day, and a
# drift-token change makes the clock daemon set the system clock from the RTC again.
s=$(now)
g=$(ssh_as root "$VM/keys/harness" 'date +%s' 2>/dev/null || true)
boot_skew=$(( ${g:-0} - $(date +%s) ))
ssh_as root "$VM/keys/harness" "date -u -s @$(date +%s) >/dev/null && hwclock -w -u && date -s @\$(( \$(date +%s) + 86400 )) >/dev/null" 2>/dev/null || true
admin PATCH /emulator/metadata '{"instance":{"virtualClock":{"driftToken":"42"}}}' >/dev/null
fixed=
for _ in $(seq 40); do
  g=$(ssh_as root "$VM/keys/harness" 'date +%s' 2>/dev/null || true)
  if [ -n "$g" ]; then
    d=$(( g - $(date +%s) ))
    [ ${d#-} -lt 10 ] && { fixed=$d; break; }
  fi
  sleep 0.5
done
if [ "${boot_skew#-}" -gt 3500 ] && [ "${boot_skew#-}" -lt 3700 ] && [ -n "$fixed" ]; then
  check clock ok "guest - host: $boot_skew s at boot (RTC); after hwclock -w, a +1 day skew and a drift-token change: $fixed s" "$s"
else
  check clock FAILED "guest - host: $boot_skew s at boot (want about -3600); after the drift-token change: ${d:-?} s (want about 0)" "$s"
fi

# 8. idle: 60 s after boot, the agent's RSS, and the requests it made in a further 10 s.
wait_left=$(awk -v a="$BOOT_DONE_T" -v b="$(now)" 'BEGIN { w = 60 - (b - a); print (w > 0) ? int(w + 1) : 0 }')
sleep "$wait_left"
s=$(now)
count_requests() { admin GET /emulator/requests | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' 2>/dev/null || echo 0; }
rss=$(ssh_as root "$VM/keys/harness" 'for p in $(pidof google_guest_daemon); do echo "$(tr "\0" " " < /proc/$p/cmdline | cut -c1-40)$(grep VmRSS /proc/$p/status | tr -s " \t" " " | cut -d: -f2)"; done' 2>/dev/null | tr '\n' ';' || true)
r1=$(count_requests)
sleep 10
r2=$(count_requests)
if [ -n "$rss" ]; then
  check idle ok "RSS: ${rss%;}; requests to the metadata server: $r1 in the first 60+ s, $((r2 - r1)) in the next 10 s idle" "$s"
else
  check idle FAILED "no google_guest_daemon found in the guest" "$s"
fi

# 9. poweroff runs the shutdown script, its output reaches the console, QEMU ends.
s=$(now)
ssh_as root "$VM/keys/harness" 'poweroff' >/dev/null 2>&1 || true
if qemu_exited 90 && grep -aq 'vm-shutdown-marker' "$SERIAL"; then
  check poweroff ok "QEMU ended; on the console: $(serial_value "$SERIAL" 'vm-shutdown-marker' | sed 's/.*INFO //'); $(serial_value "$SERIAL" 'Finished running shutdown scripts' | sed 's/.*INFO //')" "$s"
else
  check poweroff FAILED "shutdown marker: $(grep -ac vm-shutdown-marker "$SERIAL"), QEMU ended: $([ -z "$QEMU_PID" ] && echo yes || echo no)" "$s"
  [ -n "$QEMU_PID" ] && { kill "$QEMU_PID" 2>/dev/null; qemu_exited 10 || true; }
fi

# 10. boot again with a new instance id: the host keys change.
s=$(now)
admin DELETE /emulator/guest-attributes >/dev/null
admin PATCH /emulator/metadata '{"instance":{"id":4520031799277582848}}' >/dev/null
SERIAL2="$WORK/serial2.log"
boot "$SERIAL2"
if wait_serial "$SERIAL2" 'vm-report boot-done' 150; then
  keys2=
  for _ in $(seq 50); do keys2=$(hostkeys); [ -n "$keys2" ] && break; sleep 0.2; done
  if [ -n "$keys2" ] && [ "$keys2" != "$KEYS1" ]; then
    check new-instance-host-keys ok "before: $KEYS1; after: $keys2" "$s"
  else
    check new-instance-host-keys FAILED "before: $KEYS1; after: ${keys2:-none}" "$s"
  fi
else
  check new-instance-host-keys FAILED "no boot-done marker on the second boot" "$s"
fi
kill "$QEMU_PID" 2>/dev/null || true
qemu_exited 10 || true

echo "vm-test: boot to ssh ${BOOT_TO_SSH:-?}s; total $(since "$T0")s; $FAILED failed"
if [ "${VM_SHOW_SERIAL:-0}" = 1 ]; then
  echo "--- serial console (first boot) ---"; tr -d '\r' < "$SERIAL"
fi
[ "$FAILED" = 0 ]
