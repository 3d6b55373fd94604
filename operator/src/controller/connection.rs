//! How the operator reaches a console's REST API.
//!
//! - managed: `https://<c>-console.<ns>.svc:3780`, user and password from the
//!   `<c>-console-admin` Secret, trusting the CA in `<c>-console-ca` (`ca.crt`);
//! - external: `spec.external.url`, credentials from `credentialsSecretRef`, and trust from
//!   `caBundle`, `caBundleRef` or the explicit `insecureSkipTlsVerify`.

//!
//! Everything is read from the stores ([`super::stores`]): resolving a connection makes no
//! request, so a changed Secret is used from the next reconcile on.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

use super::names;
use super::stores::Stores;
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

fn required_secret(
    stores: &Stores,
    namespace: &str,
    name: &str,
    purpose: &str,
) -> Result<std::sync::Arc<Secret>> {
    stores.secret(namespace, name).ok_or_else(|| {
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

/// Resolves the connection settings of a Console from the Secrets and ConfigMaps it names.
pub fn resolve(stores: &Stores, console: &Console) -> Result<ConsoleConnection> {
    let ns = console.namespace().unwrap_or_default();
    let name = console.name_any();
    if let Some(external) = &console.spec.external {
        return resolve_external(stores, console, &ns, external);
    }
    let admin = required_secret(
        stores,
        &ns,
        &names::console_admin_secret(&name),
        "console admin credentials",
    )?;
    let ca = required_secret(
        stores,
        &ns,
        &names::console_ca_secret(&name),
        "console API CA",
    )?;
    Ok(ConsoleConnection {
        console: console_id(console),
        url: managed_url(&name, &ns),
        username: required_key(&admin, "username", "API user")?,
        password: SecretString::new(required_key(&admin, "password", "API password")?),
        ca_bundle: Some(required_key(&ca, "ca.crt", "API CA certificate")?.into_bytes()),
        insecure_skip_tls_verify: false,
    })
}

fn resolve_external(
    stores: &Stores,
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
    let creds = required_secret(stores, ns, &creds_ref.name, "console API credentials")?;
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
                required_secret(stores, ns, &r.name, "CA bundle")?.as_ref(),
                key,
                "CA bundle",
            )?,
            CaBundleKind::ConfigMap => stores
                .config_map(ns, &r.name)
                .and_then(|cm| cm.data.as_ref().and_then(|d| d.get(key).cloned()))
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::controller::stores::testing::stores;
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

    #[test]
    fn external_console_with_a_configmap_ca() {
        let console = external(CaBundleRef {
            kind: CaBundleKind::ConfigMap,
            name: "ca".into(),
            key: None,
        });
        let stores = stores(&[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds", "namespace": "ns"}, "data": {"user": "b3Bz", "password": "cHc="}}),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca", "namespace": "ns"}, "data": {"ca.crt": "PEM"}}),
        ]);
        let conn = resolve(&stores, &console).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(conn.console, "ns/corp");
        assert_eq!(conn.url, "https://console.example.com:3780");
        assert_eq!(conn.username, "ops");
        assert_eq!(conn.password.expose(), "pw");
        assert_eq!(conn.ca_bundle.as_deref(), Some(&b"PEM"[..]));
        assert!(!conn.insecure_skip_tls_verify);
    }

    #[test]
    fn missing_key_names_the_secret_and_key() {
        let console = external(CaBundleRef {
            kind: CaBundleKind::Secret,
            name: "ca".into(),
            key: None,
        });
        let stores = stores(&[json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "creds", "namespace": "ns"}, "data": {"password": "cHc="}
        })]);
        let message = resolve(&stores, &console)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(message, "Secret ns/creds has no key user (API user)");
    }
}
