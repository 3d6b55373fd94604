//! The open Security Console.
//!
//! * [`cli`]: the command line (docs/contracts.md §3);
//! * [`context`]: the shared state every part works on;
//! * [`app`]: start-up and the wiring of listeners, pages and API;
//! * [`auth`]: the admin credentials and the failed-login backoff;
//! * [`store`]: the SQLite database, the only place with SQL;
//! * [`engines`]: pairing and sessions with engines in both directions, and their states;
//! * [`shared_secret`]: the pairing shared secret's lifecycle;
//! * [`scans`]: scan jobs out, results in;
//! * [`api`]: the REST API (docs/contracts.md §4); [`web`]: the web pages beside it; [`tls`]:
//!   serving both over HTTPS.

pub mod api;
pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod context;
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
