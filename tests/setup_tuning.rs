//! The tuning steps (`google_set_multiqueue`, `google_optimize_local_ssd`) on fake
//! sysfs/procfs trees for 1, 2, 4, 33, 64, 65 and 96 CPUs with 1 to 16 NIC queues and NVMe
//! queues: the exact values written, against masks computed here independently (nibble by
//! nibble, then grouped by eight digits from the right), and nothing else touched.
//!
//! Run: `cargo test --features emulator,test-hooks --test integration setup_tuning::`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use gce_guest::netlink::ethtool::Combined;
use gce_guest::setup::local_ssd;
use gce_guest::setup::multiqueue::{self, ChannelControl};
use gce_guest::setup::sysfs::Tree;

use crate::common::Scratch;

const CPU_COUNTS: [usize; 7] = [1, 2, 4, 33, 64, 65, 96];
const QUEUE_COUNTS: [usize; 6] = [1, 2, 3, 4, 8, 16];
/// IRQ numbers of the virtio-net queues start here (input q = BASE + 2q, output + 1).
const NET_IRQ_BASE: usize = 24;
/// The virtio-scsi controller's request interrupts.
const SCSI_IRQS: [usize; 4] = [60, 61, 62, 63];
/// Each of the two NVMe controllers' MSI interrupts (numbers that sort differently as text).
const NVME_IRQS: [[usize; 9]; 2] = [
    [95, 96, 97, 98, 99, 100, 101, 102, 103],
    [104, 105, 106, 107, 108, 109, 110, 111, 112],
];

/// The kernel's mask text, computed another way than the code under test: one hex digit per
/// four CPUs from the top, then a comma before every eighth digit from the right.
fn expected_mask(cpus: &[usize], ncpus: usize) -> String {
    let digits = ncpus.div_ceil(4);
    let mut hex = String::new();
    for d in (0..digits).rev() {
        let nibble: u32 = cpus
            .iter()
            .filter(|&&c| c / 4 == d)
            .map(|&c| 1 << (c % 4))
            .sum();
        hex.push(char::from_digit(nibble, 16).unwrap());
    }
    let chars: Vec<char> = hex.chars().collect();
    let mut out = String::new();
    for (i, c) in chars.iter().enumerate() {
        let from_right = chars.len() - i;
        if i > 0 && from_right.is_multiple_of(8) {
            out.push(',');
        }
        out.push(*c);
    }
    out
}

struct FakeTree {
    root: PathBuf,
    /// Removes the tree when the test ends.
    _scratch: Scratch,
}

impl FakeTree {
    fn new(name: &str) -> FakeTree {
        let scratch = Scratch::new(&format!("tuning-{}", name));
        FakeTree {
            root: scratch.to_path_buf(),
            _scratch: scratch,
        }
    }

    fn file(&self, rel: &str, content: &str) {
        let p = self.root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn dir(&self, rel: &str) {
        fs::create_dir_all(self.root.join(rel)).unwrap();
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.root.join(rel)).unwrap()
    }

    /// Every file below the root with its content.
    fn snapshot(&self) -> BTreeMap<String, String> {
        fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    let rel = p.strip_prefix(base).unwrap().display().to_string();
                    out.insert(rel, fs::read_to_string(&p).unwrap());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.root, &self.root, &mut out);
        out
    }

    fn tree(&self) -> Tree {
        Tree::at(&self.root)
    }
}

/// A machine with `ncpus` CPUs, a virtio-net NIC with `queues` queues, two NVMe
/// controllers, a virtio-scsi local SSD and a persistent disk.
fn machine(ncpus: usize, queues: usize) -> FakeTree {
    let t = FakeTree::new(&format!("{}-{}", ncpus, queues));
    let all = if ncpus == 1 {
        "0".to_string()
    } else {
        format!("0-{}", ncpus - 1)
    };
    t.file("sys/devices/system/cpu/online", &format!("{}\n", all));
    t.dir("sys/bus/virtio/drivers/virtio_net/virtio1/net/eth0");
    for q in 0..queues {
        for (kind, irq) in [
            ("input", NET_IRQ_BASE + 2 * q),
            ("output", NET_IRQ_BASE + 2 * q + 1),
        ] {
            t.dir(&format!("proc/irq/{}/virtio1-{}.{}", irq, kind, q));
            t.file(
                &format!("proc/irq/{}/smp_affinity_list", irq),
                &format!("{}\n", all),
            );
        }
        t.file(
            &format!("sys/class/net/eth0/queues/tx-{}/xps_cpus", q),
            "0\n",
        );
        t.dir(&format!("sys/class/net/eth0/queues/rx-{}", q));
    }
    // Interrupts that are not queues of the NIC stay as they are.
    t.dir("proc/irq/23/virtio1-config");
    t.file("proc/irq/23/smp_affinity_list", "untouched\n");
    t.dir("proc/irq/1/i8042");
    t.file("proc/irq/1/smp_affinity_list", "untouched\n");

    for (i, irqs) in NVME_IRQS.iter().enumerate() {
        for irq in irqs {
            t.file(
                &format!(
                    "sys/bus/pci/drivers/nvme/0000:00:0{}.0/msi_irqs/{}",
                    4 + i,
                    irq
                ),
                "msix\n",
            );
            t.file(&format!("proc/irq/{}/smp_affinity", irq), "untouched\n");
        }
    }
    t.file("sys/bus/pci/drivers/nvme/new_id", "");

    let scsi = "sys/bus/virtio/drivers/virtio_scsi/virtio2/host0";
    for (lun, model, disk) in [
        ("0:0:1:0", "EphemeralDisk   ", "sdb"),
        ("0:0:2:0", "PersistentDisk  ", "sdc"),
    ] {
        let target = format!("{}/target{}/{}", scsi, &lun[..5], lun);
        t.file(&format!("{}/model", target), &format!("{}\n", model));
        let q = format!("{}/block/{}/queue", target, disk);
        t.file(&format!("{}/scheduler", q), "[mq-deadline] none\n");
        for (name, value) in [
            ("add_random", "1"),
            ("nr_requests", "256"),
            ("rotational", "1"),
            ("rq_affinity", "1"),
            ("nomerges", "0"),
        ] {
            t.file(&format!("{}/{}", q, name), &format!("{}\n", value));
        }
    }
    let mut interrupts = String::from("           CPU0\n");
    for irq in SCSI_IRQS {
        interrupts.push_str(&format!(
            " {:>3}:   10   PCI-MSI 2-edge   virtio2-request\n",
            irq
        ));
        t.file(&format!("proc/irq/{}/smp_affinity", irq), "untouched\n");
    }
    interrupts.push_str("  59:   1   PCI-MSI 2-edge   virtio2-config\n");
    t.file("proc/irq/59/smp_affinity", "untouched\n");
    t.file("proc/interrupts", &interrupts);
    t
}

/// Channels as a NIC with `max` combined channels, one in use, reports them.
struct FakeChannels {
    max: u32,
    count: u32,
    sets: Vec<(String, u32)>,
}

impl ChannelControl for FakeChannels {
    fn combined(&mut self, _dev: &str) -> gce_guest::Result<Combined> {
        Ok(Combined {
            max: self.max,
            count: self.count,
        })
    }
    fn set_combined(&mut self, dev: &str, count: u32) -> gce_guest::Result<()> {
        self.sets.push((dev.to_string(), count));
        self.count = count;
        Ok(())
    }
}

#[test]
fn multiqueue_writes_exact_affinities_and_xps_masks() {
    for ncpus in CPU_COUNTS {
        for queues in QUEUE_COUNTS {
            let t = machine(ncpus, queues);
            let before = t.snapshot();
            let mut channels = FakeChannels {
                max: queues as u32,
                count: 1,
                sets: Vec::new(),
            };
            multiqueue::run_with(&t.tree(), &mut channels);
            let case = format!("{} CPUs, {} queues", ncpus, queues);
            let want_sets = if queues > 1 {
                vec![("eth0".to_string(), queues as u32)]
            } else {
                vec![]
            };
            assert_eq!(channels.sets, want_sets, "{}", case);

            let mut expected = before.clone();
            for q in 0..queues {
                for irq in [NET_IRQ_BASE + 2 * q, NET_IRQ_BASE + 2 * q + 1] {
                    expect(
                        &mut expected,
                        format!("proc/irq/{}/smp_affinity_list", irq),
                        (q % ncpus).to_string(),
                    );
                }
                let cpus: Vec<usize> = (0..ncpus).filter(|c| c % queues == q).collect();
                if !cpus.is_empty() {
                    expect(
                        &mut expected,
                        format!("sys/class/net/eth0/queues/tx-{}/xps_cpus", q),
                        expected_mask(&cpus, ncpus),
                    );
                }
            }
            assert_eq!(t.snapshot(), expected, "{}", case);

            // A second run changes nothing and sets no channels.
            let mut again = FakeChannels {
                max: queues as u32,
                count: queues as u32,
                sets: Vec::new(),
            };
            multiqueue::run_with(&t.tree(), &mut again);
            assert!(again.sets.is_empty());
            assert_eq!(t.snapshot(), expected, "{} (second run)", case);
        }
    }
}

#[test]
fn local_ssd_pins_nvme_and_tunes_the_ephemeral_disk_only() {
    for ncpus in CPU_COUNTS {
        let t = machine(ncpus, 2);
        let before = t.snapshot();
        local_ssd::run(&t.tree());
        let mut expected = before.clone();
        let nvme: Vec<usize> = NVME_IRQS.iter().flatten().copied().collect();
        for (i, irq) in nvme.iter().enumerate() {
            expected.insert(
                format!("proc/irq/{}/smp_affinity", irq),
                expected_mask(&[i % ncpus], ncpus),
            );
        }
        let stride = (ncpus / SCSI_IRQS.len()).max(1);
        for (i, irq) in SCSI_IRQS.iter().enumerate() {
            expected.insert(
                format!("proc/irq/{}/smp_affinity", irq),
                expected_mask(&[(i * stride) % ncpus], ncpus),
            );
        }
        let q =
            "sys/bus/virtio/drivers/virtio_scsi/virtio2/host0/target0:0:1/0:0:1:0/block/sdb/queue";
        for (name, value) in [
            ("scheduler", "none"),
            ("add_random", "0"),
            ("nr_requests", "512"),
            ("rotational", "0"),
            ("rq_affinity", "0"),
            ("nomerges", "1"),
        ] {
            expected.insert(format!("{}/{}", q, name), value.to_string());
        }
        assert_eq!(t.snapshot(), expected, "{} CPUs", ncpus);
        local_ssd::run(&t.tree());
        assert_eq!(t.snapshot(), expected, "{} CPUs (second run)", ncpus);
    }
}

#[test]
fn masks_match_known_kernel_texts() {
    // What the kernel itself prints, to tie the independent computation to reality.
    assert_eq!(expected_mask(&[0], 1), "1");
    assert_eq!(expected_mask(&[0, 1, 2, 3], 4), "f");
    assert_eq!(expected_mask(&[32], 33), "1,00000000");
    assert_eq!(
        expected_mask(&(0..64).collect::<Vec<_>>(), 64),
        "ffffffff,ffffffff"
    );
    assert_eq!(expected_mask(&[64], 96), "00000001,00000000,00000000");
    assert_eq!(expected_mask(&[64], 65), "1,00000000,00000000");
}

/// Records that `key` should read `value` after the run: written only when it did not
/// already read so (values are written without a newline).
fn expect(expected: &mut BTreeMap<String, String>, key: String, value: String) {
    if expected.get(&key).map(|v| v.trim()) != Some(value.as_str()) {
        expected.insert(key, value);
    }
}

#[test]
fn the_mq_scheduler_pass_sets_none_on_multiqueue_disks_only() {
    let t = FakeTree::new("mq");
    t.file("sys/devices/system/cpu/online", "0-1\n");
    t.dir("sys/block/nvme0n1/mq");
    t.file("sys/block/nvme0n1/queue/scheduler", "[mq-deadline] none\n");
    t.file("sys/block/sda/queue/scheduler", "noop deadline [cfq]\n");
    t.file("sys/block/vdb/queue/scheduler", "[bfq] kyber\n");
    t.dir("sys/block/vdb/mq");
    local_ssd::run(&t.tree());
    assert_eq!(t.read("sys/block/nvme0n1/queue/scheduler"), "none");
    assert_eq!(
        t.read("sys/block/sda/queue/scheduler"),
        "noop deadline [cfq]\n"
    );
    assert_eq!(t.read("sys/block/vdb/queue/scheduler"), "[bfq] kyber\n");
}
