//! Mutually authenticated TLS 1.3 in both dialing directions.
//!
//! Both sides present their self-signed [`Identity`]. The handshake checks that each peer holds
//! the private key of the certificate it presents; whether that certificate is *trusted* is
//! decided afterwards by the application, by its [`Fingerprint`] (the console pins engines, the
//! engine keeps `consoles.xml`). No certificate authority is involved.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, DistinguishedName, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, WebPkiSupportedAlgorithms},
    pki_types::{CertificateDer, ServerName, UnixTime},
    server::danger::{ClientCertVerified, ClientCertVerifier},
};

use crate::{Error, Fingerprint, Identity, Result};

/// The server name a dialing side puts in its ClientHello. Certificates are pinned, not
/// checked against names, so this is only a placeholder.
pub const SESSION_SERVER_NAME: &str = "scan-engine-session.invalid";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Accepts any certificate whose handshake signature verifies; trust is the application's call.
#[derive(Debug)]
struct PinnedByApplication {
    algorithms: WebPkiSupportedAlgorithms,
}

impl PinnedByApplication {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            algorithms: provider().signature_verification_algorithms,
        })
    }
}

impl ServerCertVerifier for PinnedByApplication {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

impl ClientCertVerifier for PinnedByApplication {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Configuration for the side that accepts connections (engine in console-to-engine, console in
/// engine-to-console). A client certificate is mandatory.
pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>> {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(PinnedByApplication::new())
        .with_single_cert(vec![identity.cert_der().clone()], identity.private_key())?;
    Ok(Arc::new(config))
}

/// Configuration for the side that dials.
pub fn client_config(identity: &Identity) -> Result<Arc<rustls::ClientConfig>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(PinnedByApplication::new())
        .with_client_auth_cert(vec![identity.cert_der().clone()], identity.private_key())?;
    Ok(Arc::new(config))
}

/// The fingerprint and certificate of the peer of an established connection.
pub fn peer_identity(certs: Option<&[CertificateDer<'_>]>) -> Result<(Fingerprint, Vec<u8>)> {
    let first = certs
        .and_then(|c| c.first())
        .ok_or(Error::NoPeerCertificate)?;
    Ok((Fingerprint::of_der(first), first.to_vec()))
}
