//! Entry point: everything is an applet chosen by argv[0] (see `applets`).

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    std::process::exit(gce_guest::applets::dispatch(args));
}
