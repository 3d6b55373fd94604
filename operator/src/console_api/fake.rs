//! An in-memory console for reconciler tests.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::future::BoxFuture;

use super::{
    ApiError, ApiErrorKind, ApiResult, Call, ConsoleApi, ConsoleApiFactory, ConsoleConnection,
    ConsoleInfo, ConsoleVersion, Engine, EngineCommunication, NewEngine, SecretString,
};

#[derive(Debug, Default)]
pub struct FakeState {
    pub version: String,
    pub fingerprint: String,
    pub engines: BTreeMap<i64, Engine>,
    pub next_id: i64,
    pub secret: Option<(String, u64)>,
    pub secrets_made: u32,
    /// When set, every call fails as if the console were unreachable.
    pub down: bool,
    /// Status every newly created engine gets.
    pub new_engine_status: String,
    /// Calls made, as `Call::as_str()` plus arguments.
    pub calls: Vec<String>,
    /// Connections handed out.
    pub connections: Vec<String>,
}

/// A fake console shared between the test and the reconciler.
#[derive(Clone, Debug)]
pub struct FakeConsole {
    state: Arc<Mutex<FakeState>>,
}

impl Default for FakeConsole {
    fn default() -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                version: "0.1.0".into(),
                fingerprint: "sha256:c0ffee".into(),
                next_id: 7,
                new_engine_status: "active".into(),
                ..FakeState::default()
            })),
        }
    }
}

impl FakeConsole {
    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        crate::lock(&self.state)
    }

    /// Adds an engine as if it had paired itself.
    pub fn insert_engine(&self, name: &str, status: &str, direction: &str) -> i64 {
        let mut s = self.state();
        let id = s.next_id;
        s.next_id += 1;
        let version = s.version.clone();
        s.engines.insert(
            id,
            engine(id, name, "10.0.0.9", 0, status, &version, direction),
        );
        id
    }

    fn begin(&self, call: Call, detail: String) -> ApiResult<MutexGuard<'_, FakeState>> {
        let mut s = self.state();
        s.calls.push(format!("{}{}", call.as_str(), detail));
        if s.down {
            return Err(err(
                call,
                ApiErrorKind::Transport("connection refused".into()),
            ));
        }
        Ok(s)
    }
}

fn engine(
    id: i64,
    name: &str,
    address: &str,
    port: i64,
    status: &str,
    version: &str,
    direction: &str,
) -> Engine {
    Engine {
        id,
        name: name.into(),
        address: Some(address.into()),
        port: Some(port),
        status: Some(status.into()),
        product_version: Some(version.into()),
        last_refreshed_date: Some("2026-01-01T00:00:00Z".into()),
        direction: Some(direction.into()),
        message: Some(format!("engine is {status}")),
    }
}

fn err(call: Call, kind: ApiErrorKind) -> ApiError {
    ApiError {
        console: "fake".into(),
        url: "https://fake:3780".into(),
        call,
        kind,
    }
}

impl ConsoleApiFactory for FakeConsole {
    fn connect(&self, connection: ConsoleConnection) -> ApiResult<Arc<dyn ConsoleApi>> {
        self.state().connections.push(format!(
            "{} {} {}",
            connection.console, connection.url, connection.username
        ));
        Ok(Arc::new(self.clone()))
    }
}

impl ConsoleApi for FakeConsole {
    fn info(&self) -> BoxFuture<'_, ApiResult<ConsoleInfo>> {
        Box::pin(async move {
            let s = self.begin(Call::Info, String::new())?;
            Ok(ConsoleInfo {
                version: ConsoleVersion {
                    semantic: Some(s.version.clone()),
                },
                engine_communication: Some(EngineCommunication {
                    certificate_fingerprint: Some(s.fingerprint.clone()),
                    port: Some(40815),
                }),
            })
        })
    }

    fn list_engines(&self) -> BoxFuture<'_, ApiResult<Vec<Engine>>> {
        Box::pin(async move {
            let s = self.begin(Call::ListEngines, String::new())?;
            Ok(s.engines.values().cloned().collect())
        })
    }

    fn get_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Option<Engine>>> {
        Box::pin(async move {
            let s = self.begin(Call::GetEngine, format!(" {id}"))?;
            Ok(s.engines.get(&id).cloned())
        })
    }

    fn create_engine<'a>(&'a self, new: &'a NewEngine) -> BoxFuture<'a, ApiResult<i64>> {
        Box::pin(async move {
            let mut s = self.begin(
                Call::CreateEngine,
                format!(" {} {}:{}", new.name, new.address, new.port),
            )?;
            if s.engines.values().any(|e| e.name == new.name) {
                return Err(err(
                    Call::CreateEngine,
                    ApiErrorKind::Status {
                        code: 409,
                        message: "exists".into(),
                    },
                ));
            }
            let id = s.next_id;
            s.next_id += 1;
            let (status, version) = (s.new_engine_status.clone(), s.version.clone());
            s.engines.insert(
                id,
                engine(
                    id,
                    &new.name,
                    &new.address,
                    i64::from(new.port),
                    &status,
                    &version,
                    "console-to-engine",
                ),
            );
            Ok(id)
        })
    }

    fn delete_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(async move {
            let mut s = self.begin(Call::DeleteEngine, format!(" {id}"))?;
            s.engines.remove(&id);
            Ok(())
        })
    }

    fn refresh_engine(&self, id: i64) -> BoxFuture<'_, ApiResult<Engine>> {
        Box::pin(async move {
            let s = self.begin(Call::RefreshEngine, format!(" {id}"))?;
            s.engines.get(&id).cloned().ok_or_else(|| {
                err(
                    Call::RefreshEngine,
                    ApiErrorKind::Status {
                        code: 404,
                        message: "not found".into(),
                    },
                )
            })
        })
    }

    fn shared_secret(&self) -> BoxFuture<'_, ApiResult<Option<SecretString>>> {
        Box::pin(async move {
            let s = self.begin(Call::SharedSecret, String::new())?;
            Ok(s.secret.as_ref().map(|(v, _)| SecretString::new(v.clone())))
        })
    }

    fn create_shared_secret(&self) -> BoxFuture<'_, ApiResult<SecretString>> {
        Box::pin(async move {
            let mut s = self.begin(Call::CreateSharedSecret, String::new())?;
            if let Some((v, _)) = &s.secret {
                return Ok(SecretString::new(v.clone()));
            }
            s.secrets_made += 1;
            let value = format!("fake-secret-{}", s.secrets_made);
            s.secret = Some((value.clone(), 3600));
            Ok(SecretString::new(value))
        })
    }

    fn revoke_shared_secret(&self) -> BoxFuture<'_, ApiResult<()>> {
        Box::pin(async move {
            let mut s = self.begin(Call::RevokeSharedSecret, String::new())?;
            s.secret = None;
            Ok(())
        })
    }

    fn shared_secret_ttl(&self) -> BoxFuture<'_, ApiResult<Option<u64>>> {
        Box::pin(async move {
            let s = self.begin(Call::SharedSecretTtl, String::new())?;
            Ok(s.secret.as_ref().map(|(_, ttl)| *ttl))
        })
    }
}
