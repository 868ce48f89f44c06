//! Integration tests of the metadata-server emulator itself: raw HTTP over real sockets to
//! an in-process [`Emulator`], and the `google_metadata_emulator` applet as a process.
//! Run with `cargo test --features emulator,test-hooks --test integration emulator::`.

#![cfg(feature = "emulator")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::Scratch;
use gce_guest::emulator::{sample_document, Emulator, Fault, FaultMode};
use tinyjson::JsonValue;

const V1: &str = "/computeMetadata/v1/";

/// A parsed HTTP reply.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8(self.body.clone()).unwrap()
    }

    fn json(&self) -> JsonValue {
        self.text().parse().unwrap()
    }

    fn etag(&self) -> String {
        self.header("ETag").expect("an ETag header").to_string()
    }
}

fn parse_reply(raw: &[u8]) -> Reply {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of head in {:?}", String::from_utf8_lossy(raw)));
    let head = String::from_utf8(raw[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .map(|l| {
            let (k, v) = l.split_once(':').unwrap();
            (k.to_string(), v.trim().to_string())
        })
        .collect();
    Reply {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    }
}

/// Sends `request` as is and reads until the server closes.
fn exchange<S: Read + Write>(mut stream: S, request: &[u8]) -> std::io::Result<Vec<u8>> {
    stream.write_all(request)?;
    let mut out = Vec::new();
    stream.read_to_end(&mut out)?;
    Ok(out)
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s
}

fn build(method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: metadata.google.internal\r\n",
        method, target
    );
    for (k, v) in headers {
        req.push_str(&format!("{}: {}\r\n", k, v));
    }
    if !body.is_empty() || method == "PUT" || method == "POST" || method == "PATCH" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let raw = exchange(tcp(addr), &build(method, target, headers, body)).unwrap();
    parse_reply(&raw)
}

/// GET a metadata path (relative to `computeMetadata/v1/`) with the flavor header.
fn get(emu: &Emulator, path_query: &str) -> Reply {
    request(
        emu.addr(),
        "GET",
        &format!("{}{}", V1, path_query),
        &[("Metadata-Flavor", "Google")],
        b"",
    )
}

fn admin(emu: &Emulator, method: &str, path: &str, body: &str) -> Reply {
    request(emu.addr(), method, path, &[], body.as_bytes())
}

fn start() -> Emulator {
    Emulator::start("127.0.0.1:0", sample_document()).unwrap()
}

fn json(text: &str) -> JsonValue {
    text.parse().unwrap()
}

fn lookup<'a>(doc: &'a JsonValue, path: &str) -> &'a JsonValue {
    gce_guest::mds::lookup(doc, path).unwrap_or_else(|| panic!("{} not in document", path))
}

#[test]
fn requests_without_the_flavor_header_are_forbidden() {
    let emu = start();
    let path = format!("{}instance/id", V1);
    let r = request(emu.addr(), "GET", &path, &[], b"");
    assert_eq!(r.status, 403);
    assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    assert!(r.text().contains("Missing Metadata-Flavor:Google header"));
    let r = request(
        emu.addr(),
        "GET",
        &path,
        &[("Metadata-Flavor", "Amazon")],
        b"",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn requests_with_x_forwarded_for_are_forbidden() {
    let emu = start();
    let r = request(
        emu.addr(),
        "GET",
        &format!("{}instance/id", V1),
        &[
            ("Metadata-Flavor", "Google"),
            ("X-Forwarded-For", "10.0.0.9"),
        ],
        b"",
    );
    assert_eq!(r.status, 403);
}

#[test]
fn a_leaf_is_plain_text_with_every_header() {
    let emu = start();
    let r = get(&emu, "instance/hostname");
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "demo-vm.c.demo-project.internal");
    assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    assert_eq!(r.header("Server"), Some("Metadata Server for VM"));
    assert_eq!(r.header("Content-Type"), Some("application/text"));
    assert_eq!(r.header("Content-Length"), Some("31"));
    let etag = r.etag();
    assert!(
        etag.len() == 16 && etag.bytes().all(|b| b.is_ascii_hexdigit()),
        "{}",
        etag
    );
    assert_eq!(get(&emu, "instance/id").text(), "4520031799277581824");
    assert_eq!(
        get(&emu, "instance/zone").text(),
        "projects/123456789012/zones/us-central1-a"
    );
    assert_eq!(get(&emu, "instance/tags").text(), "http-server\nssh\n");
}

#[test]
fn directories_list_their_children() {
    let emu = start();
    let r = get(&emu, "instance/");
    assert_eq!(r.status, 200);
    let listing = r.text();
    let lines: Vec<&str> = listing.lines().collect();
    for want in [
        "attributes/",
        "hostname",
        "id",
        "network-interfaces/",
        "service-accounts/",
        "tags",
        "virtual-clock/",
    ] {
        assert!(lines.contains(&want), "{} missing from {:?}", want, lines);
    }
    assert_eq!(
        get(&emu, "instance").text(),
        listing,
        "served without the slash too"
    );
    assert_eq!(get(&emu, "instance/network-interfaces/").text(), "0/\n");
    let nic = get(&emu, "instance/network-interfaces/0/").text();
    assert!(
        nic.contains("access-configs/\n")
            && nic.contains("forwarded-ips\n")
            && nic.contains("mac\n"),
        "{}",
        nic
    );
    let root = get(&emu, "").text();
    assert!(
        root.contains("instance/\n") && root.contains("project/\n"),
        "{}",
        root
    );
    let sa = get(&emu, "instance/service-accounts/default/").text();
    assert_eq!(sa, "aliases\nemail\nscopes\n");
}

#[test]
fn recursive_json_has_camel_case_keys() {
    let emu = start();
    let r = get(&emu, "?recursive=true");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Content-Type"), Some("application/json"));
    let doc = r.json();
    assert_eq!(
        lookup(&doc, "instance/networkInterfaces/0/mac"),
        &JsonValue::String("42:01:0a:80:00:02".into())
    );
    assert_eq!(
        lookup(&doc, "instance/virtualClock/driftToken"),
        &JsonValue::String("0".into())
    );
    assert_eq!(
        lookup(&doc, "project/numericProjectId"),
        &JsonValue::Number(123456789012.0)
    );
    assert!(
        r.text().contains("\"id\":4520031799277581824"),
        "ids stay digits"
    );
    let with_slash = get(&emu, "instance/?recursive=true&alt=json");
    let without = get(&emu, "instance?recursive=true");
    assert_eq!(with_slash.body, without.body);
    assert_eq!(with_slash.json(), lookup(&doc, "instance").clone());
    // A leaf as JSON: a string becomes a JSON string.
    assert_eq!(
        get(&emu, "instance/virtual-clock/drift-token?alt=json").text(),
        "\"0\""
    );
    assert_eq!(
        get(&emu, "instance/id?alt=json").text(),
        "4520031799277581824"
    );
}

#[test]
fn hyphenated_paths_map_to_camel_case_keys() {
    let emu = start();
    assert_eq!(
        get(&emu, "instance/network-interfaces/0/forwarded-ips/").text(),
        "10.128.0.100\n10.128.0.101\n"
    );
    assert_eq!(
        get(&emu, "instance/network-interfaces/0/forwarded-ips/1").text(),
        "10.128.0.101"
    );
    assert_eq!(get(&emu, "instance/virtual-clock/drift-token").text(), "0");
    assert_eq!(
        get(&emu, "project/numeric-project-id").text(),
        "123456789012"
    );
    assert_eq!(get(&emu, "project/project-id").text(), "demo-project");
    assert_eq!(
        get(
            &emu,
            "instance/network-interfaces/0/access-configs/0/external-ip"
        )
        .text(),
        "203.0.113.10"
    );
    assert_eq!(get(&emu, "instance/maintenance-event").text(), "NONE");
    let scopes = get(&emu, "instance/service-accounts/default/scopes").text();
    assert_eq!(scopes.lines().count(), 3);
}

#[test]
fn attribute_keys_are_verbatim() {
    let emu = start();
    assert_eq!(
        get(&emu, "instance/attributes/").text(),
        "enable-oslogin\nssh-keys\nstartup-script\n"
    );
    assert_eq!(
        get(&emu, "instance/attributes/startup-script").text(),
        "#!/bin/sh\necho hello from the startup script"
    );
    assert_eq!(
        get(&emu, "instance/attributes/enable-oslogin").text(),
        "FALSE"
    );
    assert!(get(&emu, "project/attributes/ssh-keys")
        .text()
        .starts_with("carol:ssh-ed25519 "));
    let attrs = get(&emu, "instance/attributes/?recursive=true").json();
    assert!(matches!(attrs, JsonValue::Object(ref m) if m.contains_key("ssh-keys")));
    // Not mapped to camelCase below attributes.
    emu.patch_document(&json(r#"{"instance":{"attributes":{"fooBar":"x"}}}"#))
        .unwrap();
    assert_eq!(get(&emu, "instance/attributes/foo-bar").status, 404);
    assert_eq!(get(&emu, "instance/attributes/fooBar").text(), "x");
}

#[test]
fn missing_keys_are_404_with_googles_page() {
    let emu = start();
    for path in [
        "instance/nothing",
        "instance/attributes/nothing",
        "instance/network-interfaces/7/",
        "nothing/at/all",
    ] {
        let r = get(&emu, path);
        assert_eq!(r.status, 404, "{}", path);
        assert!(r.text().contains("Error 404 (Not Found)!!1"));
        assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    }
    let r = request(
        emu.addr(),
        "GET",
        "/computeMetadata/v2/instance/id",
        &[("Metadata-Flavor", "Google")],
        b"",
    );
    assert_eq!(r.status, 404);
}

#[test]
fn etags_are_stable_and_follow_the_content() {
    let emu = start();
    let a = get(&emu, "instance/hostname").etag();
    assert_eq!(get(&emu, "instance/hostname").etag(), a);
    assert_ne!(
        get(&emu, "instance/hostname?alt=json").etag(),
        a,
        "per format"
    );
    let root = get(&emu, "?recursive=true").etag();
    let project = get(&emu, "project/project-id").etag();
    // The same content parsed again (fresh hash maps) gives the same ETag.
    emu.set_document(json(&get(&emu, "?recursive=true").text()));
    assert_eq!(get(&emu, "?recursive=true").etag(), root);
    emu.patch_document(&json(
        r#"{"instance":{"hostname":"other.c.demo-project.internal"}}"#,
    ))
    .unwrap();
    assert_ne!(get(&emu, "instance/hostname").etag(), a);
    assert_ne!(get(&emu, "?recursive=true").etag(), root);
    assert_eq!(get(&emu, "project/project-id").etag(), project);
}

#[test]
fn wait_for_change_answers_at_once_on_a_stale_etag() {
    let emu = start();
    let started = Instant::now();
    let r = get(
        &emu,
        "?recursive=true&alt=json&wait_for_change=true&last_etag=0&timeout_sec=60",
    );
    assert_eq!(r.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.etag(), get(&emu, "?recursive=true").etag());
}

#[test]
fn wait_for_change_wakes_on_a_patch_of_its_own_path() {
    let emu = start();
    let etag = get(&emu, "instance/attributes/?recursive=true").etag();
    let addr = emu.addr();
    let target = format!(
        "{}instance/attributes/?recursive=true&wait_for_change=true&last_etag={}&timeout_sec=30",
        V1, etag
    );
    let watcher = std::thread::spawn(move || {
        let raw = exchange(
            tcp(addr),
            &build("GET", &target, &[("Metadata-Flavor", "Google")], b""),
        )
        .unwrap();
        (Instant::now(), parse_reply(&raw))
    });
    std::thread::sleep(Duration::from_millis(300));
    // A change elsewhere does not answer this watch.
    let r = admin(
        &emu,
        "PATCH",
        "/emulator/metadata",
        r#"{"project":{"attributes":{"x":"1"}}}"#,
    );
    assert_eq!(r.status, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!watcher.is_finished(), "woke on an unrelated change");
    let patched_at = Instant::now();
    let r = admin(
        &emu,
        "PATCH",
        "/emulator/metadata",
        r#"{"instance":{"attributes":{"startup-script":"echo new"}}}"#,
    );
    assert_eq!(r.status, 200);
    let (at, reply) = watcher.join().unwrap();
    assert!(at >= patched_at);
    assert!(at - patched_at < Duration::from_secs(3));
    assert_eq!(reply.status, 200);
    assert_ne!(reply.etag(), etag);
    assert_eq!(
        lookup(&reply.json(), "startup-script"),
        &JsonValue::String("echo new".into())
    );
}

#[test]
fn wait_for_change_without_last_etag_waits_for_the_next_change() {
    let emu = start();
    let addr = emu.addr();
    let watcher = std::thread::spawn(move || {
        let target = format!(
            "{}instance/virtual-clock/drift-token?wait_for_change=true&timeout_sec=30",
            V1
        );
        parse_reply(
            &exchange(
                tcp(addr),
                &build("GET", &target, &[("Metadata-Flavor", "Google")], b""),
            )
            .unwrap(),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!watcher.is_finished());
    emu.patch_document(&json(
        r#"{"instance":{"virtualClock":{"driftToken":"77"}}}"#,
    ))
    .unwrap();
    assert_eq!(watcher.join().unwrap().text(), "77");
}

#[test]
fn wait_for_change_times_out_unchanged() {
    let emu = start();
    let first = get(&emu, "?recursive=true");
    let started = Instant::now();
    let r = get(
        &emu,
        &format!(
            "?recursive=true&wait_for_change=true&last_etag={}&timeout_sec=1",
            first.etag()
        ),
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{:?}",
        took
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.etag(), first.etag());
    assert_eq!(r.body, first.body);
}

#[test]
fn bad_query_parameters_are_400() {
    let emu = start();
    assert_eq!(get(&emu, "instance/id?alt=xml").status, 400);
    assert_eq!(
        get(&emu, "instance/id?wait_for_change=true&timeout_sec=soon").status,
        400
    );
}

#[test]
fn guest_attributes_are_written_and_read() {
    let emu = start();
    let root = get(&emu, "?recursive=true").etag();
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPKkHbgJqZMI6HcgENtI7INWKdoHxd07XKGDtf8SC16Q";
    let flavor = [("Metadata-Flavor", "Google")];
    let put = request(
        emu.addr(),
        "PUT",
        &format!("{}instance/guest-attributes/hostkeys/ssh-ed25519", V1),
        &flavor,
        key.as_bytes(),
    );
    assert_eq!(put.status, 200);
    assert!(put.body.is_empty());
    assert_eq!(
        get(&emu, "instance/guest-attributes/hostkeys/ssh-ed25519").text(),
        key
    );
    assert_eq!(
        get(&emu, "instance/guest-attributes/").text(),
        "hostkeys/\n"
    );
    assert_eq!(
        get(&emu, "instance/guest-attributes/hostkeys/").text(),
        "ssh-ed25519\n"
    );
    let tree = get(&emu, "instance/guest-attributes/?recursive=true").json();
    assert_eq!(
        lookup(&tree, "hostkeys/ssh-ed25519"),
        &JsonValue::String(key.into())
    );
    assert_eq!(emu.guest_attributes()["hostkeys"]["ssh-ed25519"], key);
    let listed = admin(&emu, "GET", "/emulator/guest-attributes", "").json();
    assert_eq!(
        lookup(&listed, "hostkeys/ssh-ed25519"),
        &JsonValue::String(key.into())
    );
    assert_eq!(
        get(&emu, "?recursive=true").etag(),
        root,
        "guest attributes are not in the document"
    );

    // Chunked, with Expect: 100-continue, as curl --upload-file sends it.
    let raw = format!(
        "PUT {}instance/guest-attributes/guest-agent/sshable HTTP/1.1\r\nMetadata-Flavor: Google\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n4\r\ntrue\r\n0\r\n\r\n",
        V1
    );
    let reply = exchange(tcp(emu.addr()), raw.as_bytes()).unwrap();
    let text = String::from_utf8_lossy(&reply);
    assert!(text.contains("HTTP/1.1 200 OK"), "{}", text);
    assert_eq!(emu.guest_attributes()["guest-agent"]["sshable"], "true");

    let no_flavor = request(
        emu.addr(),
        "PUT",
        &format!("{}instance/guest-attributes/a/b", V1),
        &[],
        b"x",
    );
    assert_eq!(no_flavor.status, 403);
    let elsewhere = request(
        emu.addr(),
        "PUT",
        &format!("{}instance/attributes/x", V1),
        &flavor,
        b"x",
    );
    assert_eq!(elsewhere.status, 405);
    let too_short = request(
        emu.addr(),
        "PUT",
        &format!("{}instance/guest-attributes/a", V1),
        &flavor,
        b"x",
    );
    assert_eq!(too_short.status, 400);
    let deleted = request(
        emu.addr(),
        "DELETE",
        &format!("{}instance/guest-attributes/guest-agent/sshable", V1),
        &flavor,
        b"",
    );
    assert_eq!(deleted.status, 200);
    assert!(!emu.guest_attributes().contains_key("guest-agent"));
}

#[test]
fn the_token_endpoint_serves_a_bearer_token() {
    let emu = start();
    for sa in [
        "default",
        "123456789012-compute@developer.gserviceaccount.com",
    ] {
        let r = get(&emu, &format!("instance/service-accounts/{}/token", sa));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        let t = r.json();
        assert_eq!(
            lookup(&t, "access_token"),
            &JsonValue::String("emulator-access-token".into())
        );
        assert_eq!(lookup(&t, "expires_in"), &JsonValue::Number(3599.0));
        assert_eq!(
            lookup(&t, "token_type"),
            &JsonValue::String("Bearer".into())
        );
    }
    emu.patch_document(&json(
        r#"{"instance":{"serviceAccounts":{"default":{"token":"ya29.test"}}}}"#,
    ))
    .unwrap();
    let t = get(&emu, "instance/service-accounts/default/token").json();
    assert_eq!(
        lookup(&t, "access_token"),
        &JsonValue::String("ya29.test".into())
    );
    assert_eq!(
        get(&emu, "instance/service-accounts/nobody@example.com/token").status,
        404
    );
}

#[test]
fn a_status_fault_answers_the_next_requests_then_stops() {
    let emu = start();
    let r = admin(
        &emu,
        "POST",
        "/emulator/faults",
        r#"{"mode":"status","status":503,"count":2,"body":"{\"instance\":{}}"}"#,
    );
    assert_eq!(r.status, 200);
    // Admin requests neither consume nor suffer faults.
    assert_eq!(admin(&emu, "GET", "/emulator/metadata", "").status, 200);
    for _ in 0..2 {
        let r = get(&emu, "?recursive=true");
        assert_eq!(r.status, 503);
        assert_eq!(r.text(), r#"{"instance":{}}"#);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
    }
    assert_eq!(get(&emu, "?recursive=true").status, 200);
    emu.push_fault(Fault::new(
        FaultMode::Status {
            status: 429,
            body: None,
        },
        1,
    ));
    let r = get(&emu, "instance/id");
    assert_eq!(r.status, 429);
    assert!(r.text().contains("<html"));
}

#[test]
fn an_html_fault_sends_a_page_with_200() {
    let emu = start();
    emu.push_fault(Fault::new(FaultMode::Html, 1));
    let r = get(&emu, "?recursive=true&alt=json");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("<html"));
    assert!(r.text().parse::<JsonValue>().is_err());
    assert_eq!(r.header("Metadata-Flavor"), Some("Google"));
}

#[test]
fn a_truncate_fault_sends_half_the_announced_body() {
    let emu = start();
    let full = get(&emu, "?recursive=true");
    emu.push_fault(Fault::new(FaultMode::Truncate, 1));
    let r = get(&emu, "?recursive=true");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("Content-Length"),
        Some(full.body.len().to_string().as_str())
    );
    assert_eq!(r.body.len(), full.body.len() / 2);
    assert_eq!(r.body[..], full.body[..full.body.len() / 2]);
}

#[test]
fn a_reset_fault_answers_nothing() {
    let emu = start();
    emu.push_fault(Fault::new(FaultMode::Reset, 1));
    let got = exchange(
        tcp(emu.addr()),
        &build(
            "GET",
            &format!("{}instance/id", V1),
            &[("Metadata-Flavor", "Google")],
            b"",
        ),
    );
    match got {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{}", e),
        Ok(bytes) => assert!(bytes.is_empty(), "{:?}", String::from_utf8_lossy(&bytes)),
    }
    assert_eq!(get(&emu, "instance/id").status, 200);
}

#[test]
fn a_hang_fault_sends_nothing_then_closes() {
    let emu = start();
    admin(
        &emu,
        "POST",
        "/emulator/faults",
        r#"{"mode":"hang","seconds":0.5}"#,
    );
    let started = Instant::now();
    let bytes = exchange(
        tcp(emu.addr()),
        &build(
            "GET",
            &format!("{}instance/id", V1),
            &[("Metadata-Flavor", "Google")],
            b"",
        ),
    )
    .unwrap();
    assert!(bytes.is_empty());
    assert!(started.elapsed() >= Duration::from_millis(500));
}

#[test]
fn a_delay_fault_answers_late_but_normally() {
    let emu = start();
    admin(
        &emu,
        "POST",
        "/emulator/faults",
        r#"{"mode":"delay","ms":300}"#,
    );
    let started = Instant::now();
    let r = get(&emu, "instance/id");
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(r.text(), "4520031799277581824");
}

#[test]
fn etag_faults_answer_a_watch_at_once() {
    let emu = start();
    let etag = get(&emu, "?recursive=true").etag();
    let watch = format!(
        "?recursive=true&wait_for_change=true&last_etag={}&timeout_sec=30",
        etag
    );
    emu.push_fault(Fault::new(FaultMode::NoEtag, 1));
    let started = Instant::now();
    let r = get(&emu, &watch);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ETag"), None);
    emu.push_fault(Fault::new(FaultMode::FixedEtag, 1));
    let started = Instant::now();
    let r = get(&emu, &watch);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(r.etag(), etag);
}

#[test]
fn a_no_flavor_fault_drops_the_header() {
    let emu = start();
    emu.push_fault(Fault::new(FaultMode::NoFlavor, 1));
    let r = get(&emu, "instance/id");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("Metadata-Flavor"), None);
    assert_eq!(
        get(&emu, "instance/id").header("Metadata-Flavor"),
        Some("Google")
    );
}

#[test]
fn faults_queue_in_order_and_forever_until_cleared() {
    let emu = start();
    admin(
        &emu,
        "POST",
        "/emulator/faults",
        r#"[{"mode":"status","status":500},{"mode":"status","status":502,"count":-1}]"#,
    );
    assert_eq!(get(&emu, "instance/id").status, 500);
    for _ in 0..5 {
        assert_eq!(get(&emu, "instance/id").status, 502);
    }
    let queued = admin(&emu, "GET", "/emulator/faults", "").json();
    assert_eq!(
        queued,
        json(r#"[{"mode":"status","count":-1,"status":502}]"#)
    );
    assert_eq!(admin(&emu, "DELETE", "/emulator/faults", "").status, 200);
    assert_eq!(get(&emu, "instance/id").status, 200);
    assert!(emu.faults().is_empty());
    for bad in [
        r#"{"mode":"explode"}"#,
        "not json",
        r#"{"mode":"status","count":0}"#,
    ] {
        assert_eq!(
            admin(&emu, "POST", "/emulator/faults", bad).status,
            400,
            "{}",
            bad
        );
    }
    assert!(emu.faults().is_empty());
}

#[test]
fn the_request_log_records_every_metadata_request() {
    let emu = start();
    get(&emu, "instance/id");
    emu.clear_requests();
    assert_eq!(admin(&emu, "DELETE", "/emulator/requests", "").status, 200);
    get(&emu, "instance/hostname?alt=text");
    request(emu.addr(), "GET", &format!("{}instance/id", V1), &[], b"");
    emu.push_fault(Fault::new(
        FaultMode::Status {
            status: 503,
            body: None,
        },
        1,
    ));
    get(
        &emu,
        "?recursive=true&wait_for_change=true&last_etag=0&timeout_sec=1",
    );
    admin(&emu, "GET", "/emulator/metadata", "");
    let log = emu.requests();
    assert_eq!(log.len(), 3, "{:?}", log);
    assert_eq!(log[0].method, "GET");
    assert_eq!(log[0].path, "/computeMetadata/v1/instance/hostname");
    assert_eq!(log[0].query, "alt=text");
    assert!(log[0].flavor);
    assert_eq!(log[0].status, 200);
    assert!(!log[0].wait_for_change);
    assert_eq!(log[0].fault, None);
    assert!(!log[1].flavor);
    assert_eq!(log[1].status, 403);
    assert!(log[2].wait_for_change);
    assert_eq!(log[2].status, 503);
    assert_eq!(log[2].fault, Some("status"));
    assert!(log[0].conn < log[1].conn && log[1].conn < log[2].conn);
    for r in &log {
        assert!(r.end_ms.unwrap() >= r.start_ms);
    }
    let served = admin(&emu, "GET", "/emulator/requests", "").json();
    let JsonValue::Array(records) = served else {
        panic!("not an array")
    };
    assert_eq!(records.len(), 3);
    assert_eq!(
        lookup(&records[2], "fault"),
        &JsonValue::String("status".into())
    );
    assert_eq!(lookup(&records[1], "status"), &JsonValue::Number(403.0));
}

#[test]
fn the_log_shows_long_polls_in_flight_and_clients_that_left() {
    let emu = start();
    let etag = get(&emu, "?recursive=true").etag();
    emu.clear_requests();
    let target = format!(
        "{}?recursive=true&wait_for_change=true&last_etag={}&timeout_sec=60",
        V1, etag
    );
    let watchers: Vec<_> = (0..2)
        .map(|_| {
            let addr = emu.addr();
            let target = target.clone();
            std::thread::spawn(move || {
                parse_reply(
                    &exchange(
                        tcp(addr),
                        &build("GET", &target, &[("Metadata-Flavor", "Google")], b""),
                    )
                    .unwrap(),
                )
            })
        })
        .collect();
    // A third client gives up early.
    let mut quitter = tcp(emu.addr());
    quitter
        .write_all(&build(
            "GET",
            &target,
            &[("Metadata-Flavor", "Google")],
            b"",
        ))
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let running = emu
        .requests()
        .iter()
        .filter(|r| r.wait_for_change && r.end_ms.is_none())
        .count();
    assert_eq!(running, 3);
    drop(quitter);
    let deadline = Instant::now() + Duration::from_secs(5);
    while emu.requests().iter().filter(|r| r.end_ms.is_none()).count() > 2 {
        assert!(
            Instant::now() < deadline,
            "the abandoned long-poll was not noticed"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        emu.requests()
            .iter()
            .filter(|r| r.end_ms.is_some() && r.status == 0)
            .count(),
        1
    );
    emu.patch_document(&json(r#"{"instance":{"hostname":"changed"}}"#))
        .unwrap();
    for w in watchers {
        assert_eq!(w.join().unwrap().status, 200);
    }
    assert!(emu.requests().iter().all(|r| r.end_ms.is_some()));
}

#[test]
fn the_admin_api_replaces_and_patches_the_document() {
    let emu = start();
    let doc = admin(&emu, "GET", "/emulator/metadata", "").json();
    assert_eq!(doc, sample_document());
    let r = admin(
        &emu,
        "PUT",
        "/emulator/metadata",
        r#"{"instance":{"id":1,"hostname":"h"},"project":{"projectId":"p"}}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(&emu, "instance/hostname").text(), "h");
    let r = admin(
        &emu,
        "PATCH",
        "/emulator/metadata",
        r#"{"instance":{"hostname":null,"name":"n"}}"#,
    );
    assert_eq!(r.status, 200);
    assert_eq!(get(&emu, "instance/hostname").status, 404);
    assert_eq!(
        emu.document(),
        json(r#"{"instance":{"id":1,"name":"n"},"project":{"projectId":"p"}}"#)
    );
    for (method, path, body, status) in [
        ("PUT", "/emulator/metadata", "{nope", 400),
        ("PUT", "/emulator/metadata", "[1,2]", 400),
        ("PATCH", "/emulator/metadata", "\"text\"", 400),
        ("GET", "/emulator/nothing", "", 404),
        ("DELETE", "/emulator/metadata", "", 405),
    ] {
        assert_eq!(
            admin(&emu, method, path, body).status,
            status,
            "{} {} {}",
            method,
            path,
            body
        );
    }
    assert_eq!(
        emu.document(),
        json(r#"{"instance":{"id":1,"name":"n"},"project":{"projectId":"p"}}"#)
    );
}

#[test]
fn the_admin_api_and_metadata_are_served_on_a_unix_socket() {
    let dir = Scratch::new("emulator-unix");
    let sock = dir.join("admin.sock");
    let emu = start();
    emu.serve_unix(&sock).unwrap();
    let over_unix = |req: Vec<u8>| {
        let s = UnixStream::connect(&sock).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        parse_reply(&exchange(s, &req).unwrap())
    };
    let micros = || gce_guest::timing::unix_micros() as f64;
    let before = micros();
    let r = over_unix(build(
        "PATCH",
        "/emulator/metadata",
        &[],
        br#"{"instance":{"hostname":"via-unix"}}"#,
    ));
    let after = micros();
    assert_eq!(r.status, 200);
    assert_eq!(get(&emu, "instance/hostname").text(), "via-unix");
    // The reply says when the change took effect (what the accounts bench times from).
    match lookup(&r.json(), "changedAtMicros") {
        JsonValue::Number(at) => assert!((before..=after).contains(at), "{before} {at} {after}"),
        other => panic!("no changedAtMicros: {other:?}"),
    }
    let r = over_unix(build("GET", "/emulator/metadata", &[], b""));
    assert_eq!(
        lookup(&r.json(), "instance/hostname"),
        &JsonValue::String("via-unix".into())
    );
    let r = over_unix(build(
        "GET",
        &format!("{}instance/hostname", V1),
        &[("Metadata-Flavor", "Google")],
        b"",
    ));
    assert_eq!(r.text(), "via-unix");
    assert!(
        emu.serve_unix(&sock).is_err(),
        "a live socket is not taken over"
    );
    drop(emu);
    assert!(!sock.exists(), "the socket is removed on stop");
}

#[test]
fn bad_requests_are_refused_and_the_server_lives_on() {
    let emu = start();
    for raw in [
        &b"NONSENSE\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nno-colon\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ] {
        let reply = exchange(tcp(emu.addr()), raw).unwrap();
        assert!(
            reply.starts_with(b"HTTP/1.1 400"),
            "{:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    // A client that connects and says nothing, and one that sends half a request.
    let _silent = tcp(emu.addr());
    let mut half = tcp(emu.addr());
    half.write_all(b"GET /computeMetadata/v1/ HTTP/1.1\r\nMetadata-Fl")
        .unwrap();
    assert_eq!(get(&emu, "instance/id").status, 200);
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000));
    let reply = exchange(tcp(emu.addr()), huge.as_bytes()).unwrap_or_default();
    assert!(reply.is_empty() || reply.starts_with(b"HTTP/1.1 431"));
    assert_eq!(get(&emu, "instance/id").status, 200);
    let r = request(
        emu.addr(),
        "POST",
        &format!("{}instance/id", V1),
        &[("Metadata-Flavor", "Google")],
        b"x",
    );
    assert_eq!(r.status, 405);
}

#[test]
fn dropping_the_emulator_ends_waiting_requests() {
    let emu = start();
    let etag = get(&emu, "?recursive=true").etag();
    let addr = emu.addr();
    let watcher = std::thread::spawn(move || {
        let target = format!(
            "{}?recursive=true&wait_for_change=true&last_etag={}",
            V1, etag
        );
        exchange(
            tcp(addr),
            &build("GET", &target, &[("Metadata-Flavor", "Google")], b""),
        )
    });
    emu.push_fault(Fault::new(FaultMode::Hang { seconds: 3600.0 }, 1));
    let hung = std::thread::spawn(move || {
        exchange(
            tcp(addr),
            &build(
                "GET",
                "/computeMetadata/v1/",
                &[("Metadata-Flavor", "Google")],
                b"",
            ),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    drop(emu);
    assert!(started.elapsed() < Duration::from_secs(3));
    let _ = watcher.join().unwrap();
    let _ = hung.join().unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "still listening"
    );
}

fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills the child when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_applet_serves_as_a_process() {
    let dir = Scratch::new("emulator-applet");
    let ready = dir.join("ready");
    let sock = dir.join("admin.sock");
    let mut child = Child(
        Command::new(env!("CARGO_BIN_EXE_gce-guest"))
            .args([
                "google_metadata_emulator",
                "--listen",
                "127.0.0.1:0",
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--ready-file")
            .arg(&ready)
            .arg("--admin-socket")
            .arg(&sock)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let text = wait_for_file(&ready);
    let addrs: Vec<SocketAddr> = text.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(addrs.len(), 2);
    for addr in &addrs {
        let r = request(
            *addr,
            "GET",
            &format!("{}instance/hostname", V1),
            &[("Metadata-Flavor", "Google")],
            b"",
        );
        assert_eq!(r.text(), "demo-vm.c.demo-project.internal");
    }
    let s = UnixStream::connect(&sock).unwrap();
    let r = parse_reply(&exchange(s, &build("GET", "/emulator/requests", &[], b"")).unwrap());
    assert_eq!(r.status, 200);
    let mut stdout = child.0.stdout.take().unwrap();
    // SIGTERM stops it cleanly: exit 0, socket removed.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{:?}", status);
    let mut out = String::new();
    stdout.read_to_string(&mut out).unwrap();
    assert!(
        out.contains(&format!("listening on {}\n", addrs[0])),
        "{}",
        out
    );
    assert!(
        out.contains(&format!("listening on {}\n", addrs[1])),
        "{}",
        out
    );
    assert!(!sock.exists());
}

#[test]
fn the_applet_serves_a_document_from_a_file() {
    let dir = Scratch::new("emulator-applet-file");
    let ready = dir.join("ready");
    let doc = dir.join("doc.json");
    std::fs::write(
        &doc,
        r#"{"instance":{"hostname":"from-file"},"project":{}}"#,
    )
    .unwrap();
    let _child = Child(
        Command::new(env!("CARGO_BIN_EXE_gce-guest"))
            .args([
                "google_metadata_emulator",
                "--listen=127.0.0.1:0",
                "--metadata",
            ])
            .arg(&doc)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let addr: SocketAddr = wait_for_file(&ready).trim().parse().unwrap();
    let r = request(
        addr,
        "GET",
        &format!("{}instance/hostname", V1),
        &[("Metadata-Flavor", "Google")],
        b"",
    );
    assert_eq!(r.text(), "from-file");

    std::fs::write(&doc, "[1]").unwrap();
    let bad = Command::new(env!("CARGO_BIN_EXE_gce-guest"))
        .args([
            "google_metadata_emulator",
            "--listen",
            "127.0.0.1:0",
            "--metadata",
        ])
        .arg(&doc)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let usage = Command::new(env!("CARGO_BIN_EXE_gce-guest"))
        .args(["google_metadata_emulator", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let help = Command::new(env!("CARGO_BIN_EXE_gce-guest"))
        .args(["google_metadata_emulator", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("--ready-file"));
}

#[test]
fn the_crates_own_client_understands_the_emulator() {
    use gce_guest::mds::{Client, FailureKind};
    use gce_guest::Error;
    crate::common::scale_time_in_process();
    let emu = start();
    let client = Client::with_host(&emu.addr().to_string());
    assert_eq!(
        client.get_text("instance/hostname").unwrap().as_deref(),
        Some("demo-vm.c.demo-project.internal")
    );
    assert_eq!(client.get_text("instance/nothing").unwrap(), None);
    assert_eq!(client.get_json("").unwrap(), Some(sample_document()));
    let snap = client.watch_once("", "0", 5).unwrap();
    assert_eq!(*snap.doc, sample_document());
    let etag = snap.etag.unwrap();
    let started = Instant::now();
    let again = client.watch_once("", &etag, 1).unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_eq!(again.etag.as_deref(), Some(etag.as_str()));
    client
        .put_guest_attribute("hostkeys", "ssh-rsa", "AAAA")
        .unwrap();
    assert_eq!(emu.guest_attributes()["hostkeys"]["ssh-rsa"], "AAAA");

    let kind = |fault: FaultMode| {
        emu.push_fault(Fault::new(fault, 1));
        match client.get_json("") {
            Err(Error::Metadata { kind, .. }) => kind,
            other => panic!("expected a failure, got {:?}", other),
        }
    };
    assert_eq!(
        kind(FaultMode::Status {
            status: 503,
            body: Some("{}".into())
        }),
        FailureKind::Status(503)
    );
    assert_eq!(kind(FaultMode::Html), FailureKind::BadBody);
    assert_eq!(kind(FaultMode::Truncate), FailureKind::Truncated);
    assert_eq!(kind(FaultMode::NoFlavor), FailureKind::NoFlavor);
    assert_eq!(kind(FaultMode::Reset), FailureKind::Connection);
    assert_eq!(client.get_json("").unwrap(), Some(sample_document()));
}
