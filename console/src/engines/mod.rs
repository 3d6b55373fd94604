//! Everything about talking to engines.
//!
//! * [`admin`]: adding, removing and refreshing engines, for the API and the pages alike;
//! * [`listener`]: engine-to-console (reverse) engines dial in; pairing by shared secret, then
//!   by pinned certificate;
//! * [`supervisor`]: one task per console-to-engine (standard) engine that dials it, keeps the
//!   session open and redials;
//! * [`session`]: the task that owns an admitted session, whichever side dialed;
//! * [`registry`]: engine id → live session, used by the API for refreshes and scan jobs;
//! * [`state`]: the pure mapping from what the console observed to the reported status.

pub mod admin;
pub mod listener;
pub mod registry;
pub mod session;
pub mod state;
pub mod supervisor;

pub use registry::Registry;
pub use state::{EngineStatus, Thresholds};
pub use supervisor::Supervisors;

#[cfg(test)]
mod tests;
