//! The trust list at run time.
//!
//! `consoles.xml` is read once, at start-up: that snapshot decides which consoles are enabled,
//! exactly as in the seeds' flow (an admin sets `enabled="1"` and restarts the engine). What the
//! engine learns while running (a new console, a console's new address) is merged into the file
//! on disk under the file's write lock ([`consoles_xml::update`]): the file is re-read, the one
//! change applied, and the result written atomically, so neither an admin's concurrent edit nor
//! another connection's new entry is ever overwritten.
//!
//! Whoever can reach the engine's port can present a fresh self-signed certificate on every
//! connection, so at most [`MAX_PENDING`] entries wait for authorization (`enabled="0"`). When
//! that many wait, an unknown console is answered "pending authorization" without being written
//! anywhere, and a warning says so at most once every [`REFUSAL_LOG_INTERVAL`].
//!
//! The file work blocks; called from async code it runs without holding up the runtime's worker
//! thread (see [`off_runtime`]).

use std::{path::PathBuf, sync::Mutex, time::Duration};

use scan_engine_protocol::Fingerprint;

use crate::{
    bounded::RateLimited,
    consoles_xml::{self, ConsoleEntry, Consoles},
};

/// How many consoles may wait for authorization (`enabled="0"`) in `consoles.xml`.
pub const MAX_PENDING: usize = 64;

/// At most one warning about refused unknown consoles per this interval.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// What to answer a console that completed the greeting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The console is enabled: answer `Accepted` and serve the session.
    Accept { id: u64 },
    /// The console is known but not enabled (yet): answer `PendingAuthorization`. A console
    /// refused because [`MAX_PENDING`] consoles already wait gets this answer too, with id 0
    /// and `newly_added: false`; it is recorded nowhere.
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
    refusals: RateLimited,
}

/// Runs blocking file work (parsing or writing `consoles.xml`) without stalling the async
/// runtime: on a worker thread of a multi-threaded runtime the worker first hands its other
/// tasks to a fresh thread (`tokio::task::block_in_place`), elsewhere (a `spawn_blocking`
/// thread, a plain thread, a single-threaded test runtime) it simply runs. The trust list keeps
/// a synchronous API so that every caller gets this, whether or not it is async itself.
pub fn off_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// What recording an unknown console came to.
enum Recorded {
    Added(u64),
    AlreadyThere(u64),
    Full,
}

impl TrustStore {
    /// Reads the trust list strictly; with `trusted`, makes sure that console is enabled in the
    /// file (Automatic authorization).
    pub fn open(path: PathBuf, trusted: Option<Fingerprint>) -> Result<Self, consoles_xml::Error> {
        let known = off_runtime(|| consoles_xml::load(&path))?;
        let store = Self {
            path,
            trusted,
            known: Mutex::new(known),
            refusals: RateLimited::new(REFUSAL_LOG_INTERVAL),
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

    /// How many consoles wait for authorization in the snapshot.
    pub fn pending_count(&self) -> usize {
        pending(&self.lock())
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
        off_runtime(|| self.decide_now(fingerprint, seen))
    }

    fn decide_now(&self, fingerprint: &Fingerprint, seen: Seen) -> Decision {
        if self.trusted.as_ref() == Some(fingerprint) {
            if let Some(e) = self.lock().find(fingerprint)
                && e.enabled
                && !news(e, &seen)
            {
                return Decision::Accept { id: e.id };
            }
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
            if news(entry, &seen) {
                if let Some(a) = &seen.address {
                    entry.last_address = Some(a.clone());
                }
                if entry.cert_pem.is_none() {
                    entry.cert_pem = seen.cert_pem.clone();
                }
                drop(known);
                self.update_file(|file| match file.find_mut(fingerprint) {
                    Some(e) => {
                        let before = e.clone();
                        if seen.address.is_some() {
                            e.last_address = seen.address.clone();
                        }
                        if e.cert_pem.is_none() {
                            e.cert_pem = seen.cert_pem.clone();
                        }
                        ((), *e != before)
                    }
                    None => ((), false),
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
        // Unknown: append it, disabled, unless the waiting room is full.
        if pending(&known) >= MAX_PENDING {
            drop(known);
            return self.refuse(fingerprint);
        }
        let memory_next = known.next_id();
        drop(known);
        let entry = |id| ConsoleEntry {
            id,
            enabled: false,
            last_address: seen.address.clone(),
            port: seen.port,
            fingerprint: fingerprint.clone(),
            cert_pem: seen.cert_pem.clone(),
        };
        let recorded = self.update_file(|file| {
            if let Some(e) = file.find(fingerprint) {
                return (Recorded::AlreadyThere(e.id), false);
            }
            if pending(file) >= MAX_PENDING {
                return (Recorded::Full, false);
            }
            let id = memory_next.max(file.next_id());
            file.entries.push(entry(id));
            (Recorded::Added(id), true)
        });
        let id = match recorded {
            Some(Recorded::Full) => return self.refuse(fingerprint),
            Some(Recorded::Added(id) | Recorded::AlreadyThere(id)) => id,
            // The file could not be updated (logged): remember the console until restart.
            None => memory_next,
        };
        let mut known = self.lock();
        let id = match known.find(fingerprint) {
            // Another connection of the same console got here first.
            Some(e) => e.id,
            None => {
                known.entries.push(entry(id));
                id
            }
        };
        Decision::Pending {
            id,
            newly_added: true,
        }
    }

    fn refuse(&self, fingerprint: &Fingerprint) -> Decision {
        if let Some(held_back) = self.refusals.check() {
            tracing::warn!(
                console = %fingerprint,
                file = %self.path.display(),
                max_pending = MAX_PENDING,
                refused_since_last_warning = held_back,
                "unknown console not recorded: {MAX_PENDING} consoles already wait for \
                 authorization. Enable or remove the entries with enabled=\"0\" and restart \
                 the engine"
            );
        }
        Decision::Pending {
            id: 0,
            newly_added: false,
        }
    }

    /// Makes sure `fingerprint` is enabled, in memory and in the file; returns its id.
    pub fn enable(
        &self,
        fingerprint: &Fingerprint,
        seen: Seen,
    ) -> Result<u64, consoles_xml::Error> {
        let id = off_runtime(|| {
            consoles_xml::update(&self.path, |file| {
                let changed = apply_enable(file, fingerprint, &seen);
                (file.find(fingerprint).map_or(0, |e| e.id), changed)
            })
        })?;
        let mut known = self.lock();
        apply_enable(&mut known, fingerprint, &seen);
        if let Some(e) = known.find_mut(fingerprint) {
            e.id = id;
        }
        Ok(id)
    }

    /// Re-reads the file under its write lock, applies `change` and writes the result when
    /// `change` asks to. `None` (logged) when the file could not be read or written.
    fn update_file<T>(&self, change: impl FnOnce(&mut Consoles) -> (T, bool)) -> Option<T> {
        match consoles_xml::update(&self.path, change) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(
                    "not updating the trust list: {e}. Fix the file; it is read again at the next \
                     start"
                );
                None
            }
        }
    }
}

/// Entries waiting for authorization.
fn pending(consoles: &Consoles) -> usize {
    consoles.entries.iter().filter(|e| !e.enabled).count()
}

/// Whether `seen` tells something the entry does not hold yet (a new address, its certificate).
fn news(entry: &ConsoleEntry, seen: &Seen) -> bool {
    (seen.address.is_some() && entry.last_address != seen.address)
        || (entry.cert_pem.is_none() && seen.cert_pem.is_some())
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

    fn other_seen(n: usize) -> Seen {
        Seen {
            address: Some(format!("10.1.{}.{}", n / 256, n % 256)),
            port: Some(40000),
            cert_pem: None,
        }
    }

    fn wide_fp(n: usize) -> Fingerprint {
        format!("sha256:{n:064x}").parse().unwrap()
    }

    #[test]
    fn a_flood_of_unknown_consoles_fills_only_the_pending_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        // An enabled console from before the flood.
        let store = TrustStore::open(path.clone(), Some(fp(1))).unwrap();
        for n in 0..MAX_PENDING {
            assert!(matches!(
                store.decide(&wide_fp(1000 + n), other_seen(n)),
                Decision::Pending {
                    newly_added: true,
                    ..
                }
            ));
        }
        let full = std::fs::read_to_string(&path).unwrap();
        for n in MAX_PENDING..MAX_PENDING + 500 {
            assert_eq!(
                store.decide(&wide_fp(1000 + n), other_seen(n)),
                Decision::Pending {
                    id: 0,
                    newly_added: false
                }
            );
        }
        // Nothing was written for the refused ones, in the file or in memory.
        assert!(std::fs::read_to_string(&path).unwrap() == full);
        assert_eq!(store.pending_count(), MAX_PENDING);
        let file = consoles_xml::load(&path).unwrap();
        assert_eq!(file.entries.len(), MAX_PENDING + 1);
        // The enabled console still gets in, and a waiting one is still known.
        assert!(matches!(
            store.decide(&fp(1), seen("10.0.0.5")),
            Decision::Accept { .. }
        ));
        assert!(matches!(
            store.decide(&wide_fp(1000), other_seen(0)),
            Decision::Pending {
                newly_added: false,
                ..
            }
        ));
        // A restarted engine holds the same cap against the file it reads.
        let full = std::fs::read_to_string(&path).unwrap();
        let store = TrustStore::open(path.clone(), None).unwrap();
        assert_eq!(
            store.decide(&wide_fp(99_999), other_seen(1)),
            Decision::Pending {
                id: 0,
                newly_added: false
            }
        );
        assert!(std::fs::read_to_string(&path).unwrap() == full);
    }

    #[test]
    fn the_cap_is_counted_in_the_file_too() {
        // Another writer (a second engine process on the same volume, say) filled the file
        // after this store read it: this store must not add a 65th waiting entry.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        let store = TrustStore::open(path.clone(), None).unwrap();
        let other = TrustStore::open(path.clone(), None).unwrap();
        for n in 0..MAX_PENDING {
            other.decide(&wide_fp(n), other_seen(n));
        }
        assert_eq!(
            store.decide(&wide_fp(5000), other_seen(1)),
            Decision::Pending {
                id: 0,
                newly_added: false
            }
        );
        assert_eq!(
            consoles_xml::load(&path).unwrap().entries.len(),
            MAX_PENDING
        );
    }

    #[test]
    fn concurrent_unknown_consoles_are_all_recorded_with_distinct_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("consoles.xml");
        let stores = [
            TrustStore::open(path.clone(), None).unwrap(),
            TrustStore::open(path.clone(), None).unwrap(),
        ];
        std::thread::scope(|s| {
            for n in 0..24 {
                let store = &stores[n % 2];
                s.spawn(move || store.decide(&wide_fp(n), other_seen(n)));
            }
        });
        let file = consoles_xml::load(&path).unwrap();
        assert_eq!(file.entries.len(), 24);
        let ids: std::collections::HashSet<_> = file.entries.iter().map(|e| e.id).collect();
        assert_eq!(ids.len(), 24);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn deciding_inside_the_runtime_works_on_both_flavours() {
        let dir = tempfile::tempdir().unwrap();
        let store = TrustStore::open(dir.path().join("consoles.xml"), None).unwrap();
        assert!(matches!(
            store.decide(&fp(7), seen("10.0.0.5")),
            Decision::Pending { .. }
        ));
        let inner = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async move { store.decide(&fp(8), seen("10.0.0.5")) })
        });
        assert!(matches!(inner.join().unwrap(), Decision::Pending { .. }));
    }
}
