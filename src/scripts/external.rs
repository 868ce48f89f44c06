//! HTTPS without built-in TLS: the image's `curl`, else GNU `wget` (busybox wget checks no
//! certificates and is refused), with the token in a 0600 file rather than on a command
//! line, and their exit codes and statuses read back as an [`Attempt`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fetch::{
    status_attempt, too_large, Attempt, DOWNLOAD_TIMEOUT_SEC, MAX_REDIRECTS, MAX_SCRIPT,
};
use crate::timing::{scaled, scaled_secs};

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
pub(super) fn fetch_external(url: &str, token: Option<&str>, scratch: &Path) -> Attempt {
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
