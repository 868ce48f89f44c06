//! First-boot ordering: `READY=1` to systemd's `NOTIFY_SOCKET` (a datagram, path or
//! abstract `@name`, no libsystemd) once the steps are done, and
//! `/run/google-instance-setup.done` (instance id and time) for init systems without
//! sd_notify — sshd, the startup scripts and OpenRC/busybox scripts can wait for it.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil;

/// The done marker.
pub const DONE_MARKER: &str = "/run/google-instance-setup.done";

/// `YYYY-MM-DDTHH:MM:SSZ` for seconds since the epoch.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (y, m, d) = crate::timing::civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        y,
        m,
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The marker's content: `instance_id=<id>` and `time=<RFC 3339>` lines (shell-sourceable).
pub fn done_content(instance_id: Option<&str>, unix: i64) -> String {
    format!(
        "instance_id={}\ntime={}\n",
        instance_id.unwrap_or(""),
        rfc3339(unix)
    )
}

/// Writes the done marker (atomically, 0644).
pub fn write_done_marker(instance_id: Option<&str>) -> Result<()> {
    let path = Path::new(DONE_MARKER);
    fsutil::create_parent(path)?;
    let content = done_content(instance_id, crate::timing::unix_now());
    fsutil::write_atomic(path, content.as_bytes(), 0o644)
}

/// The socket address `NOTIFY_SOCKET` names: a path, or `@name` for the abstract namespace.
pub fn notify_address(value: &str) -> Result<SocketAddr> {
    let bad = |e: std::io::Error| Error::sys("address NOTIFY_SOCKET", e);
    match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes()).map_err(bad)
        }
        None => SocketAddr::from_pathname(value).map_err(bad),
    }
}

/// Sends `READY=1` when `NOTIFY_SOCKET` is set; a failure is logged.
pub fn ready() {
    let Some(value) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let value = value.to_string_lossy().into_owned();
    let sent = notify_address(&value).and_then(|addr| {
        let sock = UnixDatagram::unbound().map_err(|e| Error::sys("create socket", e))?;
        sock.send_to_addr(b"READY=1", &addr)
            .map_err(|e| Error::sys("send to NOTIFY_SOCKET", e))
    });
    match sent {
        Ok(_) => debug!("Told the service manager setup is done."),
        Err(e) => warn!("Could not notify the service manager: {}", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            done_content(Some("1234567890123456789"), 86_399),
            "instance_id=1234567890123456789\ntime=1970-01-01T23:59:59Z\n"
        );
    }

    #[test]
    fn ready_reaches_path_and_abstract_sockets() {
        let dir = std::env::temp_dir().join(format!(
            "gce-guest-notify-{}-{}",
            std::process::id(),
            crate::timing::random_u64()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = notify_address(path.to_str().unwrap()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 16];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        let name = format!("gce-guest-test-{}", crate::timing::random_u64());
        let abstract_addr = notify_address(&format!("@{}", name)).unwrap();
        let listener = UnixDatagram::bind_addr(&abstract_addr).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &abstract_addr)
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
