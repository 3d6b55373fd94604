//! The reverse pairing record, `<data-dir>/pairing.json`: which console this engine paired
//! with (its certificate fingerprint) and the engine id the console gave it. While it exists
//! the engine authenticates by certificate alone and never sends the shared secret again.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use scan_engine_protocol::Fingerprint;
use serde::{Deserialize, Serialize};

/// Name of the file in the data directory.
pub const FILE_NAME: &str = "pairing.json";

/// What the engine remembers of its reverse pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRecord {
    pub console_fingerprint: Fingerprint,
    pub engine_id: u64,
    /// The address the engine dialed when it paired (informational).
    #[serde(default)]
    pub console_address: String,
}

/// The record's path in `data_dir`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Loads the record; `None` when the engine has not paired.
pub fn load(data_dir: &Path) -> anyhow::Result<Option<PairingRecord>> {
    let path = path(data_dir);
    match fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .with_context(|| format!("{}: not a valid pairing record", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Stores the record atomically and durably (see [`crate::durable::replace`]).
pub fn save(data_dir: &Path, record: &PairingRecord) -> anyhow::Result<()> {
    let path = path(data_dir);
    let bytes = serde_json::to_vec_pretty(record)?;
    crate::durable::replace(&path, &bytes).with_context(|| format!("writing {}", path.display()))
}

/// Forgets the pairing.
pub fn remove(data_dir: &Path) -> anyhow::Result<()> {
    let path = path(data_dir);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        let r = PairingRecord {
            console_fingerprint: format!("sha256:{}", "0f".repeat(32)).parse().unwrap(),
            engine_id: 7,
            console_address: "127.0.0.1:40815".into(),
        };
        save(dir.path(), &r).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(r));
        remove(dir.path()).unwrap();
        assert_eq!(load(dir.path()).unwrap(), None);
        fs::write(path(dir.path()), "{").unwrap();
        assert!(
            load(dir.path())
                .unwrap_err()
                .to_string()
                .contains("pairing.json")
        );
    }
}
