//! Every message of the console⇄engine session, in the order they appear in an exchange.
//!
//! Messages are JSON objects tagged by `type`, so a capture of the session is readable.

use serde::{Deserialize, Serialize};

use crate::{
    Error,
    secret::SharedSecret,
    text::{self, Invalid},
};

/// Which side of the session a peer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Console,
    Engine,
}

/// Why a console refused to pair or admit an engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The engine presented a secret that is not the console's current one.
    InvalidSecret,
    /// The engine presented the console's secret after it expired.
    ExpiredSecret,
    /// The console has no valid shared secret (never generated, or revoked).
    NoSharedSecret,
    /// The engine's certificate is not pinned and it offered no secret.
    NotPaired,
    /// Another engine with a different identity is registered under that name.
    NameTaken,
}

impl std::fmt::Display for RejectReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RejectReason::InvalidSecret => "the shared secret is not valid",
            RejectReason::ExpiredSecret => "the shared secret has expired",
            RejectReason::NoSharedSecret => "the console has no valid shared secret",
            RejectReason::NotPaired => "the engine is not paired and offered no shared secret",
            RejectReason::NameTaken => "another engine is registered under that name",
        })
    }
}

/// One scan job, sent by the console to an accepted engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanJob {
    /// Console-wide scan id; every progress and result message carries it.
    pub scan_id: u64,
    /// IP addresses, CIDR blocks or host names.
    pub targets: Vec<String>,
    /// TCP ports to try on every target.
    pub ports: Vec<u16>,
    /// How long one connection attempt may take.
    pub connect_timeout_ms: u64,
    /// How long to wait for a service banner on an open port.
    pub banner_timeout_ms: u64,
    /// Upper bound on simultaneous connection attempts (the engine also applies its own).
    pub max_concurrency: u32,
}

/// An open TCP service found by a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The address that answered.
    pub address: String,
    /// The host name the target was given as, if it was given as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    pub port: u16,
    /// The first bytes the service sent, if any, as lossy UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<String>,
}

/// How a scan ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScanOutcome {
    Finished,
    Error,
}

/// A protocol message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    /// First message from both sides, whoever dialed.
    Hello {
        role: Role,
        product_version: String,
        name: String,
    },
    /// The versions differ; the sender closes after this.
    Incompatible {
        console_version: String,
        engine_version: String,
    },
    /// Reverse pairing: an unpaired engine presents the console's shared secret.
    PairRequest { shared_secret: SharedSecret },
    /// Reverse pairing succeeded; the engine's certificate is now pinned.
    Paired { engine_id: u64 },
    /// A known engine (pinned certificate) is admitted without a secret.
    Welcome { engine_id: u64 },
    /// The console refuses; it closes after this.
    Rejected {
        reason: RejectReason,
        message: String,
    },
    /// Standard pairing: the engine has not (yet) enabled this console in `consoles.xml`.
    PendingAuthorization,
    /// Standard pairing: the engine trusts this console.
    Accepted,
    /// Liveness, either direction.
    Ping { seq: u64 },
    /// Answer to [`Message::Ping`].
    Pong { seq: u64 },
    /// Work for the engine.
    ScanJob(ScanJob),
    /// How far a scan has got.
    ScanProgress { scan_id: u64, done: u64, total: u64 },
    /// One open service.
    ScanFinding { scan_id: u64, finding: Finding },
    /// The scan is over.
    ScanFinished {
        scan_id: u64,
        outcome: ScanOutcome,
        message: String,
    },
}

impl Message {
    /// The message's `type` tag, for logs and errors (never the content).
    pub fn kind(&self) -> &'static str {
        match self {
            Message::Hello { .. } => "hello",
            Message::Incompatible { .. } => "incompatible",
            Message::PairRequest { .. } => "pair_request",
            Message::Paired { .. } => "paired",
            Message::Welcome { .. } => "welcome",
            Message::Rejected { .. } => "rejected",
            Message::PendingAuthorization => "pending_authorization",
            Message::Accepted => "accepted",
            Message::Ping { .. } => "ping",
            Message::Pong { .. } => "pong",
            Message::ScanJob(_) => "scan_job",
            Message::ScanProgress { .. } => "scan_progress",
            Message::ScanFinding { .. } => "scan_finding",
            Message::ScanFinished { .. } => "scan_finished",
        }
    }
}

impl Message {
    /// Checks the strings a peer names itself with: the name and version of a `Hello`, the
    /// versions of an `Incompatible` answer (see [`crate::text`]) and the length of a
    /// `Rejected` reason. The codec runs this on every message it decodes and encodes, so a
    /// message that fails is never stored, shown or answered.
    pub fn check(&self) -> Result<(), Error> {
        let fail = |field, problem| Error::InvalidText {
            message: self.kind(),
            field,
            problem,
        };
        match self {
            Message::Hello {
                product_version,
                name,
                ..
            } => {
                text::check_name(name).map_err(|p| fail("name", p))?;
                text::check_version(product_version).map_err(|p| fail("product_version", p))
            }
            Message::Incompatible {
                console_version,
                engine_version,
            } => {
                text::check_version(console_version).map_err(|p| fail("console_version", p))?;
                text::check_version(engine_version).map_err(|p| fail("engine_version", p))
            }
            Message::Rejected { message, .. } if message.len() > text::MAX_REASON_LEN => {
                Err(fail("message", Invalid::TooLong(text::MAX_REASON_LEN)))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hello_with_a_junk_version_or_name_fails_its_check() {
        let hello = |name: &str, version: &str| Message::Hello {
            role: Role::Engine,
            product_version: version.into(),
            name: name.into(),
        };
        assert!(hello("e1", "0.1.0").check().is_ok());
        let junk = "9".repeat(20 * 1024);
        let err = hello("e1", &junk).check().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidText {
                    field: "product_version",
                    problem: Invalid::TooLong(_),
                    ..
                }
            ),
            "{err}"
        );
        // The error never quotes the value.
        assert!(!err.to_string().contains("999"));
        assert!(hello("<img src=x>", "0.1.0").check().is_err());
        assert!(hello("", "0.1.0").check().is_err());
        let incompatible = Message::Incompatible {
            console_version: "0.1.0".into(),
            engine_version: "x\n".repeat(100),
        };
        assert!(incompatible.check().is_err());
        let rejected = Message::Rejected {
            reason: RejectReason::NotPaired,
            message: "r".repeat(text::MAX_REASON_LEN + 1),
        };
        assert!(rejected.check().is_err());
    }

    #[test]
    fn wire_shape_is_tagged_json() {
        let m = Message::Hello {
            role: Role::Engine,
            product_version: "0.1.0".into(),
            name: "e1".into(),
        };
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"type":"hello","role":"engine","product_version":"0.1.0","name":"e1"}"#
        );
        assert_eq!(
            serde_json::to_string(&Message::PendingAuthorization).unwrap(),
            r#"{"type":"pending_authorization"}"#
        );
    }

    #[test]
    fn pair_request_debug_hides_the_secret() {
        let m = Message::PairRequest {
            shared_secret: SharedSecret::new("very-secret-value"),
        };
        assert!(!format!("{m:?}").contains("very-secret-value"));
        // ...but the wire carries it.
        assert!(
            serde_json::to_string(&m)
                .unwrap()
                .contains("very-secret-value")
        );
    }
}
