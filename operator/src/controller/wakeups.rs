//! Which wake-ups of a ScanEngine reconcile have work to do.
//!
//! The controller wakes a reconcile for every change of the ScanEngine, including the status
//! the reconcile itself just wrote. That echo has nothing to do: the spec is the same, no child
//! and no Console changed, and the next look at the console is not due yet. Without this, every
//! status write costs another round of reads (the Console, its connection Secrets, the console
//! API) per engine.
//!
//! After a successful reconcile, [`Wakeups::done`] records a digest of what the reconcile reads
//! from the ScanEngine's metadata (generation and annotations) and when the next one is due. A
//! wake-up is skipped ([`Wakeups::idle`]) only when the digest is the same, the due time has not
//! come, and nothing marked the engine since ([`Wakeups::touch`]: a child's watch event, its
//! Console changing), also not while the last reconcile ran ([`Wakeups::begin`]). A failed
//! reconcile forgets the record, so the retry does the work.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::{Resource, ResourceExt};

#[derive(Clone, Copy, Debug)]
enum Record {
    /// A reconcile is running.
    Running,
    /// Something changed while it ran: its record must not be kept.
    Touched,
    /// The last reconcile's inputs, and when the next one is due.
    Done { digest: u64, due: Timestamp },
}

/// See the module documentation. Keyed by `kind/namespace/name`.
#[derive(Debug, Default)]
pub struct Wakeups {
    records: Mutex<HashMap<String, Record>>,
}

/// What a reconcile reads from an object's metadata: its generation and annotations.
pub fn metadata_digest<K: Resource>(obj: &K) -> u64 {
    let mut hasher = DefaultHasher::new();
    obj.meta().generation.hash(&mut hasher);
    obj.annotations().hash(&mut hasher);
    hasher.finish()
}

impl Wakeups {
    fn records(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        crate::lock(&self.records)
    }

    /// When this wake-up has nothing to do, how long until the next one is due.
    pub fn idle(&self, key: &str, digest: u64, now: Timestamp) -> Option<Duration> {
        let Some(Record::Done { digest: d, due }) = self.records().get(key).copied() else {
            return None;
        };
        if d != digest || now >= due {
            return None;
        }
        Duration::try_from(due.duration_since(now)).ok()
    }

    /// A reconcile of `key` starts (it will do the work).
    pub fn begin(&self, key: &str) {
        self.records().insert(key.to_owned(), Record::Running);
    }

    /// The reconcile of `key` succeeded; the next one is due `after` from `now`. Not kept when
    /// something touched the engine while it ran: the wake-up that touch queued does the work.
    pub fn done(&self, key: &str, digest: u64, now: Timestamp, after: Duration) {
        let mut records = self.records();
        if matches!(records.get(key), Some(Record::Touched)) {
            records.remove(key);
            return;
        }
        let due = now.checked_add(after).unwrap_or(Timestamp::MAX);
        records.insert(key.to_owned(), Record::Done { digest, due });
    }

    /// Something the reconcile of `key` depends on changed, or the reconcile failed, or the
    /// object is gone: the next wake-up does the work.
    pub fn touch(&self, key: &str) {
        let mut records = self.records();
        match records.get(key) {
            Some(Record::Running) => {
                records.insert(key.to_owned(), Record::Touched);
            }
            Some(_) => {
                records.remove(key);
            }
            None => {}
        }
    }

    /// The reconcile of `key` failed, or the object is gone.
    pub fn forget(&self, key: &str) {
        self.records().remove(key);
    }

    pub fn len(&self) -> usize {
        self.records().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn the_echo_of_a_status_write_is_idle_until_due() {
        let w = Wakeups::default();
        assert_eq!(w.idle("k", 1, at(0)), None, "never reconciled");
        w.begin("k");
        w.done("k", 1, at(0), Duration::from_secs(60));
        assert_eq!(w.idle("k", 1, at(1)), Some(Duration::from_secs(59)));
        assert_eq!(w.idle("k", 1, at(60)), None, "due");
    }

    #[test]
    fn a_new_spec_or_a_touch_does_the_work() {
        let w = Wakeups::default();
        w.begin("k");
        w.done("k", 1, at(0), Duration::from_secs(60));
        assert_eq!(
            w.idle("k", 2, at(1)),
            None,
            "generation or annotations changed"
        );
        w.touch("k");
        assert_eq!(
            w.idle("k", 1, at(1)),
            None,
            "a child or the Console changed"
        );
        assert!(w.is_empty());
    }

    #[test]
    fn a_touch_while_the_reconcile_runs_is_not_lost() {
        let w = Wakeups::default();
        w.begin("k");
        w.touch("k");
        w.done("k", 1, at(0), Duration::from_secs(60));
        assert_eq!(
            w.idle("k", 1, at(1)),
            None,
            "the queued wake-up does the work"
        );
    }

    #[test]
    fn the_digest_covers_generation_and_annotations() {
        let mut se = crate::controller::scan_engine::build::testing::engine(
            crate::crd::Communication::ConsoleToEngine,
        );
        let base = metadata_digest(&se);
        se.metadata.generation = Some(se.metadata.generation.unwrap_or(0) + 1);
        let newer = metadata_digest(&se);
        assert_ne!(base, newer);
        se.annotations_mut()
            .insert("scanengine.dev/refresh".into(), "1".into());
        assert_ne!(newer, metadata_digest(&se));
        se.status = None;
        let without_status = metadata_digest(&se);
        se.status = Some(Default::default());
        assert_eq!(
            without_status,
            metadata_digest(&se),
            "status is not an input"
        );
    }
}
