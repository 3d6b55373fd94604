//! The open Security Console.
//!
//! * [`cli`]: the command line (docs/contracts.md §3);
//! * [`app`]: the shared state and start-up;
//! * [`store`]: the SQLite database, the only place with SQL;
//! * [`engines`]: pairing and sessions with engines in both directions, and their states;
//! * [`shared_secret`]: the pairing shared secret's lifecycle;
//! * [`scans`]: scan jobs out, results in;
//! * [`api`]: the REST API (docs/contracts.md §4); [`web`]: the web pages beside it; [`tls`]:
//!   serving both over HTTPS.

pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod engines;
pub mod error;
pub mod scans;
pub mod shared_secret;
pub mod store;
pub mod tls;
pub mod web;

pub use error::{Error, Result};

#[cfg(any(test, feature = "testing"))]
pub mod testing;
