#!/usr/bin/env python3
"""make bench: size, start-up and memory of gce-guest, printed as one table.

Measures the release binaries the Makefile built. Timings are medians over many runs
against the built-in metadata emulator on loopback; nothing here asserts a number.
"""
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = "x86_64-unknown-linux-musl"
RELEASE = os.path.join(ROOT, "target", TARGET, "release", "gce-guest")
TINY = os.path.join(ROOT, "target", "tiny", TARGET, "release", "gce-guest")
EMULATOR = os.path.join(ROOT, "target", "emulator", TARGET, "release", "gce-guest")
MIB = 1024 * 1024
rows = []


def row(what, value, budget=""):
    rows.append((what, value, budget))


def start_emulator():
    tmp = tempfile.mkdtemp(prefix="gce-guest-bench-")
    ready = os.path.join(tmp, "ready")
    proc = subprocess.Popen(
        [EMULATOR, "google_metadata_emulator", "--listen", "127.0.0.1:0", "--ready-file", ready],
        stdout=subprocess.DEVNULL,
    )
    for _ in range(500):
        if os.path.exists(ready):
            break
        time.sleep(0.01)
    with open(ready) as f:
        addr = f.read().split()[0]
    return proc, addr


def first_request_latency(binary, runs=200):
    """Time from just before exec to the moment the first connection reaches a listener."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = dict(os.environ, GCE_METADATA_HOST=f"127.0.0.1:{port}")
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary, "google_metadata_get", "--timeout", "1", "instance/id"],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = listener.accept()
        samples.append(time.perf_counter() - t0)
        conn.close()
        proc.kill()
        proc.wait()
    listener.close()
    return statistics.median(samples), sorted(samples)[int(len(samples) * 0.99) - 1]


def peak_rss_kib(argv, env):
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    return usage.ru_maxrss, status


def main():
    for path, name in [(RELEASE, "make"), (TINY, "make tiny"), (EMULATOR, "make emulator")]:
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing; run `make bench`, which builds it")
    row("binary size, `make` (with TLS)", f"{os.path.getsize(RELEASE) / MIB:.2f} MiB", "<= 3 MiB")
    row("binary size, `make tiny` (no TLS)", f"{os.path.getsize(TINY) / MIB:.2f} MiB", "<= 1 MiB")
    emu, addr = start_emulator()
    try:
        med, p99 = first_request_latency(RELEASE)
        row("exec to first metadata request (median / p99 of 200)", f"{med * 1000:.2f} / {p99 * 1000:.2f} ms")
        env = dict(os.environ, GCE_METADATA_HOST=addr)
        rss = []
        for _ in range(20):
            kib, status = peak_rss_kib([RELEASE, "google_metadata_get", "instance/id"], env)
            if status != 0:
                sys.exit("bench: google_metadata_get failed against the emulator")
            rss.append(kib)
        row("peak RSS, google_metadata_get instance/id", f"{max(rss) / 1024:.2f} MiB")
        kib, _ = peak_rss_kib([RELEASE, "google_metadata_get", "--recursive", ""], env)
        row("peak RSS, google_metadata_get --recursive (whole document)", f"{kib / 1024:.2f} MiB")
    finally:
        emu.kill()
        emu.wait()
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"{'measure':<{width}}  {'value':>{vwidth}}  budget")
    print(f"{'-' * width}  {'-' * vwidth}  ------")
    for what, value, budget in rows:
        print(f"{what:<{width}}  {value:>{vwidth}}  {budget}")


if __name__ == "__main__":
    main()
