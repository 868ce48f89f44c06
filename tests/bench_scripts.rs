//! Bench of the metadata-script runner (`#[ignore]`d; `make bench` runs it): how long
//! `google_metadata_script_runner` takes from its start to the first line of a tiny inline
//! script logged (Python 0.3 s, Go 0.27 s; the goal is 20 ms or less).
//!
//! Method: in the sandbox, with the metadata emulator serving a document whose
//! `startup-script` is `echo first`, the runner is started with `-d` (its log lines also
//! go to stderr, a pipe this process drains) and the clock runs from just before the
//! spawn until `startup-script: INFO startup-script: first` shows in that pipe (polled
//! continuously). The same is measured for `/bin/echo` — the cost of `nsenter` and of
//! starting any program — and reported beside it. Median and minimum of 25 runs.
//!
//! ```text
//! cargo test --release --features emulator,test-hooks --test integration \
//!   -- --ignored bench_scripts:: --nocapture
//! ```

#![cfg(feature = "emulator")]

use std::time::{Duration, Instant};

use crate::common::{Daemon, Sandbox};

const RUNS: usize = 25;
const DOC: &str = r#"{"instance":{"id":1,"hostname":"vm","attributes":{"startup-script":"echo first"}},
                     "project":{"projectId":"p","attributes":{}}}"#;

/// Spawns `start()` and times it until `seen` holds for the started daemon.
fn time_until(start: impl Fn() -> Daemon, seen: impl Fn(&Daemon) -> bool) -> Duration {
    let t0 = Instant::now();
    let mut daemon = start();
    let deadline = t0 + Duration::from_secs(10);
    loop {
        if seen(&daemon) {
            let took = t0.elapsed();
            let _ = daemon.wait_timeout(Duration::from_secs(10));
            return took;
        }
        assert!(Instant::now() < deadline, "nothing seen within 10 s");
        std::thread::yield_now();
    }
}

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    (v[v.len() / 2], v[0])
}

#[test]
#[ignore = "bench: run with --ignored --nocapture"]
fn bench_first_script_line_latency() {
    let sb = sandbox_or_skip!(Sandbox::builder().metadata(DOC));
    let runner = || {
        time_until(
            || {
                sb.cmd([
                    "google_metadata_script_runner",
                    "-d",
                    "--script-type",
                    "startup",
                ])
                .spawn()
            },
            |d| {
                d.stderr_text()
                    .contains("startup-script: INFO startup-script: first")
            },
        )
    };
    let echo = || {
        time_until(
            || sb.program(["/bin/echo", "first"]).spawn(),
            |d| d.stdout_text().contains("first"),
        )
    };
    // Warm the page cache and the emulator.
    runner();
    echo();
    let runs: Vec<Duration> = (0..RUNS).map(|_| runner()).collect();
    let baseline: Vec<Duration> = (0..RUNS).map(|_| echo()).collect();
    println!(
        "runs (ms): {:?}",
        runs.iter()
            .map(|d| (d.as_secs_f64() * 1e4).round() / 10.0)
            .collect::<Vec<_>>()
    );
    let (median, min) = stats(runs);
    let (base_median, base_min) = stats(baseline);
    println!(
        "runner start -> first script line logged: median {:.1} ms, min {:.1} ms ({} runs, {} build)",
        median.as_secs_f64() * 1e3,
        min.as_secs_f64() * 1e3,
        RUNS,
        if cfg!(debug_assertions) { "debug" } else { "release" }
    );
    println!(
        "of which starting any program through nsenter (/bin/echo): median {:.1} ms, min {:.1} ms",
        base_median.as_secs_f64() * 1e3,
        base_min.as_secs_f64() * 1e3
    );
    assert!(
        median < Duration::from_secs(1),
        "far off the goal: {:?}",
        median
    );
}
