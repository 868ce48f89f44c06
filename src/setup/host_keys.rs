//! SSH host keys (as the original instance setup made them): when `instance/id` differs from `[Instance]
//! instance_id`, every host key present plus each of `host_key_types` is made anew —
//! `ssh-keygen` into `/etc/ssh`, or on dropbear images (`/etc/dropbear` and no
//! `ssh-keygen`) `dropbearkey` into `/etc/dropbear`. Keys are made in a private 0700
//! directory beside the key directory (same file system, never inside it), given their
//! modes and owner there, then renamed into place: a crash leaves each file old or new,
//! never half, and no temporary file in the key directory (a leftover directory is removed
//! at the next run; the id is stored only after all keys, so that run makes them again).
//!
//! Every public key is then PUT to the guest attributes `hostkeys/<type>` and
//! `guest-agent/sshable` gets a timestamp. Failures are logged, never fatal.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::instance_config::InstanceFacts;
use crate::error::{Context, Error, Result};
use crate::exec;
use crate::mds::Client;
use crate::settings::SetupSettings;

/// Where OpenSSH keeps its host keys.
pub const OPENSSH_DIR: &str = "/etc/ssh";
/// Where dropbear keeps its host keys.
pub const DROPBEAR_DIR: &str = "/etc/dropbear";
/// Prefix of the private directories keys are made in (beside the key directory).
pub const TEMP_PREFIX: &str = ".gce-guest-hostkeys.";
/// How long one key may take.
const KEYGEN_TIMEOUT: Duration = Duration::from_secs(120);

/// One SSH server's keys: their flavor, their directory, and whether the configured
/// `host_key_types` are made there too (else only the keys present are renewed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub flavor: Flavor,
    pub dir: PathBuf,
    pub make_configured: bool,
}

/// Which SSH server's keys and tool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// OpenSSH: `ssh_host_<type>_key` and `.pub`, made by `ssh-keygen`.
    OpenSsh { keygen: PathBuf },
    /// dropbear: `dropbear_<type>_host_key`, made by `dropbearkey`.
    Dropbear { dropbearkey: PathBuf },
}

impl Flavor {
    /// The SSH servers' keys this image has, the one to publish first: OpenSSH when
    /// `ssh-keygen` is there; dropbear when `/etc/dropbear` and `dropbearkey` are and
    /// there is no `ssh-keygen` or the `dropbear` server is installed (then every
    /// configured type is made there too), or dropbear keys are already there (renewed).
    pub fn detect() -> Vec<Server> {
        let mut servers = Vec::new();
        let openssh = exec::find_program("ssh-keygen");
        let has_openssh = openssh.is_some();
        if let Some(keygen) = openssh {
            servers.push(Server {
                flavor: Flavor::OpenSsh { keygen },
                dir: PathBuf::from(OPENSSH_DIR),
                make_configured: true,
            });
        }
        if Path::new(DROPBEAR_DIR).is_dir() {
            if let Some(dropbearkey) = exec::find_program("dropbearkey") {
                let flavor = Flavor::Dropbear { dropbearkey };
                let dir = PathBuf::from(DROPBEAR_DIR);
                let make_configured = !has_openssh || exec::find_program("dropbear").is_some();
                if make_configured || !present_types(&flavor, &dir).is_empty() {
                    servers.push(Server {
                        flavor,
                        dir,
                        make_configured,
                    });
                }
            }
        }
        servers
    }

    /// The private key's file name for `key_type`.
    pub fn file_name(&self, key_type: &str) -> String {
        match self {
            Flavor::OpenSsh { .. } => format!("ssh_host_{}_key", key_type),
            Flavor::Dropbear { .. } => format!("dropbear_{}_host_key", key_type),
        }
    }

    /// The key type a file name in the key directory names, if it is a private host key.
    pub fn type_of(&self, file_name: &str) -> Option<String> {
        let t = match self {
            Flavor::OpenSsh { .. } => file_name.strip_prefix("ssh_host_")?.strip_suffix("_key")?,
            Flavor::Dropbear { .. } => file_name
                .strip_prefix("dropbear_")?
                .strip_suffix("_host_key")?,
        };
        valid_type(t).then(|| t.to_string())
    }
}

/// A key type name as Python accepted it (`[a-z0-9]+`): nothing that could leave the
/// directory or confuse a command line.
pub fn valid_type(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 32
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// The key types to make: the ones present in the directory plus the configured ones,
/// sorted, each once; unusable configured names are dropped (returned second, for a log).
pub fn plan_types(present: &[String], configured: &[String]) -> (Vec<String>, Vec<String>) {
    let mut types: Vec<String> = present.to_vec();
    let mut refused = Vec::new();
    for t in configured {
        if valid_type(t) {
            types.push(t.clone());
        } else {
            refused.push(t.clone());
        }
    }
    types.sort();
    types.dedup();
    (types, refused)
}

/// Runs the step: regenerates the keys on a new instance id and publishes the public keys.
/// Returns the id to store when keys were made for it.
pub fn run(
    settings: &SetupSettings,
    facts: &InstanceFacts,
    client: &Client,
) -> Result<Option<String>> {
    let Some(id) = facts.instance_id.as_deref() else {
        debug!("No instance id; host keys are left as they are.");
        return Ok(None);
    };
    let servers = Flavor::detect();
    let Some(first) = servers.first() else {
        info!("Neither ssh-keygen nor dropbearkey was found; no host keys are made.");
        return Ok(None);
    };
    for server in &servers {
        remove_stale_temps(&server.dir);
    }
    let mut stored = None;
    if id != super::stored_instance_id(settings) {
        let host_key_types = super::host_key_types(settings);
        info!("Generating SSH host keys for instance {}.", id);
        for server in &servers {
            let configured: &[String] = if server.make_configured {
                &host_key_types
            } else {
                &[]
            };
            regenerate(&server.flavor, &server.dir, configured)?;
        }
        stored = Some(id.to_string());
    }
    // The keys of the first server are the ones published (one key per algorithm).
    publish(&first.flavor, &first.dir, client);
    Ok(stored)
}

/// The types of the private host keys in `dir`.
fn present_types(flavor: &Flavor, dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| flavor.type_of(&e.file_name().to_string_lossy()))
        .collect()
}

/// Makes every key anew in `dir`. A key that fails is logged and the others still made.
pub fn regenerate(flavor: &Flavor, dir: &Path, configured: &[String]) -> Result<()> {
    std::fs::create_dir_all(dir).context("create", dir)?;
    let (types, refused) = plan_types(&present_types(flavor, dir), configured);
    for t in refused {
        warn!(
            "Ignoring host key type {:?}: not a key type name.",
            crate::log::printable(&t)
        );
    }
    let temp = TempDir::beside(dir)?;
    for t in &types {
        let dest = dir.join(flavor.file_name(t));
        if let Err(e) = make_key(flavor, t, &temp.path, &dest) {
            warn!("Could not create SSH key {}: {}", dest.display(), e);
        }
    }
    Ok(())
}

/// Makes one key in `temp` and renames it (and its public half) over `dest`.
fn make_key(flavor: &Flavor, key_type: &str, temp: &Path, dest: &Path) -> Result<()> {
    let tmp_key = temp.join(format!("{}_key", key_type));
    let tmp_pub = temp.join(format!("{}_key.pub", key_type));
    let _ = std::fs::remove_file(&tmp_key);
    let _ = std::fs::remove_file(&tmp_pub);
    let mut cmd;
    let program;
    match flavor {
        Flavor::OpenSsh { keygen } => {
            cmd = Command::new(keygen);
            cmd.args(["-t", key_type, "-N", "", "-q", "-f"])
                .arg(&tmp_key);
            program = "ssh-keygen";
        }
        Flavor::Dropbear { dropbearkey } => {
            cmd = Command::new(dropbearkey);
            cmd.args(["-t", key_type, "-f"]).arg(&tmp_key);
            program = "dropbearkey";
        }
    }
    exec::run(cmd, KEYGEN_TIMEOUT)?.checked(program)?;
    set_owner_mode(&tmp_key, 0o600)?;
    let dest_pub = PathBuf::from(format!("{}.pub", dest.display()));
    let has_pub = tmp_pub.exists();
    if has_pub {
        set_owner_mode(&tmp_pub, 0o644)?;
    }
    sync_file(&tmp_key);
    std::fs::rename(&tmp_key, dest).context("rename into place", dest)?;
    if has_pub {
        sync_file(&tmp_pub);
        std::fs::rename(&tmp_pub, &dest_pub).context("rename into place", &dest_pub)?;
    }
    if let Some(parent) = dest.parent() {
        sync_file(parent);
    }
    crate::fsutil::restorecon(dest);
    if has_pub {
        crate::fsutil::restorecon(&dest_pub);
    }
    Ok(())
}

fn set_owner_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(path, Some(0), Some(0)).context("chown", path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).context("chmod", path)
}

/// Flushes a file or directory to disk (best effort: a rename is what must be atomic).
fn sync_file(path: &Path) {
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.sync_all();
    }
}

/// A private 0700 directory beside the key directory, removed when dropped.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn beside(dir: &Path) -> Result<TempDir> {
        use std::os::unix::fs::DirBuilderExt;
        let parent = dir.parent().unwrap_or(Path::new("/"));
        let path = parent.join(format!(
            "{}{}.{:08x}",
            TEMP_PREFIX,
            std::process::id(),
            crate::timing::random_u64() as u32
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .context("create", &path)?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes private key directories an interrupted run left beside `dir`.
fn remove_stale_temps(dir: &Path) {
    let Some(parent) = dir.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let is_ours = name.to_string_lossy().starts_with(TEMP_PREFIX)
            && e.file_type().is_ok_and(|t| t.is_dir());
        if is_ours {
            debug!(
                "Removing {} left by an interrupted run.",
                e.path().display()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The OpenSSH public key line of a host key: the `.pub` file, or for dropbear what
/// `dropbearkey -y` derives.
fn public_line(flavor: &Flavor, private: &Path) -> Result<String> {
    match flavor {
        Flavor::OpenSsh { .. } => {
            let pub_path = PathBuf::from(format!("{}.pub", private.display()));
            std::fs::read_to_string(&pub_path).context("read", &pub_path)
        }
        Flavor::Dropbear { dropbearkey } => {
            let mut cmd = Command::new(dropbearkey);
            cmd.arg("-y").arg("-f").arg(private);
            let out = exec::run(cmd, KEYGEN_TIMEOUT)?.checked("dropbearkey")?;
            let text = String::from_utf8_lossy(&out.output).into_owned();
            dropbear_public_line(&text).ok_or_else(|| {
                Error::Msg(format!(
                    "no public key in dropbearkey's output for {}",
                    private.display()
                ))
            })
        }
    }
}

/// The `type base64 [comment]` line in `dropbearkey -y` output.
pub fn dropbear_public_line(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| l.starts_with("ssh-") || l.starts_with("ecdsa-"))
        .map(|l| l.trim().to_string())
}

/// The guest attribute key and value of a public key line: (`ssh-ed25519`, base64).
pub fn attribute_of(public_line: &str) -> Option<(String, String)> {
    let mut fields = public_line.split_whitespace();
    let key_type = fields.next()?;
    let blob = fields.next()?;
    let ok_type = key_type
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'@');
    let ok_blob = blob
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=');
    (ok_type && ok_blob).then(|| (key_type.to_string(), blob.to_string()))
}

/// PUTs each host key to `hostkeys/<type>`, then `guest-agent/sshable`.
fn publish(flavor: &Flavor, dir: &Path, client: &Client) {
    let mut types = present_types(flavor, dir);
    types.sort();
    for t in types {
        let private = dir.join(flavor.file_name(&t));
        let line = match public_line(flavor, &private) {
            Ok(line) => line,
            Err(e) => {
                warn!("Could not read host key from {}: {}", private.display(), e);
                continue;
            }
        };
        let Some((key_type, blob)) = attribute_of(&line) else {
            warn!("Could not read host key from {}.pub.", private.display());
            continue;
        };
        match client.put_guest_attribute("hostkeys", &key_type, &blob) {
            Ok(()) => info!("Wrote {} host key to guest attributes.", key_type),
            Err(e) => info!(
                "Unable to write {} host key to guest attributes: {}",
                key_type, e
            ),
        }
    }
    let stamp = super::notify::rfc3339(crate::timing::unix_now());
    if let Err(e) = client.put_guest_attribute("guest-agent", "sshable", &stamp) {
        info!(
            "Unable to write guest-agent/sshable to guest attributes: {}",
            e
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn openssh() -> Flavor {
        Flavor::OpenSsh {
            keygen: PathBuf::from("/usr/bin/ssh-keygen"),
        }
    }

    fn dropbear() -> Flavor {
        Flavor::Dropbear {
            dropbearkey: PathBuf::from("/usr/bin/dropbearkey"),
        }
    }

    #[test]
    fn key_file_names_and_types() {
        assert_eq!(openssh().file_name("rsa"), "ssh_host_rsa_key");
        assert_eq!(dropbear().file_name("ed25519"), "dropbear_ed25519_host_key");
        assert_eq!(
            openssh().type_of("ssh_host_ecdsa_key").as_deref(),
            Some("ecdsa")
        );
        assert_eq!(openssh().type_of("ssh_host_ecdsa_key.pub"), None);
        assert_eq!(openssh().type_of("ssh_host__key"), None);
        assert_eq!(openssh().type_of("ssh_host_a.b_key"), None);
        assert_eq!(
            dropbear().type_of("dropbear_rsa_host_key").as_deref(),
            Some("rsa")
        );
        assert_eq!(dropbear().type_of("ssh_host_rsa_key"), None);
    }

    #[test]
    fn types_are_present_plus_configured_once_each() {
        let (types, refused) = plan_types(
            &["dsa".into(), "rsa".into()],
            &[
                "ecdsa".into(),
                "rsa".into(),
                "../x".into(),
                "ED25519".into(),
            ],
        );
        assert_eq!(types, ["dsa", "ecdsa", "rsa"]);
        assert_eq!(refused, ["../x", "ED25519"]);
    }

    #[test]
    fn public_lines_become_attributes() {
        let out = "Public key portion is:\nssh-ed25519 AAAAC3Nza root@vm\nFingerprint: sha1!! x\n";
        let line = dropbear_public_line(out).unwrap();
        assert_eq!(line, "ssh-ed25519 AAAAC3Nza root@vm");
        assert_eq!(
            attribute_of(&line),
            Some(("ssh-ed25519".into(), "AAAAC3Nza".into()))
        );
        assert_eq!(
            attribute_of("ecdsa-sha2-nistp256 AAAA+/= c\n"),
            Some(("ecdsa-sha2-nistp256".into(), "AAAA+/=".into()))
        );
        assert_eq!(attribute_of("ssh-rsa"), None);
        assert_eq!(attribute_of("ssh/rsa AAAA"), None);
        assert_eq!(attribute_of("ssh-rsa AA\"AA"), None);
    }
}
