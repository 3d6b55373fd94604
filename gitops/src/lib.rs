//! The GitOps health checks this project ships in `gitops/`, evaluated here the way the tools
//! evaluate them, so that a test can hold them to the operator's conditions:
//!
//! - `argocd/resource_customizations/<group>/<Kind>/health.lua`, Argo CD's layout for health
//!   scripts, with its `health_test.yaml` and `testdata/` — run in Lua 5.1 with the object as
//!   the global `obj`, returning `{status, message}`;
//! - `flux/health-check-exprs.yaml`, a Kustomization whose `healthCheckExprs` are CEL
//!   expressions over the object's top-level fields (`metadata`, `spec`, `status`), tried in
//!   Flux's order: `inProgress`, `failed`, `current`; none true is in progress.

use std::path::{Path, PathBuf};

use mlua::LuaSerdeExt as _;
use serde::Deserialize;
use serde_json::Value;

/// What can go wrong reading or running a health check.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A YAML document did not parse or has the wrong shape.
    #[error("{path}: {source}")]
    Yaml {
        path: PathBuf,
        source: serde_yaml::Error,
    },
    /// The Lua script failed or returned something that is not a health table.
    #[error("health.lua: {0}")]
    Lua(#[from] mlua::Error),
    /// A CEL expression did not compile.
    #[error("`{expr}` does not compile: {message}")]
    CelCompile { expr: String, message: String },
    /// A CEL expression failed or did not give a boolean.
    #[error("`{expr}`: {message}")]
    CelEval { expr: String, message: String },
}

/// Health as Argo CD reports it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgoHealth {
    /// Healthy, Progressing, Degraded, Suspended, Missing or Unknown.
    pub status: String,
    /// Why, in words.
    #[serde(default)]
    pub message: String,
}

/// Reads a YAML file into `T`.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })?;
    serde_yaml::from_str(&text).map_err(|source| Error::Yaml {
        path: path.to_owned(),
        source,
    })
}

/// Runs an Argo CD health script on `object`.
pub fn argocd_health(script: &str, object: &Value) -> Result<ArgoHealth, Error> {
    let lua = mlua::Lua::new();
    // JSON null becomes nil, as Argo CD's conversion does.
    let options = mlua::SerializeOptions::new().serialize_none_to_null(false);
    lua.globals()
        .set("obj", lua.to_value_with(object, options)?)?;
    let table: mlua::Table = lua.load(script).set_name("health.lua").eval()?;
    Ok(ArgoHealth {
        status: table.get::<String>("status")?,
        message: table.get::<Option<String>>("message")?.unwrap_or_default(),
    })
}

/// One case of Argo CD's `health_test.yaml`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgoCase {
    /// The health the script must give.
    pub health_status: ArgoHealth,
    /// The object, relative to the test file.
    pub input_path: PathBuf,
}

/// Argo CD's `health_test.yaml`.
#[derive(Debug, Deserialize)]
pub struct ArgoTests {
    /// Its cases.
    pub tests: Vec<ArgoCase>,
}

/// Health as Flux's kstatus-based checks report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FluxStatus {
    /// `current` held.
    Current,
    /// `failed` held.
    Failed,
    /// `inProgress` held, or nothing did.
    InProgress,
}

/// One entry of a Kustomization's `healthCheckExprs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckExpr {
    /// The kind's API version.
    pub api_version: String,
    /// The kind.
    pub kind: String,
    /// When the object is still converging (optional).
    #[serde(default)]
    pub in_progress: Option<String>,
    /// When the object cannot become healthy (optional).
    #[serde(default)]
    pub failed: Option<String>,
    /// When the object is healthy.
    pub current: String,
}

/// The `healthCheckExprs` of a Flux Kustomization document.
pub fn flux_exprs(kustomization: &Value) -> Vec<HealthCheckExpr> {
    kustomization
        .pointer("/spec/healthCheckExprs")
        .and_then(|v| serde_json::from_value(v.clone()).ok())
        .unwrap_or_default()
}

fn eval_bool(expr: &str, object: &Value) -> Result<bool, Error> {
    let program = cel::Program::compile(expr).map_err(|e| Error::CelCompile {
        expr: expr.to_owned(),
        message: e.to_string(),
    })?;
    let mut context = cel::Context::default();
    if let Some(fields) = object.as_object() {
        for (name, value) in fields {
            context
                .add_variable(name.as_str(), value.clone())
                .map_err(|e| Error::CelEval {
                    expr: expr.to_owned(),
                    message: e.to_string(),
                })?;
        }
    }
    match program.execute(&context) {
        Ok(cel::Value::Bool(b)) => Ok(b),
        Ok(other) => Err(Error::CelEval {
            expr: expr.to_owned(),
            message: format!("gave {other:?}, not a boolean"),
        }),
        Err(e) => Err(Error::CelEval {
            expr: expr.to_owned(),
            message: e.to_string(),
        }),
    }
}

/// Evaluates `check` on `object` in Flux's order: `inProgress`, `failed`, `current`.
pub fn flux_health(check: &HealthCheckExpr, object: &Value) -> Result<FluxStatus, Error> {
    if let Some(expr) = &check.in_progress
        && eval_bool(expr, object)?
    {
        return Ok(FluxStatus::InProgress);
    }
    if let Some(expr) = &check.failed
        && eval_bool(expr, object)?
    {
        return Ok(FluxStatus::Failed);
    }
    if eval_bool(&check.current, object)? {
        return Ok(FluxStatus::Current);
    }
    Ok(FluxStatus::InProgress)
}
