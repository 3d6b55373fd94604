//! The protocol crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while framing, identifying or talking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame announced a length above the bound; the peer is dropped.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// A frame held something that is not a protocol message.
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer did not send a complete frame in time.
    #[error("peer sent nothing for {0:?}")]
    Timeout(std::time::Duration),
    /// The peer sent a message that is not allowed at this point of the exchange.
    #[error("unexpected message {got} while waiting for {expected}")]
    Unexpected { expected: &'static str, got: String },
    /// Reading or writing the socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Reading or writing an identity file failed.
    #[error("{path}: {source}")]
    IdentityFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An identity file exists but does not hold what it should.
    #[error("{path}: {problem}")]
    InvalidIdentity { path: PathBuf, problem: String },
    /// Generating a key pair or certificate failed.
    #[error("generating identity: {0}")]
    Generate(#[from] rcgen::Error),
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS peer presented no certificate.
    #[error("peer presented no certificate")]
    NoPeerCertificate,
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
