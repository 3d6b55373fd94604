//! The trust list at run time.
//!
//! `consoles.xml` is read once, at start-up: that snapshot decides which consoles are enabled,
//! exactly as in the seeds' flow (an admin sets `enabled="1"` and restarts the engine). What the
//! engine learns while running (a new console, a console's new address) is merged into the file
//! on disk: the file is re-read, the one change applied, and the result written atomically, so
//! an admin's concurrent edit is never overwritten.

use std::{path::PathBuf, sync::Mutex};

use scan_engine_protocol::Fingerprint;

use crate::consoles_xml::{self, ConsoleEntry, Consoles};

/// What to answer a console that completed the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The console is enabled: answer `Accepted` and serve the session.
    Accept { id: u64 },
    /// The console is known but not enabled (yet): answer `PendingAuthorization`.
    Pending { id: u64, newly_added: bool },
}

/// Where a console was seen.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub address: Option<String>,
    pub port: Option<u16>,
    pub cert_pem: Option<String>,
}

/// The engine's trust list.
#[derive(Debug)]
pub struct TrustStore {
    path: PathBuf,
    trusted: Option<Fingerprint>,
    /// The start-up snapshot plus what this process added.
    known: Mutex<Consoles>,
}

impl TrustStore {
    /// Reads the trust list strictly; with `trusted`, makes sure that console is enabled in the
    /// file (Automatic authorization).
    pub fn open(path: PathBuf, trusted: Option<Fingerprint>) -> Result<Self, consoles_xml::Error> {
        let known = consoles_xml::load(&path)?;
        let store = Self {
            path,
            trusted,
            known: Mutex::new(known),
        };
        if let Some(fp) = store.trusted.clone() {
            store.enable(&fp, Seen::default())?;
            tracing::info!(console = %fp, "console enabled by --trusted-console-fingerprint");
        }
        Ok(store)
    }

    /// The file this store keeps.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// How many consoles are enabled in the snapshot.
    pub fn enabled_count(&self) -> usize {
        self.lock().entries.iter().filter(|e| e.enabled).count()
    }

    /// A copy of the snapshot.
    pub fn snapshot(&self) -> Consoles {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Consoles> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides on a console that dialed in (standard mode), recording it on disk as needed.
    pub fn decide(&self, fingerprint: &Fingerprint, seen: Seen) -> Decision {
        if self.trusted.as_ref() == Some(fingerprint) {
            let id = match self.enable(fingerprint, seen) {
                Ok(id) => id,
                Err(e) => {
                    tracing::error!("could not record the trusted console: {e}");
                    self.lock().find(fingerprint).map_or(0, |e| e.id)
                }
            };
            return Decision::Accept { id };
        }
        let mut known = self.lock();
        if let Some(entry) = known.find_mut(fingerprint) {
            let id = entry.id;
            let enabled = entry.enabled;
            let moved = seen.address.is_some() && entry.last_address != seen.address;
            if moved || (entry.cert_pem.is_none() && seen.cert_pem.is_some()) {
                if let Some(a) = &seen.address {
                    entry.last_address = Some(a.clone());
                }
                drop(known);
                let fp = fingerprint.clone();
                self.update_file(|file| {
                    if let Some(e) = file.find_mut(&fp) {
                        if seen.address.is_some() {
                            e.last_address = seen.address.clone();
                        }
                        if e.cert_pem.is_none() {
                            e.cert_pem = seen.cert_pem.clone();
                        }
                    }
                });
            }
            return if enabled {
                Decision::Accept { id }
            } else {
                Decision::Pending {
                    id,
                    newly_added: false,
                }
            };
        }
        // Unknown: append it, disabled.
        let mut id = known.next_id();
        drop(known);
        let fp = fingerprint.clone();
        let seen2 = seen.clone();
        let written = self.update_file(|file| {
            if let Some(e) = file.find(&fp) {
                id = e.id;
                return;
            }
            id = id.max(file.next_id());
            file.entries.push(ConsoleEntry {
                id,
                enabled: false,
                last_address: seen2.address.clone(),
                port: seen2.port,
                fingerprint: fp.clone(),
                cert_pem: seen2.cert_pem.clone(),
            });
        });
        let mut known = self.lock();
        if known.find(fingerprint).is_none() {
            if !written {
                id = id.max(known.next_id());
            }
            known.entries.push(ConsoleEntry {
                id,
                enabled: false,
                last_address: seen.address,
                port: seen.port,
                fingerprint: fingerprint.clone(),
                cert_pem: seen.cert_pem,
            });
        }
        Decision::Pending {
            id,
            newly_added: true,
        }
    }

    /// Makes sure `fingerprint` is enabled, in memory and in the file; returns its id.
    pub fn enable(
        &self,
        fingerprint: &Fingerprint,
        seen: Seen,
    ) -> Result<u64, consoles_xml::Error> {
        let mut file = consoles_xml::load(&self.path)?;
        let changed = apply_enable(&mut file, fingerprint, &seen);
        let id = file.find(fingerprint).map_or(0, |e| e.id);
        if changed {
            consoles_xml::save(&self.path, &file)?;
        }
        let mut known = self.lock();
        apply_enable(&mut known, fingerprint, &seen);
        if let Some(e) = known.find_mut(fingerprint) {
            e.id = id;
        }
        Ok(id)
    }

    /// Re-reads the file, applies `change` and writes the result. Returns whether it wrote.
    fn update_file(&self, change: impl FnOnce(&mut Consoles)) -> bool {
        let result = consoles_xml::load(&self.path).and_then(|mut file| {
            change(&mut file);
            consoles_xml::save(&self.path, &file)
        });
        match result {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(
                    "not updating the trust list: {e}. Fix the file; it is read again at the next \
                     start"
                );
                false
            }
        }
    }
}

fn apply_enable(file: &mut Consoles, fingerprint: &Fingerprint, seen: &Seen) -> bool {
    match file.find_mut(fingerprint) {
        Some(e) => {
            let before = e.clone();
            e.enabled = true;
            if seen.address.is_some() {
                e.last_address = seen.address.clone();
            }
            // A dialing console's source port changes on every connection: keep the first.
            if e.port.is_none() {
                e.port = seen.port;
            }
            if e.cert_pem.is_none() {
                e.cert_pem = seen.cert_pem.clone();
            }
            *e != before
        }
        None => {
            let id = file.next_id();
            file.entries.push(ConsoleEntry {
                id,
                enabled: true,
                last_address: seen.address.clone(),
                port: seen.port,
                fingerprint: fingerprint.clone(),
                cert_pem: seen.cert_pem.clone(),
            });
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(n: u8) -> Fingerprint {
        format!("sha256:{}", hex(n)).parse().unwrap()
    }

    fn hex(n: u8) -> String {
        format!("{n:02x}").repeat(32)
    }

    fn seen(addr: &str) -> Seen {
        Seen {
            address: Some(addr.into()),
            port: Some(5000),
            cert_pem: None,
        }
    }

    #[test]
    fn unknown_console_is_appended_disabled_and_stays_pending_until_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        let store = TrustStore::open(path.clone(), None).unwrap();
        assert_eq!(
            store.decide(&fp(1), seen("10.0.0.5")),
            Decision::Pending {
                id: 1,
                newly_added: true
            }
        );
        let file = consoles_xml::load(&path).unwrap();
        assert_eq!(file.entries.len(), 1);
        assert!(!file.entries[0].enabled);
        assert_eq!(file.entries[0].last_address.as_deref(), Some("10.0.0.5"));

        // The admin enables it while the engine runs: still pending until restart…
        let mut edited = file.clone();
        edited.entries[0].enabled = true;
        consoles_xml::save(&path, &edited).unwrap();
        assert!(matches!(
            store.decide(&fp(1), seen("10.0.0.6")),
            Decision::Pending { .. }
        ));
        // …and the engine's own update (new address) kept the admin's edit.
        let file = consoles_xml::load(&path).unwrap();
        assert!(file.entries[0].enabled);
        assert_eq!(file.entries[0].last_address.as_deref(), Some("10.0.0.6"));

        // After a restart it is accepted.
        let store = TrustStore::open(path.clone(), None).unwrap();
        assert_eq!(
            store.decide(&fp(1), seen("10.0.0.6")),
            Decision::Accept { id: 1 }
        );
        // A second console gets the next id.
        assert_eq!(
            store.decide(&fp(2), seen("10.0.0.7")),
            Decision::Pending {
                id: 2,
                newly_added: true
            }
        );
    }

    #[test]
    fn trusted_fingerprint_is_enabled_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        let store = TrustStore::open(path.clone(), None).unwrap();
        store.decide(&fp(1), seen("10.0.0.5"));
        drop(store);
        let store = TrustStore::open(path.clone(), Some(fp(1))).unwrap();
        assert_eq!(store.enabled_count(), 1);
        assert!(consoles_xml::load(&path).unwrap().entries[0].enabled);
        assert_eq!(
            store.decide(&fp(1), seen("10.0.0.5")),
            Decision::Accept { id: 1 }
        );
        // A different console is still pending.
        assert!(matches!(
            store.decide(&fp(3), seen("10.0.0.5")),
            Decision::Pending { .. }
        ));
    }

    #[test]
    fn a_broken_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        std::fs::write(
            &path,
            "<consoles><console id=\"1\" enabled=\"yes\"/></consoles>",
        )
        .unwrap();
        let err = TrustStore::open(path, None).unwrap_err().to_string();
        assert!(err.contains("consoles.xml"), "{err}");
        assert!(err.contains("enabled"), "{err}");
    }
}
