//! Time: the test-only time scale, exponential backoff with jitter, and the few calendar
//! conversions the project needs (syslog stamps, expiry dates) without a date crate.
//!
//! `GCE_GUEST_TIME_SCALE` (a positive number, default 1) multiplies every timeout, backoff
//! and retry interval, so outage tests run in seconds. It is read only in builds with the
//! `test-hooks` feature (`make test`); the product binary always runs at scale 1.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The environment variable holding the test time scale.
#[cfg(feature = "test-hooks")]
pub const TIME_SCALE_ENV: &str = "GCE_GUEST_TIME_SCALE";

/// The time scale in force (1.0 unless the test environment says otherwise).
#[cfg(feature = "test-hooks")]
pub fn time_scale() -> f64 {
    static SCALE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *SCALE.get_or_init(|| {
        std::env::var(TIME_SCALE_ENV)
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0 && *s <= 1.0)
            .unwrap_or(1.0)
    })
}

/// The time scale of a product build: real time.
#[cfg(not(feature = "test-hooks"))]
pub fn time_scale() -> f64 {
    1.0
}

/// A duration under the time scale.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(time_scale())
}

/// Whole seconds under the time scale, at least one.
pub(crate) fn scaled_secs(secs: u64) -> u64 {
    ((secs as f64 * time_scale()).ceil() as u64).max(1)
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Microseconds since the epoch.
pub fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// A random number from the kernel (for jitter); falls back to the clock's nanoseconds.
pub(crate) fn random_u64() -> u64 {
    let mut buf = [0u8; 8];
    if crate::sys::getrandom(&mut buf) {
        return u64::from_ne_bytes(buf);
    }
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64 ^ d.as_secs().rotate_left(29))
        .unwrap_or(0x9e37_79b9)
}

/// Exponential backoff: 1 s doubling to a 30 s cap by default, each wait drawn uniformly
/// from its upper half (so retries of many guests do not line up), all under the time scale.
#[derive(Clone, Debug)]
pub struct Backoff {
    initial: Duration,
    cap: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(30))
    }
}

impl Backoff {
    /// Backoff from `initial` doubling up to `cap` (both before scaling).
    pub fn new(initial: Duration, cap: Duration) -> Backoff {
        Backoff {
            initial,
            cap,
            next: initial,
        }
    }

    /// The next wait, already scaled, and advances the sequence.
    pub(crate) fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        let half = base / 2;
        let span = half.as_nanos().max(1) as u64;
        let jitter = Duration::from_nanos(random_u64() % span);
        scaled(half + jitter)
    }

    /// Back to the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The (year, month, day) of a day number since the epoch.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// `Mmm dd hh:mm:ss` in UTC, the RFC 3164 time stamp.
pub(crate) fn syslog_timestamp(unix: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (_, month, day) = civil_from_days(unix.div_euclid(86_400));
    let secs = unix.rem_euclid(86_400);
    format!(
        "{} {:>2} {:02}:{:02}:{:02}",
        MONTHS[(month - 1) as usize],
        day,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calendar_round_trips() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        for d in [-800_000, -1, 0, 59, 365, 19_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
    }

    #[test]
    fn syslog_stamp_shape() {
        // 2026-11-25 13:16:42 UTC
        let t = days_from_civil(2026, 11, 25) * 86_400 + 13 * 3600 + 16 * 60 + 42;
        assert_eq!(syslog_timestamp(t), "Nov 25 13:16:42");
        assert_eq!(
            syslog_timestamp(days_from_civil(2026, 1, 5) * 86_400),
            "Jan  5 00:00:00"
        );
    }

    #[test]
    fn backoff_doubles_to_its_cap_with_jitter_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let waits: Vec<Duration> = (0..8).map(|_| b.next_wait()).collect();
        let s = time_scale();
        assert!(waits[0] >= Duration::from_millis(500).mul_f64(s));
        assert!(waits[0] <= Duration::from_secs(1).mul_f64(s));
        assert!(waits[7] >= Duration::from_secs(15).mul_f64(s));
        assert!(waits[7] <= Duration::from_secs(30).mul_f64(s));
        b.reset();
        assert!(b.next_wait() <= Duration::from_secs(1).mul_f64(s));
    }
}
