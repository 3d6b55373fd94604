//! The console's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the console outside of an API request's own validation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The embedded database refused an operation.
    #[error("database: {0}")]
    Store(#[from] rusqlite::Error),
    /// A database task could not run to completion.
    #[error("database task failed: {0}")]
    StoreTask(String),
    /// The database was written by a newer console.
    #[error("database schema version {found} is newer than this console understands ({supported})")]
    SchemaTooNew { found: i64, supported: i64 },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should.
    #[error("{path}: {problem}")]
    InvalidFile { path: PathBuf, problem: String },
    /// Binding a listening socket failed.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// Something in the session protocol (framing, TLS, identity) failed.
    #[error(transparent)]
    Protocol(#[from] scan_engine_protocol::Error),
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// Generating a certificate failed.
    #[error("generating the API certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// Another engine is registered under that name.
    #[error("an engine named {0:?} already exists")]
    NameTaken(String),
    /// A command line value is unusable.
    #[error("configuration: {0}")]
    Config(String),
}

/// Result alias for the console.
pub type Result<T, E = Error> = std::result::Result<T, E>;
