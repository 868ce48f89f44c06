//! gce-guest: the Linux guest environment for Google Compute Engine as one static binary.
//!
//! `main.rs` only hands argv to [`applets::dispatch`]; every program the original Python
//! package installed is an applet here. The modules are layered, lowest first; a module
//! imports only from its own layer or below, and no two modules import each other (the
//! unit test `layers::lower_layers_never_import_higher_ones` reads `src/` and checks):
//!
//! 1. base: [`error`], [`log`], [`timing`], [`signals`], `sys`, [`fsutil`], [`exec`],
//!    [`ini`], `json` — no knowledge of GCE.
//! 2. clients: [`mds`] (the metadata server), [`netlink`] (rtnetlink), [`settings`]
//!    (`instance_configs.cfg`: every option declared once, typed per feature; its
//!    `config` reads, layers and regenerates the file).
//! 3. features, each pure planning plus thin applying: [`accounts`], [`network`],
//!    [`clock_skew`], [`scripts`], `nvme_id` (disk names for udev and mdev).
//! 4. features built on those: [`setup`], `disk`.
//! 5. runner: [`daemon`] — generic threads, locks, restarts; it knows no feature by name.
//! 6. applets: [`applets`] — the only place that lists every feature (the applet table,
//!    the daemons `google_guest_daemon` runs); option parsing and wiring.
//!
//! `emulator` (cargo feature `emulator`, tests and demos only) stands beside the features.

#[macro_use]
pub(crate) mod log;

pub mod accounts;
pub mod applets;
pub(crate) mod clock_skew;
pub(crate) mod daemon;
pub mod disk;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub(crate) mod exec;
pub(crate) mod fsutil;
pub mod ini;
pub mod json;
pub mod mds;
pub mod netlink;
pub mod network;
pub(crate) mod nvme_id;
pub(crate) mod scripts;
pub(crate) mod settings;
pub mod setup;
pub mod signals;
pub(crate) mod sys;
pub mod timing;

pub use error::{Error, Result};

#[cfg(test)]
mod layers {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Each top-level module and its layer (see the crate documentation).
    const LAYERS: &[(&str, u8)] = &[
        ("error", 1),
        ("log", 1),
        ("timing", 1),
        ("signals", 1),
        ("sys", 1),
        ("fsutil", 1),
        ("exec", 1),
        ("ini", 1),
        ("json", 1),
        ("mds", 2),
        ("netlink", 2),
        ("settings", 2),
        ("accounts", 3),
        ("network", 3),
        ("clock_skew", 3),
        ("scripts", 3),
        ("nvme_id", 3),
        ("emulator", 3),
        ("setup", 4),
        ("disk", 4),
        ("daemon", 5),
        ("applets", 6),
    ];

    fn layer(module: &str) -> u8 {
        match LAYERS.iter().find(|(m, _)| *m == module) {
            Some((_, layer)) => *layer,
            None => panic!("module {} has no layer in src/lib.rs", module),
        }
    }

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                rust_files(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }

    /// The top-level modules `text` names as `crate::NAME`, outside comments and the
    /// `#[cfg(test)]` module at the end of the file.
    fn imports(text: &str) -> BTreeSet<String> {
        let code = match text.find("#[cfg(test)]\nmod tests") {
            Some(at) => &text[..at],
            None => text,
        };
        let mut found = BTreeSet::new();
        for line in code.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            let mut rest = line;
            while let Some(at) = rest.find("crate::") {
                let preceded_by_ident = rest[..at]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
                rest = &rest[at + "crate::".len()..];
                let name: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if !preceded_by_ident && !name.is_empty() {
                    found.insert(name);
                }
            }
        }
        found
    }

    /// Which top-level module imports which, from the source tree.
    fn graph() -> BTreeMap<String, BTreeSet<String>> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        rust_files(&src, &mut files);
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for file in files {
            let relative = file.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let module = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&file).unwrap();
            let targets = graph.entry(module.clone()).or_default();
            for target in imports(&text) {
                // The crate-root re-exports `crate::Error` and `crate::Result` are error's.
                let target = match target.as_str() {
                    "Error" | "Result" => "error".to_string(),
                    _ => target,
                };
                if target != module {
                    targets.insert(target);
                }
            }
        }
        graph
    }

    #[test]
    fn lower_layers_never_import_higher_ones() {
        let mut wrong = Vec::new();
        for (module, targets) in graph() {
            for target in targets {
                if layer(&target) > layer(&module) {
                    wrong.push(format!(
                        "{} (layer {}) imports {} (layer {})",
                        module,
                        layer(&module),
                        target,
                        layer(&target)
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn modules_import_each_other_without_cycles() {
        let graph = graph();
        // Depth-first search; a module met again while still on the path closes a cycle.
        fn visit<'a>(
            module: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if done.contains(module) {
                return;
            }
            if let Some(at) = path.iter().position(|m| *m == module) {
                panic!("module cycle: {} -> {}", path[at..].join(" -> "), module);
            }
            path.push(module);
            for target in graph.get(module).into_iter().flatten() {
                visit(target, graph, path, done);
            }
            path.pop();
            done.insert(module);
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(module, &graph, &mut Vec::new(), &mut done);
        }
    }

    #[test]
    fn the_import_scanner_reads_paths_not_comments() {
        let text = "use crate::mds::Client;\n// crate::daemon in a comment\nlet x = crate::ini::parse();\n\
                    macro_rules! m { () => { $crate::log::x() } }\n#[cfg(test)]\nmod tests {\n use crate::applets;\n}\n";
        let found: Vec<String> = imports(text).into_iter().collect();
        assert_eq!(found, ["ini", "mds"]);
    }
}
