//! The programs whose features have not landed in this build yet: they are listed (so
//! `--install` makes their links) and exit 3 with a message.

use super::{Applet, Invocation, Output, EXIT_NOT_LANDED};

pub(crate) static INSTANCE_SETUP: Applet = Applet {
    name: "google_instance_setup",
    run: not_landed,
    logger: "instance-setup",
    output: Output::System,
    summary: "boot-time setup: config, host keys, boto, local SSD, multiqueue, hostname",
    usage: "[-d]",
};

pub(crate) static OPTIMIZE_LOCAL_SSD: Applet = Applet {
    name: "google_optimize_local_ssd",
    run: not_landed,
    logger: "optimize-local-ssd",
    output: Output::System,
    summary: "tune local SSD queues and IRQ affinity",
    usage: "",
};

pub(crate) static SET_MULTIQUEUE: Applet = Applet {
    name: "google_set_multiqueue",
    run: not_landed,
    logger: "set-multiqueue",
    output: Output::System,
    summary: "spread virtio-net and NVMe interrupts and XPS over the CPUs",
    usage: "",
};

fn not_landed(inv: &Invocation) -> i32 {
    eprintln!("{}", message(inv.name));
    EXIT_NOT_LANDED
}

/// What a stub says on stderr.
fn message(name: &str) -> String {
    format!(
        "{}: not part of this build yet (its issue has not landed)",
        name
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Applets whose issues have not landed stay registered (so `--install` links them),
    /// say so and exit 3. A unit test of the stub itself, so it holds whichever applets are
    /// still stubs (running one from the outside would run the real program once it lands).
    #[test]
    fn applets_not_yet_landed_say_so_and_exit_3() {
        let inv = Invocation {
            name: "google_not_landed_example",
            args: Vec::new(),
        };
        assert_eq!(not_landed(&inv), 3);
        assert_eq!(EXIT_NOT_LANDED, 3);
        assert!(message(inv.name).contains("not part of this build yet"));
        assert!(message(inv.name).starts_with("google_not_landed_example: "));
    }
}
