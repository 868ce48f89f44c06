#!/usr/bin/env python3
"""make bench: size, start-up and memory of gce-guest, printed as one table.

Measures the release binaries the Makefile built. Timings are medians over many runs
against the built-in metadata emulator on loopback; nothing here asserts a number.
"""
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


# Daemons run without the capability to set the clock: the host's clock is never theirs.
NO_SYS_TIME = ["setpriv", "--inh-caps=-sys_time", "--bounding-set=-sys_time", "--"]


def wait_for(predicate, seconds):
    """Polls `predicate` every 10 ms for up to `seconds`; whether it came true."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return False


def row(what, value, budget=""):
    rows.append((what, value, budget))


def start_emulator():
    tmp = tempfile.mkdtemp(prefix="gce-guest-bench-")
    ready = os.path.join(tmp, "ready")
    proc = subprocess.Popen(
        [EMULATOR, "google_metadata_emulator", "--listen", "127.0.0.1:0", "--ready-file", ready],
        stdout=subprocess.DEVNULL,
    )
    wait_for(lambda: os.path.exists(ready), 5)
    with open(ready) as f:
        addr = f.read().split()[0]
    return proc, addr


def first_request_latency(binary, argv, runs=200):
    """Time from just before exec to the moment the first connection reaches a listener."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    port = listener.getsockname()[1]
    env = dict(os.environ, GCE_METADATA_HOST=f"127.0.0.1:{port}")
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.Popen([binary] + argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conn, _ = listener.accept()
        samples.append(time.perf_counter() - t0)
        conn.close()
        proc.kill()
        proc.wait()
    listener.close()
    return statistics.median(samples), sorted(samples)[int(len(samples) * 0.99) - 1]


def proc_status(pid):
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def admin(addr, method, path, body=None):
    import http.client
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request(method, path, body=body)
    data = conn.getresponse().read()
    conn.close()
    return data


def daemon_env(addr):
    """The environment daemons run in here: the emulator's address, real time, and a PATH
    whose `hwclock` does nothing (the clock-skew daemon falls back to it, and it must not
    touch the host's clock; the daemons also run without CAP_SYS_TIME)."""
    stub = tempfile.mkdtemp(prefix="gce-guest-bench-stub-")
    with open(os.path.join(stub, "hwclock"), "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(os.path.join(stub, "hwclock"), 0o755)
    env = dict(os.environ, GCE_METADATA_HOST=addr, PATH=stub + ":" + os.environ.get("PATH", ""))
    env.pop("GCE_GUEST_TIME_SCALE", None)
    return env


def idle_daemon(addr, binary=RELEASE, label="", settle=20, window=60):
    """google_guest_daemon with every daemon on, idle: RSS, threads, CPU, request rate
    (only the RSS when `window` is 0)."""
    import json
    env = daemon_env(addr)
    proc = subprocess.Popen(NO_SYS_TIME + [binary, "google_guest_daemon"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(settle)
        status = proc_status(proc.pid)
        anon = int(status['RssAnon'].split()[0]) / 1024
        row(f"google_guest_daemon{label} idle after {settle} s: RSS (of which anonymous)",
            f"{int(status['VmRSS'].split()[0]) / 1024:.2f} MiB ({anon:.2f})", "<= 1.5 MiB")
        if not window:
            return
        row("google_guest_daemon idle: threads", status["Threads"])
        admin(addr, "DELETE", "/emulator/requests")
        cpu0 = cpu_seconds(proc.pid)
        time.sleep(window)
        cpu1 = cpu_seconds(proc.pid)
        requests = json.loads(admin(addr, "GET", "/emulator/requests"))
        row(f"google_guest_daemon idle: CPU over {window} s", f"{cpu1 - cpu0:.2f} s", "0.00 s")
        row("google_guest_daemon idle: metadata requests per minute", f"{len(requests) * 60 / window:.1f}", "<= 1.0")
    finally:
        proc.kill()
        proc.wait()


def peak_rss_kib(argv, env, addr):
    """Peak RSS (VmHWM) of a short-lived run. rusage's maxrss is no use here: a child forked
    from this Python process inherits its high-water mark. So the emulator holds the reply
    for 300 ms while /proc/PID/status is sampled, and sampling goes on until the exit."""
    admin(addr, "POST", "/emulator/faults", '{"mode":"delay","ms":300,"count":1}')
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peak = 0
    while proc.poll() is None:
        try:
            peak = max(peak, int(proc_status(proc.pid)["VmHWM"].split()[0]))
        except (OSError, KeyError, ValueError):
            pass
        time.sleep(0.001)
    return peak, proc.returncode


def text_sizes(binary):
    """Bytes of `.text.hot` (the profiled code that build.rs's linker script gathers) and
    of the rest of the text. A `.text.hot` that shrinks means the script has gone stale."""
    sizes = {}
    out = subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        parts = line.replace("[ ", "[").split()
        if len(parts) > 5 and parts[1] in (".text", ".text.hot"):
            sizes[parts[1]] = int(parts[5], 16)
    return sizes.get(".text.hot", 0), sizes.get(".text", 0)


def enter_private_namespace():
    """Runs the rest of the calling script (this bench, or hot_code.py) in private mount and
    network namespaces with overlays on /etc, /var, /home, /root and /run (as the test
    sandbox has), so the daemons it starts create their users, locks and routes there and
    never on the host."""
    if os.environ.get("GCE_GUEST_BENCH_INSIDE") == "1":
        subprocess.run(["mount", "--make-rprivate", "/"], check=True)
        base = os.environ["GCE_GUEST_BENCH_ROOT"]
        for d in ["/run", "/etc", "/var", "/home", "/root"]:
            upper, work = f"{base}/upper{d}", f"{base}/work{d}"
            os.makedirs(upper)
            os.makedirs(work)
            opts = f"lowerdir={d},upperdir={upper},workdir={work}"
            subprocess.run(["mount", "-t", "overlay", "overlay", "-o", opts, d], check=True)
        # Scratch files of the bench (ready files, stubs) go to a private /tmp too.
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", "/tmp"], check=True)
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        # The daemons' log lines go nowhere instead of the host's console and syslog.
        for dev in ["/dev/console", "/dev/log"]:
            if os.path.exists(dev):
                subprocess.run(["mount", "--bind", "/dev/null", dev], check=True)
        return
    if os.geteuid() != 0:
        sys.exit("bench: run as root (the daemons run in private namespaces)")
    import shutil
    base = tempfile.mkdtemp(prefix="gce-guest-bench-root-")
    env = dict(os.environ, GCE_GUEST_BENCH_INSIDE="1", GCE_GUEST_BENCH_ROOT=base)
    try:
        rc = subprocess.run(["unshare", "--mount", "--net", "--propagation", "private",
                             sys.executable, os.path.abspath(sys.argv[0])] + sys.argv[1:], env=env).returncode
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sys.exit(rc)


def main():
    enter_private_namespace()
    for path in [RELEASE, TINY, EMULATOR]:
        if not os.path.exists(path):
            sys.exit(f"bench: {path} is missing; run `make bench`, which builds it")
    row("binary size, `make` (with TLS)", f"{os.path.getsize(RELEASE) / MIB:.2f} MiB", "<= 3 MiB")
    row("binary size, `make tiny` (no TLS)", f"{os.path.getsize(TINY) / MIB:.2f} MiB", "<= 1 MiB")
    for path, name in [(RELEASE, "make"), (TINY, "make tiny")]:
        hot, text = text_sizes(path)
        row(f"`{name}`: code the daemons run, gathered first (src/link/hot-code.ld)",
            f"{hot / 1024:.0f} of {(hot + text) / 1024:.0f} KB")
    emu, addr = start_emulator()
    try:
        med, p99 = first_request_latency(RELEASE, ["google_metadata_get", "--timeout", "1", "instance/id"])
        row("google_metadata_get: exec to first request (median / p99 of 200)", f"{med * 1000:.2f} / {p99 * 1000:.2f} ms")
        med, p99 = first_request_latency(RELEASE, ["google_guest_daemon"], runs=100)
        row("google_guest_daemon: exec to first request (median / p99 of 100)", f"{med * 1000:.2f} / {p99 * 1000:.2f} ms", "<= 3 ms")
        env = dict(os.environ, GCE_METADATA_HOST=addr)
        rss = []
        for _ in range(10):
            kib, status = peak_rss_kib([RELEASE, "google_metadata_get", "instance/id"], env, addr)
            if status != 0:
                sys.exit("bench: google_metadata_get failed against the emulator")
            rss.append(kib)
        row("peak RSS (VmHWM), google_metadata_get instance/id", f"{max(rss) / 1024:.2f} MiB")
        kib, _ = peak_rss_kib([RELEASE, "google_metadata_get", "--recursive", ""], env, addr)
        row("peak RSS (VmHWM), google_metadata_get --recursive (whole document)", f"{kib / 1024:.2f} MiB")
        kib, _ = peak_rss_kib([TINY, "google_metadata_get", "instance/id"], env, addr)
        row("peak RSS (VmHWM), the same with `make tiny`", f"{kib / 1024:.2f} MiB")
        idle_daemon(addr)
        idle_daemon(addr, TINY, " (`make tiny`)", window=0)
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
