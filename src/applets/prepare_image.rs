//! `google_prepare_image [--dry-run] [--remove-users]`: before capturing an image, forget
//! the users, host keys and instance id so every clone boots as a first boot
//! ([`crate::setup::prepare_image`]). Prints the plan (`--dry-run`) or what it did.

use super::{Applet, Invocation, Output};
use crate::settings::config::{Config, Paths};
use crate::setup::prepare_image;

pub(crate) static APPLET: Applet = Applet {
    name: "google_prepare_image",
    run: main,
    logger: "prepare-image",
    output: Output::Terminal,
    summary: "before capturing an image: forget users, host keys and instance id",
    usage: "[--dry-run] [--remove-users]",
};

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optflag("n", "dry-run", "print the plan, change nothing");
    opts.optflag(
        "",
        "remove-users",
        "also delete the accounts the daemon created",
    );
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    if let Some(extra) = m.free.first() {
        return inv.usage_error(format_args!("unexpected argument {} (see --help)", extra));
    }
    let config = Config::load_from(&Paths::system().config);
    let plan = match prepare_image::make_plan(m.opt_present("remove-users"), &config) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{}: {}", inv.name, e);
            return 1;
        }
    };
    let lines = prepare_image::plan_lines(&plan);
    if m.opt_present("dry-run") {
        if lines.is_empty() {
            println!("nothing to do: the image is already prepared");
        }
        for line in lines {
            println!("would {}", line);
        }
        return 0;
    }
    if lines.is_empty() {
        println!("nothing to do: the image is already prepared");
        return 0;
    }
    if prepare_image::apply(&plan, &config) {
        0
    } else {
        1
    }
}
