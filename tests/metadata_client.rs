//! The metadata client against the emulator over real TCP: the watch's ETag semantics, and
//! every kind of failure the server can produce — each must be an error that is retried with
//! backoff, never a document, and never a busy loop. Request rates during each fault are
//! printed (`cargo test -- --nocapture`) and bounded.

#![cfg(feature = "emulator")]

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use gce_guest::emulator::{Emulator, Fault, FaultMode};
use gce_guest::mds::{self, Client, FailureKind, Watcher};
use gce_guest::signals::Signals;
use gce_guest::Error;
use tinyjson::JsonValue;

/// Every timeout and backoff in these tests runs at 1/20 speed.
const TIME_SCALE: &str = "0.05";

fn setup() {
    crate::common::scale_time_in_process();
}

fn doc(text: &str) -> JsonValue {
    mds::parse_json(text).unwrap()
}

fn emulator() -> (Emulator, Client) {
    setup();
    let emu = Emulator::start(
        "127.0.0.1:0",
        doc(
            r#"{"instance":{"id":42,"hostname":"vm.example","virtualClock":{"driftToken":"7"},
              "attributes":{"ssh-keys":"alice:ssh-ed25519 AAAA alice"}},
            "project":{"projectId":"p","attributes":{}}}"#,
        ),
    )
    .unwrap();
    let client = Client::with_host(&emu.addr().to_string());
    (emu, client)
}

fn kind(e: &Error) -> Option<FailureKind> {
    match e {
        Error::Metadata { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn metadata_requests(emu: &Emulator) -> usize {
    emu.requests()
        .iter()
        .filter(|r| r.path.starts_with("/computeMetadata/"))
        .count()
}

fn report(what: &str, requests: usize, elapsed: Duration) {
    println!(
        "{:<48} {:>4} requests in {:>6.2} s = {:>6.1}/s",
        what,
        requests,
        elapsed.as_secs_f64(),
        requests as f64 / elapsed.as_secs_f64()
    );
}

#[test]
fn the_first_watch_answers_at_once() {
    let (_emu, client) = emulator();
    let signals = Signals::new();
    let mut watcher = Watcher::new(client, "");
    let start = Instant::now();
    let snap = watcher.next(&signals).unwrap();
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(
        mds::lookup_str(&snap.doc, "instance/hostname"),
        Some("vm.example")
    );
    assert!(snap.etag.is_some());
}

#[test]
fn a_change_wakes_a_waiting_watch() {
    let (emu, client) = emulator();
    let signals = Signals::new();
    let mut watcher = Watcher::new(client, "");
    watcher.next(&signals).unwrap();
    let waiting = std::thread::spawn(move || {
        let start = Instant::now();
        let snap = watcher.next(&Signals::new()).unwrap();
        (snap, start.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    emu.patch_document(&doc(r#"{"instance":{"virtualClock":{"driftToken":"8"}}}"#))
        .unwrap();
    let (snap, waited) = waiting.join().unwrap();
    assert_eq!(
        mds::lookup_str(&snap.doc, "instance/virtualClock/driftToken"),
        Some("8")
    );
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
        "{:?}",
        waited
    );
    let waits: Vec<_> = emu
        .requests()
        .into_iter()
        .filter(|r| r.wait_for_change)
        .collect();
    assert_eq!(
        waits.len(),
        2,
        "one request per document, no polling: {:?}",
        waits
    );
}

#[test]
fn timeout_sec_returns_the_unchanged_document() {
    let (emu, client) = emulator();
    let first = client.watch_once("", "0", 1).unwrap();
    let etag = first.etag.clone().unwrap();
    let start = Instant::now();
    let again = client.watch_once("", &etag, 1).unwrap();
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "{:?}",
        waited
    );
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
    assert_eq!(again.doc, first.doc);
    // A watcher does not hand an unchanged document to the daemons, and keeps waiting
    // without polling faster than the server's timeout.
    let signals: &'static Signals = Box::leak(Box::new(Signals::new()));
    let mut watcher = Watcher::new(client, "");
    watcher.next(signals).unwrap();
    emu.clear_requests();
    let handle = std::thread::spawn(move || watcher.next(signals).is_some());
    std::thread::sleep(Duration::from_millis(3500));
    signals.request_stop();
    let n = metadata_requests(&emu);
    report(
        "idle watch (timeout_sec 3 under the time scale)",
        n,
        Duration::from_millis(3500),
    );
    assert!(n <= 3, "{} requests while nothing changed", n);
    let _ = handle; // blocked in a long-poll; abandoned like the daemon abandons it on SIGTERM
}

/// Runs a watcher against a fault for `duration`, then lifts it and expects the real
/// document. Returns the number of requests made while the fault was active.
fn outage(name: &str, fault: FaultMode, duration: Duration, max_requests: usize) -> usize {
    let (emu, client) = emulator();
    let signals: &'static Signals = Box::leak(Box::new(Signals::new()));
    emu.push_fault(Fault::new(fault, -1));
    let mut watcher = Watcher::new(client, "");
    let handle = std::thread::spawn(move || {
        let snap = watcher.next(signals);
        (snap, watcher.failures())
    });
    std::thread::sleep(duration);
    let during = metadata_requests(&emu);
    emu.clear_faults();
    let (snap, _) = handle.join().unwrap();
    let snap = snap.expect("a document after the outage");
    assert_eq!(
        mds::lookup_str(&snap.doc, "instance/hostname"),
        Some("vm.example"),
        "{}: the real document, not the fault's body",
        name
    );
    report(name, during, duration);
    assert!(during >= 2, "{}: retried ({} requests)", name, during);
    assert!(
        during <= max_requests,
        "{}: {} requests is not bounded",
        name,
        during
    );
    during
}

#[test]
fn a_503_storm_is_retried_with_backoff_then_recovers() {
    // Backoff 1 s doubling to 30 s, at 1/20 speed: 25 ms, 50, 100, ... 1.5 s.
    outage(
        "503 storm",
        FaultMode::Status {
            status: 503,
            body: None,
        },
        Duration::from_secs(3),
        12,
    );
}

#[test]
fn a_503_whose_body_is_json_is_still_an_error() {
    let (emu, client) = emulator();
    let body = r#"{"instance":{"attributes":{}},"project":{"attributes":{}}}"#.to_string();
    emu.push_fault(Fault::new(
        FaultMode::Status {
            status: 503,
            body: Some(body.clone()),
        },
        2,
    ));
    let e = client.watch_once("", "0", 1).unwrap_err();
    assert_eq!(kind(&e), Some(FailureKind::Status(503)));
    let e = client.get_json("instance/attributes/").unwrap_err();
    assert_eq!(kind(&e), Some(FailureKind::Status(503)));
    outage(
        "503 with a JSON body",
        FaultMode::Status {
            status: 503,
            body: Some(body),
        },
        Duration::from_secs(2),
        12,
    );
}

#[test]
fn html_and_truncated_200s_are_errors() {
    let (emu, client) = emulator();
    emu.push_fault(Fault::new(FaultMode::Html, 1));
    assert_eq!(
        kind(&client.watch_once("", "0", 1).unwrap_err()),
        Some(FailureKind::BadBody)
    );
    emu.push_fault(Fault::new(FaultMode::Truncate, 1));
    assert_eq!(
        kind(&client.watch_once("", "0", 1).unwrap_err()),
        Some(FailureKind::Truncated)
    );
    assert!(client.watch_once("", "0", 1).is_ok());
    outage(
        "200 with an HTML body",
        FaultMode::Html,
        Duration::from_secs(2),
        12,
    );
    outage(
        "200 with a truncated body",
        FaultMode::Truncate,
        Duration::from_secs(2),
        12,
    );
}

#[test]
fn connection_resets_are_retried() {
    let (emu, client) = emulator();
    emu.push_fault(Fault::new(FaultMode::Reset, 1));
    let e = client.watch_once("", "0", 1).unwrap_err();
    assert!(matches!(kind(&e), Some(FailureKind::Connection)), "{:?}", e);
    outage(
        "connection reset",
        FaultMode::Reset,
        Duration::from_secs(2),
        12,
    );
}

#[test]
fn a_server_that_hangs_past_the_client_timeout_is_abandoned() {
    let (emu, client) = emulator();
    emu.push_fault(Fault::new(FaultMode::Hang { seconds: 30.0 }, 1));
    let start = Instant::now();
    let e = client.watch_once("", "0", 1).unwrap_err();
    let waited = start.elapsed();
    assert_eq!(kind(&e), Some(FailureKind::Timeout), "{:?}", e);
    // timeout_sec 1 + a 10 s margin at 1/20 speed (whole seconds): about 2 s.
    assert!(waited < Duration::from_secs(4), "{:?}", waited);
}

#[test]
fn answers_without_a_new_etag_do_not_make_a_busy_loop() {
    for (name, mode) in [
        ("200 without an ETag", FaultMode::NoEtag),
        ("200 with an unchanged ETag", FaultMode::FixedEtag),
        ("200 with a new ETag, same document", FaultMode::FreshEtag),
    ] {
        let (emu, client) = emulator();
        let signals: &'static Signals = Box::leak(Box::new(Signals::new()));
        let mut watcher = Watcher::new(client, "");
        watcher.next(signals).unwrap();
        emu.clear_requests();
        emu.push_fault(Fault::new(mode, -1));
        let handle = std::thread::spawn(move || watcher.next(signals).map(|s| s.doc));
        let window = Duration::from_secs(3);
        std::thread::sleep(window);
        let n = metadata_requests(&emu);
        report(name, n, window);
        assert!(n <= 15, "{}: {} requests in {:?}", name, n, window);
        // A real change still gets through while the server misbehaves.
        emu.patch_document(&doc(r#"{"instance":{"hostname":"changed"}}"#))
            .unwrap();
        let got = handle.join().unwrap().unwrap();
        assert_eq!(
            mds::lookup_str(&got, "instance/hostname"),
            Some("changed"),
            "{}",
            name
        );
    }
}

#[test]
fn replies_without_metadata_flavor_are_refused() {
    let (emu, client) = emulator();
    emu.push_fault(Fault::new(FaultMode::NoFlavor, 1));
    let e = client.get_text("instance/id").unwrap_err();
    assert_eq!(kind(&e), Some(FailureKind::NoFlavor));
    assert_eq!(
        client.get_text("instance/id").unwrap().as_deref(),
        Some("42")
    );
}

#[test]
fn requests_carry_metadata_flavor_and_404_means_absent() {
    let (emu, client) = emulator();
    assert_eq!(client.get_text("instance/nothing-here").unwrap(), None);
    assert!(client.get_json("instance/attributes/").unwrap().is_some());
    client
        .put_guest_attribute("hostkeys", "ssh-ed25519", "AAAA")
        .unwrap();
    assert!(emu.requests().iter().all(|r| r.flavor));
    assert_eq!(
        client
            .get_text("instance/guest-attributes/hostkeys/ssh-ed25519")
            .unwrap()
            .as_deref(),
        Some("AAAA")
    );
}

// The binary, as scripts use it.

fn get(emu: &Emulator, args: &[&str], extra_env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(PathBuf::from(env!("CARGO_BIN_EXE_gce-guest")));
    cmd.arg("google_metadata_get").args(args);
    cmd.env("GCE_METADATA_HOST", emu.addr().to_string())
        .env(gce_guest::timing::TIME_SCALE_ENV, TIME_SCALE);
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn metadata_get_prints_values_and_exits_by_outcome() {
    let (emu, _) = emulator();
    let out = get(&emu, &["instance/id"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(out.stdout, b"42");
    let out = get(&emu, &["instance/attributes/", "--recursive"], &[]);
    let json = mds::parse_json(std::str::from_utf8(&out.stdout).unwrap()).unwrap();
    assert!(mds::lookup_str(&json, "ssh-keys").is_some());
    assert_eq!(get(&emu, &["instance/absent"], &[]).status.code(), Some(1));
    emu.push_fault(Fault::new(
        FaultMode::Status {
            status: 503,
            body: None,
        },
        -1,
    ));
    let out = get(&emu, &["--timeout", "2", "instance/id"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("503"));
}

#[test]
fn metadata_get_ignores_proxy_settings() {
    let (emu, _) = emulator();
    let dead = "http://127.0.0.1:9";
    let env = [
        ("http_proxy", dead),
        ("HTTP_PROXY", dead),
        ("all_proxy", dead),
        ("ALL_PROXY", dead),
    ];
    let out = get(&emu, &["instance/id"], &env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"42");
}

#[test]
fn metadata_get_wait_returns_the_next_value() {
    let (emu, _) = emulator();
    let addr = emu.addr().to_string();
    let child = std::thread::spawn(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_gce-guest"))
            .args([
                "google_metadata_get",
                "--wait",
                "instance/virtual-clock/drift-token",
            ])
            .env("GCE_METADATA_HOST", addr)
            .env(gce_guest::timing::TIME_SCALE_ENV, TIME_SCALE)
            .output()
            .unwrap();
        out.stdout
    });
    std::thread::sleep(Duration::from_millis(500));
    emu.patch_document(&doc(r#"{"instance":{"virtualClock":{"driftToken":"99"}}}"#))
        .unwrap();
    assert_eq!(child.join().unwrap(), b"99");
}

// Hostile servers: every reply below is refused, retried until the deadline, and never
// printed; no process grows past 64 MiB whatever the server sends.

/// What a hostile server sends after its reply head.
#[derive(Clone, Copy)]
enum Tail {
    Nothing,
    /// `Y: z` header lines until the client goes away.
    EndlessHeaders,
    /// Body bytes until the client goes away.
    EndlessBody,
}

/// Serves `head` then `tail` to every connection on 127.0.0.1 (at most 200 connections,
/// 256 MiB each, so a failing test ends); returns its `host:port`.
fn hostile_server(head: Vec<u8>, tail: Tail) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().take(200) {
            let Ok(mut conn) = conn else { continue };
            let head = head.clone();
            std::thread::spawn(move || {
                let mut request = Vec::new();
                let mut byte = [0u8; 1];
                while !request.ends_with(b"\r\n\r\n") && conn.read(&mut byte).unwrap_or(0) == 1 {
                    request.push(byte[0]);
                }
                let _ = conn.write_all(&head);
                let filler: &[u8] = match tail {
                    Tail::Nothing => return,
                    Tail::EndlessHeaders => b"Y: zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\r\n",
                    Tail::EndlessBody => &[b'x'; 4096],
                };
                let mut sent = 0usize;
                while sent < 256 << 20 && conn.write_all(filler).is_ok() {
                    sent += filler.len();
                }
            });
        }
    });
    addr
}

/// Runs `google_metadata_get ARGS` against `addr`; gives its output and its peak RSS in KiB,
/// read from VmHWM while it runs (the high-water mark of its own image: `wait4`'s maxrss
/// would count the test process it was forked from).
fn get_measured(addr: &str, args: &[&str]) -> (std::process::Output, i64) {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_gce-guest"))
        .arg("google_metadata_get")
        .args(args)
        .env("GCE_METADATA_HOST", addr)
        .env(gce_guest::timing::TIME_SCALE_ENV, TIME_SCALE)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            pipe.read_to_end(&mut buf).ok();
            buf
        })
    };
    let out_reader = reader(Box::new(child.stdout.take().unwrap()));
    let err_reader = reader(Box::new(child.stderr.take().unwrap()));
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0i64;
    let status = loop {
        // Once it runs gce-guest (after exec), VmHWM counts only the program's own memory.
        let hwm = std::fs::read_to_string(&status_path)
            .ok()
            .filter(|s| s.lines().any(|l| l == "Name:\tgce-guest"))
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
            });
        peak_kib = peak_kib.max(hwm.unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let output = std::process::Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, peak_kib)
}

const RSS_LIMIT_KIB: i64 = 64 * 1024;

fn assert_refused(name: &str, head: &[u8], tail: Tail) {
    let addr = hostile_server(head.to_vec(), tail);
    let (out, rss_kib) = get_measured(&addr, &["--timeout", "1", "instance/attributes/x"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "{}: exit {:?}, peak RSS {} KiB",
        name,
        out.status.code(),
        rss_kib
    );
    assert_eq!(out.status.code(), Some(2), "{}: {}", name, stderr);
    assert!(
        out.stdout.is_empty(),
        "{}: printed {:?}",
        name,
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!stderr.contains("panicked"), "{}: {}", name, stderr);
    assert!(
        rss_kib < RSS_LIMIT_KIB,
        "{}: peak RSS {} KiB",
        name,
        rss_kib
    );
}

const FLAVOR_HEAD: &str = "HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\n";

#[test]
fn a_header_line_that_wraps_the_header_budget_is_refused_in_bounded_memory() {
    // The client's header budget is 64 KiB; `Metadata-Flavor: Google\r\n` takes 25 bytes
    // of it. A line of the 65,510 bytes left but one, ended by a bare LF, was counted as
    // 65,512: before the patch the budget wrapped around and headers came until memory
    // ran out (release builds) or the client panicked (debug builds).
    // The same at minreq's own default budget of 8 KiB, in case the limit is ever dropped.
    for budget in [64 << 10, 8 << 10] {
        let mut head = b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', budget - 25 - 1 - 3));
        head.push(b'\n');
        assert_refused("header budget", &head, Tail::EndlessHeaders);
    }
}

#[test]
fn endless_headers_and_endless_bodies_are_refused_in_bounded_memory() {
    assert_refused(
        "endless headers",
        FLAVOR_HEAD.as_bytes(),
        Tail::EndlessHeaders,
    );
    let chunkless = format!("{}\r\n", FLAVOR_HEAD); // no length: read until close
    assert_refused("endless body", chunkless.as_bytes(), Tail::EndlessBody);
    let huge = format!("{}Content-Length: 99999999999\r\n\r\n", FLAVOR_HEAD);
    assert_refused("declared huge body", huge.as_bytes(), Tail::EndlessBody);
    let chunk = format!(
        "{}Transfer-Encoding: chunked\r\n\r\n7fffffff\r\n",
        FLAVOR_HEAD
    );
    assert_refused("endless chunk", chunk.as_bytes(), Tail::EndlessBody);
}

#[test]
fn bodies_cut_short_are_never_printed() {
    let short = format!(
        "{}Content-Length: 100\r\n\r\nrm -rf /some/dir/",
        FLAVOR_HEAD
    );
    assert_refused("short Content-Length", short.as_bytes(), Tail::Nothing);
    let between = format!(
        "{}Transfer-Encoding: chunked\r\n\r\n11\r\nrm -rf /some/dir/\r\n",
        FLAVOR_HEAD
    );
    assert_refused(
        "chunked, cut between chunks",
        between.as_bytes(),
        Tail::Nothing,
    );
    let inside = format!(
        "{}Transfer-Encoding: chunked\r\n\r\n20\r\nrm -rf /some/dir/",
        FLAVOR_HEAD
    );
    assert_refused(
        "chunked, cut inside a chunk",
        inside.as_bytes(),
        Tail::Nothing,
    );
}
