//! What an administrator does to the engines list, whichever door the request came through (the
//! REST API or the web pages): add a console-to-engine engine, remove one, refresh one. Input is
//! checked here, once, so that both doors refuse the same things with the same words.

use std::time::Duration;

use crate::{
    context::App,
    error::{Error, Result},
    store::{Direction, EngineRecord, Observation, Outcome},
};

/// A field the administrator filled in wrongly, and why, in words fit to show next to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field's API name (`name`, `address`, `port`).
    pub field: &'static str,
    pub message: String,
}

impl FieldError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            message: message.into(),
        }
    }
}

/// Why an engine could not be added.
#[derive(Debug)]
pub enum AddError {
    /// A field is missing or malformed.
    Invalid(FieldError),
    /// Another engine already has the name.
    NameTaken(String),
    /// The console itself failed.
    Console(Error),
}

/// A checked request to add a console-to-engine engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEngine {
    pub name: String,
    pub address: String,
    pub port: u16,
}

/// The longest text field.
const MAX_TEXT: usize = 255;

/// A required, non-empty, reasonably short text without control characters.
pub fn required_text(value: Option<&str>, field: &'static str) -> Result<String, FieldError> {
    let v = value.map(str::trim).unwrap_or_default();
    if v.is_empty() {
        return Err(FieldError::new(field, format!("{field} is required")));
    }
    if v.len() > MAX_TEXT {
        return Err(FieldError::new(
            field,
            format!("{field} must be at most {MAX_TEXT} characters"),
        ));
    }
    if v.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(v.to_owned())
}

/// The message for a port outside 1 to 65535.
pub fn port_message() -> String {
    "port must be an integer from 1 to 65535".to_owned()
}

impl NewEngine {
    /// Checks a name, an address and a port (`None`: the default console-to-engine port).
    pub fn check(
        name: Option<&str>,
        address: Option<&str>,
        port: Option<i64>,
    ) -> Result<Self, FieldError> {
        let name = required_text(name, "name")?;
        // The same rule the session protocol holds engines' names to: an engine added here
        // greets the console with this name, and the name is shown in the API, pages and
        // statuses.
        scan_engine_protocol::text::check_name(&name)
            .map_err(|why| FieldError::new("name", format!("name {why}")))?;
        let address = required_text(address, "address")?;
        if address.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                "address",
                "address must be a host name or IP address",
            ));
        }
        let port = match port {
            None => scan_engine_protocol::DEFAULT_ENGINE_PORT,
            Some(p) => u16::try_from(p)
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| FieldError::new("port", port_message()))?,
        };
        Ok(NewEngine {
            name,
            address,
            port,
        })
    }
}

/// Adds a console-to-engine engine and starts dialing it; returns its id.
pub async fn add(app: &App, new: NewEngine) -> Result<i64, AddError> {
    let NewEngine {
        name,
        address,
        port,
    } = new;
    let id = match app
        .store
        .create_standard_engine(&name, &address, port, app.clock.now())
        .await
    {
        Ok(id) => id,
        Err(Error::NameTaken(name)) => return Err(AddError::NameTaken(name)),
        Err(e) => return Err(AddError::Console(e)),
    };
    tracing::info!(engine_id = id, engine = %name, %address, port, "console-to-engine engine added");
    app.supervisors.start(app, id);
    Ok(id)
}

/// Removes an engine: stops dialing it, closes its session, unpins its certificate and fails
/// the scans it was running.
pub async fn remove(app: &App, e: &EngineRecord) -> Result<()> {
    app.supervisors.stop(e.id);
    app.sessions.close(e.id);
    app.store.delete_engine(e.id).await?;
    crate::scans::engine_lost(app, e.id, "the engine was deleted").await?;
    tracing::info!(engine_id = e.id, engine = %e.name, "engine deleted");
    Ok(())
}

/// Checks an engine now: a ping over its open session, or (console-to-engine) a dial. What it
/// found is recorded; read the engine again to see it.
pub async fn refresh(app: &App, e: &EngineRecord) -> Result<()> {
    refresh_within(app, e, app.settings.handshake_timeout).await
}

async fn refresh_within(app: &App, e: &EngineRecord, timeout: Duration) -> Result<()> {
    match app.sessions.ping(e.id, timeout).await {
        Some(Ok(())) => Ok(()),
        Some(Err(message)) => observe_failure(app, e.id, message).await,
        None => match e.direction {
            Direction::ConsoleToEngine => {
                if !app.supervisors.refresh(e.id, timeout * 2).await {
                    app.supervisors.start(app, e.id);
                }
                Ok(())
            }
            Direction::EngineToConsole => {
                observe_failure(
                    app,
                    e.id,
                    "the engine has no open session: it has not called the console".into(),
                )
                .await
            }
        },
    }
}

async fn observe_failure(app: &App, id: i64, message: String) -> Result<()> {
    let obs = Observation {
        outcome: Outcome::Unreachable,
        message,
        product_version: None,
        at: app.clock.now(),
    };
    app.store.observe(id, obs).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_name_address_and_port() {
        let ok = NewEngine::check(Some(" e1 "), Some("10.0.0.1"), None).unwrap();
        assert_eq!(ok.name, "e1");
        assert_eq!(ok.port, scan_engine_protocol::DEFAULT_ENGINE_PORT);
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<i64>, &'a str);
        let cases: &[Case] = &[
            (None, Some("a"), None, "name"),
            (Some(""), Some("a"), None, "name"),
            (Some("<script>"), Some("a"), None, "name"),
            (Some("n"), None, None, "address"),
            (Some("n"), Some("a b"), None, "address"),
            (Some("n"), Some("a"), Some(0), "port"),
            (Some("n"), Some("a"), Some(65536), "port"),
        ];
        for (name, address, port, field) in cases {
            let e = NewEngine::check(*name, *address, *port).unwrap_err();
            assert_eq!(e.field, *field, "{name:?} {address:?} {port:?}: {e:?}");
        }
    }
}
