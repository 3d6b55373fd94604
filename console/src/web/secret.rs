//! "Generate Scan Engine Shared Secret", a section of the Scan Engines page: generate (the
//! current secret while one is valid, else a new one), see it once with its remaining lifetime
//! counting down, copy it, revoke it.
//!
//! The value is shown on the page that follows Generate only (it is kept in the session for
//! that one page); later pages show the time left, not the value.

use axum::extract::State;
use maud::{Markup, html};

use super::{
    PageError, PageResult, Posted, Web, csrf_field, see_other,
    session::{Flash, SignedIn},
};
use crate::context::App;

/// `mm:ss` (or `h:mm:ss`) of whole seconds.
pub fn clock_words(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, (seconds / 60) % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m:02}:{s:02}")
    }
}

/// The section, with the secret itself when `flash` holds a freshly generated one.
pub async fn section(app: &App, session: &SignedIn, flash: &[Flash]) -> Result<Markup, PageError> {
    let now = app.clock.now();
    let ttl_minutes = app.settings.shared_secret_ttl.as_secs().div_ceil(60);
    let shown = flash.iter().find_map(|f| match f {
        Flash::Secret { value, expires_at } if *expires_at > now => {
            Some((value.expose().to_owned(), *expires_at))
        }
        _ => None,
    });
    let remaining = app.secrets.time_to_live().await?;
    let left = |expires_at: i64| ((expires_at - now).max(0) / 1000) as u64;
    Ok(html! {
        section aria-labelledby="secret-title" class="card" id="shared-secret" {
            h2 id="secret-title" { "Generate Scan Engine Shared Secret" }
            p {
                "An engine that connects to the console (engine-to-console) pairs with a shared secret. "
                "Many engines may use the same secret. It expires " (ttl_minutes) " minutes after it is generated; "
                "after that, generate a new one for further pairings. Engines already paired stay paired when it expires or is revoked."
            }
            @if let Some((value, expires_at)) = &shown {
                div class="secret" {
                    label for="secret-value" { "Shared secret (shown once: copy it now)" }
                    div class="copy-row" {
                        input id="secret-value" type="text" readonly value=(value) spellcheck="false" autocomplete="off";
                        button type="button" id="copy-secret" data-copy="secret-value" { "Copy" }
                    }
                    p id="copy-status" role="status" aria-live="polite" {}
                    p {
                        "Valid for another "
                        time id="secret-countdown" data-countdown=(left(*expires_at)) { (clock_words(left(*expires_at))) }
                        "."
                    }
                }
            } @else if let Some(seconds) = remaining {
                p id="secret-valid" {
                    "A shared secret is valid for another "
                    time id="secret-countdown" data-countdown=(seconds) { (clock_words(seconds)) }
                    ". Generate shows it."
                }
            } @else {
                p id="secret-none" { "No shared secret is valid now." }
            }
            div class="actions" {
                form method="post" action="/administration/shared-secret" {
                    (csrf_field(session))
                    button type="submit" class="primary" { "Generate" }
                }
                @if shown.is_some() || remaining.is_some() {
                    form method="post" action="/administration/shared-secret/revoke" {
                        (csrf_field(session))
                        button type="submit" class="danger" { "Revoke" }
                    }
                }
            }
        }
    })
}

/// `POST /administration/shared-secret`.
pub async fn generate(State(web): State<Web>, posted: Posted) -> PageResult {
    let current = web.app.secrets.current_or_new().await?;
    web.sessions.flash(
        &posted.session,
        Flash::Secret {
            value: current.value,
            expires_at: current.expires_at,
        },
    );
    Ok(see_other("/administration/engines#shared-secret"))
}

/// `POST /administration/shared-secret/revoke`.
pub async fn revoke(State(web): State<Web>, posted: Posted) -> PageResult {
    web.app.secrets.revoke().await?;
    web.sessions.flash(
        &posted.session,
        Flash::Notice(
            "Revoked the shared secret: no engine can pair with it any more. Engines already paired stay paired."
                .into(),
        ),
    );
    Ok(see_other("/administration/engines#shared-secret"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn clock_words() {
        assert_eq!(super::clock_words(3600), "1:00:00");
        assert_eq!(super::clock_words(3599), "59:59");
        assert_eq!(super::clock_words(5), "00:05");
    }
}
