//! Bringing up secondary NICs and DHCPv6 on the primary NIC, as the 2.8 network setup did:
//! which commands to run is decided by pure functions; [`run_steps`] runs them.
//!
//! - Secondary NICs, when the set of them changes: `[NetworkInterfaces] dhcp_command` if set
//!   (split on spaces, no shell, no interface names appended — as 2.8 ran it), else
//!   `dhclient -x IFS...` then `dhclient IFS...` (with `-sf dhclient_script` when that file
//!   exists, as on EL6), else busybox `udhcpc -b -i IF -p /run/udhcpc.IF.pid` for each NIC
//!   that has no live `udhcpc` of ours yet.
//! - DHCPv6 on the primary NIC, when its metadata entry carries `dhcpv6Refresh`:
//!   `dhclient -1 -6 -pf ... -lf ... IF` (the Go agent's command) or busybox
//!   `udhcpc6 -b -i IF -p ...`, skipped while the client it started is still running. Not
//!   done when `dhcp_command` is set (that command owns the image's DHCP).

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where pid and lease files go.
pub const RUN_DIR: &str = "/run";
/// How long one DHCP command may take (dhclient waits up to a minute for a lease).
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The DHCP client an image has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DhcpClient {
    /// ISC `dhclient` (both families).
    Dhclient(PathBuf),
    /// busybox `udhcpc` (IPv4) or `udhcpc6` (IPv6).
    Udhcpc(PathBuf),
}

/// Finds the image's IPv4 DHCP client: `dhclient`, else `udhcpc`.
pub fn find_client() -> Option<DhcpClient> {
    crate::exec::find_program("dhclient")
        .map(DhcpClient::Dhclient)
        .or_else(|| crate::exec::find_program("udhcpc").map(DhcpClient::Udhcpc))
}

/// Finds the image's IPv6 DHCP client: `dhclient`, else `udhcpc6`.
pub fn find_client6() -> Option<DhcpClient> {
    crate::exec::find_program("dhclient")
        .map(DhcpClient::Dhclient)
        .or_else(|| crate::exec::find_program("udhcpc6").map(DhcpClient::Udhcpc))
}

/// One command to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Run only if the step before succeeded.
    pub needs_previous: bool,
    /// Skip when this pid file names a running process (a client we started is alive).
    pub pidfile: Option<PathBuf>,
}

fn step(argv: Vec<String>) -> Step {
    Step {
        argv,
        needs_previous: false,
        pidfile: None,
    }
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// The steps bringing up the secondary NICs `names` (not empty).
pub fn secondary_steps(
    names: &[String],
    dhcp_command: &str,
    client: Option<&DhcpClient>,
    dhclient_script: Option<&Path>,
) -> Vec<Step> {
    let custom = crate::exec::expand_template(dhcp_command, &[]);
    if !custom.is_empty() {
        return vec![step(custom)];
    }
    match client {
        None => Vec::new(),
        Some(DhcpClient::Dhclient(program)) => {
            let mut base = vec![display(program)];
            if let Some(script) = dhclient_script {
                base.extend(["-sf".to_string(), display(script)]);
            }
            let release = [base.clone(), vec!["-x".to_string()], names.to_vec()].concat();
            let renew = [base, names.to_vec()].concat();
            vec![
                step(release),
                Step {
                    needs_previous: true,
                    ..step(renew)
                },
            ]
        }
        Some(DhcpClient::Udhcpc(program)) => names
            .iter()
            .map(|name| {
                let pidfile = PathBuf::from(RUN_DIR).join(format!("udhcpc.{}.pid", name));
                let argv = vec![
                    display(program),
                    "-b".into(),
                    "-i".into(),
                    name.clone(),
                    "-p".into(),
                    display(&pidfile),
                ];
                Step {
                    pidfile: Some(pidfile),
                    ..step(argv)
                }
            })
            .collect(),
    }
}

/// The step asking DHCPv6 for an address on the primary NIC `name`.
pub fn dhcpv6_steps(name: &str, client: Option<&DhcpClient>) -> Vec<Step> {
    match client {
        None => Vec::new(),
        Some(DhcpClient::Dhclient(program)) => {
            let pidfile =
                PathBuf::from(RUN_DIR).join(format!("dhclient.google-guest.{}.ipv6.pid", name));
            let lease =
                PathBuf::from(RUN_DIR).join(format!("dhclient.google-guest.{}.ipv6.lease", name));
            let argv = vec![
                display(program),
                "-1".into(),
                "-6".into(),
                "-pf".into(),
                display(&pidfile),
                "-lf".into(),
                display(&lease),
                name.to_string(),
            ];
            vec![Step {
                pidfile: Some(pidfile),
                ..step(argv)
            }]
        }
        Some(DhcpClient::Udhcpc(program)) => {
            let pidfile = PathBuf::from(RUN_DIR).join(format!("udhcpc6.{}.pid", name));
            let argv = vec![
                display(program),
                "-b".into(),
                "-i".into(),
                name.to_string(),
                "-p".into(),
                display(&pidfile),
            ];
            vec![Step {
                pidfile: Some(pidfile),
                ..step(argv)
            }]
        }
    }
}

/// Whether a pid file names a running process.
fn running(pidfile: &Path) -> bool {
    std::fs::read_to_string(pidfile)
        .ok()
        .and_then(|text| text.trim().parse::<u32>().ok())
        .is_some_and(|pid| pid > 0 && Path::new(&format!("/proc/{}", pid)).exists())
}

/// Runs the steps in order; returns whether every step that ran succeeded. Failures are
/// logged with the command's output.
pub fn run_steps(steps: &[Step]) -> bool {
    let mut all_ok = true;
    let mut previous_ok = true;
    for step in steps {
        if step.needs_previous && !previous_ok {
            continue;
        }
        if step.pidfile.as_deref().is_some_and(running) {
            debug!("{} is already running", step.argv.join(" "));
            previous_ok = true;
            continue;
        }
        let Some(cmd) = crate::exec::command_from_argv(&step.argv) else {
            continue;
        };
        let ran = crate::exec::run(cmd, crate::timing::scaled(COMMAND_TIMEOUT))
            .and_then(|out| out.checked(&step.argv.join(" ")));
        previous_ok = match ran {
            Ok(_) => true,
            Err(e) => {
                warn!("{}", e);
                false
            }
        };
        all_ok &= previous_ok;
    }
    all_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn argvs(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| s.argv.join(" ")).collect()
    }

    #[test]
    fn a_custom_command_replaces_everything() {
        let dhclient = DhcpClient::Dhclient("/sbin/dhclient".into());
        let steps = secondary_steps(
            &names(&["eth1"]),
            "/usr/local/bin/up  --all",
            Some(&dhclient),
            None,
        );
        assert_eq!(argvs(&steps), ["/usr/local/bin/up --all"]);
        assert_eq!(steps[0].argv, ["/usr/local/bin/up", "--all"]);
    }

    #[test]
    fn dhclient_releases_then_renews_all_secondaries() {
        let dhclient = DhcpClient::Dhclient("/sbin/dhclient".into());
        let steps = secondary_steps(&names(&["eth1", "eth2"]), "", Some(&dhclient), None);
        assert_eq!(
            argvs(&steps),
            ["/sbin/dhclient -x eth1 eth2", "/sbin/dhclient eth1 eth2"]
        );
        assert!(!steps[0].needs_previous && steps[1].needs_previous);
        let script = PathBuf::from("/sbin/google-dhclient-script");
        let steps = secondary_steps(&names(&["eth1"]), "", Some(&dhclient), Some(&script));
        assert_eq!(
            argvs(&steps),
            [
                "/sbin/dhclient -sf /sbin/google-dhclient-script -x eth1",
                "/sbin/dhclient -sf /sbin/google-dhclient-script eth1"
            ]
        );
    }

    #[test]
    fn busybox_runs_one_udhcpc_per_nic() {
        let udhcpc = DhcpClient::Udhcpc("/sbin/udhcpc".into());
        let steps = secondary_steps(&names(&["eth1", "eth2"]), "  ", Some(&udhcpc), None);
        assert_eq!(
            argvs(&steps),
            [
                "/sbin/udhcpc -b -i eth1 -p /run/udhcpc.eth1.pid",
                "/sbin/udhcpc -b -i eth2 -p /run/udhcpc.eth2.pid"
            ]
        );
        assert_eq!(
            steps[1].pidfile.as_deref(),
            Some(Path::new("/run/udhcpc.eth2.pid"))
        );
        assert!(secondary_steps(&names(&["eth1"]), "", None, None).is_empty());
    }

    #[test]
    fn dhcpv6_uses_the_images_client() {
        let dhclient = DhcpClient::Dhclient("/sbin/dhclient".into());
        assert_eq!(
            argvs(&dhcpv6_steps("eth0", Some(&dhclient))),
            ["/sbin/dhclient -1 -6 -pf /run/dhclient.google-guest.eth0.ipv6.pid -lf /run/dhclient.google-guest.eth0.ipv6.lease eth0"]
        );
        let udhcpc6 = DhcpClient::Udhcpc("/bin/udhcpc6".into());
        assert_eq!(
            argvs(&dhcpv6_steps("eth0", Some(&udhcpc6))),
            ["/bin/udhcpc6 -b -i eth0 -p /run/udhcpc6.eth0.pid"]
        );
        assert!(dhcpv6_steps("eth0", None).is_empty());
    }

    #[test]
    fn steps_run_in_order_and_a_failure_skips_its_dependent() {
        let dir = std::env::temp_dir().join(format!("gce-dhcp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("log");
        let sh = |script: &str| {
            vec![
                "/bin/sh".to_string(),
                "-c".to_string(),
                format!("{{ {}; }} >> {}", script, log.display()),
            ]
        };
        let steps = vec![
            step(sh("echo one")),
            Step {
                needs_previous: true,
                ..step(sh("echo two; false"))
            },
            Step {
                needs_previous: true,
                ..step(sh("echo three"))
            },
            step(sh("echo four")),
        ];
        assert!(!run_steps(&steps));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\nfour\n");
        // A live pid file skips its step.
        let pidfile = dir.join("pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        assert!(run_steps(&[Step {
            pidfile: Some(pidfile),
            ..step(sh("echo five"))
        }]));
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "one\ntwo\nfour\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
