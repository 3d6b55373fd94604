//! `secret CONSOLE`: the pairing shared secret's expiry and next renewal, from the Console's
//! status. It reads the Console only, never the Secret, so it cannot show the value.

use std::io::Write;

use k8s_openapi::jiff::Timestamp;
use kube::{Api, Client};
use scan_engine_operator::crd::Console;

use crate::error::Result;
use crate::secret::{SecretInfo, render};

pub async fn run(client: &Client, namespace: &str, name: &str) -> Result<()> {
    let api: Api<Console> = Api::namespaced(client.clone(), namespace);
    let console = super::console(&api, namespace, name).await?;
    let text = render(&SecretInfo::new(&console), Timestamp::now());
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}
