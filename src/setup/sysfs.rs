//! The sysfs/procfs tree the tuning steps read and write, through one root (`/` on a real
//! system, a fake tree in tests): listing, reading and writing kernel attribute files, the
//! CPU count, and CPU masks in the kernel's own form (comma-separated 32-bit hex groups,
//! most significant first), which is right for any CPU count.

use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

/// A sysfs/procfs tree below a root.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// The real system.
    pub(crate) fn system() -> Tree {
        Tree::at(Path::new("/"))
    }

    /// A tree below `root`.
    pub fn at(root: &Path) -> Tree {
        Tree {
            root: root.to_path_buf(),
        }
    }

    /// The full path of `rel` (relative to the root).
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel.trim_start_matches('/'))
    }

    /// The names in a directory, sorted; empty when it is not there.
    pub(crate) fn list(&self, rel: &str) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.path(rel))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort_by(|a, b| natural_cmp(a, b));
        names
    }

    /// Whether `rel` exists.
    pub(crate) fn exists(&self, rel: &str) -> bool {
        self.path(rel).exists()
    }

    /// A file's content, trimmed; `None` when it cannot be read.
    pub(crate) fn read(&self, rel: &str) -> Option<String> {
        std::fs::read_to_string(self.path(rel))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Writes `value` to an existing attribute file (never creates one).
    pub(crate) fn write(&self, rel: &str, value: &str) -> Result<()> {
        use std::io::Write;
        let path = self.path(rel);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(&path)
            .context("open", &path)?;
        f.write_all(value.as_bytes()).context("write", &path)
    }

    /// Writes `value` unless the file already reads `value`; logs `line` when it writes and
    /// a warning when the write fails. Returns whether it wrote. An interrupt whose affinity
    /// the kernel manages itself (NVMe I/O queues: the write fails with EIO) is left as it
    /// is with an INFO line, not a warning at every boot.
    pub(crate) fn set(&self, rel: &str, value: &str, line: &str) -> bool {
        if self.read(rel).as_deref() == Some(value) {
            return false;
        }
        info!("{}", line);
        match self.write(rel, value) {
            Ok(()) => true,
            Err(e) if rel.starts_with("proc/irq/") && is_eio(&e) => {
                info!(
                    "{} is managed by the kernel; left as it is.",
                    rel.trim_end_matches("/smp_affinity_list")
                        .trim_end_matches("/smp_affinity")
                );
                false
            }
            Err(e) => {
                warn!("{}", e);
                false
            }
        }
    }

    /// The number of online CPUs (`sys/devices/system/cpu/online`), at least 1.
    pub(crate) fn cpu_count(&self) -> usize {
        self.read("sys/devices/system/cpu/online")
            .and_then(|s| parse_cpu_list(&s))
            .map(|cpus| cpus.len())
            .filter(|&n| n > 0)
            .unwrap_or(1)
    }
}

/// Orders `virtio10` after `virtio9` and `tx-10` after `tx-9`: runs of digits by value.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        let mut text = String::new();
        let mut num: Option<u64> = None;
        for c in s.chars() {
            if let Some(d) = c.to_digit(10) {
                num = Some(num.unwrap_or(0).saturating_mul(10).saturating_add(d as u64));
            } else {
                if let Some(n) = num.take() {
                    out.push((std::mem::take(&mut text), n));
                }
                text.push(c);
            }
        }
        out.push((text, num.unwrap_or(0)));
        out
    }
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}

/// A CPU list such as `0-3,8,10-11` as the CPU numbers.
pub(crate) fn parse_cpu_list(text: &str) -> Option<Vec<usize>> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.parse().ok()?, b.parse().ok()?);
                if b < a || b - a > 65_536 {
                    return None;
                }
                cpus.extend(a..=b);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

/// The kernel's text for a CPU mask over `ncpus` CPUs: 32-bit groups, most significant
/// first, separated by commas; the first group as wide as its CPUs need, the others 8 hex
/// digits (what reading `smp_affinity` or `xps_cpus` shows).
pub(crate) fn cpu_mask(cpus: &[usize], ncpus: usize) -> String {
    let ncpus = ncpus.max(1);
    let groups = ncpus.div_ceil(32);
    let mut words = vec![0u32; groups];
    for &cpu in cpus.iter().filter(|&&c| c < ncpus) {
        words[cpu / 32] |= 1 << (cpu % 32);
    }
    let top_bits = ncpus - 32 * (groups - 1);
    let top_width = top_bits.div_ceil(4);
    let mut out = format!("{:0width$x}", words[groups - 1], width = top_width);
    for w in words[..groups - 1].iter().rev() {
        out.push_str(&format!(",{:08x}", w));
    }
    out
}

/// Whether an error is the kernel's EIO (what writing a managed interrupt's affinity gives).
fn is_eio(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Io { source, .. } if source.raw_os_error() == Some(libc::EIO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_take_the_kernel_form() {
        assert_eq!(cpu_mask(&[0], 1), "1");
        assert_eq!(cpu_mask(&[1], 2), "2");
        assert_eq!(cpu_mask(&[0, 2], 4), "5");
        assert_eq!(cpu_mask(&[31], 32), "80000000");
        assert_eq!(cpu_mask(&[32], 33), "1,00000000");
        assert_eq!(cpu_mask(&[0, 32], 64), "00000001,00000001");
        assert_eq!(cpu_mask(&[64], 65), "1,00000000,00000000");
        assert_eq!(cpu_mask(&[95], 96), "80000000,00000000,00000000");
        assert_eq!(cpu_mask(&[], 8), "00");
        assert_eq!(cpu_mask(&[7], 8), "80");
    }

    #[test]
    fn cpu_lists_and_natural_order() {
        assert_eq!(parse_cpu_list("0-3,8"), Some(vec![0, 1, 2, 3, 8]));
        assert_eq!(parse_cpu_list("0"), Some(vec![0]));
        assert_eq!(parse_cpu_list("3-1"), None);
        let mut v = vec!["tx-10", "tx-9", "tx-1"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["tx-1", "tx-9", "tx-10"]);
    }
}
