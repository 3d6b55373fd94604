//! Support library for the cross-crate integration suites in `tests/tests/`.
//!
//! * [`logs`]: a per-test log directory, removed when the test passes and kept (with its path
//!   and the tail of every log printed) when it fails;
//! * [`procs`]: the workspace's binaries (and any other program) as child processes that write
//!   into the test's logs and are killed, with their whole process group, on drop;
//! * [`browser`]: headless Chromium through WebDriver, for the web-page tests;
//! * [`control_plane`]: an envtest-like Kubernetes control plane (etcd, kube-apiserver,
//!   kube-controller-manager) on loopback, with an admin client, clients impersonating
//!   ServiceAccounts, and a namespace per test;
//! * [`spec`]: the published InsightVM API v3 excerpt, and answers checked against it.
//!
//! Helpers panic with a message that says what went wrong and what to do: they are meant to be
//! called from tests, where a panic is a failure with a good explanation.

pub mod browser;
pub mod control_plane;
pub mod logs;
pub mod procs;
pub mod spec;

use std::path::PathBuf;

pub use control_plane::{ControlPlane, ControlPlaneOptions, TestNamespace};
pub use logs::TestLogs;
pub use procs::{Proc, ProcBuilder, free_loopback_addr, free_port, wait_for_port};

/// The workspace's root directory (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(|p| p.to_path_buf())
        .unwrap_or(manifest_dir)
}
