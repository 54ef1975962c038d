//! Duplicates: exact (hashed rows, streaming), near duplicates (MinHash LSH over text, nearest neighbours over
//! numeric rows) and leakage (rows of this data set that also appear in another split).

use std::collections::{HashMap, HashSet};

use rayon::prelude::*;
use serde::Serialize;
use xxhash_rust::xxh3::{xxh3_128_with_seed, xxh3_64, xxh3_64_with_seed};

use crate::load::Row;
use crate::matrix::{dist2, Matrix};

/// Hash the cells at `columns` (all when `None`), null distinct from empty text, into 128 bits.
///
/// What is hashed is the cells' bytes one after another, then each cell's length (32 bits; null as a length no cell
/// has), so that no two different rows have the same bytes hashed. 128 bits make an accidental collision, which
/// would report a row as a duplicate it is not, vanishingly rare (about n²/2¹²⁹: below 10⁻²⁰ for ten billion rows);
/// the seed is random per process.
pub fn hash_cells(row: &Row, columns: Option<&[usize]>, scratch: &mut Vec<u8>) -> u128 {
    scratch.clear();
    let all: Vec<usize>;
    let columns = match columns {
        Some(columns) => columns,
        None => {
            all = (0..row.len()).collect();
            &all
        }
    };
    for text in columns.iter().filter_map(|&c| row.get(c)) {
        scratch.extend_from_slice(text.as_bytes());
    }
    for &c in columns {
        push_length(scratch, row.get(c).map(str::len));
    }
    xxh3_128_with_seed(scratch, *ROW_SEED)
}

/// [`hash_cells`] of every column but `skip`, the same hash, from the row's stored text in two copies rather than
/// one per cell.
pub fn hash_all_but(row: &Row, skip: Option<usize>, scratch: &mut Vec<u8>) -> u128 {
    scratch.clear();
    let (before, after) = row.text_without(skip);
    scratch.extend_from_slice(before.as_bytes());
    scratch.extend_from_slice(after.as_bytes());
    for (index, length) in row.lengths().enumerate() {
        if Some(index) != skip {
            push_length(scratch, length);
        }
    }
    xxh3_128_with_seed(scratch, *ROW_SEED)
}

fn push_length(scratch: &mut Vec<u8>, length: Option<usize>) {
    // A cell is at most a record long (64 MiB): its length fits 32 bits.
    let length = length.map_or(u32::MAX, |l| u32::try_from(l).unwrap_or(u32::MAX - 1));
    scratch.extend_from_slice(&length.to_le_bytes());
}

/// The seeded 64-bit hash of a label (null as a value no hash of text takes in practice), compared only with the
/// label of a row's first copy.
pub fn hash_label(label: Option<&str>) -> u64 {
    label.map_or(u64::MAX, |l| xxh3_64_with_seed(l.as_bytes(), *ROW_SEED))
}

/// The seeded 128-bit hash of one value (unique columns).
pub fn hash_value(value: &str) -> u128 {
    xxh3_128_with_seed(value.as_bytes(), *ROW_SEED)
}

/// Seed of the row hashes, random per process: the maps of row hashes below use the hash itself as their bucket
/// hash (no second hashing of every row), and a secret seed keeps an attacker from crafting rows whose hashes
/// collide in the bucket bits.
static ROW_SEED: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64)
});

/// A hasher for keys that are already seeded 64-bit hashes: passes them through.
#[derive(Debug, Default, Clone, Copy)]
pub struct PassThrough(u64);

impl std::hash::Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not used for `u64` keys; fold anything else in so that the hasher stays correct.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }

    fn write_u128(&mut self, value: u128) {
        // Both halves are seeded hash bits: fold them.
        self.0 = (value ^ (value >> 64)) as u64;
    }
}

/// Builds [`PassThrough`] hashers.
pub type RowHashes = std::hash::BuildHasherDefault<PassThrough>;

/// A repeated row.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub line: u64,
    /// The first row with the same content.
    pub first_line: u64,
    /// Same features, different label.
    pub conflicting_label: bool,
}

/// Finds exact duplicates as rows stream by (one 128-bit hash, the first line and the label's hash per distinct
/// row are kept: 32 bytes).
///
/// A table of millions of rows is far larger than the cache, and looking each row up as it comes costs a cache and
/// TLB miss per row. So the rows are split by the top bits of their hash into [`PARTITIONS`] tables, and once the
/// first [`DIRECT_ROWS`] are in, a row waits in its partition's queue until [`PENDING`] have gathered, which then go
/// into that partition's table (small enough to stay in cache) one after another. The first occurrence of a row
/// is the same either way, since equal rows share a partition and a queue keeps their order; findings come out of
/// order and are sorted by line in [`ExactDuplicates::finish`], which must be called before reading the results.
#[derive(Debug, Default)]
pub struct ExactDuplicates {
    tables: Vec<HashMap<u128, (u64, u64), RowHashes>>,
    pending: Vec<Vec<(u128, u64, u64)>>,
    rows: u64,
    /// The `keep` findings of the lowest lines so far (a max-heap on the line).
    lowest: std::collections::BinaryHeap<(u64, u64, bool)>,
    pub count: u64,
    pub conflicting: u64,
    /// The first findings in line order (at most `keep`), after [`ExactDuplicates::finish`].
    pub findings: Vec<Duplicate>,
    keep: usize,
}

/// Partitions of the duplicate table (by the top 8 bits of a row's hash).
const PARTITIONS: usize = 256;
/// Rows looked up at once, when they arrive, before queueing starts.
const DIRECT_ROWS: u64 = 1 << 16;
/// Rows queued per partition before they go into its table.
const PENDING: usize = 512;

impl ExactDuplicates {
    pub fn new(keep: usize) -> Self {
        Self::with_capacity(keep, 0)
    }

    /// Room for `rows` distinct rows from the start: no rehash of a large table (each one moves every entry and
    /// touches fresh memory) while the file streams by.
    pub fn with_capacity(keep: usize, rows: usize) -> Self {
        let each = rows / PARTITIONS;
        Self {
            tables: (0..PARTITIONS)
                .map(|_| HashMap::with_capacity_and_hasher(each, RowHashes::default()))
                .collect(),
            pending: (0..PARTITIONS).map(|_| Vec::new()).collect(),
            keep,
            ..Self::default()
        }
    }

    /// Record a row by the hash of its features and the hash of its label (a label-hash collision could only hide
    /// that a duplicate's label differs; it never makes a duplicate).
    pub fn observe(&mut self, line: u64, features: u128, label: u64) {
        let partition = (features >> 120) as usize % PARTITIONS;
        self.rows += 1;
        if self.rows <= DIRECT_ROWS {
            self.look_up(partition, features, line, label);
            return;
        }
        let Some(queue) = self.pending.get_mut(partition) else {
            return;
        };
        queue.push((features, line, label));
        if queue.len() >= PENDING {
            self.drain(partition);
        }
    }

    /// Look up every queued row of a partition.
    fn drain(&mut self, partition: usize) {
        let Some(queue) = self.pending.get_mut(partition) else {
            return;
        };
        let queued = std::mem::take(queue);
        for &(features, line, label) in &queued {
            self.look_up(partition, features, line, label);
        }
        // Give the queue its allocation back.
        if let Some(queue) = self.pending.get_mut(partition) {
            *queue = queued;
            queue.clear();
        }
    }

    fn look_up(&mut self, partition: usize, features: u128, line: u64, label: u64) {
        let Some(table) = self.tables.get_mut(partition) else {
            return;
        };
        match table.entry(features) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert((line, label));
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                let (first_line, first_label) = *slot.get();
                self.count += 1;
                let conflicting_label = first_label != label;
                if conflicting_label {
                    self.conflicting += 1;
                }
                if self.keep > 0 {
                    self.lowest.push((line, first_line, conflicting_label));
                    if self.lowest.len() > self.keep {
                        self.lowest.pop();
                    }
                }
            }
        }
    }

    /// Look up the rows still queued and list the findings in line order.
    pub fn finish(&mut self) {
        for partition in 0..self.pending.len() {
            self.drain(partition);
        }
        self.findings = std::mem::take(&mut self.lowest)
            .into_sorted_vec()
            .into_iter()
            .map(|(line, first_line, conflicting_label)| Duplicate {
                line,
                first_line,
                conflicting_label,
            })
            .collect();
    }
}

/// Hashes of another split's rows, to find leakage.
#[derive(Debug, Default)]
pub struct Against {
    pub hashes: HashSet<u128, RowHashes>,
    pub rows: u64,
}

/// A pair of rows that are nearly the same.
#[derive(Debug, Clone, Serialize)]
pub struct NearDuplicate {
    pub line: u64,
    pub other_line: u64,
    /// Estimated Jaccard similarity (text) or 1 - RMS distance (numeric).
    pub similarity: f64,
    pub basis: &'static str,
}

const PERMUTATIONS: usize = 64;
const BANDS: usize = 16;
const BAND_ROWS: usize = PERMUTATIONS / BANDS;
/// Largest LSH bucket compared pairwise; larger ones (boilerplate text) are cut to keep time bounded.
const MAX_BUCKET: usize = 200;
/// Members of a bucket each row is compared with.
const WINDOW: usize = 16;
/// Most candidate pairs verified in one run.
const MAX_CANDIDATES: usize = 2_000_000;

/// MinHash signature of a text: word 3-grams (character 5-grams for texts of fewer than three words).
pub fn minhash(text: &str) -> Option<[u64; PERMUTATIONS]> {
    let lower = text.to_lowercase();
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut shingles: Vec<u64> = Vec::new();
    if words.len() >= 3 {
        for w in words.windows(3) {
            shingles.push(xxh3_64(w.join(" ").as_bytes()));
        }
    } else {
        let chars: Vec<char> = lower.chars().collect();
        if chars.len() < 5 {
            return None;
        }
        for w in chars.windows(5) {
            shingles.push(xxh3_64(w.iter().collect::<String>().as_bytes()));
        }
    }
    let mut sig = [u64::MAX; PERMUTATIONS];
    let mut rng = crate::matrix::Rng::new(0x5eed);
    let params: Vec<(u64, u64)> = (0..PERMUTATIONS)
        .map(|_| (rng.next_u64() | 1, rng.next_u64()))
        .collect();
    for h in shingles {
        for (slot, (a, b)) in sig.iter_mut().zip(&params) {
            let v = a.wrapping_mul(h).wrapping_add(*b);
            if v < *slot {
                *slot = v;
            }
        }
    }
    Some(sig)
}

/// Near-duplicate texts by MinHash LSH; pairs with estimated Jaccard of at least `threshold`.
pub fn near_duplicate_texts(texts: &[(u64, String)], threshold: f64) -> Vec<NearDuplicate> {
    let sigs: Vec<Option<[u64; PERMUTATIONS]>> =
        texts.par_iter().map(|(_, t)| minhash(t)).collect();
    let mut buckets: HashMap<(usize, u64), Vec<usize>> = HashMap::new();
    for (i, sig) in sigs.iter().enumerate() {
        let Some(sig) = sig else { continue };
        for (band, chunk) in sig.chunks_exact(BAND_ROWS).enumerate() {
            let mut bytes = Vec::with_capacity(BAND_ROWS * 8);
            chunk
                .iter()
                .for_each(|v| bytes.extend_from_slice(&v.to_le_bytes()));
            let members = buckets.entry((band, xxh3_64(&bytes))).or_default();
            if members.len() < MAX_BUCKET {
                members.push(i);
            }
        }
    }
    // Within a bucket each row is compared with the next few members only, and the candidate set is capped: text
    // that is mostly boilerplate would otherwise make the pairs grow with the square of the rows.
    let mut pairs: HashSet<(usize, usize)> = HashSet::new();
    'buckets: for members in buckets.values() {
        for (a, &i) in members.iter().enumerate() {
            for &j in members.iter().skip(a + 1).take(WINDOW) {
                if pairs.len() >= MAX_CANDIDATES {
                    break 'buckets;
                }
                pairs.insert((i.min(j), i.max(j)));
            }
        }
    }
    let mut out: Vec<NearDuplicate> = pairs
        .into_iter()
        .filter_map(|(i, j)| {
            let (Some(Some(a)), Some(Some(b))) = (sigs.get(i), sigs.get(j)) else {
                return None;
            };
            let same = a.iter().zip(b.iter()).filter(|(x, y)| x == y).count();
            let similarity = same as f64 / PERMUTATIONS as f64;
            let (line, _) = texts.get(j)?;
            let (other_line, _) = texts.get(i)?;
            (similarity >= threshold).then_some(NearDuplicate {
                line: *line,
                other_line: *other_line,
                similarity,
                basis: "text-minhash",
            })
        })
        .collect();
    out.sort_by(|a, b| a.line.cmp(&b.line).then(a.other_line.cmp(&b.other_line)));
    out
}

/// Near-duplicate numeric rows: pairs whose RMS distance, after scaling every column to [0, 1], is at most
/// `max_distance` but not zero (exact duplicates are reported on their own).
pub fn near_duplicate_rows(
    features: &Matrix,
    lines: &[u64],
    max_distance: f64,
) -> Vec<NearDuplicate> {
    let scaled = scale_unit(features);
    let d = scaled.cols().max(1) as f64;
    let limit = max_distance * max_distance * d;
    let mut out: Vec<NearDuplicate> = (0..scaled.rows())
        .into_par_iter()
        .flat_map_iter(|i| {
            let a = scaled.row(i);
            let scaled = &scaled;
            (i + 1..scaled.rows()).filter_map(move |j| {
                let d2 = dist2(a, scaled.row(j));
                (d2 > 0.0 && d2 <= limit).then_some((i, j, d2))
            })
        })
        .filter_map(|(i, j, d2)| {
            Some(NearDuplicate {
                line: *lines.get(j)?,
                other_line: *lines.get(i)?,
                similarity: 1.0 - (d2 / d).sqrt(),
                basis: "numeric-distance",
            })
        })
        .collect();
    out.sort_by(|a, b| a.line.cmp(&b.line).then(a.other_line.cmp(&b.other_line)));
    out
}

/// Scale each column to [0, 1] by its range (constant columns become 0).
pub fn scale_unit(features: &Matrix) -> Matrix {
    let cols = features.cols();
    let mut lo = vec![f64::INFINITY; cols];
    let mut hi = vec![f64::NEG_INFINITY; cols];
    for row in features.iter_rows() {
        for ((l, h), v) in lo.iter_mut().zip(hi.iter_mut()).zip(row) {
            *l = l.min(*v);
            *h = h.max(*v);
        }
    }
    let mut out = features.clone();
    for i in 0..out.rows() {
        for ((v, l), h) in out.row_mut(i).iter_mut().zip(&lo).zip(&hi) {
            let range = h - l;
            *v = if range > 0.0 { (*v - l) / range } else { 0.0 };
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minhash_finds_edited_copies_only() {
        let base = "the quick brown fox jumps over the lazy dog near the river bank at dawn";
        let texts = vec![
            (2, base.to_string()),
            (3, format!("{base} today")),
            (
                4,
                "completely different words about training data and models".to_string(),
            ),
        ];
        let pairs = near_duplicate_texts(&texts, 0.7);
        assert_eq!(pairs.len(), 1);
        assert_eq!((pairs[0].line, pairs[0].other_line), (3, 2));
    }

    #[test]
    fn the_row_hash_fast_path_is_the_same_hash() {
        let rows = [
            Row::from_cells(2, [Some("a"), None, Some("bc"), Some("1")]),
            Row::from_cells(3, [None, Some("ab"), Some("c"), None]),
            Row::from_cells(4, [Some(""), Some("x"), None, Some("y")]),
        ];
        let mut scratch = Vec::new();
        for row in &rows {
            for skip in [None, Some(0), Some(1), Some(3)] {
                let columns: Vec<usize> = (0..row.len()).filter(|&c| Some(c) != skip).collect();
                assert_eq!(
                    hash_all_but(row, skip, &mut scratch),
                    hash_cells(row, Some(&columns), &mut scratch),
                    "{row:?} {skip:?}"
                );
            }
        }
        // Cells that split the same bytes differently, and null against empty, hash apart.
        let split = |cells: [Option<&str>; 2]| {
            hash_cells(&Row::from_cells(2, cells), None, &mut Vec::new())
        };
        assert_ne!(
            split([Some("ab"), Some("c")]),
            split([Some("a"), Some("bc")])
        );
        assert_ne!(split([Some("a"), None]), split([None, Some("a")]));
    }

    #[test]
    fn queued_lookups_find_what_direct_ones_find() {
        // Far more rows than are looked up directly, with repeats near and far apart and conflicting labels: the
        // result must equal a plain map's, first lines and listing order included.
        let mut rng = crate::matrix::Rng::new(7);
        let mut fast = ExactDuplicates::new(50);
        let mut reference: HashMap<u128, (u64, u64)> = HashMap::new();
        let (mut count, mut conflicting, mut listed) = (0u64, 0u64, Vec::new());
        for line in 2..300_000u64 {
            let features = u128::from(rng.next_u64() % 250_000)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            let label = rng.next_u64() % 3;
            fast.observe(line, features, label);
            match reference.entry(features) {
                std::collections::hash_map::Entry::Vacant(slot) => {
                    slot.insert((line, label));
                }
                std::collections::hash_map::Entry::Occupied(slot) => {
                    let (first, first_label) = *slot.get();
                    count += 1;
                    conflicting += u64::from(first_label != label);
                    if listed.len() < 50 {
                        listed.push((line, first, first_label != label));
                    }
                }
            }
        }
        fast.finish();
        assert!(count > 10_000);
        assert_eq!((fast.count, fast.conflicting), (count, conflicting));
        let found: Vec<(u64, u64, bool)> = fast
            .findings
            .iter()
            .map(|d| (d.line, d.first_line, d.conflicting_label))
            .collect();
        assert_eq!(found, listed);
    }

    #[test]
    fn exact_duplicates_and_conflicts() {
        let mut d = ExactDuplicates::new(10);
        d.observe(2, 1, 7);
        d.observe(3, 1, 7);
        d.observe(4, 1, 8);
        d.observe(5, 2, 8);
        assert_eq!((d.count, d.conflicting), (2, 1));
    }
}
