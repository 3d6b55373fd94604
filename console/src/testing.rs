//! Helpers for the console's own tests: an in-memory console and a fake engine speaking the
//! protocol crate.

use std::{net::SocketAddr, time::Duration};

use scan_engine_protocol::{
    Identity, Message, SharedSecret,
    messages::Role,
    session::{PeerHello, Session},
    tls,
};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    auth::Credentials,
    clock::Clock,
    context::{App, Console, Settings},
    store::Store,
};

pub const VERSION: &str = "0.1.0";
pub const USER: &str = "admin";
pub const PASSWORD: &str = "s3cret-pw";

/// Settings with short timeouts.
pub fn settings() -> Settings {
    Settings {
        ping_interval: Duration::from_millis(200),
        unknown_after: Duration::from_secs(90),
        down_after: Duration::from_secs(300),
        shared_secret_ttl: Duration::from_secs(3600),
        handshake_timeout: Duration::from_millis(1500),
        product_version: VERSION.into(),
        console_name: "test-console".into(),
        engine_port: 40815,
    }
}

/// A console on an in-memory database.
pub fn app_with(settings: Settings, clock: Clock) -> App {
    Console::new(
        settings,
        Store::open_in_memory().expect("in-memory store"),
        clock,
        Identity::generate("test-console").expect("identity"),
        Credentials::new(USER.into(), PASSWORD.into()),
    )
    .expect("console")
}

/// A console with default test settings and the system clock.
pub fn app() -> App {
    app_with(settings(), Clock::system())
}

/// Starts the engine listener on a free loopback port.
pub async fn start_listener(app: &App) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(crate::engines::listener::serve(app.clone(), listener));
    addr
}

/// An engine-to-console fake engine: dials and says hello.
pub async fn dial(
    addr: SocketAddr,
    id: &Identity,
    name: &str,
    version: &str,
) -> (Session, PeerHello) {
    let mut s = Session::dial(
        &addr.to_string(),
        tls::client_config(id).expect("client config"),
        Duration::from_secs(5),
    )
    .await
    .expect("dial");
    let hello = s
        .exchange_hello(Role::Engine, version, name, Duration::from_secs(5))
        .await
        .expect("hello");
    (s, hello)
}

/// Dials, presents `secret` and returns the answer with the session.
pub async fn pair(addr: SocketAddr, id: &Identity, name: &str, secret: &str) -> (Session, Message) {
    let (mut s, _) = dial(addr, id, name, VERSION).await;
    s.send(Message::PairRequest {
        shared_secret: SharedSecret::new(secret),
    })
    .await
    .expect("send pair request");
    let answer = s.recv(Duration::from_secs(5)).await.expect("answer");
    (s, answer)
}

/// Pings over an open session and expects the matching pong.
pub async fn ping(s: &mut Session, seq: u64) {
    s.send(Message::Ping { seq }).await.expect("send ping");
    loop {
        match s.recv(Duration::from_secs(5)).await.expect("pong") {
            Message::Pong { seq: got } if got == seq => return,
            Message::Ping { seq } => s.send(Message::Pong { seq }).await.expect("pong back"),
            other => panic!("expected pong, got {other:?}"),
        }
    }
}

/// Polls `check` until it holds or five seconds pass.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A console-to-engine fake engine: answers `answer` after hello and, when accepting, pings
/// back and runs scan jobs by reporting one finding.
pub async fn fake_standard_engine(
    answer: Message,
    version: &'static str,
) -> (std::net::SocketAddr, Identity) {
    let identity = Identity::generate("std").unwrap();
    let acceptor = TlsAcceptor::from(tls::server_config(&identity).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let answer = answer.clone();
            tokio::spawn(async move {
                let Ok(mut s) = Session::accept(tcp, &acceptor, Duration::from_secs(5)).await
                else {
                    return;
                };
                if s.exchange_hello(Role::Engine, version, "std", Duration::from_secs(5))
                    .await
                    .is_err()
                {
                    return;
                }
                if s.send(answer.clone()).await.is_err() || answer != Message::Accepted {
                    return;
                }
                while let Ok(m) = s.recv(Duration::from_secs(30)).await {
                    let reply = match m {
                        Message::Ping { seq } => vec![Message::Pong { seq }],
                        Message::ScanJob(job) => vec![
                            Message::ScanProgress {
                                scan_id: job.scan_id,
                                done: 1,
                                total: 2,
                            },
                            Message::ScanFinding {
                                scan_id: job.scan_id,
                                finding: scan_engine_protocol::messages::Finding {
                                    address: "127.0.0.1".into(),
                                    host_name: Some("localhost".into()),
                                    port: job.ports[0],
                                    banner: Some("SSH-2.0-test".into()),
                                },
                            },
                            Message::ScanProgress {
                                scan_id: job.scan_id,
                                done: 2,
                                total: 2,
                            },
                            Message::ScanFinished {
                                scan_id: job.scan_id,
                                outcome: scan_engine_protocol::messages::ScanOutcome::Finished,
                                message: "done".into(),
                            },
                        ],
                        _ => vec![],
                    };
                    for r in reply {
                        if s.send(r).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, identity)
}
