//! Validate: what CEL cannot check, because it depends on the Console the engine points at.

use crate::controller::connection;
use crate::controller::scan_engine::build::ConsoleSide;
use crate::crd::scan_engine::Authorization;
use crate::crd::{Communication, Console, ScanEngine};
use kube::ResourceExt;

/// Why an engine cannot be deployed yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

/// Derives what the engine needs from its Console, or why the Console cannot serve it yet.
pub fn console_side(engine: &ScanEngine, console: &Console) -> Result<ConsoleSide, NotReady> {
    let status = console.status.clone().unwrap_or_default();
    let name = console.name_any();
    let ns = console.namespace().unwrap_or_default();
    let mut side = ConsoleSide {
        name: name.clone(),
        managed: console.is_managed(),
        engine_listener: status.engine_listener_address.clone().or_else(|| {
            console
                .is_managed()
                .then(|| connection::managed_engine_listener(&name, &ns))
        }),
        shared_secret_name: status.shared_secret.as_ref().map(|s| s.secret_name.clone()),
        fingerprint: status.certificate_fingerprint.clone(),
        source_cidrs: console
            .spec
            .external
            .as_ref()
            .and_then(|e| e.source_cidrs.clone())
            .unwrap_or_default(),
    };
    match engine.spec.communication {
        Communication::EngineToConsole => {
            if side.shared_secret_name.is_none() {
                return Err(NotReady {
                    reason: "WaitingForSharedSecret",
                    message: format!(
                        "waiting for Console {name} to publish its pairing shared secret"
                    ),
                });
            }
            if side.engine_listener.is_none() {
                return Err(NotReady {
                    reason: "WaitingForConsole",
                    message: format!(
                        "waiting for Console {name} to report its engine listener address"
                    ),
                });
            }
            if side.fingerprint.is_none() {
                // The engine pins this certificate before it sends the shared secret: without
                // it, its first dial would hand the secret to whatever answers at the address.
                return Err(NotReady {
                    reason: "WaitingForConsole",
                    message: format!(
                        "waiting for Console {name} to report its certificate fingerprint, which a reverse engine pins before it sends the shared secret"
                    ),
                });
            }
        }
        Communication::ConsoleToEngine => {
            if engine.spec.authorization == Authorization::Automatic && side.fingerprint.is_none() {
                return Err(NotReady {
                    reason: "WaitingForConsole",
                    message: format!(
                        "waiting for Console {name} to report its certificate fingerprint"
                    ),
                });
            }
            if engine.spec.authorization == Authorization::Manual {
                side.fingerprint = None;
            }
            side.shared_secret_name = None;
        }
    }
    Ok(side)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::scan_engine::build::testing::engine;
    use crate::crd::console::{ConsoleSpec, ConsoleStatus, ManagedConsole, SharedSecretStatus};

    fn console(status: ConsoleStatus) -> Console {
        let mut c = Console::new(
            "main",
            ConsoleSpec {
                managed: Some(ManagedConsole::default()),
                ..Default::default()
            },
        );
        c.metadata.namespace = Some("scanning".into());
        c.status = Some(status);
        c
    }

    #[test]
    fn reverse_engines_wait_for_the_shared_secret() {
        let se = engine(Communication::EngineToConsole);
        let err = console_side(&se, &console(ConsoleStatus::default())).err();
        assert_eq!(err.map(|e| e.reason), Some("WaitingForSharedSecret"));

        let status = ConsoleStatus {
            shared_secret: Some(SharedSecretStatus {
                secret_name: "main-console-shared-secret".into(),
                expires_at: None,
            }),
            certificate_fingerprint: Some("sha256:ab".into()),
            ..Default::default()
        };
        let side = console_side(&se, &console(status)).ok();
        assert_eq!(
            side.as_ref()
                .and_then(|s| s.engine_listener.clone())
                .as_deref(),
            Some("main-console-engines.scanning.svc:40815")
        );
        assert_eq!(
            side.and_then(|s| s.fingerprint).as_deref(),
            Some("sha256:ab"),
            "reverse engines pin the console's certificate"
        );
    }

    #[test]
    fn reverse_engines_wait_for_the_console_fingerprint() {
        let se = engine(Communication::EngineToConsole);
        let status = ConsoleStatus {
            shared_secret: Some(SharedSecretStatus {
                secret_name: "main-console-shared-secret".into(),
                expires_at: None,
            }),
            certificate_fingerprint: None,
            ..Default::default()
        };
        let err = console_side(&se, &console(status)).err();
        assert_eq!(
            err.as_ref().map(|e| e.reason),
            Some("WaitingForConsole"),
            "no secret goes out before the console's certificate is known"
        );
        assert!(
            err.is_some_and(|e| e.message.contains("certificate fingerprint")),
            "the status says what is awaited"
        );
    }

    #[test]
    fn automatic_authorization_waits_for_the_fingerprint() {
        let mut se = engine(Communication::ConsoleToEngine);
        assert!(console_side(&se, &console(ConsoleStatus::default())).is_err());
        se.spec.authorization = Authorization::Manual;
        assert!(console_side(&se, &console(ConsoleStatus::default())).is_ok());
    }
}
