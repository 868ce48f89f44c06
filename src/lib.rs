//! gce-guest: the Linux guest environment for Google Compute Engine as one static binary.
//!
//! `main.rs` only hands argv to [`applets::dispatch`]; every program the original Python
//! package installed is an applet here. The modules below are the shared core the applets
//! are built from.

#[macro_use]
pub mod log;

pub mod accounts;
pub mod applets;
pub mod clock_skew;
pub mod config;
pub mod daemon;
pub mod disk;
#[cfg(feature = "emulator")]
pub mod emulator;
pub mod error;
pub mod exec;
pub mod fsutil;
pub mod ini;
pub mod mds;
pub mod netlink;
pub mod network;
pub mod scripts;
pub mod signals;
pub mod timing;

pub use error::{Error, Result};
