//! Multiqueue (Py§10.6, `google_set_multiqueue`): placeholder, filled in below.

use super::sysfs::Tree;

/// Runs the step on `tree`.
pub fn run(tree: &Tree) {
    let _ = tree;
}
