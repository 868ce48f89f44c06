//! The clock-skew daemon: when the metadata drift token changes (live migration, a host
//! clock event) and once at start, set the system clock from the hardware clock.
//!
//! Natively first: wait for `/sys/class/rtc/rtc0/since_epoch` to tick over to the next
//! second (as hwclock waits for the edge), then `clock_settime` to it — to within a few
//! milliseconds, with no ioctl. When the RTC file is missing or setting fails (EPERM
//! included), `hwclock -s -u` does it (util-linux and busybox both take those flags).
//! Nothing is done when `/etc/adjtime` says the RTC keeps local time.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tinyjson::JsonValue;

use crate::error::{Context, Error, Result};
use crate::json::{self, Slice};

/// Where the daemon looks; fixed on a real system.
pub struct ClockSkew {
    rtc_since_epoch: PathBuf,
    adjtime: PathBuf,
}

impl Default for ClockSkew {
    fn default() -> ClockSkew {
        ClockSkew::new()
    }
}

impl ClockSkew {
    /// The daemon with the system's paths.
    pub fn new() -> ClockSkew {
        ClockSkew {
            rtc_since_epoch: PathBuf::from("/sys/class/rtc/rtc0/since_epoch"),
            adjtime: PathBuf::from("/etc/adjtime"),
        }
    }
}

/// Whether an `/etc/adjtime` text says the RTC keeps local time (third line `LOCAL`).
pub fn rtc_keeps_local_time(adjtime: &str) -> bool {
    adjtime.lines().nth(2).map(str::trim) == Some("LOCAL")
}

/// The drift token as text, whatever JSON type the document gives it.
fn token_text(token: &JsonValue) -> String {
    match token {
        JsonValue::String(s) => s.clone(),
        JsonValue::Number(n) => format!("{}", n),
        other => other.stringify().unwrap_or_default(),
    }
}

fn read_rtc(path: &Path) -> Result<i64> {
    let text = std::fs::read_to_string(path).context("read", path)?;
    text.trim().parse::<i64>().map_err(|_| Error::Parse {
        what: path.display().to_string(),
        line: 1,
        msg: format!("not seconds: {:?}", text.trim()),
    })
}

/// Waits for the RTC's next second, then sets the system clock to it.
fn set_clock_from_rtc(path: &Path) -> Result<()> {
    let first = read_rtc(path)?;
    let give_up = Instant::now() + Duration::from_millis(1500);
    let now = loop {
        let t = read_rtc(path)?;
        if t != first {
            break t;
        }
        if Instant::now() > give_up {
            return Err(Error::Msg(format!("{} did not tick", path.display())));
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    crate::sys::set_realtime_clock(now as i64).map_err(|e| Error::sys("set the system clock", e))
}

fn hwclock_to_system() -> Result<()> {
    let program = crate::exec::find_program("hwclock").ok_or_else(|| Error::Command {
        program: "hwclock".into(),
        detail: "is not installed".into(),
    })?;
    let mut cmd = std::process::Command::new(&program);
    cmd.args(["-s", "-u"]);
    crate::exec::run(cmd, crate::timing::scaled(Duration::from_secs(20)))?
        .checked(&program.display().to_string())
        .map(drop)
}

impl ClockSkew {
    /// Sets the system clock from the RTC, natively or through hwclock.
    pub fn sync(&self) -> Result<()> {
        if let Ok(text) = std::fs::read_to_string(&self.adjtime) {
            if rtc_keeps_local_time(&text) {
                warn!(
                    "The hardware clock keeps local time ({} says LOCAL); not syncing the clock.",
                    self.adjtime.display()
                );
                return Ok(());
            }
        }
        match set_clock_from_rtc(&self.rtc_since_epoch) {
            Ok(()) => debug!("set the clock from {}", self.rtc_since_epoch.display()),
            Err(native) => {
                debug!("native clock sync failed ({}); using hwclock", native);
                hwclock_to_system().map_err(|e| {
                    Error::Msg(format!(
                        "Failed to sync system time with hardware clock: {}",
                        e
                    ))
                })?;
            }
        }
        info!("Synced system time with hardware clock.");
        Ok(())
    }
}

fn drift_token(doc: &JsonValue) -> Option<&JsonValue> {
    json::lookup(doc, "instance/virtualClock/driftToken")
}

/// The daemon's side of the runner's calls (see `crate::daemon::Daemon`).
impl ClockSkew {
    /// The drift token.
    pub fn slice<'d>(&self, doc: &'d JsonValue) -> Slice<'d> {
        vec![drift_token(doc)]
    }

    /// Sets the clock from the RTC (the token changed).
    pub fn apply(&mut self, doc: &JsonValue) -> Result<()> {
        let Some(token) = drift_token(doc) else {
            debug!("no drift token in metadata");
            return Ok(());
        };
        info!("Clock drift token has changed: {}.", token_text(token));
        // A failed sync is reported, not retried: the next token change tries again, as the
        // original did (retrying would only repeat the same hardware error).
        if let Err(e) = self.sync() {
            error!("{}", e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjtime_local_is_the_third_line() {
        assert!(rtc_keeps_local_time("0.0 0 0.0\n0\nLOCAL\n"));
        assert!(!rtc_keeps_local_time("0.0 0 0.0\n0\nUTC\n"));
        assert!(!rtc_keeps_local_time("LOCAL\n"));
        assert!(!rtc_keeps_local_time(""));
    }

    #[test]
    fn the_slice_is_the_drift_token() {
        let d = ClockSkew::new();
        let doc = json::parse_json(r#"{"instance":{"virtualClock":{"driftToken":"123"},"id":1}}"#)
            .unwrap();
        assert_eq!(d.slice(&doc), [Some(&JsonValue::String("123".into()))]);
        let other =
            json::parse_json(r#"{"instance":{"virtualClock":{"driftToken":"123"},"id":2}}"#)
                .unwrap();
        assert_eq!(
            d.slice(&doc),
            d.slice(&other),
            "unrelated changes leave the slice alone"
        );
        assert_eq!(token_text(&JsonValue::Number(5.0)), "5");
    }

    #[test]
    fn a_missing_rtc_is_an_error_not_a_panic() {
        assert!(set_clock_from_rtc(Path::new("/nonexistent/since_epoch")).is_err());
    }
}
