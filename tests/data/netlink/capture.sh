#!/bin/sh
# Regenerates the netlink byte fixtures in this directory from iproute2 itself.
#
#   sudo unshare -n sh tests/data/netlink/capture.sh tests/data/netlink
#
# In a private network namespace it makes a veth pair (vg0 = ifindex 3, vg1), gives vg0 an
# address, then runs each `ip route ...` command under strace, keeping the bytes written to
# and read from the rtnetlink socket (fd 3). Each fixture file holds the command in a
# comment and then its datagrams, each after a `send` or `recv` line, as hex. Sent buffers
# are cut at nlmsg_len (iproute2 passes sizeof(req) to send()). Sequence numbers and port
# ids are whatever the capture had; the tests read them back from the files.
set -eu
out=${1:?usage: capture.sh OUTPUT_DIR}
ip link set lo up
ip link add vg0 type veth peer name vg1
ip link set vg0 up
ip link set vg1 up
ip addr add 10.128.0.2/20 dev vg0
ip -6 addr add 2001:db8:1::2/64 dev vg0 nodad

# capture NAME CMD...: strace CMD and write NAME.hex.
capture() {
    name=$1
    shift
    strace -x -e trace=sendto,sendmsg,recvmsg -e write=3 -e read=3 "$@" 2>"$out/.strace" >/dev/null || true
    python3 - "$out/.strace" "$out/$name.hex" "$*" "$(uname -r)" "$(ip -V)" <<'PY'
import re, sys
src, dst, command, kernel, iproute = sys.argv[1:6]
blocks, kind, data = [], None, None
for line in open(src):
    if re.match(r"(sendto|sendmsg)\(3,", line):
        kind = "send"
    elif re.match(r"recvmsg\(3,", line):
        kind = "recv"
    elif re.match(r"[a-z]", line):
        kind = None
    m = re.match(r" \| ([0-9a-f]{5})  (.*)$", line)
    if m and kind:
        if m.group(1) == "00000":
            data = bytearray()
            blocks.append((kind, data))
        data.extend(bytes.fromhex(m.group(2)[:48].replace(" ", "")))
with open(dst, "w") as f:
    f.write("# " + command + "\n# Linux " + kernel + ", " + iproute + "\n")
    for kind, data in blocks:
        if kind == "send":
            data = data[: int.from_bytes(data[:4], "little")]
        f.write(kind + "\n")
        for i in range(0, len(data), 16):
            f.write(" ".join("%02x" % b for b in data[i : i + 16]) + "\n")
PY
}

capture add_v4 ip route add to local 10.9.9.9/32 dev vg0 proto 66 table local
capture add_v4_exists ip route add to local 10.9.9.9/32 dev vg0 proto 66 table local
capture add_alias ip route add to local 10.200.0.0/28 dev vg0 proto 66 table local
capture add_v6 ip -6 route add to local 2001:db8::9/128 dev vg0 proto 66 table local
# A route of another protocol for an address of ours: the dump must show it, we ignore it.
ip route add to local 10.9.9.7/32 dev vg0 proto static table local
capture dump_v4_proto66 ip route show table local proto 66
capture dump_v4_local ip route show table local
capture dump_v6_proto66 ip -6 route show table local proto 66
capture del_v4 ip route del to local 10.9.9.9/32 dev vg0 proto 66 table local
capture del_v4_missing ip route del to local 10.9.9.9/32 dev vg0 proto 66 table local
rm -f "$out/.strace"
