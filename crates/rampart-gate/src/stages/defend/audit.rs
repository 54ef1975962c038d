//! What the defences decided about one request, as its audit record carries it.

use rampart_defend::extraction::{self, Signal};
use serde::Serialize;

/// What the defences decided about one request, for its audit record.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DefendAudit {
    /// Rows the defences saw.
    pub rows: usize,
    /// Images decoded from `BYTES`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub images: Option<usize>,
    /// Whether sanitisers ran.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub sanitised: bool,
    /// The highest detector score of the rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_score: Option<f64>,
    /// The calibrated threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detector_threshold: Option<f64>,
    /// Rows over the threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adversarial_rows: Option<usize>,
    /// `allow`, `throttle` or `ban`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extraction: Option<extraction::Action>,
    /// What would have been done (differs in shadow mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extraction_would: Option<extraction::Action>,
    /// The principal's extraction signals.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub extraction_signals: Vec<Signal>,
    /// The output policy applied (`label_only`, `top_k`, `full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hardening: Option<&'static str>,
    /// The watermark key's id, when watermarking is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermark_key: Option<String>,
    /// Rows answered with the watermark's wrong label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watermarked_rows: Option<usize>,
    /// A stage that could not decide, and what was done (`stage: reason; failed closed|open`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub undecided: Option<String>,
}
