//! A framed, timed message channel over an authenticated TLS connection, the same whichever
//! side dialed.
//!
//! Every read and every write is bounded in time: a peer that stops sending is noticed by
//! [`Session::recv`]'s timeout, one that stops reading by [`Session::send`]'s, so no task that
//! owns a session can be held forever by its peer. A session starts with the small
//! pre-authentication frame bound ([`PRE_AUTH_MAX_FRAME_LEN`]); the side that decides the peer
//! is admitted calls [`Session::admit`] to raise it to [`MAX_FRAME_LEN`].

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::codec::Framed;

use crate::{
    Error, Fingerprint, Message, Result,
    frame::{FrameCodec, MAX_FRAME_LEN, PRE_AUTH_MAX_FRAME_LEN},
    identity::cert_der_to_pem,
    messages::Role,
    tls::{SESSION_SERVER_NAME, peer_identity},
};

/// A TLS session stream, boxed so that dialed and accepted sessions have one type.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SessionStream for T {}

/// How long one message may take to be written (and flushed) by default, and how long a
/// polite close may take.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// Read buffer a session starts with; it grows only as far as the frame bound lets it.
const INITIAL_READ_CAPACITY: usize = 1024;

/// What the peer said in its `Hello` (already checked by [`Message::check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    pub role: Role,
    pub product_version: String,
    pub name: String,
}

/// An open session with an authenticated peer.
pub struct Session {
    framed: Framed<Box<dyn SessionStream>, FrameCodec>,
    peer_fingerprint: Fingerprint,
    peer_cert_der: Vec<u8>,
    peer_addr: Option<SocketAddr>,
    send_timeout: Duration,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("peer_fingerprint", &self.peer_fingerprint)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Dials `addr`, completes the TLS handshake within `timeout` and returns the session.
    pub async fn dial(
        addr: &str,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self> {
        let run = async {
            let tcp = TcpStream::connect(addr).await?;
            Self::dial_over(tcp, config, timeout).await
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Completes the client side of the TLS handshake over an already connected socket (one
    /// with its own socket options or source address) within `timeout`.
    pub async fn dial_over(
        tcp: TcpStream,
        config: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self> {
        let run = async {
            tcp.set_nodelay(true)?;
            let peer_addr = tcp.peer_addr().ok();
            let name = ServerName::try_from(SESSION_SERVER_NAME)
                .map_err(|e| Error::Io(std::io::Error::other(e)))?;
            let tls = TlsConnector::from(config).connect(name, tcp).await?;
            let (fp, der) = peer_identity(tls.get_ref().1.peer_certificates())?;
            Ok::<_, Error>(Self::new(Box::new(tls), fp, der, peer_addr))
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Completes the TLS handshake of an accepted connection within `timeout`.
    pub async fn accept(tcp: TcpStream, acceptor: &TlsAcceptor, timeout: Duration) -> Result<Self> {
        let peer_addr = tcp.peer_addr().ok();
        tcp.set_nodelay(true)?;
        let run = async {
            let tls = acceptor.accept(tcp).await?;
            let (fp, der) = peer_identity(tls.get_ref().1.peer_certificates())?;
            Ok::<_, Error>(Self::new(Box::new(tls), fp, der, peer_addr))
        };
        tokio::time::timeout(timeout, run)
            .await
            .map_err(|_| Error::Timeout(timeout))?
    }

    /// Wraps a TLS stream whose peer presented `peer_fingerprint`, not yet admitted: frames
    /// are bounded by [`PRE_AUTH_MAX_FRAME_LEN`] until [`Session::admit`].
    pub fn new(
        stream: Box<dyn SessionStream>,
        peer_fingerprint: Fingerprint,
        peer_cert_der: Vec<u8>,
        peer_addr: Option<SocketAddr>,
    ) -> Self {
        Self {
            framed: Framed::with_capacity(
                stream,
                FrameCodec::with_max_len(PRE_AUTH_MAX_FRAME_LEN),
                INITIAL_READ_CAPACITY,
            ),
            peer_fingerprint,
            peer_cert_der,
            peer_addr,
            send_timeout: SEND_TIMEOUT,
        }
    }

    /// The peer is admitted (its certificate is pinned, it paired, or it accepted us): from now
    /// on it may send frames up to [`MAX_FRAME_LEN`].
    pub fn admit(&mut self) {
        self.framed.codec_mut().set_max_len(MAX_FRAME_LEN);
    }

    /// The frame bound in force (pre-authentication or full).
    pub fn max_frame_len(&self) -> usize {
        self.framed.codec().max_len()
    }

    /// Changes how long [`Session::send`] waits for the peer to take a message.
    pub fn set_send_timeout(&mut self, timeout: Duration) {
        self.send_timeout = timeout;
    }

    /// The peer certificate's fingerprint.
    pub fn peer_fingerprint(&self) -> &Fingerprint {
        &self.peer_fingerprint
    }

    /// The peer certificate as PEM.
    pub fn peer_cert_pem(&self) -> String {
        cert_der_to_pem(&self.peer_cert_der)
    }

    /// The peer's socket address, when known.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer_addr
    }

    /// Sends one message, waiting at most the send timeout for the peer to take it. After a
    /// [`Error::WriteTimeout`] the session is unusable (a frame may be half written): drop it.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        let timeout = self.send_timeout;
        tokio::time::timeout(timeout, self.framed.send(message))
            .await
            .map_err(|_| Error::WriteTimeout(timeout))?
    }

    /// Receives one message, waiting at most `timeout`.
    pub async fn recv(&mut self, timeout: Duration) -> Result<Message> {
        match tokio::time::timeout(timeout, self.framed.next()).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(None) => Err(Error::Closed),
            Ok(Some(result)) => result,
        }
    }

    /// Sends our `Hello` and reads the peer's. Both sides send first, so neither waits on the
    /// other.
    pub async fn exchange_hello(
        &mut self,
        role: Role,
        product_version: &str,
        name: &str,
        timeout: Duration,
    ) -> Result<PeerHello> {
        self.send(Message::Hello {
            role,
            product_version: product_version.to_owned(),
            name: name.to_owned(),
        })
        .await?;
        match self.recv(timeout).await? {
            Message::Hello {
                role,
                product_version,
                name,
            } => Ok(PeerHello {
                role,
                product_version,
                name,
            }),
            other => Err(Error::Unexpected {
                expected: "hello",
                got: other.kind().to_owned(),
            }),
        }
    }

    /// The TLS stream itself, for writing raw bytes (tests and load generators). Anything read
    /// but not yet decoded is lost.
    pub fn into_stream(self) -> Box<dyn SessionStream> {
        self.framed.into_inner()
    }

    /// Flushes and shuts the connection down politely, giving up after the send timeout.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(self.send_timeout, self.framed.close()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Identity, tls};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn mutual_tls_exposes_both_fingerprints() {
        let server_id = Identity::generate("engine").unwrap();
        let client_id = Identity::generate("console").unwrap();
        let acceptor = TlsAcceptor::from(tls::server_config(&server_id).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut s = Session::accept(tcp, &acceptor, Duration::from_secs(5))
                .await
                .unwrap();
            let hello = s
                .exchange_hello(Role::Engine, "1", "e", Duration::from_secs(5))
                .await
                .unwrap();
            (s.peer_fingerprint().clone(), hello)
        });
        let mut c = Session::dial(
            &addr,
            tls::client_config(&client_id).unwrap(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        let hello = c
            .exchange_hello(Role::Console, "1", "c", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(c.peer_fingerprint(), server_id.fingerprint());
        assert_eq!(hello.role, Role::Engine);
        let (seen_client, their_hello) = server.await.unwrap();
        assert_eq!(&seen_client, client_id.fingerprint());
        assert_eq!(their_hello.name, "c");
    }

    #[tokio::test]
    async fn a_peer_without_a_certificate_is_refused() {
        let server_id = Identity::generate("engine").unwrap();
        let acceptor = TlsAcceptor::from(tls::server_config(&server_id).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            Session::accept(tcp, &acceptor, Duration::from_secs(5)).await
        });
        // A client with no certificate at all.
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny))
        .with_no_client_auth();
        let tcp = TcpStream::connect(addr).await.unwrap();
        let _ = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("x.invalid").unwrap(), tcp)
            .await;
        assert!(server.await.unwrap().is_err());
    }

    #[tokio::test]
    async fn a_silent_peer_times_out() {
        let server_id = Identity::generate("engine").unwrap();
        let acceptor = TlsAcceptor::from(tls::server_config(&server_id).unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _idle = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let err = Session::accept(tcp, &acceptor, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout(_)));
    }

    fn any_fingerprint() -> Fingerprint {
        format!("sha256:{}", "0f".repeat(32)).parse().unwrap()
    }

    /// A session over an in-memory pipe with `buffer` bytes of room, and the peer's raw end.
    fn piped(buffer: usize) -> (Session, tokio::io::DuplexStream) {
        let (ours, theirs) = tokio::io::duplex(buffer);
        let s = Session::new(Box::new(ours), any_fingerprint(), Vec::new(), None);
        (s, theirs)
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_stops_reading_fails_the_send_instead_of_blocking_it() {
        let (mut s, _peer_never_reads) = piped(256);
        s.set_send_timeout(Duration::from_secs(2));
        let started = tokio::time::Instant::now();
        let mut seq = 0;
        let err = loop {
            seq += 1;
            if let Err(e) = s.send(Message::Ping { seq }).await {
                break e;
            }
            assert!(seq < 10_000, "256 bytes of room never filled");
        };
        assert!(matches!(err, Error::WriteTimeout(_)), "{err}");
        assert!(started.elapsed() <= Duration::from_secs(3));
        // Closing a session whose peer does not read is bounded too.
        s.close().await;
        assert!(started.elapsed() <= Duration::from_secs(6));
    }

    #[tokio::test]
    async fn frames_above_a_few_kib_are_refused_until_the_peer_is_admitted() {
        use tokio::io::AsyncWriteExt;
        let big = Message::ScanFinished {
            scan_id: 1,
            outcome: crate::messages::ScanOutcome::Finished,
            message: "m".repeat(8 * 1024),
        };
        let frame = {
            let mut buf = bytes::BytesMut::new();
            tokio_util::codec::Encoder::encode(&mut FrameCodec::default(), big.clone(), &mut buf)
                .unwrap();
            buf
        };

        let (mut s, mut peer) = piped(64 * 1024);
        assert_eq!(s.max_frame_len(), PRE_AUTH_MAX_FRAME_LEN);
        peer.write_all(&frame).await.unwrap();
        let err = s.recv(Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, Error::FrameTooLarge { .. }), "{err}");

        let (mut s, mut peer) = piped(64 * 1024);
        s.admit();
        assert_eq!(s.max_frame_len(), MAX_FRAME_LEN);
        peer.write_all(&frame).await.unwrap();
        assert_eq!(s.recv(Duration::from_secs(5)).await.unwrap(), big);
    }

    #[derive(Debug)]
    struct AcceptAny;
    impl rustls::client::danger::ServerCertVerifier for AcceptAny {
        fn verify_server_cert(
            &self,
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &[rustls::pki_types::CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: rustls::pki_types::UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &rustls::pki_types::CertificateDer<'_>,
            _: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}
