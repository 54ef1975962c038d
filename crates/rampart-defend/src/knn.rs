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

    /// The `k` nearest rows, nearest first; `skip_index` leaves one row out (for leave-one-out calibration).
    pub fn nearest(&self, query: &[f32], k: usize, skip_index: Option<usize>) -> Vec<Neighbour> {
        let mut all: Vec<Neighbour> = self
            .distances(query)
            .into_iter()
            .filter(|n| Some(n.index) != skip_index)
            .collect();
        let k = k.min(all.len());
        if k == 0 {
            return Vec::new();
        }
        all.select_nth_unstable_by(k - 1, |a, b| a.distance.total_cmp(&b.distance));
        all.truncate(k);
        all.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        all
    }
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
