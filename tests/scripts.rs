//! `google_metadata_script_runner`, run for real in the sandbox against the metadata
//! emulator: which scripts run and in what order, how they run and how their
//! output is logged, the run directory, the configuration switches, bounded waits, and the
//! URL logic against a local HTTP(S) server started inside the sandbox (a small Python
//! program, [`SERVER`]) with `GCE_GUEST_STORAGE_ENDPOINT` pointing the Cloud Storage
//! endpoint at it.
//!
//! HTTPS: the built-in TLS (minreq's rustls with compiled-in roots) must refuse the local
//! server's self-signed certificate; the path a build without the `tls` feature takes
//! (curl, else GNU wget) is exercised through the test-only `GCE_GUEST_HTTPS_VIA=external`,
//! with the certificate trusted through `CURL_CA_BUNDLE` or a `WGETRC` `ca_certificate`.

#![cfg(feature = "emulator")]

use std::time::{Duration, Instant};

use crate::common::{Daemon, Output, Sandbox, SandboxBuilder};

const RUNNER: &str = "google_metadata_script_runner";
const CONFIG: &str = "/etc/default/instance_configs.cfg";
const TOKEN: &str = "emulator-access-token";
const WWW: &str = "/run/www";
const SERVER_LOG: &str = "/run/www.log";
const PORT: u16 = 8080;
const TLS_PORT: u16 = 8443;
const CERT: &str = "/run/tls/cert.pem";

/// A test web server: serves `<root>/<last path segment>`, logs every request as
/// `path<TAB>host<TAB>authorization` to the log file, and obeys path prefixes:
/// `/status/N/...` answers N; `/deny-token/...` answers 403 to a request with an
/// Authorization header; `/flaky/N/...` answers 503 to the first N requests of that path;
/// `/sleep/S/...` waits S seconds first; `/trickle/...` sends a byte every 0.1 s forever;
/// `/redirect/HOST/...` answers 302 to `http://HOST:<port>/` plus the rest of the path;
/// `/cut/N/...` announces the whole file's `Content-Length` but sends only its first N bytes,
/// and `/cut-chunked/N/...` sends them as one chunk, then closes without the last chunk.
const SERVER: &str = r##"
import http.server, os, ssl, sys, threading, time
root, port, log_path, ready = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
tls = sys.argv[5:7]
lock = threading.Lock()
counts = {}

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *args):
        pass
    def reply(self, code, body, extra=()):
        self.send_response(code)
        for k, v in extra:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        path = self.path.split("?")[0]
        with lock:
            counts[path] = counts.get(path, 0) + 1
            n = counts[path]
            with open(log_path, "a") as f:
                f.write("%s\t%s\t%s\n" % (self.path, self.headers.get("Host", "-"),
                                          self.headers.get("Authorization", "-")))
        parts = path.strip("/").split("/")
        if parts[0] == "status":
            return self.reply(int(parts[1]), b"no\n")
        if parts[0] == "deny-token" and self.headers.get("Authorization"):
            return self.reply(403, b"denied\n")
        if parts[0] == "flaky" and n <= int(parts[1]):
            return self.reply(503, b"busy\n")
        if parts[0] == "sleep":
            time.sleep(float(parts[1]))
        if parts[0] == "trickle":
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"#")
                    self.wfile.flush()
                    time.sleep(0.1)
            except OSError:
                return
        if parts[0] == "redirect":
            rest = "/".join(parts[2:])
            return self.reply(302, b"", [("Location", "http://%s:%d/%s" % (parts[1], port, rest))])
        try:
            with open(os.path.join(root, parts[-1]), "rb") as f:
                body = f.read()
        except OSError:
            return self.reply(404, b"not found\n")
        if parts[0] in ("cut", "cut-chunked"):
            part = body[:int(parts[1])]
            self.send_response(200)
            if parts[0] == "cut":
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(part)
            else:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(part), part))
            self.wfile.flush()
            self.close_connection = True
            return
        self.reply(200, body)

server = http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler)
server.daemon_threads = True
if tls:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tls[0], tls[1])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
open(ready, "w").close()
server.serve_forever()
"##;

// ---------------------------------------------------------------------------------------
// Helpers.

fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn attrs(pairs: &[(&str, &str)]) -> String {
    let body: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{}", json_str(k), json_str(v)))
        .collect();
    format!("{{{}}}", body.join(","))
}

/// A metadata document with these instance and project attributes and a default service
/// account (so the emulator serves a token).
fn doc(instance: &[(&str, &str)], project: &[(&str, &str)]) -> String {
    doc_with_account(instance, project, true)
}

fn doc_with_account(instance: &[(&str, &str)], project: &[(&str, &str)], account: bool) -> String {
    let accounts = if account {
        r#","serviceAccounts":{"default":{"email":"sa@p.iam.gserviceaccount.com","scopes":[]}}"#
    } else {
        ""
    };
    format!(
        r#"{{"instance":{{"id":1,"hostname":"vm","attributes":{}{}}},
           "project":{{"projectId":"p","attributes":{}}}}}"#,
        attrs(instance),
        accounts,
        attrs(project)
    )
}

fn sandbox(instance: &[(&str, &str)], project: &[(&str, &str)]) -> SandboxBuilder {
    Sandbox::builder().metadata(&doc(instance, project))
}

fn run_type(sb: &Sandbox, kind: &str, env: &[(&str, &str)]) -> Output {
    // PATH is given through env(1) inside: the command's own PATH must still find nsenter.
    let (path, env): (Vec<_>, Vec<_>) = env.iter().partition(|(k, _)| *k == "PATH");
    let mut argv = vec!["/usr/bin/env".to_string()];
    argv.extend(path.iter().map(|(_, v)| format!("PATH={}", v)));
    argv.extend([
        sb.binary().display().to_string(),
        RUNNER.into(),
        "--script-type".into(),
        kind.into(),
    ]);
    let out = sb.program(argv).envs(&env).output();
    assert_eq!(out.code(), Some(0), "the runner always exits 0: {:?}", out);
    out
}

fn startup(sb: &Sandbox) -> Output {
    run_type(sb, "startup", &[])
}

/// The messages the runner logged under `logger` (`startup-script`), level included.
fn runner_log(sb: &Sandbox, logger: &str) -> Vec<String> {
    let prefix = format!("{}: ", logger);
    sb.log_lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// What the script of metadata key `key` printed (INFO `<key>: <line>`), the return-code
/// line included, in order.
fn output_of(sb: &Sandbox, key: &str) -> Vec<String> {
    let logger = if key.starts_with("shutdown") {
        "shutdown-script"
    } else {
        "startup-script"
    };
    let prefix = format!("INFO {}: ", key);
    runner_log(sb, logger)
        .iter()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

/// Like [`output_of`], from the stderr copy of a run with `-d` (stderr blocks, so nothing
/// is dropped there, whereas syslog and the console drop lines when their queue is full).
fn debug_output(out: &Output, logger: &str, key: &str) -> Vec<String> {
    let prefix = format!("{}: INFO {}: ", logger, key);
    out.stderr_text()
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix).map(str::to_string))
        .collect()
}

fn warnings(sb: &Sandbox, logger: &str) -> Vec<String> {
    runner_log(sb, logger)
        .into_iter()
        .filter(|l| l.starts_with("WARNING") || l.starts_with("ERROR"))
        .collect()
}

fn has_line(sb: &Sandbox, logger: &str, line: &str) -> bool {
    runner_log(sb, logger).iter().any(|l| l == line)
}

fn show(sb: &Sandbox) -> String {
    sb.log_lines().join("\n")
}

/// One request the test server saw.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    path: String,
    host: String,
    auth: Option<String>,
}

fn server_requests(sb: &Sandbox) -> Vec<Seen> {
    sb.read_string(SERVER_LOG)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            Seen {
                path: f[0].to_string(),
                host: f[1].to_string(),
                auth: (f[2] != "-").then(|| f[2].to_string()),
            }
        })
        .collect()
}

fn bearer() -> Option<String> {
    Some(format!("Bearer {}", TOKEN))
}

/// Adds the web server's files (served from [`WWW`] by their base name) to a builder.
fn with_files(mut b: SandboxBuilder, files: &[(&str, &str)]) -> SandboxBuilder {
    b = b.file("/run/srv.py", SERVER, 0o644);
    for (name, body) in files {
        b = b.file(format!("{}/{}", WWW, name), body, 0o644);
    }
    b
}

/// Starts the test server inside on `port` (plain HTTP, or HTTPS with [`CERT`]).
fn start_server(sb: &Sandbox, port: u16, tls: bool) -> Daemon {
    let ready = format!("/run/srv-{}.ready", port);
    let mut argv = vec![
        "python3".to_string(),
        "/run/srv.py".into(),
        WWW.into(),
        port.to_string(),
        SERVER_LOG.into(),
        ready.clone(),
    ];
    if tls {
        argv.push(CERT.into());
        argv.push("/run/tls/key.pem".into());
    }
    let mut server = sb.program(argv).spawn();
    let up = sb.wait_until(Duration::from_secs(20), || sb.exists(&ready));
    if !up {
        let out = server.wait_timeout(Duration::from_millis(1)).map(|_| ());
        panic!(
            "the test server did not start ({:?}); is python3 installed?",
            out
        );
    }
    server
}

/// Makes a self-signed certificate for 127.0.0.1 inside (openssl).
fn make_cert(sb: &Sandbox) {
    crate::common::tool("openssl");
    sb.sh(
        "mkdir -p /run/tls && cd /run/tls && openssl req -x509 -newkey ec \
         -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout key.pem -out cert.pem -days 2 \
         -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>&1",
    )
    .assert_success();
}

fn storage_env(endpoint: &str) -> [(&'static str, String); 1] {
    [("GCE_GUEST_STORAGE_ENDPOINT", endpoint.to_string())]
}

fn env_refs<'a>(env: &'a [(&'a str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn local(path: &str) -> String {
    format!("http://127.0.0.1:{}{}", PORT, path)
}

// ---------------------------------------------------------------------------------------
// How scripts run and are logged.

#[test]
fn an_inline_script_is_logged_line_by_line_then_its_return_code() {
    let script = "\n\n   #!/bin/bash\n\
                  echo hello\n\
                  echo oops >&2\n\
                  echo\n\
                  printf 'no newline at the end'\n\
                  echo\n\
                  d=$(dirname \"$0\")\n\
                  echo \"dir=$d mode=$(stat -c %a \"$d\") file=$(stat -c %a \"$0\") pwd=$(pwd)\"\n\
                  exit 3";
    let sb = sandbox_or_skip!(sandbox(&[("startup-script", script)], &[]));
    let out = startup(&sb);
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "{:?}", out);
    let lines = output_of(&sb, "startup-script");
    assert_eq!(lines.len(), 5, "{}", show(&sb));
    assert_eq!(
        lines[..3],
        ["hello", "oops", "no newline at the end"],
        "empty lines skipped"
    );
    assert_eq!(lines[4], "Return code 3.");

    // A fresh 0700 directory under /run, the script made executable, the working directory
    // inherited from the runner (not the directory that is removed afterwards).
    let info = &lines[3];
    let dir = info
        .strip_prefix("dir=")
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    assert!(dir.starts_with("/run/startup-scripts."), "{}", info);
    assert!(info.contains(" mode=700 file=700 "), "{}", info);
    let cwd = sb.sh("pwd").stdout_text();
    assert!(
        info.ends_with(&format!("pwd={}", cwd.trim())),
        "{} vs {}",
        info,
        cwd
    );
    assert!(!sb.exists(dir), "the run directory is removed afterwards");

    let log = runner_log(&sb, "startup-script");
    assert_eq!(
        log.first().map(String::as_str),
        Some("INFO Starting startup scripts.")
    );
    assert!(
        log.contains(&"INFO Found startup-script in metadata.".to_string()),
        "{:?}",
        log
    );
    let last = log.last().unwrap();
    assert!(
        last.starts_with("INFO Finished running startup scripts in "),
        "{}",
        last
    );
    assert!(warnings(&sb, "startup-script").is_empty(), "{:?}", log);
}

#[test]
fn script_types_options_and_switches() {
    let sb = sandbox_or_skip!(sandbox(
        &[
            ("startup-script", "echo up"),
            ("shutdown-script", "echo down; kill -9 $$")
        ],
        &[]
    ));
    // The Go runner's positional form, and the type in any case (as Python compared it).
    let out = sb.run([RUNNER, "shutdown"]);
    out.assert_success();
    assert_eq!(
        output_of(&sb, "shutdown-script"),
        ["down", "Return code -9."],
        "{}",
        show(&sb)
    );
    assert!(
        output_of(&sb, "startup-script").is_empty(),
        "only shutdown scripts ran"
    );
    assert!(runner_log(&sb, "shutdown-script")
        .iter()
        .any(|l| l.starts_with("INFO Finished running shutdown scripts in ")));
    sb.run([RUNNER, "--script-type", "Startup"])
        .assert_success();
    assert_eq!(output_of(&sb, "startup-script"), ["up", "Return code 0."]);

    for bad in [
        vec![],
        vec!["--script-type", "reboot"],
        vec!["reboot"],
        vec!["startup", "shutdown"],
    ] {
        let mut argv = vec![RUNNER];
        argv.extend(bad.iter());
        let out = sb.run(&argv);
        assert_eq!(out.code(), Some(2), "{:?}", out);
        assert!(out.stderr_text().contains("startup|shutdown"), "{:?}", out);
    }

    // MetadataScripts.startup = false turns startup scripts off, not shutdown scripts.
    sb.write(CONFIG, "[MetadataScripts]\nstartup = false\n");
    sb.run([RUNNER, "startup"]).assert_success();
    assert_eq!(
        output_of(&sb, "startup-script").len(),
        2,
        "nothing more ran"
    );
    assert!(has_line(
        &sb,
        "startup-script",
        "INFO startup scripts are disabled in the configuration."
    ));
    sb.run([RUNNER, "shutdown"]).assert_success();
    assert_eq!(output_of(&sb, "shutdown-script").len(), 4);
    sb.write(CONFIG, "[MetadataScripts]\nshutdown = false\n");
    sb.run([RUNNER, "shutdown"]).assert_success();
    assert_eq!(output_of(&sb, "shutdown-script").len(), 4);
    assert!(has_line(
        &sb,
        "shutdown-script",
        "INFO shutdown scripts are disabled in the configuration."
    ));
}

#[test]
fn the_url_script_runs_first_and_instance_attributes_win_as_a_whole() {
    let files = [
        ("url.sh", "#!/bin/sh\necho from url\n"),
        ("project-url.sh", "echo project url\n"),
    ];
    let b = sandbox(
        &[
            ("startup-script", "echo inline"),
            ("startup-script-url", &local("/url.sh")),
        ],
        &[
            ("startup-script", "echo project inline"),
            ("startup-script-url", &local("/project-url.sh")),
        ],
    );
    let sb = sandbox_or_skip!(with_files(b, &files));
    let _server = start_server(&sb, PORT, false);
    startup(&sb);
    let all: Vec<String> = runner_log(&sb, "startup-script")
        .into_iter()
        .filter(|l| l.starts_with("INFO startup-script"))
        .collect();
    assert_eq!(
        all,
        [
            "INFO startup-script-url: from url",
            "INFO startup-script-url: Return code 0.",
            "INFO startup-script: inline",
            "INFO startup-script: Return code 0.",
        ],
        "{}",
        show(&sb)
    );

    // Instance level with only a URL that fails: the project's scripts still do not run
    // (all or nothing per level), and the failure is one warning.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/missing.sh"))],
        &[("startup-script", "echo project inline")],
    ));
    startup(&sb);
    assert!(
        !output_of(&sb, "startup-script")
            .iter()
            .any(|l| l.contains("project")),
        "{}",
        show(&sb)
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 1, "{:?}", warned);
    assert!(warned[0].contains("404"), "{:?}", warned);

    // No instance scripts (an empty one does not count): the project's, URL first.
    sb.emulator().set_metadata(&doc(
        &[
            ("startup-script", "  \n\t"),
            ("shutdown-script", "echo other type"),
        ],
        &[
            ("startup-script", "echo project inline"),
            ("startup-script-url", &local("/project-url.sh")),
        ],
    ));
    startup(&sb);
    let tail: Vec<String> = output_of(&sb, "startup-script")
        .into_iter()
        .rev()
        .take(2)
        .collect();
    assert_eq!(tail, ["Return code 0.", "project inline"]);
    let tail: Vec<String> = output_of(&sb, "startup-script-url")
        .into_iter()
        .rev()
        .take(2)
        .collect();
    assert_eq!(tail, ["Return code 0.", "project url"]);
    let lines = sb.log_lines();
    let url_at = lines
        .iter()
        .rposition(|l| l.ends_with("startup-script-url: project url"))
        .unwrap();
    let inline_at = lines
        .iter()
        .rposition(|l| l.ends_with("startup-script: project inline"))
        .unwrap();
    assert!(url_at < inline_at, "{}", show(&sb));
}

#[test]
fn a_shebang_is_honoured_and_sh_stands_in_for_a_missing_bash() {
    let python =
        "\n  #!/usr/bin/python3\nimport sys\nprint('python', sys.version_info[0])\nsys.exit(4)\n";
    let busybox =
        "#!/bin/busybox sh\necho \"busybox $((6 * 7))\"\nbusybox | head -n 1 | cut -c1-7\n";
    let plain = "echo \"bash=${BASH_VERSION:+yes}\"";
    let sb = sandbox_or_skip!(sandbox(
        &[("startup-script", python), ("shutdown-script", busybox)],
        &[]
    ));
    startup(&sb);
    assert_eq!(
        output_of(&sb, "startup-script"),
        ["python 3", "Return code 4."],
        "{}",
        show(&sb)
    );
    run_type(&sb, "shutdown", &[]);
    assert_eq!(
        output_of(&sb, "shutdown-script"),
        ["busybox 42", "BusyBox", "Return code 0."],
        "{}",
        show(&sb)
    );

    // No shebang: the default shell, bash.
    sb.emulator()
        .set_metadata(&doc(&[("startup-script", plain)], &[]));
    startup(&sb);
    assert_eq!(
        output_of(&sb, "startup-script")[2..],
        ["bash=yes", "Return code 0."]
    );

    // Where there is no bash, /bin/sh (bash is hidden in the sandbox's mount namespace).
    sb.sh("mount --bind /dev/null /bin/bash").assert_success();
    startup(&sb);
    assert_eq!(
        output_of(&sb, "startup-script")[4..],
        ["bash=", "Return code 0."],
        "{}",
        show(&sb)
    );
    assert!(
        warnings(&sb, "startup-script").is_empty(),
        "the default needs no warning"
    );

    // A configured default_shell that does not exist: a warning, then /bin/sh.
    sb.write(
        CONFIG,
        "[MetadataScripts]\ndefault_shell = /bin/nosuchshell\n",
    );
    startup(&sb);
    assert_eq!(
        output_of(&sb, "startup-script")[6..],
        ["bash=", "Return code 0."]
    );
    assert_eq!(warnings(&sb, "startup-script").len(), 1, "{}", show(&sb));
}

#[test]
fn a_script_that_backgrounds_a_child_does_not_hold_the_runner() {
    let script = "sleep 1234 &\necho \"child $!\"\n(sleep 1235 >/dev/null 2>&1 &)\nexit 0";
    let sb = sandbox_or_skip!(sandbox(&[("startup-script", script)], &[]));
    let start = Instant::now();
    startup(&sb);
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "the runner waited for the child: {:?}",
        took
    );
    let lines = output_of(&sb, "startup-script");
    assert_eq!(lines.len(), 2, "{}", show(&sb));
    assert_eq!(lines[1], "Return code 0.");
    // The children live on (the systemd unit's KillMode=process keeps them too).
    let pid = lines[0].strip_prefix("child ").unwrap();
    sb.program(["kill", "-0", pid]).output().assert_success();
    sb.program(["pgrep", "-f", "sleep 1235"])
        .output()
        .assert_success();
}

#[test]
fn a_hundred_thousand_lines_are_all_logged_in_order() {
    let sb = sandbox_or_skip!(sandbox(
        &[("startup-script", "seq 1 100000; echo done >&2")],
        &[]
    ));
    // -d also logs to stderr, which blocks (syslog and the console drop lines when full).
    let start = Instant::now();
    let out = sb.run([RUNNER, "-d", "--script-type", "startup"]);
    let took = start.elapsed();
    out.assert_success();
    let lines = debug_output(&out, "startup-script", "startup-script");
    assert_eq!(
        lines.len(),
        100_002,
        "{:?}",
        &lines[lines.len().saturating_sub(3)..]
    );
    for (i, line) in lines[..100_000].iter().enumerate() {
        assert_eq!(line.parse::<usize>().ok(), Some(i + 1), "line {}", i);
    }
    assert_eq!(lines[100_000..], ["done", "Return code 0."]);
    assert!(took < Duration::from_secs(30), "took {:?}", took);
    // Syslog got every one of them too, in order: a full syslog queue makes a line wait
    // briefly for room (log.rs) while the reader keeps up.
    let syslog = output_of(&sb, "startup-script");
    let logged: Vec<usize> = syslog.iter().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(logged.len(), 100_000, "syslog received {}", logged.len());
    assert!(
        logged.windows(2).all(|w| w[0] < w[1]),
        "out of order in syslog"
    );
    assert_eq!(syslog.last().map(String::as_str), Some("Return code 0."));
    println!("{:?} for 100,000 lines", took);
}

#[test]
fn binary_output_is_logged_not_fatal() {
    let script = "printf 'nul:\\000:ff:\\377:cr\\r\\n'\n\
                  echo begin-long\n\
                  head -c 20000 /dev/zero | tr '\\0' x\n\
                  echo\n\
                  echo end-long\n\
                  head -c 65536 /dev/urandom\n\
                  echo\n\
                  echo after";
    let sb = sandbox_or_skip!(sandbox(&[("startup-script", script)], &[]));
    // Exact content from the blocking stderr copy (-d): syslog may drop lines of a burst.
    let out = sb.run([RUNNER, "-d", "--script-type", "startup"]);
    out.assert_success();
    let lines = debug_output(&out, "startup-script", "startup-script");
    assert_eq!(
        lines.first().map(String::as_str),
        Some("nul:\\0:ff:\u{fffd}:cr"),
        "{:?}",
        lines.first()
    );
    assert_eq!(lines[lines.len() - 2..], ["after", "Return code 0."]);
    // A 20,000-byte line arrives whole, in pieces that each fit a log line.
    let begin = lines.iter().position(|l| l == "begin-long").unwrap();
    let end = lines.iter().position(|l| l == "end-long").unwrap();
    assert!(end - begin >= 4, "more than one piece");
    let xs: String = lines[begin + 1..end].concat();
    assert_eq!(xs, "x".repeat(20_000));
    assert!(
        lines.iter().all(|l| l.len() <= 8000 * 3),
        "pieces are bounded"
    );
    assert!(!out.stderr_text().contains("WARNING") && !out.stderr_text().contains("ERROR"));
}

#[test]
fn run_dir_is_created_when_missing_and_has_a_default() {
    let probe = "echo \"$(dirname \"$0\")\"";
    let sb = sandbox_or_skip!(sandbox(&[("startup-script", probe)], &[]).file(
        CONFIG,
        "[MetadataScripts]\nrun_dir = /var/lib/gs/scripts\n",
        0o644
    ));
    startup(&sb);
    let dir = output_of(&sb, "startup-script")[0].clone();
    assert!(
        dir.starts_with("/var/lib/gs/scripts/startup-scripts."),
        "{}",
        show(&sb)
    );
    assert!(sb.exists("/var/lib/gs/scripts") && !sb.exists(&dir));

    // Empty (what the configuration file holds by default): /run.
    sb.write(CONFIG, "[MetadataScripts]\nrun_dir =\n");
    startup(&sb);
    assert!(output_of(&sb, "startup-script")[2].starts_with("/run/startup-scripts."));

    // One that cannot be made: a warning and the default.
    sb.write(CONFIG, "[MetadataScripts]\nrun_dir = /proc/no/such\n");
    startup(&sb);
    let lines = output_of(&sb, "startup-script");
    assert!(
        lines[4].starts_with("/run/startup-scripts."),
        "{}",
        show(&sb)
    );
    assert_eq!(lines[5], "Return code 0.");
    let warned = warnings(&sb, "startup-script");
    assert!(
        warned.len() == 1 && warned[0].contains("/proc/no/such"),
        "{:?}",
        warned
    );
    assert!(
        sb.sh("ls -d /run/startup-scripts.* 2>/dev/null")
            .stdout
            .is_empty(),
        "all removed"
    );
}

#[test]
fn bad_input_empty_huge_and_malformed_urls() {
    let mut big = String::from("#!/bin/sh\necho start\n");
    while big.len() < 512 * 1024 {
        big.push_str("# padding padding padding padding padding padding padding padding padding\n");
    }
    big.push_str("echo end\n");
    let sb = sandbox_or_skip!(sandbox(
        &[
            ("startup-script", &big),
            ("startup-script-url", "https://example.com/a script.sh")
        ],
        &[]
    ));
    startup(&sb);
    assert_eq!(
        output_of(&sb, "startup-script"),
        ["start", "end", "Return code 0."],
        "{}",
        show(&sb)
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 1, "{:?}", warned);
    assert!(warned[0].contains("white space"), "{:?}", warned);

    for (url, why) in [
        ("example.com/s.sh", "no scheme"),
        ("ftp://example.com/s.sh", "not supported"),
        ("gs://bucket-only", "no bucket and object"),
    ] {
        sb.emulator().set_metadata(&doc(
            &[("startup-script-url", url), ("startup-script", "echo ok")],
            &[],
        ));
        let before = warnings(&sb, "startup-script").len();
        startup(&sb);
        let warned = warnings(&sb, "startup-script");
        assert_eq!(warned.len(), before + 1, "{:?}", warned);
        assert!(
            warned.last().unwrap().contains(why),
            "{}: {:?}",
            url,
            warned
        );
        assert_eq!(
            output_of(&sb, "startup-script").last().unwrap(),
            "Return code 0."
        );
    }

    // Empty and blank scripts are no scripts.
    sb.emulator().set_metadata(&doc(
        &[("startup-script", ""), ("startup-script-url", " ")],
        &[],
    ));
    startup(&sb);
    assert!(has_line(
        &sb,
        "startup-script",
        "INFO No startup scripts found in metadata."
    ));
}

#[test]
fn a_missing_metadata_server_ends_the_runner_with_a_clear_line() {
    let sb = sandbox_or_skip!(sandbox(&[("startup-script", "echo no")], &[]).file(
        CONFIG,
        "[InstanceSetup]\nnetwork_wait_s = 20\n",
        0o644
    ));
    let env = [("GCE_METADATA_HOST", "127.0.0.1:9")];
    for kind in ["startup", "shutdown"] {
        let start = Instant::now();
        run_type(&sb, kind, &env);
        let took = start.elapsed();
        // 20 s of waiting, under the sandbox's time scale of 0.05.
        assert!(took < Duration::from_secs(5), "{} took {:?}", kind, took);
        let logger = format!("{}-script", kind);
        let errors = warnings(&sb, &logger);
        assert_eq!(errors.len(), 1, "{}", show(&sb));
        assert!(
            errors[0].starts_with("ERROR Cannot read metadata") && errors[0].contains("giving up"),
            "{:?}",
            errors
        );
        assert!(runner_log(&sb, &logger)
            .last()
            .unwrap()
            .starts_with("INFO Finished running"));
    }
}

// ---------------------------------------------------------------------------------------
// URLs against a local plain-HTTP server.

#[test]
fn storage_forms_carry_the_token_and_other_hosts_do_not() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo storage object")]);
    let sb = sandbox_or_skip!(b);
    let _server = start_server(&sb, PORT, false);
    let env = storage_env(&local(""));
    let env = env_refs(&env);
    let forms = [
        "gs://bucket/dir/obj.sh",
        "https://bucket.storage.googleapis.com/dir/obj.sh",
        "https://storage.googleapis.com/bucket/dir/obj.sh",
        "https://storage.cloud.google.com/bucket/dir/obj.sh",
    ];
    for (i, url) in forms.iter().enumerate() {
        sb.emulator()
            .set_metadata(&doc(&[("startup-script-url", url)], &[]));
        run_type(&sb, "startup", &env);
        let seen = server_requests(&sb);
        assert_eq!(seen.len(), i + 1, "{}: {:?}", url, seen);
        assert_eq!(seen[i].path, "/bucket/dir/obj.sh", "{}", url);
        assert_eq!(seen[i].auth, bearer(), "{}", url);
        assert_eq!(
            output_of(&sb, "startup-script-url").len(),
            2 * (i + 1),
            "{}",
            show(&sb)
        );
    }
    // Any other address: fetched as it is, without the token.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/plain/obj.sh"))],
        &[],
    ));
    run_type(&sb, "startup", &env);
    let last = server_requests(&sb).pop().unwrap();
    assert_eq!((last.path.as_str(), last.auth), ("/plain/obj.sh", None));
    assert_eq!(output_of(&sb, "startup-script-url").len(), 10);
    assert!(warnings(&sb, "startup-script").is_empty(), "{}", show(&sb));
}

#[test]
fn the_anonymous_fallback() {
    let b = with_files(
        Sandbox::builder().metadata(&doc_with_account(
            &[("startup-script-url", "gs://b/obj.sh")],
            &[],
            false,
        )),
        &[("obj.sh", "echo public object")],
    );
    let sb = sandbox_or_skip!(b);
    let _server = start_server(&sb, PORT, false);

    // No service account: one anonymous request.
    let env = storage_env(&local(""));
    run_type(&sb, "startup", &env_refs(&env));
    assert_eq!(
        server_requests(&sb),
        [Seen {
            path: "/b/obj.sh".into(),
            host: format!("127.0.0.1:{}", PORT),
            auth: None
        }]
    );
    assert!(has_line(
        &sb,
        "startup-script",
        "INFO Authentication token not found. Attempting unauthenticated download."
    ));
    assert_eq!(
        output_of(&sb, "startup-script-url"),
        ["public object", "Return code 0."]
    );

    // A token the storage refuses: the same request again without it.
    sb.emulator()
        .set_metadata(&doc(&[("startup-script-url", "gs://b/obj.sh")], &[]));
    let env = storage_env(&local("/deny-token"));
    run_type(&sb, "startup", &env_refs(&env));
    let seen = server_requests(&sb);
    assert_eq!(seen.len(), 3, "{:?}", seen);
    assert_eq!(
        (seen[1].path.as_str(), seen[1].auth.clone()),
        ("/deny-token/b/obj.sh", bearer())
    );
    assert_eq!(
        (seen[2].path.as_str(), seen[2].auth.clone()),
        ("/deny-token/b/obj.sh", None)
    );
    assert_eq!(
        output_of(&sb, "startup-script-url")[2..],
        ["public object", "Return code 0."]
    );
    assert!(warnings(&sb, "startup-script").is_empty(), "{}", show(&sb));
}

#[test]
fn a_404_is_one_warning_and_retries_are_for_transient_failures() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo third time lucky")]);
    let sb = sandbox_or_skip!(b);
    let _server = start_server(&sb, PORT, false);

    // A plain 404: one request, one warning, the inline script still runs.
    sb.emulator().set_metadata(&doc(
        &[
            ("startup-script-url", &local("/status/404/x.sh")),
            ("startup-script", "echo inline"),
        ],
        &[],
    ));
    run_type(&sb, "startup", &[]);
    assert_eq!(server_requests(&sb).len(), 1);
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 1, "{:?}", warned);
    assert!(
        warned[0].starts_with("WARNING Failed to download startup-script-url:")
            && warned[0].contains("HTTP 404"),
        "{:?}",
        warned
    );
    assert_eq!(
        output_of(&sb, "startup-script"),
        ["inline", "Return code 0."]
    );

    // A storage 404: with the token, then once without; still one warning naming both.
    sb.emulator()
        .set_metadata(&doc(&[("startup-script-url", "gs://b/x.sh")], &[]));
    let env = storage_env(&local("/status/404"));
    run_type(&sb, "startup", &env_refs(&env));
    let seen = server_requests(&sb);
    assert_eq!(seen.len(), 3, "{:?}", seen);
    assert_eq!(
        (seen[1].auth.clone(), seen[2].auth.clone()),
        (bearer(), None)
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 2, "{:?}", warned);
    assert!(
        warned[1].contains("HTTP 404 with the service account's token and HTTP 404 without"),
        "{:?}",
        warned
    );

    // 503 twice, then the object: three tries.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/flaky/2/obj.sh"))],
        &[],
    ));
    run_type(&sb, "startup", &[]);
    assert_eq!(server_requests(&sb).len(), 6);
    assert_eq!(
        output_of(&sb, "startup-script-url"),
        ["third time lucky", "Return code 0."]
    );
    assert_eq!(warnings(&sb, "startup-script").len(), 2);

    // 503 for ever: three tries, then one warning.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/flaky/99/obj.sh"))],
        &[],
    ));
    run_type(&sb, "startup", &[]);
    assert_eq!(server_requests(&sb).len(), 9);
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 3, "{:?}", warned);
    assert!(
        warned[2].contains("HTTP 503") && warned[2].contains("3 tries"),
        "{:?}",
        warned
    );
}

#[test]
fn a_slow_server_is_waited_for_within_bounds() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo slow but sure")]);
    let sb = sandbox_or_skip!(b);
    let _server = start_server(&sb, PORT, false);
    // Under a time scale of 0.01 one attempt may take 1 s (60 s unscaled).
    let scale = 0.01;
    let run = |sb: &Sandbox| {
        let start = Instant::now();
        let out = sb.cmd([RUNNER, "startup"]).time_scale(scale).output();
        out.assert_success();
        start.elapsed()
    };

    // Slow, within the limit: fetched.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/sleep/0.3/obj.sh"))],
        &[],
    ));
    run(&sb);
    assert_eq!(
        output_of(&sb, "startup-script-url"),
        ["slow but sure", "Return code 0."],
        "{}",
        show(&sb)
    );

    // A server that never answers, and one that trickles a byte at a time: each attempt
    // is cut off at the limit, three tries, one warning, and the runner goes on.
    for (path, n) in [("/sleep/60/obj.sh", 2), ("/trickle/obj.sh", 3)] {
        sb.emulator().set_metadata(&doc(
            &[
                ("startup-script-url", &local(path)),
                ("startup-script", "echo next"),
            ],
            &[],
        ));
        let took = run(&sb);
        assert!(took < Duration::from_secs(8), "{}: {:?}", path, took);
        assert!(
            took >= Duration::from_secs(3),
            "{}: three 1 s attempts took only {:?}",
            path,
            took
        );
        let warned = warnings(&sb, "startup-script");
        assert_eq!(warned.len(), n - 1, "{}: {:?}", path, warned);
        assert!(warned[n - 2].contains("3 tries"), "{:?}", warned);
        assert_eq!(
            output_of(&sb, "startup-script").last().unwrap(),
            "Return code 0."
        );
        let tries = server_requests(&sb)
            .iter()
            .filter(|r| r.path == path)
            .count();
        assert_eq!(tries, 3, "{}", path);
    }
}

#[test]
fn redirects_never_carry_the_token() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo redirected")]);
    let sb = sandbox_or_skip!(b);
    let _server = start_server(&sb, PORT, false);

    // A storage answer redirecting elsewhere: not followed with the token; the anonymous
    // retry follows it (without the token).
    sb.emulator()
        .set_metadata(&doc(&[("startup-script-url", "gs://b/obj.sh")], &[]));
    let env = storage_env(&local("/redirect/127.0.0.2"));
    run_type(&sb, "startup", &env_refs(&env));
    let seen = server_requests(&sb);
    assert_eq!(seen.len(), 3, "{:?}", seen);
    assert_eq!(seen[0].auth, bearer());
    assert_eq!(seen[1].auth, None);
    assert_eq!(
        (seen[2].host.as_str(), seen[2].auth.clone()),
        (&*format!("127.0.0.2:{}", PORT), None)
    );
    assert_eq!(
        output_of(&sb, "startup-script-url"),
        ["redirected", "Return code 0."],
        "{}",
        show(&sb)
    );

    // A plain URL's redirect is followed.
    sb.emulator().set_metadata(&doc(
        &[("startup-script-url", &local("/redirect/127.0.0.3/x/obj.sh"))],
        &[],
    ));
    run_type(&sb, "startup", &[]);
    let last = server_requests(&sb).pop().unwrap();
    assert_eq!(
        (last.host.as_str(), last.path.as_str()),
        (&*format!("127.0.0.3:{}", PORT), "/x/obj.sh")
    );
    assert_eq!(output_of(&sb, "startup-script-url").len(), 4);
}

// ---------------------------------------------------------------------------------------
// HTTPS.

#[test]
fn built_in_tls_refuses_a_self_signed_certificate() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo must not run")]);
    let sb = sandbox_or_skip!(b);
    make_cert(&sb);
    let _server = start_server(&sb, TLS_PORT, true);
    let url = format!("https://127.0.0.1:{}/obj.sh", TLS_PORT);
    sb.emulator().set_metadata(&doc(
        &[
            ("startup-script-url", &url),
            ("startup-script", "echo inline"),
        ],
        &[],
    ));
    // Even with the certificate in every CA bundle variable: the built-in roots only.
    let env = [("SSL_CERT_FILE", CERT), ("CURL_CA_BUNDLE", CERT)];
    let start = Instant::now();
    run_type(&sb, "startup", &env);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "a certificate error is not retried for long"
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 1, "{}", show(&sb));
    assert!(
        warned[0].contains("certificate") && warned[0].contains("not trusted"),
        "{:?}",
        warned
    );
    assert!(
        server_requests(&sb).is_empty(),
        "no request got through the handshake"
    );
    assert!(output_of(&sb, "startup-script-url").is_empty());
    assert_eq!(
        output_of(&sb, "startup-script"),
        ["inline", "Return code 0."]
    );

    // The same for a storage endpoint: the token never leaves over an untrusted connection.
    sb.emulator()
        .set_metadata(&doc(&[("startup-script-url", "gs://b/obj.sh")], &[]));
    let env = storage_env(&format!("https://127.0.0.1:{}", TLS_PORT));
    run_type(&sb, "startup", &env_refs(&env));
    assert_eq!(warnings(&sb, "startup-script").len(), 2);
    assert!(server_requests(&sb).is_empty());
}

/// A wrapper that records its arguments, then runs the real program.
fn recorder(real: &str, log: &str) -> String {
    format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}\nexec {} \"$@\"\n",
        log, real
    )
}

#[test]
fn without_built_in_tls_curl_then_gnu_wget_with_the_trust_the_system_gives() {
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", "echo over external tls")])
        .file(
            "/run/bin-curl/curl",
            recorder("/usr/bin/curl", "/run/curl.argv"),
            0o755,
        )
        .file(
            "/run/bin-wget/wget",
            recorder("/usr/bin/wget", "/run/wget.argv"),
            0o755,
        )
        .file(
            "/run/bin-busybox/wget",
            "#!/bin/sh\nexec /bin/busybox wget \"$@\"\n",
            0o755,
        )
        .file("/run/bin-none/.keep", "", 0o644)
        .file("/run/wgetrc", format!("ca_certificate = {}\n", CERT), 0o644);
    let sb = sandbox_or_skip!(b);
    make_cert(&sb);
    let _server = start_server(&sb, TLS_PORT, true);
    let endpoint = format!("https://127.0.0.1:{}", TLS_PORT);
    sb.emulator()
        .set_metadata(&doc(&[("startup-script-url", "gs://b/obj.sh")], &[]));
    let external = ("GCE_GUEST_HTTPS_VIA", "external");
    let storage = ("GCE_GUEST_STORAGE_ENDPOINT", endpoint.as_str());
    let ok_runs = |sb: &Sandbox| {
        output_of(sb, "startup-script-url")
            .iter()
            .filter(|l| *l == "over external tls")
            .count()
    };

    // curl, trusting the certificate through CURL_CA_BUNDLE: the token reaches the server,
    // but never curl's command line (other users can read that in /proc).
    run_type(
        &sb,
        "startup",
        &[
            external,
            storage,
            ("PATH", "/run/bin-curl"),
            ("CURL_CA_BUNDLE", CERT),
        ],
    );
    assert_eq!(ok_runs(&sb), 1, "{}", show(&sb));
    assert!(has_line(
        &sb,
        "startup-script",
        "INFO HTTPS through curl or wget (GCE_GUEST_HTTPS_VIA=external, a test setting)."
    ));
    assert_eq!(server_requests(&sb).last().unwrap().auth, bearer());
    let argv = sb.read_string("/run/curl.argv").unwrap();
    assert!(
        argv.contains(&format!("{}/b/obj.sh", endpoint)) && !argv.contains(TOKEN),
        "{}",
        argv
    );

    // curl without the trust: refused, a clear warning, and the inline path goes on.
    run_type(
        &sb,
        "startup",
        &[external, storage, ("PATH", "/run/bin-curl")],
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 1, "{}", show(&sb));
    assert!(
        warned[0].contains("certificate") && warned[0].contains("not trusted"),
        "{:?}",
        warned
    );

    // GNU wget where there is no curl, trusting the certificate through WGETRC.
    run_type(
        &sb,
        "startup",
        &[
            external,
            storage,
            ("PATH", "/run/bin-wget"),
            ("WGETRC", "/run/wgetrc"),
        ],
    );
    assert_eq!(ok_runs(&sb), 2, "{}", show(&sb));
    assert_eq!(server_requests(&sb).last().unwrap().auth, bearer());
    let argv = sb.read_string("/run/wget.argv").unwrap();
    assert!(
        argv.contains("/b/obj.sh") && !argv.contains(TOKEN),
        "{}",
        argv
    );
    run_type(
        &sb,
        "startup",
        &[external, storage, ("PATH", "/run/bin-wget")],
    );
    let warned = warnings(&sb, "startup-script");
    assert_eq!(warned.len(), 2, "{}", show(&sb));
    assert!(warned[1].contains("not trusted"), "{:?}", warned);

    // busybox wget checks no certificates: refused, saying why; nothing at all: said too.
    let before = server_requests(&sb).len();
    run_type(
        &sb,
        "startup",
        &[external, storage, ("PATH", "/run/bin-busybox")],
    );
    let warned = warnings(&sb, "startup-script");
    assert!(
        warned[2].contains("not GNU wget") && warned[2].contains("busybox"),
        "{:?}",
        warned
    );
    run_type(
        &sb,
        "startup",
        &[external, storage, ("PATH", "/run/bin-none")],
    );
    let warned = warnings(&sb, "startup-script");
    assert!(warned[3].contains("neither curl nor wget"), "{:?}", warned);
    assert_eq!(warned.len(), 4);
    assert_eq!(server_requests(&sb).len(), before);
}

/// A script whose download is cut short is never run: `rm -rf /run/victim/cache-to-clear`
/// cut after `rm -rf /run/victim/` would delete the whole directory. Through the built-in
/// client (Content-Length and chunked), curl and GNU wget: three tries, one warning, and
/// the directory is still there.
#[test]
fn a_script_cut_short_is_never_run() {
    const SCRIPT: &str = "rm -rf /run/victim/cache-to-clear\n";
    let cut = SCRIPT.find("cache").unwrap();
    let b = with_files(sandbox(&[], &[]), &[("obj.sh", SCRIPT)])
        .file("/run/victim/keep", "precious", 0o644)
        .file("/run/wgetrc", format!("ca_certificate = {}\n", CERT), 0o644)
        .file(
            "/run/bin-curl/curl",
            "#!/bin/sh\nexec /usr/bin/curl \"$@\"\n",
            0o755,
        )
        .file(
            "/run/bin-wget/wget",
            "#!/bin/sh\nexec /usr/bin/wget \"$@\"\n",
            0o755,
        );
    let sb = sandbox_or_skip!(b);
    make_cert(&sb);
    let _server = start_server(&sb, PORT, false);
    let _tls_server = start_server(&sb, TLS_PORT, true);
    let external = ("GCE_GUEST_HTTPS_VIA", "external");
    let tls_url = |mode: &str| format!("https://127.0.0.1:{}/{}/{}/obj.sh", TLS_PORT, mode, cut);
    let ways: Vec<(String, Vec<(&str, &str)>)> = vec![
        (local(&format!("/cut/{}/obj.sh", cut)), vec![]),
        (local(&format!("/cut-chunked/{}/obj.sh", cut)), vec![]),
        (
            tls_url("cut"),
            vec![
                external,
                ("PATH", "/run/bin-curl"),
                ("CURL_CA_BUNDLE", CERT),
            ],
        ),
        (
            tls_url("cut-chunked"),
            vec![
                external,
                ("PATH", "/run/bin-curl"),
                ("CURL_CA_BUNDLE", CERT),
            ],
        ),
        (
            tls_url("cut"),
            vec![
                external,
                ("PATH", "/run/bin-wget"),
                ("WGETRC", "/run/wgetrc"),
            ],
        ),
        (
            tls_url("cut-chunked"),
            vec![
                external,
                ("PATH", "/run/bin-wget"),
                ("WGETRC", "/run/wgetrc"),
            ],
        ),
    ];
    for (n, (url, env)) in ways.iter().enumerate() {
        sb.emulator()
            .set_metadata(&doc(&[("startup-script-url", url.as_str())], &[]));
        run_type(&sb, "startup", env);
        assert_eq!(
            sb.read_string("/run/victim/keep").as_deref(),
            Some("precious"),
            "{} {:?}: the cut script ran\n{}",
            url,
            env,
            show(&sb)
        );
        assert_eq!(
            server_requests(&sb).len(),
            3 * (n + 1),
            "{}\n{}",
            url,
            show(&sb)
        );
        let warned = warnings(&sb, "startup-script");
        assert_eq!(warned.len(), n + 1, "{}\n{:?}", url, warned);
        assert!(warned[n].contains("3 tries"), "{}: {:?}", url, warned);
    }
    assert!(
        output_of(&sb, "startup-script-url").is_empty(),
        "{}",
        show(&sb)
    );
}

/// A run directory mounted `noexec` (common hardening: the original runner and the Go one
/// fail there with "Permission denied"): the runner reads the `#!` line itself and runs
/// the interpreter on the file, or the default shell on it, so both scripts run.
#[test]
fn scripts_run_from_a_noexec_run_dir() {
    let sb = sandbox_or_skip!(sandbox(
        &[
            ("startup-script-url", &local("/obj.sh")),
            ("startup-script", "echo \"inline in $(dirname \"$0\")\""),
        ],
        &[]
    ));
    sb.sh("set -e; mkdir -p /run/www /run/noexec; mount -t tmpfs -o noexec,nosuid,nodev tmpfs /run/noexec")
        .assert_success();
    sb.write("/run/www/obj.sh", "#!/bin/sh -e\necho \"url under $0\"\n");
    sb.write("/run/srv.py", SERVER);
    let _server = start_server(&sb, PORT, false);
    sb.write(CONFIG, "[MetadataScripts]\nrun_dir = /run/noexec\n");
    startup(&sb);
    let url_out = output_of(&sb, "startup-script-url");
    assert_eq!(url_out.len(), 2, "{}", show(&sb));
    assert!(
        url_out[0].starts_with("url under /run/noexec/"),
        "{}",
        show(&sb)
    );
    assert_eq!(url_out[1], "Return code 0.");
    let inline = output_of(&sb, "startup-script");
    assert_eq!(inline.len(), 2, "{}", show(&sb));
    assert!(
        inline[0].starts_with("inline in /run/noexec/"),
        "{}",
        show(&sb)
    );
    assert_eq!(inline[1], "Return code 0.");
}

/// A value from metadata cannot forge a log line: a newline in `startup-script-url` is
/// logged escaped, on the one line that quotes it.
#[test]
fn a_newline_in_a_url_cannot_forge_a_log_line() {
    const FORGED: &str = "google-accounts: INFO Creating a new user account for eve.";
    let url = format!("http://127.0.0.1:9/x.sh\n{}", FORGED);
    let sb = sandbox_or_skip!(sandbox(&[("startup-script-url", url.as_str())], &[]));
    startup(&sb);
    let lines = sb.log_lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.starts_with(FORGED) || l.contains(&format!("\n{}", FORGED))),
        "{:#?}",
        lines
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("startup-script: WARNING")
                && l.contains(&format!("x.sh\\n{}", FORGED))),
        "{:#?}",
        lines
    );
}
