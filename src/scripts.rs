//! The metadata script runner: startup and shutdown scripts from instance (else project)
//! attributes — `<type>-script-url` first, then `<type>-script` — each written to a fresh
//! 0700 directory, run as `<default_shell> -c <path>` (so a shebang works), its merged
//! output logged line by line as `<key>: <line>` and then `<key>: Return code <n>.`.
//!
//! Scripts inherit the runner's working directory and environment (as in Python); output
//! lines longer than a log line are logged in pieces; a script ended by a signal shows a
//! negative return code (as Python's `Popen.wait()` gave it).
//!
//! URL scripts come from Cloud Storage with the instance's service-account token (falling
//! back to an anonymous request when the storage refuses the token, redirects included:
//! the token never follows a redirect) or from any other http(s) address. Transient
//! failures are tried three times with backoff, each attempt bounded. HTTPS is built in
//! with the `tls` feature (rustls with compiled-in roots, so no CA bundle is needed),
//! otherwise handed to the image's `curl` or GNU `wget` (busybox wget checks no
//! certificates and is refused), with the token in a 0600 file rather than on a command
//! line.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::error::{Error, Result};
use crate::mds::{self, Client};
use crate::settings::ScriptSettings;
use crate::timing::{scaled, scaled_secs, Backoff};

/// Test-only: replaces `https://storage.googleapis.com` (for a local server in tests).
pub const STORAGE_ENDPOINT_ENV: &str = "GCE_GUEST_STORAGE_ENDPOINT";
/// Test-only: `external` sends `https://` downloads to `curl` or `wget` even in a build
/// with built-in TLS, so tests exercise the path a build without the `tls` feature takes.
/// A run where it is in effect says so in an INFO line.
pub const HTTPS_VIA_ENV: &str = "GCE_GUEST_HTTPS_VIA";
const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
const DOWNLOAD_TRIES: u32 = 3;
/// Seconds one download attempt may take in all (scaled).
const DOWNLOAD_TIMEOUT_SEC: u64 = 60;
const MAX_REDIRECTS: usize = 5;
const MAX_SCRIPT: u64 = 64 << 20;
/// How long shutdown waits for the metadata server (scaled); startup uses `network_wait_s`.
const SHUTDOWN_METADATA_WAIT_SEC: u64 = 20;
/// The longest piece of an output line one log record carries (the log line limit is
/// 8192 bytes, key and level included).
const LOG_PIECE: usize = 8000;

/// Which scripts to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScriptType {
    Startup,
    Shutdown,
}

impl ScriptType {
    /// `startup` or `shutdown`.
    pub fn name(self) -> &'static str {
        match self {
            ScriptType::Startup => "startup",
            ScriptType::Shutdown => "shutdown",
        }
    }

    /// Parses `startup` or `shutdown`, in any case (as Python compared them).
    pub fn parse(s: &str) -> Option<ScriptType> {
        match s.to_ascii_lowercase().as_str() {
            "startup" => Some(ScriptType::Startup),
            "shutdown" => Some(ScriptType::Shutdown),
            _ => None,
        }
    }

    /// The logger name the original used: `startup-script` or `shutdown-script`.
    pub fn logger(self) -> &'static str {
        match self {
            ScriptType::Startup => "startup-script",
            ScriptType::Shutdown => "shutdown-script",
        }
    }
}

/// Where a script comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Text straight from the attribute.
    Inline(String),
    /// An address to download it from.
    Url(String),
}

/// One script to run, named by its metadata key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Script {
    /// The attribute it came from (`startup-script-url`, `startup-script`).
    pub key: String,
    /// Its content or address.
    pub source: Source,
}

/// The scripts of `kind` in a metadata document, in the order they run: instance
/// attributes if they have any of them, else project attributes; the URL one first.
pub fn scripts_in(doc: &JsonValue, kind: ScriptType) -> Vec<Script> {
    let from = |scope: &str| -> Vec<Script> {
        let mut found = Vec::new();
        let url_key = format!("{}-script-url", kind.name());
        let text_key = format!("{}-script", kind.name());
        if let Some(url) = mds::lookup_str(doc, &format!("{}/attributes/{}", scope, url_key)) {
            if !url.trim().is_empty() {
                found.push(Script {
                    key: url_key,
                    source: Source::Url(url.trim().to_string()),
                });
            }
        }
        if let Some(text) = mds::lookup_str(doc, &format!("{}/attributes/{}", scope, text_key)) {
            let text = text.trim_start();
            if !text.is_empty() {
                found.push(Script {
                    key: text_key,
                    source: Source::Inline(text.to_string()),
                });
            }
        }
        found
    };
    let instance = from("instance");
    if instance.is_empty() {
        from("project")
    } else {
        instance
    }
}

/// Where a URL is really fetched from, and whether it is a Cloud Storage object (which
/// gets the instance's token).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// The address to GET.
    pub url: String,
    /// Cloud Storage: send `Authorization: Bearer <token>`.
    pub storage: bool,
}

/// Maps the accepted URL forms onto what is fetched; `Err` says why a URL is refused.
pub fn resolve_url(url: &str, storage_endpoint: &str) -> std::result::Result<Download, String> {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains white space".into());
    }
    let storage = |bucket_and_object: &str| -> std::result::Result<Download, String> {
        let (bucket, object) = bucket_and_object
            .split_once('/')
            .unwrap_or((bucket_and_object, ""));
        if bucket.is_empty() || object.is_empty() {
            return Err("it names no bucket and object".into());
        }
        Ok(Download {
            url: format!(
                "{}/{}/{}",
                storage_endpoint.trim_end_matches('/'),
                bucket,
                object
            ),
            storage: true,
        })
    };
    if let Some(rest) = url.strip_prefix("gs://") {
        return storage(rest);
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it has no scheme (gs://, https:// or http://)".into());
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!("scheme {} is not supported", scheme));
    }
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() {
        return Err("it names no host".into());
    }
    match host {
        "storage.googleapis.com"
        | "storage.cloud.google.com"
        | "commondatastorage.googleapis.com" => storage(path),
        _ => match host.strip_suffix(".storage.googleapis.com") {
            Some(bucket) if !bucket.is_empty() => storage(&format!("{}/{}", bucket, path)),
            _ => Ok(Download {
                url: url.to_string(),
                storage: false,
            }),
        },
    }
}

fn storage_endpoint() -> String {
    std::env::var(STORAGE_ENDPOINT_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| STORAGE_ENDPOINT.into())
}

/// Whether `https://` addresses go to `curl` or `wget`: always without the `tls` feature;
/// with it only when the test-only [`HTTPS_VIA_ENV`] says `external`.
fn https_external() -> bool {
    !cfg!(feature = "tls") || std::env::var(HTTPS_VIA_ENV).is_ok_and(|v| v == "external")
}

/// Whether `token` can go into a header (and a curl or wget configuration line) as is.
fn token_is_clean(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

/// The service account's access token, if the metadata server gives a usable one.
fn access_token(client: &Client) -> Option<String> {
    let reply = client
        .get_raw(
            "instance/service-accounts/default/token",
            scaled_secs(mds::REQUEST_TIMEOUT_SEC),
        )
        .ok()??;
    let token = mds::lookup_str(&mds::json_body(&reply).ok()?, "access_token")?.to_string();
    if !token_is_clean(&token) {
        warn!("The service account's access token has characters a header cannot carry; not using it.");
        return None;
    }
    Some(token)
}

/// What one fetch attempt ended with.
#[derive(Debug)]
enum Attempt {
    Body(Vec<u8>),
    /// An HTTP status that retrying will not change (3xx not followed, 4xx but 429).
    Refused(u16),
    /// Worth another try: no connection, a timeout, 429 or 5xx.
    Transient(String),
    /// Will not get better by retrying: a certificate not trusted, no way to fetch, too big.
    Failed(String),
}

fn status_attempt(url: &str, code: u16) -> Attempt {
    match code {
        429 | 500..=599 => Attempt::Transient(format!("{} answered HTTP {}", url, code)),
        code => Attempt::Refused(code),
    }
}

fn too_large(url: &str) -> Attempt {
    Attempt::Failed(format!("{} is larger than {} MiB", url, MAX_SCRIPT >> 20))
}

fn fetch_builtin(url: &str, token: Option<&str>) -> Attempt {
    use std::io::Read;
    let req = minreq::get(url).with_timeout(scaled_secs(DOWNLOAD_TIMEOUT_SEC));
    let req = match token {
        // The token is for Cloud Storage alone: a redirect elsewhere must not carry it.
        Some(t) => req
            .with_header("Authorization", format!("Bearer {}", t))
            .with_follow_redirects(false),
        None => req.with_max_redirects(MAX_REDIRECTS),
    };
    let mut resp = match req.send_lazy() {
        Ok(resp) => resp,
        Err(minreq::Error::HttpsFeatureNotEnabled) => {
            return Attempt::Failed(format!(
                "{} leads to an https:// address and this build has no built-in TLS",
                url
            ))
        }
        Err(e) => {
            let text = e.to_string();
            if text.to_ascii_lowercase().contains("certificate") {
                return Attempt::Failed(format!(
                    "the TLS certificate of {} is not trusted: {}",
                    url, text
                ));
            }
            return Attempt::Transient(format!("cannot fetch {}: {}", url, text));
        }
    };
    if !(200..=299).contains(&resp.status_code) {
        return status_attempt(url, resp.status_code);
    }
    let mut body = Vec::new();
    if let Err(e) = (&mut resp).take(MAX_SCRIPT + 1).read_to_end(&mut body) {
        return Attempt::Transient(format!("cannot fetch {}: {}", url, e));
    }
    if body.len() as u64 > MAX_SCRIPT {
        return too_large(url);
    }
    Attempt::Body(body)
}

/// Writes `text` to a new file only root can read (in the 0700 run directory anyway).
fn write_private(path: &Path, text: &str) -> std::result::Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let _ = std::fs::remove_file(path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {}", path.display(), e))
}

/// HTTPS without built-in TLS: `curl`, else GNU `wget` (busybox's does not check
/// certificates). The token travels in a 0600 configuration file in the run directory,
/// never on a command line other users can read in /proc.
fn fetch_external(url: &str, token: Option<&str>, scratch: &Path) -> Attempt {
    let out = scratch.join(".download");
    let conf = scratch.join(".fetch.conf");
    let _ = std::fs::remove_file(&out);
    let result = if let Some(curl) = crate::exec::find_program("curl") {
        fetch_curl(&curl, url, token, &out, &conf)
    } else {
        match crate::exec::find_program("wget") {
            Some(wget) if is_gnu_wget(&wget) => fetch_wget(&wget, url, token, &out, &conf),
            Some(wget) => Attempt::Failed(format!(
                "cannot fetch {}: this build has no built-in TLS, the image has no curl, and {} is not GNU wget \
                 (busybox wget does not check TLS certificates)",
                url,
                wget.display()
            )),
            None => Attempt::Failed(format!(
                "cannot fetch {}: this build has no built-in TLS and the image has neither curl nor wget",
                url
            )),
        }
    };
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&conf);
    result
}

fn read_download(url: &str, out: &Path) -> Attempt {
    match std::fs::metadata(out) {
        Ok(m) if m.len() > MAX_SCRIPT => too_large(url),
        _ => match std::fs::read(out) {
            Ok(body) => Attempt::Body(body),
            // curl writes no file for an empty body.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Attempt::Body(Vec::new()),
            Err(e) => Attempt::Failed(format!("cannot read {}: {}", out.display(), e)),
        },
    }
}

/// The external program's whole run may last the download timeout and a little more.
fn external_deadline() -> Duration {
    scaled(Duration::from_secs(DOWNLOAD_TIMEOUT_SEC + 10))
}

const CURL_STATUS_MARK: &str = "gce-guest-http-status:";

fn fetch_curl(curl: &Path, url: &str, token: Option<&str>, out: &Path, conf: &Path) -> Attempt {
    let timeout = scaled_secs(DOWNLOAD_TIMEOUT_SEC).to_string();
    let mut cmd = std::process::Command::new(curl);
    cmd.args([
        "-sS",
        "--proto",
        "=http,https",
        "--max-time",
        &timeout,
        "-o",
    ])
    .arg(out);
    cmd.args(["-w", &format!("\n{}%{{http_code}}\n", CURL_STATUS_MARK)]);
    match token {
        Some(t) => {
            if let Err(e) =
                write_private(conf, &format!("header = \"Authorization: Bearer {}\"\n", t))
            {
                return Attempt::Failed(e);
            }
            cmd.arg("-K").arg(conf);
        }
        None => {
            cmd.args(["-L", "--max-redirs", &MAX_REDIRECTS.to_string()]);
        }
    }
    cmd.arg(url);
    let res = match crate::exec::run(cmd, external_deadline()) {
        Ok(res) => res,
        Err(e) => return Attempt::Failed(format!("cannot run curl: {}", e)),
    };
    let text = res.text();
    let status = text
        .lines()
        .find_map(|l| l.trim().strip_prefix(CURL_STATUS_MARK)?.parse::<u16>().ok());
    let said: String = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains(CURL_STATUS_MARK))
        .collect::<Vec<_>>()
        .join(" ");
    if res.outcome.timed_out {
        return Attempt::Transient(format!("cannot fetch {}: curl ran out of time", url));
    }
    match (res.outcome.code, status) {
        (Some(0), Some(200..=299)) => read_download(url, out),
        (Some(0), Some(code)) if code != 0 => status_attempt(url, code),
        // Certificate problems: 51, 58, 60, 77, 83, 90, 91.
        (Some(51 | 58 | 60 | 77 | 83 | 90 | 91), _) => Attempt::Failed(format!(
            "the TLS certificate of {} is not trusted: {}",
            url, said
        )),
        (Some(1..=3), _) => Attempt::Failed(format!("cannot fetch {}: {}", url, said)),
        _ => Attempt::Transient(format!("cannot fetch {}: {}", url, said)),
    }
}

fn is_gnu_wget(wget: &Path) -> bool {
    let mut cmd = std::process::Command::new(wget);
    cmd.arg("--version");
    crate::exec::run(cmd, Duration::from_secs(10)).is_ok_and(|r| r.text().contains("GNU Wget"))
}

/// The settings wget would have read (system wgetrc, then `$WGETRC` or `~/.wgetrc`), for a
/// `--config` file that adds the token header.
fn wget_settings() -> String {
    let mut text = String::new();
    let user = std::env::var_os("WGETRC")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".wgetrc")));
    for path in [Some(PathBuf::from("/etc/wgetrc")), user]
        .into_iter()
        .flatten()
    {
        if let Ok(t) = std::fs::read_to_string(&path) {
            text.push_str(&t);
            text.push('\n');
        }
    }
    text
}

fn fetch_wget(wget: &Path, url: &str, token: Option<&str>, out: &Path, conf: &Path) -> Attempt {
    let timeout = scaled_secs(DOWNLOAD_TIMEOUT_SEC).to_string();
    let mut cmd = std::process::Command::new(wget);
    cmd.args(["-S", "-t", "1", "-T", &timeout, "-O"]).arg(out);
    match token {
        Some(t) => {
            let settings = format!("{}header = Authorization: Bearer {}\n", wget_settings(), t);
            if let Err(e) = write_private(conf, &settings) {
                return Attempt::Failed(e);
            }
            cmd.arg(format!("--config={}", conf.display()))
                .arg("--max-redirect=0");
        }
        None => {
            cmd.arg(format!("--max-redirect={}", MAX_REDIRECTS));
        }
    }
    cmd.arg(url);
    let res = match crate::exec::run(cmd, external_deadline()) {
        Ok(res) => res,
        Err(e) => return Attempt::Failed(format!("cannot run wget: {}", e)),
    };
    let text = res.text();
    let status = text.lines().rev().find_map(|l| {
        l.trim_start()
            .strip_prefix("HTTP/")?
            .split_whitespace()
            .nth(1)?
            .parse::<u16>()
            .ok()
    });
    let said = text.lines().last().unwrap_or_default().trim().to_string();
    if res.outcome.timed_out {
        return Attempt::Transient(format!("cannot fetch {}: wget ran out of time", url));
    }
    match (res.outcome.code, status) {
        (Some(0), _) => read_download(url, out),
        (Some(8), Some(code)) if !(200..=299).contains(&code) => status_attempt(url, code),
        (Some(5), _) => Attempt::Failed(format!(
            "the TLS certificate of {} is not trusted: {}",
            url, said
        )),
        (Some(1 | 2), _) => Attempt::Failed(format!("cannot fetch {}: {}", url, said)),
        _ => Attempt::Transient(format!("cannot fetch {}: {}", url, said)),
    }
}

fn fetch_once(url: &str, token: Option<&str>, scratch: &Path) -> Attempt {
    if url.starts_with("https://") && https_external() {
        fetch_external(url, token, scratch)
    } else {
        fetch_builtin(url, token)
    }
}

/// Downloads a script. Cloud Storage objects are asked for with the service account's
/// token; if the storage answers that request with a refusal (any 3xx or 4xx but 429),
/// once more anonymously. Transient failures are tried three times in all, with backoff.
fn download(client: &Client, url: &str, scratch: &Path) -> std::result::Result<Vec<u8>, String> {
    let target = resolve_url(url, &storage_endpoint())
        .map_err(|why| format!("cannot use URL {:?}: {}", url, why))?;
    if target.url.starts_with("https://") && cfg!(feature = "tls") && https_external() {
        info!(
            "HTTPS through curl or wget ({}=external, a test setting).",
            HTTPS_VIA_ENV
        );
    }
    let mut token = None;
    if target.storage {
        token = access_token(client);
        if token.is_none() {
            info!("Authentication token not found. Attempting unauthenticated download.");
        }
    }
    let mut refused_with_token = None;
    let mut failures = 0;
    let mut backoff = Backoff::default();
    loop {
        match fetch_once(&target.url, token.as_deref(), scratch) {
            Attempt::Body(body) => return Ok(body),
            Attempt::Refused(code) if token.is_some() => {
                info!(
                    "{} answered HTTP {} to the service account's token; trying without it.",
                    target.url, code
                );
                refused_with_token = Some(code);
                token = None;
            }
            Attempt::Refused(code) => {
                return Err(match refused_with_token {
                    Some(first) => format!(
                        "{} answered HTTP {} with the service account's token and HTTP {} without",
                        target.url, first, code
                    ),
                    None => format!("{} answered HTTP {}", target.url, code),
                })
            }
            Attempt::Failed(why) => return Err(why),
            Attempt::Transient(why) => {
                failures += 1;
                if failures >= DOWNLOAD_TRIES {
                    return Err(format!("{} ({} tries)", why, failures));
                }
                let wait = backoff.next_wait();
                debug!("{}; trying again in {:?}", why, wait);
                std::thread::sleep(wait);
            }
        }
    }
}

/// A fresh 0700 directory in `base`.
fn make_dir_in(base: &Path, kind: ScriptType) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let dir = base.join(format!(
            "{}-scripts.{:08x}",
            kind.name(),
            crate::timing::random_u64() as u32
        ));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
    }
    Err(Error::Msg(format!(
        "cannot create a directory in {}",
        base.display()
    )))
}

/// The fresh 0700 directory for this run's scripts: in `run_dir` when it is set (created
/// if missing), else — or when that fails — in `/run`, else in `/tmp`.
fn make_run_dir(run_dir: &str, kind: ScriptType) -> Result<PathBuf> {
    let configured = run_dir.trim();
    if !configured.is_empty() {
        let base = Path::new(configured);
        let made = std::fs::create_dir_all(base)
            .map_err(|e| Error::io("create", base, e))
            .and_then(|()| make_dir_in(base, kind));
        match made {
            Ok(dir) => return Ok(dir),
            Err(e) => warn!(
                "Cannot use run_dir {}: {}; using the default.",
                configured, e
            ),
        }
    }
    let mut last = Error::Msg("neither /run nor /tmp is a directory".into());
    for base in ["/run", "/tmp"].map(Path::new) {
        if base.is_dir() {
            match make_dir_in(base, kind) {
                Ok(dir) => return Ok(dir),
                Err(e) => last = e,
            }
        }
    }
    Err(last)
}

/// The shell scripts run under: the configured one if it exists, else bash, else sh.
fn choose_shell(configured: &str) -> PathBuf {
    let configured = configured.trim();
    if !configured.is_empty() {
        if Path::new(configured).is_file() {
            return PathBuf::from(configured);
        }
        if configured != "/bin/bash" {
            warn!(
                "default_shell {} does not exist; using /bin/sh.",
                configured
            );
        }
    }
    if Path::new("/bin/bash").is_file() {
        PathBuf::from("/bin/bash")
    } else {
        PathBuf::from("/bin/sh")
    }
}

/// Makes a script's output line fit a log line (invalid UTF-8 replaced, NULs shown).
fn printable(line: &[u8]) -> String {
    String::from_utf8_lossy(line)
        .replace('\0', "\\0")
        .trim_end_matches('\r')
        .to_string()
}

/// Cuts `text` into pieces of at most `max` bytes on character boundaries, so a long line
/// is logged whole in several records rather than cut off at the log line's limit.
fn pieces(text: &str, max: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        out.push(&rest[..end]);
        rest = &rest[end..];
    }
    out
}

/// What `<key>: Return code <n>.` shows: the exit code, or minus the signal that ended the
/// script (as Python's `Popen.wait()` gave it).
fn return_code(outcome: &crate::exec::Outcome) -> i32 {
    outcome.code.or(outcome.signal.map(|s| -s)).unwrap_or(-1)
}

fn run_one(shell: &Path, dir: &Path, script: &Script, body: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(&script.key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all(body)
        .map_err(|e| Error::io("write", &path, e))?;
    // Executable whatever the umask.
    file.set_permissions(std::fs::Permissions::from_mode(0o700))
        .map_err(|e| Error::io("chmod", &path, e))?;
    drop(file);
    // The working directory and environment are the runner's, as they were in Python.
    let mut cmd = std::process::Command::new(shell);
    cmd.arg("-c").arg(&path);
    let key = script.key.as_str();
    let outcome = crate::exec::run_streaming(cmd, None, |line| {
        for piece in pieces(&printable(line), LOG_PIECE) {
            info!("{}: {}", key, piece);
        }
    })?;
    info!("{}: Return code {}.", key, return_code(&outcome));
    Ok(())
}

/// Runs the scripts of `kind`. Problems are logged; the runner always finishes, with a
/// line giving the elapsed time (so a shutdown cut off by the platform shows).
/// `network_wait` is how long startup waits for the metadata server.
pub fn run(kind: ScriptType, settings: &ScriptSettings, network_wait: Duration) {
    let started = Instant::now();
    info!("Starting {} scripts.", kind.name());
    run_all(kind, settings, network_wait);
    info!(
        "Finished running {} scripts in {:.1} s.",
        kind.name(),
        started.elapsed().as_secs_f64()
    );
}

fn run_all(kind: ScriptType, settings: &ScriptSettings, network_wait: Duration) {
    let client = Client::from_env();
    let budget = match kind {
        ScriptType::Startup => network_wait,
        ScriptType::Shutdown => Duration::from_secs(SHUTDOWN_METADATA_WAIT_SEC),
    };
    let doc = match client.get_json_retrying("", budget) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            error!(
                "The metadata server has no document; no {} scripts run.",
                kind.name()
            );
            return;
        }
        Err(e) => {
            error!(
                "Cannot read metadata ({}); giving up on {} scripts after {:.0} s.",
                e,
                kind.name(),
                scaled(budget).as_secs_f64()
            );
            return;
        }
    };
    let scripts = scripts_in(&doc, kind);
    if scripts.is_empty() {
        info!("No {} scripts found in metadata.", kind.name());
        return;
    }
    for script in &scripts {
        info!("Found {} in metadata.", script.key);
    }
    let dir = match make_run_dir(&settings.run_dir, kind) {
        Ok(d) => d,
        Err(e) => {
            error!("No directory to run {} scripts in: {}", kind.name(), e);
            return;
        }
    };
    let shell = choose_shell(&settings.default_shell);
    for script in &scripts {
        let body = match &script.source {
            Source::Inline(text) => text.clone().into_bytes(),
            Source::Url(url) => {
                info!("Downloading {} from {}.", script.key, url);
                match download(&client, url, &dir) {
                    Ok(body) => body,
                    Err(e) => {
                        warn!("Failed to download {}: {}.", script.key, e);
                        continue;
                    }
                }
            }
        };
        if let Err(e) = run_one(&shell, &dir, script, &body) {
            error!("{}: {}", script.key, e);
        }
    }
    if let Err(e) = std::fs::remove_dir_all(&dir) {
        warn!("Cannot remove {}: {}.", dir.display(), e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(text: &str) -> JsonValue {
        mds::parse_json(text).unwrap()
    }

    #[test]
    fn instance_scripts_win_over_project_scripts_as_a_whole() {
        let d = doc(r#"{"instance":{"attributes":{"startup-script":"  echo i"}},
                        "project":{"attributes":{"startup-script-url":"gs://b/o","startup-script":"echo p"}}}"#);
        let s = scripts_in(&d, ScriptType::Startup);
        assert_eq!(
            s,
            vec![Script {
                key: "startup-script".into(),
                source: Source::Inline("echo i".into())
            }]
        );
        let d = doc(r#"{"instance":{"attributes":{}},
                        "project":{"attributes":{"startup-script-url":"gs://b/o","startup-script":"echo p"}}}"#);
        let s = scripts_in(&d, ScriptType::Startup);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].key, "startup-script-url", "the URL script runs first");
        assert!(scripts_in(&d, ScriptType::Shutdown).is_empty());
    }

    #[test]
    fn storage_urls_of_every_form_map_to_the_json_api_host() {
        let ep = STORAGE_ENDPOINT;
        for url in [
            "gs://bucket/dir/obj.sh",
            "https://bucket.storage.googleapis.com/dir/obj.sh",
            "https://storage.googleapis.com/bucket/dir/obj.sh",
            "https://storage.cloud.google.com/bucket/dir/obj.sh",
            "http://storage.googleapis.com/bucket/dir/obj.sh",
        ] {
            let d = resolve_url(url, ep).unwrap();
            assert_eq!(
                d.url, "https://storage.googleapis.com/bucket/dir/obj.sh",
                "{}",
                url
            );
            assert!(d.storage);
        }
        let d = resolve_url("https://example.com/s.sh", ep).unwrap();
        assert_eq!(
            d,
            Download {
                url: "https://example.com/s.sh".into(),
                storage: false
            }
        );
        assert!(resolve_url("gs://bucket", ep).is_err());
        assert!(resolve_url("example.com/s.sh", ep).is_err());
        assert!(resolve_url("https://example.com/a b.sh", ep).is_err());
        assert!(resolve_url("ftp://example.com/s.sh", ep).is_err());
        let local = resolve_url("gs://b/o", "http://127.0.0.1:8000/").unwrap();
        assert_eq!(local.url, "http://127.0.0.1:8000/b/o");
    }

    #[test]
    fn long_lines_are_cut_on_character_boundaries_not_lost() {
        assert!(pieces("", 4).is_empty());
        assert_eq!(pieces("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        assert_eq!(pieces("ééé", 3), ["é", "é", "é"]);
        let long = "x".repeat(20_000);
        assert_eq!(pieces(&long, LOG_PIECE).concat(), long);
    }

    #[test]
    fn signals_show_as_negative_return_codes() {
        use crate::exec::Outcome;
        assert_eq!(
            return_code(&Outcome {
                code: Some(3),
                signal: None,
                timed_out: false
            }),
            3
        );
        assert_eq!(
            return_code(&Outcome {
                code: None,
                signal: Some(9),
                timed_out: false
            }),
            -9
        );
    }

    #[test]
    fn only_header_safe_tokens_are_used() {
        assert!(token_is_clean("ya29.a0Af-_x"));
        for bad in ["", "a b", "a\r\nX-Evil: 1", "a\"b", "a\\b", "\u{e9}"] {
            assert!(!token_is_clean(bad), "{:?}", bad);
        }
    }

    #[test]
    fn script_types_parse_in_any_case() {
        assert_eq!(ScriptType::parse("Startup"), Some(ScriptType::Startup));
        assert_eq!(ScriptType::parse("SHUTDOWN"), Some(ScriptType::Shutdown));
        assert_eq!(ScriptType::parse("boot"), None);
    }

    #[test]
    fn output_lines_are_made_printable() {
        assert_eq!(printable(b"a\0b\r"), "a\\0b");
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }
}
