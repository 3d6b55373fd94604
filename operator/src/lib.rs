//! scan-engine-operator: runs distributed Scan Engines as Kubernetes custom resources.
//!
//! Layout:
//! - [`crd`]: the `Console` and `ScanEngine` types (and their CRDs);
//! - [`console_api`]: the console REST API client;
//! - [`controller`]: the reconcilers (`controller::console`, `controller::scan_engine`);
//! - [`metrics`], [`telemetry`], [`leader`], [`http`]: running the operator;
//! - [`cli`]: flags of the binary.

pub mod cli;
pub mod console_api;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod run;
pub mod telemetry;

pub use error::{Error, Result};

/// Locks `mutex`, also after a panic elsewhere poisoned it: the operator's shared maps are
/// changed in single operations, so a poisoned one still holds consistent data.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Version of the operator; the default product version of consoles and engines it deploys.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
