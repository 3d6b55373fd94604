//! Sites (what to scan, with which engine), a site's Engines tab (the engine its scans use, and
//! "Add Scan Engine" as the seeds describe it), scans with their progress, and the assets and
//! open services scans found.

use axum::{
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::IntoResponse,
};
use maud::{Markup, html};
use serde_json::json;

use super::{
    PageError, PageResult, Posted, Tab, Web, csrf_field, document,
    engines::{self, EngineForm, method_words},
    notices, page, see_other,
    session::{Flash, SignedIn},
    when,
};
use crate::{
    context::App,
    engines::{admin::required_text, state},
    scans::{self, StartError},
    store::{NewSite, ScanRecord, ScanStatus},
};

fn id_of(raw: &str, what: &str) -> Result<i64, PageError> {
    raw.parse::<i64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| PageError::not_found(format!("There is no such {what}.")))
}

/// The values of the site form and its problem (field, words).
#[derive(Debug, Default)]
struct SiteForm {
    name: String,
    targets: String,
    ports: String,
    engine: String,
    problem: Option<(&'static str, String)>,
}

fn problem_of<'a>(form: &'a SiteForm, field: &str) -> Option<&'a str> {
    form.problem
        .as_ref()
        .filter(|(f, _)| *f == field)
        .map(|(_, m)| m.as_str())
}

async fn engine_options(app: &App, selected: &str) -> Result<Markup, PageError> {
    let all = app.store.engines().await?;
    let pools = app.store.pools().await?;
    let now = app.clock.now();
    Ok(html! {
        @for e in &all {
            @let (_, words) = engines::look(state::status(e, now, &app.settings.thresholds()));
            option value=(e.id) selected[selected == e.id.to_string()] {
                (e.name) " (" (method_words(e.direction)) ", " (words) ")"
            }
        }
        @for p in &pools {
            option value=(p.id) selected[selected == p.id.to_string()] {
                (p.name) " (engine pool of " (p.engines.len()) ")"
            }
        }
    })
}

async fn list_page(
    app: &App,
    session: &SignedIn,
    form: &SiteForm,
    flash: &[Flash],
) -> Result<Markup, PageError> {
    let sites = app.store.sites_page(0, crate::api::MAX_PAGE_SIZE).await?;
    let options = engine_options(app, &form.engine).await?;
    let field_error = |field: &str, id: &str| {
        problem_of(form, field).map(|p| html! { span class="error" id=(id) role="alert" { (p) } })
    };
    Ok(document(
        "Sites",
        Some(Tab::Sites),
        Some(session),
        html! {
            h1 { "Sites" }
            (notices(flash))
            section class="card" aria-labelledby="sites-title" {
                h2 id="sites-title" { "Sites" }
                @if sites.items.is_empty() {
                    p { "No sites yet." }
                } @else {
                    div class="table-wrap" {
                        table {
                            thead { tr { th scope="col" { "Name" } th scope="col" { "Targets" } th scope="col" { "Ports" } th scope="col" { "Engine" } } }
                            tbody {
                                @for s in &sites.items {
                                    tr {
                                        th scope="row" data-label="Name" { a href={"/sites/" (s.id)} { (s.name) } }
                                        td data-label="Targets" { (s.targets.join(", ")) }
                                        td data-label="Ports" { (s.ports.len()) " ports" }
                                        td data-label="Engine" { (s.engine_id.map_or_else(|| "—".to_owned(), |id| id.to_string())) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            section class="card" aria-labelledby="create-site" {
                h2 id="create-site" { "Create a site" }
                form method="post" action="/sites" novalidate {
                    (csrf_field(session))
                    div class={"field" @if problem_of(form, "name").is_some() { " invalid" }} {
                        label for="site-name" { "Name" }
                        input id="site-name" name="name" type="text" value=(form.name)
                            aria-invalid=[problem_of(form, "name").map(|_| "true")]
                            aria-describedby=[problem_of(form, "name").map(|_| "site-name-error")];
                        (field_error("name", "site-name-error").unwrap_or_default())
                    }
                    div class={"field" @if problem_of(form, "targets").is_some() { " invalid" }} {
                        label for="site-targets" { "Targets" }
                        span class="hint" id="site-targets-hint" { "Addresses, CIDR blocks or host names, separated by commas or lines." }
                        textarea id="site-targets" name="targets" rows="3"
                            aria-invalid=[problem_of(form, "targets").map(|_| "true")]
                            aria-describedby={"site-targets-hint" @if problem_of(form, "targets").is_some() { " site-targets-error" }} { (form.targets) }
                        (field_error("targets", "site-targets-error").unwrap_or_default())
                    }
                    div class={"field" @if problem_of(form, "ports").is_some() { " invalid" }} {
                        label for="site-ports" { "Ports" }
                        span class="hint" id="site-ports-hint" { "TCP ports separated by commas; empty for common ports." }
                        input id="site-ports" name="ports" type="text" value=(form.ports)
                            aria-invalid=[problem_of(form, "ports").map(|_| "true")]
                            aria-describedby={"site-ports-hint" @if problem_of(form, "ports").is_some() { " site-ports-error" }};
                        (field_error("ports", "site-ports-error").unwrap_or_default())
                    }
                    div class={"field" @if problem_of(form, "engine").is_some() { " invalid" }} {
                        label for="site-engine" { "Scan engine" }
                        select id="site-engine" name="engine"
                            aria-invalid=[problem_of(form, "engine").map(|_| "true")]
                            aria-describedby=[problem_of(form, "engine").map(|_| "site-engine-error")] {
                            (options)
                        }
                        (field_error("engine", "site-engine-error").unwrap_or_default())
                    }
                    button type="submit" class="primary" { "Save site" }
                }
            }
        },
    ))
}

/// `GET /sites`.
pub async fn list(State(web): State<Web>, session: SignedIn) -> PageResult {
    let flash = web.sessions.take_flash(&session);
    Ok(page(
        list_page(&web.app, &session, &SiteForm::default(), &flash).await?,
    ))
}

fn check_site(form: &SiteForm) -> Result<NewSite, (&'static str, String)> {
    let name = required_text(Some(&form.name), "name").map_err(|e| ("name", e.message))?;
    let targets: Vec<String> = form
        .targets
        .split([',', '\n', '\r', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if targets.is_empty() {
        return Err(("targets", "targets must name at least one target".into()));
    }
    scan_engine_protocol::targets::count(&targets)
        .map_err(|problem| ("targets", format!("targets: {problem}")))?;
    let ports: Vec<u16> = if form.ports.trim().is_empty() {
        scans::DEFAULT_PORTS.to_vec()
    } else {
        form.ports
            .split([',', ' '])
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<u16>().ok().filter(|p| *p > 0))
            .collect::<Option<Vec<_>>>()
            .filter(|p| !p.is_empty())
            .ok_or(("ports", "ports must hold integers from 1 to 65535".into()))?
    };
    let engine_id = form
        .engine
        .parse::<i64>()
        .map_err(|_| ("engine", "choose a scan engine (add one first)".to_owned()))?;
    Ok(NewSite {
        name,
        engine_id: Some(engine_id),
        targets,
        ports,
        timeout_ms: scans::DEFAULT_TIMEOUT_MS,
    })
}

/// `POST /sites`.
pub async fn create(State(web): State<Web>, posted: Posted) -> PageResult {
    let f = &posted.fields;
    let mut form = SiteForm {
        name: f.get("name").unwrap_or_default().to_owned(),
        targets: f.get("targets").unwrap_or_default().to_owned(),
        ports: f.get("ports").unwrap_or_default().to_owned(),
        engine: f.get("engine").unwrap_or_default().to_owned(),
        problem: None,
    };
    let checked = match check_site(&form) {
        Ok(site) => {
            let id = site.engine_id.unwrap_or_default();
            if web.app.store.engine(id).await?.is_some() || web.app.store.pool(id).await?.is_some()
            {
                Ok(site)
            } else {
                Err(("engine", "that scan engine does not exist".to_owned()))
            }
        }
        Err(p) => Err(p),
    };
    match checked {
        Ok(site) => {
            let id = web.app.store.create_site(site).await?;
            Ok(see_other(&format!("/sites/{id}")))
        }
        Err(p) => {
            form.problem = Some(p);
            let body = list_page(&web.app, &posted.session, &form, &[]).await?;
            Ok((StatusCode::BAD_REQUEST, page(body)).into_response())
        }
    }
}

async fn site_page(
    web: &Web,
    session: &SignedIn,
    id: i64,
    engine_form: &EngineForm,
    flash: &[Flash],
) -> Result<Markup, PageError> {
    let app = &web.app;
    let site = app
        .store
        .site(id)
        .await?
        .ok_or_else(|| PageError::not_found("There is no such site."))?;
    let uses = site.engine_id.unwrap_or_default();
    let engine = match app.store.engine(uses).await? {
        Some(e) => Some(e.name),
        None => app
            .store
            .pool(uses)
            .await?
            .map(|p| format!("engine pool {}", p.name)),
    };
    let options = engine_options(app, &uses.to_string()).await?;
    Ok(document(
        &site.name,
        Some(Tab::Sites),
        Some(session),
        html! {
            p class="crumbs" { a href="/sites" { "Sites" } " › " (site.name) }
            h1 { "Site " (site.name) }
            (notices(flash))
            section class="card" aria-labelledby="assets-tab" {
                h2 id="assets-tab" { "Assets" }
                p { "Targets: " (site.targets.join(", ")) }
                p { "Ports: " (site.ports.iter().map(u16::to_string).collect::<Vec<_>>().join(", ")) }
            }
            section class="card" aria-labelledby="engines-tab" {
                h2 id="engines-tab" { "Engines" }
                p {
                    "Scans of this site use "
                    @match &engine {
                        Some(name) => { strong { (name) } },
                        None => { "no engine (or one that was removed)" },
                    }
                    " unless you choose another below."
                }
                form method="post" action={"/sites/" (site.id) "/scans"} class="scan-form" {
                    (csrf_field(session))
                    div class="field" {
                        label for="scan-engine" { "Scan with" }
                        select id="scan-engine" name="engine" { (options) }
                    }
                    button type="submit" class="primary" { "Start scan" }
                }
                h3 { "Add Scan Engine" }
                (engines::engine_form(session, &format!("/sites/{}/engines", site.id), engine_form))
            }
        },
    ))
}

/// `GET /sites/{id}`.
pub async fn show(State(web): State<Web>, Path(id): Path<String>, session: SignedIn) -> PageResult {
    let id = id_of(&id, "site")?;
    let flash = web.sessions.take_flash(&session);
    Ok(page(
        site_page(&web, &session, id, &EngineForm::default(), &flash).await?,
    ))
}

/// `POST /sites/{id}/engines`: "Add Scan Engine" in a site's Engines tab.
pub async fn add_engine(
    State(web): State<Web>,
    Path(id): Path<String>,
    posted: Posted,
) -> PageResult {
    let id = id_of(&id, "site")?;
    match engines::add_from_form(&web, &posted).await? {
        Ok((_, name)) => {
            web.sessions.flash(
                &posted.session,
                Flash::Notice(format!("Added scan engine {name}.")),
            );
            Ok(see_other(&format!("/sites/{id}")))
        }
        Err(form) => {
            let body = site_page(&web, &posted.session, id, &form, &[]).await?;
            Ok((StatusCode::BAD_REQUEST, page(body)).into_response())
        }
    }
}

/// `POST /sites/{id}/scans`.
pub async fn start_scan(
    State(web): State<Web>,
    Path(id): Path<String>,
    posted: Posted,
) -> PageResult {
    let site_id = id_of(&id, "site")?;
    let engine = posted.fields.filled("engine").and_then(|e| e.parse().ok());
    match scans::start(&web.app, site_id, engine).await {
        Ok(scan_id) => Ok(see_other(&format!("/scans/{scan_id}"))),
        Err(StartError::NoSite(_)) => Err(PageError::not_found("There is no such site.")),
        Err(e @ (StartError::EngineNotReady(_) | StartError::NothingToScan(_))) => {
            let why = e.to_string();
            web.sessions.flash(
                &posted.session,
                Flash::Problem(format!("The scan did not start: {why}")),
            );
            Ok(see_other(&format!("/sites/{site_id}")))
        }
        Err(StartError::Console(e)) => Err(e.into()),
    }
}

fn status_words(s: ScanStatus) -> &'static str {
    match s {
        ScanStatus::Running => "Running",
        ScanStatus::Dispatched => "Waiting for an engine",
        ScanStatus::Paused => "Paused",
        ScanStatus::Stopped => "Stopped",
        ScanStatus::Finished => "Finished",
        ScanStatus::Error => "Failed",
    }
}

fn scan_json(s: &ScanRecord) -> serde_json::Value {
    json!({
        "id": s.id,
        "status": s.status.as_str(),
        "words": status_words(s.status),
        "done": s.done,
        "total": s.total,
        "assets": s.assets,
        "message": s.message,
    })
}

async fn assets_table(app: &App, offset: u64, limit: u64) -> Result<Markup, PageError> {
    let assets = app.store.assets_page(offset, limit).await?;
    Ok(html! {
        @if assets.items.is_empty() {
            p { "No assets found yet." }
        } @else {
            div class="table-wrap" {
                table class="assets" {
                    thead { tr { th scope="col" { "Address" } th scope="col" { "Host name" } th scope="col" { "Open services" } } }
                    tbody {
                        @for a in &assets.items {
                            tr {
                                th scope="row" data-label="Address" { (a.ip) }
                                td data-label="Host name" { (a.host_name.as_deref().unwrap_or("—")) }
                                td data-label="Open services" {
                                    ul class="services" {
                                        @for s in &a.services {
                                            li {
                                                span class="port" { (s.port) "/" (s.protocol) }
                                                @if let Some(b) = &s.banner { " " span class="banner" { (b) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if assets.total > limit { p { "Showing " (assets.items.len()) " of " (assets.total) " assets." } }
        }
    })
}

/// `GET /scans/{id}`: the scan's progress (kept up to date by the page's script) and, when it
/// has finished, the assets.
pub async fn scan(State(web): State<Web>, Path(id): Path<String>, session: SignedIn) -> PageResult {
    let id = id_of(&id, "scan")?;
    let s = web
        .app
        .store
        .scan(id)
        .await?
        .ok_or_else(|| PageError::not_found("There is no such scan."))?;
    let assets = if s.status == ScanStatus::Finished {
        Some(assets_table(&web.app, 0, crate::api::MAX_PAGE_SIZE).await?)
    } else {
        None
    };
    Ok(page(document(
        &format!("Scan {}", s.id),
        Some(Tab::Sites),
        Some(&session),
        html! {
            p class="crumbs" { a href="/sites" { "Sites" } " › " a href={"/sites/" (s.site_id)} { "Site " (s.site_id) } " › Scan " (s.id) }
            h1 { "Scan " (s.id) }
            section class="card" aria-labelledby="progress-title" id="scan" data-poll={"/scans/" (s.id) "/status"} data-status=(s.status.as_str()) {
                h2 id="progress-title" { "Progress" }
                p { "Status: " strong id="scan-status" { (status_words(s.status)) } }
                label for="scan-progress" { "Checks done" }
                progress id="scan-progress" max=(s.total.max(1)) value=(s.done) { (s.done) " of " (s.total) }
                p id="scan-counts" { (s.done) " of " (s.total) " checks, " (s.assets) " assets found" }
                p id="scan-message" { (s.message) }
                p { "Started " (when(s.started_at)) @if let Some(f) = s.finished_at { ", ended " (when(f)) } "." }
            }
            @if let Some(a) = assets {
                section class="card" aria-labelledby="found-title" {
                    h2 id="found-title" { "Assets and open services" }
                    (a)
                }
            }
        },
    )))
}

/// `GET /scans/{id}/status`: the scan as the page's script reads it.
pub async fn scan_status(
    State(web): State<Web>,
    Path(id): Path<String>,
    _session: SignedIn,
) -> PageResult {
    let id = id_of(&id, "scan")?;
    let s = web
        .app
        .store
        .scan(id)
        .await?
        .ok_or_else(|| PageError::not_found("There is no such scan."))?;
    Ok(axum::Json(scan_json(&s)).into_response())
}

/// `GET /assets`.
pub async fn assets(
    State(web): State<Web>,
    session: SignedIn,
    RawQuery(query): RawQuery,
) -> PageResult {
    let paging = engines::paging(query.as_deref())?;
    let table = assets_table(&web.app, paging.offset(), paging.size).await?;
    Ok(page(document(
        "Assets",
        Some(Tab::Assets),
        Some(&session),
        html! {
            h1 { "Assets" }
            section class="card" aria-labelledby="assets-title" {
                h2 id="assets-title" { "Assets and open services" }
                (table)
            }
        },
    )))
}
