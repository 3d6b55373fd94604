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
//! An event that arrives while an apply is in flight must not be lost: [`AppliedCache::begin`]
//! marks the entry pending, [`AppliedCache::changed`] turns a pending entry stale, and
//! [`AppliedCache::finish`] keeps only a pending (not a stale) entry.
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
    /// An apply is in flight.
    Pending,
    /// An event touched the object while its apply was in flight.
    Stale,
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
        match self.entries.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
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

    /// An apply of `key` starts.
    pub fn begin(&self, key: &ObjectKey) {
        self.entries().insert(key.clone(), Entry::Pending);
    }

    /// The apply of `key` succeeded, producing `resource_version` (`object`: the answer, when
    /// the caller reads it back); kept unless an event came in meanwhile.
    pub fn finish(
        &self,
        key: &ObjectKey,
        digest: Digest,
        object: Option<Value>,
        resource_version: Option<String>,
    ) {
        let mut entries = self.entries();
        match entries.get(key) {
            Some(Entry::Pending) => {
                entries.insert(
                    key.clone(),
                    Entry::Applied {
                        digest,
                        object,
                        resource_version,
                    },
                );
            }
            _ => {
                entries.remove(key);
            }
        }
    }

    /// The apply of `key` failed, or its owner is gone: forget it.
    pub fn forget(&self, key: &ObjectKey) {
        self.entries().remove(key);
    }

    /// A watch saw `key` at `resource_version` (created, modified, deleted or re-listed). The
    /// event of the operator's own apply (same resourceVersion as the apply's answer) changes
    /// nothing; any other does. A deletion carries the resourceVersion of the deletion.
    ///
    /// Returns false for that echo (nothing for the owner to do), true otherwise.
    pub fn changed(&self, key: &ObjectKey, resource_version: Option<&str>) -> bool {
        let mut entries = self.entries();
        match entries.get(key) {
            Some(Entry::Pending) => {
                entries.insert(key.clone(), Entry::Stale);
            }
            Some(Entry::Applied {
                resource_version: Some(own),
                ..
            }) if Some(own.as_str()) == resource_version => return false,
            Some(Entry::Applied { .. }) => {
                entries.remove(key);
            }
            Some(Entry::Stale) | None => {}
        }
        true
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
        cache.finish(
            &key(),
            digest,
            Some(json!({"applied": true})),
            Some("41".into()),
        );
        cache.changed(&key(), Some("41"));
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
    fn an_event_during_the_apply_is_not_lost() {
        let cache = AppliedCache::default();
        let digest = Digest::of(None);
        cache.begin(&key());
        assert!(cache.changed(&key(), Some("7")));
        cache.finish(&key(), digest, None, Some("7".into()));
        assert_eq!(cache.lookup(&key(), digest), None);
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
