//! Exact nearest neighbours in a labelled reference set (brute force: the reference sets here are thousands of rows).

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
}
