//! Prometheus metrics, served on the admin listener. Labels are route templates, model names, statuses and reasons:
//! never a principal, a key, a token or an address.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a request.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// The model, or empty.
    pub model: String,
    /// The route template (`/v2/models/{name}/infer`).
    pub route: String,
    /// The HTTP status.
    pub status: u16,
}

/// Labels of a refusal.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The stage that refused.
    pub stage: String,
    /// Why.
    pub reason: String,
}

/// Labels of a defence's decision.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DefendLabels {
    /// The model.
    pub model: String,
    /// The defence stage (`detector`, `extraction`, ...).
    pub stage: String,
    /// What it decided (`rejected`, `flagged`, `passed`, `ban`, `undecided`, ...).
    pub outcome: String,
}

/// Labels of a connection-level event.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// What happened.
    pub reason: String,
}

/// Labels of a model's own figures.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModelLabels {
    /// The model.
    pub model: String,
}

fn latency() -> Histogram {
    Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
}

/// Every metric the gateway keeps.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// Requests answered.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from the request's arrival to its answer, by route.
    pub latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    /// Requests refused, by stage and reason.
    pub refusals: Family<RefusalLabels, Counter>,
    /// Bans imposed.
    pub bans: Counter,
    /// Addresses banned now.
    pub bans_active: Gauge,
    /// Connections open now.
    pub connections_open: Gauge,
    /// Connections accepted.
    pub connections: Counter,
    /// Connections closed by the gateway before serving, by reason.
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Audit records that could not be written.
    pub audit_errors: Counter,
    /// Decisions of the inference-time defences, by model, stage and outcome.
    pub defend: Family<DefendLabels, Counter>,
    /// Runs of each configured in-process or upstream model; with `max_batch`, one run answers several requests.
    pub model_runs: Family<ModelLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("rampart");
        let m = Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency as fn() -> Histogram),
            refusals: Family::default(),
            bans: Counter::default(),
            bans_active: Gauge::default(),
            connections_open: Gauge::default(),
            connections: Counter::default(),
            connections_refused: Family::default(),
            audit_errors: Counter::default(),
            defend: Family::default(),
            model_runs: Family::default(),
            registry: Registry::default(),
        };
        registry.register("requests", "Requests answered", m.requests.clone());
        registry.register(
            "request_duration_seconds",
            "Time to answer a request",
            m.latency.clone(),
        );
        registry.register(
            "refusals",
            "Requests refused, by stage and reason",
            m.refusals.clone(),
        );
        registry.register("bans", "Temporary bans imposed", m.bans.clone());
        registry.register(
            "bans_active",
            "Client addresses banned now",
            m.bans_active.clone(),
        );
        registry.register(
            "connections_open",
            "Client connections open now",
            m.connections_open.clone(),
        );
        registry.register(
            "connections",
            "Client connections accepted",
            m.connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed before serving, by reason",
            m.connections_refused.clone(),
        );
        registry.register(
            "audit_errors",
            "Audit records that could not be written",
            m.audit_errors.clone(),
        );
        registry.register(
            "defend_decisions",
            "Decisions of the inference-time defences, by model, stage and outcome",
            m.defend.clone(),
        );
        registry.register(
            "model_runs",
            "Runs of the model, by model (requests over runs: the requests a batched run answers)",
            m.model_runs.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Counts a connection closed for `reason`.
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused
            .get_or_create(&ReasonLabels {
                reason: reason.to_owned(),
            })
            .inc();
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
