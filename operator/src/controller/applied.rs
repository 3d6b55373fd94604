//! What the operator last applied, so that a periodic refresh re-sends nothing unchanged.
//!
//! Every reconcile builds the desired child objects. Sending them again with server-side apply
//! when nothing changed is harmless to the objects but not to the API server: at a thousand
//! engines, each refresh would be thousands of no-op writes. This cache remembers, per child
//! object, a digest of the body last applied (and, only where a reconcile reads it back, what the
//! API server answered). A reconcile skips the apply when the digest is the same and no watch
//! event has touched the object since.
//!
//! Watch events are the only thing that mark an object as changed ([`AppliedCache::changed`],
//! called from the child watches in [`crate::controller::run`]). That keeps drift repair
//! intact: anyone editing or deleting a child triggers an event, the entry is dropped and the
//! next reconcile applies again. The operator's own applies cause events too; those carry the
//! resourceVersion the apply answered with and change nothing.
//!
//! An apply's own event often arrives before its answer does. While an apply is in flight
//! ([`AppliedCache::begin`]), [`AppliedCache::changed`] only records the resourceVersions it
//! sees; the reconcile running the apply is the one to act on them, so no new reconcile is
//! triggered. [`AppliedCache::finish`] keeps the entry when every event seen meanwhile carries
//! the resourceVersion the apply answered with (its own echo), and otherwise tells the caller
//! that the object changed during the apply, so it applies again.
//!
//! The cache lives in memory. After a restart every object is applied once again, which is
//! idempotent.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use serde_json::Value;

/// Identifies a child object: kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjectKey {
    kind: String,
    namespace: String,
    name: String,
}

impl ObjectKey {
    pub fn new(kind: &str, namespace: &str, name: &str) -> Self {
        Self {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

/// A digest of a desired body, or of "must not exist".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Digest(u64);

impl Digest {
    pub fn of(desired: Option<&Value>) -> Self {
        let mut hasher = DefaultHasher::new();
        match desired {
            // The builders are deterministic, so an unchanged desired object prints the same.
            Some(v) => v.to_string().hash(&mut hasher),
            None => "absent".hash(&mut hasher),
        }
        Self(hasher.finish())
    }

    /// The digest of "the object must not exist".
    pub fn absent() -> Self {
        Self::of(None)
    }

    /// Distinguishes entries that keep the API server's answer from those that do not.
    pub fn keeping(self, keep: bool) -> Self {
        Self(if keep {
            self.0.rotate_left(1) ^ 1
        } else {
            self.0
        })
    }
}

#[derive(Debug)]
enum Entry {
    /// An apply is in flight; the resourceVersions of the events seen meanwhile.
    Pending { seen: Vec<Option<String>> },
    /// Applied `digest`; `object`: the API server's answer when the caller keeps it (`None`:
    /// not kept, or the object is absent).
    Applied {
        digest: Digest,
        object: Option<Value>,
        /// The resourceVersion the apply produced: its own watch event is no change.
        resource_version: Option<String>,
    },
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct AppliedCache {
    entries: Mutex<HashMap<ObjectKey, Entry>>,
}

impl AppliedCache {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, Entry>> {
        crate::lock(&self.entries)
    }

    /// What the API server answered when `digest` was last applied, if nothing touched the
    /// object since: `Some(Some(obj))` present, `Some(None)` known absent, `None` unknown.
    pub fn lookup(&self, key: &ObjectKey, digest: Digest) -> Option<Option<Value>> {
        match self.entries().get(key) {
            Some(Entry::Applied {
                digest: d, object, ..
            }) if *d == digest => Some(object.clone()),
            _ => None,
        }
    }

    /// Whether `key` was applied by this operator and no watch event touched it since (with
    /// any digest): then it is still the operator's own object.
    pub fn holds(&self, key: &ObjectKey) -> bool {
        matches!(self.entries().get(key), Some(Entry::Applied { .. }))
    }

    /// An apply of `key` starts.
    pub fn begin(&self, key: &ObjectKey) {
        self.entries()
            .insert(key.clone(), Entry::Pending { seen: Vec::new() });
    }

    /// The apply of `key` succeeded, producing `resource_version` (`object`: the answer, when
    /// the caller reads it back). Returns whether it is kept: false when an event other than
    /// the apply's own came in meanwhile (the object changed during the apply; apply again).
    pub fn finish(
        &self,
        key: &ObjectKey,
        digest: Digest,
        object: Option<Value>,
        resource_version: Option<String>,
    ) -> bool {
        let mut entries = self.entries();
        let own_echo_only = match entries.get(key) {
            Some(Entry::Pending { seen }) => seen
                .iter()
                .all(|rv| rv.is_some() && *rv == resource_version),
            _ => false,
        };
        if own_echo_only {
            entries.insert(
                key.clone(),
                Entry::Applied {
                    digest,
                    object,
                    resource_version,
                },
            );
        } else {
            entries.remove(key);
        }
        own_echo_only
    }

    /// The apply of `key` failed, or its owner is gone: forget it.
    pub fn forget(&self, key: &ObjectKey) {
        self.entries().remove(key);
    }

    /// A watch saw `key` at `resource_version` (created, modified, deleted or re-listed). The
    /// event of the operator's own apply (same resourceVersion as the apply's answer) changes
    /// nothing; any other does. A deletion carries the resourceVersion of the deletion.
    ///
    /// Returns true when the owner must be reconciled: false for that echo, and false while
    /// an apply of `key` is in flight (the event is recorded; [`Self::finish`] weighs it).
    pub fn changed(&self, key: &ObjectKey, resource_version: Option<&str>) -> bool {
        let mut entries = self.entries();
        match entries.get_mut(key) {
            Some(Entry::Pending { seen }) => {
                // A handful is plenty: any event but the echo already means "apply again".
                if seen.len() < 8 {
                    seen.push(resource_version.map(str::to_owned));
                } else {
                    seen[0] = None;
                }
                false
            }
            Some(Entry::Applied {
                resource_version: Some(own),
                ..
            }) if Some(own.as_str()) == resource_version => false,
            Some(Entry::Applied { .. }) => {
                entries.remove(key);
                true
            }
            None => true,
        }
    }

    /// How many objects are remembered (for tests and metrics).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn key() -> ObjectKey {
        ObjectKey::new("StatefulSet", "scanning", "edge-scan-engine")
    }

    #[test]
    fn an_applied_object_is_reused_until_it_changes() {
        let cache = AppliedCache::default();
        let body = json!({"spec": {"replicas": 1}});
        let digest = Digest::of(Some(&body));
        assert_eq!(cache.lookup(&key(), digest), None, "nothing applied yet");

        cache.begin(&key());
        assert!(cache.finish(
            &key(),
            digest,
            Some(json!({"applied": true})),
            Some("41".into()),
        ));
        assert!(!cache.changed(&key(), Some("41")), "the apply's own event");
        assert!(
            cache.lookup(&key(), digest).is_some(),
            "the apply's own event"
        );
        assert_eq!(
            cache.lookup(&key(), digest),
            Some(Some(json!({"applied": true})))
        );

        let other = Digest::of(Some(&json!({"spec": {"replicas": 2}})));
        assert_eq!(cache.lookup(&key(), other), None, "a new desired body");

        assert!(cache.changed(&key(), Some("42")), "someone else's change");
        assert_eq!(cache.lookup(&key(), digest), None);
    }

    #[test]
    fn another_change_during_the_apply_means_apply_again() {
        let cache = AppliedCache::default();
        let digest = Digest::of(None);
        cache.begin(&key());
        assert!(
            !cache.changed(&key(), Some("7")),
            "the running reconcile settles events seen during its apply"
        );
        assert!(
            !cache.finish(&key(), digest, None, Some("8".into())),
            "resourceVersion 7 is not the apply's own: the object changed meanwhile"
        );
        assert_eq!(cache.lookup(&key(), digest), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn the_echo_arriving_before_the_answer_is_still_the_echo() {
        let cache = AppliedCache::default();
        let digest = Digest::of(Some(&json!({"spec": {}})));
        cache.begin(&key());
        assert!(!cache.changed(&key(), Some("9")));
        assert!(cache.finish(&key(), digest, None, Some("9".into())));
        assert_eq!(cache.lookup(&key(), digest), Some(None));
        assert!(!cache.changed(&key(), Some("9")), "a re-list repeats it");
        assert!(cache.changed(&key(), Some("10")));
    }

    #[test]
    fn an_event_without_a_version_during_the_apply_is_a_change() {
        let cache = AppliedCache::default();
        cache.begin(&key());
        assert!(!cache.changed(&key(), None));
        assert!(!cache.finish(&key(), Digest::absent(), None, None));
        assert!(cache.is_empty());
    }

    #[test]
    fn events_for_unknown_objects_keep_nothing() {
        let cache = AppliedCache::default();
        assert!(cache.changed(&key(), None));
        assert!(cache.is_empty());
    }

    #[test]
    fn absent_and_present_digests_differ_and_are_stable() {
        let body = json!({"b": 1, "a": [1, 2]});
        assert_eq!(Digest::of(Some(&body)), Digest::of(Some(&body.clone())));
        assert_ne!(Digest::of(Some(&body)), Digest::of(None));
    }
}
