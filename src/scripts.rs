//! The metadata script runner: startup and shutdown scripts from instance (else project)
//! attributes — `<type>-script-url` first, then `<type>-script` — each written to a fresh
//! 0700 directory, run as `<default_shell> -c <path>` (so a shebang works), its merged
//! output logged line by line as `<key>: <line>` and then `<key>: Return code <n>.`.
//!
//! URL scripts come from Cloud Storage with the instance's service-account token (falling
//! back to an anonymous request) or from any other http(s) address; HTTPS is built in with
//! the `tls` feature, otherwise handed to the image's `curl` or `wget`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::mds::{self, Client};
use crate::timing::{scaled, scaled_secs, Backoff};

/// Test-only: replaces `https://storage.googleapis.com` (for a local server in tests).
pub const STORAGE_ENDPOINT_ENV: &str = "GCE_GUEST_STORAGE_ENDPOINT";
const STORAGE_ENDPOINT: &str = "https://storage.googleapis.com";
const DOWNLOAD_TRIES: u32 = 3;
const DOWNLOAD_TIMEOUT_SEC: u64 = 60;
const MAX_SCRIPT: u64 = 64 << 20;

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

    /// Parses `startup` or `shutdown`.
    pub fn parse(s: &str) -> Option<ScriptType> {
        match s {
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
                found.push(Script { key: url_key, source: Source::Url(url.trim().to_string()) });
            }
        }
        if let Some(text) = mds::lookup_str(doc, &format!("{}/attributes/{}", scope, text_key)) {
            let text = text.trim_start();
            if !text.is_empty() {
                found.push(Script { key: text_key, source: Source::Inline(text.to_string()) });
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
        let (bucket, object) = bucket_and_object.split_once('/').unwrap_or((bucket_and_object, ""));
        if bucket.is_empty() || object.is_empty() {
            return Err("it names no bucket and object".into());
        }
        Ok(Download { url: format!("{}/{}/{}", storage_endpoint.trim_end_matches('/'), bucket, object), storage: true })
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
        "storage.googleapis.com" | "storage.cloud.google.com" | "commondatastorage.googleapis.com" => storage(path),
        _ => match host.strip_suffix(".storage.googleapis.com") {
            Some(bucket) if !bucket.is_empty() => storage(&format!("{}/{}", bucket, path)),
            _ => Ok(Download { url: url.to_string(), storage: false }),
        },
    }
}

fn storage_endpoint() -> String {
    std::env::var(STORAGE_ENDPOINT_ENV).ok().filter(|s| !s.is_empty()).unwrap_or_else(|| STORAGE_ENDPOINT.into())
}

/// The service account's access token, if the metadata server gives one.
fn access_token(client: &Client) -> Option<String> {
    let json = client.get_raw("instance/service-accounts/default/token", scaled_secs(10)).ok()??;
    let text = String::from_utf8(json.body).ok()?;
    mds::lookup_str(&mds::parse_json(&text).ok()?, "access_token").map(str::to_string)
}

/// What a single fetch attempt ended with.
enum Fetched {
    Body(Vec<u8>),
    /// An HTTP status that retrying will not fix (404, 403, ...).
    Refused(u16),
}

fn fetch_builtin(url: &str, token: Option<&str>) -> Result<Fetched> {
    let mut req = minreq::get(url).with_timeout(scaled_secs(DOWNLOAD_TIMEOUT_SEC)).with_max_redirects(5);
    if let Some(t) = token {
        req = req.with_header("Authorization", format!("Bearer {}", t));
    }
    let resp = req.send().map_err(|e| Error::Msg(format!("cannot fetch {}: {}", url, e)))?;
    match resp.status_code {
        200..=299 => Ok(Fetched::Body(resp.into_bytes())),
        code @ (500..=599 | 429) => Err(Error::Msg(format!("{} answered HTTP {}", url, code))),
        code => Ok(Fetched::Refused(code)),
    }
}

/// HTTPS without built-in TLS: `curl`, else `wget`, writing to `out`.
fn fetch_external(url: &str, token: Option<&str>, out: &Path) -> Result<Fetched> {
    let timeout = scaled_secs(DOWNLOAD_TIMEOUT_SEC).to_string();
    let auth = token.map(|t| format!("Authorization: Bearer {}", t));
    let mut cmd = if let Some(curl) = crate::exec::find_program("curl") {
        let mut c = std::process::Command::new(curl);
        c.args(["-sSfL", "--max-time", &timeout, "-o"]).arg(out);
        if let Some(h) = &auth {
            c.args(["-H", h]);
        }
        c.arg("--").arg(url);
        c
    } else if let Some(wget) = crate::exec::find_program("wget") {
        let mut c = std::process::Command::new(wget);
        c.args(["-q", "-T", &timeout, "-O"]).arg(out);
        if let Some(h) = &auth {
            c.arg(format!("--header={}", h));
        }
        c.arg(url);
        c
    } else {
        return Err(Error::Msg(format!(
            "cannot fetch {}: this build has no built-in TLS and the image has neither curl nor wget",
            url
        )));
    };
    cmd.env_remove("http_proxy");
    let res = crate::exec::run(cmd, scaled(Duration::from_secs(DOWNLOAD_TIMEOUT_SEC + 10)))?;
    if res.outcome.success() {
        let body = std::fs::read(out).map_err(|e| Error::io("read", out, e))?;
        Ok(Fetched::Body(body))
    } else if res.text().contains("404") {
        Ok(Fetched::Refused(404))
    } else {
        Err(Error::Msg(format!("cannot fetch {}: {}", url, res.text())))
    }
}

fn fetch_once(url: &str, token: Option<&str>, scratch: &Path) -> Result<Fetched> {
    if url.starts_with("https://") && !cfg!(feature = "tls") {
        fetch_external(url, token, scratch)
    } else {
        fetch_builtin(url, token)
    }
}

/// Downloads a script: storage objects with the token first, then anonymously; three
/// tries with backoff against transient failures.
fn download(client: &Client, url: &str, scratch: &Path) -> Result<Vec<u8>> {
    let target = resolve_url(url, &storage_endpoint()).map_err(|why| Error::Msg(format!("cannot use URL {:?}: {}", url, why)))?;
    let token = if target.storage { access_token(client) } else { None };
    let mut tokens: Vec<Option<&str>> = vec![token.as_deref()];
    if token.is_some() {
        tokens.push(None);
    }
    let mut last = Error::Msg(format!("cannot fetch {}", url));
    for token in tokens {
        let mut backoff = Backoff::default();
        for attempt in 1..=DOWNLOAD_TRIES {
            match fetch_once(&target.url, token, scratch) {
                Ok(Fetched::Body(body)) if body.len() as u64 <= MAX_SCRIPT => return Ok(body),
                Ok(Fetched::Body(_)) => return Err(Error::Msg(format!("{} is larger than 64 MiB", url))),
                Ok(Fetched::Refused(code)) => {
                    last = Error::Msg(format!("{} answered HTTP {}", target.url, code));
                    break;
                }
                Err(e) => {
                    last = e;
                    if attempt < DOWNLOAD_TRIES {
                        std::thread::sleep(backoff.next_wait());
                    }
                }
            }
        }
    }
    Err(last)
}

/// A fresh 0700 directory under `base` for one run's scripts.
fn make_run_dir(base: &Path, kind: ScriptType) -> Result<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    for _ in 0..16 {
        let dir = base.join(format!("{}-scripts.{:08x}", kind.name(), crate::timing::random_u64() as u32));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("create", &dir, e)),
        }
    }
    Err(Error::Msg(format!("cannot create a directory in {}", base.display())))
}

/// The base directory: `run_dir` when set (created if missing), else `/run`, else `/tmp`.
fn choose_base(run_dir: &str) -> PathBuf {
    if !run_dir.trim().is_empty() {
        let dir = PathBuf::from(run_dir.trim());
        if dir.is_dir() || std::fs::create_dir_all(&dir).is_ok() {
            return dir;
        }
        warn!("run_dir {} cannot be created; using the default.", dir.display());
    }
    ["/run", "/tmp"].iter().map(PathBuf::from).find(|p| p.is_dir()).unwrap_or_else(|| PathBuf::from("/tmp"))
}

/// The shell scripts run under: the configured one if it exists, else bash, else sh.
fn choose_shell(configured: &str) -> PathBuf {
    let configured = configured.trim();
    if !configured.is_empty() {
        if Path::new(configured).is_file() {
            return PathBuf::from(configured);
        }
        if configured != "/bin/bash" {
            warn!("default_shell {} does not exist; using /bin/sh.", configured);
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
    String::from_utf8_lossy(line).replace('\0', "\\0").trim_end_matches('\r').to_string()
}

fn run_one(shell: &Path, dir: &Path, script: &Script, body: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::io::Write;
    let path = dir.join(&script.key);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(&path)
        .map_err(|e| Error::io("create", &path, e))?;
    file.write_all(body).map_err(|e| Error::io("write", &path, e))?;
    drop(file);
    let mut cmd = std::process::Command::new(shell);
    cmd.arg("-c").arg(&path).current_dir(dir);
    let key = script.key.as_str();
    let outcome = crate::exec::run_streaming(cmd, None, |line| {
        let text = printable(line);
        if !text.trim().is_empty() {
            info!("{}: {}", key, text);
        }
    })?;
    info!("{}: Return code {}.", key, outcome.return_code());
    Ok(())
}

/// Runs the scripts of `kind`. Problems are logged; the runner always finishes.
pub fn run(kind: ScriptType, config: &Config) {
    let started = Instant::now();
    info!("Starting {} scripts.", kind.name());
    let client = Client::from_env();
    let budget = match kind {
        ScriptType::Startup => Duration::from_secs(config.get_u64("InstanceSetup", "network_wait_s")),
        ScriptType::Shutdown => Duration::from_secs(20),
    };
    let doc = match client.get_json_retrying("", budget) {
        Ok(Some(doc)) => doc,
        Ok(None) => {
            error!("The metadata server has no document; no {} scripts run.", kind.name());
            return;
        }
        Err(e) => {
            error!("Cannot read metadata ({}); giving up on {} scripts after {} s.", e, kind.name(), budget.as_secs());
            return;
        }
    };
    let scripts = scripts_in(&doc, kind);
    if scripts.is_empty() {
        info!("No {} scripts found in metadata.", kind.name());
        info!("Finished running {} scripts.", kind.name());
        return;
    }
    let base = choose_base(&config.get_str("MetadataScripts", "run_dir"));
    let dir = match make_run_dir(&base, kind) {
        Ok(d) => d,
        Err(e) => {
            error!("{}", e);
            return;
        }
    };
    let shell = choose_shell(&config.get_str("MetadataScripts", "default_shell"));
    for script in &scripts {
        let body = match &script.source {
            Source::Inline(text) => text.clone().into_bytes(),
            Source::Url(url) => {
                info!("Downloading {} from {}.", script.key, url);
                match download(&client, url, &dir.join(format!(".{}.download", script.key))) {
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
    info!("Finished running {} scripts in {:.1} s.", kind.name(), started.elapsed().as_secs_f64());
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
        assert_eq!(s, vec![Script { key: "startup-script".into(), source: Source::Inline("echo i".into()) }]);
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
            assert_eq!(d.url, "https://storage.googleapis.com/bucket/dir/obj.sh", "{}", url);
            assert!(d.storage);
        }
        let d = resolve_url("https://example.com/s.sh", ep).unwrap();
        assert_eq!(d, Download { url: "https://example.com/s.sh".into(), storage: false });
        assert!(resolve_url("gs://bucket", ep).is_err());
        assert!(resolve_url("example.com/s.sh", ep).is_err());
        assert!(resolve_url("https://example.com/a b.sh", ep).is_err());
        assert!(resolve_url("ftp://example.com/s.sh", ep).is_err());
        let local = resolve_url("gs://b/o", "http://127.0.0.1:8000/").unwrap();
        assert_eq!(local.url, "http://127.0.0.1:8000/b/o");
    }

    #[test]
    fn output_lines_are_made_printable() {
        assert_eq!(printable(b"a\0b\r"), "a\\0b");
        assert_eq!(printable(&[0xff, b'x']), "\u{fffd}x");
    }
}
