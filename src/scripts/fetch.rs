//! Downloading a script URL: Cloud Storage objects with the instance's service-account
//! token (falling back to an anonymous request when the storage refuses the token; the
//! token never follows a redirect), other http(s) addresses plainly. Transient failures are
//! tried three times with backoff, each attempt bounded. HTTPS is built in with the `tls`
//! feature, otherwise handed to [`super::external`].

use std::path::Path;

use super::external::fetch_external;
use super::sources::{resolve_url, STORAGE_ENDPOINT};
use crate::json;
use crate::mds::{self, Client};
use crate::timing::{scaled_secs, Backoff};

/// Test-only: replaces `https://storage.googleapis.com` (for a local server in tests).
#[cfg(feature = "test-hooks")]
pub const STORAGE_ENDPOINT_ENV: &str = "GCE_GUEST_STORAGE_ENDPOINT";

/// Test-only: `external` sends `https://` downloads to `curl` or `wget` even in a build
/// with built-in TLS, so tests exercise the path a build without the `tls` feature takes.
/// A run where it is in effect says so in an INFO line.
#[cfg(feature = "test-hooks")]
pub const HTTPS_VIA_ENV: &str = "GCE_GUEST_HTTPS_VIA";

const DOWNLOAD_TRIES: u32 = 3;

/// Seconds one download attempt may take in all (scaled).
pub(super) const DOWNLOAD_TIMEOUT_SEC: u64 = 60;

pub(super) const MAX_REDIRECTS: usize = 5;

/// The largest script downloaded (held in memory once, then written to its file).
pub(super) const MAX_SCRIPT: u64 = 16 << 20;

fn storage_endpoint() -> String {
    #[cfg(feature = "test-hooks")]
    if let Some(endpoint) = std::env::var(STORAGE_ENDPOINT_ENV)
        .ok()
        .filter(|s| !s.is_empty())
    {
        return endpoint;
    }
    STORAGE_ENDPOINT.into()
}

/// Whether `https://` addresses go to `curl` or `wget`: always without the `tls` feature;
/// with it only when the test-only [`HTTPS_VIA_ENV`] says `external`.
fn https_external() -> bool {
    #[cfg(feature = "test-hooks")]
    if std::env::var(HTTPS_VIA_ENV).is_ok_and(|v| v == "external") {
        return true;
    }
    !cfg!(feature = "tls")
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
    let token = json::lookup_str(&mds::json_body(&reply).ok()?, "access_token")?.to_string();
    if !token_is_clean(&token) {
        warn!("The service account's access token has characters a header cannot carry; not using it.");
        return None;
    }
    Some(token)
}

/// What one fetch attempt ended with.
#[derive(Debug)]
pub(super) enum Attempt {
    Body(Vec<u8>),
    /// An HTTP status that retrying will not change (3xx not followed, 4xx but 429).
    Refused(u16),
    /// Worth another try: no connection, a timeout, 429 or 5xx.
    Transient(String),
    /// Will not get better by retrying: a certificate not trusted, no way to fetch, too big.
    Failed(String),
}

pub(super) fn status_attempt(url: &str, code: u16) -> Attempt {
    match code {
        429 | 500..=599 => Attempt::Transient(format!("{} answered HTTP {}", url, code)),
        code => Attempt::Refused(code),
    }
}

pub(super) fn too_large(url: &str) -> Attempt {
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
pub(super) fn download(
    client: &Client,
    url: &str,
    scratch: &Path,
) -> std::result::Result<Vec<u8>, String> {
    let target = resolve_url(url, &storage_endpoint())
        .map_err(|why| format!("cannot use URL {:?}: {}", url, why))?;
    #[cfg(feature = "test-hooks")]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_header_safe_tokens_are_used() {
        assert!(token_is_clean("ya29.a0Af-_x"));
        for bad in ["", "a b", "a\r\nX-Evil: 1", "a\"b", "a\\b", "\u{e9}"] {
            assert!(!token_is_clean(bad), "{:?}", bad);
        }
    }
}
