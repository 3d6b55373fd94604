//! The console's engine-listener admission (`listener::admit_session`, everything after the TLS
//! handshake) driven by scripts of up to eight peer connections, each presenting a pinned
//! engine's certificate or a stranger's and sending greetings, pairing requests, pings, raw
//! bytes, pauses and early closes.
//!
//! The console holds two engine-to-console engines, a pinned console-to-engine engine, an
//! unpinned one, a valid shared secret and an expired one. After every connection:
//! * a connection never changes an existing engine other than the one its certificate is
//!   pinned to (a stranger changes none), and no engine disappears;
//! * a new engine appears only after a `PairRequest` with the valid secret, from an unpinned
//!   certificate, pinned to that certificate; `Paired` and `Welcome` name the engine that holds
//!   the certificate;
//! * every answer fits the pre-authentication frame bound, the first is the console's `Hello`;
//! * the admission ends within its bound, and no peer makes the console's own store fail.
#![no_main]

#[path = "peer/mod.rs"]
mod peer;

use std::{collections::BTreeMap, time::Duration};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use peer::{Secret, Who, Wire};
use scan_engine_protocol::{Message, identity::cert_der_to_pem, messages::Role};
use security_console::{
    app::App,
    clock::Clock,
    engines::{
        EngineStatus,
        listener::{self, Dropped, Logs},
        state,
    },
    store::{Direction, EngineRecord, NewReverseEngine, Observation, Outcome},
    testing,
};

/// Engine names: the known identities' engines (0, 1 engine-to-console; 2 console-to-engine,
/// pinned), then an unpinned console-to-engine engine.
const NAMES: [&str; 4] = [
    "pinned-engine",
    "other-engine",
    "standard-engine",
    "unpinned-standard",
];
const KNOWN: u8 = 3;
/// The admission waits on the database writer thread, which the paused clock does not see:
/// this bounds how far the clock moves meanwhile (the admission's deadlines are seconds).
const TICK: Duration = Duration::from_millis(10);

struct Console {
    app: App,
    valid: String,
    expired: String,
    names: Vec<String>,
}

async fn console() -> Console {
    let settings = testing::settings();
    let ttl = settings.shared_secret_ttl;
    let clock = Clock::manual(1_700_000_000_000);
    let app = testing::app_with(settings, clock.clone());
    let expired = app.secrets.current_or_new().await.expect("secret");
    clock.advance(ttl + Duration::from_secs(1));
    let valid = app.secrets.current_or_new().await.expect("secret");
    assert_ne!(valid.value.expose(), expired.value.expose());
    for i in 0..2u8 {
        let (der, fp) = Who::Known(i).certificate();
        app.store
            .pair_reverse_engine(NewReverseEngine {
                name: NAMES[i as usize].into(),
                address: "10.0.0.9".into(),
                fingerprint: fp.to_string(),
                cert_pem: cert_der_to_pem(&der),
                product_version: testing::VERSION.into(),
                at: clock.now(),
            })
            .await
            .expect("pair");
    }
    let (der, fp) = Who::Known(2).certificate();
    let id = app
        .store
        .create_standard_engine(NAMES[2], "10.0.0.8", 40814, clock.now())
        .await
        .expect("standard engine");
    app.store
        .pin_engine(id, fp.as_str(), &cert_der_to_pem(&der))
        .await
        .expect("pin");
    app.store
        .create_standard_engine(NAMES[3], "10.0.0.7", 40814, clock.now())
        .await
        .expect("standard engine");
    Console {
        app,
        valid: valid.value.expose().to_owned(),
        expired: expired.value.expose().to_owned(),
        names: NAMES.iter().map(|n| n.to_string()).collect(),
    }
}

/// What the API reports of an engine: its status, version and message.
type Reported = (EngineStatus, Option<String>, String);

/// The engines by id, with what the API reports for each.
async fn engines(app: &App) -> BTreeMap<i64, (EngineRecord, Reported)> {
    // Observations are written by the store's writer thread: wait for every queued one (the
    // queue is in order) before reading, so each connection sees only its own effects.
    app.store
        .observe(
            -1,
            Observation {
                outcome: Outcome::None,
                message: String::new(),
                product_version: None,
                at: 0,
            },
        )
        .await
        .expect("flush");
    let all = app.store.engines().await.expect("engines");
    all.into_iter()
        .map(|e| {
            let status = state::status(&e, app.clock.now(), &app.settings.thresholds());
            let reported = (status, e.product_version.clone(), e.message.clone());
            (e.id, (e, reported))
        })
        .collect()
}

fn bound(app: &App) -> Duration {
    let t = app.settings.handshake_timeout;
    t + Duration::from_secs(5) + listener::FIRST_MESSAGE_DEADLINE.min(t)
}

async fn run(script: Vec<peer::Connection>) {
    let c = console().await;
    let app = &c.app;
    let logs = Logs::new();
    let wire = Wire {
        version: testing::VERSION,
        names: &c.names,
        valid_secret: &c.valid,
        expired_secret: &c.expired,
    };
    for conn in &script {
        let before = engines(app).await;
        let (_, fp) = conn.who.certificate();
        let owner = before
            .values()
            .find(|(e, _)| e.fingerprint.as_deref() == Some(fp.as_str()))
            .map(|(e, _)| e.clone());
        let (result, answers) = peer::play(conn, &wire, Some(TICK), |session| async {
            let started = tokio::time::Instant::now();
            let r = listener::admit_session(app, session, conn.peer, &logs, started).await;
            let took = started.elapsed();
            assert!(took <= bound(app), "admission took {took:?}");
            // The session (when admitted) is dropped here: the peer reads to its end.
            r.map(|admitted| admitted.map(|(_, id)| id))
        })
        .await;
        let after = engines(app).await;
        let sent_valid = conn.presents(|s| matches!(s, Secret::Valid));

        if let Err(Dropped::Console(e)) = &result {
            panic!("a peer made the console fail: {e}");
        }
        match answers.messages.first() {
            Some(Message::Hello { role, .. }) => assert_eq!(*role, Role::Console),
            other => panic!("the console's first answer is {other:?}, not its hello"),
        }

        for (id, (record, reported)) in &before {
            let Some((now, now_reported)) = after.get(id) else {
                panic!("engine {id} disappeared after {conn:?}");
            };
            if owner.as_ref().map(|o| o.id) != Some(*id) {
                assert_eq!(
                    record, now,
                    "engine {id} changed by a peer it is not pinned to"
                );
                assert_eq!(
                    reported, now_reported,
                    "what the API reports of {id} changed"
                );
            }
        }
        let new: Vec<_> = after.keys().filter(|id| !before.contains_key(id)).collect();
        assert!(new.len() <= 1, "{} engines registered at once", new.len());
        if let Some(id) = new.first() {
            let (e, _) = &after[id];
            assert!(
                sent_valid,
                "engine {id} registered without the valid secret"
            );
            assert!(
                owner.is_none(),
                "a pinned certificate registered a second engine"
            );
            assert_eq!(e.fingerprint.as_deref(), Some(fp.as_str()));
            assert_eq!(e.direction, Direction::EngineToConsole);
        }

        for m in &answers.messages[1..] {
            match m {
                Message::Paired { engine_id } => {
                    assert!(sent_valid, "paired without the valid secret");
                    let (e, _) = &after[&(*engine_id as i64)];
                    assert_eq!(e.fingerprint.as_deref(), Some(fp.as_str()));
                    assert_eq!(e.direction, Direction::EngineToConsole);
                    assert_eq!(result.as_ref().ok(), Some(&Some(*engine_id as i64)));
                }
                Message::Welcome { engine_id } => {
                    let o = owner
                        .as_ref()
                        .expect("welcomed without a pinned certificate");
                    assert_eq!(o.id, *engine_id as i64);
                    assert_eq!(o.direction, Direction::EngineToConsole);
                }
                Message::Incompatible { .. } | Message::Rejected { .. } => {}
                other => panic!("unexpected answer during admission: {other:?}"),
            }
        }
        assert!(answers.messages.len() <= 2, "{:?}", answers.messages);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(script) = peer::script(&mut u, KNOWN, Role::Engine) else {
        return;
    };
    peer::block_on(run(script));
});
