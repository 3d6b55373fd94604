//! What the security console and the scan engine share.
//!
//! * [`messages`]: every message of the session protocol, as JSON-serialisable types;
//! * [`frame`]: length-prefixed framing with a hard size bound;
//! * [`identity`]: the key pair and self-signed certificate each side generates on first start,
//!   and the SHA-256 fingerprints trust is pinned to;
//! * [`tls`]: mutually authenticated TLS configurations in both dialing directions;
//! * [`session`]: a framed, timed message channel over any TLS stream;
//! * [`version`]: the product version both sides must agree on;
//! * [`secret`]: the pairing shared secret, which never prints itself;
//! * [`text`]: bounds on peer names and versions, and a safe form of any peer string for logs;
//! * [`admission`]: connection slots per source and in total for unadmitted peers, and
//!   burst-limited logging of refusals, shared by both session listeners.
//!
//! The contract these types implement is written down in `docs/contracts.md` §5.

pub mod admission;
pub mod error;
pub mod frame;
pub mod identity;
pub mod messages;
pub mod secret;
pub mod session;
pub mod targets;
pub mod text;
pub mod tls;
pub mod version;

pub use error::{Error, Result};
pub use identity::{Fingerprint, Identity};
pub use messages::Message;
pub use secret::SharedSecret;

/// Default port on which a console-to-engine engine accepts its console.
pub const DEFAULT_ENGINE_PORT: u16 = 40814;
/// Default port on which a console accepts engine-to-console engines.
pub const DEFAULT_CONSOLE_ENGINE_PORT: u16 = 40815;
/// Default port of the console's REST API.
pub const DEFAULT_CONSOLE_API_PORT: u16 = 3780;
