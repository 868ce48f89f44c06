//! The `google_metadata_emulator` applet (stub; being written).
use super::Invocation;
pub(super) const USAGE: &str = "";
pub(super) fn main(_inv: &Invocation) -> i32 { 3 }
