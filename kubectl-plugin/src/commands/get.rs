//! `get [NAME] [-n NS | -A] [--watch] [-o wide|json]`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::ListParams;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use scan_engine_operator::controller::names;
use scan_engine_operator::controller::scan_engine::pods;
use scan_engine_operator::crd::scan_engine::ServiceType;
use scan_engine_operator::crd::{Console, ScanEngine};

use crate::cli::{GetArgs, Output};
use crate::error::{Error, Result};
use crate::table::{self, Extra, Row, Style};

/// Which namespaces a listing covers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Namespace(String),
    All,
}

impl Scope {
    fn api<K>(&self, client: &Client) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match self {
            Scope::Namespace(ns) => Api::namespaced(client.clone(), ns),
            Scope::All => Api::all(client.clone()),
        }
    }

    fn describe(&self) -> String {
        match self {
            Scope::Namespace(ns) => format!("namespace {ns}"),
            Scope::All => "all namespaces".into(),
        }
    }
}

type Key = (String, String);

fn key_of<K: ResourceExt>(object: &K) -> Key {
    (object.namespace().unwrap_or_default(), object.name_any())
}

/// What `-o wide` looks up beside the engines: their pods, their consoles' engine listener and,
/// for NodePort and LoadBalancer engines, their Services.
#[derive(Default)]
struct Lookups {
    pods: BTreeMap<Key, Vec<String>>,
    listeners: BTreeMap<Key, String>,
    services: BTreeMap<Key, Service>,
}

impl Lookups {
    async fn fetch(client: &Client, scope: &Scope, engines: &[&ScanEngine]) -> Result<Lookups> {
        let mut lookups = Lookups::default();
        let pod_api: Api<Pod> = scope.api(client);
        let listed = pod_api
            .list(&ListParams::default().labels(&pods::watch_selector()))
            .await
            .map_err(Error::kube(format!(
                "listing engine pods in {} for -o wide",
                scope.describe()
            )))?;
        for pod in &listed.items {
            if let Some(engine) = pods::engine_of(pod) {
                lookups
                    .pods
                    .entry((pod.namespace().unwrap_or_default(), engine))
                    .or_default()
                    .push(pod.name_any());
            }
        }
        let console_api: Api<Console> = scope.api(client);
        let consoles = console_api
            .list(&ListParams::default())
            .await
            .map_err(Error::kube(format!(
                "listing Consoles in {} for -o wide",
                scope.describe()
            )))?;
        for console in &consoles.items {
            if let Some(listener) = console
                .status
                .as_ref()
                .and_then(|s| s.engine_listener_address.clone())
            {
                lookups.listeners.insert(key_of(console), listener);
            }
        }
        for engine in engines {
            if matches!(
                engine.spec.service_type,
                Some(ServiceType::NodePort | ServiceType::LoadBalancer)
            ) {
                let ns = engine.namespace().unwrap_or_default();
                let name = names::engine_objects(&engine.name_any());
                let api: Api<Service> = Api::namespaced(client.clone(), &ns);
                if let Some(service) = api
                    .get_opt(&name)
                    .await
                    .map_err(Error::kube(format!("reading Service {ns}/{name}")))?
                {
                    lookups.services.insert((ns, engine.name_any()), service);
                }
            }
        }
        Ok(lookups)
    }

    fn row(&self, engine: &ScanEngine) -> Row {
        let (ns, name) = key_of(engine);
        let console = (ns.clone(), engine.spec.console_ref.name.clone());
        let key = (ns, name);
        Row::new(
            engine,
            &Extra {
                service: self.services.get(&key),
                console_listener: self.listeners.get(&console).map(String::as_str),
                pods: self.pods.get(&key).cloned().unwrap_or_default(),
            },
        )
    }
}

/// Rows of `engines`, with the wide columns filled when asked for.
async fn rows(
    client: &Client,
    scope: &Scope,
    engines: &[&ScanEngine],
    wide: bool,
) -> Result<Vec<Row>> {
    let lookups = if wide {
        Lookups::fetch(client, scope, engines).await?
    } else {
        Lookups::default()
    };
    Ok(table::sorted(engines.iter().map(|e| lookups.row(e))))
}

/// The text of `rows` in the chosen output.
fn format(rows: &[Row], output: Option<Output>, style: Style) -> Result<String> {
    if output == Some(Output::Json) {
        let mut out = String::new();
        for row in rows {
            out.push_str(&serde_json::to_string(row)?);
            out.push('\n');
        }
        return Ok(out);
    }
    Ok(table::render(rows, style, Timestamp::now()))
}

pub async fn run(
    client: &Client,
    namespace: Option<&str>,
    default_ns: &str,
    args: &GetArgs,
) -> Result<()> {
    let scope = match (args.all_namespaces, namespace, &args.name) {
        (true, Some(_), _) => {
            return Err(Error::Refused(
                "-A (all namespaces) and -n NAMESPACE exclude each other".into(),
            ));
        }
        (true, None, Some(name)) => {
            return Err(Error::Refused(format!(
                "a ScanEngine name ({name}) needs one namespace: leave out -A, or give -n NAMESPACE"
            )));
        }
        (true, None, None) => Scope::All,
        (false, ns, _) => Scope::Namespace(ns.unwrap_or(default_ns).to_owned()),
    };
    let style = Style {
        wide: args.output == Some(Output::Wide),
        namespaces: scope == Scope::All,
        color: table::use_color(
            std::io::stdout().is_terminal(),
            std::env::var_os("NO_COLOR").as_deref(),
        ),
    };
    let api: Api<ScanEngine> = scope.api(client);
    let mut stdout = std::io::stdout().lock();

    if !args.watch {
        let engines = match (&args.name, &scope) {
            (Some(name), Scope::Namespace(ns)) => vec![super::engine(&api, ns, name).await?],
            _ => {
                api.list(&ListParams::default())
                    .await
                    .map_err(Error::kube(format!(
                        "listing ScanEngines in {}",
                        scope.describe()
                    )))?
                    .items
            }
        };
        let refs: Vec<&ScanEngine> = engines.iter().collect();
        let rows = rows(client, &scope, &refs, style.wide).await?;
        stdout.write_all(format(&rows, args.output, style)?.as_bytes())?;
        return Ok(());
    }

    // --watch: the table again whenever what it shows changes.
    let mut config = watcher::Config::default();
    if let Some(name) = &args.name {
        config = config.fields(&format!("metadata.name={name}"));
    }
    let mut events = watcher(api, config).default_backoff().boxed();
    let mut engines: BTreeMap<Key, ScanEngine> = BTreeMap::new();
    let mut listing: BTreeMap<Key, ScanEngine> = BTreeMap::new();
    let mut initialised = false;
    let mut last_printed: Option<Vec<Row>> = None;
    loop {
        let event = match events.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return Ok(()),
            // Before the first listing an error is the answer (no such resource, forbidden, …);
            // afterwards the watch retries with backoff and the table stays as it was.
            Err(err) if !initialised => return Err(err.into()),
            Err(err) => {
                eprintln!("warning: watching ScanEngines: {err}; retrying");
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(engine) => {
                listing.insert(key_of(&engine), engine);
                continue;
            }
            watcher::Event::InitDone => {
                engines = std::mem::take(&mut listing);
                initialised = true;
            }
            watcher::Event::Apply(engine) => {
                engines.insert(key_of(&engine), engine);
            }
            watcher::Event::Delete(engine) => {
                engines.remove(&key_of(&engine));
            }
        }
        if !initialised {
            continue;
        }
        let refs: Vec<&ScanEngine> = engines.values().collect();
        let rows = rows(client, &scope, &refs, style.wide).await?;
        if last_printed.as_ref() == Some(&rows) {
            continue;
        }
        if last_printed.is_some() && args.output != Some(Output::Json) {
            stdout.write_all(b"\n")?;
        }
        let text = if args.output == Some(Output::Json) {
            // Only the rows that changed.
            let previous = last_printed.as_deref().unwrap_or_default();
            let changed: Vec<Row> = rows
                .iter()
                .filter(|r| !previous.contains(r))
                .cloned()
                .collect();
            format(&changed, args.output, style)?
        } else {
            format(&rows, args.output, style)?
        };
        stdout.write_all(text.as_bytes())?;
        stdout.flush()?;
        last_printed = Some(rows);
    }
}
