//! `google_metadata_get KEY [--recursive] [--json] [--wait] [--timeout S]`: prints one
//! metadata value, for scripts on images without curl. Exit 0 printed, 1 the key is not
//! defined, 2 the server could not be reached (after retrying for `--timeout` seconds).

use std::io::Write;
use std::time::Duration;

use super::{Applet, Invocation, Output};
use crate::mds::{self, Client};
use crate::timing::scaled_secs;

pub(crate) static APPLET: Applet = Applet {
    name: "google_metadata_get",
    run: main,
    logger: "google-metadata-get",
    output: Output::Terminal,
    summary: "print a metadata value (exit 1 absent, 2 unreachable)",
    usage: USAGE,
};

const USAGE: &str = "KEY [--recursive] [--json] [--wait] [--timeout SECONDS]

KEY is a path under computeMetadata/v1/, for example instance/id or
instance/attributes/startup-script. Exit status: 0 printed, 1 not defined,
2 metadata server unreachable.
  -r, --recursive  the whole directory as JSON
  -j, --json       the value as JSON (alt=json)
  -w, --wait       wait until the value changes, then print the new value
  -t, --timeout S  give up on an unreachable server after S seconds (default 10)";

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optflag("r", "recursive", "")
        .optflag("j", "json", "")
        .optflag("w", "wait", "")
        .optopt("t", "timeout", "", "S");
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    let [key] = m.free.as_slice() else {
        return inv.usage_error("give exactly one KEY (see --help)");
    };
    let budget = match m.opt_str("t").map(|t| t.parse::<u64>()) {
        None => 10,
        Some(Ok(t)) => t,
        Some(Err(_)) => return inv.usage_error("--timeout takes whole seconds"),
    };
    let key = key.trim_start_matches('/');
    let mut query = Vec::new();
    if m.opt_present("r") {
        query.push("recursive=true");
    }
    if m.opt_present("j") || m.opt_present("r") {
        query.push("alt=json");
    }
    let client = Client::from_env();
    let result = if m.opt_present("w") {
        wait_for_change(&client, key, &query, budget)
    } else {
        fetch(&client, &with_query(key, &query, &[]), budget)
    };
    match result {
        Ok(Some(body)) => {
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&body);
            let _ = out.flush();
            0
        }
        Ok(None) => {
            eprintln!("{}: {} is not defined", inv.name, key);
            1
        }
        Err(e) => {
            eprintln!("{}: {}", inv.name, e);
            2
        }
    }
}

fn with_query(key: &str, fixed: &[&str], extra: &[String]) -> String {
    let parts: Vec<&str> = fixed
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .collect();
    if parts.is_empty() {
        key.to_string()
    } else {
        format!("{}?{}", key, parts.join("&"))
    }
}

/// GETs with retries for `budget` seconds; returns the body, or `None` on 404.
fn fetch(client: &Client, path_query: &str, budget: u64) -> crate::Result<Option<Vec<u8>>> {
    let request_secs = scaled_secs(mds::REQUEST_TIMEOUT_SEC);
    Ok(fetch_reply(client, path_query, budget, request_secs)?.map(|r| r.body))
}

/// GETs, retrying transient failures for `budget` seconds; each request may take up to
/// `request_secs` (a long-poll needs its `timeout_sec` and a margin).
fn fetch_reply(
    client: &Client,
    path_query: &str,
    budget: u64,
    request_secs: u64,
) -> crate::Result<Option<mds::HttpReply>> {
    mds::retrying(Duration::from_secs(budget), || {
        client.get_raw(path_query, request_secs)
    })
}

/// Reads the current ETag, then long-polls until it changes and returns the new body.
fn wait_for_change(
    client: &Client,
    key: &str,
    query: &[&str],
    budget: u64,
) -> crate::Result<Option<Vec<u8>>> {
    let Some(first) = fetch_reply(
        client,
        &with_query(key, query, &[]),
        budget,
        scaled_secs(mds::REQUEST_TIMEOUT_SEC),
    )?
    else {
        return Ok(None);
    };
    let mut etag = first.etag.unwrap_or_else(|| "0".into());
    loop {
        let timeout = scaled_secs(mds::WATCH_TIMEOUT_SEC);
        let extra = [
            "wait_for_change=true".to_string(),
            format!("last_etag={}", mds::encode_query(&etag)),
            format!("timeout_sec={}", timeout),
        ];
        let Some(reply) = fetch_reply(
            client,
            &with_query(key, query, &extra),
            budget,
            timeout + scaled_secs(mds::WATCH_MARGIN_SEC),
        )?
        else {
            return Ok(None);
        };
        match reply.etag {
            Some(new) if new != etag => return Ok(Some(reply.body)),
            Some(_) => {}
            None => {
                etag = "0".into();
                std::thread::sleep(Duration::from_secs(1));
            }
        }
    }
}
