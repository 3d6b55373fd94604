//! The subcommands. Each reads what it needs from the API server, changes at most the one field
//! or annotation it is about (as field manager [`FIELD_MANAGER`]), and prints through the pure
//! renderers of [`crate::table`] and [`crate::secret`].

pub mod authorize;
pub mod get;
pub mod refresh;
pub mod secret;
pub mod switch;

use kube::Api;
use kube::api::PatchParams;
use scan_engine_operator::crd::{Console, ScanEngine};

use crate::error::{Error, Result};

/// Field manager of every write the plugin makes.
pub const FIELD_MANAGER: &str = "kubectl-scanengine";

/// Patch parameters naming the plugin as the field manager.
pub fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    }
}

/// The ScanEngine `name`, or [`Error::NotFound`].
pub async fn engine(api: &Api<ScanEngine>, namespace: &str, name: &str) -> Result<ScanEngine> {
    api.get_opt(name)
        .await
        .map_err(Error::kube(format!(
            "reading ScanEngine {namespace}/{name}"
        )))?
        .ok_or_else(|| Error::NotFound {
            kind: "ScanEngine",
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// The Console `name`, or [`Error::NotFound`].
pub async fn console(api: &Api<Console>, namespace: &str, name: &str) -> Result<Console> {
    api.get_opt(name)
        .await
        .map_err(Error::kube(format!("reading Console {namespace}/{name}")))?
        .ok_or_else(|| Error::NotFound {
            kind: "Console",
            namespace: namespace.into(),
            name: name.into(),
        })
}
