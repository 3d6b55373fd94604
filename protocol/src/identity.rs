//! Each side's identity: a key pair and a self-signed certificate, generated on first start and
//! kept in the data directory, so that pairing survives restarts. Peers trust each other by the
//! certificate's SHA-256 [`Fingerprint`], never by a certificate authority.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

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
        Self::from_parts(cert.pem(), key.serialize_pem(), Path::new("<generated>"))
    }

    /// Loads `<dir>/<stem>.crt` and `<dir>/<stem>.key`, or generates and writes them (the key
    /// with mode 0600) when neither exists. One without the other is an error: half an identity
    /// is never silently replaced.
    pub fn load_or_generate(dir: &Path, stem: &str, common_name: &str) -> Result<Self> {
        let cert_path = dir.join(format!("{stem}.crt"));
        let key_path = dir.join(format!("{stem}.key"));
        match (cert_path.exists(), key_path.exists()) {
            (true, true) => {
                let cert_pem = read(&cert_path)?;
                let key_pem = read(&key_path)?;
                Self::from_parts(cert_pem, key_pem, &cert_path)
            }
            (false, false) => {
                fs::create_dir_all(dir).map_err(|source| Error::IdentityFile {
                    path: dir.to_owned(),
                    source,
                })?;
                let id = Self::generate(common_name)?;
                write_private(&key_path, id.key_pem().as_bytes())?;
                write_file(&cert_path, id.cert_pem.as_bytes())?;
                Ok(id)
            }
            (true, false) => Err(Error::InvalidIdentity {
                path: key_path,
                problem: format!(
                    "missing, but its certificate {} exists",
                    cert_path.display()
                ),
            }),
            (false, true) => Err(Error::InvalidIdentity {
                path: cert_path,
                problem: format!("missing, but its key {} exists", key_path.display()),
            }),
        }
    }

    fn from_parts(cert_pem: String, key_pem: String, origin: &Path) -> Result<Self> {
        let invalid = |problem: String| Error::InvalidIdentity {
            path: origin.to_owned(),
            problem,
        };
        let cert_der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
            .next()
            .ok_or_else(|| invalid("no PEM certificate found".into()))?
            .map_err(|e| invalid(format!("unreadable certificate: {e}")))?;
        let key_der = match rustls_pemfile::private_key(&mut key_pem.as_bytes())
            .map_err(|e| invalid(format!("unreadable private key: {e}")))?
        {
            Some(PrivateKeyDer::Pkcs8(k)) => k,
            Some(_) => return Err(invalid("private key is not PKCS#8".into())),
            None => return Err(invalid("no PEM private key found".into())),
        };
        let fingerprint = Fingerprint::of_der(&cert_der);
        Ok(Self {
            cert_der,
            cert_pem,
            key_der,
            fingerprint,
        })
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

fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    fs::write(&tmp, data)
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|source| Error::IdentityFile {
            path: path.to_owned(),
            source,
        })
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = tmp_path(path);
    let result = (|| {
        let mut opts = fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    result.map_err(|source| Error::IdentityFile {
        path: path.to_owned(),
        source,
    })
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let a = Identity::load_or_generate(dir.path(), "engine", "engine-a").unwrap();
        let b = Identity::load_or_generate(dir.path(), "engine", "engine-a").unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.path().join("engine.key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn two_identities_differ() {
        let a = Identity::generate("a").unwrap();
        let b = Identity::generate("a").unwrap();
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn half_an_identity_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        fs::remove_file(dir.path().join("engine.key")).unwrap();
        let err = Identity::load_or_generate(dir.path(), "engine", "e").unwrap_err();
        assert!(err.to_string().contains("engine.key"), "{err}");
    }

    #[test]
    fn corrupt_certificate_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        Identity::load_or_generate(dir.path(), "engine", "e").unwrap();
        fs::write(dir.path().join("engine.crt"), "garbage").unwrap();
        let err = Identity::load_or_generate(dir.path(), "engine", "e").unwrap_err();
        assert!(err.to_string().contains("engine.crt"), "{err}");
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
