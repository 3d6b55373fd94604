//! How the operator reaches a console's REST API.
//!
//! - managed: `https://<c>-console.<ns>.svc:3780`, user and password from the
//!   `<c>-console-admin` Secret, trusting the CA in `<c>-console-ca` (`ca.crt`);
//! - external: `spec.external.url`, credentials from `credentialsSecretRef`, and trust from
//!   `caBundle`, `caBundleRef` or the explicit `insecureSkipTlsVerify`.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Client, ResourceExt};

use super::apply::get_opt;
use super::names;
use crate::console_api::{ConsoleConnection, SecretString};
use crate::crd::Console;
use crate::crd::console::{CaBundleKind, ExternalConsole};
use crate::{Error, Result};

/// Port of the console REST API.
pub const API_PORT: i32 = 3780;
/// Port of the console's engine listener.
pub const ENGINE_LISTENER_PORT: i32 = 40815;

/// URL of a managed console's API.
pub fn managed_url(name: &str, namespace: &str) -> String {
    format!(
        "https://{}.{namespace}.svc:{API_PORT}",
        names::console_objects(name)
    )
}

/// Where reverse engines dial a managed console.
pub fn managed_engine_listener(name: &str, namespace: &str) -> String {
    format!(
        "{}.{namespace}.svc:{ENGINE_LISTENER_PORT}",
        names::console_engine_service(name)
    )
}

/// `namespace/name` of a Console.
pub fn console_id(console: &Console) -> String {
    format!(
        "{}/{}",
        console.namespace().unwrap_or_default(),
        console.name_any()
    )
}

fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    if let Some(v) = secret.data.as_ref().and_then(|d| d.get(key)) {
        return String::from_utf8(v.0.clone()).ok();
    }
    secret
        .string_data
        .as_ref()
        .and_then(|d| d.get(key))
        .cloned()
}

async fn required_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    purpose: &str,
) -> Result<Secret> {
    get_opt::<Secret>(client, namespace, name)
        .await?
        .ok_or_else(|| {
            Error::MissingReference(format!(
                "Secret {namespace}/{name} ({purpose}) does not exist"
            ))
        })
}

fn required_key(secret: &Secret, key: &str, purpose: &str) -> Result<String> {
    secret_value(secret, key)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| {
            Error::MissingReference(format!(
                "Secret {}/{} has no key {key} ({purpose})",
                secret.namespace().unwrap_or_default(),
                secret.name_any()
            ))
        })
}

/// Resolves the connection settings of a Console (reads the Secrets/ConfigMaps it names).
pub async fn resolve(client: &Client, console: &Console) -> Result<ConsoleConnection> {
    let ns = console.namespace().unwrap_or_default();
    let name = console.name_any();
    if let Some(external) = &console.spec.external {
        return resolve_external(client, console, &ns, external).await;
    }
    let admin = required_secret(
        client,
        &ns,
        &names::console_admin_secret(&name),
        "console admin credentials",
    )
    .await?;
    let ca = required_secret(
        client,
        &ns,
        &names::console_ca_secret(&name),
        "console API CA",
    )
    .await?;
    Ok(ConsoleConnection {
        console: console_id(console),
        url: managed_url(&name, &ns),
        username: required_key(&admin, "username", "API user")?,
        password: SecretString::new(required_key(&admin, "password", "API password")?),
        ca_bundle: Some(required_key(&ca, "ca.crt", "API CA certificate")?.into_bytes()),
        insecure_skip_tls_verify: false,
    })
}

async fn resolve_external(
    client: &Client,
    console: &Console,
    ns: &str,
    external: &ExternalConsole,
) -> Result<ConsoleConnection> {
    // The CRD refuses other schemes, but not for objects stored before that rule: checked
    // here too, before any credential is read for it.
    let https = reqwest::Url::parse(&external.url).is_ok_and(|u| u.scheme() == "https");
    if !https {
        return Err(Error::InsecureUrl(format!(
            "spec.external.url of Console {} must be an https:// URL: the operator sends the console's API password over it; nothing is sent to {}",
            console_id(console),
            crate::console_api::bounded(&external.url, 128)
        )));
    }
    let creds_ref = &external.credentials_secret_ref;
    let creds = required_secret(client, ns, &creds_ref.name, "console API credentials").await?;
    let username = required_key(
        &creds,
        creds_ref.username_key.as_deref().unwrap_or("username"),
        "API user",
    )?;
    let password = required_key(
        &creds,
        creds_ref.password_key.as_deref().unwrap_or("password"),
        "API password",
    )?;
    let ca_bundle = if let Some(pem) = &external.ca_bundle {
        Some(pem.clone().into_bytes())
    } else if let Some(r) = &external.ca_bundle_ref {
        let key = r.key.as_deref().unwrap_or("ca.crt");
        let pem = match r.kind {
            CaBundleKind::Secret => required_key(
                &required_secret(client, ns, &r.name, "CA bundle").await?,
                key,
                "CA bundle",
            )?,
            CaBundleKind::ConfigMap => get_opt::<ConfigMap>(client, ns, &r.name)
                .await?
                .and_then(|cm| cm.data.and_then(|d| d.get(key).cloned()))
                .ok_or_else(|| {
                    Error::MissingReference(format!(
                        "ConfigMap {ns}/{} has no key {key} (CA bundle)",
                        r.name
                    ))
                })?,
        };
        Some(pem.into_bytes())
    } else {
        None
    };
    Ok(ConsoleConnection {
        console: console_id(console),
        url: external.url.clone(),
        username,
        password: SecretString::new(password),
        ca_bundle,
        insecure_skip_tls_verify: external.insecure_skip_tls_verify.unwrap_or(false),
    })
}

/// How long ScanEngine reconciles reuse a Console's resolved connection before they read its
/// Secrets again.
pub const REUSE_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Resolved connections of Consoles, shared by the ScanEngine reconciles: at a thousand
/// engines, each reading the Console's two Secrets on every refresh would be thousands of
/// reads a minute for the same answer. An entry is reused for [`REUSE_FOR`] while the Console
/// keeps its uid and generation (its spec names the Secrets); a changed Secret is seen within
/// that time, and at once after the console refused the credentials
/// ([`ResolvedConnections::forget`]). The Console reconciler always reads afresh.
#[derive(Default)]
pub struct ResolvedConnections {
    entries: std::sync::Mutex<std::collections::HashMap<String, Resolved>>,
}

struct Resolved {
    uid: Option<String>,
    generation: Option<i64>,
    at: k8s_openapi::jiff::Timestamp,
    connection: ConsoleConnection,
}

impl ResolvedConnections {
    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Resolved>> {
        crate::lock(&self.entries)
    }

    /// The connection of `console`: reused when resolved less than [`REUSE_FOR`] before `now`,
    /// else read with [`resolve`].
    pub async fn resolve(
        &self,
        client: &Client,
        console: &Console,
        now: k8s_openapi::jiff::Timestamp,
    ) -> Result<ConsoleConnection> {
        self.reuse_or(console, now, resolve(client, console)).await
    }

    async fn reuse_or(
        &self,
        console: &Console,
        now: k8s_openapi::jiff::Timestamp,
        load: impl std::future::Future<Output = Result<ConsoleConnection>>,
    ) -> Result<ConsoleConnection> {
        let key = console_id(console);
        let fresh = |r: &Resolved| {
            r.uid == console.uid()
                && r.generation == console.metadata.generation
                && fresh_at(r, now)
        };
        if let Some(r) = self.entries().get(&key).filter(|r| fresh(r)) {
            return Ok(r.connection.clone());
        }
        let connection = load.await?;
        let mut entries = self.entries();
        // Whatever has aged out goes, so deleted Consoles leave nothing behind.
        entries.retain(|_, r| fresh_at(r, now));
        entries.insert(
            key,
            Resolved {
                uid: console.uid(),
                generation: console.metadata.generation,
                at: now,
                connection: connection.clone(),
            },
        );
        Ok(connection)
    }

    /// The console refused the credentials of `console`: the next reconcile reads them again.
    pub fn forget(&self, console: &Console) {
        self.entries().remove(&console_id(console));
    }
}

fn fresh_at(r: &Resolved, now: k8s_openapi::jiff::Timestamp) -> bool {
    let age = now.duration_since(r.at);
    age >= k8s_openapi::jiff::SignedDuration::ZERO && age.unsigned_abs() < REUSE_FOR
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::fixtures::{Scenario, drive, mock_client};
    use crate::crd::console::{CaBundleRef, ConsoleSpec, CredentialsSecretRef};

    fn external(ca_ref: CaBundleRef) -> Console {
        let mut c = Console::new(
            "corp",
            ConsoleSpec {
                external: Some(ExternalConsole {
                    url: "https://console.example.com:3780".into(),
                    credentials_secret_ref: CredentialsSecretRef {
                        name: "creds".into(),
                        username_key: Some("user".into()),
                        password_key: None,
                    },
                    ca_bundle_ref: Some(ca_ref),
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("ns".into());
        c
    }

    #[tokio::test]
    async fn external_console_with_a_configmap_ca() {
        let (client, handle) = mock_client();
        let console = external(CaBundleRef {
            kind: CaBundleKind::ConfigMap,
            name: "ca".into(),
            key: None,
        });
        let scenario = Scenario::new()
            .get(
                "/api/v1/namespaces/ns/secrets/creds",
                json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "data": {"user": "b3Bz", "password": "cHc="}}),
            )
            .get(
                "/api/v1/namespaces/ns/configmaps/ca",
                json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"}, "data": {"ca.crt": "PEM"}}),
            );
        let (conn, _) = drive(resolve(&client, &console), scenario.run(handle)).await;
        let conn = conn.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conn.console, "ns/corp");
        assert_eq!(conn.url, "https://console.example.com:3780");
        assert_eq!(conn.username, "ops");
        assert_eq!(conn.password.expose(), "pw");
        assert_eq!(conn.ca_bundle.as_deref(), Some(&b"PEM"[..]));
        assert!(!conn.insecure_skip_tls_verify);
    }

    #[tokio::test]
    async fn missing_key_names_the_secret_and_key() {
        let (client, handle) = mock_client();
        let console = external(CaBundleRef {
            kind: CaBundleKind::Secret,
            name: "ca".into(),
            key: None,
        });
        let scenario = Scenario::new().get(
            "/api/v1/namespaces/ns/secrets/creds",
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "ns"}, "data": {"password": "cHc="}}),
        );
        let (result, _) = drive(resolve(&client, &console), scenario.run(handle)).await;
        let message = result.err().map(|e| e.to_string()).unwrap_or_default();
        assert_eq!(message, "Secret ns/creds has no key user (API user)");
    }

    fn connection(user: &str) -> ConsoleConnection {
        ConsoleConnection {
            console: "scanning/corp".into(),
            url: "https://console.example.com:3780".into(),
            username: user.into(),
            password: SecretString::new("pw"),
            ca_bundle: None,
            insecure_skip_tls_verify: true,
        }
    }

    fn at(second: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(1_767_225_600 + second)
            .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
    }

    fn console() -> Console {
        let mut c = external(CaBundleRef {
            kind: CaBundleKind::Secret,
            name: "ca".into(),
            key: None,
        });
        c.metadata.namespace = Some("scanning".into());
        c.metadata.uid = Some("uid-1".into());
        c.metadata.generation = Some(1);
        c
    }

    async fn user(
        cache: &ResolvedConnections,
        console: &Console,
        now: i64,
        loaded: &str,
    ) -> String {
        cache
            .reuse_or(console, at(now), async { Ok(connection(loaded)) })
            .await
            .map(|c| c.username)
            .unwrap_or_else(|e| panic!("resolve: {e}"))
    }

    #[tokio::test]
    async fn a_connection_is_reused_for_a_while_then_read_again() {
        let cache = ResolvedConnections::default();
        let c = console();
        assert_eq!(user(&cache, &c, 0, "first").await, "first");
        assert_eq!(user(&cache, &c, 9, "second").await, "first", "reused");
        assert_eq!(user(&cache, &c, 10, "second").await, "second", "aged out");
    }

    #[tokio::test]
    async fn a_new_spec_a_new_console_or_refused_credentials_read_again() {
        let cache = ResolvedConnections::default();
        let mut c = console();
        assert_eq!(user(&cache, &c, 0, "first").await, "first");
        c.metadata.generation = Some(2);
        assert_eq!(user(&cache, &c, 1, "spec").await, "spec");
        c.metadata.uid = Some("uid-2".into());
        assert_eq!(user(&cache, &c, 2, "recreated").await, "recreated");
        cache.forget(&c);
        assert_eq!(user(&cache, &c, 3, "refused").await, "refused");
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let cache = ResolvedConnections::default();
        let c = console();
        let failed = cache
            .reuse_or(&c, at(0), async {
                Err(Error::MissingReference(
                    "Secret scanning/creds does not exist".into(),
                ))
            })
            .await;
        assert!(failed.is_err());
        assert_eq!(user(&cache, &c, 1, "created").await, "created");
    }
}
