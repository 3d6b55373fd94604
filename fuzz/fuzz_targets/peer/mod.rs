//! What the admission targets share: a fuzz input decoded into a bounded script of peer
//! connections, and one connection played over an in-memory pipe against the side under test.
//!
//! No TLS and no socket: the side under test gets an already-authenticated
//! [`Session`] over one end of a `tokio::io::duplex` pipe, presenting whichever certificate the
//! script says; the peer writes its frames on the other end (encoded without the protocol's
//! checks, as a hostile peer may) and reads what comes back until end of file. Time is tokio's
//! paused clock, so the admissions' waits cost no real time.

#![allow(dead_code)]

use std::{
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    sync::LazyLock,
    time::Duration,
};

use arbitrary::{Result, Unstructured};
use bytes::{BufMut, BytesMut};
use futures_util::StreamExt;
use scan_engine_protocol::{
    Fingerprint, Message, SharedSecret,
    frame::{FrameCodec, PRE_AUTH_MAX_FRAME_LEN},
    messages::Role,
    session::Session,
};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

/// Connections in one script.
pub const MAX_CONNECTIONS: usize = 8;
/// Frames one connection sends.
pub const MAX_FRAMES: usize = 8;
/// Raw bytes in one write (above the pre-authentication bound, below the pipe's room).
pub const MAX_RAW: usize = 6 * 1024;
/// Seconds one pause lasts at most: past every admission deadline.
pub const MAX_PAUSE: u8 = 12;
/// Room in the in-memory pipe, each way.
const PIPE: usize = 64 * 1024;

/// The one runtime of a target: current-thread, clock paused (waits are skipped).
pub static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime")
});

/// Which certificate a connection presents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// One of the side's known identities (what each index means is the target's business).
    Known(u8),
    /// One of a few fixed strangers.
    Stranger(u8),
    /// A certificate made of the input's bytes (a fresh identity on every connection).
    Fresh(Vec<u8>),
}

impl Who {
    /// The certificate (DER bytes as the session holds them) and its fingerprint.
    pub fn certificate(&self) -> (Vec<u8>, Fingerprint) {
        let der = match self {
            Who::Known(i) => format!("known identity {i}").into_bytes(),
            Who::Stranger(i) => format!("stranger {i}").into_bytes(),
            Who::Fresh(bytes) => [b"fresh ".as_slice(), bytes].concat(),
        };
        let fp = Fingerprint::of_der(&der);
        (der, fp)
    }
}

/// The product version a `Hello` announces.
#[derive(Debug, Clone)]
pub enum Version {
    Right,
    Wrong,
    Bytes(String),
}

/// The name a `Hello` announces.
#[derive(Debug, Clone)]
pub enum Name {
    /// The name of one of the side's known peers.
    Known(u8),
    /// A plain name no one holds yet.
    Fresh(u8),
    Bytes(String),
}

/// The shared secret a `PairRequest` presents.
#[derive(Debug, Clone)]
pub enum Secret {
    Valid,
    Expired,
    Garbage(String),
}

/// One thing a peer does.
#[derive(Debug, Clone)]
pub enum Frame {
    Hello {
        role: Role,
        version: Version,
        name: Name,
    },
    PairRequest(Secret),
    Ping(u64),
    /// Any bytes, framed or not.
    Raw(Vec<u8>),
    /// Waits this many seconds (of the paused clock) before the next frame.
    Pause(u8),
    /// Shuts its writing half and sends nothing more.
    Close,
}

/// One connection of a script.
#[derive(Debug, Clone)]
pub struct Connection {
    pub who: Who,
    pub peer: SocketAddr,
    pub frames: Vec<Frame>,
}

impl Connection {
    /// Whether this connection presents `secret` in a `PairRequest` (before closing).
    pub fn presents(&self, wanted: fn(&Secret) -> bool) -> bool {
        self.frames
            .iter()
            .take_while(|f| !matches!(f, Frame::Close))
            .any(|f| matches!(f, Frame::PairRequest(s) if wanted(s)))
    }
}

fn text(u: &mut Unstructured<'_>, max: usize) -> Result<String> {
    let len = u.int_in_range(0..=max)?;
    let bytes = u.bytes(len.min(u.len()))?;
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

fn frame(u: &mut Unstructured<'_>, peer_role: Role) -> Result<Frame> {
    Ok(match u.int_in_range(0..=9u8)? {
        0..=2 => Frame::Hello {
            role: if u.ratio(7, 8)? {
                peer_role
            } else if peer_role == Role::Engine {
                Role::Console
            } else {
                Role::Engine
            },
            version: match u.int_in_range(0..=5u8)? {
                0..=3 => Version::Right,
                4 => Version::Wrong,
                _ => Version::Bytes(text(u, 64)?),
            },
            name: match u.int_in_range(0..=3u8)? {
                0 => Name::Known(u.int_in_range(0..=3)?),
                1 => Name::Fresh(u.int_in_range(0..=3)?),
                _ => Name::Bytes(text(u, 96)?),
            },
        },
        3..=4 => Frame::PairRequest(match u.int_in_range(0..=3u8)? {
            0..=1 => Secret::Valid,
            2 => Secret::Expired,
            _ => Secret::Garbage(text(u, 64)?),
        }),
        5 => Frame::Ping(u.arbitrary()?),
        6..=7 => {
            let len = u.int_in_range(0..=MAX_RAW)?;
            Frame::Raw(u.bytes(len.min(u.len()))?.to_vec())
        }
        8 => Frame::Pause(u.int_in_range(0..=MAX_PAUSE)?),
        _ => Frame::Close,
    })
}

/// Decodes a script: at most [`MAX_CONNECTIONS`] connections of at most [`MAX_FRAMES`] frames
/// (after an optional well-formed greeting).
/// `known` is how many known identities the side has, `peer_role` the role its peers have.
pub fn script(u: &mut Unstructured<'_>, known: u8, peer_role: Role) -> Result<Vec<Connection>> {
    let mut conns = Vec::new();
    let n = u.int_in_range(1..=MAX_CONNECTIONS)?;
    for _ in 0..n {
        let who = match u.int_in_range(0..=3u8)? {
            0..=1 => Who::Known(u.int_in_range(0..=known - 1)?),
            2 => Who::Stranger(u.int_in_range(0..=3)?),
            _ => Who::Fresh(u.bytes(8.min(u.len()))?.to_vec()),
        };
        let peer = SocketAddr::from((
            Ipv4Addr::new(10, 0, 0, u.int_in_range(1..=4)?),
            u.int_in_range(40000..=40003)?,
        ));
        let count = u.int_in_range(0..=MAX_FRAMES)?;
        let mut frames = Vec::with_capacity(count + 1);
        // Most connections greet properly first, so that the fuzzer reaches the decisions.
        if u.ratio(3, 4)? {
            frames.push(Frame::Hello {
                role: peer_role,
                version: Version::Right,
                name: if u.ratio(1, 2)? {
                    Name::Fresh(u.int_in_range(0..=3)?)
                } else {
                    Name::Known(u.int_in_range(0..=3)?)
                },
            });
        }
        for _ in 0..count {
            frames.push(frame(u, peer_role)?);
        }
        conns.push(Connection { who, peer, frames });
        if u.is_empty() {
            break;
        }
    }
    Ok(conns)
}

/// What a frame is on the wire, for this side's `version`, known `names` and secrets.
pub struct Wire<'a> {
    pub version: &'a str,
    pub names: &'a [String],
    pub valid_secret: &'a str,
    pub expired_secret: &'a str,
}

impl Wire<'_> {
    fn bytes(&self, frame: &Frame) -> Vec<u8> {
        let message = match frame {
            Frame::Hello {
                role,
                version,
                name,
            } => Message::Hello {
                role: *role,
                product_version: match version {
                    Version::Right => self.version.to_owned(),
                    Version::Wrong => format!("{}.1", self.version),
                    Version::Bytes(s) => s.clone(),
                },
                name: match name {
                    Name::Known(i) => self.names[*i as usize % self.names.len()].clone(),
                    Name::Fresh(i) => format!("fresh-engine-{i}"),
                    Name::Bytes(s) => s.clone(),
                },
            },
            Frame::PairRequest(secret) => Message::PairRequest {
                shared_secret: SharedSecret::new(match secret {
                    Secret::Valid => self.valid_secret.to_owned(),
                    Secret::Expired => self.expired_secret.to_owned(),
                    Secret::Garbage(s) => s.clone(),
                }),
            },
            Frame::Ping(seq) => Message::Ping { seq: *seq },
            Frame::Raw(bytes) => return bytes.clone(),
            Frame::Pause(_) | Frame::Close => return Vec::new(),
        };
        // Framed as the codec does, without its checks: a hostile peer sends what it likes.
        let body = serde_json::to_vec(&message).expect("a message serializes");
        let mut out = BytesMut::with_capacity(4 + body.len());
        out.put_u32(body.len() as u32);
        out.extend_from_slice(&body);
        out.to_vec()
    }
}

/// What the side under test answered on one connection.
#[derive(Debug, Default)]
pub struct Answers {
    pub messages: Vec<Message>,
}

/// Plays `conn` against `serve` (which owns the server end of the pipe, wrapped in a session
/// presenting the connection's certificate): writes the frames, reads the answers until end of
/// file. With `tick`, a task wakes every `tick` of the paused clock during the play, so the
/// clock moves by at most about that much whenever everything waits on something outside the
/// runtime (the console's database writer thread) instead of jumping to the next deadline.
/// Every answer must fit the pre-authentication bound: the peer is not admitted yet
/// while the side answers it (the target drops the session at admission).
pub async fn play<F, Fut, R>(
    conn: &Connection,
    wire: &Wire<'_>,
    tick: Option<Duration>,
    serve: F,
) -> (R, Answers)
where
    F: FnOnce(Session) -> Fut,
    Fut: Future<Output = R>,
{
    let (server, client) = tokio::io::duplex(PIPE);
    let (der, fp) = conn.who.certificate();
    let session = Session::new(Box::new(server), fp, der, Some(conn.peer));
    let (rd, mut wr) = tokio::io::split(client);
    let writer = async {
        for f in &conn.frames {
            match f {
                Frame::Close => {
                    let _ = wr.shutdown().await;
                    return None;
                }
                Frame::Pause(s) => tokio::time::sleep(Duration::from_secs(u64::from(*s))).await,
                f => {
                    if wr.write_all(&wire.bytes(f)).await.is_err() {
                        return None;
                    }
                }
            }
        }
        // Stays open: the side under test decides when the connection ends.
        Some(wr)
    };
    let reader = async {
        let mut answers = Answers::default();
        let mut framed = FramedRead::new(rd, FrameCodec::with_max_len(PRE_AUTH_MAX_FRAME_LEN));
        while let Some(next) = framed.next().await {
            match next {
                Ok(m) => answers.messages.push(m),
                Err(scan_engine_protocol::Error::FrameTooLarge { len, max }) => {
                    panic!("answered a {len}-byte frame before admission (bound {max})")
                }
                Err(e) => panic!("answered a frame that does not decode: {e}"),
            }
        }
        answers
    };
    let all = async {
        let (result, _open, answers) = tokio::join!(serve(session), writer, reader);
        (result, answers)
    };
    match tick {
        None => all.await,
        Some(tick) => {
            let ticker = async {
                loop {
                    tokio::time::sleep(tick).await;
                }
            };
            tokio::select! {
                done = all => done,
                _ = ticker => unreachable!("the ticker never ends"),
            }
        }
    }
}

/// Runs `f` on the target's runtime.
pub fn block_on<T>(f: impl Future<Output = T>) -> T {
    RUNTIME.block_on(f)
}
