//! Local SSD tuning (Py§10.5, `google_optimize_local_ssd`): placeholder, filled in below.

use super::sysfs::Tree;

/// Runs the step on `tree`.
pub fn run(tree: &Tree) {
    let _ = tree;
}
