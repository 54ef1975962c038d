//! Exact nearest neighbours in a labelled reference set.
//!
//! The reference sets here are thousands of rows, searched on every request the gateway serves, so the search is
//! brute force made cheap rather than a tree (trees lose to a scan at 64 dimensions):
//!
//! - [`Index`] stores the rows in blocks of [`LANES`] rows interleaved dimension by dimension, so that eight distances
//!   accumulate in one vector with no horizontal sum per row, and the dimensions in order of falling variance, so
//!   that a partial distance grows quickly.
//! - Every [`STEP`] dimensions a block whose eight partial distances all exceed what the caller could still keep is
//!   abandoned (partial distance search). Partial sums of squares only grow, so this is exact: the answer is the one
//!   a full scan gives, ties included (the earlier row wins).
//! - Rows are sorted by label, so that a block is one class and a caller that keeps the nearest rows per class (the
//!   detector) prunes with that class's bound.

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

/// One neighbour: its Euclidean distance and label.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Neighbour {
    /// Euclidean distance to the query.
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

    /// All distances from `query` to the reference rows, in row order.
    pub fn distances(&self, query: &[f32]) -> Vec<Neighbour> {
        if self.width == 0 {
            return Vec::new();
        }
        self.rows
            .chunks_exact(self.width)
            .zip(&self.labels)
            .enumerate()
            .map(|(index, (row, &label))| Neighbour {
                distance: euclidean(row, query),
                label,
                index,
            })
            .collect()
    }

    /// The `k` nearest rows, nearest first (ties: the earlier row first); `skip_index` leaves one row out (for
    /// leave-one-out calibration). One pass, no allocation beyond the `k` answers.
    pub fn nearest(&self, query: &[f32], k: usize, skip_index: Option<usize>) -> Vec<Neighbour> {
        if self.width == 0 || k == 0 {
            return Vec::new();
        }
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        for (index, row) in self.rows.chunks_exact(self.width).enumerate() {
            if Some(index) == skip_index {
                continue;
            }
            let d = squared_distance(row, query);
            if best.len() == k && best.last().is_some_and(|&(w, _)| d >= w) {
                continue;
            }
            let at = best.partition_point(|&(x, _)| x <= d);
            best.insert(at, (d, index));
            best.truncate(k);
        }
        best.into_iter()
            .map(|(d, index)| Neighbour {
                distance: f64::from(d).sqrt(),
                label: self.labels.get(index).copied().unwrap_or(0),
                index,
            })
            .collect()
    }
}

/// Rows per block of an [`Index`]: one vector of eight `f32` distances.
pub const LANES: usize = 8;
/// Dimensions between two pruning checks.
pub const STEP: usize = 16;

/// What a search keeps: it says how far a row of a label may be to still matter, and is offered the rows within.
pub trait Collector {
    /// A row of `label` at a squared distance above this cannot be kept (`f32::INFINITY` while anything can).
    fn bound(&self, label: i64) -> f32;
    /// A row within [`Collector::bound`]: its squared distance, its index in the reference, its label.
    fn offer(&mut self, squared: f32, index: usize, label: i64);
}

/// The `k` nearest rows by squared distance, nearest first; ties keep the earlier row.
#[derive(Debug, Clone)]
pub struct KBest {
    k: usize,
    items: Vec<(f32, usize, i64)>,
}

impl KBest {
    /// Keeps at most `k` rows.
    pub fn new(k: usize) -> KBest {
        KBest {
            k,
            items: Vec::with_capacity(k + 1),
        }
    }

    /// The squared distance a row must not exceed to be kept; infinite until `k` rows are kept.
    pub fn worst(&self) -> f32 {
        match self.items.last() {
            Some(&(d, _, _)) if self.items.len() == self.k => d,
            _ if self.k == 0 => f32::NEG_INFINITY,
            _ => f32::INFINITY,
        }
    }

    /// Offers a row.
    pub fn push(&mut self, squared: f32, index: usize, label: i64) {
        if self.k == 0 {
            return;
        }
        if self.items.len() == self.k
            && self
                .items
                .last()
                .is_some_and(|&(w, i, _)| squared > w || (squared == w && index > i))
        {
            return;
        }
        let at = self
            .items
            .partition_point(|&(x, i, _)| x < squared || (x == squared && i < index));
        self.items.insert(at, (squared, index, label));
        self.items.truncate(self.k);
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
    /// The query's dimensions in search order: highest variance first.
    order: Vec<usize>,
    /// Per block, `width × LANES` values: dimension `order[j]` of the block's rows at `j * LANES ..`.
    blocks: Vec<f32>,
    /// Per slot (block × LANES + lane): the row's index in the reference and its label; `None` pads the last block.
    slots: Vec<Option<(usize, i64)>>,
    len: usize,
}

impl Index {
    /// Lays out `reference` for search.
    pub fn new(reference: &Reference) -> Index {
        let width = reference.width;
        let rows: Vec<&[f32]> = if width == 0 {
            Vec::new()
        } else {
            reference.rows.chunks_exact(width).collect()
        };
        let n = rows.len().min(reference.labels.len());
        let mut order: Vec<usize> = (0..width).collect();
        let variance: Vec<f64> = (0..width)
            .map(|j| {
                let values = rows.iter().filter_map(|r| r.get(j)).map(|&v| f64::from(v));
                let (count, sum, sq) =
                    values.fold((0.0, 0.0, 0.0), |(c, s, q), v| (c + 1.0, s + v, q + v * v));
                if count > 0.0 {
                    sq / count - (sum / count) * (sum / count)
                } else {
                    0.0
                }
            })
            .collect();
        order.sort_by(|&a, &b| {
            let (va, vb) = (variance.get(a), variance.get(b));
            vb.partial_cmp(&va)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b))
        });
        let mut sorted: Vec<(usize, i64)> = reference
            .labels
            .iter()
            .copied()
            .enumerate()
            .take(n)
            .collect();
        sorted.sort_by_key(|&(i, label)| (label, i));
        let mut blocks = Vec::with_capacity(sorted.len().div_ceil(LANES) * LANES * width);
        let mut slots = Vec::with_capacity(sorted.len().div_ceil(LANES) * LANES);
        for chunk in sorted.chunks(LANES) {
            for &j in &order {
                for lane in 0..LANES {
                    let value = chunk
                        .get(lane)
                        .and_then(|&(i, _)| rows.get(i))
                        .and_then(|r| r.get(j))
                        .copied()
                        .unwrap_or(0.0);
                    blocks.push(value);
                }
            }
            for lane in 0..LANES {
                slots.push(chunk.get(lane).copied());
            }
        }
        Index {
            width,
            order,
            blocks,
            slots,
            len: n,
        }
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no row.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Row width.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Offers `collector` every row it could keep (and perhaps others), with its exact squared distance to `query`.
    /// A query of another width finds nothing.
    pub fn search(&self, query: &[f32], collector: &mut impl Collector) {
        if self.width == 0 || query.len() != self.width {
            return;
        }
        let q: Vec<f32> = self
            .order
            .iter()
            .filter_map(|&j| query.get(j))
            .copied()
            .collect();
        let span = self.width * LANES;
        for (block, slots) in self
            .blocks
            .chunks_exact(span)
            .zip(self.slots.chunks_exact(LANES))
        {
            // Bounds only fall as rows are kept, so the bound at the block's start is safe for all of it.
            let mut bound = f32::NEG_INFINITY;
            let mut last = None;
            for &(_, label) in slots.iter().flatten() {
                if last != Some(label) {
                    bound = bound.max(collector.bound(label));
                    last = Some(label);
                }
            }
            let mut acc = [0.0_f32; LANES];
            let mut abandoned = false;
            for (part, qs) in block.chunks(STEP * LANES).zip(q.chunks(STEP)) {
                for (column, &qj) in part.chunks_exact(LANES).zip(qs) {
                    for (a, &v) in acc.iter_mut().zip(column) {
                        let d = v - qj;
                        *a += d * d;
                    }
                }
                if acc.iter().all(|&a| a > bound) {
                    abandoned = true;
                    break;
                }
            }
            if abandoned {
                continue;
            }
            for (&d, slot) in acc.iter().zip(slots) {
                if let Some((index, label)) = *slot {
                    // A NaN distance (a NaN in the query) is offered: the collector decides, as a full scan would.
                    if d.is_nan() || d <= collector.bound(label) {
                        collector.offer(d, index, label);
                    }
                }
            }
        }
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

/// Euclidean distance in `f64`.
pub fn euclidean(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum::<f64>()
        .sqrt()
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
        let n = r.nearest(&[0.0, 0.0], 2, None);
        assert_eq!((n[0].label, n[1].label), (0, 2));
        assert_eq!(n[1].distance, 1.0);
        let n = r.nearest(&[0.0, 0.0], 5, Some(0));
        assert_eq!(n.iter().map(|x| x.label).collect::<Vec<_>>(), vec![2, 1]);
        assert_eq!(n[1].distance, 5.0);
    }

    /// Brute force in the reference's row order: every distance, sorted by (distance, row).
    fn brute(r: &Reference, q: &[f32]) -> Vec<(f32, usize)> {
        let mut all: Vec<(f32, usize)> = r
            .rows
            .chunks_exact(r.width)
            .enumerate()
            .map(|(i, row)| {
                (
                    row.iter()
                        .zip(q)
                        .map(|(a, b)| (a - b) * (a - b))
                        .sum::<f32>(),
                    i,
                )
            })
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
}
