//! The protocol crate's error type.

use std::path::PathBuf;

/// Everything that can go wrong while framing, identifying or talking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame announced a length above the bound; the peer is dropped.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    /// A frame held something that is not a protocol message. The parser's explanation is cut
    /// and escaped, since it may quote what the peer sent.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A message carried a name, version or reason outside its bounds (see [`crate::text`]).
    #[error("invalid {field} in a {message} message: it {problem}")]
    InvalidText {
        message: &'static str,
        field: &'static str,
        problem: crate::text::Invalid,
    },
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Closed,
    /// The peer did not send a complete frame in time.
    #[error("peer sent nothing for {0:?}")]
    Timeout(std::time::Duration),
    /// The peer did not take what we wrote in time (it stopped reading).
    #[error("peer did not read what was sent for {0:?}")]
    WriteTimeout(std::time::Duration),
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

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Malformed(crate::text::printable(&e.to_string(), 160))
    }
}

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
