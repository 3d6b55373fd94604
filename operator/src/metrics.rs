//! Prometheus metrics, served on `/metrics` in the OpenMetrics text format.

use std::sync::Mutex;

use kube::runtime::reflector::Store;
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Error;
use crate::crd::{EngineState, ScanEngine};

/// Content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    call: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: String,
}

/// The operator's metrics.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
    engines: Family<StateLabels, Gauge>,
    console_requests: Family<CallLabels, Counter>,
    leader: Gauge,
    /// The ScanEngine stores of the watched scopes: the engines gauge is counted from them
    /// when scraped, so it is what the statuses say, after a restart too.
    engine_stores: Mutex<Vec<Store<ScanEngine>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Observes a reconcile's duration when dropped.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    start: Instant,
}

impl Drop for ReconcileTimer<'_> {
    fn drop(&mut self) {
        self.metrics
            .duration
            .get_or_create(&KindLabels {
                kind: self.kind.into(),
            })
            .observe(self.start.elapsed().as_secs_f64());
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("scan_engine_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.01, 2.0, 12))
        });
        let engines = Family::<StateLabels, Gauge>::default();
        let leader = Gauge::default();
        let console_requests = Family::<CallLabels, Counter>::default();
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles failed, by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of reconciles",
            duration.clone(),
        );
        registry.register(
            "engines",
            "ScanEngines by communication state",
            engines.clone(),
        );
        registry.register(
            "console_requests",
            "Requests sent to consoles' APIs, by call",
            console_requests.clone(),
        );
        registry.register(
            "leader",
            "1 when this replica holds the leader lease",
            leader.clone(),
        );
        for state in EngineState::ALL {
            engines
                .get_or_create(&StateLabels {
                    state: state.as_str().into(),
                })
                .set(0);
        }
        Self {
            registry,
            reconciles,
            failures,
            duration,
            engines,
            console_requests,
            leader,
            engine_stores: Mutex::new(Vec::new()),
        }
    }

    /// Counts a reconcile and times it until the returned guard drops.
    pub fn reconcile_started(&self, kind: &'static str) -> ReconcileTimer<'_> {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
        ReconcileTimer {
            metrics: self,
            kind,
            start: Instant::now(),
        }
    }

    pub fn reconcile_failed(&self, kind: &'static str, error: &Error) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: error.metric_label().into(),
            })
            .inc();
    }

    /// Counts a request sent to a console (`call` as `Call::as_str` prints it).
    pub fn console_request(&self, call: &'static str) {
        self.console_requests
            .get_or_create(&CallLabels { call: call.into() })
            .inc();
    }

    /// Counts the engines of `store` in the engines gauge from now on.
    pub fn add_engine_store(&self, store: Store<ScanEngine>) {
        crate::lock(&self.engine_stores).push(store);
    }

    /// Sets the engines gauge from the stores' statuses.
    fn count_engines(&self) {
        let mut counts = [0i64; EngineState::ALL.len()];
        for store in crate::lock(&self.engine_stores).iter() {
            for se in store.state() {
                let state = se
                    .status
                    .as_ref()
                    .and_then(|s| s.communication.as_ref())
                    .map_or(EngineState::Pairing, |c| c.state);
                if let Some(i) = EngineState::ALL.iter().position(|s| *s == state) {
                    counts[i] += 1;
                }
            }
        }
        for (s, n) in EngineState::ALL.iter().zip(counts) {
            self.engines
                .get_or_create(&StateLabels {
                    state: s.as_str().into(),
                })
                .set(n);
        }
    }

    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        self.count_engines();
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_reconciles_failures_and_engine_states() {
        let m = Metrics::new();
        drop(m.reconcile_started("ScanEngine"));
        m.reconcile_failed("ScanEngine", &Error::InvalidSpec("x".into()));
        let active = |name: &str| {
            serde_json::json!({
                "apiVersion": "scanengine.dev/v1alpha1", "kind": "ScanEngine",
                "metadata": {"name": name, "namespace": "ns"},
                "spec": {"consoleRef": {"name": "c"}, "communication": "ConsoleToEngine", "port": 40814},
                "status": {"communication": {"state": "Active", "direction": "ConsoleToEngine", "directionDisplay": "Console → Engine"}}
            })
        };
        let stores = crate::controller::stores::testing::stores(&[active("a"), active("b")]);
        m.add_engine_store(stores.engines);
        m.console_request("GET /api/3/scan_engines");
        let text = m.encode().unwrap_or_default();
        assert!(
            text.contains("scan_engine_operator_reconciles_total{kind=\"ScanEngine\"} 1"),
            "{text}"
        );
        assert!(text.contains("scan_engine_operator_reconcile_failures_total{kind=\"ScanEngine\",reason=\"invalid_spec\"} 1"), "{text}");
        assert!(
            text.contains("scan_engine_operator_engines{state=\"Active\"} 2"),
            "{text}"
        );
        assert!(
            text.contains(
                "scan_engine_operator_reconcile_duration_seconds_count{kind=\"ScanEngine\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "scan_engine_operator_console_requests_total{call=\"GET /api/3/scan_engines\"} 1"
            ),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
