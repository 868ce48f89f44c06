//! The one integration-test binary: each `tests/<area>.rs` is a module of it, so the sandbox
//! in `tests/common` and the accounts helpers compile once and the compiler reports any
//! helper no test uses. A test's full name is `<area>::<test>`, which is also how
//! `make bench` and `make test-long` pick their `#[ignore]`d tests
//! (`cargo test --test integration -- --ignored bench_accounts::`).
//!
//! It needs the features `emulator` (the metadata-server emulator applet the sandbox runs)
//! and `test-hooks` (the time scale, fault injection and test endpoints), which `make test`
//! turns on: `cargo test --features emulator,test-hooks --test integration`.

#[macro_use]
mod common;

mod accounts_support;
mod packaging_support;

mod accounts;
mod accounts_create;
mod accounts_hostile;
mod accounts_login;
mod accounts_long;
mod accounts_outage;
mod accounts_refusals;
mod accounts_revocation;
mod bench_accounts;
mod bench_scripts;
mod bench_setup;
mod cli;
mod disk_expand;
mod emulator;
mod guest_daemon;
mod ini_golden;
mod init_files;
mod instance_setup;
mod ip_forwarding;
mod metadata_client;
mod packaging;
mod prepare_image;
mod root_option;
mod sandbox;
mod scripts;
mod setup_tuning;
mod tools;
