//! Extraction per principal: the penalties (throttle, ban) decided earlier, and the evidence each query adds.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;
use hyper::StatusCode;
use rampart_defend::extraction::{self, ExtractionMonitor};
use rampart_defend::knn::Neighbour;

use super::{Defences, DefendAudit, Pending};
use crate::metrics::Metrics;
use crate::pipeline::Refusal;
use crate::stages::rate::{Gcra, RateDecision};

/// Principals with a penalty remembered at once.
const MAX_PENALTIES: usize = 100_000;

/// Turns at the monitor ([`ExtractionStage::turn`]): principals are spread over this many.
const TURNS: usize = 64;

#[derive(Debug, Clone, Copy)]
enum Penalty {
    Throttle,
    Ban(Instant),
}

/// The extraction monitor of a model and the penalties it decided; shared by the model's versions.
#[derive(Debug)]
pub(super) struct ExtractionStage {
    /// Shared by the model's requests without a lock of its own (it locks each principal apart).
    pub(super) monitor: ExtractionMonitor,
    penalties: Mutex<HashMap<String, Penalty>>,
    throttle: Gcra<String>,
    ban: Duration,
    shadow: bool,
    /// One principal's requests take turns at the monitor ([`ExtractionStage::turn`]).
    turns: Box<[tokio::sync::Mutex<()>]>,
}

impl ExtractionStage {
    /// A stage with no evidence yet.
    pub(super) fn new(
        monitor: ExtractionMonitor,
        throttle: crate::config::Rate,
        max_principals: usize,
        ban: Duration,
        shadow: bool,
    ) -> ExtractionStage {
        ExtractionStage {
            monitor,
            penalties: Mutex::new(HashMap::new()),
            throttle: Gcra::new(throttle, max_principals),
            ban,
            shadow,
            turns: (0..TURNS).map(|_| tokio::sync::Mutex::new(())).collect(),
        }
    }

    /// Waits, without holding up the runtime thread, until no other request of `principal` is at the monitor; the
    /// turn lasts while the guard lives. The monitor locks a principal's evidence while it weighs a query against its
    /// history (up to `max_history` rows: about 8 us for natural rows, 24 us for noise): two runtime threads with
    /// requests of one principal would otherwise take turns by sleeping on that lock, each sleep a switch of threads.
    /// Principals share a turn by a hash of their name (64 of them): two unrelated ones rarely meet, and wait in
    /// turn when they do. The lock inside the monitor still guards the evidence; this only keeps threads off it.
    pub(super) async fn turn(&self, principal: &str) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        principal.hash(&mut hasher);
        let at = (hasher.finish() % TURNS as u64) as usize;
        // Always there (`at < TURNS`, the turns' number).
        Some(self.turns.get(at)?.lock().await)
    }

    /// Acts on the monitor's decision for `principal`: records it, sets the penalty, and refuses this request too
    /// when it is a ban.
    fn decide(
        &self,
        defences: &Defences,
        principal: &str,
        decision: &extraction::Decision,
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        audit.extraction = Some(decision.action);
        audit.extraction_would = Some(decision.would);
        audit.extraction_signals = decision.signals.clone();
        let outcome = match (decision.would, self.shadow) {
            (extraction::Action::Allow, _) => "allowed",
            (_, true) => "shadow_flagged",
            (extraction::Action::Throttle, false) => "throttle",
            (extraction::Action::Ban, false) => "ban",
        };
        defences.count(metrics, "extraction", outcome);
        let penalty = match decision.action {
            extraction::Action::Allow => return Ok(()),
            extraction::Action::Throttle => Penalty::Throttle,
            extraction::Action::Ban => {
                let now = Instant::now();
                // The configuration bounds the ban (ten years); a clock near its end must still not overflow.
                let until = now
                    .checked_add(self.ban)
                    .or_else(|| now.checked_add(Duration::from_secs(86_400)))
                    .unwrap_or(now);
                Penalty::Ban(until)
            }
        };
        let mut penalties = self.penalties.lock().unwrap_or_else(|p| p.into_inner());
        let first = !matches!(penalties.get(principal), Some(Penalty::Ban(_)));
        remember(&mut penalties, principal, penalty, MAX_PENALTIES);
        drop(penalties);
        if let Penalty::Ban(_) = penalty {
            if first {
                tracing::warn!(principal = %principal, model = %defences.model, signals = ?decision.signals, queries = decision.queries, "extraction: principal banned");
            }
            return Err(Refusal::new(
                "extraction",
                StatusCode::FORBIDDEN,
                "extraction_banned",
                "banned: the query pattern looks like model extraction",
            ));
        }
        Ok(())
    }
}

/// Records `principal`'s penalty in a table of at most `max`. A new penalty is always kept: when the table is full,
/// the bans that have run out go first, then an eighth at once, throttles before bans and the bans that end first.
fn remember(
    penalties: &mut HashMap<String, Penalty>,
    principal: &str,
    penalty: Penalty,
    max: usize,
) {
    if penalties.len() >= max && !penalties.contains_key(principal) {
        let now = Instant::now();
        penalties.retain(|_, p| !matches!(p, Penalty::Ban(until) if *until <= now));
        if penalties.len() >= max {
            rampart_defend::evict_oldest(penalties, |p| match p {
                Penalty::Throttle => None,
                Penalty::Ban(until) => Some(*until),
            });
        }
    }
    penalties.insert(principal.to_owned(), penalty);
}

impl Defences {
    /// The penalties decided earlier for `key`: refused while banned, held to the throttle's rate while throttled.
    pub(super) fn stage_penalties(&self, key: &str, metrics: &Metrics) -> Result<(), Refusal> {
        let Some(stage) = &self.extraction else {
            return Ok(());
        };
        let penalty = {
            let mut penalties = stage.penalties.lock().unwrap_or_else(|p| p.into_inner());
            match penalties.get(key).copied() {
                Some(Penalty::Ban(until)) if until <= Instant::now() => {
                    // The ban has run out: the principal starts afresh.
                    penalties.remove(key);
                    stage.monitor.forget(key);
                    None
                }
                other => other,
            }
        };
        match penalty {
            None => Ok(()),
            Some(Penalty::Ban(until)) => {
                self.count(metrics, "extraction", "banned");
                let wait = until.saturating_duration_since(Instant::now());
                let mut r = Refusal::new(
                    "extraction",
                    StatusCode::FORBIDDEN,
                    "extraction_banned",
                    "banned: the query pattern looks like model extraction",
                );
                r.headers.push((
                    hyper::header::RETRY_AFTER,
                    HeaderValue::from(wait.as_secs().max(1)),
                ));
                Err(r)
            }
            Some(Penalty::Throttle) => match stage.throttle.check(&key.to_owned()) {
                RateDecision::Allow { .. } => Ok(()),
                RateDecision::Deny { retry_after, .. } => {
                    self.count(metrics, "extraction", "throttled");
                    let mut r = Refusal::new(
                        "extraction",
                        StatusCode::TOO_MANY_REQUESTS,
                        "extraction_throttled",
                        "throttled: the query pattern looks like model extraction",
                    );
                    r.headers.push((
                        hyper::header::RETRY_AFTER,
                        HeaderValue::from(retry_after.as_secs().max(1)),
                    ));
                    Err(r)
                }
            },
        }
    }

    /// A query the schema stage refused, as extraction evidence: one per request however many rows it holds, so a
    /// benign client's one malformed batch weighs as one query.
    pub(super) fn observe_refused(
        &self,
        principal: &str,
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let Some(stage) = &self.extraction else {
            return Ok(());
        };
        let decision = stage.monitor.observe_refused(principal);
        stage.decide(self, principal, &decision, audit, metrics)
    }
}

/// What the detector's search already tells of each row's nearest reference row.
#[derive(Debug)]
pub(super) enum Nearest {
    /// The nearest row of each row as sent.
    Found(Vec<Option<Neighbour>>),
    /// The `k` nearest rows of each row as a sanitiser changed it, nearest first: they hold the answer when the
    /// sanitiser moved the row little, and bound the search otherwise (`Index::nearest_near`).
    Around(Vec<Vec<Neighbour>>),
}

impl Pending<'_> {
    /// Each answered row as extraction evidence, with the class the model gave it; `nearest` is what the detector
    /// found of each row's nearest reference row (without it, they are searched here).
    pub(super) fn observe(
        &self,
        stage: &ExtractionStage,
        scores: &[Vec<f32>],
        nearest: Option<Nearest>,
        audit: &mut DefendAudit,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let d = self.defences;
        let mut last = None;
        let reference = stage.monitor.index();
        let rows = self.sent().chunks_exact(d.width);
        let nearest: Vec<_> = match nearest {
            Some(Nearest::Found(found)) => found,
            Some(Nearest::Around(known)) => rows
                .zip(self.values.chunks_exact(d.width))
                .zip(known)
                .map(|((row, around), known)| reference.nearest_near(row, around, &known))
                .collect(),
            None => rows
                .map(|row| reference.nearest(row, 1, None).into_iter().next())
                .collect(),
        };
        for ((row, s), near) in self.sent().chunks_exact(d.width).zip(scores).zip(nearest) {
            let Some(predicted) = rampart_defend::argmax(s) else {
                continue;
            };
            match stage
                .monitor
                .observe_near(&self.principal, row, predicted, near)
            {
                Ok(decision) => {
                    let worse = last
                        .as_ref()
                        .is_none_or(|l: &extraction::Decision| decision.would >= l.would);
                    if worse {
                        last = Some(decision);
                    }
                }
                Err(err) => return d.undecided("extraction", &err, audit, metrics),
            }
        }
        let Some(decision) = last else {
            return Ok(());
        };
        stage.decide(d, &self.principal, &decision, audit, metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stage whose monitor knows the digits' training rows.
    fn stage() -> ExtractionStage {
        let train = std::fs::File::open(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/digits/train.csv"
        ))
        .unwrap();
        let profile = rampart_defend::profile::Profile::from_csv(train, "label", 5000).unwrap();
        let monitor =
            ExtractionMonitor::new(extraction::ExtractionConfig::default(), &profile).unwrap();
        let rate = crate::config::Rate {
            per_second: 1.0,
            burst: 1,
        };
        ExtractionStage::new(monitor, rate, 16, Duration::from_secs(60), false)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn one_principals_requests_take_turns_without_holding_the_thread() {
        use futures_util::FutureExt as _;
        let stage = stage();
        let first = stage.turn("alice").await.unwrap();
        // Alice's next request waits for the turn; on this one-thread runtime, the timer that ends the wait fires:
        // the thread was not held.
        let waited = tokio::time::timeout(Duration::from_millis(20), stage.turn("alice")).await;
        assert!(
            waited.is_err(),
            "a second turn of one principal while the first is held"
        );
        // Principals whose turn is another go on at once (names hash over 64 turns: most of these do).
        let free = (0..32)
            .filter(|i| stage.turn(&format!("p{i}")).now_or_never().is_some())
            .count();
        assert!(free >= 16, "{free} of 32 other principals could go on");
        // The turn comes when the first ends.
        drop(first);
        assert!(stage.turn("alice").now_or_never().is_some());
    }

    #[test]
    fn a_full_penalty_table_keeps_the_new_penalty_and_the_longest_bans() {
        let now = Instant::now();
        let mut penalties = HashMap::new();
        for i in 0..8 {
            remember(&mut penalties, &format!("t{i}"), Penalty::Throttle, 16);
            let until = now + Duration::from_secs(100 + i);
            remember(&mut penalties, &format!("b{i}"), Penalty::Ban(until), 16);
        }
        assert_eq!(penalties.len(), 16);
        // Full of penalties in force: two throttles go, the new ban comes in.
        remember(
            &mut penalties,
            "thief",
            Penalty::Ban(now + Duration::from_secs(50)),
            16,
        );
        assert_eq!(penalties.len(), 15);
        assert!(penalties.contains_key("thief"));
        assert_eq!(penalties.keys().filter(|k| k.starts_with('b')).count(), 8);
        // Full again, of bans only but one that has run out: that one goes, and nothing else.
        let mut bans: HashMap<String, Penalty> = (0..16)
            .map(|i| {
                (
                    format!("b{i}"),
                    Penalty::Ban(now + Duration::from_secs(10 + i)),
                )
            })
            .collect();
        bans.insert("b0".into(), Penalty::Ban(now));
        remember(&mut bans, "next", Penalty::Throttle, 16);
        assert_eq!(bans.len(), 16);
        assert!(!bans.contains_key("b0") && bans.contains_key("next"));
        // Full of penalties in force: the throttle, then the ban that ends first.
        remember(&mut bans, "last", Penalty::Throttle, 16);
        assert!(!bans.contains_key("next") && !bans.contains_key("b1"));
        assert!(bans.contains_key("last") && bans.contains_key("b2") && bans.contains_key("b15"));
    }
}
