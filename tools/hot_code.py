#!/usr/bin/env python3
"""make hot-code: finds the code the daemons run and writes src/link/hot-code.ld, the linker
script that gathers it at the start of the binary.

Why: the kernel maps a program's text in 64 KB windows around each page it touches. Left in
the order fat LTO emits it, the few hundred KB of code a daemon runs are spread over the
whole 1.8 MB text (TLS and crypto code that never runs sits between them), so an idle
daemon ends up holding most of the binary. Gathered together, they fill a few windows.

How: an unstripped release build (with a link map) runs under valgrind's callgrind in the
same private namespaces as the bench, against the emulator: the guest daemon and the
standalone daemons through start-up, a first full update, a key change, a drift-token
change and SIGTERM, and google_metadata_get once. Every function they executed becomes one
input-section pattern; hashes and crate disambiguators are wildcards, so the script keeps
matching after code changes and for other feature sets. A function missing from the
script only costs memory, never correctness: it stays in the ordinary `.text`.

Usage (the Makefile passes these): hot_code.py UNSTRIPPED_BINARY LINK_MAP OUTPUT
"""
import bisect
import collections
import json
import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True
import bench  # noqa: E402  (the namespace set-up, the emulator, the admin API)

# The runs: applet, and whether it manages accounts (then the first update is awaited by
# alice's authorized_keys, else by time).
RUNS = [
    ("google_guest_daemon", True),
    ("google_accounts_daemon", True),
    ("google_clock_skew_daemon", False),
    ("google_ip_forwarding_daemon", False),
]
NEW_KEY = "alice:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHotCodeProfileKeyHotCodeProfileKey0000 alice@profile{}"


def alice_has(text):
    try:
        with open("/home/alice/.ssh/authorized_keys") as f:
            return text in f.read()
    except OSError:
        return False


def profile(binary, outdir, addr):
    """Runs every workload under callgrind; returns the callgrind output files."""
    env = bench.daemon_env(addr)
    original = json.loads(bench.admin(addr, "GET", "/emulator/metadata"))
    keys = original["instance"]["attributes"]["ssh-keys"]
    valgrind = ["valgrind", "--tool=callgrind", "--demangle=no", "--trace-children=no"]
    for n, (applet, accounts) in enumerate(RUNS):
        bench.admin(addr, "PUT", "/emulator/metadata", json.dumps(original))
        out = os.path.join(outdir, f"callgrind.{n}.{applet}")
        proc = subprocess.Popen(bench.NO_SYS_TIME + valgrind + [f"--callgrind-out-file={out}", binary, applet],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if accounts:
            # The metadata is back to the original: the key the previous run added goes.
            def first_update_done():
                return alice_has("alice@workstation") and not alice_has(f"alice@profile{n - 1}")
            if not bench.wait_for(first_update_done, 60):
                sys.exit(f"hot_code: {applet} did not write alice's keys within 60 s")
        else:
            time.sleep(8)
        patch = {"instance": {"attributes": {"ssh-keys": keys + "\n" + NEW_KEY.format(n)},
                              "virtualClock": {"driftToken": str(1000 + n)}}}
        bench.admin(addr, "PATCH", "/emulator/metadata", json.dumps(patch))
        if accounts and not bench.wait_for(lambda: alice_has(f"alice@profile{n}"), 60):
            sys.exit(f"hot_code: {applet} did not apply the key change within 60 s")
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)
        if proc.wait(timeout=60) != 0:
            sys.exit(f"hot_code: {applet} under valgrind exited {proc.returncode}")
    out = os.path.join(outdir, "callgrind.get")
    subprocess.run(valgrind + [f"--callgrind-out-file={out}", binary, "google_metadata_get", "instance/id"],
                   env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return sorted(os.path.join(outdir, f) for f in os.listdir(outdir) if f.startswith("callgrind."))


# What runs outside valgrind's sight: callgrind calls musl's __libc_start_main "(below main)",
# and valgrind gives no vDSO, so musl never looks up its symbols (with strcmp) there.
RENAMED = {"(below main)": "__libc_start_main"}
UNSEEN = ["_start", "strcmp"]


def executed_functions(files):
    """Names of the functions callgrind saw executing (`fn=` records). Callgrind names a
    function once, as `(id) name` in an fn= or cfn= record, and by `(id)` after that."""
    names = set()
    for path in files:
        defined, ran = {}, set()
        with open(path, errors="replace") as f:
            for line in f:
                m = re.match(r"(c?fn)=\((\d+)\)(?: (.+))?$", line.rstrip("\n"))
                if not m:
                    continue
                kind, ident, name = m.groups()
                if name:
                    defined[ident] = re.sub(r"'\d+$", "", name)  # 'N marks recursion depth
                if kind == "fn":
                    ran.add(ident)
        names.update(RENAMED.get(defined[i], defined[i]) for i in ran if i in defined)
    return names | set(UNSEEN)


def symbol_addresses(binary):
    addresses = {}
    nm = subprocess.run(["nm", "--defined-only", binary], capture_output=True, text=True, check=True)
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] in "tTwW":
            addresses.setdefault(parts[2], int(parts[0], 16))
    return addresses


def input_sections(link_map):
    """(address, size, section name, file) of every code input section in a GNU ld map."""
    sections = []
    pending = None
    with open(link_map) as f:
        for line in f:
            if pending is not None:
                m = re.match(r"\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*)$", line)
                if m:
                    sections.append((int(m.group(1), 16), int(m.group(2), 16), pending, m.group(3)))
                pending = None
                continue
            m = re.match(r" (\.text\S*)(?:\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S.*))?$", line.rstrip("\n"))
            if not m:
                continue
            if m.group(2) is None:
                pending = m.group(1)
            else:
                sections.append((int(m.group(2), 16), int(m.group(3), 16), m.group(1), m.group(4)))
    return sorted(s for s in sections if s[1] > 0)


def pattern(section, path):
    """An input-section pattern that finds this section again in a later build."""
    if section == ".text":
        # Assembly without per-function sections: the archive member (musl's memcpy.lo) or
        # the object file (the start files).
        m = re.match(r"(.*)\((.*)\)$", path)
        if m:
            return f"*{os.path.basename(m.group(1))}:{m.group(2)}(.text)"
        return f"*{os.path.basename(path)}(.text)"
    name = re.sub(r"17h[0-9a-f]{16}E", "17h*E", section)  # legacy mangling: the hash
    if "._R" in name:  # v0 mangling: crate disambiguators and the back-references after them
        name = re.sub(r"Cs[0-9A-Za-z]*_", "Cs*_", name)
        name = re.sub(r"B[0-9A-Za-z]*_", "B*_", name)
    return f"*({name})"


def main():
    if len(sys.argv) != 4:
        sys.exit("usage: hot_code.py UNSTRIPPED_BINARY LINK_MAP OUTPUT")
    binary, link_map, output = (os.path.abspath(a) for a in sys.argv[1:])
    bench.enter_private_namespace()
    outdir = os.path.join(os.path.dirname(link_map), "callgrind")
    os.makedirs(outdir, exist_ok=True)
    for f in os.listdir(outdir):
        os.unlink(os.path.join(outdir, f))
    emu, addr = bench.start_emulator()
    try:
        files = profile(binary, outdir, addr)
    finally:
        emu.kill()
        emu.wait()
    ran = executed_functions(files)
    addresses = symbol_addresses(binary)
    sections = input_sections(link_map)
    starts = [s[0] for s in sections]
    chosen = collections.OrderedDict()
    hot_bytes = 0
    missing = 0
    # Callgrind names a few functions (memcpy, which valgrind redirects) by their address.
    hot = {addresses[n] for n in ran if n in addresses}
    hot |= {int(n, 16) for n in ran if re.fullmatch(r"0x[0-9a-f]+", n)}
    for address in sorted(hot):
        i = bisect.bisect_right(starts, address) - 1
        if i < 0 or not sections[i][0] <= address < sections[i][0] + sections[i][1]:
            missing += 1
            continue
        start, size, section, path = sections[i]
        pat = pattern(section, path)
        if pat and pat not in chosen:
            chosen[pat] = None
            hot_bytes += size
    with open(output + ".tmp", "w") as f:
        f.write("/* Generated by `make hot-code` (tools/hot_code.py): the code the daemons ran under\n"
                f"   callgrind, {len(chosen)} input sections, {hot_bytes} bytes, gathered at the start of the\n"
                "   text so an idle daemon keeps few pages of the binary resident. build.rs passes it to\n"
                "   the linker; INSERT keeps the default layout for everything else. */\n"
                "SECTIONS\n{\n  .text.hot : {\n")
        for pat in chosen:
            f.write(f"    {pat}\n")
        f.write("  }\n}\nINSERT BEFORE .text;\n\n"
                "/* The read-only data of the TLS library's C crypto code (tables, 0.25 MB) is used only\n"
                "   for https script URLs: kept apart, after the program's own. */\n"
                "SECTIONS\n{\n  .rodata.cold : { *aws_lc*:*(.rodata .rodata.*) }\n}\nINSERT AFTER .rodata;\n")
    os.rename(output + ".tmp", output)
    print(f"hot_code: {len(ran)} functions ran; {len(chosen)} input sections ({hot_bytes / 1024:.0f} KB) "
          f"written to {output}; {missing} outside any input section")


if __name__ == "__main__":
    main()
