//! A framed, timed message channel over an authenticated TLS connection, the same whichever
//! side dialed.

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
    frame::FrameCodec,
    identity::cert_der_to_pem,
    messages::Role,
    tls::{SESSION_SERVER_NAME, peer_identity},
};

/// A TLS session stream, boxed so that dialed and accepted sessions have one type.
pub trait SessionStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> SessionStream for T {}

/// What the peer said in its `Hello`.
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

    /// Wraps an already-authenticated stream (used by tests and load generators).
    pub fn new(
        stream: Box<dyn SessionStream>,
        peer_fingerprint: Fingerprint,
        peer_cert_der: Vec<u8>,
        peer_addr: Option<SocketAddr>,
    ) -> Self {
        Self {
            framed: Framed::new(stream, FrameCodec::default()),
            peer_fingerprint,
            peer_cert_der,
            peer_addr,
        }
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

    /// Sends one message.
    pub async fn send(&mut self, message: Message) -> Result<()> {
        self.framed.send(message).await
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

    /// Flushes and shuts the connection down politely.
    pub async fn close(mut self) {
        let _ = self.framed.close().await;
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
