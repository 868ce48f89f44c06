//! Multiqueue (`google_set_multiqueue`, 2.8's algorithm done natively): every
//! virtio-net NIC gets all the combined channels it offers (ethtool's netlink family, the
//! `ethtool` program only on kernels without it); each virtio-net input/output queue
//! interrupt goes to the CPU of its queue number (INTx interrupts to CPU 0); each transmit
//! queue `q` of `Q` gets the XPS CPUs `q, q+Q, q+2Q, ...` as a kernel CPU mask, right for
//! any CPU count. Each change prints one line; values already right are left alone.

use std::process::Command;
use std::time::Duration;

use super::sysfs::{cpu_mask, Tree};
use crate::error::{Error, Result};
use crate::netlink::ethtool::{Combined, GenlSocket};

/// The virtio-net driver's device directory.
pub(crate) const VIRTIO_NET_DRIVER: &str = "sys/bus/virtio/drivers/virtio_net";

/// Reading and setting a NIC's combined channels.
pub trait ChannelControl {
    /// The device's combined channels.
    fn combined(&mut self, dev: &str) -> Result<Combined>;
    /// Sets its combined channel count.
    fn set_combined(&mut self, dev: &str, count: u32) -> Result<()>;
}

/// The system's channels: ethtool netlink, else the `ethtool` program.
#[derive(Default)]
pub(crate) struct SystemChannels {
    genl: Option<std::result::Result<GenlSocket, String>>,
}

impl SystemChannels {
    fn socket(&mut self) -> Option<&mut GenlSocket> {
        let genl = self.genl.get_or_insert_with(|| {
            GenlSocket::open().map_err(|e| {
                debug!(
                    "ethtool netlink is not available ({}); using the ethtool program.",
                    e
                );
                e.to_string()
            })
        });
        genl.as_mut().ok()
    }
}

const ETHTOOL_TIMEOUT: Duration = Duration::from_secs(10);

fn ethtool_program() -> Result<std::path::PathBuf> {
    crate::exec::find_program("ethtool").ok_or_else(|| Error::Command {
        program: "ethtool".into(),
        detail: "not found, and the kernel has no ethtool netlink family".into(),
    })
}

/// The two `Combined:` values of `ethtool -l` output (maximum, then current).
pub(crate) fn parse_ethtool_l(text: &str) -> Option<Combined> {
    let mut values = text.lines().filter_map(|l| {
        let v = l.trim().strip_prefix("Combined:")?.trim();
        Some(if v == "n/a" { 0 } else { v.parse().ok()? })
    });
    Some(Combined {
        max: values.next()?,
        count: values.next()?,
    })
}

impl ChannelControl for SystemChannels {
    fn combined(&mut self, dev: &str) -> Result<Combined> {
        if let Some(sock) = self.socket() {
            return sock.combined(dev);
        }
        let mut cmd = Command::new(ethtool_program()?);
        cmd.args(["-l", dev]);
        let out = crate::exec::run(cmd, ETHTOOL_TIMEOUT)?.checked("ethtool")?;
        parse_ethtool_l(&out.text()).ok_or_else(|| Error::Command {
            program: "ethtool".into(),
            detail: format!("no combined channels in its output for {}", dev),
        })
    }

    fn set_combined(&mut self, dev: &str, count: u32) -> Result<()> {
        if let Some(sock) = self.socket() {
            return sock.set_combined(dev, count);
        }
        let mut cmd = Command::new(ethtool_program()?);
        cmd.args(["-L", dev, "combined", &count.to_string()]);
        crate::exec::run(cmd, ETHTOOL_TIMEOUT)?.checked("ethtool")?;
        Ok(())
    }
}

/// The virtio-net devices (`virtioN`) and their interfaces.
pub(crate) fn virtio_nics(tree: &Tree) -> Vec<(String, Vec<String>)> {
    tree.list(VIRTIO_NET_DRIVER)
        .into_iter()
        .filter(|d| d.starts_with("virtio"))
        .map(|d| {
            let ifaces = tree.list(&format!("{}/{}/net", VIRTIO_NET_DRIVER, d));
            (d, ifaces)
        })
        .collect()
}

/// The CPU an interrupt handler named `action` belongs on, for the virtio device `dev`:
/// `dev` itself (INTx) -> 0, `dev-input.Q` / `dev-output.Q` -> Q (modulo the CPUs).
pub(crate) fn irq_cpu(action: &str, dev: &str, ncpus: usize) -> Option<usize> {
    if action == dev {
        return Some(0);
    }
    let rest = action.strip_prefix(dev)?.strip_prefix('-')?;
    let q = rest
        .strip_prefix("input.")
        .or_else(|| rest.strip_prefix("output."))?;
    let q: usize = q.parse().ok()?;
    Some(q % ncpus.max(1))
}

/// The XPS CPUs of each of `queues` transmit queues: queue q gets q, q+Q, ... below
/// `ncpus` (a queue beyond the CPU count gets none).
pub(crate) fn xps_cpus(queues: usize, ncpus: usize) -> Vec<Vec<usize>> {
    (0..queues)
        .map(|q| (q..ncpus).step_by(queues.max(1)).collect())
        .collect()
}

/// Runs the step on `tree` with the system's channel control.
pub(crate) fn run(tree: &Tree) {
    run_with(tree, &mut SystemChannels::default());
}

/// Runs the step on `tree` with `channels`.
pub fn run_with(tree: &Tree, channels: &mut dyn ChannelControl) {
    info!("Running google_set_multiqueue.");
    let ncpus = tree.cpu_count();
    let nics = virtio_nics(tree);
    for (_, ifaces) in &nics {
        for iface in ifaces {
            set_channels(channels, iface);
        }
    }
    for irq in tree.list("proc/irq") {
        if irq.parse::<u32>().is_err() {
            continue;
        }
        for action in tree.list(&format!("proc/irq/{}", irq)) {
            let Some((dev, cpu)) = nics
                .iter()
                .find_map(|(dev, _)| irq_cpu(&action, dev, ncpus).map(|c| (dev, c)))
            else {
                continue;
            };
            let rel = format!("proc/irq/{}/smp_affinity_list", irq);
            tree.set(
                &rel,
                &cpu.to_string(),
                &format!("Setting /{} to {} for device {}.", rel, cpu, dev),
            );
        }
    }
    for (_, ifaces) in &nics {
        for iface in ifaces {
            let queues: Vec<String> = tree
                .list(&format!("sys/class/net/{}/queues", iface))
                .into_iter()
                .filter(|q| q.starts_with("tx-"))
                .collect();
            for (q, cpus) in queues.iter().zip(xps_cpus(queues.len(), ncpus)) {
                if cpus.is_empty() {
                    continue;
                }
                let rel = format!("sys/class/net/{}/queues/{}/xps_cpus", iface, q);
                let mask = cpu_mask(&cpus, ncpus);
                tree.set(
                    &rel,
                    &mask,
                    &format!("Queue {} XPS={} for {}.", q, mask, iface),
                );
            }
        }
    }
}

fn set_channels(channels: &mut dyn ChannelControl, iface: &str) {
    let combined = match channels.combined(iface) {
        Ok(c) => c,
        Err(e) => {
            info!(
                "ethtool: {} does not support virtionet multiqueue ({}).",
                iface, e
            );
            return;
        }
    };
    if combined.max <= 1 || combined.count == combined.max {
        return;
    }
    match channels.set_combined(iface, combined.max) {
        Ok(()) => info!("Set channels for {} to {}.", iface, combined.max),
        Err(e) => warn!(
            "Could not set channels for {} to {}: {}",
            iface, combined.max, e
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interrupts_follow_their_queue_numbers() {
        assert_eq!(irq_cpu("virtio1-input.3", "virtio1", 8), Some(3));
        assert_eq!(irq_cpu("virtio1-output.9", "virtio1", 8), Some(1));
        assert_eq!(irq_cpu("virtio1", "virtio1", 8), Some(0));
        assert_eq!(irq_cpu("virtio1-config", "virtio1", 8), None);
        assert_eq!(irq_cpu("virtio10-input.0", "virtio1", 8), None);
    }

    #[test]
    fn xps_spreads_cpus_over_queues() {
        assert_eq!(xps_cpus(2, 5), vec![vec![0, 2, 4], vec![1, 3]]);
        assert_eq!(xps_cpus(4, 2), vec![vec![0], vec![1], vec![], vec![]]);
        assert_eq!(xps_cpus(1, 3), vec![vec![0, 1, 2]]);
    }

    #[test]
    fn ethtool_program_output_is_read() {
        let text = "Channel parameters for eth0:\nPre-set maximums:\nRX:\t\tn/a\nTX:\t\tn/a\n\
                    Other:\t\tn/a\nCombined:\t4\nCurrent hardware settings:\nRX:\t\tn/a\n\
                    TX:\t\tn/a\nOther:\t\tn/a\nCombined:\t1\n";
        assert_eq!(parse_ethtool_l(text), Some(Combined { max: 4, count: 1 }));
        assert_eq!(parse_ethtool_l("nothing"), None);
    }
}
