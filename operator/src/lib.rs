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

/// Version of the operator; the default product version of consoles and engines it deploys.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
