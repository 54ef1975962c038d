//! Extraction detection per principal: PRADA plus the signals PRADA misses, escalating to throttling and bans.
//!
//! - **PRADA** (Juuti et al. 2019): each query's minimum distance to the principal's earlier queries of the same
//!   predicted class joins a set `D` (the query joins the class's growing set when that distance exceeds
//!   `mean(D) - std(D)`); natural queries give a roughly normal `D`, synthetic ones (JBDA) do not, so a Shapiro–Wilk
//!   `W` below `prada_w` flags the principal. Exact repeats (distance 0: retries, caches) are not new information and
//!   are left out of `D`. The threshold is calibrated at start on natural query streams drawn from the training
//!   data's reference sample (its labels standing in for the model's classes): below `prada_w` and below the lowest
//!   `W` any of those streams reaches, less a margin, so a natural client is not flagged for the sample's own
//!   departure from normality.
//! - **off-manifold**: a query whose distance to the training data's reference sample (measured in its principal
//!   coordinates, [`crate::knn`]) exceeds the reference's own leave-one-out 99th percentile is unlike any training
//!   row (noise, synthetic probes). Each signal below is a
//!   binomial test of the principal's count against a base rate measured on the reference, flagged at `alpha`.
//! - **off-support**: a query with a feature outside the values the training data takes (off its range, or off the
//!   lattice of a quantised feature such as 8-bit pixels): synthetic probes (JBDA's `x + λ·sign(∇)`, noise) leave the
//!   lattice, natural inputs do not. An attacker who rounds onto the lattice defeats this one; PRADA still applies.
//! - **near-duplicates**: a query within the reference's 1st-percentile neighbour distance of an earlier distinct
//!   query (augmentation around seeds), both measured in the reference's principal coordinates.
//! - **grid**: a query that differs from the previous distinct one in at most `width / 16` (at least 1) features
//!   (coordinate sweeps, lattice probing).
//! - **volume and coverage** are reported; volume past `max_queries` throttles.
//!
//! A flagged principal is throttled; after `ban_after` more flagged queries (or two signals at once) it is banned.
//! In shadow mode the decision is recorded but the action is always allow.
//!
//! The monitor is shared by the requests of a model: the table of principals takes a lock only to find the principal,
//! and each principal's evidence a lock of its own, so that a long-lived principal's scans of its history (tens of
//! microseconds a distinct query) hold up no one else's observations.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::knn::{block_bounds_unless, Index, Neighbour, Projection, Reference, LANES, MARGIN};
use crate::profile::{FeatureProfile, Profile};
use crate::shapiro::shapiro_wilk;
use crate::stats::{binomial_sf_below, quantile_sorted};
use crate::DefendError;

/// Settings of the extraction monitor.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExtractionConfig {
    /// PRADA flags when Shapiro–Wilk's `W` falls below this (at most; lowered at start below what natural query
    /// streams from the reference reach).
    pub prada_w: f64,
    /// Distances needed before PRADA tests.
    pub prada_min: usize,
    /// Significance of the binomial signals.
    pub alpha: f64,
    /// Queries needed before the binomial signals test.
    pub min_queries: usize,
    /// Queries after which the principal is throttled for volume alone (0: no limit).
    pub max_queries: u64,
    /// Flagged queries after the first before a ban.
    pub ban_after: u64,
    /// Record decisions without acting on them.
    pub shadow: bool,
    /// Most principals tracked (past this, the least recently seen eighth is forgotten at once).
    pub max_principals: usize,
    /// Most queries remembered per principal: in its history, and in PRADA's growing sets together (past it, the
    /// sets grow no more, and each query goes on being measured against what they hold).
    pub max_history: usize,
    /// Memory for the rows remembered across all principals (their histories and PRADA's sets), in MiB. Past it no
    /// principal remembers more rows (each goes on being tested on what it holds), and a new principal makes the least
    /// recently seen eighth be forgotten: many principals' histories cannot exhaust the gateway's memory.
    pub max_memory_mb: usize,
}

impl Default for ExtractionConfig {
    fn default() -> Self {
        ExtractionConfig {
            prada_w: 0.90,
            prada_min: 50,
            alpha: 1e-6,
            min_queries: 20,
            max_queries: 0,
            ban_after: 100,
            shadow: false,
            max_principals: 10_000,
            max_memory_mb: 512,
            max_history: 4096,
        }
    }
}

/// What the gateway does with a principal's request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Serve it.
    Allow,
    /// Slow the principal down (the gateway's rate stage applies a stricter limit).
    Throttle,
    /// Refuse the principal (403) until an operator lifts the ban.
    Ban,
}

/// A reason to suspect extraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// PRADA's normality test failed.
    Prada,
    /// Too many queries unlike the training data.
    OffManifold,
    /// Too many queries with values the training data never takes (off a quantised feature's lattice or range).
    OffSupport,
    /// Too many near-duplicates of earlier queries.
    NearDuplicate,
    /// Too many queries on a grid or sweep.
    Grid,
    /// Past the query quota.
    Volume,
}

/// The decision for one query.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Decision {
    /// What to do (always allow in shadow mode).
    pub action: Action,
    /// What would have been done outside shadow mode.
    pub would: Action,
    /// The signals raised so far for the principal.
    pub signals: Vec<Signal>,
    /// Queries seen from the principal.
    pub queries: u64,
    /// PRADA's latest `W`, when tested.
    pub prada_w: Option<f64>,
    /// Distinct reference rows that were some query's nearest neighbour, as a fraction of the reference.
    pub coverage: f64,
}

/// Base rates measured on the reference sample.
#[derive(Debug, Clone, PartialEq)]
struct Baseline {
    far: f64,
    far_rate: f64,
    support_rate: f64,
    prada_w: f64,
    near: f64,
    near_rate: f64,
    grid_rate: f64,
}

#[derive(Debug, Default)]
struct Principal {
    queries: u64,
    distinct: u64,
    /// The queries remembered, as coordinates only (near duplicates are measured between coordinates).
    history: Rows,
    /// A 128-bit digest of each row in `history`, so that a repeat is found without scanning it.
    seen: std::collections::HashSet<[u8; 16]>,
    growing: HashMap<usize, Rows>,
    /// Rows in `growing`, all classes together.
    grown: usize,
    distances: Vec<f64>,
    /// Sum and sum of squares of `distances`, kept as they change.
    distance_sums: (f64, f64),
    /// How many distances there were at PRADA's last test.
    tested_at: usize,
    off_manifold: u64,
    off_support: u64,
    near_duplicates: u64,
    grid: u64,
    covered: std::collections::HashSet<usize>,
    signals: Vec<Signal>,
    flagged_queries: u64,
    prada_w: Option<f64>,
}

impl Principal {
    /// Rows remembered: the history and PRADA's growing sets.
    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.history.len() + self.grown
    }

    /// What the rows remembered cost against the memory budget, in bytes.
    fn footprint(&self, costs: RowCosts) -> usize {
        self.history.len() * costs.history + self.grown * costs.growing
    }
}

/// A principal's evidence, and when it was last seen (read without its lock, to choose whom to forget).
#[derive(Debug)]
struct Tracked {
    last_seen: AtomicU64,
    state: Mutex<Principal>,
    /// Its rows are given back when it is dropped (forgotten, and no query of it still being observed).
    budget: Arc<Budget>,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        self.budget.give_back(state.footprint(self.budget.costs));
    }
}

/// What one remembered row costs, in bytes: a history row holds its coordinates and its digest in `seen`; a row of
/// PRADA's sets holds its values, its coordinates and at most one anchor. Entries of a hash set count twice their
/// size (the table's spare room).
#[derive(Debug, Clone, Copy)]
struct RowCosts {
    history: usize,
    growing: usize,
}

impl RowCosts {
    /// For rows of `width` values and `coordinates` coordinates.
    fn new(width: usize, coordinates: usize) -> RowCosts {
        let f32s = |n: usize| n * std::mem::size_of::<f32>();
        RowCosts {
            history: f32s(coordinates) + 2 * std::mem::size_of::<[u8; 16]>(),
            growing: f32s(width + coordinates) + 2 * std::mem::size_of::<(usize, usize)>(),
        }
    }
}

/// The bytes a monitor's principals remember, against its memory budget.
#[derive(Debug)]
struct Budget {
    bytes: AtomicUsize,
    max: usize,
    costs: RowCosts,
}

impl Budget {
    fn new(max: usize, costs: RowCosts) -> Budget {
        Budget {
            bytes: AtomicUsize::new(0),
            max,
            costs,
        }
    }

    /// Takes room for one more history row, if there is any.
    fn take_history(&self) -> bool {
        self.take(self.costs.history)
    }

    /// Takes room for one more row of PRADA's sets, if there is any.
    fn take_growing(&self) -> bool {
        self.take(self.costs.growing)
    }

    fn take(&self, cost: usize) -> bool {
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |bytes| {
                bytes.checked_add(cost).filter(|&after| after <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, bytes: usize) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Whether not even one more history row fits.
    fn exhausted(&self) -> bool {
        self.bytes.load(Ordering::Acquire) + self.costs.history > self.max
    }
}

/// The per-principal monitor.
#[derive(Debug)]
pub struct ExtractionMonitor {
    config: ExtractionConfig,
    /// The profile's reference sample, laid out for search.
    index: Index,
    features: Vec<FeatureProfile>,
    baseline: Baseline,
    principals: Mutex<HashMap<String, Arc<Tracked>>>,
    clock: AtomicU64,
    budget: Arc<Budget>,
}

impl ExtractionMonitor {
    /// Builds the monitor over the training data's `profile` and measures the base rates on its reference sample
    /// (leave-one-out), and PRADA's threshold on natural streams drawn from it.
    pub fn new(
        config: ExtractionConfig,
        profile: &Profile,
    ) -> Result<ExtractionMonitor, DefendError> {
        let reference = profile.reference.clone();
        let features = profile.features.clone();
        if features.len() != reference.width {
            return Err(DefendError::Config(format!(
                "the profile has {} features and reference rows of {} values",
                features.len(),
                reference.width
            )));
        }
        if reference.len() < 20 || reference.width == 0 {
            return Err(DefendError::Config(
                "extraction detection needs a reference sample of at least 20 rows of at least one feature; build a profile of the training data".into(),
            ));
        }
        if !(config.alpha > 0.0
            && config.alpha < 0.5
            && config.prada_w > 0.0
            && config.prada_w < 1.0)
            || config.prada_min < 3
            || config.max_principals == 0
            || config.max_history == 0
            || config.max_memory_mb == 0
        {
            return Err(DefendError::Config(
                "extraction settings out of range".into(),
            ));
        }
        let width = reference.width;
        let index = Index::new(&reference);
        let rows: Vec<&[f32]> = reference.rows.chunks_exact(width).collect();
        let mut nn: Vec<f64> = rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                index
                    .nearest(r, 1, Some(i))
                    .first()
                    .map_or(0.0, |n| n.distance)
            })
            .collect();
        nn.sort_by(f64::total_cmp);
        let far = quantile_sorted(&nn, 0.99).unwrap_or(f64::INFINITY);
        let near = quantile_sorted(&nn, 0.01).unwrap_or(0.0);
        let grid_limit = (width / 16).max(1);
        let grid_hits = rows
            .windows(2)
            .filter(|pair| match pair {
                [a, b] => differing(a, b) <= grid_limit,
                _ => false,
            })
            .count();
        let off_support = rows.iter().filter(|r| off_support(&features, r)).count();
        let prada_w = natural_prada_w(&reference, &index, &config);
        // Rates are at least 1% so a small reference cannot make the tests trigger-happy.
        let baseline = Baseline {
            far,
            far_rate: 0.02,
            support_rate: (off_support as f64 / rows.len() as f64).max(0.02),
            prada_w,
            near,
            near_rate: 0.02,
            grid_rate: (grid_hits as f64 / rows.len() as f64).max(0.01),
        };
        tracing::debug!(far, near, prada_w, "extraction baseline measured");
        // Remembered rows hold their coordinates in the index's bounds, and PRADA's their values too.
        let coordinates = index
            .coordinates(reference.rows.get(..width).unwrap_or_default())
            .as_slice()
            .len();
        let budget = Budget::new(
            config.max_memory_mb.saturating_mul(1 << 20),
            RowCosts::new(width, coordinates),
        );
        Ok(ExtractionMonitor {
            config,
            index,
            features,
            baseline,
            principals: Mutex::new(HashMap::new()),
            clock: AtomicU64::new(0),
            budget: Arc::new(budget),
        })
    }

    /// Records one query from `principal` that the model classed as `predicted`, and decides.
    pub fn observe(
        &self,
        principal: &str,
        query: &[f32],
        predicted: usize,
    ) -> Result<Decision, DefendError> {
        let nearest = self.index.nearest(query, 1, None).into_iter().next();
        self.observe_near(principal, query, predicted, nearest)
    }

    /// The reference sample queries are compared with, laid out for search: a caller that shares the monitor behind
    /// a lock finds a query's nearest row in a copy of it, outside the lock, and passes it to
    /// [`ExtractionMonitor::observe_near`].
    pub fn index(&self) -> &Index {
        &self.index
    }

    /// [`ExtractionMonitor::observe`] with the query's nearest reference row already found (`index().nearest(query,
    /// 1, None)`), the costly part of an observation.
    pub fn observe_near(
        &self,
        principal: &str,
        query: &[f32],
        predicted: usize,
        nearest: Option<Neighbour>,
    ) -> Result<Decision, DefendError> {
        if query.len() != self.index.width() || query.iter().any(|v| !v.is_finite()) {
            return Err(DefendError::Input(format!(
                "a query must have {} finite values",
                self.index.width()
            )));
        }
        let tracked = self.tracked(principal);
        let mut state = lock(&tracked.state);
        let state = &mut *state;
        let config = &self.config;
        let baseline = &self.baseline;
        state.queries += 1;
        if let Some(n) = nearest {
            state.covered.insert(n.index);
            if n.distance > baseline.far {
                state.off_manifold += 1;
            }
        }
        if off_support(&self.features, query) {
            state.off_support += 1;
        }
        let digest = row_digest(query);
        let repeat = state.seen.contains(&digest);
        if !repeat {
            state.distinct += 1;
            let at = self.index.coordinates(query);
            if state.history.any_within(&at, baseline.near) {
                state.near_duplicates += 1;
            }
            if let Some(last) = state.history.last() {
                if differing(last, query) <= (query.len() / 16).max(1) {
                    state.grid += 1;
                }
            }
            prada_step(
                state,
                query,
                &at,
                (predicted, nearest.map(|n| n.index)),
                config.max_history,
                &self.budget,
            );
            if state.history.len() < config.max_history && self.budget.take_history() {
                state.history.push(query, &at);
                state.seen.insert(digest);
            }
        }
        Ok(judge(config, baseline, state, principal, self.index.len()))
    }

    /// Records a query from `principal` that was refused before the model saw it because it lies outside the
    /// training data's profile (the gateway's schema stage), and decides. Such a query is off the data's manifold
    /// by definition: it counts as one off-manifold query, and nothing else (it has no predicted class for PRADA and
    /// is not remembered), so refusals alone throttle a principal and ban it only if they go on. A gateway calls
    /// this once per refused request, however many rows it held.
    pub fn observe_refused(&self, principal: &str) -> Decision {
        let tracked = self.tracked(principal);
        let mut state = lock(&tracked.state);
        state.queries += 1;
        state.off_manifold += 1;
        judge(
            &self.config,
            &self.baseline,
            &mut state,
            principal,
            self.index.len(),
        )
    }

    /// `principal`'s evidence, seen now: a new principal starts afresh, and when the table is full the least recently
    /// seen eighth is forgotten first (a query of theirs being observed at that moment is lost with them). The table's
    /// lock is held only for this.
    fn tracked(&self, principal: &str) -> Arc<Tracked> {
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        let mut principals = lock(&self.principals);
        let tracked = match principals.get(principal) {
            Some(tracked) => Arc::clone(tracked),
            None => {
                if principals.len() >= self.config.max_principals || self.budget.exhausted() {
                    crate::evict_oldest(&mut principals, |t| t.last_seen.load(Ordering::Relaxed));
                }
                let tracked = Arc::new(Tracked {
                    last_seen: AtomicU64::new(0),
                    state: Mutex::default(),
                    budget: Arc::clone(&self.budget),
                });
                principals.insert(principal.to_string(), Arc::clone(&tracked));
                tracked
            }
        };
        tracked.last_seen.fetch_max(now, Ordering::Relaxed);
        tracked
    }

    /// Forgets a principal (after an operator lifts a ban).
    pub fn forget(&self, principal: &str) {
        lock(&self.principals).remove(principal);
    }
}

/// A lock whose holder panicked is still used: every update to what it guards is a count or a push, each whole.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The signals the principal's counts raise now, and the action they call for.
fn judge(
    config: &ExtractionConfig,
    baseline: &Baseline,
    state: &mut Principal,
    principal: &str,
    reference_len: usize,
) -> Decision {
    let mut raised = Vec::new();
    let len = state.distances.len();
    if len >= config.prada_min && prada_due(len, state.tested_at) {
        state.tested_at = len;
        let window = len.saturating_sub(5000);
        if let Some(sw) = state.distances.get(window..).and_then(shapiro_wilk) {
            state.prada_w = Some(sw.w);
            if sw.w < baseline.prada_w {
                raised.push(Signal::Prada);
            }
        }
    }
    if state.queries >= config.min_queries as u64 {
        let n = state.queries;
        let d = state.distinct.max(1);
        if binomial_sf_below(state.off_manifold, n, baseline.far_rate, config.alpha) {
            raised.push(Signal::OffManifold);
        }
        if binomial_sf_below(state.off_support, n, baseline.support_rate, config.alpha) {
            raised.push(Signal::OffSupport);
        }
        if binomial_sf_below(state.near_duplicates, d, baseline.near_rate, config.alpha) {
            raised.push(Signal::NearDuplicate);
        }
        if binomial_sf_below(state.grid, d, baseline.grid_rate, config.alpha) {
            raised.push(Signal::Grid);
        }
    }
    if config.max_queries > 0 && state.queries > config.max_queries {
        raised.push(Signal::Volume);
    }
    for s in &raised {
        if !state.signals.contains(s) {
            tracing::info!(principal, signal = ?s, queries = state.queries, "extraction signal raised");
            state.signals.push(*s);
        }
    }
    let would = if state.signals.is_empty() {
        Action::Allow
    } else {
        state.flagged_queries += 1;
        let extraction_signals = state
            .signals
            .iter()
            .filter(|s| **s != Signal::Volume)
            .count();
        if extraction_signals >= 2 || state.flagged_queries > config.ban_after {
            Action::Ban
        } else {
            Action::Throttle
        }
    };
    Decision {
        action: if config.shadow { Action::Allow } else { would },
        would,
        signals: state.signals.clone(),
        queries: state.queries,
        prada_w: state.prada_w,
        coverage: state.covered.len() as f64 / reference_len.max(1) as f64,
    }
}

/// PRADA's update: the minimum distance to the class's growing set joins `D`; the query joins the growing set when
/// that distance exceeds `mean(D) - std(D)` (or the set is empty). `(class, anchor)`: the query's predicted class, and
/// its nearest reference row when known (the set's row that last had it for nearest is measured first, see
/// [`Rows::min_distance`]).
fn prada_step(
    state: &mut Principal,
    query: &[f32],
    at: &Projection,
    (class, anchor): (usize, Option<usize>),
    cap: usize,
    budget: &Budget,
) {
    let room = state.grown < cap;
    let set = state.growing.entry(class).or_insert_with(Rows::with_rows);
    let Some(min) = set.min_distance(query, at, anchor) else {
        if room && budget.take_growing() {
            set.push_anchored(query, at, anchor);
            state.grown += 1;
        }
        return;
    };
    state.distances.push(min);
    state.distance_sums.0 += min;
    state.distance_sums.1 += min * min;
    if state.distances.len() > 10_000 {
        // Bounded memory: PRADA tests the latest 5,000 distances anyway.
        state.distances.drain(..5_000);
        state.distance_sums = state
            .distances
            .iter()
            .fold((0.0, 0.0), |(s, q), d| (s + d, q + d * d));
    }
    // Mean and standard deviation from the running sums: this runs on every query, over up to 10,000 distances.
    let n = state.distances.len() as f64;
    let (sum, squares) = state.distance_sums;
    let mean = sum / n;
    let std = (squares / n - mean * mean).max(0.0).sqrt();
    if min > mean - std && room && budget.take_growing() {
        set.push_anchored(query, at, anchor);
        state.grown += 1;
    }
}

/// Whether any feature of `row` lies off the training data's support by more than f32 representation error.
fn off_support(features: &[FeatureProfile], row: &[f32]) -> bool {
    features.iter().zip(row).any(|(f, &v)| {
        let noise = 1e-5 * (f.max - f.min).abs().max(1e-6);
        f.off_support(f64::from(v)) > noise
    })
}

/// Natural streams simulated for PRADA's threshold, and the queries in each.
const NATURAL_STREAMS: u64 = 64;
const NATURAL_QUERIES: usize = 300;
/// Below the lowest `W` a natural stream reached: slack for the natural clients that were not simulated.
const PRADA_MARGIN: f64 = 0.02;

/// PRADA's threshold: `config.prada_w`, or lower when natural query streams drawn from the reference (shuffled,
/// its labels as the classes) reach a lower `W` once `prada_min` distances are in.
fn natural_prada_w(reference: &Reference, index: &Index, config: &ExtractionConfig) -> f64 {
    let width = reference.width;
    let mut lowest = f64::INFINITY;
    for stream in 0..NATURAL_STREAMS {
        let mut order: Vec<usize> = (0..reference.len()).collect();
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ (stream + 1);
        for i in (1..order.len()).rev() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            order.swap(i, (seed % (i as u64 + 1)) as usize);
        }
        let mut state = Principal::default();
        let unlimited = Budget::new(usize::MAX, RowCosts::new(0, 0));
        for &i in order.iter().take(NATURAL_QUERIES) {
            let (Some(row), Some(&label)) = (
                reference.rows.get(i * width..(i + 1) * width),
                reference.labels.get(i),
            ) else {
                continue;
            };
            prada_step(
                &mut state,
                row,
                &index.coordinates(row),
                (label.max(0) as usize, None),
                config.max_history,
                &unlimited,
            );
            // On the schedule the live test follows.
            let len = state.distances.len();
            if len >= config.prada_min && prada_due(len, state.tested_at) {
                state.tested_at = len;
                if let Some(sw) = shapiro_wilk(&state.distances) {
                    lowest = lowest.min(sw.w);
                }
            }
        }
    }
    let calibrated = config.prada_w.min(lowest - PRADA_MARGIN);
    if calibrated < config.prada_w {
        tracing::debug!(
            configured = config.prada_w,
            calibrated,
            "PRADA's threshold lowered below the natural streams' W"
        );
    }
    calibrated
}

/// Remembered rows, eight to a block and interleaved by feature, so that the distances from a query to eight rows
/// accumulate in one vector: a long-lived principal's history (up to `max_history` rows) is scanned on every query it
/// sends. Each distance is the sum of squares in feature order.
///
/// Each row also keeps its coordinates in the reference index's bounds ([`Index::coordinates`], thirteen numbers on
/// the digits), blocked alike: a block whose eight bounds all exceed what the scan still looks for (a near duplicate,
/// a nearer row than the nearest found) is passed over without its distances. The answers are a full scan's: a bound
/// is lowered by a margin far above its rounding before it excludes anything.
///
/// A set made by `Rows::default()` keeps the coordinates only (the history's near duplicates need no more);
/// [`Rows::with_rows`] keeps the rows too, for their distances.
#[derive(Debug, Default)]
struct Rows {
    /// Whether the rows are kept (in `blocks`), not only their coordinates.
    keeps_rows: bool,
    width: usize,
    blocks: Vec<f32>,
    /// The rows' coordinates, coordinate by coordinate within a block (coordinate `k` of its rows at `k * ROW_LANES`).
    coordinates: Vec<f32>,
    /// Coordinates per row (the same for every row of a monitor).
    per_row: usize,
    /// The largest squared norm of a row's coordinates (for the bounds' margin).
    largest: f32,
    len: usize,
    last: Vec<f32>,
    /// For a reference row, the last row remembered that had it for nearest ([`Rows::push_anchored`]).
    anchors: HashMap<usize, usize>,
}

/// Rows per block of [`Rows`]: one vector of bounds.
const ROW_LANES: usize = LANES;

impl Rows {
    /// A set that keeps its rows, for [`Rows::min_distance`].
    fn with_rows() -> Rows {
        Rows {
            keeps_rows: true,
            ..Rows::default()
        }
    }

    fn len(&self) -> usize {
        self.len
    }

    /// The last row remembered.
    fn last(&self) -> Option<&[f32]> {
        (self.len > 0).then_some(self.last.as_slice())
    }

    /// Remembers `row`, whose coordinates are `at` (every row of one set has the width and the number of
    /// coordinates of the first).
    fn push(&mut self, row: &[f32], at: &Projection) {
        let coordinates = at.as_slice();
        if self.len == 0 {
            self.width = row.len();
            self.per_row = coordinates.len();
        }
        if row.len() != self.width || coordinates.len() != self.per_row {
            return;
        }
        let lane = self.len % ROW_LANES;
        if lane == 0 {
            if self.keeps_rows {
                self.blocks
                    .resize(self.blocks.len() + self.width * ROW_LANES, 0.0);
            }
            self.coordinates
                .resize(self.coordinates.len() + self.per_row * ROW_LANES, 0.0);
        }
        let interleave = |blocks: &mut Vec<f32>, values: &[f32]| {
            let span = values.len() * ROW_LANES;
            if let Some(block) = blocks.chunks_exact_mut(span.max(1)).last() {
                for (column, &v) in block.chunks_exact_mut(ROW_LANES).zip(values) {
                    if let Some(slot) = column.get_mut(lane) {
                        *slot = v;
                    }
                }
            }
        };
        interleave(&mut self.blocks, row);
        interleave(&mut self.coordinates, coordinates);
        self.largest = self.largest.max(at.squared_norm());
        self.len += 1;
        self.last = row.to_vec();
    }

    /// The squared distance from `query` (coordinates `at`) to each remembered row in order, to `visit`, which
    /// returns `None` to stop or the squared distance beyond which no row matters any more (starting from `limit`);
    /// rows that lie beyond it may be passed over unvisited. Whether `visit` stopped.
    fn scan(
        &self,
        query: &[f32],
        at: &Projection,
        mut limit: f32,
        mut visit: impl FnMut(f32) -> Option<f32>,
    ) -> bool {
        let q = at.as_slice();
        if self.len == 0 || !self.keeps_rows || query.len() != self.width || q.len() != self.per_row
        {
            return false;
        }
        let slack = MARGIN * (self.largest + at.squared_norm());
        // In AVX's wider registers where the CPU has them: the same operations in the same order, the same results.
        crate::knn::vectorised(
            #[inline(always)]
            || {
                let mut left = self.len;
                let coordinates = self
                    .coordinates
                    .chunks_exact((self.per_row * ROW_LANES).max(1));
                for (block, bounds) in self
                    .blocks
                    .chunks_exact((self.width * ROW_LANES).max(1))
                    .zip(coordinates)
                {
                    let lanes = left.min(ROW_LANES);
                    left = left.saturating_sub(ROW_LANES);
                    // The bound as the block is excluded by it, a test a larger bound passes too.
                    let beyond = |b: f32| b * (1.0 - MARGIN) - slack > limit;
                    let Some(bounds) = block_bounds_unless(bounds, q, beyond) else {
                        continue;
                    };
                    if bounds.iter().take(lanes).all(|&b| beyond(b)) {
                        continue;
                    }
                    let mut acc = [0.0_f32; ROW_LANES];
                    for (column, &v) in block.chunks_exact(ROW_LANES).zip(query) {
                        for (a, &r) in acc.iter_mut().zip(column) {
                            let d = r - v;
                            *a += d * d;
                        }
                    }
                    for &d in acc.iter().take(lanes) {
                        match visit(d) {
                            Some(next) => limit = next,
                            None => return true,
                        }
                    }
                }
                false
            },
        )
    }

    /// Whether some remembered row lies within distance `near` of the query whose coordinates are `at`, measured as
    /// the reference index measures it (between coordinates, [`crate::knn`]): the distance `near` was taken from.
    fn any_within(&self, at: &Projection, near: f64) -> bool {
        let q = at.as_slice();
        if self.len == 0 || q.len() != self.per_row {
            return false;
        }
        let Some(within) = squared_within(near) else {
            return false;
        };
        // Plain loops: an iterator's adaptor (`any`) may be compiled apart, outside the AVX code.
        crate::knn::vectorised(
            #[inline(always)]
            || {
                let mut left = self.len;
                for block in self
                    .coordinates
                    .chunks_exact((self.per_row * ROW_LANES).max(1))
                {
                    let lanes = left.min(ROW_LANES);
                    left = left.saturating_sub(ROW_LANES);
                    // Every lane tested, then the answer taken: no branch per lane.
                    let Some(bounds) = block_bounds_unless(block, q, |d| d > within) else {
                        continue;
                    };
                    let mut hit = false;
                    for (lane, &d) in bounds.iter().enumerate() {
                        hit |= lane < lanes && (0.0..=within).contains(&d);
                    }
                    if hit {
                        return true;
                    }
                }
                false
            },
        )
    }

    /// [`Rows::push`], and `row`'s nearest reference row (`anchor`) remembered as leading to it.
    fn push_anchored(&mut self, row: &[f32], at: &Projection, anchor: Option<usize>) {
        let before = self.len;
        self.push(row, at);
        if let (Some(anchor), true) = (anchor, self.len > before) {
            self.anchors.insert(anchor, before);
        }
    }

    /// The squared distance from `query` to the remembered row at `position`, summed as [`Rows::scan`] sums it.
    fn squared_distance_to(&self, position: usize, query: &[f32]) -> Option<f32> {
        let span = self.width * ROW_LANES;
        let block = position / ROW_LANES;
        let lane = position % ROW_LANES;
        let block = self.blocks.get(block * span..(block + 1) * span)?;
        let mut sum = 0.0_f32;
        for (column, &v) in block.chunks_exact(ROW_LANES).zip(query) {
            let d = column.get(lane)? - v;
            sum += d * d;
        }
        Some(sum)
    }

    /// The Euclidean distance from `query` (coordinates `at`) to the nearest remembered row; `None` when there is
    /// none (or the rows are not kept). `anchor`: the query's nearest reference row, when known. The row remembered
    /// last with the same nearest reference row is measured first: it is most often the nearest or near it, and its
    /// distance lets the scan pass over most blocks at once. The answer is the scan's either way.
    fn min_distance(&self, query: &[f32], at: &Projection, anchor: Option<usize>) -> Option<f64> {
        let mut best = anchor
            .and_then(|a| self.anchors.get(&a))
            .filter(|_| query.len() == self.width)
            .and_then(|&position| self.squared_distance_to(position, query))
            .filter(|d| !d.is_nan())
            .unwrap_or(f32::INFINITY);
        self.scan(query, at, best, |d| {
            best = best.min(d);
            Some(best)
        });
        (self.len > 0 && self.keeps_rows).then(|| f64::from(best).sqrt())
    }
}

/// The largest squared distance `d` (an `f32`) with `f64::from(d).sqrt() <= near`: a squared distance in `0.0..=d`
/// decides exactly as taking its square root would (a negative one has no root), without the roots (they were the
/// most of a history scan's time). `None` when no distance qualifies (`near` negative or NaN).
fn squared_within(near: f64) -> Option<f32> {
    let qualifies = |d: f32| f64::from(d).sqrt() <= near;
    if !qualifies(0.0) {
        return None;
    }
    // Rounded near the answer; then stepped to it (a step or two at most, as both roundings are within an ulp).
    let mut d = (near * near) as f32;
    while !qualifies(d) {
        d = step_down(d);
    }
    while d < f32::INFINITY && qualifies(step_up(d)) {
        d = step_up(d);
    }
    Some(d)
}

/// The next `f32` above a non-negative, finite `d` (`f32::next_up`, which needs Rust 1.86).
fn step_up(d: f32) -> f32 {
    f32::from_bits(d.to_bits() + 1)
}

/// The next `f32` below a positive `d` (`f32::next_down`).
fn step_down(d: f32) -> f32 {
    f32::from_bits(d.to_bits() - 1)
}

/// Whether PRADA's test is due with `len` distances, the last test having been at `tested` distances: every fourth
/// distance up to 512, then every `len / 32`-th (every 156th once the window holds 5,000). `W` moves slowly, and a
/// Shapiro-Wilk test sorts and weighs up to 5,000 distances: on every query it made a long-lived principal's query cost
/// milliseconds (under the monitor's lock), and every 39th (`len / 128`) still a sixth of what a query costs the
/// monitor. The natural streams that set PRADA's threshold are tested on the same schedule.
fn prada_due(len: usize, tested: usize) -> bool {
    let step = if len <= 512 { 4 } else { len / 32 };
    len < tested || len >= tested + step
}

/// A 128-bit digest of a row's values (`-0.0` as `0.0`, so that rows equal as numbers digest equal).
fn row_digest(row: &[f32]) -> [u8; 16] {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    // One update per block of the hash (16 values) rather than per value: the same bytes, hashed a few times faster.
    let mut bytes = [0u8; 64];
    for values in row.chunks(16) {
        for (out, v) in bytes.chunks_exact_mut(4).zip(values) {
            out.copy_from_slice(&(v + 0.0).to_le_bytes());
        }
        hasher.update(bytes.get(..values.len() * 4).unwrap_or_default());
    }
    let digest = hasher.finalize();
    let mut out = [0u8; 16];
    out.iter_mut().zip(digest.iter()).for_each(|(o, d)| *o = *d);
    out
}

/// How many features differ between two rows.
fn differing(a: &[f32], b: &[f32]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{digits, digits_model};
    use crate::{argmax, predict};

    #[test]
    fn squared_within_decides_as_the_square_root_does() {
        let roots = |d: f32, near: f64| f64::from(d).sqrt() <= near;
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut nears = vec![
            0.0,
            1e-30,
            0.5,
            1.0,
            2.0,
            3.7,
            1e3,
            1e19,
            1e30,
            f64::MAX,
            f64::INFINITY,
        ];
        for _ in 0..300 {
            let uniform = (next() >> 11) as f64 / (1u64 << 53) as f64;
            nears.push(uniform * 100.0);
            // At a squared distance's root, and a hair either side of it: where a rounding would decide wrongly.
            let d = f32::from_bits(((next() >> 40) as u32) % 0x7f00_0000);
            let root = f64::from(d).sqrt();
            let below = if root > 0.0 {
                f64::from_bits(root.to_bits() - 1)
            } else {
                root
            };
            nears.extend([root, root * (1.0 - 1e-12), root * (1.0 + 1e-12), below]);
        }
        for near in nears {
            let within = squared_within(near).unwrap();
            // Every f32 around the boundary, and the extremes.
            let mut ds = vec![
                0.0,
                -0.0,
                f32::MIN_POSITIVE,
                f32::MAX,
                f32::INFINITY,
                f32::NAN,
                within,
            ];
            let (mut below, mut above) = (within, within);
            for _ in 0..4 {
                below = if below > 0.0 {
                    step_down(below)
                } else {
                    -f32::MIN_POSITIVE
                };
                above = if above < f32::INFINITY {
                    step_up(above)
                } else {
                    above
                };
                ds.extend([below, above]);
            }
            ds.extend((0..50).map(|_| f32::from_bits((next() >> 33) as u32)));
            for d in ds {
                assert_eq!(
                    (0.0..=within).contains(&d),
                    roots(d, near),
                    "d {d:e}, near {near:e}"
                );
            }
        }
        // No distance is within a negative or NaN distance.
        assert_eq!(squared_within(-1.0), None);
        assert_eq!(squared_within(f64::NAN), None);
    }

    fn monitor(config: ExtractionConfig) -> ExtractionMonitor {
        let (rows, labels) = digits("train.csv");
        let names: Vec<String> = (0..64).map(|i| format!("px{i}")).collect();
        let profile = Profile::from_rows(&names, "label", &rows, &labels, 5000).unwrap();
        ExtractionMonitor::new(config, &profile).unwrap()
    }

    #[test]
    fn a_profile_without_features_is_refused() {
        let (rows, labels) = digits("train.csv");
        let names: Vec<String> = (0..64).map(|i| format!("px{i}")).collect();
        let mut profile = Profile::from_rows(&names, "label", &rows, &labels, 5000).unwrap();
        profile.features.clear();
        profile.reference.width = 0;
        profile.reference.rows.clear();
        let refused = ExtractionMonitor::new(ExtractionConfig::default(), &profile).unwrap_err();
        assert!(
            refused.to_string().contains("at least one feature"),
            "{refused}"
        );
    }

    fn classes(values: &[f32]) -> Vec<usize> {
        let model = digits_model();
        predict(&model, "input", values.len() / 64, 64, values.to_vec())
            .unwrap()
            .iter()
            .map(|r| argmax(r).unwrap())
            .collect()
    }

    #[test]
    fn a_benign_replay_raises_nothing_and_noise_is_banned_quickly() {
        let m = monitor(ExtractionConfig::default());
        let (test, _) = digits("test.csv");
        let predicted = classes(&test);
        // Replay every test row twice (repeats are not suspicious).
        for round in 0..2 {
            for (row, &c) in test.chunks_exact(64).zip(&predicted) {
                let d = m.observe("benign", row, c).unwrap();
                assert_eq!(d.action, Action::Allow, "round {round}: {d:?}");
            }
        }
        // Pseudo-random uniform noise.
        let mut seed = 12345_u64;
        let mut flagged_at = None;
        for i in 0..200 {
            let row: Vec<f32> = (0..64)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect();
            let c = classes(&row)[0];
            let d = m.observe("thief", &row, c).unwrap();
            if d.action != Action::Allow && flagged_at.is_none() {
                flagged_at = Some(i + 1);
                assert!(d.signals.contains(&Signal::OffManifold));
            }
        }
        let at = flagged_at.unwrap();
        assert!(at <= 25, "flagged after {at} queries");
    }

    #[test]
    fn the_rows_remembered_stay_within_the_memory_budget() {
        // In 1 MiB: a history row of the digits costs 84 bytes (13 coordinates in the index's bounds, 12 directions
        // and the residual's norm, and its digest), a row of PRADA's sets 340 (64 values, 13 coordinates, an anchor).
        let m = monitor(ExtractionConfig {
            max_memory_mb: 1,
            ban_after: u64::MAX,
            ..ExtractionConfig::default()
        });
        assert_eq!((m.budget.costs.history, m.budget.costs.growing), (84, 340));
        let mut uniform = crate::testutil::uniform(7);
        let mut row = || -> Vec<f32> {
            (0..64)
                .map(|_| (uniform() * 17.0).floor().min(16.0) / 16.0)
                .collect()
        };
        for i in 0..4000 {
            m.observe_near("a", &row(), i % 10, None).unwrap();
        }
        let held = |p: &str| {
            lock(&m.principals).get(p).map(|t| {
                let state = lock(&t.state);
                (state.remembered(), state.footprint(m.budget.costs))
            })
        };
        // Its history and PRADA's sets would hold more (4,000 queries each, and 4,096 rows each may hold): the
        // budget stops them, with no room left for another row of either.
        let (rows, bytes) = held("a").unwrap();
        assert!(rows < 8000, "{rows} rows");
        assert_eq!(m.budget.bytes.load(Ordering::Acquire), bytes);
        assert!(bytes <= 1 << 20 && bytes + 84 > 1 << 20, "{bytes} bytes");
        // Still observed and tested, only not remembered.
        assert_eq!(m.observe_near("a", &row(), 0, None).unwrap().queries, 4001);
        assert_eq!(held("a"), Some((rows, bytes)));
        // A newcomer makes the least recently seen go, and their bytes come back.
        m.observe_near("b", &row(), 0, None).unwrap();
        assert!(held("a").is_none());
        let (_, newcomer) = held("b").unwrap();
        assert!(newcomer > 0);
        assert_eq!(m.budget.bytes.load(Ordering::Acquire), newcomer);
    }

    #[test]
    fn pradas_sets_hold_at_most_max_history_rows_together() {
        let m = monitor(ExtractionConfig {
            max_history: 100,
            ban_after: u64::MAX,
            ..ExtractionConfig::default()
        });
        let mut uniform = crate::testutil::uniform(11);
        for i in 0..1000 {
            let row: Vec<f32> = (0..64).map(|_| uniform()).collect();
            m.observe_near("a", &row, i % 10, None).unwrap();
        }
        let principals = lock(&m.principals);
        let state = lock(&principals.get("a").unwrap().state);
        // Noise rows lie far from each other: nearly every one would join its class's set, ten sets of 100 in all.
        let sets: Vec<usize> = state.growing.values().map(Rows::len).collect();
        assert_eq!(sets.iter().sum::<usize>(), 100, "{sets:?}");
        assert_eq!(state.grown, 100);
        assert_eq!(state.history.len(), 100);
        assert_eq!(state.remembered(), 200);
        // Every query past the cap was still measured against the sets.
        assert_eq!(state.distances.len(), 1000 - sets.len());
    }

    #[test]
    fn a_principal_at_work_holds_up_no_other() {
        let m = std::sync::Arc::new(monitor(ExtractionConfig::default()));
        let (test, _) = digits("test.csv");
        let row = test.get(..64).unwrap().to_vec();
        // As if a long-lived principal's history were being scanned.
        let busy = m.tracked("busy");
        let held = lock(&busy.state);
        let (tx, rx) = std::sync::mpsc::channel();
        let (other, query) = (std::sync::Arc::clone(&m), row.clone());
        std::thread::spawn(move || {
            let _ = tx.send(other.observe("other", &query, 0).map(|d| d.action));
        });
        // Only a deadlock fails this: the other principal waits for nothing.
        let action = rx
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("another principal's observation waited for the busy one");
        assert_eq!(action.unwrap(), Action::Allow);
        drop(held);
        assert_eq!(m.observe("busy", &row, 0).unwrap().queries, 1);
    }

    #[test]
    fn a_full_table_forgets_the_least_recently_seen_eighth_in_one_pass() {
        let m = monitor(ExtractionConfig {
            max_principals: 16,
            ..ExtractionConfig::default()
        });
        let (test, _) = digits("test.csv");
        let row = test.get(..64).unwrap();
        let c = classes(row)[0];
        for i in 0..16 {
            m.observe(&format!("p{i}"), row, c).unwrap();
        }
        // p0 is seen again: p1 and p2 are now the least recently seen.
        m.observe("p0", row, c).unwrap();
        m.observe("new", row, c).unwrap();
        let known = |p: &str| lock(&m.principals).contains_key(p);
        assert_eq!(lock(&m.principals).len(), 15);
        assert!(!known("p1") && !known("p2"));
        assert!(known("p0") && known("new"));
        assert!((3..16).all(|i| known(&format!("p{i}"))));
        m.observe("newer", row, c).unwrap();
        assert_eq!(lock(&m.principals).len(), 16);
    }

    #[test]
    fn sweeps_are_grid_flagged_and_shadow_mode_only_records() {
        let m = monitor(ExtractionConfig {
            shadow: true,
            ..ExtractionConfig::default()
        });
        let (test, _) = digits("test.csv");
        let mut row = test.get(..64).unwrap().to_vec();
        let mut last = None;
        for i in 0..64 {
            row[i] = 1.0 - row[i];
            last = Some(m.observe("sweeper", &row, 0).unwrap());
        }
        let d = last.unwrap();
        assert!(d.signals.contains(&Signal::Grid), "{d:?}");
        assert_eq!(d.action, Action::Allow);
        assert_ne!(d.would, Action::Allow);
        assert!(m.observe("x", &[0.0; 3], 0).is_err());
    }

    #[test]
    fn refused_queries_are_evidence_but_occasional_ones_are_not_a_ban() {
        let m = monitor(ExtractionConfig::default());
        let (test, _) = digits("test.csv");
        let predicted = classes(&test);
        // A benign client: 1,000 test rows, one refused (malformed) request in every 50.
        let mut answered = test.chunks_exact(64).zip(&predicted).cycle();
        for i in 0..1000 {
            let d = if i % 50 == 25 {
                m.observe_refused("benign")
            } else {
                let (row, &c) = answered.next().unwrap();
                m.observe("benign", row, c).unwrap()
            };
            assert_eq!(d.would, Action::Allow, "query {i}: {d:?}");
        }
        // A prober every one of whose queries is refused: throttled within `min_queries`, banned if it goes on.
        let mut first = None;
        let mut last = None;
        for i in 0..200 {
            let d = m.observe_refused("prober");
            if d.action != Action::Allow && first.is_none() {
                first = Some((i + 1, d.action));
                assert_eq!(d.signals, vec![Signal::OffManifold]);
            }
            last = Some(d);
        }
        assert_eq!(first, Some((20, Action::Throttle)));
        assert_eq!(last.unwrap().action, Action::Ban);
    }

    #[test]
    fn synthetic_probes_leave_the_lattice_and_prada_is_calibrated_on_natural_streams() {
        let m = monitor(ExtractionConfig::default());
        assert!(m.baseline.prada_w <= 0.90, "{:?}", m.baseline);
        assert!(m.baseline.prada_w > 0.5, "{:?}", m.baseline);
        let (test, _) = digits("test.csv");
        let row = test.get(..64).unwrap();
        assert!(!off_support(&m.features, row));
        let nudged: Vec<f32> = row.iter().map(|v| (v + 0.02).min(1.0)).collect();
        assert!(off_support(&m.features, &nudged));
    }

    #[test]
    fn prada_is_tested_every_fourth_distance_then_every_32nd_of_them() {
        let mut tested = 0;
        let mut at = Vec::new();
        for len in 1..=2000 {
            if prada_due(len, tested) {
                tested = len;
                at.push(len);
            }
        }
        assert_eq!(at.get(..3), Some(&[4, 8, 12][..]));
        assert!(at.contains(&512));
        let after: Vec<usize> = at.iter().copied().filter(|&l| l > 512).collect();
        assert!(after.windows(2).all(|w| {
            let gap = w[1] - w[0];
            gap >= 16 && gap <= w[1] / 32 + 1
        }));
        assert!(after.len() < 60, "{} tests after 512", after.len());
        // A drained history is tested again at once.
        assert!(prada_due(5_001, 10_000));
    }

    #[test]
    fn rows_equal_as_numbers_digest_equal() {
        assert_eq!(row_digest(&[0.0, 1.5]), row_digest(&[-0.0, 1.5]));
        assert_ne!(row_digest(&[0.0, 1.5]), row_digest(&[1.5, 0.0]));
        // The digest is SHA-256 of the values' little-endian bytes in order, however many blocks they fill.
        use sha2::Digest as _;
        for len in [0, 1, 15, 16, 17, 40, 64, 100] {
            let row: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 3.0).collect();
            let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
            let whole = sha2::Sha256::digest(&bytes);
            assert_eq!(row_digest(&row)[..], whole[..16], "{len} values");
        }
    }

    #[test]
    fn remembered_rows_answer_as_a_scan_of_each_row_does() {
        let mut next = crate::testutil::uniform(0x2545_f491_u64);
        // The sum of squares in feature order: the distance the blocks compute.
        let distance = |a: &[f32], b: &[f32]| -> f64 {
            let squared = a
                .iter()
                .zip(b)
                .fold(0.0_f32, |acc, (x, y)| acc + (x - y) * (x - y));
            f64::from(squared).sqrt()
        };
        // Bounds from an index over rows of a few dominant directions (as real data has), so that they pass over
        // most blocks; the remembered rows and the queries come from the same kind of data, at several scales,
        // plus far ones (1,000 times larger) and exact repeats.
        const WIDTH: usize = 20;
        let sample = |next: &mut dyn FnMut() -> f32, scale: f32| -> Vec<f32> {
            let (a, b) = (next() - 0.5, next() - 0.5);
            (0..WIDTH)
                .map(|j| {
                    scale
                        * (a * (j as f32 * 0.3).sin() + b * (j as f32 * 0.7).cos() + 0.05 * next())
                })
                .collect()
        };
        let reference_rows: Vec<f32> = (0..200).flat_map(|_| sample(&mut next, 1.0)).collect();
        let index = Index::new(&Reference {
            width: WIDTH,
            labels: vec![0; 200],
            rows: reference_rows,
        });
        for count in [0_usize, 1, 7, 8, 9, 300] {
            let mut rows = Rows::with_rows();
            let mut all: Vec<Vec<f32>> = Vec::new();
            for i in 0..count {
                let scale = if i % 7 == 0 { 1_000.0 } else { 1.0 };
                let row = sample(&mut next, scale);
                // Rows anchored to five reference rows, so that every anchor leads to some row.
                rows.push_anchored(&row, &index.coordinates(&row), Some(i % 5));
                all.push(row);
            }
            assert_eq!(rows.len(), count);
            assert_eq!(rows.last(), all.last().map(Vec::as_slice));
            for i in 0..40 {
                let query = match (i % 4, all.get(i)) {
                    (0, Some(row)) => row.clone(),
                    (1, _) => sample(&mut next, 1_000.0),
                    _ => sample(&mut next, 1.0),
                };
                let at = index.coordinates(&query);
                let exact: Vec<f64> = all.iter().map(|r| distance(r, &query)).collect();
                let min = exact.iter().copied().reduce(f64::min);
                // Measured first from any anchor (or one that leads nowhere), the nearest is the scan's.
                for anchor in [None, Some(0), Some(3), Some(4), Some(9)] {
                    assert_eq!(rows.min_distance(&query, &at, anchor), min, "{anchor:?}");
                }
                // Near duplicates are measured between coordinates, as the reference index measures distances.
                let apart: Vec<f64> = all
                    .iter()
                    .map(|r| {
                        let c = index.coordinates(r);
                        let d = c
                            .as_slice()
                            .iter()
                            .zip(at.as_slice())
                            .fold(0.0_f32, |d, (v, w)| d + (v - w) * (v - w));
                        f64::from(d).sqrt()
                    })
                    .collect();
                let mut cuts: Vec<f64> = apart.iter().copied().step_by(5).collect();
                cuts.extend(apart.iter().copied().reduce(f64::min).map(|m| m * 1.5));
                for d in cuts {
                    assert!(rows.any_within(&at, d));
                    let below = d * (1.0 - 1e-9);
                    assert_eq!(
                        rows.any_within(&at, below),
                        apart.iter().any(|&e| e <= below)
                    );
                }
            }
            // Once the width is set, a row of another width is neither remembered nor matched.
            if count > 0 {
                let other = [0.5; 3];
                rows.push(&other, &index.coordinates(&other));
                assert_eq!(rows.len(), count);
                assert!(!rows.any_within(&index.coordinates(&other), 1.0));
            }
        }
    }

    #[test]
    fn remembered_rows_pass_over_blocks_their_bounds_exclude() {
        // Rows along one line, one apart: a query between two of them needs the distances of the blocks around it,
        // not of all 100.
        let width = 16;
        let row = |t: f32| -> Vec<f32> { (0..width).map(|j| t * (1.0 + j as f32 * 0.1)).collect() };
        let line: Vec<Vec<f32>> = (-400..400).map(|t| row(t as f32)).collect();
        let index = Index::new(&Reference {
            width,
            labels: vec![0; line.len()],
            rows: line.concat(),
        });
        let mut rows = Rows::with_rows();
        for r in &line {
            rows.push(r, &index.coordinates(r));
        }
        // Half a step from its nearest rows: 0.25 * 52.4 = 13.1 away (squared).
        let query = row(0.5);
        let at = index.coordinates(&query);
        let mut visited = 0;
        let within = rows.scan(&query, &at, 5.0, |d| {
            visited += 1;
            (d > 5.0).then_some(5.0)
        });
        assert!(!within);
        assert!(visited <= 16, "{visited} distances measured");
        // Rows on a line lie within the index's first direction: their coordinates' distances are theirs.
        assert!(rows.any_within(&at, 3.7));
        assert!(!rows.any_within(&at, 3.6));
        assert!((rows.min_distance(&query, &at, None).unwrap() - 13.1_f64.sqrt()).abs() < 1e-4);
    }
}
