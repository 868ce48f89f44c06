//! The host programs the tests run and the packages they come in. `tools/prereqs.sh` holds
//! the one table of them (`make test` and CI install its packages); a test whose program is
//! still missing fails saying which package to install.

use std::ffi::OsStr;
use std::path::PathBuf;

/// The installer script, whose `packages=(...)` table maps packages to programs.
const PREREQS: &str = include_str!("../../tools/prereqs.sh");

/// The package `tools/prereqs.sh` lists for `program`, if any.
pub fn package_of(program: &str) -> Option<&'static str> {
    let table = PREREQS.split_once("packages=(")?.1.split_once(')')?.0;
    table
        .split_whitespace()
        .filter_map(|entry| entry.split_once(':'))
        .find(|(_, programs)| programs.split(',').any(|p| p == program))
        .map(|(package, _)| package)
}

/// The path of `program` in the directories of `path`, or why it is missing: with the
/// package to install when the table knows it.
pub fn find_tool(program: &str, path: &OsStr) -> Result<PathBuf, String> {
    if let Some(found) = std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
    {
        return Ok(found);
    }
    Err(match package_of(program) {
        Some(package) => format!(
            "{} is not installed: install the {} package (tools/prereqs.sh installs what the tests need)",
            program, package
        ),
        None => format!("{} is not installed (and not in tools/prereqs.sh)", program),
    })
}

/// The path of `program` (looked up in `PATH` and the guest's `PATH`); panics naming the
/// package to install when it is missing.
pub fn tool(program: &str) -> PathBuf {
    find_tool(program, &super::search_path()).unwrap_or_else(|why| panic!("{}", why))
}
