//! Local SSD tuning (`google_optimize_local_ssd`, done natively): every NVMe
//! controller's MSI interrupts pinned round-robin to one CPU each; on virtio-scsi local SSDs
//! (model `EphemeralDisk`) the original queue settings (scheduler `none`, `add_random=0`,
//! `nr_requests=512`, `rotational=0`, `rq_affinity=0`, `nomerges=1`) and the controller's
//! request interrupts spread over the CPUs; and scheduler `none` on every multi-queue disk
//! (as the Go agent does). Masks are the kernel's comma-separated 32-bit groups, right for
//! any CPU count. One line per change; values already right are left alone.

use super::sysfs::{cpu_mask, Tree};

/// The NVMe PCI driver's device directory.
pub(crate) const NVME_DRIVER: &str = "sys/bus/pci/drivers/nvme";
/// The virtio-scsi driver's device directory.
pub(crate) const VIRTIO_SCSI_DRIVER: &str = "sys/bus/virtio/drivers/virtio_scsi";
/// The model string of a local SSD behind virtio-scsi.
pub(crate) const LOCAL_SSD_MODEL: &str = "EphemeralDisk";
/// The queue settings of a local SSD besides the scheduler, as the script wrote them.
pub(crate) const QUEUE_SETTINGS: [(&str, &str); 5] = [
    ("add_random", "0"),
    ("nr_requests", "512"),
    ("rotational", "0"),
    ("rq_affinity", "0"),
    ("nomerges", "1"),
];

/// The CPU of each of `irqs` interrupts spread with the script's stride
/// (`max(1, cpus / irqs)`).
pub(crate) fn spread(irqs: usize, ncpus: usize) -> Vec<usize> {
    let ncpus = ncpus.max(1);
    let stride = (ncpus / irqs.max(1)).max(1);
    (0..irqs).map(|i| (i * stride) % ncpus).collect()
}

/// The scheduler currently chosen in a `scheduler` file (`[none] mq-deadline` -> `none`).
pub(crate) fn current_scheduler(text: &str) -> &str {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .unwrap_or(text.trim())
}

/// The interrupts whose `/proc/interrupts` line names `<dev>-request`.
pub(crate) fn request_irqs(interrupts: &str, dev: &str) -> Vec<u32> {
    let needle = format!("{}-request", dev);
    interrupts
        .lines()
        .filter(|l| l.split_whitespace().any(|w| w == needle))
        .filter_map(|l| l.split(':').next()?.trim().parse().ok())
        .collect()
}

fn pin(tree: &Tree, irq: u32, cpu: usize, ncpus: usize) {
    let mask = cpu_mask(&[cpu], ncpus);
    tree.set(
        &format!("proc/irq/{}/smp_affinity", irq),
        &mask,
        &format!("Setting IRQ {} smp_affinity to {}.", irq, mask),
    );
}

/// The scheduler to choose from a `scheduler` file: `none` when offered (or when the file
/// shows no choice list), else `noop` on an old single-queue kernel, else nothing.
pub(crate) fn wanted_scheduler(text: &str) -> Option<&'static str> {
    let offered = |name: &str| {
        text.split_whitespace()
            .any(|w| w.trim_matches(['[', ']']) == name)
    };
    if !text.contains('[') || offered("none") {
        Some("none")
    } else if offered("noop") {
        Some("noop")
    } else {
        None
    }
}

fn set_scheduler(tree: &Tree, queue: &str) {
    let rel = format!("{}/scheduler", queue);
    let Some(text) = tree.read(&rel) else { return };
    let Some(wanted) = wanted_scheduler(&text) else {
        return;
    };
    if current_scheduler(&text) != wanted {
        tree.set(&rel, wanted, &format!("Setting /{} to {}.", rel, wanted));
    }
}

/// Runs the step on `tree`.
pub fn run(tree: &Tree) {
    let ncpus = tree.cpu_count();
    let mut next_cpu = 0;
    for dev in tree.list(NVME_DRIVER) {
        let msi = format!("{}/{}/msi_irqs", NVME_DRIVER, dev);
        for irq in tree.list(&msi).iter().filter_map(|i| i.parse::<u32>().ok()) {
            pin(tree, irq, next_cpu % ncpus, ncpus);
            next_cpu += 1;
        }
    }
    let interrupts = tree.read("proc/interrupts").unwrap_or_default();
    for dev in tree
        .list(VIRTIO_SCSI_DRIVER)
        .into_iter()
        .filter(|d| d.starts_with("virtio"))
    {
        let base = format!("{}/{}", VIRTIO_SCSI_DRIVER, dev);
        let mut local = false;
        for host in tree
            .list(&base)
            .into_iter()
            .filter(|h| h.starts_with("host"))
        {
            for target in tree
                .list(&format!("{}/{}", base, host))
                .into_iter()
                .filter(|t| t.starts_with("target"))
            {
                let target_dir = format!("{}/{}/{}", base, host, target);
                for lun in tree.list(&target_dir) {
                    let lun_dir = format!("{}/{}", target_dir, lun);
                    let is_local = tree
                        .read(&format!("{}/model", lun_dir))
                        .is_some_and(|m| m.contains(LOCAL_SSD_MODEL));
                    if !is_local {
                        continue;
                    }
                    local = true;
                    for disk in tree
                        .list(&format!("{}/block", lun_dir))
                        .into_iter()
                        .filter(|d| d.starts_with("sd"))
                    {
                        let queue = format!("{}/block/{}/queue", lun_dir, disk);
                        set_scheduler(tree, &queue);
                        for (name, value) in QUEUE_SETTINGS {
                            let rel = format!("{}/{}", queue, name);
                            tree.set(
                                &rel,
                                value,
                                &format!("Setting {} {} to {}.", disk, name, value),
                            );
                        }
                    }
                }
            }
        }
        if local {
            let irqs = request_irqs(&interrupts, &dev);
            for (irq, cpu) in irqs.iter().zip(spread(irqs.len(), ncpus)) {
                pin(tree, *irq, cpu, ncpus);
            }
        }
    }
    for disk in tree.list("sys/block") {
        if tree.exists(&format!("sys/block/{}/mq", disk)) {
            let rel = format!("sys/block/{}/queue", disk);
            if tree
                .read(&format!("{}/scheduler", rel))
                .as_deref()
                .and_then(wanted_scheduler)
                == Some("none")
            {
                set_scheduler(tree, &rel);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreading_uses_the_scripts_stride() {
        assert_eq!(spread(4, 8), [0, 2, 4, 6]);
        assert_eq!(spread(3, 2), [0, 1, 0]);
        assert_eq!(spread(1, 1), [0]);
    }

    #[test]
    fn schedulers_and_request_interrupts_are_read() {
        assert_eq!(current_scheduler("[none] mq-deadline"), "none");
        assert_eq!(current_scheduler("mq-deadline [kyber] none"), "kyber");
        assert_eq!(current_scheduler("none"), "none");
        assert_eq!(wanted_scheduler("[mq-deadline] none"), Some("none"));
        assert_eq!(wanted_scheduler("noop deadline [cfq]"), Some("noop"));
        assert_eq!(wanted_scheduler("[bfq]"), None);
        let interrupts =
            "           CPU0       CPU1\n  40:  0  0  PCI-MSI 1-edge  virtio2-request\n\
                          41: 5 5 PCI-MSI virtio2-config\n 42: 1 1 x virtio20-request\n";
        assert_eq!(request_irqs(interrupts, "virtio2"), [40]);
    }
}
