//! The network interfaces the kernel has, by MAC address: `/sys/class/net/<name>/address`
//! and `ifindex`, read fresh on every update (NICs can be hot-plugged). No ioctl.

use std::io;
use std::path::Path;

use super::plan::normalize_mac;

/// Where the kernel lists network interfaces.
pub(crate) const SYS_CLASS_NET: &str = "/sys/class/net";

/// One network interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Its name (`eth0`, `ens4`).
    pub name: String,
    /// Its index, what routes refer to.
    pub ifindex: u32,
    /// Its MAC address in lower case.
    pub mac: String,
}

/// Every interface under `dir` (normally [`SYS_CLASS_NET`]), in directory order, that has
/// a MAC address and an index. An interface that vanishes while it is read, or has no
/// Ethernet-style address (`lo` has `00:00:00:00:00:00`, tunnels have none), is left out;
/// only an unreadable directory is an error.
pub(crate) fn read_links(dir: &Path) -> io::Result<Vec<Link>> {
    let mut links = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = dir.join(&name);
        let mac = std::fs::read_to_string(path.join("address"))
            .ok()
            .and_then(|a| normalize_mac(&a));
        let ifindex = std::fs::read_to_string(path.join("ifindex"))
            .ok()
            .and_then(|i| i.trim().parse::<u32>().ok());
        match (mac, ifindex) {
            (Some(mac), Some(ifindex)) if mac != "00:00:00:00:00:00" => {
                links.push(Link { name, ifindex, mac })
            }
            _ => {}
        }
    }
    Ok(links)
}

/// The interface with MAC address `mac` (lower case). Several may share one (a VLAN on its
/// parent, a bond on its slaves): the lowest index wins, the one created first.
pub(crate) fn find_by_mac<'a>(links: &'a [Link], mac: &str) -> Option<&'a Link> {
    links
        .iter()
        .filter(|l| l.mac == mac)
        .min_by_key(|l| l.ifindex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(entries: &[(&str, Option<&str>, Option<&str>)]) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "gce-nics-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        for (name, address, ifindex) in entries {
            let nic = dir.join(name);
            std::fs::create_dir_all(&nic).unwrap();
            if let Some(a) = address {
                std::fs::write(nic.join("address"), format!("{}\n", a)).unwrap();
            }
            if let Some(i) = ifindex {
                std::fs::write(nic.join("ifindex"), format!("{}\n", i)).unwrap();
            }
        }
        dir
    }

    #[test]
    fn links_are_read_by_mac_and_index() {
        let dir = fake_sysfs(&[
            ("lo", Some("00:00:00:00:00:00"), Some("1")),
            ("eth0", Some("42:01:0A:80:00:02"), Some("2")),
            ("eth0.100", Some("42:01:0a:80:00:02"), Some("7")),
            ("eth1", Some("42:01:0a:80:00:03"), Some("3")),
            ("tun0", Some(""), Some("4")),
            ("half", Some("42:01:0a:80:00:09"), None),
            ("odd", Some("42:01:0a:80:00:08"), Some("x")),
        ]);
        let links = read_links(&dir).unwrap();
        let mut names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["eth0", "eth0.100", "eth1"]);
        assert_eq!(
            find_by_mac(&links, "42:01:0a:80:00:02").map(|l| (l.name.as_str(), l.ifindex)),
            Some(("eth0", 2))
        );
        assert_eq!(
            find_by_mac(&links, "42:01:0a:80:00:03").map(|l| l.name.as_str()),
            Some("eth1")
        );
        assert_eq!(find_by_mac(&links, "42:01:0a:80:00:09"), None);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            read_links(&dir).is_err(),
            "a missing directory is an error, not 'no NICs'"
        );
    }
}
