//! `google_metadata_emulator`: runs the metadata-server emulator ([`crate::emulator`]) as a
//! process, for integration tests and demos, until SIGTERM or SIGINT.

use std::io::Write;
use std::path::Path;

use super::{Applet, Invocation, Output};
use crate::emulator::{self, Emulator};

pub(crate) static APPLET: Applet = Applet {
    name: "google_metadata_emulator",
    run: main,
    logger: "metadata-emulator",
    output: Output::Terminal,
    summary: "a GCE metadata server emulator for tests and demos",
    usage: USAGE,
};

const USAGE: &str =
    "[--listen ADDR:PORT]... [--metadata FILE] [--admin-socket PATH] [--ready-file PATH]

Serves a GCE metadata document over HTTP, with the admin API under /emulator/
(metadata, faults, requests, guest-attributes). Prints `listening on ADDR` for
each listener on stdout, then runs until SIGTERM or SIGINT.
  -l, --listen ADDR:PORT   listen there (default 127.0.0.1:8080; repeatable;
                           port 0 picks a free port)
  -m, --metadata FILE      the recursive JSON document to serve (default: the
                           built-in sample, demo-vm in demo-project)
  -a, --admin-socket PATH  also serve everything on a unix socket at PATH
  -r, --ready-file PATH    once listening, write the bound TCP addresses there,
                           one per line (written atomically)";

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

fn main(inv: &Invocation) -> i32 {
    let mut opts = getopts::Options::new();
    opts.optmulti("l", "listen", "", "ADDR:PORT")
        .optopt("m", "metadata", "", "FILE")
        .optopt("a", "admin-socket", "", "PATH")
        .optopt("r", "ready-file", "", "PATH");
    let m = match inv.parse(&opts) {
        Ok(m) => m,
        Err(status) => return status,
    };
    if let Some(extra) = m.free.first() {
        return inv.usage_error(format_args!("unexpected argument {} (see --help)", extra));
    }
    let doc = match m.opt_str("m") {
        None => emulator::sample_document(),
        Some(file) => match load_document(Path::new(&file)) {
            Ok(doc) => doc,
            Err(e) => {
                eprintln!("{}: {}", inv.name, e);
                return 1;
            }
        },
    };
    let mut listens = m.opt_strs("l");
    if listens.is_empty() {
        listens.push(DEFAULT_LISTEN.to_string());
    }
    // Block the stop signals before the server threads exist, so they inherit the mask.
    let signals = crate::signals::install();
    match serve(&listens, doc, m.opt_str("a"), m.opt_str("r")) {
        Ok(emu) => {
            signals.wait_for_stop();
            emu.stop();
            0
        }
        Err(e) => {
            eprintln!("{}: {}", inv.name, e);
            1
        }
    }
}

fn load_document(path: &Path) -> Result<tinyjson::JsonValue, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {}", path.display(), e))?;
    match crate::json::parse_json(&text) {
        Ok(doc @ tinyjson::JsonValue::Object(_)) => Ok(doc),
        Ok(_) => Err(format!(
            "{}: the document must be a JSON object",
            path.display()
        )),
        Err(e) => Err(format!("{} is not JSON: {}", path.display(), e)),
    }
}

/// Starts every listener, announces them and writes the ready file.
fn serve(
    listens: &[String],
    doc: tinyjson::JsonValue,
    admin_socket: Option<String>,
    ready_file: Option<String>,
) -> Result<Emulator, String> {
    let first = &listens[0];
    let emu =
        Emulator::start(first, doc).map_err(|e| format!("cannot listen on {}: {}", first, e))?;
    let mut addrs = vec![emu.addr()];
    for listen in &listens[1..] {
        addrs.push(
            emu.listen(listen)
                .map_err(|e| format!("cannot listen on {}: {}", listen, e))?,
        );
    }
    if let Some(path) = &admin_socket {
        emu.serve_unix(path)
            .map_err(|e| format!("cannot listen on {}: {}", path, e))?;
    }
    let mut out = std::io::stdout().lock();
    for addr in &addrs {
        let _ = writeln!(out, "listening on {}", addr);
    }
    if let Some(path) = &admin_socket {
        let _ = writeln!(out, "listening on unix:{}", path);
    }
    let _ = out.flush();
    if let Some(path) = ready_file {
        let text: String = addrs.iter().map(|a| format!("{}\n", a)).collect();
        crate::fsutil::write_atomic(Path::new(&path), text.as_bytes(), 0o644)
            .map_err(|e| e.to_string())?;
    }
    Ok(emu)
}
