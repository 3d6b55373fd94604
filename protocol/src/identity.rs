//! Each side's identity: a key pair and a self-signed certificate, generated on first start and
//! kept in the data directory, so that pairing survives restarts. Peers trust each other by the
//! certificate's SHA-256 [`Fingerprint`], never by a certificate authority.
//!
//! On disk the identity is one file, `<stem>.pem` (mode 0600), holding the certificate and the
//! PKCS#8 key. It is written in one atomic, durable step (a uniquely named temporary file,
//! fsync, rename, fsync of the directory), so a crash leaves either no identity or a whole one.
//! Identities written by earlier versions as two files, `<stem>.crt` and `<stem>.key`, are still
//! loaded as they are.

use std::{fs, io::Write, path::Path};

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// `sha256:` followed by 64 lower-case hex digits: the SHA-256 of a certificate's DER bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Fingerprint(String);

impl Fingerprint {
    const PREFIX: &'static str = "sha256:";

    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Self {
        Self(format!(
            "{}{}",
            Self::PREFIX,
            hex::encode(Sha256::digest(der))
        ))
    }

    /// The text form, `sha256:<hex>`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let hex_part = s
            .strip_prefix(Self::PREFIX)
            .ok_or_else(|| format!("fingerprint {s:?} must start with {:?}", Self::PREFIX))?;
        if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "fingerprint {s:?} must be {:?} followed by 64 hex digits",
                Self::PREFIX
            ));
        }
        Ok(Self(format!(
            "{}{}",
            Self::PREFIX,
            hex_part.to_ascii_lowercase()
        )))
    }
}

impl TryFrom<String> for Fingerprint {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Fingerprint> for String {
    fn from(f: Fingerprint) -> String {
        f.0
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key pair and its self-signed certificate.
pub struct Identity {
    cert_der: CertificateDer<'static>,
    cert_pem: String,
    key_der: PrivatePkcs8KeyDer<'static>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Generates a fresh identity whose certificate names `common_name`.
    pub fn generate(common_name: &str) -> Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(vec![sanitize_dns(common_name)])?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        // Long-lived: trust is pinned to the certificate itself, not to its validity window.
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2120, 1, 1);
        let cert = params.self_signed(&key)?;
        Self::from_parts(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
            Path::new("<generated>"),
        )
    }

    /// Loads the identity kept in `dir`, or generates one and writes it as `<dir>/<stem>.pem`.
    ///
    /// An earlier version's pair `<stem>.crt` + `<stem>.key` is loaded when there is no
    /// `<stem>.pem`. Of that pair, a certificate without its key is an error (half an identity
    /// is never silently replaced); a key without its certificate is what that version left
    /// when it stopped between its two writes (it wrote the key first), an identity no peer
    /// has seen, so a new identity is generated.
    pub fn load_or_generate(dir: &Path, stem: &str, common_name: &str) -> Result<Self> {
        let pem_path = dir.join(format!("{stem}.pem"));
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        if let Some(pem) = read_if_exists(&pem_path)? {
            return Self::parse_pem(&pem, &pem_path);
        }
        match (exists(&cert_path)?, exists(&key_path)?) {
            (true, true) => {
                let cert_pem = read(&cert_path)?;
                let key_pem = read(&key_path)?;
                Self::from_parts(cert_pem.as_bytes(), key_pem.as_bytes(), &cert_path)
            }
            (true, false) => Err(Error::InvalidIdentity {
                path: key_path,
                problem: format!(
                    "missing, but its certificate {} exists",
                    cert_path.display()
                ),
            }),
            (false, key_only) => {
                if key_only {
                    tracing::warn!(
                        key = %key_path.display(),
                        "a private key without its certificate (an interrupted first start): \
                         generating a new identity"
                    );
                }
                fs::create_dir_all(dir).map_err(|source| Error::IdentityFile {
                    path: dir.to_owned(),
                    source,
                })?;
                let id = Self::generate(common_name)?;
                match write_new_private(&pem_path, id.to_pem().as_bytes())? {
                    Written::Yes => Ok(id),
                    // Another process generated one at the same moment: use that one.
                    Written::AlreadyThere => Self::parse_pem(&read(&pem_path)?, &pem_path),
                }
            }
        }
    }

    /// Parses an identity from PEM text holding exactly one certificate and one PKCS#8 private
    /// key (in either order, as [`Identity::load_or_generate`] writes them), checking that the
    /// key belongs to the certificate. Any byte string is handled without panicking.
    pub fn from_pem(pem: &[u8]) -> Result<Self> {
        Self::parse_pem(pem, Path::new("<pem>"))
    }

    fn parse_pem(pem: impl AsRef<[u8]>, origin: &Path) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidIdentity {
            path: origin.to_owned(),
            problem,
        };
        let mut cert = None;
        let mut key = None;
        for item in rustls_pemfile::read_all(&mut pem.as_ref()) {
            match item.map_err(|e| invalid(format!("unreadable PEM: {e}")))? {
                rustls_pemfile::Item::X509Certificate(c) if cert.is_none() => cert = Some(c),
                rustls_pemfile::Item::Pkcs8Key(k) if key.is_none() => key = Some(k),
                rustls_pemfile::Item::X509Certificate(_) => {
                    return Err(invalid("more than one certificate".into()));
                }
                rustls_pemfile::Item::Pkcs8Key(_) => {
                    return Err(invalid("more than one private key".into()));
                }
                rustls_pemfile::Item::Pkcs1Key(_) | rustls_pemfile::Item::Sec1Key(_) => {
                    return Err(invalid("private key is not PKCS#8".into()));
                }
                _ => return Err(invalid("unexpected PEM section".into())),
            }
        }
        let cert = cert.ok_or_else(|| invalid("no PEM certificate found".into()))?;
        let key = key.ok_or_else(|| invalid("no PEM private key found".into()))?;
        Self::checked(cert, key, origin)
    }

    fn from_parts(cert_pem: &[u8], key_pem: &[u8], origin: &Path) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidIdentity {
            path: origin.to_owned(),
            problem,
        };
        let cert_der = rustls_pemfile::certs(&mut &cert_pem[..])
            .next()
            .ok_or_else(|| invalid("no PEM certificate found".into()))?
            .map_err(|e| invalid(format!("unreadable certificate: {e}")))?;
        let key_der = match rustls_pemfile::private_key(&mut &key_pem[..])
            .map_err(|e| invalid(format!("unreadable private key: {e}")))?
        {
            Some(PrivateKeyDer::Pkcs8(k)) => k,
            Some(_) => return Err(invalid("private key is not PKCS#8".into())),
            None => return Err(invalid("no PEM private key found".into())),
        };
        Self::checked(cert_der, key_der, origin)
    }

    /// An identity from its parts, once the key is known to be usable and to belong to the
    /// certificate (which must parse as X.509).
    fn checked(
        cert_der: CertificateDer<'static>,
        key_der: PrivatePkcs8KeyDer<'static>,
        origin: &Path,
    ) -> Result<Self> {
        rustls::sign::CertifiedKey::from_der(
            vec![cert_der.clone()],
            PrivateKeyDer::Pkcs8(key_der.clone_key()),
            &rustls::crypto::ring::default_provider(),
        )
        .map_err(|e| Error::InvalidIdentity {
            path: origin.to_owned(),
            problem: format!("the key and certificate are not a usable pair: {e}"),
        })?;
        let fingerprint = Fingerprint::of_der(&cert_der);
        Ok(Self {
            cert_pem: cert_der_to_pem(&cert_der),
            cert_der,
            key_der,
            fingerprint,
        })
    }

    /// The certificate and the private key as one PEM text, as `<stem>.pem` holds them.
    fn to_pem(&self) -> String {
        let mut out = self.cert_pem.trim_end().to_owned();
        out.push('\n');
        out.push_str(&self.key_pem());
        out
    }

    /// The certificate's fingerprint, which peers pin.
    pub fn fingerprint(&self) -> &Fingerprint {
        &self.fingerprint
    }

    /// The certificate in PEM form.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate in DER form.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The private key, for building a TLS configuration.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(self.key_der.clone_key())
    }

    fn key_pem(&self) -> String {
        let b64 = base64_encode(self.key_der.secret_pkcs8_der());
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(line).unwrap_or_default());
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out
    }
}

/// The PEM text of a DER certificate.
pub fn cert_der_to_pem(der: &[u8]) -> String {
    let b64 = base64_encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

fn sanitize_dns(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let s = s.trim_matches(|c| c == '-' || c == '.').to_owned();
    if s.is_empty() {
        "scan-engine.invalid".to_owned()
    } else {
        s
    }
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::IdentityFile {
        path: path.to_owned(),
        source,
    })
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::IdentityFile {
            path: path.to_owned(),
            source,
        }),
    }
}

fn exists(path: &Path) -> Result<bool> {
    path.try_exists().map_err(|source| Error::IdentityFile {
        path: path.to_owned(),
        source,
    })
}

enum Written {
    Yes,
    AlreadyThere,
}

/// Writes `data` to `path` (which must not exist yet) in one atomic, durable step: a uniquely
/// named temporary file in the same directory, created with mode 0600, fsync, a rename that
/// never replaces an existing file, fsync of the directory.
fn write_new_private(path: &Path, data: &[u8]) -> Result<Written> {
    let io = |source| Error::IdentityFile {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // tempfile creates the file with mode 0600 on Unix, before any byte of the key is written.
    let mut tmp = tempfile::Builder::new()
        .prefix(".identity.")
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io)?;
    tmp.write_all(data).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            return Ok(Written::AlreadyThere);
        }
        Err(e) => return Err(io(e.error)),
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(Written::Yes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart_as_one_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_generate(dir.path(), "engine", "engine-a").unwrap();
        let b = Identity::load_or_generate(dir.path(), "engine", "engine-a").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("engine.pem")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("engine.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    /// The two files an earlier version wrote.
    fn old_layout(dir: &Path) -> Identity {
        let id = Identity::generate("e").unwrap();
        fs::write(dir.join("engine.crt"), id.cert_pem()).unwrap();
        fs::write(dir.join("engine.key"), id.key_pem()).unwrap();
        id
    }

    #[test]
    fn an_earlier_versions_pair_of_files_is_still_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let old = old_layout(dir.path());
        let loaded = Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        assert_eq!(loaded.fingerprint(), old.fingerprint());
        assert!(!dir.path().join("engine.pem").exists());
    }

    #[test]
    fn half_an_identity_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path());
        fs::remove_file(dir.path().join("engine.key")).unwrap();
        let err = Identity::load_or_generate(dir.path(), "engine", "e").unwrap_err();
        assert!(err.to_string().contains("engine.key"), "{err}");
    }

    #[test]
    fn a_key_left_without_its_certificate_does_not_block_the_start() {
        // An earlier version stopped between writing the key and the certificate.
        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path());
        fs::remove_file(dir.path().join("engine.crt")).unwrap();
        let a = Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        let b = Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn stray_temporary_files_do_not_block_the_start() {
        // What the old fixed temporary names would leave after a crash, and a new-style one.
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("engine.key.tmp"), "partial").unwrap();
        fs::write(dir.path().join(".identity.abc123.tmp"), "partial").unwrap();
        Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        assert!(dir.path().join("engine.pem").exists());
    }

    #[test]
    fn corrupt_identity_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        fs::write(dir.path().join("engine.pem"), "garbage").unwrap();
        let err = Identity::load_or_generate(dir.path(), "engine", "e").unwrap_err();
        assert!(err.to_string().contains("engine.pem"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        old_layout(dir.path());
        fs::write(dir.path().join("engine.crt"), "garbage").unwrap();
        let err = Identity::load_or_generate(dir.path(), "engine", "e").unwrap_err();
        assert!(err.to_string().contains("engine.crt"), "{err}");
    }

    #[test]
    fn from_pem_takes_one_certificate_and_its_own_key() {
        let a = Identity::generate("a").unwrap();
        let b = Identity::generate("b").unwrap();
        let back = Identity::from_pem(a.to_pem().as_bytes()).unwrap();
        assert_eq!(back.fingerprint(), a.fingerprint());
        // Key first is fine too.
        let swapped = format!("{}{}", a.key_pem(), a.cert_pem());
        assert!(Identity::from_pem(swapped.as_bytes()).is_ok());
        let cases = [
            (
                format!("{}{}", a.cert_pem(), b.key_pem()),
                "not a usable pair",
            ),
            (a.cert_pem().to_owned(), "no PEM private key"),
            (a.key_pem(), "no PEM certificate"),
            (
                format!("{}{}", a.to_pem(), b.cert_pem()),
                "more than one certificate",
            ),
            (
                format!("{}{}", a.to_pem(), b.key_pem()),
                "more than one private key",
            ),
            (
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_owned()
                    + &a.key_pem(),
                "not a usable pair",
            ),
        ];
        for (pem, needle) in cases {
            let err = Identity::from_pem(pem.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(needle), "{err} lacks {needle:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn from_pem_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = Identity::from_pem(&bytes);
        }

        #[test]
        fn from_pem_never_panics_on_mangled_identities(cut in 0usize..2000, junk in "[-A-Za-z0-9+/= \n]{0,16}") {
            let pem = fixed().to_pem();
            let cut = cut.min(pem.len());
            let mangled = format!("{}{junk}{}", &pem[..cut], &pem[cut..]);
            let _ = Identity::from_pem(mangled.as_bytes());
        }
    }

    fn fixed() -> &'static Identity {
        static ID: std::sync::OnceLock<Identity> = std::sync::OnceLock::new();
        ID.get_or_init(|| Identity::generate("fixed").unwrap())
    }

    #[test]
    fn fingerprint_parsing() {
        let id = Identity::generate("x").unwrap();
        let f: Fingerprint = id
            .fingerprint()
            .as_str()
            .to_uppercase()
            .replace("SHA256:", "sha256:")
            .parse()
            .unwrap();
        assert_eq!(&f, id.fingerprint());
        assert!("md5:abcd".parse::<Fingerprint>().is_err());
        assert!("sha256:abcd".parse::<Fingerprint>().is_err());
    }

    #[test]
    fn pem_round_trip() {
        let id = Identity::generate("x").unwrap();
        assert_eq!(cert_der_to_pem(id.cert_der()).trim(), id.cert_pem().trim());
    }
}
