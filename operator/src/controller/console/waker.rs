//! Wakes a Console's reconcile when one of its engines changes, so the Console's engine counts
//! (`kubectl get consoles`: ENGINES, ACTIVE) follow within seconds instead of waiting for the
//! next refresh.
//!
//! The ScanEngine reconciler calls [`ConsoleWaker::wake`] just before it writes a status that
//! changes the engine's communication state or registration, and after its cleanup removed a
//! registration. The Console controller watches ScanEngines; the watch event of that write (or
//! of the finalizer's removal) meets the mark in [`ConsoleWaker::take`] and triggers the
//! Console. Every other ScanEngine event triggers nothing, and many marks of one Console while
//! its reconcile runs are merged by the controller into one more reconcile: a thousand engines
//! going Active cost a handful of Console reconciles.

use std::collections::HashSet;
use std::sync::Mutex;

/// See the module documentation. Holds `(namespace, name)` of the Consoles to look at again.
#[derive(Debug, Default)]
pub struct ConsoleWaker {
    marked: Mutex<HashSet<(String, String)>>,
}

impl ConsoleWaker {
    fn marked(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        crate::lock(&self.marked)
    }

    /// Console `namespace/name` is to be reconciled at the next event of one of its engines.
    pub fn wake(&self, namespace: &str, name: &str) {
        self.marked()
            .insert((namespace.to_owned(), name.to_owned()));
    }

    /// Whether Console `namespace/name` was marked; clears the mark.
    pub fn take(&self, namespace: &str, name: &str) -> bool {
        self.marked()
            .remove(&(namespace.to_owned(), name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_triggers_its_console_once() {
        let waker = ConsoleWaker::default();
        assert!(!waker.take("scanning", "console"), "nothing marked");
        waker.wake("scanning", "console");
        waker.wake("scanning", "console");
        assert!(!waker.take("other", "console"), "another namespace");
        assert!(!waker.take("scanning", "other"), "another Console");
        assert!(waker.take("scanning", "console"));
        assert!(!waker.take("scanning", "console"), "marks merge");
    }
}
