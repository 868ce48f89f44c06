//! IP forwarding for real (local routes for forwarded IPs, alias ranges and target-instance
//! IPs): the netlink code against the kernel in a private network namespace, and the daemon
//! (`google_ip_forwarding_daemon`, `google_network_daemon`, the thread of
//! `google_guest_daemon`) in the test sandbox with veth pairs the test makes:
//! metadata changes add and remove routes and `ip route show table local proto 66` agrees,
//! routes of other protocols survive, a TCP connection from a second namespace reaches a
//! listener on a forwarded IP until the IP leaves metadata, bad input removes nothing,
//! secondary NICs and DHCPv6 use the image's DHCP client, and `strace` sees no `ip` run.
//!
//! The tests may run `ip`; the daemon never does. Benchmarks are `#[ignore]`d tests named
//! `bench_*` (`make bench` runs them: `--ignored ip_forwarding::bench_ --nocapture`, in
//! release mode).

#![cfg(feature = "emulator")]

use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{self, Sandbox};
use gce_guest::netlink::route::{add_local, delete_local, list_local, Change, LocalRoute};
use gce_guest::netlink::wire::{AF_INET, AF_INET6};
use gce_guest::netlink::Netlink;
use gce_guest::network::nics::Link;
use gce_guest::network::plan::Prefix;
use gce_guest::network::{reconcile, FoundNic};

// ---------------------------------------------------------------------------------------
// The library against a real kernel: each `netns_*` test runs again inside
// `unshare --net --mount` through its outer test.

/// Set in the environment of a test run inside its private namespace.
const NETNS_ENV: &str = "GCE_GUEST_TEST_IN_NETNS";

/// Runs the ignored test `inner` of this binary inside fresh network and mount namespaces
/// and fails unless it passes there. Skips (or fails under `CI=true`) without root.
fn in_private_netns(inner: &str) {
    if let Err(reason) = common::availability() {
        common::skip_or_fail(&reason);
        return;
    }
    let exe = std::env::current_exe().expect("the test binary's path");
    // The harness names a test by its module path without the crate's name.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{}::{}", module, inner);
    let out = Command::new("unshare")
        .args(["--net", "--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            "--exact",
            &name,
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NETNS_ENV, "1")
        .output()
        .expect("unshare runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{}", stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "{} failed in its namespace:\n{}\n{}",
        inner,
        stdout,
        stderr
    );
}

/// Whether this is the inner run (else the inner test returns at once).
fn inside_netns() -> bool {
    let inside = std::env::var_os(NETNS_ENV).is_some();
    if !inside {
        println!("skipped: runs inside a private namespace through its outer test");
    }
    inside
}

/// Runs a shell script (set -e), panicking with its output when it fails.
fn sh(script: &str) -> String {
    let out = Command::new("/bin/sh")
        .args(["-ec", script])
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{}\n{}{}",
        script,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes the veth pair vg0/vg1 (vg0 up, MAC 42:01:0a:80:00:02) and returns vg0's index.
fn veth_here() -> u32 {
    sh("mount -t sysfs sysfs /sys
        ip link set lo up
        ip link add vg0 type veth peer name vg1
        ip link set vg0 address 42:01:0a:80:00:02
        ip link set vg0 up
        ip link set vg1 up");
    sh("cat /sys/class/net/vg0/ifindex")
        .trim()
        .parse()
        .expect("an ifindex")
}

fn route(dst: &str, prefix_len: u8, ifindex: u32) -> LocalRoute {
    LocalRoute {
        dst: dst.parse().expect("an address"),
        prefix_len,
        ifindex,
    }
}

/// `ip [-6] route show table local proto 66`, one trimmed line per route.
fn ip_routes(family: &str) -> Vec<String> {
    sh(&format!("ip {} route show table local proto 66", family))
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

#[test]
fn the_netlink_socket_adds_lists_and_deletes_local_routes_in_a_real_kernel() {
    in_private_netns("netns_socket_round_trip");
}

#[test]
#[ignore = "runs inside a private network namespace through its outer test"]
fn netns_socket_round_trip() {
    if !inside_netns() {
        return;
    }
    let vg0 = veth_here();
    let mut nl = Netlink::open().expect("a netlink socket");
    let single = route("10.9.9.9", 32, vg0);
    let alias = route("10.200.0.0", 28, vg0);
    let v6 = route("2001:db8::9", 128, vg0);
    assert_eq!(add_local(&mut nl, &single, 66).unwrap(), Change::Made);
    assert_eq!(
        add_local(&mut nl, &single, 66).unwrap(),
        Change::AlreadySo,
        "EEXIST is success"
    );
    assert_eq!(add_local(&mut nl, &alias, 66).unwrap(), Change::Made);
    assert_eq!(add_local(&mut nl, &v6, 66).unwrap(), Change::Made);
    // Another protocol's local route, and one of ours for the same address (another metric).
    sh(
        "ip route add to local 10.9.9.7/32 dev vg0 proto static table local
        ip route add to local 10.9.9.8/32 dev vg0 proto static table local metric 5",
    );
    let shared = route("10.9.9.8", 32, vg0);
    assert_eq!(add_local(&mut nl, &shared, 66).unwrap(), Change::Made);

    let v4 = list_local(&mut nl, AF_INET, 66).unwrap();
    assert_eq!(v4, [shared, single, alias]);
    assert_eq!(
        ip_routes("-4"),
        [
            "local 10.9.9.8 dev vg0 scope host",
            "local 10.9.9.9 dev vg0 scope host",
            "local 10.200.0.0/28 dev vg0 scope host"
        ]
    );
    assert_eq!(list_local(&mut nl, AF_INET6, 66).unwrap(), [v6]);
    assert_eq!(
        ip_routes("-6"),
        ["local 2001:db8::9 dev vg0 metric 1024 pref medium"]
    );
    assert_eq!(
        list_local(&mut nl, AF_INET, 67).unwrap(),
        [],
        "another protocol id owns nothing"
    );

    assert_eq!(delete_local(&mut nl, &single, 66).unwrap(), Change::Made);
    assert_eq!(
        delete_local(&mut nl, &single, 66).unwrap(),
        Change::AlreadySo,
        "ESRCH is success"
    );
    assert_eq!(delete_local(&mut nl, &shared, 66).unwrap(), Change::Made);
    assert_eq!(delete_local(&mut nl, &v6, 66).unwrap(), Change::Made);
    // Deleting "ours" where only a static route exists must not touch it.
    assert_eq!(
        delete_local(&mut nl, &route("10.9.9.7", 32, vg0), 66).unwrap(),
        Change::AlreadySo
    );
    let statics = sh("ip route show table local proto static");
    assert!(
        statics.contains("local 10.9.9.7 dev vg0") && statics.contains("local 10.9.9.8 dev vg0"),
        "{}",
        statics
    );
    assert_eq!(ip_routes("-4"), ["local 10.200.0.0/28 dev vg0 scope host"]);

    // A refusal carries the kernel's errno.
    let e = add_local(&mut nl, &route("10.9.9.1", 32, 999_999), 66).unwrap_err();
    assert_eq!(e.kernel_errno(), Some(libc::ENODEV), "{}", e);

    // A dump that spans many datagrams.
    let many: Vec<LocalRoute> = (0..3000u32)
        .map(|i| route(&format!("10.50.{}.{}", i / 250, i % 250 + 1), 32, vg0))
        .collect();
    for r in &many {
        add_local(&mut nl, r, 66).unwrap();
    }
    let listed = list_local(&mut nl, AF_INET, 66).unwrap();
    assert_eq!(listed.len(), 3001);
    assert!(many.iter().all(|r| listed.contains(r)));
}

#[test]
fn reconcile_against_a_real_kernel_costs_one_request_per_changed_route() {
    in_private_netns("netns_reconcile");
}

fn prefixes(n: u32, changed: Option<u32>) -> Vec<Prefix> {
    (0..n)
        .map(|i| {
            let i = if Some(i) == changed { n + 100 } else { i };
            Prefix::parse(&format!(
                "10.{}.{}.{}",
                60 + i / 62500,
                i / 250 % 250,
                i % 250 + 1
            ))
            .unwrap()
        })
        .collect()
}

fn nic(ifindex: u32, wanted: Vec<Prefix>) -> FoundNic {
    FoundNic {
        link: Link {
            name: "vg0".into(),
            ifindex,
            mac: "42:01:0a:80:00:02".into(),
        },
        wanted,
        may_remove: true,
    }
}

#[test]
#[ignore = "runs inside a private network namespace through its outer test"]
fn netns_reconcile() {
    if !inside_netns() {
        return;
    }
    let vg0 = veth_here();
    let mut nl = Netlink::open().unwrap();
    let mut notes = Vec::new();
    let done = reconcile(&mut nl, 66, &[nic(vg0, prefixes(500, None))], &mut notes).unwrap();
    assert_eq!((done.added, done.removed, done.requests), (500, 0, 502));
    assert_eq!(ip_routes("-4").len(), 500);
    let done = reconcile(&mut nl, 66, &[nic(vg0, prefixes(500, None))], &mut notes).unwrap();
    assert_eq!(
        (done.added, done.removed, done.requests),
        (0, 0, 2),
        "nothing changed: two dumps only"
    );
    let done = reconcile(&mut nl, 66, &[nic(vg0, prefixes(500, Some(7)))], &mut notes).unwrap();
    assert_eq!(
        (done.added, done.removed, done.requests),
        (1, 1, 4),
        "one address changed"
    );
    assert!(notes.is_empty(), "{:?}", notes);
}

/// Median of a list of durations, in milliseconds.
fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1000.0
}

#[test]
#[ignore = "benchmark: make bench (--test integration -- --ignored ip_forwarding::bench_)"]
fn bench_reconcile_10000_forwarded_ips() {
    in_private_netns("netns_bench_reconcile");
}

#[test]
#[ignore = "runs inside a private network namespace through its outer test"]
fn netns_bench_reconcile() {
    if !inside_netns() {
        return;
    }
    let vg0 = veth_here();
    let mut nl = Netlink::open().unwrap();
    let mut notes = Vec::new();
    let start = Instant::now();
    let first = reconcile(&mut nl, 66, &[nic(vg0, prefixes(10_000, None))], &mut notes).unwrap();
    let from_empty = start.elapsed();
    assert_eq!(first.added, 10_000);
    let mut one_change = Vec::new();
    let mut requests = 0;
    let mut wanted = Vec::new();
    for round in 0..20u32 {
        wanted = prefixes(10_000, Some(round % 2 * 5000 + round));
        let start = Instant::now();
        let done = reconcile(&mut nl, 66, &[nic(vg0, wanted.clone())], &mut notes).unwrap();
        one_change.push(start.elapsed());
        requests = done.requests;
        assert!(done.added <= 1 && done.removed <= 1);
    }
    let start = Instant::now();
    let unchanged = reconcile(&mut nl, 66, &[nic(vg0, wanted)], &mut notes).unwrap();
    let no_change = start.elapsed();
    assert_eq!(
        (unchanged.added, unchanged.removed, unchanged.requests),
        (0, 0, 2)
    );
    println!(
        "BENCH reconcile 10000 forwarded IPs: from empty {:.1} ms ({} requests); \
         one address replaced: median {:.2} ms over 20 ({} requests: 2 dumps + 1 add + 1 delete); \
         no change: {:.2} ms (2 dumps)",
        from_empty.as_secs_f64() * 1000.0,
        first.requests,
        median_ms(one_change),
        requests,
        no_change.as_secs_f64() * 1000.0
    );
}

// ---------------------------------------------------------------------------------------
// The daemon in the sandbox.

const MAC0: &str = "42:01:0a:80:00:02";
const MAC1: &str = "42:01:0a:80:00:03";
const STUB_PATH: &str = "/run/stub:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const CHANGE: &str = "google-ip-forwarding: INFO Changing vg0 IPs from ";

/// A metadata document whose `networkInterfaces` is `interfaces` (JSON text).
fn metadata(interfaces: &str) -> String {
    format!(
        r#"{{"instance":{{"id":1,"hostname":"vm","attributes":{{}},"networkInterfaces":{}}},
           "project":{{"projectId":"p","attributes":{{}}}}}}"#,
        interfaces
    )
}

/// One NIC entry with MAC0 and these forwarded IPs.
fn nic0(forwarded: &[&str]) -> String {
    let quoted: Vec<String> = forwarded.iter().map(|ip| format!("\"{}\"", ip)).collect();
    format!(
        r#"[{{"mac":"{}","forwardedIps":[{}]}}]"#,
        MAC0,
        quoted.join(",")
    )
}

/// Makes vg0 (MAC0, up) with its peer vg1 inside the sandbox.
fn add_veth(sb: &Sandbox) {
    sb.sh(&format!(
        "set -e
         ip link add vg0 type veth peer name vg1
         ip link set vg0 address {}
         ip link set vg0 up
         ip link set vg1 up",
        MAC0
    ))
    .assert_success();
}

/// The sandbox's `ip [-6] route show table local proto 66`, one trimmed line per route.
fn owned_routes(sb: &Sandbox, family: &str) -> Vec<String> {
    let out = sb.sh(&format!("ip {} route show table local proto 66", family));
    out.assert_success();
    out.stdout_text()
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

fn local(ip: &str) -> String {
    format!("local {} dev vg0 scope host", ip)
}

fn count_log(sb: &Sandbox, needle: &str) -> usize {
    sb.log_lines().iter().filter(|l| l.contains(needle)).count()
}

/// Waits until the routes are `expected` (IPv4); panics with the log otherwise.
fn wait_routes(sb: &Sandbox, expected: &[String]) {
    let ok = sb.wait_until(Duration::from_secs(10), || {
        owned_routes(sb, "-4") == expected
    });
    assert!(
        ok,
        "routes {:?}, wanted {:?}\nlog: {:#?}",
        owned_routes(sb, "-4"),
        expected,
        sb.log_lines()
    );
}

#[test]
fn metadata_changes_add_and_remove_routes_and_ip_route_agrees() {
    let interfaces = format!(
        r#"[{{"mac":"{}","forwardedIps":["10.128.0.100","10.128.0.101"],"forwardedIpv6s":["2001:db8::9"],
             "targetInstanceIps":["203.0.113.20"],"ipAliases":["10.200.0.0/28"]}}]"#,
        MAC0
    );
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&interfaces)));
    add_veth(&sb);
    // Someone else's local route for an address metadata will take away later.
    sb.sh("ip route add to local 10.128.0.101/32 dev vg0 proto static table local metric 5")
        .assert_success();
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    wait_routes(
        &sb,
        &[
            local("10.128.0.100"),
            local("10.128.0.101"),
            local("10.200.0.0/28"),
            local("203.0.113.20"),
        ],
    );
    assert_eq!(
        owned_routes(&sb, "-6"),
        ["local 2001:db8::9 dev vg0 metric 1024 pref medium"]
    );
    assert!(sb.log_lines().contains(&format!(
        "{}None to ['10.128.0.100', '10.128.0.101', '2001:db8::9', '203.0.113.20', '10.200.0.0/28'] \
         by adding ['10.128.0.100', '10.128.0.101', '10.200.0.0/28', '203.0.113.20', '2001:db8::9'] and removing None.",
        CHANGE
    )), "{:#?}", sb.log_lines());

    // Unrelated metadata changes: no route work, no log line.
    let emu = sb.emulator();
    emu.patch(r#"{"instance":{"attributes":{"other":"1"}}}"#);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count_log(&sb, CHANGE), 1);

    let changed = format!(
        r#"{{"instance":{{"networkInterfaces":[{{"mac":"{}","forwardedIps":["10.128.0.100","10.128.0.102"],
             "forwardedIpv6s":[],"ipAliases":["10.200.0.16/28"]}}]}}}}"#,
        MAC0
    );
    emu.patch(&changed);
    wait_routes(
        &sb,
        &[
            local("10.128.0.100"),
            local("10.128.0.102"),
            local("10.200.0.16/28"),
        ],
    );
    assert!(owned_routes(&sb, "-6").is_empty());
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "by adding ['10.128.0.102', '10.200.0.16/28'] and removing ['10.128.0.101', '10.200.0.0/28', '203.0.113.20', '2001:db8::9']."
    ));
    let statics = sb
        .sh("ip route show table local proto static")
        .stdout_text();
    assert!(
        statics.contains("local 10.128.0.101 dev vg0"),
        "the static route survives: {}",
        statics
    );

    // The alias name of the daemon is the same program, and sees nothing to do.
    let again = sb.spawn(["google_network_daemon"]);
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "Exception locking /var/lock/google_networking.lock"
    ));
    drop(again);
}

#[test]
fn a_forwarded_ip_reaches_a_listener_until_it_leaves_metadata() {
    let sb = sandbox_or_skip!(Sandbox::builder()
        .metadata(&metadata(&nic0(&["10.128.0.100"])))
        .file("/tmp/listen.py", LISTENER, 0o644)
        .file("/tmp/connect.py", CONNECTOR, 0o644));
    // The guest's vg0 10.128.0.2/24; its peer vg1 10.128.0.3/24 in the namespace "peer",
    // which sends 10.128.0.100 to the guest.
    sb.sh(&format!(
        "set -e
         ip netns add peer
         ip link add vg0 type veth peer name vg1 netns peer
         ip link set vg0 address {}
         ip addr add 10.128.0.2/24 dev vg0
         ip link set vg0 up
         ip -n peer link set lo up
         ip -n peer addr add 10.128.0.3/24 dev vg1
         ip -n peer link set vg1 up
         ip -n peer route add 10.128.0.100/32 via 10.128.0.2",
        MAC0
    ))
    .assert_success();
    let _listener = sb.program(["/usr/bin/python3", "/tmp/listen.py"]).spawn();
    let connect = |ip: &str| {
        sb.sh(&format!(
            "ip netns exec peer /usr/bin/python3 /tmp/connect.py {} 8080",
            ip
        ))
        .stdout_text()
    };
    assert!(
        sb.wait_until(Duration::from_secs(10), || connect("10.128.0.2")
            .contains("hello")),
        "the listener runs"
    );
    assert!(
        connect("10.128.0.100").contains("timeout"),
        "not forwarded yet"
    );

    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    wait_routes(&sb, &[local("10.128.0.100")]);
    assert_eq!(connect("10.128.0.100").trim(), "hello from 10.128.0.100");

    sb.emulator().patch(
        r#"{"instance":{"networkInterfaces":[{"mac":"42:01:0a:80:00:02","forwardedIps":[]}]}}"#,
    );
    wait_routes(&sb, &[]);
    assert!(
        connect("10.128.0.100").contains("timeout"),
        "gone with its metadata"
    );
    assert_eq!(connect("10.128.0.2").trim(), "hello from 10.128.0.2");
}

/// Accepts TCP connections on 0.0.0.0:8080 and answers with the address they reached.
const LISTENER: &str = r#"
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080))
s.listen(16)
while True:
    c, _ = s.accept()
    c.sendall(("hello from %s\n" % c.getsockname()[0]).encode())
    c.close()
"#;

/// Connects to ARGV[1]:ARGV[2] and prints the answer, or `timeout`.
const CONNECTOR: &str = r#"
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)
    print(c.recv(100).decode().strip())
except OSError as e:
    print("timeout", e)
"#;

#[test]
fn no_ip_program_is_ever_run() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.100"]))));
    add_veth(&sb);
    let trace = "/tmp/execve.trace";
    let binary = sb.binary().display().to_string();
    let traced = sb
        .program([
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=execve",
            "-o",
            trace,
            "timeout",
            "--preserve-status",
            "-s",
            "TERM",
            "6",
        ])
        .args([binary.as_str(), "google_ip_forwarding_daemon"])
        .spawn();
    wait_routes(&sb, &[local("10.128.0.100")]);
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        nic0(&["10.128.0.101"])
    ));
    wait_routes(&sb, &[local("10.128.0.101")]);
    let out = traced.wait_output(Duration::from_secs(15));
    assert!(out.success(), "{:?}", out);
    let calls = sb.read_string(trace).expect("the trace");
    let execs: Vec<&str> = calls.lines().filter(|l| l.contains("execve(")).collect();
    assert!(
        !execs
            .iter()
            .any(|l| l.contains("/ip\"") || l.contains("\"ip\"")),
        "{:#?}",
        execs
    );
    // timeout itself and the daemon: nothing else was run.
    assert_eq!(execs.len(), 2, "{:#?}", execs);
}

#[test]
fn bad_input_is_logged_once_and_removes_nothing() {
    let sb = sandbox_or_skip!(
        Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.100", "10.128.0.101"])))
    );
    add_veth(&sb);
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    let both = [local("10.128.0.100"), local("10.128.0.101")];
    wait_routes(&sb, &both);
    let emu = sb.emulator();

    // Malformed values: the good new one is added, the stale one stays this round.
    emu.patch(&format!(
        r#"{{"instance":{{"networkInterfaces":[{{"mac":"{}","forwardedIps":["10.128.0.100","10.128.0.102","10.128.0.999","10.0.0.0/40",7],
             "ipAliases":["10.200.0.1/28"]}},{{"mac":"42:01:0a:80:00:99","forwardedIps":["10.9.9.9"]}}]}}}}"#,
        MAC0
    ));
    wait_routes(
        &sb,
        &[
            local("10.128.0.100"),
            local("10.128.0.101"),
            local("10.128.0.102"),
        ],
    );
    for line in [
        "google-ip-forwarding: WARNING Could not parse IP address: \"10.128.0.999\" in forwardedIps of network interface 0 (not an IP address).",
        "google-ip-forwarding: WARNING Could not parse IP address: \"10.0.0.0/40\" in forwardedIps of network interface 0 (bad prefix length).",
        "google-ip-forwarding: WARNING Could not parse IP address: 7 in forwardedIps of network interface 0 (not a string).",
        "google-ip-forwarding: WARNING Could not parse IP address: \"10.200.0.1/28\" in ipAliases of network interface 0 (address bits set beyond the prefix).",
        "google-ip-forwarding: WARNING Not removing routes from vg0 while its metadata has unusable addresses.",
        "google-networking: WARNING Network interface not found for MAC address: 42:01:0a:80:00:99.",
    ] {
        assert!(sb.wait_for_log(Duration::from_secs(5), line), "{}\n{:#?}", line, sb.log_lines());
    }
    // More updates with the same bad input: logged once, still nothing removed.
    for i in 0..3 {
        emu.patch(&format!(
            r#"{{"instance":{{"attributes":{{"n":"{}"}}}}}}"#,
            i
        ));
    }
    std::thread::sleep(Duration::from_millis(1500)); // also past one unknown-MAC retry
    assert_eq!(
        count_log(&sb, "Could not parse IP address: \"10.128.0.999\""),
        1
    );
    assert_eq!(
        count_log(&sb, "Network interface not found for MAC address"),
        1
    );
    assert_eq!(owned_routes(&sb, "-4").len(), 3);

    // No interface list at all, or not a list: nothing changes.
    emu.patch(r#"{"instance":{"networkInterfaces":null}}"#);
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "The metadata has no network interfaces; leaving routes and interfaces as they are."
    ));
    emu.patch(r#"{"instance":{"networkInterfaces":{"0":"x"}}}"#);
    assert!(sb.wait_for_log(Duration::from_secs(5), "not a list"));
    emu.patch(r#"{"instance":{"networkInterfaces":[{"forwardedIps":[]}, "junk"]}}"#);
    assert!(sb.wait_for_log(
        Duration::from_secs(5),
        "Skipping network interface 1: networkInterfaces is not an object"
    ));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(owned_routes(&sb, "-4").len(), 3);

    // Good input again: the stale ones go.
    emu.patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        nic0(&["10.128.0.100"])
    ));
    wait_routes(&sb, &[local("10.128.0.100")]);
}

#[test]
fn routes_that_would_take_the_machines_own_traffic_are_refused_and_removed() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.100"]))));
    add_veth(&sb);
    // Left by an earlier agent that took them from metadata: 0.0.0.0/1 + 128.0.0.0/1 make
    // every address local. Ours by protocol, so they must go even while the NIC's entry
    // has refused values (removals held back).
    sb.sh("set -e
         ip route add to local 0.0.0.0/1 dev vg0 proto 66 table local
         ip route add to local 128.0.0.0/1 dev vg0 proto 66 table local")
        .assert_success();
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    wait_routes(&sb, &[local("10.128.0.100")]);

    let hostile = [
        (
            "forwardedIps",
            "169.254.169.254",
            "link-local addresses (the metadata server's) are never made local routes",
        ),
        (
            "forwardedIps",
            "127.0.0.5",
            "loopback addresses are never made local routes",
        ),
        (
            "forwardedIps",
            "224.0.0.1",
            "multicast addresses are never made local routes",
        ),
        (
            "forwardedIps",
            "255.255.255.255",
            "the broadcast address is never made a local route",
        ),
        (
            "forwardedIps",
            "0.0.0.0",
            "the unspecified address is never made a local route",
        ),
        (
            "ipAliases",
            "0.0.0.0/1",
            "a range wider than /8 (IPv4) or /16 (IPv6) is never made local",
        ),
        (
            "ipAliases",
            "128.0.0.0/1",
            "a range wider than /8 (IPv4) or /16 (IPv6) is never made local",
        ),
        (
            "ipAliases",
            "169.254.0.0/16",
            "link-local addresses (the metadata server's) are never made local routes",
        ),
        (
            "forwardedIpv6s",
            "fe80::1",
            "link-local addresses (the metadata server's) are never made local routes",
        ),
        (
            "forwardedIpv6s",
            "::1",
            "loopback addresses are never made local routes",
        ),
    ];
    let list = |field: &str| {
        let values: Vec<String> = hostile
            .iter()
            .filter(|(f, _, _)| *f == field)
            .map(|(_, v, _)| format!("\"{}\"", v))
            .collect();
        values.join(",")
    };
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":[{{"mac":"{}","forwardedIps":["10.128.0.100","10.128.0.101",{}],
             "ipAliases":[{}],"forwardedIpv6s":[{}]}}]}}}}"#,
        MAC0,
        list("forwardedIps"),
        list("ipAliases"),
        list("forwardedIpv6s")
    ));
    wait_routes(&sb, &[local("10.128.0.100"), local("10.128.0.101")]);
    for (field, value, reason) in hostile {
        let line = format!(
            "google-ip-forwarding: WARNING Could not parse IP address: \"{}\" in {} of network interface 0 ({}).",
            value, field, reason
        );
        assert!(
            sb.wait_for_log(Duration::from_secs(5), &line),
            "{}\n{:#?}",
            line,
            sb.log_lines()
        );
    }
    assert_eq!(owned_routes(&sb, "-6"), Vec::<String>::new());
    // The metadata server is still reached through lo, not through vg0.
    let via = sb.sh("ip route get 169.254.169.254");
    via.assert_success();
    assert!(
        via.stdout_text().contains("dev lo"),
        "{}",
        via.stdout_text()
    );
}

/// With IPv6 off in the namespace (and the image's `dhclient -6` failing, as it does
/// there), IPv4 forwarded and alias routes are still installed and kept up to date, and
/// the IPv6 route failure is logged once.
#[test]
fn ipv4_routes_are_kept_when_ipv6_is_off() {
    let interfaces = |v4: &str| {
        format!(
            r#"[{{"mac":"{}","forwardedIps":["{}"],"forwardedIpv6s":["2001:db8::9"],"ipAliases":["10.200.0.0/28"],"dhcpv6Refresh":"32400"}}]"#,
            MAC0, v4
        )
    };
    let failing_dhclient = format!(
        "{}echo 'RTNETLINK answers: Permission denied' >&2\nexit 2\n",
        stub("dhclient")
    );
    let sb = sandbox_or_skip!(Sandbox::builder()
        .metadata(&metadata(&interfaces("10.128.0.100")))
        .file("/run/stub/dhclient", failing_dhclient, 0o755));
    sb.sh("set -e
         sysctl -qw net.ipv6.conf.all.disable_ipv6=1
         sysctl -qw net.ipv6.conf.default.disable_ipv6=1
         sysctl -qw net.ipv6.conf.lo.disable_ipv6=1")
        .assert_success();
    add_veth(&sb);
    let _daemon = sb.spawn_env(["google_ip_forwarding_daemon"], &[("PATH", STUB_PATH)]);
    wait_routes(
        &sb,
        &[
            local("10.128.0.100"),
            "local 10.200.0.0/28 dev vg0 scope host".to_string(),
        ],
    );
    assert!(
        sb.wait_until(Duration::from_secs(5), || !dhcp_calls(&sb).is_empty()),
        "{:#?}",
        sb.log_lines()
    );
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        interfaces("10.128.0.101")
    ));
    wait_routes(
        &sb,
        &[
            local("10.128.0.101"),
            "local 10.200.0.0/28 dev vg0 scope host".to_string(),
        ],
    );
    std::thread::sleep(Duration::from_millis(300));
    let route_failures: Vec<String> = sb
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("Could not add 2001:db8::9"))
        .collect();
    assert_eq!(route_failures.len(), 1, "{:#?}", sb.log_lines());
}

#[test]
fn ten_thousand_forwarded_ips_then_one_change() {
    let ips: Vec<String> = (0..10_000u32)
        .map(|i| format!("10.{}.{}.{}", 60 + i / 62500, i / 250 % 250, i % 250 + 1))
        .collect();
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&refs))));
    add_veth(&sb);
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    let count = || owned_routes(&sb, "-4").len();
    assert!(
        sb.wait_until(Duration::from_secs(60), || count() == 10_000),
        "{} routes",
        count()
    );
    let mut changed = refs.clone();
    changed[1234] = "10.99.0.1";
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        nic0(&changed)
    ));
    assert!(
        sb.wait_for_log(
            Duration::from_secs(20),
            "by adding ['10.99.0.1'] and removing ['10.60.4.235']."
        ),
        "{:#?}",
        sb.log_lines()
            .iter()
            .map(|l| l.chars().take(200).collect::<String>())
            .collect::<Vec<_>>()
    );
    assert!(
        sb.wait_until(Duration::from_secs(10), || owned_routes(&sb, "-4")
            .contains(&local("10.99.0.1")))
    );
    assert_eq!(count(), 10_000);
    let line = sb
        .log_lines()
        .into_iter()
        .find(|l| l.contains("by adding ['10.99.0.1']"))
        .unwrap();
    assert!(
        line.contains("... 9936 more]"),
        "long lists are counted: {}",
        &line[..200.min(line.len())]
    );
}

#[test]
fn a_nic_that_appears_after_its_metadata_gets_its_routes() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.100"]))));
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    assert!(sb.wait_for_log(
        Duration::from_secs(10),
        "Network interface not found for MAC address: 42:01:0a:80:00:02."
    ));
    add_veth(&sb);
    // Looked for again every 30 s (1.5 s at the test time scale), without a metadata change.
    wait_routes(&sb, &[local("10.128.0.100")]);
    assert_eq!(count_log(&sb, "Network interface not found"), 1);
}

/// A stub DHCP client that records its arguments.
fn stub(name: &str) -> String {
    format!("#!/bin/sh\necho \"{} $*\" >> /run/dhcp.calls\n", name)
}

fn dhcp_calls(sb: &Sandbox) -> Vec<String> {
    sb.read_string("/run/dhcp.calls")
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn secondary_nics_and_dhcpv6_use_the_images_dhcp_client() {
    let interfaces = format!(
        r#"[{{"mac":"{}","forwardedIps":["10.128.0.100"],"dhcpv6Refresh":"32400"}},{{"mac":"{}","forwardedIps":["10.1.0.5"]}}]"#,
        MAC0, MAC1
    );
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&interfaces)).file(
        "/run/stub/dhclient",
        stub("dhclient"),
        0o755
    ));
    add_veth(&sb);
    sb.sh(&format!("set -e; ip link add vg2 type veth peer name vg3; ip link set vg2 address {}; ip link set vg2 up", MAC1))
        .assert_success();
    let _daemon = sb.spawn_env(["google_network_daemon"], &[("PATH", STUB_PATH)]);
    let expected = [
        "dhclient -x vg2",
        "dhclient vg2",
        "dhclient -1 -6 -pf /run/dhclient.google-guest.vg0.ipv6.pid -lf /run/dhclient.google-guest.vg0.ipv6.lease vg0",
    ];
    assert!(
        sb.wait_until(Duration::from_secs(10), || dhcp_calls(&sb).len() == 3),
        "{:?}\n{:#?}",
        dhcp_calls(&sb),
        sb.log_lines()
    );
    assert_eq!(dhcp_calls(&sb), expected);
    assert!(sb
        .log_lines()
        .contains(&"network-setup: INFO Ethernet interfaces: ['vg2'].".to_string()));
    assert!(sb
        .log_lines()
        .contains(&"network-setup: INFO Enabling IPv6 on vg0 with DHCPv6.".to_string()));
    wait_routes(
        &sb,
        &[
            "local 10.1.0.5 dev vg2 scope host".to_string(),
            local("10.128.0.100"),
        ],
    );

    // A change that leaves the set of secondary NICs alone runs no DHCP client again.
    let same_nics = interfaces.replace("10.1.0.5", "10.1.0.6");
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        same_nics
    ));
    assert!(sb.wait_for_log(Duration::from_secs(10), "Changing vg2 IPs"));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(dhcp_calls(&sb).len(), 3);
}

#[test]
fn dhcp_command_and_switches_come_from_the_configuration() {
    let interfaces = format!(
        r#"[{{"mac":"{}","forwardedIps":["10.128.0.100"],"ipAliases":["10.200.0.0/28"],"dhcpv6Refresh":"1"}},{{"mac":"{}"}}]"#,
        MAC0, MAC1
    );
    let config = "[NetworkInterfaces]\ndhcp_command = /run/stub/custom-dhcp --all\n\
                  [IpForwarding]\nip_aliases = false\nethernet_proto_id = 77\n";
    let sb = sandbox_or_skip!(Sandbox::builder()
        .metadata(&metadata(&interfaces))
        .file("/etc/default/instance_configs.cfg", config, 0o644)
        .file("/run/stub/custom-dhcp", stub("custom"), 0o755)
        .file("/run/stub/dhclient", stub("dhclient"), 0o755));
    add_veth(&sb);
    sb.sh(&format!("set -e; ip link add vg2 type veth peer name vg3; ip link set vg2 address {}; ip link set vg2 up", MAC1))
        .assert_success();
    let _daemon = sb.spawn_env(["google_ip_forwarding_daemon"], &[("PATH", STUB_PATH)]);
    assert!(sb.wait_until(Duration::from_secs(10), || !dhcp_calls(&sb).is_empty()));
    let routes77 = || sb.sh("ip route show table local proto 77").stdout_text();
    assert!(
        sb.wait_until(Duration::from_secs(10), || routes77()
            .contains("local 10.128.0.100 dev vg0")),
        "{:#?}",
        sb.log_lines()
    );
    assert!(!routes77().contains("10.200.0.0"), "ip_aliases = false");
    assert!(
        owned_routes(&sb, "-4").is_empty(),
        "nothing under protocol 66"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        dhcp_calls(&sb),
        ["custom --all"],
        "the custom command replaces dhclient and DHCPv6"
    );
}

#[test]
fn the_guest_daemon_runs_it_as_a_thread_and_the_switch_turns_routes_off() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.100"]))));
    add_veth(&sb);
    let daemon = sb.spawn(["google_guest_daemon"]);
    wait_routes(&sb, &[local("10.128.0.100")]);
    assert!(sb.log_lines().iter().any(|l| l
        .starts_with("google-guest-daemon: INFO Starting daemons:")
        && l.contains("google-networking")));
    assert!(sb.exists("/var/lock/google_networking.lock"));
    assert_eq!(count_log(&sb, CHANGE), 1);
    drop(daemon);

    sb.write(
        "/etc/default/instance_configs.cfg",
        "[Daemons]\nip_forwarding_daemon = false\n",
    );
    sb.emulator().patch(&format!(
        r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
        nic0(&["10.128.0.101"])
    ));
    let _daemon = sb.spawn(["google_guest_daemon"]);
    assert!(sb.wait_for_log(Duration::from_secs(10), "Starting daemons:"));
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        owned_routes(&sb, "-4"),
        [local("10.128.0.100")],
        "routes are left alone when switched off"
    );
}

/// End to end: metadata change (emulator PATCH) to the route present in the kernel (as
/// `ip -ts monitor route` inside the sandbox sees it), median of 50.
#[test]
#[ignore = "benchmark: make bench (--test integration -- --ignored ip_forwarding::bench_)"]
fn bench_metadata_change_to_route_in_kernel() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(&metadata(&nic0(&["10.128.0.1"]))));
    add_veth(&sb);
    let _daemon = sb.spawn(["google_ip_forwarding_daemon"]);
    wait_routes(&sb, &[local("10.128.0.1")]);
    let monitor = sb.program(["ip", "-ts", "monitor", "route"]).spawn();
    std::thread::sleep(Duration::from_millis(300));
    let emu = sb.emulator();
    let mut samples = Vec::new();
    for i in 2..52u32 {
        let ip = format!("10.128.0.{}", i);
        let sent = std::time::SystemTime::now();
        emu.patch(&format!(
            r#"{{"instance":{{"networkInterfaces":{}}}}}"#,
            nic0(&[&ip])
        ));
        let needle = format!("local {} dev vg0", ip);
        let mut seen_at = None;
        let found = sb.wait_until(Duration::from_secs(10), || {
            let text = monitor.stdout_text();
            seen_at = text
                .lines()
                .find(|l| l.contains(&needle) && !l.contains("Deleted"))
                .and_then(monitor_time);
            seen_at.is_some()
        });
        assert!(found, "{} never appeared", ip);
        let at = seen_at.unwrap();
        samples.push(at.duration_since(sent).unwrap_or_default());
    }
    println!(
        "BENCH metadata change -> route in kernel: median {:.2} ms over {} (min {:.2}, max {:.2})",
        median_ms(samples.clone()),
        samples.len(),
        samples.iter().min().unwrap().as_secs_f64() * 1000.0,
        samples.iter().max().unwrap().as_secs_f64() * 1000.0
    );
}

/// The wall-clock time of an `ip -ts monitor` line: `[2024-05-01T12:00:00.123456] ...`.
fn monitor_time(line: &str) -> Option<std::time::SystemTime> {
    let stamp = line.strip_prefix('[')?.split(']').next()?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let (hms, frac) = time.split_once('.')?;
    let mut t = hms.split(':').map(|p| p.parse::<i64>().ok());
    let (h, min, s) = (t.next()??, t.next()??, t.next()??);
    let micros: u64 = frac.get(..6)?.parse().ok()?;
    // ip prints local time; the sandbox shares the host's /etc/localtime.
    let days = gce_guest::timing::days_from_civil(y, m as u32, day as u32);
    let local_secs = days * 86400 + h * 3600 + min * 60 + s;
    let offset = utc_offset_secs();
    let unix = (local_secs - offset) as u64;
    Some(std::time::UNIX_EPOCH + Duration::from_secs(unix) + Duration::from_micros(micros))
}

/// The local time zone's offset from UTC now, from `date +%z`.
fn utc_offset_secs() -> i64 {
    let out = Command::new("date")
        .arg("+%z")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let sign = if out.starts_with('-') { -1 } else { 1 };
    let digits = out.trim_start_matches(['+', '-']);
    let hours: i64 = digits.get(..2).and_then(|h| h.parse().ok()).unwrap_or(0);
    let minutes: i64 = digits.get(2..4).and_then(|m| m.parse().ok()).unwrap_or(0);
    sign * (hours * 3600 + minutes * 60)
}
