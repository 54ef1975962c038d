//! Exact nearest neighbours in a labelled reference set, in the reference's principal coordinates.
//!
//! The reference sets here are thousands of rows, searched on every request the gateway serves, and the detectors
//! ask how near a query lies to the data: to its manifold, not to its pixel noise. So distances are measured
//! between **coordinates**, thirteen numbers per row instead of its 64 or 784 values:
//!
//! - At build, the top principal directions of the reference (subspace iteration on its covariance, then
//!   Gram-Schmidt, so that they are orthonormal whether or not the iteration converged). A row's coordinates are its
//!   projection on them and the norm of its residual (what the projection leaves out): where a row lies along the
//!   data's main directions, and how far off them. The distance between two rows is the Euclidean distance between
//!   their coordinates ([`Index::coordinates`]). It is a lower bound of the distance between the rows (the squared
//!   distance between two rows is that of their projections plus that of their residuals, and the latter is at least
//!   the square of the difference of the residuals' norms), equal to it for data that lie within the directions.
//!   Measured on the digits detectors' benchmark, it detects adversarial inputs as well as the distance between the
//!   rows, or better, and a search reads the coordinates alone, not the rows. The same coordinates bound the distances between
//!   other rows, such as an extraction monitor's memory of a principal's queries.
//! - The rows' coordinates are grouped by label, and each label's rows into cells of at most 128 (halved along the
//!   coordinate of widest spread until that small), in blocks of eight rows laid out coordinate by coordinate: a
//!   search measures a block's eight rows at once, asks the collector once per group how far a row may be, and
//!   offers only the rows within. Groups are searched nearest centroid first, so that the nearest rows are found
//!   early, and a group whose box (the range of its coordinates) lies beyond the collector's bound is passed over
//!   whole (its bound lowered by a margin far above its rounding): small cells have tight boxes, and most are.
//! - A search may start from a row known to be near ([`Index::nearest_from`]): its distance bounds the search from
//!   the first block.
//! - Rows are offered with their index in the reference, and [`KBest`] breaks ties by it, so every answer (ties
//!   included: the earlier row wins) is the one a full scan gives, whatever the order. Every distance is computed the
//!   same way, coordinate after coordinate in `f32`, so a row's distance does not depend on which path measured it.

/// A labelled reference set, such as a profile's sample of the training data.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// Row width.
    pub width: usize,
    /// Rows, flattened.
    pub rows: Vec<f32>,
    /// One label per row.
    pub labels: Vec<i64>,
}

/// One neighbour: its distance and label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Distance to the query: between their coordinates (see the module's documentation).
    pub distance: f64,
    /// The neighbour's label.
    pub label: i64,
    /// The neighbour's row index.
    pub index: usize,
}

impl Reference {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Rows per block of the bounds' layout: one vector of eight `f32` lanes.
pub(crate) const LANES: usize = 8;
/// The most rows in a group (a cell of one label's rows, with its own box).
const CELL: usize = 128;
/// Principal directions of an [`Index`]'s coordinates (fewer when the rows have fewer dimensions).
const DIRECTIONS: usize = 12;
/// Subspace iterations at build: enough for the leading directions of real data. The iteration is deterministic, so
/// the same reference always gets the same coordinates, converged or not.
const ITERATIONS: usize = 40;
/// The relative margin taken off each bound computed otherwise than the distance it bounds (a group's box, the
/// coordinates' bound of two rows' own distance): its rounding error is below 1e-5 of the squared norms involved.
pub(crate) const MARGIN: f32 = 1e-4;

/// What a search keeps: it says how far a row of a label may be to still matter, and is offered the rows within.
pub trait Collector {
    /// A row of `label` at a squared distance above this cannot be kept (`f32::INFINITY` while anything can). It
    /// never rises as rows are offered.
    fn bound(&self, label: i64) -> f32;
    /// A row within [`Collector::bound`]: its squared distance, its index in the reference, its label.
    fn offer(&mut self, squared: f32, index: usize, label: i64);
}

/// The `k` nearest rows by squared distance, nearest first; ties keep the earlier row.
#[derive(Debug, Clone)]
pub struct KBest {
    k: usize,
    items: Vec<(f32, usize, i64)>,
    /// [`KBest::worst`], kept up to date: searches ask for it once per row.
    worst: f32,
}

impl KBest {
    /// Keeps at most `k` rows.
    pub fn new(k: usize) -> KBest {
        KBest {
            k,
            items: Vec::with_capacity(k + 1),
            worst: if k == 0 {
                f32::NEG_INFINITY
            } else {
                f32::INFINITY
            },
        }
    }

    /// The squared distance a row must not exceed to be kept; infinite until `k` rows are kept.
    pub fn worst(&self) -> f32 {
        self.worst
    }

    /// Offers a row.
    pub fn push(&mut self, squared: f32, index: usize, label: i64) {
        // Whether a kept row comes before the offered one: nearer, or as near and earlier.
        let before = |&(x, i, _): &(f32, usize, i64)| x < squared || (x == squared && i < index);
        if self.k == 0 || (self.items.len() == self.k && self.items.last().is_some_and(before)) {
            return;
        }
        // At most `k` rows, and mostly few of them move: an insertion from the back beats a search and a shift.
        if self.items.len() == self.k {
            self.items.pop();
        }
        let mut at = self.items.len();
        self.items.push((squared, index, label));
        while let Some(previous) = at.checked_sub(1).and_then(|p| self.items.get(p).copied()) {
            if before(&previous) {
                break;
            }
            self.items.swap(at - 1, at);
            at -= 1;
        }
        if self.items.len() == self.k {
            self.worst = self.items.last().map_or(f32::INFINITY, |&(d, _, _)| d);
        }
    }

    /// The kept rows: squared distance, row index, label; nearest first.
    pub fn items(&self) -> &[(f32, usize, i64)] {
        &self.items
    }

    /// The kept rows as neighbours, nearest first.
    pub fn neighbours(&self) -> Vec<Neighbour> {
        self.items
            .iter()
            .map(|&(d, index, label)| Neighbour {
                distance: f64::from(d).sqrt(),
                label,
                index,
            })
            .collect()
    }
}

impl Collector for KBest {
    fn bound(&self, _label: i64) -> f32 {
        self.worst()
    }

    fn offer(&mut self, squared: f32, index: usize, label: i64) {
        self.push(squared, index, label);
    }
}

/// A reference set laid out for search (see the module's documentation).
#[derive(Debug, Clone)]
pub struct Index {
    width: usize,
    /// Coordinates per row: the directions, and the residual's norm.
    m: usize,
    /// Each stored row's index in the reference, in search order (by group: a label's cell).
    original: Vec<usize>,
    /// Each reference row's stored position (the inverse of `original`).
    position: Vec<usize>,
    groups: Vec<Group>,
    /// The reference's mean, subtracted before projecting.
    mean: Vec<f64>,
    /// Orthonormal directions, dimension by dimension: the `m` directions' weights of dimension `j` at `j * m ..`.
    weights: Vec<f64>,
    /// The rows' projections in blocks of `LANES` rows of one group: direction `k` of a block's rows at
    /// `k * LANES ..`; a group's last block is padded with copies of its last row (their bounds are ignored).
    projected: Vec<f32>,
    /// The largest squared norm of a row's coordinates (for the margin of a group's box).
    largest: f32,
}

/// A cell of one label's rows: stored rows `start .. start + len`, blocks from `block`.
#[derive(Debug, Clone)]
struct Group {
    label: i64,
    start: usize,
    len: usize,
    block: usize,
    /// The mean of the group's projections: groups are searched nearest first.
    centroid: Vec<f32>,
    /// The smallest and the largest projection on each direction: a box that bounds a whole group at once.
    low: Vec<f32>,
    high: Vec<f32>,
}

impl Index {
    /// Lays out `reference` for search.
    pub fn new(reference: &Reference) -> Index {
        let width = reference.width;
        let n = reference
            .rows
            .len()
            .checked_div(width)
            .unwrap_or(0)
            .min(reference.labels.len());
        let given = reference.rows.get(..n * width).unwrap_or_default();
        let labels = reference.labels.get(..n).unwrap_or_default();
        let mut mean = vec![0.0_f64; width];
        if n > 0 {
            for row in given.chunks_exact(width) {
                for (m, &v) in mean.iter_mut().zip(row) {
                    *m += f64::from(v);
                }
            }
            mean.iter_mut().for_each(|m| *m /= n as f64);
        }
        let directions = principal_directions(given, width, &mean, DIRECTIONS.min(width));
        // The coordinates each row gets: its projection on each direction, and the norm of what they leave out.
        let m = if width == 0 { 0 } else { directions.len() + 1 };
        let weights: Vec<f64> = (0..width)
            .flat_map(|j| {
                directions
                    .iter()
                    .map(move |d| d.get(j).copied().unwrap_or(0.0))
            })
            .collect();
        let projections: Vec<Vec<f32>> = if width == 0 {
            Vec::new()
        } else {
            given
                .chunks_exact(width)
                .map(|row| project(&weights, &mean, row).as_slice().to_vec())
                .collect()
        };
        let largest = projections
            .iter()
            .map(|p| p.iter().map(|v| v * v).sum::<f32>())
            .fold(0.0_f32, f32::max);
        let first = |i: usize| {
            projections
                .get(i)
                .and_then(|p| p.first())
                .copied()
                .unwrap_or(0.0)
        };
        let label_of = |i: usize| labels.get(i).copied().unwrap_or(0);
        let mut order: Vec<usize> = (0..projections.len()).collect();
        order.sort_by(|&a, &b| {
            label_of(a)
                .cmp(&label_of(b))
                .then(first(a).total_cmp(&first(b)))
                .then(a.cmp(&b))
        });
        let mut index = Index {
            width,
            m,
            original: Vec::with_capacity(order.len()),
            position: vec![0; order.len()],
            groups: Vec::new(),
            mean,
            weights,
            projected: Vec::new(),
            largest,
        };
        // Each label's rows in cells: split along their widest coordinate until a cell holds at most `CELL` rows.
        let mut cells = Vec::new();
        let mut at = 0;
        for label_rows in order.chunk_by_mut(|&a, &b| label_of(a) == label_of(b)) {
            let len = label_rows.len();
            split_cells(label_rows, &projections, m, at, &mut cells);
            at += len;
        }
        let mut blocks = 0;
        for group in cells
            .iter()
            .filter_map(|r: &std::ops::Range<usize>| order.get(r.clone()))
        {
            let mut centroid = vec![0.0_f32; m];
            for &i in group {
                if let Some(p) = projections.get(i) {
                    centroid.iter_mut().zip(p).for_each(|(c, &v)| *c += v);
                }
            }
            centroid.iter_mut().for_each(|c| *c /= group.len() as f32);
            let (mut low, mut high) = (vec![f32::INFINITY; m], vec![f32::NEG_INFINITY; m]);
            for p in group.iter().filter_map(|&i| projections.get(i)) {
                for ((l, h), &v) in low.iter_mut().zip(high.iter_mut()).zip(p) {
                    (*l, *h) = (l.min(v), h.max(v));
                }
            }
            index.groups.push(Group {
                label: group.first().map_or(0, |&i| label_of(i)),
                start: index.original.len(),
                len: group.len(),
                block: blocks,
                centroid,
                low,
                high,
            });
            index.original.extend_from_slice(group);
            for block in group.chunks(LANES) {
                blocks += 1;
                for k in 0..m {
                    for lane in 0..LANES {
                        let i = block.get(lane).or(block.last()).copied().unwrap_or(0);
                        let v = projections.get(i).and_then(|p| p.get(k)).copied();
                        index.projected.push(v.unwrap_or(0.0));
                    }
                }
            }
        }
        for (at, &i) in index.original.iter().enumerate() {
            if let Some(p) = index.position.get_mut(i) {
                *p = at;
            }
        }
        index
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.original.len()
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.original.is_empty()
    }

    /// Row width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// `row`'s coordinates, between which this index measures distances. The squared distance between two rows'
    /// coordinates is also a lower bound of theirs (see [`project`]), up to a rounding far below `MARGIN` of their
    /// squared norms: other sets of rows (an extraction monitor's memory of a principal's queries) use them to pass
    /// over rows too far to matter. A row of another width has no coordinate.
    pub(crate) fn coordinates(&self, row: &[f32]) -> Projection {
        if row.len() != self.width {
            return project(&[], &[], row);
        }
        project(&self.weights, &self.mean, row)
    }

    /// Offers `collector` every row it could keep (and perhaps others), with its squared distance to `query` (between
    /// their coordinates) and its index in the reference. A query of another width finds nothing.
    pub fn search(&self, query: &[f32], collector: &mut impl Collector) {
        self.search_at(&self.coordinates(query), collector);
    }

    /// [`Index::search`] for the query whose coordinates are `projection` ([`Index::coordinates`]); coordinates of
    /// another row width find nothing.
    fn search_at(&self, projection: &Projection, collector: &mut impl Collector) {
        vectorised(
            #[inline(always)]
            || self.search_blocks(projection, collector),
        );
    }

    /// The search itself (see [`Index::search_at`]); inlined into each caller, so that it is compiled for the
    /// caller's instruction set.
    #[inline(always)]
    fn search_blocks(&self, projection: &Projection, collector: &mut impl Collector) {
        let q = projection.as_slice();
        let m = self.m;
        if m == 0 || q.len() != m || self.original.is_empty() {
            return;
        }
        // A group's box is measured otherwise than its rows: its bound is lowered by a margin far above the rounding.
        let slack = MARGIN * (self.largest + projection.squared_norm());
        let mut groups: Vec<(f32, &Group)> = self
            .groups
            .iter()
            .map(|g| (squared_distance(&g.centroid, q), g))
            .collect();
        groups.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.start.cmp(&b.1.start)));
        for (_, group) in groups {
            let mut limit = collector.bound(group.label);
            // Every row of the group lies in its box: the box's distance bounds them all.
            let outside: f32 = group
                .low
                .iter()
                .zip(&group.high)
                .zip(q)
                .map(|((&l, &h), &v)| {
                    let d = (l - v).max(v - h).max(0.0);
                    d * d
                })
                .sum();
            if outside * (1.0 - MARGIN) - slack > limit {
                continue;
            }
            let blocks = self
                .projected
                .get(group.block * m * LANES..)
                .unwrap_or_default()
                .chunks_exact(m * LANES);
            for (b, block) in blocks.take(group.len.div_ceil(LANES)).enumerate() {
                let Some(distances) = block_bounds_within(block, q, limit) else {
                    continue;
                };
                // The lanes past the limit, as bits (no branch per lane); a NaN distance (a NaN in the query) is not
                // past it: those rows are offered, and the collector decides, as a full scan would.
                let past = distances
                    .iter()
                    .enumerate()
                    .fold(0_u32, |mask, (lane, &d)| {
                        mask | (u32::from(d > limit) << lane)
                    });
                // The last block's padding lanes (copies of its last row) are past the group's rows.
                let rows = (group.len - b * LANES).min(LANES);
                let mut admitted = !past & ((1 << rows) - 1);
                while admitted != 0 {
                    let lane = admitted.trailing_zeros() as usize;
                    admitted &= admitted - 1;
                    // The limit may have tightened since the mask was taken.
                    let d = distances.get(lane).copied().unwrap_or(f32::NAN);
                    if d <= limit || d.is_nan() {
                        let at = group.start + b * LANES + lane;
                        let index = self.original.get(at).copied().unwrap_or(0);
                        collector.offer(d, index, group.label);
                        limit = collector.bound(group.label);
                    }
                }
            }
        }
    }

    /// The nearest row, as `nearest(query, 1, None)` finds it, searched from `hint`: a reference row known to lie
    /// near `query`, such as the nearest row of a slightly different query (the same input before a sanitiser
    /// changed it). The hint's distance bounds the search from its first block, so most blocks are skipped. A hint
    /// out of range only loses that head start.
    pub fn nearest_from(&self, query: &[f32], hint: usize) -> Option<Neighbour> {
        self.nearest_from_at(&self.coordinates(query), hint)
    }

    /// [`Index::nearest_from`] for the query whose coordinates are `at`.
    fn nearest_from_at(&self, at: &Projection, hint: usize) -> Option<Neighbour> {
        let mut best = KBest::new(1);
        if let Some((d, label)) = self.distance_to(hint, at) {
            // A NaN seed would bound nothing, and the full scan's answer for such a query is its own.
            if !d.is_nan() {
                best.push(d, hint, label);
            }
        }
        self.search_at(at, &mut best);
        best.neighbours().into_iter().next()
    }

    /// The nearest row, as `nearest(query, 1, None)` finds it, given what a search found around a row near
    /// `query` (the same input before a sanitiser changed it): `known` holds `around`'s nearest rows, nearest first,
    /// and every reference row nearer to `around` than the last of them (a detector's `k` nearest).
    ///
    /// `query`'s nearest row lies within `d + 2δ` of `around` (`d`: `around`'s nearest distance; `δ`: the distance
    /// between the two rows; the triangle inequality twice, which holds for the index's distance: it is Euclidean
    /// between coordinates), and so does every row tied with it. When that reach is below the last known distance,
    /// the answer is among `known`, and only those rows are measured; otherwise the search starts from `around`'s
    /// nearest ([`Index::nearest_from`]). Either way the answer is the full scan's, ties included.
    pub fn nearest_near(
        &self,
        query: &[f32],
        around: &[f32],
        known: &[Neighbour],
    ) -> Option<Neighbour> {
        // Each row projected once, for the test, the known rows' distances and the search.
        let at = self.coordinates(query);
        if self.encloses(&at, &self.coordinates(around), known) {
            let mut best = KBest::new(1);
            // A known row this index does not hold (another reference) would leave a hole: search instead.
            let held = known.iter().all(|n| match self.distance_to(n.index, &at) {
                Some((d, label)) => {
                    best.push(d, n.index, label);
                    true
                }
                None => false,
            });
            if held {
                return best.neighbours().into_iter().next();
            }
        }
        match known.first() {
            Some(n) => self.nearest_from_at(&at, n.index),
            None => {
                let mut best = KBest::new(1);
                self.search_at(&at, &mut best);
                best.neighbours().into_iter().next()
            }
        }
    }

    /// Whether `known` must hold the nearest row of the query whose coordinates are `query`, and its ties (see
    /// [`Index::nearest_near`]); `around` are the coordinates of the row `known` was found for. Both sides of the
    /// test keep a relative margin far above the rounding of the distances. Rows of another width have no
    /// coordinates, and fail it.
    fn encloses(&self, query: &Projection, around: &Projection, known: &[Neighbour]) -> bool {
        let (Some(first), Some(last)) = (known.first(), known.last()) else {
            return false;
        };
        let (q, a) = (query.as_slice(), around.as_slice());
        if q.is_empty() || q.len() != self.m || a.len() != self.m {
            return false;
        }
        let margin = f64::from(MARGIN);
        let apart = f64::from(squared_distance(q, a)).sqrt();
        // A NaN (in either row) fails the test: such a query is searched.
        (first.distance + 2.0 * apart) * (1.0 + margin) < last.distance * (1.0 - margin)
    }

    /// The squared distance between the coordinates `at` ([`Index::coordinates`]) and those of the reference's row
    /// `index`, computed by the search's own arithmetic ([`block_bounds`] on the row's block), and the row's label;
    /// `None` for a row it does not hold or coordinates of another width.
    fn distance_to(&self, index: usize, at: &Projection) -> Option<(f32, i64)> {
        let q = at.as_slice();
        if self.m == 0 || q.len() != self.m {
            return None;
        }
        let at = *self.position.get(index)?;
        let group = self
            .groups
            .get(self.groups.partition_point(|g| g.start + g.len <= at))
            .filter(|g| (g.start..g.start + g.len).contains(&at))?;
        let offset = at - group.start;
        let block = self
            .projected
            .get((group.block + offset / LANES) * self.m * LANES..)?
            .get(..self.m * LANES)?;
        let d = block_bounds(block, q).get(offset % LANES).copied()?;
        Some((d, group.label))
    }

    /// The `k` nearest rows, nearest first (ties: the earlier row first); `skip_index` leaves one row out (for
    /// leave-one-out calibration).
    pub fn nearest(&self, query: &[f32], k: usize, skip_index: Option<usize>) -> Vec<Neighbour> {
        struct Skipping {
            best: KBest,
            skip: Option<usize>,
        }
        impl Collector for Skipping {
            fn bound(&self, _label: i64) -> f32 {
                self.best.worst()
            }
            fn offer(&mut self, squared: f32, index: usize, label: i64) {
                if Some(index) != self.skip {
                    self.best.push(squared, index, label);
                }
            }
        }
        let mut collector = Skipping {
            best: KBest::new(k),
            skip: skip_index,
        };
        self.search(query, &mut collector);
        collector.best.neighbours()
    }
}

/// The coordinates of `row` (minus `mean`) in an [`Index`]'s bounds, computed in `f64`: its projection on each of the
/// directions laid out in `weights`, then the norm of its residual (what the projection leaves out). For two rows
/// `x` and `y` with projections `p` and residuals `r`, `|x - y|² = |p(x) - p(y)|² + |r(x) - r(y)|²` (the directions are
/// orthonormal), and `|r(x) - r(y)| >= ||r(x)| - |r(y)||`: the squared distance between two rows' coordinates is a
/// lower bound of theirs, and the residual's term tightens the projection's where the rows' residuals differ.
/// Each direction's sum runs over the dimensions in order; the directions' sums advance side by side, so that they do
/// not wait on each other. A row of no width has no coordinate.
fn project(weights: &[f64], mean: &[f64], row: &[f32]) -> Projection {
    if mean.is_empty() {
        return Projection {
            values: [0.0; DIRECTIONS + 1],
            len: 0,
        };
    }
    let m = (weights.len() / mean.len()).min(DIRECTIONS);
    let mut sums = [0.0_f64; DIRECTIONS + 1];
    let mut norm = 0.0_f64;
    for (j, (&c, &v)) in mean.iter().zip(row).enumerate() {
        let centred = f64::from(v) - c;
        norm += centred * centred;
        let w = weights.get(j * m..(j + 1) * m).unwrap_or_default();
        for (s, &w) in sums.iter_mut().zip(w) {
            *s += w * centred;
        }
    }
    // The residual's squared norm by difference: its rounding (about 1e-16 of `norm`) is far below the search's
    // margin. A NaN stays NaN, so that the row's bounds exclude nothing.
    let kept: f64 = sums.iter().take(m).map(|s| s * s).sum();
    let residual = norm - kept;
    if let Some(r) = sums.get_mut(m) {
        *r = if residual.is_nan() {
            residual
        } else {
            residual.max(0.0).sqrt()
        };
    }
    Projection {
        values: sums.map(|s| s as f32),
        len: m + 1,
    }
}

/// A row's coordinates in an [`Index`]'s bounds ([`project`], [`Index::coordinates`]), on the stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Projection {
    values: [f32; DIRECTIONS + 1],
    len: usize,
}

impl Projection {
    pub(crate) fn as_slice(&self) -> &[f32] {
        self.values.get(..self.len).unwrap_or_default()
    }

    /// The squared norm of the coordinates (for the bounds' margin).
    pub(crate) fn squared_norm(&self) -> f32 {
        self.as_slice().iter().map(|v| v * v).sum()
    }
}

/// Up to `m` orthonormal directions spanning (approximately) the top principal subspace of the centred rows:
/// subspace iteration on the covariance, each round orthonormalised. Directions that vanish (data of lower rank)
/// are dropped: fewer directions only loosen the bound.
fn principal_directions(rows: &[f32], width: usize, mean: &[f64], m: usize) -> Vec<Vec<f64>> {
    if width == 0 || m == 0 {
        return Vec::new();
    }
    let mut cov = vec![vec![0.0_f64; width]; width];
    for row in rows.chunks_exact(width) {
        let centred: Vec<f64> = row
            .iter()
            .zip(mean)
            .map(|(&v, &mu)| f64::from(v) - mu)
            .collect();
        for (ci, &a) in cov.iter_mut().zip(&centred) {
            for (c, &b) in ci.iter_mut().zip(&centred) {
                *c += a * b;
            }
        }
    }
    // Start from the coordinate axes of largest variance, slightly mixed so no start is orthogonal to a direction.
    let mut axes: Vec<usize> = (0..width).collect();
    let variance = |j: usize| cov.get(j).and_then(|r| r.get(j)).copied().unwrap_or(0.0);
    axes.sort_by(|&a, &b| variance(b).total_cmp(&variance(a)).then(a.cmp(&b)));
    let mut basis: Vec<Vec<f64>> = axes
        .iter()
        .take(m)
        .map(|&j| {
            (0..width)
                .map(|i| if i == j { 1.0 } else { 1e-3 / (1.0 + i as f64) })
                .collect()
        })
        .collect();
    basis = orthonormal(basis);
    for _ in 0..ITERATIONS {
        let multiplied: Vec<Vec<f64>> = basis
            .iter()
            .map(|v| {
                cov.iter()
                    .map(|r| r.iter().zip(v).map(|(a, b)| a * b).sum())
                    .collect()
            })
            .collect();
        basis = orthonormal(multiplied);
    }
    basis
}

/// Modified Gram-Schmidt, twice for orthogonality to rounding; drops vectors that vanish.
fn orthonormal(vectors: Vec<Vec<f64>>) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = Vec::with_capacity(vectors.len());
    for mut v in vectors {
        let before = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for _ in 0..2 {
            for u in &out {
                let dot: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
                v.iter_mut().zip(u).for_each(|(x, &y)| *x -= dot * y);
            }
        }
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if norm.is_finite() && norm > 1e-9 * before.max(f64::MIN_POSITIVE) && norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
            out.push(v);
        }
    }
    out
}

/// The squared distances between the coordinates `q` and those of the `LANES` rows of a block laid out coordinate by
/// coordinate (coordinate `k` of the rows at `k * LANES ..`): lower bounds of the rows' squared distances to `q`'s
/// row, before the margin for their rounding (`MARGIN` of the sum of the squared norms of the coordinates).
#[inline(always)]
fn block_bounds(block: &[f32], q: &[f32]) -> [f32; LANES] {
    let mut bounds = [0.0_f32; LANES];
    add_squares(&mut bounds, block.chunks_exact(LANES).zip(q));
    bounds
}

/// Adds to each lane's sum the squared differences of its coordinates, `(column of the lanes, the query's)`, in order.
#[inline(always)]
fn add_squares<'a>(bounds: &mut [f32; LANES], columns: impl Iterator<Item = (&'a [f32], &'a f32)>) {
    for (column, &qk) in columns {
        for (a, &v) in bounds.iter_mut().zip(column) {
            let d = v - qk;
            *a += d * d;
        }
    }
}

/// [`block_bounds`], or `None` as soon as the sums over the first coordinates (the directions of most variance, where
/// most of a distance lies) are all past `limit`: every lane's whole sum would be too, as adding squares never
/// lowers a sum, even rounded. The lanes' sums are the same, to the bit, as [`block_bounds`]'s: the same additions
/// in the same order.
#[inline(always)]
fn block_bounds_within(block: &[f32], q: &[f32], limit: f32) -> Option<[f32; LANES]> {
    // A NaN sum is not past the limit: its row is offered, as a full scan would.
    block_bounds_unless(block, q, |d| d > limit)
}

/// [`block_bounds`], or `None` as soon as the sums over the first coordinates all satisfy `past`, a test that a
/// larger sum satisfies too (the whole sums are at least as large: adding squares never lowers a sum, even rounded).
#[inline(always)]
pub(crate) fn block_bounds_unless(
    block: &[f32],
    q: &[f32],
    past: impl Fn(f32) -> bool,
) -> Option<[f32; LANES]> {
    /// The coordinates summed before the check.
    const FIRST: usize = 6;
    let mut bounds = [0.0_f32; LANES];
    let mut columns = block.chunks_exact(LANES).zip(q);
    add_squares(&mut bounds, columns.by_ref().take(FIRST));
    let mut all = true;
    for &d in &bounds {
        all &= past(d);
    }
    if all {
        return None;
    }
    add_squares(&mut bounds, columns);
    Some(bounds)
}

/// Runs `f` compiled for AVX where the CPU has it, else as compiled (Rust's x86-64 baseline is SSE2): `f`'s vector
/// arithmetic (a search block's eight lanes) in registers twice as wide. The same
/// additions and multiplications in the same order (AVX has no fused multiply-add), so every result is the same
/// to the bit either way.
#[inline(always)]
pub(crate) fn vectorised<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        return with_avx(f);
    }
    f()
}

/// [`vectorised`]'s call of `f` compiled for AVX: `f` must be inlined into it (a closure marked `#[inline(always)]`,
/// calling functions marked so), or it runs as compiled.
#[cfg(target_arch = "x86_64")]
#[allow(
    unsafe_code,
    reason = "calling code compiled for AVX needs unsafe until the caller is compiled for it"
)]
fn with_avx<R>(f: impl FnOnce() -> R) -> R {
    /// # Safety
    /// The CPU must support AVX.
    #[target_feature(enable = "avx")]
    unsafe fn run<R>(f: impl FnOnce() -> R) -> R {
        f()
    }
    // SAFETY: `vectorised` calls this only after `is_x86_feature_detected!("avx")`, `run`'s one requirement.
    unsafe { run(f) }
}

/// Splits `rows` (positions `start ..` of the search order, one label's) into cells of at most `CELL` rows, each
/// a range of the order: rows sorted along the coordinate of widest spread (ties by row), halved at a whole number
/// of blocks, until small enough. A cell's box bounds its rows tighter than the label's box does.
fn split_cells(
    rows: &mut [usize],
    projections: &[Vec<f32>],
    m: usize,
    start: usize,
    cells: &mut Vec<std::ops::Range<usize>>,
) {
    if rows.len() <= CELL {
        cells.push(start..start + rows.len());
        return;
    }
    let value = |i: usize, k: usize| {
        projections
            .get(i)
            .and_then(|p| p.get(k))
            .copied()
            .unwrap_or(0.0)
    };
    let widest = (0..m)
        .map(|k| {
            let (low, high) = rows
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(l, h), &i| {
                    (l.min(value(i, k)), h.max(value(i, k)))
                });
            (high - low, k)
        })
        .fold(
            (f32::NEG_INFINITY, 0),
            |best, c| if c.0 > best.0 { c } else { best },
        )
        .1;
    rows.sort_by(|&a, &b| {
        value(a, widest)
            .total_cmp(&value(b, widest))
            .then(a.cmp(&b))
    });
    let half = (rows.len() / 2).div_ceil(LANES) * LANES;
    let (low, high) = rows.split_at_mut(half.min(rows.len()));
    split_cells(low, projections, m, start, cells);
    split_cells(high, projections, m, start + half, cells);
}

/// Squared Euclidean distance in `f32`, eight lanes at a time (the compiler vectorises the lanes).
pub fn squared_distance(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0_f32; 8];
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (a8.remainder(), b8.remainder());
    for (x, y) in a8.zip(b8) {
        for ((l, &p), &q) in lanes.iter_mut().zip(x).zip(y) {
            let d = p - q;
            *l += d * d;
        }
    }
    let tail: f32 = ra.iter().zip(rb).map(|(&p, &q)| (p - q) * (p - q)).sum();
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_sorts_and_skips() {
        let r = Reference {
            width: 2,
            rows: vec![0.0, 0.0, 3.0, 4.0, 1.0, 0.0],
            labels: vec![0, 1, 2],
        };
        let index = Index::new(&r);
        let n = index.nearest(&[0.0, 0.0], 2, None);
        assert_eq!((n[0].label, n[1].label), (0, 2));
        // Rows within the directions: the coordinates' distance is the rows', up to rounding.
        assert!((n[1].distance - 1.0).abs() < 1e-5, "{}", n[1].distance);
        let n = index.nearest(&[0.0, 0.0], 5, Some(0));
        assert_eq!(n.iter().map(|x| x.label).collect::<Vec<_>>(), vec![2, 1]);
        assert!((n[1].distance - 5.0).abs() < 1e-5, "{}", n[1].distance);
    }

    #[test]
    fn the_distance_is_the_rows_within_the_directions_and_a_lower_bound_beyond() {
        // Rows in a 5-dimensional subspace of 40 dimensions: the directions hold them, the distances are the rows'.
        let mut next = crate::testutil::uniform(0x5eed_u64);
        let basis: Vec<Vec<f32>> = (0..5)
            .map(|_| (0..40).map(|_| next() - 0.5).collect())
            .collect();
        let mut flat = Reference {
            width: 40,
            rows: Vec::new(),
            labels: Vec::new(),
        };
        for i in 0..200 {
            let weights: Vec<f32> = (0..5).map(|_| 2.0 * next() - 1.0).collect();
            flat.rows.extend((0..40).map(|j| {
                basis
                    .iter()
                    .zip(&weights)
                    .map(|(b, w)| b[j] * w)
                    .sum::<f32>()
            }));
            flat.labels.push(i % 2);
        }
        let index = Index::new(&flat);
        for (i, q) in flat.rows.chunks_exact(40).take(30).enumerate() {
            for n in index.nearest(q, 4, Some(i)) {
                let row = &flat.rows[n.index * 40..(n.index + 1) * 40];
                let exact = f64::from(squared_distance(row, q)).sqrt();
                assert!(
                    (n.distance - exact).abs() <= 1e-4 * exact.max(1.0),
                    "{} {exact}",
                    n.distance
                );
            }
        }
        // Noise in 64 dimensions, far more than the directions hold: never beyond the rows' own distance.
        let noise = sample(8, 300, 64, 16);
        let index = Index::new(&noise);
        for (i, q) in noise.rows.chunks_exact(64).take(30).enumerate() {
            for n in index.nearest(q, 10, Some(i)) {
                let row = &noise.rows[n.index * 64..(n.index + 1) * 64];
                let exact = f64::from(squared_distance(row, q)).sqrt();
                assert!(n.distance <= exact * (1.0 + 1e-4), "{} {exact}", n.distance);
            }
        }
    }

    /// The squared distance between two rows' coordinates, one coordinate after the other from the first.
    fn coordinate_distance(index: &Index, row: &[f32], q: &[f32]) -> f32 {
        let (a, b) = (index.coordinates(row), index.coordinates(q));
        a.as_slice()
            .iter()
            .zip(b.as_slice())
            .fold(0.0_f32, |d, (v, w)| d + (v - w) * (v - w))
    }

    /// Brute force in the reference's row order: every distance, sorted by (distance, row).
    fn brute(r: &Reference, q: &[f32]) -> Vec<(f32, usize)> {
        let index = Index::new(r);
        let mut all: Vec<(f32, usize)> = r
            .rows
            .chunks_exact(r.width)
            .enumerate()
            .map(|(i, row)| (coordinate_distance(&index, row, q), i))
            .collect();
        all.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        all
    }

    fn sample(seed: u64, rows: usize, width: usize, levels: u64) -> Reference {
        let mut s = seed | 1;
        let mut next = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let mut rows_out = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..rows {
            let label = (next() % 4) as i64;
            for j in 0..width {
                // Few levels so that ties and duplicate rows occur; per-label offsets on some dimensions.
                let base = (next() % levels) as f32 / levels as f32;
                rows_out.push(if j % 5 == 0 {
                    base + label as f32
                } else {
                    base
                });
            }
            labels.push(label);
        }
        Reference {
            width,
            rows: rows_out,
            labels,
        }
    }

    /// `base` with its first `count` rows appended again under the label `flip - label`: duplicate rows under two
    /// labels, so that ties cross groups.
    fn with_twins(base: &Reference, count: usize, flip: i64) -> Reference {
        let mut r = base.clone();
        for (row, &label) in base
            .rows
            .chunks_exact(base.width)
            .zip(&base.labels)
            .take(count)
        {
            r.rows.extend_from_slice(row);
            r.labels.push(flip - label);
        }
        r
    }

    #[test]
    fn index_matches_brute_force_with_ties() {
        // Levels of 1/2^n keep every sum exact, so ties are real ties in any summation order.
        for (seed, n, width, levels) in [
            (1, 300, 64, 4),
            (2, 37, 7, 2),
            (3, 8, 16, 8),
            (4, 1, 3, 4),
            (5, 129, 33, 16),
        ] {
            let r = sample(seed, n, width, levels);
            let index = Index::new(&r);
            assert_eq!(index.len(), n);
            for qi in 0..20u64 {
                let q: Vec<f32> = sample(seed * 100 + qi, 1, width, levels).rows;
                let expect = brute(&r, &q);
                for k in [1, 3, 10, n + 2] {
                    let got: Vec<usize> =
                        index.nearest(&q, k, None).iter().map(|x| x.index).collect();
                    let want: Vec<usize> = expect.iter().take(k).map(|x| x.1).collect();
                    assert_eq!(got, want, "seed {seed} query {qi} k {k}");
                }
                let skip = expect.first().map(|x| x.1);
                let got: Vec<usize> = index.nearest(&q, 2, skip).iter().map(|x| x.index).collect();
                let want: Vec<usize> = expect
                    .iter()
                    .filter(|x| Some(x.1) != skip)
                    .take(2)
                    .map(|x| x.1)
                    .collect();
                assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn index_prunes_per_label_exactly() {
        struct PerLabel(Vec<KBest>);
        impl Collector for PerLabel {
            fn bound(&self, label: i64) -> f32 {
                self.0
                    .get(label as usize)
                    .map_or(f32::NEG_INFINITY, KBest::worst)
            }
            fn offer(&mut self, squared: f32, index: usize, label: i64) {
                if let Some(best) = self.0.get_mut(label as usize) {
                    best.push(squared, index, label);
                }
            }
        }
        let r = sample(9, 500, 64, 4);
        let index = Index::new(&r);
        let q = sample(77, 1, 64, 4).rows;
        let mut per = PerLabel((0..4).map(|_| KBest::new(5)).collect());
        index.search(&q, &mut per);
        let expect = brute(&r, &q);
        for (label, best) in per.0.iter().enumerate() {
            let got: Vec<usize> = best.items().iter().map(|x| x.1).collect();
            let want: Vec<usize> = expect
                .iter()
                .filter(|x| r.labels[x.1] == label as i64)
                .take(5)
                .map(|x| x.1)
                .collect();
            assert_eq!(got, want, "label {label}");
        }
    }

    #[test]
    fn index_groups_of_every_size_answer_as_a_full_scan() {
        // Labels out of order, groups of 1 to 19 rows (most not a whole number of blocks), and a duplicate of each
        // row under another label: ties across groups must still go to the earlier row.
        let base = sample(11, 95, 12, 2);
        let mut r = Reference {
            width: 12,
            rows: Vec::new(),
            labels: Vec::new(),
        };
        let mut label = 0_i64;
        let mut left = 0;
        for (i, row) in base.rows.chunks_exact(12).enumerate() {
            if left == 0 {
                label = (label * 7 + 3) % 13;
                left = 1 + i % 19;
            }
            left -= 1;
            r.rows.extend_from_slice(row);
            r.labels.push(label);
            r.rows.extend_from_slice(row);
            r.labels.push(12 - label);
        }
        let index = Index::new(&r);
        assert_eq!(index.len(), r.labels.len());
        for seed in 0..20 {
            let q = sample(100 + seed, 1, 12, 2).rows;
            let expect = brute(&r, &q);
            for k in [1, 3, 8] {
                let got: Vec<usize> = index.nearest(&q, k, None).iter().map(|x| x.index).collect();
                let want: Vec<usize> = expect.iter().take(k).map(|x| x.1).collect();
                assert_eq!(got, want, "seed {seed} k {k}");
            }
        }
    }

    #[test]
    fn nearest_from_any_hint_is_the_nearest() {
        // Duplicate rows under two labels, as above; every row as the hint, and one out of range: the answer is
        // always the full scan's, ties included (quarters: the distances are exact, so ties are real).
        let r = with_twins(&sample(5, 60, 16, 4), 20, 2);
        let index = Index::new(&r);
        for seed in 0..6 {
            let q = sample(200 + seed, 1, 16, 4).rows;
            let want = brute(&r, &q).first().map(|x| x.1);
            assert_eq!(index.nearest(&q, 1, None).first().map(|n| n.index), want);
            for hint in 0..=r.labels.len() {
                let got = index.nearest_from(&q, hint);
                assert_eq!(got.map(|n| n.index), want, "seed {seed} hint {hint}");
                let label = got.map(|n| n.label);
                assert_eq!(label, want.map(|i| r.labels[i]), "seed {seed} hint {hint}");
            }
        }
        // A duplicate of a row whose later twin is the hint: the earlier row still wins the tie.
        let twin = r.rows[..16].to_vec();
        assert_eq!(index.nearest_from(&twin, 60).map(|n| n.index), Some(0));
    }

    #[test]
    fn nearest_near_answers_as_a_full_scan_from_what_was_found_around() {
        // Duplicate rows under two labels (ties across groups); `around` rows moved from the query by a sixteenth
        // to a whole unit on a few dimensions, so that the known rows hold the answer for small moves and not for
        // large ones; k from 1 to more than the reference.
        let r = with_twins(&sample(21, 80, 16, 4), 25, 3);
        let index = Index::new(&r);
        let (mut enclosed, mut searched) = (0, 0);
        for seed in 0..12 {
            let q = sample(300 + seed, 1, 16, 4).rows;
            let want = brute(&r, &q).first().map(|x| x.1);
            for (step, moved) in [(0.0625, 1), (0.0625, 3), (0.25, 2), (1.0, 4)] {
                let mut around = q.clone();
                for j in 0..moved {
                    around[(j * 5 + seed as usize) % 16] += step;
                }
                for k in [1, 2, 5, 12, r.labels.len() + 3] {
                    let known = index.nearest(&around, k, None);
                    if index.encloses(&index.coordinates(&q), &index.coordinates(&around), &known) {
                        enclosed += 1;
                    } else {
                        searched += 1;
                    }
                    let got = index.nearest_near(&q, &around, &known);
                    assert_eq!(got.map(|n| n.index), want, "seed {seed} step {step} k {k}");
                    assert_eq!(got.map(|n| n.label), want.map(|i| r.labels[i]));
                }
            }
            // Nothing known: a search of its own.
            assert_eq!(index.nearest_near(&q, &q, &[]).map(|n| n.index), want);
        }
        assert!(
            enclosed > 50 && searched > 50,
            "{enclosed} answered from the known rows, {searched} searched"
        );
        // A query on a row duplicated under another label, around itself: the earlier twin wins the tie.
        let twin = r.rows[..16].to_vec();
        let known = index.nearest(&twin, 5, None);
        assert!(index.encloses(&index.coordinates(&twin), &index.coordinates(&twin), &known));
        assert_eq!(
            index.nearest_near(&twin, &twin, &known).map(|n| n.index),
            Some(0)
        );
        // A NaN is searched, never answered from the known rows.
        let mut nan = twin.clone();
        nan[3] = f32::NAN;
        assert!(!index.encloses(&index.coordinates(&nan), &index.coordinates(&twin), &known));
        // The reach is `d + 2δ`, no less. On a line, around 0 and the query at 0.4: around's two nearest rows are
        // at -0.5 and -1.15, beyond `d + 1.5δ` = 1.1, yet the query's nearest row is the one at 1.2.
        let line = Index::new(&Reference {
            width: 1,
            rows: vec![-0.5, -1.15, 1.2],
            labels: vec![0, 1, 2],
        });
        let known = line.nearest(&[0.0], 2, None);
        assert_eq!(
            known.iter().map(|n| n.index).collect::<Vec<_>>(),
            vec![0, 1]
        );
        assert!(!line.encloses(&line.coordinates(&[0.4]), &line.coordinates(&[0.0]), &known));
        assert_eq!(
            line.nearest_near(&[0.4], &[0.0], &known).map(|n| n.index),
            Some(2)
        );
    }

    #[test]
    fn index_of_another_width_finds_nothing() {
        let r = sample(3, 10, 4, 4);
        assert!(Index::new(&r).nearest(&[0.0; 3], 2, None).is_empty());
        assert!(Index::new(&Reference {
            width: 0,
            rows: vec![],
            labels: vec![]
        })
        .nearest(&[], 1, None)
        .is_empty());
    }

    #[test]
    fn index_matches_a_full_scan_on_continuous_and_degenerate_data() {
        let mut next = crate::testutil::uniform(0x9e37_79b9_u64);
        let scan = |r: &Reference, q: &[f32], k: usize| -> Vec<usize> {
            brute(r, q).into_iter().take(k).map(|x| x.1).collect()
        };
        for (n, width, kind) in [
            (400, 64, "spread"),
            (300, 64, "rank one"),
            (50, 20, "constant"),
            (90, 5, "spread"),
        ] {
            let mut rows = Vec::new();
            for i in 0..n {
                let t = next();
                for j in 0..width {
                    rows.push(match kind {
                        "rank one" => t * (j as f32 + 1.0),
                        "constant" => 0.5,
                        // Correlated dimensions, as in images, plus duplicates every tenth row.
                        _ if i % 10 == 9 => rows.get((i - 1) * width + j).copied().unwrap_or(0.0),
                        _ => t + 0.3 * next() + 0.01 * j as f32,
                    });
                }
            }
            let r = Reference {
                width,
                rows,
                labels: (0..n as i64).map(|i| i % 3).collect(),
            };
            let index = Index::new(&r);
            for _ in 0..25 {
                let q: Vec<f32> = (0..width).map(|_| 1.2 * next()).collect();
                for k in [1, 5, 17] {
                    let got: Vec<usize> =
                        index.nearest(&q, k, None).iter().map(|x| x.index).collect();
                    assert_eq!(got, scan(&r, &q, k), "{kind} k {k}");
                }
            }
            // A reference row as the query: itself first, then its duplicates, in row order.
            let q = r
                .rows
                .get(9 * width..10 * width)
                .unwrap_or_default()
                .to_vec();
            let got: Vec<usize> = index.nearest(&q, 3, None).iter().map(|x| x.index).collect();
            assert_eq!(got, scan(&r, &q, 3), "{kind} self");
        }
    }
}
