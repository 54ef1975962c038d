//! The inference-time defences of `rampart-defend` as gateway stages, configured per model in `[models.defend]`.
//!
//! Around the model call, in this order (`pipeline.rs` makes one call per group):
//! 1. **images** (inside validate, before the tensors are checked against the model): PNG/JPEG in a `BYTES` tensor
//!    decoded to the model's `FP32` rows within limits;
//! 2. **extraction penalties**: a principal banned or throttled by the extraction monitor is refused (403 / 429);
//! 3. **schema**: value ranges against the training data's profile (422, and one query of extraction evidence);
//! 4. **sanitise**: the configured sanitisers, in order, on every row;
//! 5. **infer**: the rows and, when the detector is on, their squeezed copies in ONE batch (the detector costs no
//!    second trip to the model);
//! 6. **detector**: the combined score; over the threshold (calibrated at start on clean rows passed through the
//!    sanitisers, as requests reach it) the request is refused (422) or answered with `x-rampart-flag: adversarial`;
//! 7. **extraction**: each row observed for the principal (the client address without authentication);
//!    throttle and ban decisions apply to the principal's later requests, a ban to this one too; shadow mode records;
//! 8. **watermark**: DAWN's keyed wrong label swapped into the scores, so the hardened answer carries it; the
//!    watermarked rows and as many controls recorded for verification (`record`);
//! 9. **harden**: label only, top-k or rounded probabilities for the principal's role;
//! 10. **anomaly** (when the answer is recorded): rate, rows, error ratio and addresses per principal and model.
//!
//! A stage that cannot decide (an uncalibrated detector, a model answer of the wrong shape) refuses the request
//! (503, `fail_closed`) unless `on_error = "allow"`; either way the audit record says so. Extraction bans are per
//! principal, kept here, and do not strike the address: clients behind one address (a NAT, a proxy) are not banned
//! for one thief among them.
//!
//! A query the schema stage refuses (422, outside the training data's profile) still counts for the principal's
//! extraction evidence, once per request: it is what noise probing looks like, and one malformed request of a benign
//! client is one query among its many (the monitor's tests are on rates, not single events).
//!
//! The defences belong to one version of the model: a detector is calibrated on that version's answers. A reload
//! builds and calibrates new defences for the new version before it is swapped in, both together
//! (`stages::infer::ModelPool::swap`); if that fails the reload is refused and the old version keeps serving with its
//! old defences. What is learnt about principals (extraction evidence, penalties, anomaly baselines) is carried over:
//! a thief does not start afresh because the model was updated.
//!
//! One file per concern: `config` (the `[models.defend]` tables), `build` (start and reload), `input` (the stages
//! before the model), `output` (after it), `extraction` (penalties and evidence per principal), `record` (the
//! watermark's record), `audit`.

mod audit;
mod build;
mod config;
mod extraction;
mod input;
mod output;
mod record;

pub use audit::DefendAudit;
pub use build::build_all;
pub use config::{
    DefendConfig, DetectorStageConfig, ExtractionStageConfig, OnError, SanitiseConfig,
    SchemaConfig, Switch, WatermarkConfig,
};
pub use output::{Assessed, Weighed};

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use hyper::StatusCode;
use prometheus_client::metrics::counter::Counter;
use rampart_auth::Principal;
use rampart_defend::anomaly::AnomalyMonitor;
use rampart_defend::detect::Detector;
use rampart_defend::harden::Hardening;
use rampart_defend::image_input::ImageLimits;
use rampart_defend::sanitise::{ImageShape, Sanitiser};
use rampart_defend::schema::SchemaCheck;
use rampart_defend::watermark::Watermarker;
use rampart_defend::DefendError;

use crate::metrics::{DefendLabels, Metrics};
use crate::pipeline::Refusal;

use build::Origin;
use extraction::ExtractionStage;

/// The defences of one version of one model.
#[derive(Debug)]
pub struct Defences {
    model: String,
    input: String,
    output: Option<String>,
    width: usize,
    shape: ImageShape,
    on_error: OnError,
    images: Option<ImageLimits>,
    schema: Option<SchemaCheck>,
    sanitisers: Vec<Sanitiser>,
    detector: Option<Detector>,
    extraction: Option<Arc<ExtractionStage>>,
    harden: Option<Hardening>,
    watermark: Option<Watermarker>,
    /// The watermarked rows and controls, for `rampart watermark verify`.
    record: Option<Arc<record::Recorder>>,
    anomaly: Option<Arc<Mutex<AnomalyMonitor>>>,
    /// What a reload needs to build the defences of the next version.
    origin: Origin,
    /// The gate's `defend` counters of this model, by stage and outcome, once used: a request counts two or three,
    /// and finding one in the family each time makes its three labels anew.
    counters: Mutex<Vec<(&'static str, &'static str, Counter)>>,
}

/// A request between the input stages and the output stages.
#[derive(Debug)]
pub struct Pending<'a> {
    defences: &'a Defences,
    principal: String,
    roles: Vec<String>,
    rows: usize,
    /// The rows as the detector and the model see them (after the sanitisers).
    values: Vec<f32>,
    /// The rows as the client sent them, when the sanitisers changed them.
    sent: Option<Vec<f32>>,
}

impl Pending<'_> {
    /// The rows as the client sent them.
    fn sent(&self) -> &[f32] {
        self.sent.as_deref().unwrap_or(&self.values)
    }
}

impl Defences {
    fn count(&self, metrics: &Metrics, stage: &'static str, outcome: &'static str) {
        let mut counters = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, _, counter)) = counters
            .iter()
            .find(|(s, o, _)| *s == stage && *o == outcome)
        {
            counter.inc();
            return;
        }
        let counter = metrics
            .defend
            .get_or_create(&DefendLabels {
                model: self.model.clone(),
                stage: stage.to_owned(),
                outcome: outcome.to_owned(),
            })
            .clone();
        counter.inc();
        counters.push((stage, outcome, counter));
    }

    /// A stage could not decide: refused (fail closed) or allowed, as configured; recorded either way.
    fn undecided(
        &self,
        stage: &'static str,
        err: &DefendError,
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        tracing::error!(model = %self.model, stage, error = %err, "a defence could not decide");
        let closed = self.on_error == OnError::Reject;
        audit.undecided = Some(format!(
            "{stage}: {err}; failed {}",
            if closed { "closed" } else { "open" }
        ));
        self.count(metrics, stage, "undecided");
        if closed {
            Err(Refusal::new(
                stage,
                StatusCode::SERVICE_UNAVAILABLE,
                "defence_undecided",
                "the request could not be checked; retry later",
            ))
        } else {
            Ok(())
        }
    }

    /// The anomaly stage: records the answered request; alerts are logged by the monitor and counted here. `ip` is
    /// the source address counted; `client` what an unauthenticated client is known by
    /// ([`crate::stages::ban::client`]).
    pub fn record_access(
        &self,
        principal: Option<&Principal>,
        ip: IpAddr,
        client: IpAddr,
        rows: usize,
        failed: bool,
        metrics: &Metrics,
    ) -> Vec<rampart_defend::anomaly::Alert> {
        let Some(anomaly) = &self.anomaly else {
            return Vec::new();
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let ip = crate::stages::ban::canonical(ip).to_string();
        let key = principal.map_or_else(|| format!("ip:{client}"), |p| p.id.clone());
        let alerts = anomaly.lock().unwrap_or_else(|p| p.into_inner()).record(
            now,
            &key,
            &self.model,
            rows as u64,
            failed,
            &ip,
        );
        for _ in &alerts {
            self.count(metrics, "anomaly", "alert");
        }
        alerts
    }
}
