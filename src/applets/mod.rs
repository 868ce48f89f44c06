//! The applet table and the dispatcher: which program runs is chosen by the basename of
//! `argv[0]` (busybox style, through symlinks made by `gce-guest --install`) or by the first
//! argument of `gce-guest APPLET ARGS...`. Options every applet shares (`--help`,
//! `--version`, `-d/--debug`, `--root DIR`) are handled here, once.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

mod accounts_daemon;
mod clock_skew_daemon;
mod disk_expand;
#[cfg(feature = "emulator")]
mod emulator;
mod guest_daemon;
mod install;
mod instance_setup;
mod ip_forwarding_daemon;
mod metadata_get;
mod nvme_id;
mod optimize_local_ssd;
mod prepare_image;
mod root;
mod script_runner;
mod set_multiqueue;

/// Where an applet's log lines go by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Output {
    /// A daemon or boot step: syslog and the serial console (stderr too under `--debug`).
    System,
    /// A command a person or script runs: stderr.
    Terminal,
}

/// One program of the multicall binary.
pub(crate) struct Applet {
    /// The executable name (what the symlink is called).
    pub name: &'static str,
    /// Its entry point; returns the exit status.
    pub run: fn(&Invocation) -> i32,
    /// The logger name its lines carry (the Python package's names).
    pub logger: &'static str,
    /// Where its log lines go.
    pub output: Output,
    /// One line for `--list` and `--help`.
    pub summary: &'static str,
    /// The usage text after the name, for `--help`.
    pub usage: &'static str,
}

/// What an applet is started with, after the shared options are taken out.
#[derive(Debug)]
pub(crate) struct Invocation {
    /// The applet's name as found in the table.
    pub name: &'static str,
    /// The remaining arguments.
    pub args: Vec<String>,
}

impl Invocation {
    /// Prints `APPLET: msg` to stderr and gives the exit status for bad usage.
    pub fn usage_error(&self, msg: impl std::fmt::Display) -> i32 {
        eprintln!("{}: {}", self.name, msg);
        EXIT_USAGE
    }

    /// Parses the applet's own options; on bad usage, the message is printed and the exit
    /// status is the error.
    pub fn parse(&self, opts: &getopts::Options) -> Result<getopts::Matches, i32> {
        opts.parse(&self.args).map_err(|e| self.usage_error(e))
    }

    /// Runs `run` when no argument is left, else a usage error.
    pub fn without_arguments(&self, run: impl FnOnce() -> i32) -> i32 {
        match self.args.first() {
            Some(extra) => {
                self.usage_error(format_args!("unexpected argument {} (see --help)", extra))
            }
            None => run(),
        }
    }
}

/// Exit status for an unknown applet (the shell's "command not found").
pub(crate) const EXIT_UNKNOWN: i32 = 127;
/// Exit status for bad usage.
pub(crate) const EXIT_USAGE: i32 = 2;

/// The name the dispatcher answers to as a multiplexer.
pub(crate) const MULTIPLEXER: &str = "gce-guest";

const COMMON_USAGE: &str = "\
Common options:
  -d, --debug      also log to stderr, including DEBUG lines
      --root DIR   chroot into DIR first (bind-mounting /proc, /sys, /dev)
      --help       show this help
      --version    show the version";

/// Every applet, sorted by name (a unit test keeps it so). Each is declared in its own
/// module.
pub(crate) static APPLETS: &[&Applet] = &[
    &accounts_daemon::APPLET,
    &clock_skew_daemon::APPLET,
    &disk_expand::APPLET,
    &guest_daemon::APPLET,
    &instance_setup::APPLET,
    &ip_forwarding_daemon::APPLET,
    #[cfg(feature = "emulator")]
    &emulator::APPLET,
    &metadata_get::APPLET,
    &script_runner::APPLET,
    &ip_forwarding_daemon::NETWORK_DAEMON_APPLET,
    &nvme_id::APPLET,
    &optimize_local_ssd::APPLET,
    &prepare_image::APPLET,
    &set_multiqueue::APPLET,
];

/// Finds an applet by exact name.
pub(crate) fn find(name: &str) -> Option<&'static Applet> {
    APPLETS
        .binary_search_by(|a| a.name.cmp(name))
        .ok()
        .map(|i| APPLETS[i])
}

/// The version line: crate version and the git commit it was built from.
pub(crate) fn version_line() -> String {
    format!(
        "{} {} ({})",
        MULTIPLEXER,
        env!("CARGO_PKG_VERSION"),
        env!("GCE_GUEST_COMMIT")
    )
}

fn basename(arg: &OsString) -> String {
    let s = arg.to_string_lossy();
    let s = s.strip_prefix('-').unwrap_or(&s);
    Path::new(s)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Runs the program `argv` names and returns its exit status.
pub fn dispatch(argv: Vec<OsString>) -> i32 {
    let mut args: Vec<String> = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let invoked = argv.first().map(basename).unwrap_or_default();
    let name = if invoked.starts_with(MULTIPLEXER) || invoked.is_empty() {
        args.drain(..1.min(args.len()));
        match multiplexer_options(&mut args) {
            Some(status) => return status,
            None => args.remove(0),
        }
    } else {
        args.remove(0);
        invoked
    };
    let name = Path::new(&name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or(name);
    let Some(applet) = find(&name) else {
        eprintln!("{}: applet not found", name);
        return EXIT_UNKNOWN;
    };
    run_applet(applet, args)
}

/// Handles `gce-guest` with no applet: `--list`, `--install`, `--help`, `--version`, and a
/// leading `--root DIR`. Returns `None` when `args[0]` now names an applet.
fn multiplexer_options(args: &mut Vec<String>) -> Option<i32> {
    if args.first().map(String::as_str) == Some("--root") && args.len() >= 2 {
        // `gce-guest --root DIR APPLET ...`: move it after the applet name.
        let root: Vec<String> = args.drain(..2).collect();
        if args.is_empty() {
            eprintln!("{}: --root needs an applet to run", MULTIPLEXER);
            return Some(EXIT_USAGE);
        }
        args.splice(1..1, root);
    }
    match args.first().map(String::as_str) {
        None | Some("--help") | Some("-h") => {
            print_multiplexer_help();
            Some(if args.is_empty() { EXIT_USAGE } else { 0 })
        }
        Some("--version") => {
            println!("{}", version_line());
            Some(0)
        }
        Some("--list") => {
            for a in APPLETS.iter() {
                println!("{}", a.name);
            }
            Some(0)
        }
        Some("--install") => Some(install::main(&args[1..])),
        Some(opt) if opt.starts_with('-') => {
            eprintln!("{}: unknown option {}", MULTIPLEXER, opt);
            Some(EXIT_USAGE)
        }
        Some(_) => None,
    }
}

fn print_multiplexer_help() {
    println!("{}\n", version_line());
    println!(
        "Usage: {} APPLET [ARGS...]   (or call it through a link named APPLET)",
        MULTIPLEXER
    );
    println!(
        "       {} --list | --install [-s] [-f] [DIR] | --version\n",
        MULTIPLEXER
    );
    println!("Applets:");
    for a in APPLETS.iter() {
        println!("  {:<32} {}", a.name, a.summary);
    }
}

/// Takes the shared options out of `args`, then runs the applet.
fn run_applet(applet: &'static Applet, args: Vec<String>) -> i32 {
    let mut rest = Vec::with_capacity(args.len());
    let mut debug = false;
    let mut root: Option<PathBuf> = None;
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        match arg.as_str() {
            "--" => {
                rest.push(arg);
                rest.extend(iter.by_ref());
            }
            "-d" | "--debug" => debug = true,
            "--help" | "-h" => {
                println!(
                    "Usage: {} {}\n\n{}.\n\n{}",
                    applet.name, applet.usage, applet.summary, COMMON_USAGE
                );
                return 0;
            }
            "--version" => {
                println!("{}", version_line());
                return 0;
            }
            "--root" => match iter.next() {
                Some(dir) => root = Some(PathBuf::from(dir)),
                None => {
                    eprintln!("{}: --root needs a directory", applet.name);
                    return EXIT_USAGE;
                }
            },
            _ if arg.starts_with("--root=") => root = Some(PathBuf::from(&arg["--root=".len()..])),
            _ => rest.push(arg),
        }
    }
    let system = applet.output == Output::System;
    crate::log::init(
        applet.logger,
        crate::log::Sinks {
            syslog: system,
            console: system,
            stderr: !system,
            debug,
        },
    );
    if let Some(dir) = root {
        if let Err(e) = root::enter(&dir) {
            eprintln!("{}: {}", applet.name, e);
            return 1;
        }
    }
    (applet.run)(&Invocation {
        name: applet.name,
        args: rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_sorted_and_unique() {
        for pair in APPLETS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} before {}",
                pair[0].name,
                pair[1].name
            );
        }
    }

    #[test]
    fn every_applet_is_found_by_name() {
        for a in APPLETS.iter() {
            assert_eq!(find(a.name).map(|f| f.name), Some(a.name));
        }
        assert!(find("google_nothing").is_none());
    }

    #[test]
    fn argv0_is_reduced_to_a_basename_without_a_login_dash() {
        assert_eq!(
            basename(&OsString::from("/usr/bin/google_accounts_daemon")),
            "google_accounts_daemon"
        );
        assert_eq!(basename(&OsString::from("-gce-guest")), "gce-guest");
    }

    #[test]
    fn unknown_applets_exit_127() {
        let argv = vec![
            OsString::from("gce-guest"),
            OsString::from("no_such_applet"),
        ];
        assert_eq!(dispatch(argv), EXIT_UNKNOWN);
        assert_eq!(
            dispatch(vec![OsString::from("/bin/weird-name")]),
            EXIT_UNKNOWN
        );
    }
}
