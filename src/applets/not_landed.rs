//! The programs whose features have not landed in this build yet: they are listed (so
//! `--install` makes their links) and exit 3 with a message.

use super::{Applet, Invocation, Output, EXIT_NOT_LANDED};

pub(crate) static DISK_EXPAND: Applet = Applet {
    name: "google_disk_expand",
    run: not_landed,
    logger: "disk-expand",
    output: Output::System,
    summary: "grow the root partition and file system to fill the disk",
    usage: "[-n] [DEVICE]",
};

fn not_landed(inv: &Invocation) -> i32 {
    eprintln!(
        "{}: not part of this build yet (its issue has not landed)",
        inv.name
    );
    EXIT_NOT_LANDED
}
