//! The engine's standard-mode (console-to-engine) admission (`standard::admit`, everything
//! after the TLS handshake) driven by scripts of up to eight console connections, each
//! presenting the trusted console's certificate (`--trusted-console-fingerprint`), one an admin
//! enabled in `consoles.xml`, one recorded and still disabled, a stranger's or a fresh one, and
//! sending greetings, pings, raw bytes, pauses and early closes.
//!
//! Each execution starts from a fresh `consoles.xml` (in one temporary data directory), a
//! quarter of them with the waiting room nearly full. After every connection:
//! * `consoles.xml` parses, holds at most `trust::MAX_PENDING` entries with `enabled="0"`, and
//!   no console enabled but the two that were;
//! * only an enabled console is answered `Accepted`, and an enabled one is never answered
//!   `PendingAuthorization`;
//! * every answer fits the pre-authentication frame bound, the first is the engine's `Hello`,
//!   and the admission ends within its bound.
#![no_main]

#[path = "peer/mod.rs"]
mod peer;

use std::{
    path::{Path, PathBuf},
    sync::{Arc, LazyLock, atomic::AtomicBool},
    time::Duration,
};

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;
use peer::{Who, Wire};
use scan_engine::{
    Context,
    consoles_xml::{self, ConsoleEntry, Consoles},
    standard::{self, FIRST_MESSAGE_DEADLINE, Logs, MAX_SESSIONS},
    trust::{MAX_PENDING, TrustStore},
};
use scan_engine_protocol::{
    Fingerprint, Identity, Message, identity::cert_der_to_pem, messages::Role,
    session::SEND_TIMEOUT,
};
use tokio::sync::Semaphore;

const VERSION: &str = "0.1.0";
/// Known identities: 0 trusted by the command line, 1 enabled by an admin, 2 recorded disabled.
const KNOWN: u8 = 3;

struct Dir {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

static DIR: LazyLock<Dir> = LazyLock::new(|| {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().to_owned();
    // Generated once; later executions load it.
    Identity::load_or_generate(&path, "engine", "fuzz-engine").expect("identity");
    Dir { _dir: dir, path }
});

fn fingerprint(who: &Who) -> Fingerprint {
    who.certificate().1
}

fn entry(id: u64, enabled: bool, who: &Who) -> ConsoleEntry {
    let (der, fp) = who.certificate();
    ConsoleEntry {
        id,
        enabled,
        last_address: Some("10.0.0.1".into()),
        port: Some(40000),
        fingerprint: fp,
        cert_pem: Some(cert_der_to_pem(&der)),
    }
}

/// The starting trust list; `crowded` leaves room for two more waiting consoles.
fn base(crowded: bool) -> String {
    let mut c = Consoles {
        entries: vec![
            entry(1, true, &Who::Known(0)),
            entry(2, true, &Who::Known(1)),
            entry(3, false, &Who::Known(2)),
        ],
    };
    if crowded {
        for i in 0..MAX_PENDING - 3 {
            let fp = format!("sha256:{:064x}", i + 1)
                .parse()
                .expect("fingerprint");
            c.entries.push(ConsoleEntry {
                id: 4 + i as u64,
                enabled: false,
                last_address: None,
                port: None,
                fingerprint: fp,
                cert_pem: None,
            });
        }
    }
    consoles_xml::to_xml(&c)
}

static BASES: LazyLock<[String; 2]> = LazyLock::new(|| [base(false), base(true)]);

fn context(dir: &Path, crowded: bool) -> Context {
    let file = dir.join(consoles_xml::FILE_NAME);
    std::fs::write(&file, &BASES[crowded as usize]).expect("write consoles.xml");
    let trusted = fingerprint(&Who::Known(0));
    Context {
        name: "fuzz-engine".into(),
        product_version: VERSION.into(),
        data_dir: dir.to_owned(),
        identity: Identity::load_or_generate(dir, "engine", "fuzz-engine").expect("identity"),
        trust: TrustStore::open(file, Some(trusted.clone())).expect("trust list"),
        trusted_console: Some(trusted),
        max_scan_concurrency: 4,
        ping_interval: Duration::from_secs(30),
        ready: AtomicBool::new(false),
    }
}

async fn run(crowded: bool, script: Vec<peer::Connection>) {
    let dir = &DIR.path;
    let ctx = context(dir, crowded);
    let logs = Logs::new();
    let sessions = Arc::new(Semaphore::new(MAX_SESSIONS));
    let enabled = [fingerprint(&Who::Known(0)), fingerprint(&Who::Known(1))];
    let names = vec!["console-a".to_owned(), "console-b".to_owned()];
    let wire = Wire {
        version: VERSION,
        names: &names,
        valid_secret: "not-used-by-the-engine",
        expired_secret: "",
    };
    let bound = FIRST_MESSAGE_DEADLINE + 2 * SEND_TIMEOUT;
    for conn in &script {
        let fp = fingerprint(&conn.who);
        let (result, answers) = peer::play(conn, &wire, None, |session| async {
            let started = tokio::time::Instant::now();
            let r = standard::admit(&ctx, session, conn.peer, &logs, &sessions, started).await;
            let took = started.elapsed();
            assert!(took <= bound, "admission took {took:?}");
            // The session (when accepted) is dropped here: the peer reads to its end.
            r.map(|admitted| admitted.map(|a| a.id))
        })
        .await;

        let file = consoles_xml::load(&ctx.trust.path().to_owned())
            .unwrap_or_else(|e| panic!("consoles.xml no longer parses: {e}"));
        let waiting = file.entries.iter().filter(|e| !e.enabled).count();
        assert!(
            waiting <= MAX_PENDING,
            "{waiting} consoles wait in the file"
        );
        assert!(ctx.trust.pending_count() <= MAX_PENDING);
        for e in file.entries.iter().filter(|e| e.enabled) {
            assert!(
                enabled.contains(&e.fingerprint),
                "{} enabled",
                e.fingerprint
            );
        }
        for fp in &enabled {
            assert!(file.find(fp).is_some_and(|e| e.enabled), "{fp} disabled");
        }

        match answers.messages.first() {
            Some(Message::Hello { role, .. }) => assert_eq!(*role, Role::Engine),
            other => panic!("the engine's first answer is {other:?}, not its hello"),
        }
        for m in &answers.messages[1..] {
            match m {
                Message::Accepted => {
                    assert!(enabled.contains(&fp), "accepted {:?}", conn.who);
                    assert!(matches!(result, Ok(Some(_))));
                }
                Message::PendingAuthorization => {
                    assert!(
                        !enabled.contains(&fp),
                        "enabled {:?} left pending",
                        conn.who
                    );
                }
                Message::Incompatible { .. } => {}
                other => panic!("unexpected answer during admission: {other:?}"),
            }
        }
        assert!(answers.messages.len() <= 2, "{:?}", answers.messages);
    }
}

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let Ok(crowded) = u.ratio(1, 4) else {
        return;
    };
    let Ok(script) = peer::script(&mut u, KNOWN, Role::Console) else {
        return;
    };
    peer::block_on(run(crowded, script));
});
