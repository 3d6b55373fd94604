//! Switching an engine's communication method (the seeds' "click the arrow").

use crate::{
    app::App,
    error::Result,
    store::{Direction, EngineRecord},
};

/// Switches `e` to the other method. `Ok(Err(why))` when it cannot be switched now, in words
/// for the administrator.
pub async fn switch(_app: &App, e: &EngineRecord) -> Result<Result<Direction, String>> {
    let _ = e;
    Ok(Err(
        "switching the communication method from the console is not available yet".into(),
    ))
}
