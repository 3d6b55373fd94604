//! The managed console's generated Secrets: admin API password, API CA and serving
//! certificate. Each is created once when missing and never rewritten, so the console's
//! password and certificate survive operator restarts.
//!
//! A same-named Secret the operator did not make (no owner reference to the Console, no
//! managed-by label) is neither used, nor deleted, nor replaced: [`ensure`] fails with
//! [`Error::NotOwned`] and the Console's status says so.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, PostParams};
use rand::Rng;
use rand::distr::Alphanumeric;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use super::build::Inputs;
use super::build::statefulset::ADMIN_USER;
use crate::controller::names;
use crate::controller::shared::apply::delete_exactly;
use crate::controller::stores::Stores;
use crate::{Error, Result};

/// PEM material of a freshly generated API CA and serving certificate.
pub struct GeneratedTls {
    pub ca_cert: String,
    pub ca_key: String,
    pub cert: String,
    pub key: String,
}

/// A random 32-character password.
pub fn generate_password() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

fn gen_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> Error {
    move |e| Error::Generate {
        what,
        message: e.to_string(),
    }
}

/// DNS names of a managed console's API certificate.
pub fn api_dns_names(name: &str, namespace: &str) -> Vec<String> {
    let svc = names::console_objects(name);
    vec![
        svc.clone(),
        format!("{svc}.{namespace}"),
        format!("{svc}.{namespace}.svc"),
        format!("{svc}.{namespace}.svc.cluster.local"),
        "localhost".into(),
    ]
}

/// Generates a CA and a serving certificate it signs for `dns_names`.
pub fn generate_tls(console: &str, dns_names: Vec<String>) -> Result<GeneratedTls> {
    let ca_key = KeyPair::generate().map_err(gen_err("API CA key"))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err("API CA"))?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        format!("scan-engine-operator CA for console {console}"),
    );
    ca_params.distinguished_name = dn;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params
        .self_signed(&ca_key)
        .map_err(gen_err("API CA certificate"))?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(gen_err("API serving key"))?;
    let mut params =
        CertificateParams::new(dns_names).map_err(gen_err("API serving certificate"))?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, names::console_objects(console));
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(gen_err("API serving certificate"))?;
    Ok(GeneratedTls {
        ca_cert: ca_cert.pem(),
        ca_key: issuer.key().serialize_pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
    })
}

fn secret(inputs: &Inputs<'_>, name: String, data: &[(&str, String)]) -> Secret {
    Secret {
        metadata: inputs.meta(name),
        type_: Some("Opaque".into()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.clone().into_bytes())))
                .collect::<BTreeMap<_, _>>(),
        ),
        ..Secret::default()
    }
}

async fn create_if_missing(
    client: &Client,
    namespace: &str,
    make: impl FnOnce() -> Result<Secret>,
) -> Result<bool> {
    let obj = make()?;
    let name = obj.metadata.name.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    match api
        .create(
            &PostParams {
                field_manager: Some(names::MANAGER.into()),
                ..PostParams::default()
            },
            &obj,
        )
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("create Secret {namespace}/{name}"))(e)),
    }
}

/// The Secret `name` from the store, when it exists; [`Error::NotOwned`] when it exists and is
/// not ours.
fn existing_of_ours(
    stores: &Stores,
    inputs: &Inputs<'_>,
    name: &str,
) -> Result<Option<std::sync::Arc<Secret>>> {
    let ns = inputs.namespace;
    match stores.secret(ns, name) {
        Some(s) if !names::is_ours(&s.metadata, &inputs.owner.uid) => {
            Err(Error::not_owned("Secret", ns, name, "Console"))
        }
        other => Ok(other),
    }
}

/// Creates whichever of the console's Secrets is missing from the store; returns the names
/// created. Once they exist, no request is made.
pub async fn ensure(client: &Client, stores: &Stores, inputs: &Inputs<'_>) -> Result<Vec<String>> {
    let ns = inputs.namespace;
    let mut created = Vec::new();
    let admin = names::console_admin_secret(inputs.name);
    if existing_of_ours(stores, inputs, &admin)?.is_none()
        && create_if_missing(client, ns, || {
            Ok(secret(
                inputs,
                admin.clone(),
                &[
                    ("username", ADMIN_USER.to_string()),
                    ("password", generate_password()),
                ],
            ))
        })
        .await?
    {
        created.push(admin);
    }
    let ca = names::console_ca_secret(inputs.name);
    let tls = names::console_tls_secret(inputs.name);
    let ca_existing = existing_of_ours(stores, inputs, &ca)?;
    let tls_existing = existing_of_ours(stores, inputs, &tls)?;
    if ca_existing.is_none() || tls_existing.is_none() {
        // The CA key is only kept to sign this pair: regenerate both together. Only the
        // operator's own Secrets get here, and the delete names the uid just read.
        let generated = generate_tls(inputs.name, api_dns_names(inputs.name, ns))?;
        for old in ca_existing.iter().chain(tls_existing.iter()) {
            delete_exactly(client, old.as_ref()).await?;
        }
        let ca_data = [
            ("ca.crt", generated.ca_cert.clone()),
            ("ca.key", generated.ca_key),
        ];
        if create_if_missing(client, ns, || Ok(secret(inputs, ca.clone(), &ca_data))).await? {
            created.push(ca);
        }
        let tls_data = [
            ("tls.crt", generated.cert),
            ("tls.key", generated.key),
            ("ca.crt", generated.ca_cert),
        ];
        if create_if_missing(client, ns, || Ok(secret(inputs, tls.clone(), &tls_data))).await? {
            created.push(tls);
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tls_is_pem() {
        let tls = generate_tls("main", api_dns_names("main", "scanning"));
        let Ok(tls) = tls else {
            panic!("generation failed")
        };
        assert!(tls.ca_cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(tls.key.contains("PRIVATE KEY"));
        assert!(tls.ca_key.contains("PRIVATE KEY"));
        // The serving certificate verifies against the CA through reqwest's parser.
        assert_eq!(
            reqwest::Certificate::from_pem_bundle(tls.ca_cert.as_bytes())
                .map(|c| c.len())
                .ok(),
            Some(1)
        );
    }

    #[test]
    fn passwords_are_random() {
        let (a, b) = (generate_password(), generate_password());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
