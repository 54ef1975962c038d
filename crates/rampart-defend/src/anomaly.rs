//! Access-pattern monitoring per principal and model: request rate, volume (rows), error ratio and distinct source
//! addresses per time window, each against an EWMA baseline of its mean and variance. A window whose value lies more
//! than `z` standard deviations above the baseline raises an alert; alerting windows do not update the baseline, so
//! a sustained attack does not teach the monitor that it is normal.

use std::collections::{BTreeSet, HashMap};

use crate::DefendError;

/// Settings of the monitor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// The window length in seconds.
    pub window_secs: u64,
    /// The EWMA weight of a new window (0 < alpha <= 1).
    pub alpha: f64,
    /// Standard deviations above the baseline that raise an alert.
    pub z: f64,
    /// Windows learned before alerts are raised.
    pub warmup_windows: u32,
    /// Most (principal, model) pairs tracked (past this, the eighth with the oldest windows is forgotten at once).
    pub max_keys: usize,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            window_secs: 60,
            alpha: 0.1,
            z: 4.0,
            warmup_windows: 10,
            max_keys: 100_000,
        }
    }
}

/// A monitored metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Requests per window.
    Requests,
    /// Rows (batch elements) per window.
    Rows,
    /// Failed requests over all requests.
    ErrorRatio,
    /// Distinct source addresses per window.
    Sources,
}

impl Metric {
    /// The metric's name in records and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Requests => "requests",
            Metric::Rows => "rows",
            Metric::ErrorRatio => "error_ratio",
            Metric::Sources => "sources",
        }
    }
}

const METRICS: [Metric; 4] = [
    Metric::Requests,
    Metric::Rows,
    Metric::ErrorRatio,
    Metric::Sources,
];

/// Floors on the standard deviation, so a perfectly steady baseline does not alert on the first extra request.
const FLOORS: [f64; 4] = [2.0, 2.0, 0.05, 1.0];

/// An alert: a window's value far above its baseline.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Alert {
    /// The principal.
    pub principal: String,
    /// The model.
    pub model: String,
    /// The window's start (seconds).
    pub window_start: u64,
    /// The metric.
    pub metric: Metric,
    /// The window's value.
    pub value: f64,
    /// The baseline mean.
    pub baseline: f64,
    /// Standard deviations above it.
    pub z: f64,
}

#[derive(Debug, Default, Clone)]
struct Window {
    requests: u64,
    rows: u64,
    errors: u64,
    sources: BTreeSet<String>,
}

impl Window {
    fn values(&self) -> [f64; 4] {
        let ratio = if self.requests == 0 {
            0.0
        } else {
            self.errors as f64 / self.requests as f64
        };
        [
            self.requests as f64,
            self.rows as f64,
            ratio,
            self.sources.len() as f64,
        ]
    }
}

#[derive(Debug, Default)]
struct Track {
    start: u64,
    current: Window,
    mean: [f64; 4],
    var: [f64; 4],
    learned: u32,
}

/// The monitor. Time is passed in (seconds), so it is deterministic to test and replay.
#[derive(Debug)]
pub struct AnomalyMonitor {
    config: AnomalyConfig,
    tracks: HashMap<(String, String), Track>,
}

impl AnomalyMonitor {
    /// Builds the monitor.
    pub fn new(config: AnomalyConfig) -> Result<AnomalyMonitor, DefendError> {
        if config.window_secs == 0
            || !(config.alpha > 0.0 && config.alpha <= 1.0)
            || !(config.z.is_finite() && config.z > 0.0)
            || config.max_keys == 0
        {
            return Err(DefendError::Config("anomaly settings out of range".into()));
        }
        Ok(AnomalyMonitor {
            config,
            tracks: HashMap::new(),
        })
    }

    /// Records one request at time `now` and returns the alerts of any window it closed.
    pub fn record(
        &mut self,
        now: u64,
        principal: &str,
        model: &str,
        rows: u64,
        failed: bool,
        source: &str,
    ) -> Vec<Alert> {
        let key = (principal.to_string(), model.to_string());
        if !self.tracks.contains_key(&key) && self.tracks.len() >= self.config.max_keys {
            // Forget the pairs whose windows are oldest.
            crate::evict_oldest(&mut self.tracks, |t| t.start);
        }
        let window = self.config.window_secs;
        let track = self.tracks.entry(key).or_insert_with(|| Track {
            start: now - now % window,
            ..Track::default()
        });
        let alerts = roll(&self.config, track, now, principal, model);
        track.current.requests += 1;
        track.current.rows += rows;
        track.current.errors += u64::from(failed);
        if track.current.sources.len() < 10_000 && !track.current.sources.contains(source) {
            track.current.sources.insert(source.to_string());
        }
        alerts
    }
}

/// Closes the windows before `now`: the current one with its counts, then (at most 64) empty ones.
fn roll(
    config: &AnomalyConfig,
    track: &mut Track,
    now: u64,
    principal: &str,
    model: &str,
) -> Vec<Alert> {
    let mut alerts = Vec::new();
    let mut closed = 0;
    while now >= track.start + config.window_secs && closed < 64 {
        let values = std::mem::take(&mut track.current).values();
        let mut alerting = false;
        if track.learned >= config.warmup_windows {
            for (((metric, floor), value), (mean, var)) in METRICS
                .iter()
                .zip(FLOORS)
                .zip(values)
                .zip(track.mean.iter().zip(&track.var))
            {
                let sd = var.sqrt().max(floor);
                let z = (value - mean) / sd;
                if z > config.z {
                    alerting = true;
                    tracing::warn!(principal, model, metric = ?metric, value, baseline = mean, z, "access anomaly");
                    alerts.push(Alert {
                        principal: principal.to_string(),
                        model: model.to_string(),
                        window_start: track.start,
                        metric: *metric,
                        value,
                        baseline: *mean,
                        z,
                    });
                }
            }
        }
        if !alerting {
            for ((mean, var), value) in track.mean.iter_mut().zip(track.var.iter_mut()).zip(values)
            {
                if track.learned == 0 {
                    *mean = value;
                } else {
                    let diff = value - *mean;
                    let incr = config.alpha * diff;
                    *mean += incr;
                    *var = (1.0 - config.alpha) * (*var + diff * incr);
                }
            }
            track.learned = track.learned.saturating_add(1);
        }
        track.start += config.window_secs;
        closed += 1;
    }
    if now >= track.start + config.window_secs {
        // A long silence: restart the window grid at `now` (the baseline stays).
        track.start = now - now % config.window_secs;
    }
    alerts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_a_steady_rate_then_alerts_on_a_burst_and_new_sources() {
        let mut m = AnomalyMonitor::new(AnomalyConfig::default()).unwrap();
        let mut alerts = Vec::new();
        // 20 minutes of 10 requests a minute from one address.
        for minute in 0..20_u64 {
            for i in 0..10 {
                alerts.extend(m.record(minute * 60 + i, "alice", "digits", 1, false, "10.0.0.1"));
            }
        }
        assert!(alerts.is_empty(), "{alerts:?}");
        // Minute 20: 200 requests of 8 rows from 30 addresses, half failing.
        for i in 0..200_u64 {
            m.record(
                1200 + i % 60,
                "alice",
                "digits",
                8,
                i % 2 == 0,
                &format!("10.0.1.{}", i % 30),
            );
        }
        let alerts = m.record(1260, "alice", "digits", 1, false, "10.0.0.1");
        let metrics: Vec<Metric> = alerts.iter().map(|a| a.metric).collect();
        assert_eq!(
            metrics,
            vec![
                Metric::Requests,
                Metric::Rows,
                Metric::ErrorRatio,
                Metric::Sources
            ]
        );
        let requests = &alerts[0];
        assert_eq!(
            (requests.value, requests.baseline, requests.window_start),
            (200.0, 10.0, 1200)
        );
        // Another principal has its own baseline and is still warming up.
        assert!(m.record(1300, "bob", "digits", 1, false, "x").is_empty());
        assert!(AnomalyMonitor::new(AnomalyConfig {
            window_secs: 0,
            ..AnomalyConfig::default()
        })
        .is_err());
        // A threshold no value can pass never alerts: refused, NaN and infinity as much as zero.
        for z in [0.0, f64::NAN, f64::INFINITY] {
            assert!(AnomalyMonitor::new(AnomalyConfig {
                z,
                ..AnomalyConfig::default()
            })
            .is_err());
        }
    }

    #[test]
    fn a_full_table_forgets_its_oldest_eighth_in_one_pass() {
        let mut m = AnomalyMonitor::new(AnomalyConfig {
            max_keys: 16,
            ..AnomalyConfig::default()
        })
        .unwrap();
        for i in 0..16_u64 {
            m.record(i * 60, &format!("p{i}"), "digits", 1, false, "10.0.0.1");
        }
        assert_eq!(m.tracks.len(), 16);
        // A new pair: the two with the oldest windows go, the new one comes in.
        m.record(16 * 60, "new", "digits", 1, false, "10.0.0.1");
        assert_eq!(m.tracks.len(), 15);
        let known = |p: &str| {
            m.tracks
                .contains_key(&(p.to_string(), "digits".to_string()))
        };
        assert!(!known("p0") && !known("p1"));
        assert!((2..16).all(|i| known(&format!("p{i}"))) && known("new"));
        // The next new pair finds room without forgetting anyone; a known pair never forgets.
        m.record(16 * 60, "newer", "digits", 1, false, "10.0.0.1");
        m.record(16 * 60, "p2", "digits", 1, false, "10.0.0.1");
        assert_eq!(m.tracks.len(), 16);
    }
}
