//! Hostile peers: real `security-console` and `scan-engine` processes on loopback, attacked the
//! way someone on the same network would (docs/security.md lists which test proves which line of
//! the threat model).
//!
//! Build the binaries first: `cargo build -p security-console -p scan-engine`, then
//! `cargo test -p scan-engine-tests --test hostile -- --test-threads=1`.

#[path = "../common/mod.rs"]
mod common;

mod api;
mod engine_trust;
mod listener;
