//! HTTPS for the REST API: the serving certificate (given, or self-signed and kept in the data
//! directory) and the TLS accept loop in front of the axum router.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::{
    cli::Cli,
    error::{Error, Result},
};

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Time open connections get to finish when the console stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The API's TLS configuration: `--api-tls-cert-file`/`--api-tls-key-file`, or a self-signed
/// certificate for `--api-hostname` generated once into `<data-dir>/api.crt`, `api.key`.
pub fn server_config(cli: &Cli) -> Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = match (&cli.api_tls_cert_file, &cli.api_tls_key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone()),
        _ => {
            let names: Vec<String> = cli
                .api_hostname
                .iter()
                .map(|h| h.trim().to_owned())
                .filter(|h| !h.is_empty())
                .collect();
            ensure_self_signed(&cli.data_dir, &names)?
        }
    };
    load(&cert_path, &key_path)
}

/// Generates `api.crt`/`api.key` in `dir` unless both exist for the same names (recorded in
/// `api.names`); returns their paths.
pub fn ensure_self_signed(dir: &Path, names: &[String]) -> Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("api.crt");
    let key_path = dir.join("api.key");
    let names_path = dir.join("api.names");
    let wanted = names.join(",");
    let generated_for = fs::read_to_string(&names_path).ok();
    if cert_path.exists()
        && key_path.exists()
        && generated_for.as_deref().is_none_or(|n| n.trim() == wanted)
    {
        return Ok((cert_path, key_path));
    }
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("security-console"),
    );
    params.not_before = rcgen::date_time_ymd(2020, 1, 1);
    params.not_after = rcgen::date_time_ymd(2120, 1, 1);
    let cert = params.self_signed(&key)?;
    write(&key_path, key.serialize_pem().as_bytes(), true)?;
    write(&cert_path, cert.pem().as_bytes(), false)?;
    write(&names_path, wanted.as_bytes(), false)?;
    tracing::info!(path = %cert_path.display(), names = ?names, "generated a self-signed API certificate");
    Ok((cert_path, key_path))
}

fn write(path: &Path, data: &[u8], private: bool) -> Result<()> {
    let err = |source| Error::File {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(err)?;
    }
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut f = opts.open(path).map_err(err)?;
    f.write_all(data).map_err(err)?;
    f.sync_all().map_err(err)
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<rustls::ServerConfig>> {
    let read = |p: &Path| {
        fs::read(p).map_err(|source| Error::File {
            path: p.to_owned(),
            source,
        })
    };
    let invalid = |p: &Path, problem: String| Error::InvalidFile {
        path: p.to_owned(),
        problem,
    };
    let cert_pem = read(cert_path)?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| invalid(cert_path, format!("unreadable certificate: {e}")))?;
    if certs.is_empty() {
        return Err(invalid(cert_path, "no PEM certificate found".into()));
    }
    let key_pem = read(key_path)?;
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| invalid(key_path, format!("unreadable private key: {e}")))?
        .ok_or_else(|| invalid(key_path, "no PEM private key found".into()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Serves `router` over HTTPS on `listener` until `shutdown`, then drains open connections.
pub async fn serve(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
) {
    let acceptor = TlsAcceptor::from(config);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (acceptor, router, shutdown) = (acceptor.clone(), router.clone(), shutdown.clone());
        connections.spawn(async move {
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::warn!(%peer, reason = "TLS handshake timed out", "API connection dropped");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(router));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "API connection ended with an error");
                },
                _ = shutdown.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(DRAIN_TIMEOUT, conn).await;
                }
            }
        });
        // Reap finished connection tasks so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_certificate_is_kept_until_the_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (cert, key) = ensure_self_signed(dir.path(), &names).unwrap();
        let first = fs::read(&cert).unwrap();
        load(&cert, &key).unwrap();
        ensure_self_signed(dir.path(), &names).unwrap();
        assert_eq!(fs::read(&cert).unwrap(), first, "kept across restarts");
        ensure_self_signed(dir.path(), &["console.ns.svc".to_owned()]).unwrap();
        assert_ne!(fs::read(&cert).unwrap(), first, "regenerated for new names");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&key).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }

    #[test]
    fn unreadable_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("c.pem");
        fs::write(&cert, "junk").unwrap();
        let err = load(&cert, &dir.path().join("missing.pem")).unwrap_err();
        assert!(err.to_string().contains("c.pem"), "{err}");
    }
}
