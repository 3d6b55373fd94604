//! Administration and its Scan Engines page (the seeds' "Scan Options" → "manage" next to
//! Engines): the table whose Communication Status shows the method by arrow (pointing to the
//! Engine for console-to-engine, to the Console for engine-to-console) and the state by colour
//! and in words; "Refresh Displayed Engines"; a Refresh button per engine; adding and removing
//! engines. The table keeps itself up to date by polling [`status`].

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use maud::{Markup, html};
use serde_json::json;

use super::{
    PageError, PageResult, Posted, Tab, Web, csrf_field, document, notices, page, secret,
    see_other,
    session::{Flash, SignedIn},
    when,
};
use crate::{
    api::Paging,
    context::App,
    engines::{
        EngineStatus,
        admin::{self, AddError, FieldError, NewEngine},
        state,
    },
    store::{Direction, EngineRecord},
};

/// Rows per page when the address names no `size`.
pub const DEFAULT_PAGE_SIZE: u64 = 50;

/// How a state looks: its colour's name (a CSS class) and its words, as the seeds name them.
pub fn look(status: EngineStatus) -> (&'static str, &'static str) {
    match status {
        EngineStatus::Active => ("green", "Active"),
        EngineStatus::Unknown => ("orange", "Unknown"),
        EngineStatus::PendingAuthorization => ("red", "Pending Authorization"),
        EngineStatus::Incompatible => ("red", "Incompatible"),
        EngineStatus::NotResponding => ("red", "Down"),
    }
}

/// The method in words.
pub fn method_words(d: Direction) -> &'static str {
    match d {
        Direction::ConsoleToEngine => "Console to Engine",
        Direction::EngineToConsole => "Engine to Console",
    }
}

/// What a screen reader says for an engine's Communication Status.
fn status_label(e: &EngineRecord, status: EngineStatus) -> String {
    format!("{}, {}", method_words(e.direction), look(status).1)
}

/// Paging of a page's address: the API's rules, [`DEFAULT_PAGE_SIZE`] rows by default.
pub fn paging(query: Option<&str>) -> Result<Paging, PageError> {
    let query = query.unwrap_or_default();
    let mut p = Paging::from_query(query)
        .map_err(|e| PageError::new(StatusCode::BAD_REQUEST, e.message().to_owned()))?;
    if !query.split('&').any(|kv| kv.starts_with("size=")) {
        p.size = DEFAULT_PAGE_SIZE;
    }
    Ok(p)
}

/// An arrow pointing right (to the Engine) or left (to the Console).
fn arrow(d: Direction) -> Markup {
    let (path, class) = match d {
        Direction::ConsoleToEngine => ("M2 12h16M12 5l7 7-7 7", "arrow to-engine"),
        Direction::EngineToConsole => ("M22 12H6M12 5l-7 7 7 7", "arrow to-console"),
    };
    html! {
        svg class=(class) viewBox="0 0 24 24" width="28" height="20" aria-hidden="true" focusable="false" {
            path d=(path) fill="none" stroke="currentColor" stroke-width="3" stroke-linecap="round" stroke-linejoin="round" {}
        }
    }
}

/// The Communication Status cell's content: Console, the arrow, Engine; the state in words.
fn communication(e: &EngineRecord, status: EngineStatus) -> Markup {
    let (colour, words) = look(status);
    html! {
        span class={"comm " (colour)} data-direction=(e.direction.as_str()) data-colour=(colour) {
            span class="end" { "Console" }
            (arrow(e.direction))
            span class="end" { "Engine" }
        }
        " "
        span class={"state " (colour)} data-field="state" { (words) }
        span class="visually-hidden" data-field="method" { ", " (method_words(e.direction)) }
    }
}

fn row(app: &App, session: &SignedIn, e: &EngineRecord, back: &str) -> Markup {
    let status = state::status(e, app.clock.now(), &app.settings.thresholds());
    html! {
        tr data-engine-id=(e.id) {
            th scope="row" data-label="Name" { (e.name) }
            td data-label="Address" { (e.address) }
            td data-label="Port" { @if e.port == 0 { "—" } @else { (e.port) } }
            td data-label="Product Version" data-field="version" { (e.product_version.as_deref().unwrap_or("—")) }
            td data-label="Last Refreshed" data-field="refreshed" { (e.last_refreshed.map(when).unwrap_or_else(|| "never".into())) }
            td data-label="Communication Status" class="comm-cell" {
                div {
                    span class="status" data-field="label" aria-label=(status_label(e, status)) role="img" {
                        (communication(e, status))
                    }
                    span class="detail" data-field="message" { (e.message) }
                }
            }
            td data-label="Refresh" {
                form method="post" action={"/administration/engines/" (e.id) "/refresh"} {
                    (csrf_field(session))
                    input type="hidden" name="back" value=(back);
                    button type="submit" class="icon" aria-label={"Refresh " (e.name)} title="Refresh" {
                        span aria-hidden="true" { "⟳" } span class="label" { " Refresh" }
                    }
                }
            }
            td data-label="Remove" {
                a href={"/administration/engines/" (e.id) "/remove"} aria-label={"Remove " (e.name)} { "Remove" }
            }
        }
    }
}

fn pager(base: &str, paging: Paging, total: u64) -> Markup {
    let pages = total.div_ceil(paging.size).max(1);
    let at = |n: u64| format!("{base}?page={n}&size={}", paging.size);
    html! {
        nav class="pager" aria-label="Pages" {
            @if paging.number > 0 {
                a href=(at(paging.number - 1)) rel="prev" { "← Previous" }
            }
            span { "Page " (paging.number + 1) " of " (pages) " (" (total) " in all)" }
            @if paging.number + 1 < pages {
                a href=(at(paging.number + 1)) rel="next" { "Next →" }
            }
        }
    }
}

/// The address of an engines page, for forms to come back to.
fn back_to(paging: Paging) -> String {
    format!(
        "/administration/engines?page={}&size={}",
        paging.number, paging.size
    )
}

/// A `back` field, when it names an engines page (anything else goes to the first page).
fn back_of(posted: &Posted) -> String {
    posted
        .fields
        .get("back")
        .filter(|b| {
            b.starts_with("/administration/engines?")
                && b[1..]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/?=&_-".contains(c))
        })
        .unwrap_or("/administration/engines")
        .to_owned()
}

/// `GET /administration`: the Administration tab.
pub async fn administration(session: SignedIn) -> Response {
    page(document(
        "Administration",
        Some(Tab::Administration),
        Some(&session),
        html! {
            h1 { "Administration" }
            section aria-labelledby="scan-options" class="card" {
                h2 id="scan-options" { "Scan Options" }
                dl class="options" {
                    dt { "Engines" }
                    dd {
                        a href="/administration/engines" { "manage" }
                        " · "
                        a href="/administration/engines/new" { "create" }
                    }
                    dt { "Sites" }
                    dd {
                        a href="/sites" { "manage" }
                    }
                }
            }
        },
    ))
}

/// The Scan Engines page's body.
pub async fn render(
    app: &App,
    session: &SignedIn,
    paging: Paging,
    flash: &[Flash],
) -> Result<Markup, PageError> {
    let engines = app.store.engines_page(paging.offset(), paging.size).await?;
    let back = back_to(paging);
    let secret = secret::section(app, session, flash).await?;
    Ok(document(
        "Scan Engines",
        Some(Tab::Administration),
        Some(session),
        html! {
            p class="crumbs" { a href="/administration" { "Administration" } " › Scan Engines" }
            h1 { "Scan Engines" }
            (notices(flash))
            section aria-labelledby="engines-title" class="card" {
                div class="bar" {
                    h2 id="engines-title" { "Scan Engines" }
                    form method="post" action="/administration/engines/refresh" {
                        (csrf_field(session))
                        input type="hidden" name="back" value=(back);
                        button type="submit" { "Refresh Displayed Engines" }
                    }
                    a class="button" href="/administration/engines/new" { "Add Scan Engine" }
                }
                p class="legend" {
                    "Communication Status: the arrow points to the " strong { "Engine" }
                    " when the console connects to the engine, to the " strong { "Console" }
                    " when the engine connects to the console. "
                    span class="green" { "Green: Active" } ", "
                    span class="orange" { "orange: Unknown" } ", "
                    span class="red" { "red: Pending Authorization, Incompatible or Down" }
                    "."
                }
                div class="table-wrap" {
                    table class="engines" {
                        caption class="visually-hidden" { "Scan Engines" }
                        thead {
                            tr {
                                th scope="col" { "Name" }
                                th scope="col" { "Address" }
                                th scope="col" { "Port" }
                                th scope="col" { "Product Version" }
                                th scope="col" { "Last Refreshed" }
                                th scope="col" { "Communication Status" }
                                th scope="col" { "Refresh" }
                                th scope="col" { "Remove" }
                            }
                        }
                        tbody id="engine-rows" data-poll={"/administration/engines/status?page=" (paging.number) "&size=" (paging.size)} {
                            @for e in &engines.items {
                                (row(app, session, e, &back))
                            }
                            @if engines.items.is_empty() {
                                tr { td colspan="8" { "No scan engines yet. " a href="/administration/engines/new" { "Add one" } "." } }
                            }
                        }
                    }
                }
                p class="updated" aria-live="polite" id="engines-updated" {}
                (pager("/administration/engines", paging, engines.total))
            }
            (secret)
        },
    ))
}

/// `GET /administration/engines`.
pub async fn list(
    State(web): State<Web>,
    session: SignedIn,
    RawQuery(query): RawQuery,
) -> PageResult {
    let paging = paging(query.as_deref())?;
    let flash = web.sessions.take_flash(&session);
    Ok(page(render(&web.app, &session, paging, &flash).await?))
}

/// `GET /administration/engines/status`: the displayed engines' states, for the page's
/// script.
pub async fn status(
    State(web): State<Web>,
    _session: SignedIn,
    RawQuery(query): RawQuery,
) -> PageResult {
    let app = &web.app;
    let paging = paging(query.as_deref())?;
    let engines = app.store.engines_page(paging.offset(), paging.size).await?;
    let now = app.clock.now();
    let rows: Vec<_> = engines
        .items
        .iter()
        .map(|e| {
            let status = state::status(e, now, &app.settings.thresholds());
            let (colour, words) = look(status);
            json!({
                "id": e.id,
                "colour": colour,
                "state": words,
                "direction": e.direction.as_str(),
                "version": e.product_version.as_deref().unwrap_or("—"),
                "refreshed": e.last_refreshed.map(when).unwrap_or_else(|| "never".into()),
                "message": e.message,
                "label": status_label(e, status),
            })
        })
        .collect();
    Ok(
        axum::Json(json!({"total": engines.total, "engines": rows, "at": when(now)}))
            .into_response(),
    )
}

async fn find(app: &App, raw: &str) -> Result<EngineRecord, PageError> {
    let id = raw
        .parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PageError::not_found("There is no such scan engine."))?;
    app.store.engine(id).await?.ok_or_else(|| {
        PageError::not_found("There is no such scan engine (it may have been removed).")
    })
}

/// The outcome of a refresh in words.
fn refreshed(app: &App, e: &EngineRecord) -> Flash {
    let status = state::status(e, app.clock.now(), &app.settings.thresholds());
    let (_, words) = look(status);
    let text = if e.message.is_empty() {
        format!("Refreshed {}: {words}.", e.name)
    } else {
        format!("Refreshed {}: {words} ({}).", e.name, e.message)
    };
    if status == EngineStatus::Active {
        Flash::Notice(text)
    } else {
        Flash::Problem(text)
    }
}

/// `POST /administration/engines/{id}/refresh`: checks the engine now, then shows the result.
pub async fn refresh(State(web): State<Web>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let app = &web.app;
    let e = find(app, &id).await?;
    admin::refresh(app, &e).await?;
    let e = find(app, &id).await?;
    web.sessions.flash(&posted.session, refreshed(app, &e));
    Ok(see_other(&back_of(&posted)))
}

/// `POST /administration/engines/refresh`: "Refresh Displayed Engines", all of the page's
/// engines at once.
pub async fn refresh_displayed(State(web): State<Web>, posted: Posted) -> PageResult {
    let app = &web.app;
    let back = back_of(&posted);
    let paging = paging(back.split_once('?').map(|(_, q)| q))?;
    let engines = app.store.engines_page(paging.offset(), paging.size).await?;
    let results =
        futures::future::join_all(engines.items.iter().map(|e| admin::refresh(app, e))).await;
    for r in results {
        r?;
    }
    web.sessions.flash(
        &posted.session,
        Flash::Notice(format!(
            "Refreshed the {} displayed engine{}.",
            engines.items.len(),
            if engines.items.len() == 1 { "" } else { "s" }
        )),
    );
    Ok(see_other(&back))
}

/// What the add form shows: the values entered and the problem, if any.
#[derive(Debug, Default, Clone)]
pub struct EngineForm {
    pub name: String,
    pub address: String,
    pub port: String,
    pub problem: Option<FieldError>,
}

fn field(
    form: &EngineForm,
    id: &'static str,
    label: &str,
    value: &str,
    kind: &str,
    hint: Option<&str>,
) -> Markup {
    let problem = form
        .problem
        .as_ref()
        .filter(|p| p.field == id)
        .map(|p| p.message.as_str());
    let error_id = format!("{id}-error");
    let hint_id = format!("{id}-hint");
    let described = match (problem.is_some(), hint.is_some()) {
        (true, true) => Some(format!("{error_id} {hint_id}")),
        (true, false) => Some(error_id.clone()),
        (false, true) => Some(hint_id.clone()),
        (false, false) => None,
    };
    html! {
        div class={"field" @if problem.is_some() { " invalid" }} {
            label for=(id) { (label) }
            @if let Some(h) = hint { span class="hint" id=(hint_id) { (h) } }
            input id=(id) name=(id) type=(kind) value=(value)
                aria-invalid=[problem.map(|_| "true")]
                aria-describedby=[described];
            @if let Some(p) = problem {
                span class="error" id=(error_id) role="alert" { (p) }
            }
        }
    }
}

/// The add-engine form, posting to `action`.
pub fn engine_form(session: &SignedIn, action: &str, form: &EngineForm) -> Markup {
    let port = if form.port.is_empty() {
        scan_engine_protocol::DEFAULT_ENGINE_PORT.to_string()
    } else {
        form.port.clone()
    };
    html! {
        form method="post" action=(action) class="engine-form" novalidate {
            (csrf_field(session))
            (field(form, "name", "Name", &form.name, "text", None))
            (field(form, "address", "Address", &form.address, "text", Some("The engine's IP address or host name.")))
            (field(form, "port", "Port", &port, "text", Some("The port the engine listens on (default 40814).")))
            p class="warning" {
                "The console connects to the engine: the engine's firewall must let the console in on this port, "
                "and the engine must enable this console in its consoles.xml."
            }
            button type="submit" class="primary" { "Save" }
        }
    }
}

/// Reads and checks the add form.
pub fn read_engine_form(posted: &Posted) -> (EngineForm, Result<NewEngine, FieldError>) {
    let f = &posted.fields;
    let mut form = EngineForm {
        name: f.get("name").unwrap_or_default().to_owned(),
        address: f.get("address").unwrap_or_default().to_owned(),
        port: f.get("port").unwrap_or_default().trim().to_owned(),
        problem: None,
    };
    let port = if form.port.is_empty() {
        Ok(None)
    } else {
        form.port.parse::<i64>().map(Some).map_err(|_| FieldError {
            field: "port",
            message: admin::port_message(),
        })
    };
    let checked =
        port.and_then(|port| NewEngine::check(Some(&form.name), Some(&form.address), port));
    if let Err(e) = &checked {
        form.problem = Some(e.clone());
    }
    (form, checked)
}

/// Adds the engine of a checked form; a problem to show next to a field otherwise.
pub async fn add_from_form(
    web: &Web,
    posted: &Posted,
) -> Result<Result<(i64, String), EngineForm>, PageError> {
    let (mut form, checked) = read_engine_form(posted);
    let new = match checked {
        Ok(n) => n,
        Err(_) => return Ok(Err(form)),
    };
    let name = new.name.clone();
    match admin::add(&web.app, new).await {
        Ok(id) => Ok(Ok((id, name))),
        Err(AddError::Invalid(e)) => {
            form.problem = Some(e);
            Ok(Err(form))
        }
        Err(AddError::NameTaken(name)) => {
            form.problem = Some(FieldError {
                field: "name",
                message: format!("a scan engine named {name:?} already exists"),
            });
            Ok(Err(form))
        }
        Err(AddError::Console(e)) => Err(e.into()),
    }
}

fn new_page(session: &SignedIn, form: &EngineForm) -> Markup {
    document(
        "Add Scan Engine",
        Some(Tab::Administration),
        Some(session),
        html! {
            p class="crumbs" {
                a href="/administration" { "Administration" } " › "
                a href="/administration/engines" { "Scan Engines" } " › Add"
            }
            h1 { "Add Scan Engine" }
            section class="card" aria-labelledby="general" {
                h2 id="general" { "General" }
                (engine_form(session, "/administration/engines", form))
            }
        },
    )
}

/// `GET /administration/engines/new`.
pub async fn new_form(session: SignedIn) -> Response {
    page(new_page(&session, &EngineForm::default()))
}

/// `POST /administration/engines`: adds an engine, or shows the form again with the problem
/// next to its field.
pub async fn create(State(web): State<Web>, posted: Posted) -> PageResult {
    match add_from_form(&web, &posted).await? {
        Ok((_, name)) => {
            web.sessions.flash(
                &posted.session,
                Flash::Notice(format!("Added scan engine {name}.")),
            );
            Ok(see_other("/administration/engines"))
        }
        Err(form) => Ok((
            StatusCode::BAD_REQUEST,
            page(new_page(&posted.session, &form)),
        )
            .into_response()),
    }
}

/// `GET /administration/engines/{id}/remove`: asks for confirmation.
pub async fn confirm_remove(
    State(web): State<Web>,
    Path(id): Path<String>,
    session: SignedIn,
) -> PageResult {
    let e = find(&web.app, &id).await?;
    Ok(page(document(
        "Remove Scan Engine",
        Some(Tab::Administration),
        Some(&session),
        html! {
            h1 { "Remove scan engine " (e.name) "?" }
            section class="card" {
                p {
                    "The console stops talking to " strong { (e.name) } " (" (e.address)
                    @if e.port > 0 { ":" (e.port) } "), forgets its certificate and fails the scans it is running. "
                    "Adding it again pairs it afresh."
                }
                form method="post" action={"/administration/engines/" (e.id) "/remove"} class="actions" {
                    (csrf_field(&session))
                    button type="submit" class="danger" { "Remove " (e.name) }
                    a class="button" href="/administration/engines" { "Cancel" }
                }
            }
        },
    )))
}

/// `POST /administration/engines/{id}/remove`.
pub async fn remove(State(web): State<Web>, Path(id): Path<String>, posted: Posted) -> PageResult {
    let e = find(&web.app, &id).await?;
    admin::remove(&web.app, &e).await?;
    web.sessions.flash(
        &posted.session,
        Flash::Notice(format!("Removed scan engine {}.", e.name)),
    );
    Ok(see_other("/administration/engines"))
}
