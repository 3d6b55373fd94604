//! HTTPS for the REST API: the serving certificate (given, or self-signed and kept in the data
//! directory) and the TLS accept loop in front of the axum router.
//!
//! The accept loop bounds what a client that never authenticates can hold: connection slots
//! per source and in total ([`API_LIMITS`], the session listeners' `admission::Slots`; a
//! refused connection is closed at once and logged once per burst), a deadline for the TLS
//! handshake, and hyper's header read timeout, which also closes a keep-alive connection left
//! idle that long. Request bodies have their own deadline where they are read
//! (`crate::api::Body`). Each request carries the client's address as `ConnectInfo`, for the
//! API's failed-login backoff.
//!
//! Generated files are written atomically: a temporary file in the same directory, fsynced,
//! renamed over the old one, then the directory fsynced, so a crash leaves either the old file
//! or the new one, never a torn one. A key and certificate that do not belong together (a crash
//! between the two renames) are regenerated rather than refused at every later start.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use scan_engine_protocol::admission::{BurstLog, Limits, Slots};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::{
    cli::Cli,
    error::{Error, Result},
};

/// Time a client has to finish the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Time a client has to send a request's headers, and the longest a keep-alive connection may
/// sit idle between requests.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest read buffer of a connection (hyper's minimum is 8 KiB); bounds request headers.
const MAX_BUF_SIZE: usize = 64 * 1024;
/// Most headers in a request.
const MAX_HEADERS: usize = 100;
/// Time open connections get to finish when the console stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Open API connections: at most 64 from one source (an IPv4 address or an IPv6 /64) and 512
/// in all. A client library keeps a few; more from one address is a flood.
pub const API_LIMITS: Limits = Limits {
    total: 512,
    per_source: 64,
};
/// One log line per this long for refused or dropped connections.
const LOG_WINDOW: Duration = Duration::from_secs(10);

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
        match load(&cert_path, &key_path) {
            Ok(_) => return Ok((cert_path, key_path)),
            Err(e) => tracing::warn!(
                error = %e,
                "the generated API certificate and key are unusable (torn by a crash?); generating new ones"
            ),
        }
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

/// Replaces `path` with `data` atomically and durably: a uniquely named temporary file in the
/// same directory (mode 0600 when `private`, from its creation), fsynced, renamed over `path`,
/// then the directory fsynced. The file is never rewritten in place.
fn write(path: &Path, data: &[u8], private: bool) -> Result<()> {
    let err = |p: &Path| {
        let p = p.to_owned();
        move |source| Error::File { path: p, source }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&dir).map_err(err(&dir))?;
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let written = (|| {
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(err(&tmp)(e));
    }
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(err(path)(e));
    }
    sync_dir(&dir).map_err(err(&dir))
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        fs::File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
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
    serve_with(listener, config, router, shutdown, API_LIMITS).await
}

/// [`serve`] with the given connection limits.
pub async fn serve_with(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    router: Router,
    shutdown: CancellationToken,
    limits: Limits,
) {
    let acceptor = TlsAcceptor::from(config);
    let slots = Slots::new(limits);
    let refused = Arc::new(BurstLog::new("API connections refused", LOG_WINDOW));
    let dropped = Arc::new(BurstLog::new(
        "API connections dropped during the TLS handshake",
        LOG_WINDOW,
    ));
    let mut flush = tokio::time::interval(LOG_WINDOW);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = flush.tick() => {
                refused.flush();
                dropped.flush();
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting an API connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = match slots.try_acquire(peer.ip()) {
            Ok(slot) => slot,
            Err(refusal) => {
                refused.record(peer.ip(), &refusal);
                drop(tcp);
                continue;
            }
        };
        let (acceptor, shutdown, dropped) = (acceptor.clone(), shutdown.clone(), dropped.clone());
        // Every request of this connection carries its client's address.
        let service =
            router
                .clone()
                .map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req
                });
        connections.spawn(async move {
            let _slot = slot;
            let tls = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
            {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "API TLS handshake failed");
                    return;
                }
                Err(_) => {
                    dropped.record(peer.ip(), &"TLS handshake timed out");
                    return;
                }
            };
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(MAX_BUF_SIZE)
                .max_headers(MAX_HEADERS);
            let conn =
                builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(service));
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

    #[test]
    fn a_key_torn_from_its_certificate_is_regenerated_not_refused_forever() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned()];
        let (cert, key) = ensure_self_signed(dir.path(), &names).unwrap();
        // A crash after the new key was renamed into place but before the certificate was.
        let other = rcgen::KeyPair::generate().unwrap();
        fs::write(&key, other.serialize_pem()).unwrap();
        assert!(load(&cert, &key).is_err(), "the torn pair does not load");
        let (cert, key) = ensure_self_signed(dir.path(), &names).unwrap();
        load(&cert, &key).unwrap();
    }

    #[test]
    fn files_are_replaced_whole_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api.key");
        write(&path, b"first", true).unwrap();
        let before = fs::metadata(&path).unwrap();
        write(&path, b"second", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            // Replaced by a rename, not rewritten in place.
            assert_ne!(fs::metadata(&path).unwrap().ino(), before.ino());
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["api.key"]);
    }
}
