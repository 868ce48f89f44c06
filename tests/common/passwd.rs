//! The sandbox's `/etc/passwd` and `/etc/group`, parsed into plain structs for assertions.

/// One line of `/etc/passwd`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// The password field (`x` when the hash is in `/etc/shadow`).
    pub password: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// The comment (GECOS) field.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One line of `/etc/group`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Supplementary members, in file order.
    pub members: Vec<String>,
}

/// Parses `/etc/passwd` text; panics on a malformed line (the sandbox's file must be sane).
pub fn parse_passwd(text: &str) -> Vec<User> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 7 {
                panic!("malformed /etc/passwd line in the sandbox: {:?}", line);
            }
            User {
                name: f[0].to_string(),
                password: f[1].to_string(),
                uid: number(f[2], line),
                gid: number(f[3], line),
                gecos: f[4].to_string(),
                home: f[5].to_string(),
                shell: f[6].to_string(),
            }
        })
        .collect()
}

/// Parses `/etc/group` text; panics on a malformed line.
pub fn parse_group(text: &str) -> Vec<Group> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != 4 {
                panic!("malformed /etc/group line in the sandbox: {:?}", line);
            }
            Group {
                name: f[0].to_string(),
                gid: number(f[2], line),
                members: f[3]
                    .split(',')
                    .filter(|m| !m.is_empty())
                    .map(str::to_string)
                    .collect(),
            }
        })
        .collect()
}

fn number(field: &str, line: &str) -> u32 {
    field
        .parse()
        .unwrap_or_else(|_| panic!("bad number {:?} in the sandbox's line {:?}", field, line))
}
