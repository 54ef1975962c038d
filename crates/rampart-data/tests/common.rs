//! Helpers shared by the integration tests.
#![allow(dead_code)]
// Test helpers: a failure here should stop the test loudly.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::path::{Path, PathBuf};

pub fn digits(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/digits")
        .join(name)
}

/// The digits training split: header, rows of 64 pixel strings and the label.
pub fn read_digits() -> (String, Vec<(Vec<String>, usize)>) {
    let text = std::fs::read_to_string(digits("train.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().to_string();
    let rows = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut cells: Vec<String> = l.split(',').map(str::to_string).collect();
            let label = cells.pop().unwrap().parse().unwrap();
            (cells, label)
        })
        .collect();
    (header, rows)
}

pub fn write_digits(path: &Path, header: &str, rows: &[(Vec<String>, usize)]) {
    let mut out = String::from(header);
    out.push('\n');
    for (cells, label) in rows {
        out.push_str(&cells.join(","));
        out.push(',');
        out.push_str(&label.to_string());
        out.push('\n');
    }
    std::fs::write(path, out).unwrap();
}

/// Deterministic choice of `k` indices out of `n` (SplitMix64).
pub fn choose(n: usize, k: usize, seed: u64) -> Vec<usize> {
    let mut rng = rampart_data::matrix::Rng::new(seed);
    let mut all: Vec<usize> = (0..n).collect();
    rng.shuffle(&mut all);
    all.truncate(k);
    all.sort_unstable();
    all
}
