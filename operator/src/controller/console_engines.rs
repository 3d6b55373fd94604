//! What each console says about its engines: the operator's one view of a system outside
//! Kubernetes, kept the way a reflector keeps a store.
//!
//! The Console reconcile lists a console's engines (every page) once per refresh interval and
//! replaces that console's view with the answer ([`ConsoleEngines::listed`]); every ScanEngine of
//! the Console reads its own entry from the view ([`ConsoleEngines::lookup`]) instead of asking
//! the console. So the console is asked once per Console per refresh, whatever the number of
//! engines. A ScanEngine reconcile calls the console for one engine only to create, delete or
//! refresh it, and keeps the answer in the view ([`ConsoleEngines::record`]), since it is newer
//! than the last list.
//!
//! A change in the view wakes whom it concerns, through streams the controllers consume with
//! `reconcile_on` (kube-runtime's entry for changes outside the API server): a listing wakes the
//! ScanEngines whose entry changed ([`ConsoleEngines::engine_triggers`]); a recorded change of
//! state wakes the Console, whose engine counts follow ([`ConsoleEngines::console_triggers`]);
//! a ScanEngine that waits for a reverse engine to appear asks for an early listing
//! ([`ConsoleEngines::want_listing`]).
//!
//! Nothing here is the operator's own state: a restarted operator has no view until each
//! Console's first reconcile lists its console, which the start of the Console controller does
//! at once; until then ScanEngines keep the status they have.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use futures::Stream;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use crate::console_api::Engine;
use crate::crd::{Console, ScanEngine};

/// `(namespace, name)` of a Console.
type Key = (String, String);

/// One console's engines, by name, as last listed (and since updated by single answers).
#[derive(Clone, Debug, Default)]
struct View {
    /// uid of the Console the view was listed for (a re-created Console starts afresh).
    uid: Option<String>,
    listed_at: Option<Timestamp>,
    engines: HashMap<String, Engine>,
    /// A ScanEngine asked for a listing before the next one is due.
    wanted: bool,
    /// Why the last listing failed (reason, message), until one succeeds.
    failure: Option<(String, String)>,
}

/// What the view says about one engine.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// The console was not listed yet (just started, or unreachable so far).
    NotListed,
    /// The console does not know the engine.
    Absent,
    /// The console's record of the engine.
    Present(Engine),
    /// The last listing failed: the condition reason and message.
    Failed { reason: String, message: String },
}

/// See the module documentation.
#[derive(Default)]
pub struct ConsoleEngines {
    views: Mutex<HashMap<Key, View>>,
    engines: Mutex<Vec<mpsc::UnboundedSender<ObjectRef<ScanEngine>>>>,
    consoles: Mutex<Vec<mpsc::UnboundedSender<ObjectRef<Console>>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    crate::lock(m)
}

fn key(namespace: &str, console: &str) -> Key {
    (namespace.to_owned(), console.to_owned())
}

/// Whether two records of an engine say something different to its ScanEngine.
fn differs(a: &Engine, b: &Engine) -> bool {
    a.id != b.id
        || a.status != b.status
        || a.address != b.address
        || a.port != b.port
        || a.product_version != b.product_version
        || a.direction != b.direction
        || a.message != b.message
}

fn send<T: Clone>(senders: &Mutex<Vec<mpsc::UnboundedSender<T>>>, item: T) {
    lock(senders).retain(|tx| tx.send(item.clone()).is_ok());
}

impl ConsoleEngines {
    /// A stream of the ScanEngines to reconcile because their console said something new.
    pub fn engine_triggers(&self) -> impl Stream<Item = ObjectRef<ScanEngine>> + Send + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.engines).push(tx);
        tokio_stream_of(rx)
    }

    /// A stream of the Consoles to reconcile: one of their engines changed state, or a
    /// ScanEngine wants an early listing.
    pub fn console_triggers(&self) -> impl Stream<Item = ObjectRef<Console>> + Send + use<> {
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.consoles).push(tx);
        tokio_stream_of(rx)
    }

    /// The console of Console `namespace/console` (uid `uid`) listed `engines` at `now`:
    /// replaces its view and wakes each of `scan_engines` (the Console's ScanEngines, with
    /// their names at the console) whose entry changed, appeared or went.
    pub fn listed(
        &self,
        namespace: &str,
        console: &str,
        uid: Option<&str>,
        engines: Vec<Engine>,
        now: Timestamp,
        scan_engines: &[(ObjectRef<ScanEngine>, String)],
    ) {
        let fresh: HashMap<String, Engine> =
            engines.into_iter().map(|e| (e.name.clone(), e)).collect();
        let previous = {
            let mut views = lock(&self.views);
            let view = views.entry(key(namespace, console)).or_default();
            let first = view.listed_at.is_none() || view.uid.as_deref() != uid;
            let previous = std::mem::replace(&mut view.engines, fresh.clone());
            view.uid = uid.map(str::to_owned);
            view.listed_at = Some(now);
            view.wanted = false;
            let recovered = view.failure.take().is_some();
            (!first && !recovered).then_some(previous)
        };
        for (engine, name) in scan_engines {
            let changed = match &previous {
                None => true,
                Some(previous) => match (previous.get(name), fresh.get(name)) {
                    (Some(a), Some(b)) => differs(a, b),
                    (None, None) => false,
                    _ => true,
                },
            };
            if changed {
                send(&self.engines, engine.clone());
            }
        }
    }

    /// Listing the console of Console `namespace/console` failed (`reason`, `message`): each
    /// of its ScanEngines says so, woken once when the failure starts or its reason changes.
    pub fn listing_failed(
        &self,
        namespace: &str,
        console: &str,
        uid: Option<&str>,
        reason: &str,
        message: &str,
        scan_engines: &[(ObjectRef<ScanEngine>, String)],
    ) {
        let new = {
            let mut views = lock(&self.views);
            let view = views.entry(key(namespace, console)).or_default();
            if view.uid.as_deref() != uid {
                *view = View::default();
                view.uid = uid.map(str::to_owned);
            }
            let failure = (reason.to_owned(), message.to_owned());
            let new = view.failure.as_ref() != Some(&failure);
            view.failure = Some(failure);
            view.wanted = false;
            new
        };
        if new {
            for (engine, _) in scan_engines {
                send(&self.engines, engine.clone());
            }
        }
    }

    /// What the view of Console `namespace/console` (uid `uid`) says about engine `name`.
    pub fn lookup(&self, namespace: &str, console: &str, uid: Option<&str>, name: &str) -> Seen {
        let views = lock(&self.views);
        match views.get(&key(namespace, console)) {
            Some(view) if view.uid.as_deref() == uid && view.failure.is_some() => {
                let (reason, message) = view.failure.clone().unwrap_or_default();
                Seen::Failed { reason, message }
            }
            Some(view) if view.listed_at.is_some() && view.uid.as_deref() == uid => {
                match view.engines.get(name) {
                    Some(e) => Seen::Present(e.clone()),
                    None => Seen::Absent,
                }
            }
            _ => Seen::NotListed,
        }
    }

    /// Every engine of the view of Console `namespace/console`, if it was listed.
    pub fn engines(
        &self,
        namespace: &str,
        console: &str,
        uid: Option<&str>,
    ) -> Option<Vec<Engine>> {
        let views = lock(&self.views);
        let view = views.get(&key(namespace, console))?;
        (view.listed_at.is_some() && view.uid.as_deref() == uid).then(|| {
            let mut engines: Vec<Engine> = view.engines.values().cloned().collect();
            engines.sort_by_key(|e| e.id);
            engines
        })
    }

    /// Whether Console `namespace/console` is to be listed at `now`: its last listing is
    /// `interval` old, or none was made, or a ScanEngine asked for one at least `min_gap` after
    /// the last.
    pub fn listing_due(
        &self,
        namespace: &str,
        console: &str,
        uid: Option<&str>,
        now: Timestamp,
        interval: std::time::Duration,
        min_gap: std::time::Duration,
    ) -> bool {
        let views = lock(&self.views);
        let Some(view) = views.get(&key(namespace, console)) else {
            return true;
        };
        let Some(at) = view
            .listed_at
            .filter(|_| view.uid.as_deref() == uid && view.failure.is_none())
        else {
            return true;
        };
        let age = now.duration_since(at);
        let older_than = |d: std::time::Duration| {
            SignedDuration::try_from(d).is_ok_and(|d| age >= d) || age < SignedDuration::ZERO
        };
        older_than(interval) || (view.wanted && older_than(min_gap))
    }

    /// Whether a ScanEngine of Console `namespace/console` asked for an early listing that has
    /// not been made yet.
    pub fn wanted(&self, namespace: &str, console: &str) -> bool {
        lock(&self.views)
            .get(&key(namespace, console))
            .is_some_and(|v| v.wanted)
    }

    /// When Console `namespace/console` was last listed.
    pub fn listed_at(&self, namespace: &str, console: &str) -> Option<Timestamp> {
        lock(&self.views)
            .get(&key(namespace, console))
            .and_then(|v| v.listed_at)
    }

    /// A single answer about one engine (created, refreshed): newer than the last listing.
    /// Wakes the Console when the engine's state changed, so its counts follow.
    pub fn record(&self, namespace: &str, console: &str, engine: Engine) {
        let state_changed = {
            let mut views = lock(&self.views);
            let Some(view) = views
                .get_mut(&key(namespace, console))
                .filter(|v| v.listed_at.is_some())
            else {
                return;
            };
            let old = view.engines.insert(engine.name.clone(), engine.clone());
            old.is_none_or(|o| o.status != engine.status)
        };
        if state_changed {
            send(&self.consoles, ObjectRef::new(console).within(namespace));
        }
    }

    /// Engine `name` was removed from the console.
    pub fn removed(&self, namespace: &str, console: &str, name: &str) {
        let removed = lock(&self.views)
            .get_mut(&key(namespace, console))
            .and_then(|v| v.engines.remove(name))
            .is_some();
        if removed {
            send(&self.consoles, ObjectRef::new(console).within(namespace));
        }
    }

    /// A ScanEngine of Console `namespace/console` waits for its reverse engine to appear at
    /// the console: the Console lists again soon.
    pub fn want_listing(&self, namespace: &str, console: &str) {
        let first = {
            let mut views = lock(&self.views);
            let view = views.entry(key(namespace, console)).or_default();
            !std::mem::replace(&mut view.wanted, true)
        };
        if first {
            send(&self.consoles, ObjectRef::new(console).within(namespace));
        }
    }

    /// Console `namespace/console` is gone.
    pub fn forget(&self, namespace: &str, console: &str) {
        lock(&self.views).remove(&key(namespace, console));
    }
}

/// An unbounded receiver as a stream. Unbounded because a trigger must never be dropped; the
/// controllers' schedulers merge repeated triggers of one object, and each sender sends at most
/// one trigger per engine per listing.
fn tokio_stream_of<T: Send + 'static>(
    mut rx: mpsc::UnboundedReceiver<T>,
) -> impl Stream<Item = T> + Send {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;

    use super::*;

    fn at(second: i64) -> Timestamp {
        Timestamp::from_second(1_767_225_600 + second).unwrap_or(Timestamp::UNIX_EPOCH)
    }

    fn engine(id: i64, name: &str, status: &str) -> Engine {
        Engine {
            id,
            name: name.into(),
            status: Some(status.into()),
            ..Engine::default()
        }
    }

    fn refs() -> Vec<(ObjectRef<ScanEngine>, String)> {
        ["a", "b"]
            .iter()
            .map(|n| {
                (
                    ObjectRef::new(n).within("scanning"),
                    format!("{n}.scanning"),
                )
            })
            .collect()
    }

    fn drain<T>(s: &mut (impl Stream<Item = T> + Unpin)) -> Vec<T> {
        let mut out = Vec::new();
        while let Some(Some(x)) = s.next().now_or_never() {
            out.push(x);
        }
        out
    }

    use futures::FutureExt as _;

    #[test]
    fn a_first_listing_wakes_every_engine_then_only_those_that_changed() {
        let view = ConsoleEngines::default();
        let mut woken = Box::pin(view.engine_triggers());
        assert_eq!(
            view.lookup("scanning", "main", Some("u"), "a.scanning"),
            Seen::NotListed
        );
        view.listed(
            "scanning",
            "main",
            Some("u"),
            vec![engine(1, "a.scanning", "unknown")],
            at(0),
            &refs(),
        );
        assert_eq!(drain(&mut woken).len(), 2, "first listing: all");
        assert_eq!(
            view.lookup("scanning", "main", Some("u"), "b.scanning"),
            Seen::Absent
        );
        view.listed(
            "scanning",
            "main",
            Some("u"),
            vec![engine(1, "a.scanning", "unknown")],
            at(60),
            &refs(),
        );
        assert!(drain(&mut woken).is_empty(), "nothing changed");
        view.listed(
            "scanning",
            "main",
            Some("u"),
            vec![
                engine(1, "a.scanning", "active"),
                engine(2, "b.scanning", "unknown"),
            ],
            at(120),
            &refs(),
        );
        let woken: Vec<String> = drain(&mut woken).into_iter().map(|r| r.name).collect();
        assert_eq!(woken, ["a", "b"]);
        assert!(matches!(
            view.lookup("scanning", "main", Some("u"), "a.scanning"),
            Seen::Present(e) if e.status.as_deref() == Some("active")
        ));
        assert_eq!(
            view.lookup("scanning", "main", Some("other-uid"), "a.scanning"),
            Seen::NotListed,
            "a re-created Console starts afresh"
        );
    }

    #[test]
    fn a_recorded_change_of_state_wakes_the_console_once() {
        let view = ConsoleEngines::default();
        let mut consoles = Box::pin(view.console_triggers());
        view.listed(
            "scanning",
            "main",
            None,
            vec![engine(1, "a.scanning", "unknown")],
            at(0),
            &[],
        );
        view.record("scanning", "main", engine(1, "a.scanning", "unknown"));
        assert!(drain(&mut consoles).is_empty(), "same state");
        view.record("scanning", "main", engine(1, "a.scanning", "active"));
        assert_eq!(drain(&mut consoles).len(), 1);
    }

    #[test]
    fn a_listing_is_due_after_the_interval_or_early_when_wanted() {
        let view = ConsoleEngines::default();
        let minute = std::time::Duration::from_secs(60);
        let gap = std::time::Duration::from_secs(2);
        assert!(view.listing_due("scanning", "main", None, at(0), minute, gap));
        view.listed("scanning", "main", None, Vec::new(), at(0), &[]);
        assert!(!view.listing_due("scanning", "main", None, at(1), minute, gap));
        view.want_listing("scanning", "main");
        assert!(
            !view.listing_due("scanning", "main", None, at(1), minute, gap),
            "too soon"
        );
        assert!(view.listing_due("scanning", "main", None, at(2), minute, gap));
        view.listed("scanning", "main", None, Vec::new(), at(2), &[]);
        assert!(!view.listing_due("scanning", "main", None, at(30), minute, gap));
        assert!(view.listing_due("scanning", "main", None, at(62), minute, gap));
    }
}
