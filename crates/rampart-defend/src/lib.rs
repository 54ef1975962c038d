//! Rampart's inference-time defences, as pure components over [`rampart_infer`] tensors and models.
//!
//! Each module is one decision the gateway makes about a request or a response; the gateway wraps each in a stage
//! (config, metrics, audit record) with a small adapter. Nothing here does I/O beyond reading the files it is given.
//!
//! - [`image_input`]: PNG and JPEG images in KServe v2 `BYTES` tensors decoded to `FP32` within limits.
//! - [`sanitise`]: JPEG re-encoding, median and Gaussian filters, frequency-domain low-pass, bit-depth reduction.
//! - [`profile`] and [`schema`]: a profile of the training data and the value-range checks built on it.
//! - [`detect`]: adversarial-input detection: feature squeezing plus neighbour-based scores against the profile,
//!   combined into one score whose threshold is calibrated on clean data to a target false-positive rate.
//! - [`extraction`]: per-principal extraction detection: PRADA ([`shapiro`]) plus off-manifold, near-duplicate and
//!   grid signals, escalating to throttling and bans, with a shadow mode.
//! - [`harden`]: output hardening (label only, top-k, rounding) per role.
//! - [`watermark`]: DAWN output watermarking and its verification (binomial tail).
//! - [`anomaly`]: access-pattern monitoring against EWMA baselines.

pub mod anomaly;
pub mod detect;
mod error;
pub mod extraction;
pub mod harden;
pub mod image_input;
pub mod knn;
pub mod profile;
pub mod sanitise;
pub mod schema;
pub mod shapiro;
pub mod stats;
pub mod watermark;

pub use error::DefendError;

pub(crate) use rampart_infer::clip;
use rampart_infer::{Tensor, TensorData};

/// The rows of a 2-D (or N-D, flattened per row) floating-point tensor: `(rows, width, values)`.
pub fn rows_of(tensor: &Tensor) -> Result<(usize, usize, Vec<f32>), DefendError> {
    let values: Vec<f32> = match &tensor.data {
        TensorData::Fp32(v) => v.clone(),
        TensorData::Fp64(v) => v.iter().map(|&x| x as f32).collect(),
        _ => {
            return Err(DefendError::Input(format!(
                "tensor `{}` must be FP32 or FP64, not {}",
                tensor.name,
                tensor.datatype().as_str()
            )))
        }
    };
    let rows = tensor.shape.first().copied().unwrap_or(0);
    if tensor.shape.len() < 2 || rows == 0 {
        return Err(DefendError::Input(format!(
            "tensor `{}` must have a batch dimension and at least one feature dimension, not shape {:?}",
            tensor.name, tensor.shape
        )));
    }
    let width = values.len() / rows;
    Ok((rows, width, values))
}

/// A file's text, refused past `max` bytes (a profile or a key named as `/dev/zero` was read until memory ran out).
pub fn read_bounded(path: &std::path::Path, max: u64) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max.saturating_add(1))
        .read_to_string(&mut text)?;
    if text.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(text)
}

/// The largest profile file read (JSON).
pub const MAX_PROFILE_BYTES: u64 = 1 << 30;
/// The largest watermark key file read.
pub const MAX_KEY_BYTES: u64 = 4096;

/// Softmax of one row of scores; a row that already is a probability vector is returned as is.
pub fn to_probabilities(row: &[f32]) -> Vec<f32> {
    let sum: f32 = row.iter().sum();
    if row.iter().all(|&v| (0.0..=1.0).contains(&v)) && (sum - 1.0).abs() < 1e-3 {
        return row.to_vec();
    }
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = row.iter().map(|&v| (v - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    exps.iter().map(|&e| e / total).collect()
}

/// The index of the largest value (the first on ties); `None` for an empty row or one with NaN.
pub fn argmax(row: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            return None;
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// Runs `model` on a batch of rows given as one FP32 tensor named `input_name`, returning the first output's rows.
pub fn predict(
    model: &dyn rampart_infer::Model,
    input_name: &str,
    rows: usize,
    width: usize,
    values: Vec<f32>,
) -> Result<Vec<Vec<f32>>, DefendError> {
    let tensor = Tensor::new(input_name, vec![rows, width], TensorData::Fp32(values))
        .map_err(|e| DefendError::Model(e.to_string()))?;
    let outputs = model
        .infer(std::slice::from_ref(&tensor))
        .map_err(|e| DefendError::Model(e.to_string()))?;
    let first = outputs
        .into_iter()
        .next()
        .ok_or_else(|| DefendError::Model("the model returned no output".into()))?;
    let (n, k, out) = rows_of(&first)?;
    if n != rows || k == 0 {
        return Err(DefendError::Model(format!(
            "the model returned {n} rows for {rows} inputs"
        )));
    }
    Ok(out.chunks(k).map(<[f32]>::to_vec).collect())
}

/// Makes room in a full table in one pass: removes the eighth of its entries (at least one) with the smallest `age`,
/// so that the next eighth of new keys go in without another pass. Removing one entry per new key would scan the
/// whole table for each: a client sending from ever new addresses would make each of its requests cost a scan, under
/// a lock other requests wait on (0.5 ms a request at the anomaly monitor's 100,000 keys). Used by the monitors here
/// and by the gateway's rate limiters, ban list and extraction penalties.
pub fn evict_oldest<K, V, A>(map: &mut std::collections::HashMap<K, V>, age: impl Fn(&V) -> A)
where
    K: Eq + std::hash::Hash,
    A: Ord + Copy,
{
    let count = (map.len() / 8).max(1);
    let mut ages: Vec<A> = map.values().map(&age).collect();
    if count >= ages.len() {
        map.clear();
        return;
    }
    let (_, &mut cut, _) = ages.select_nth_unstable(count - 1);
    // Everything older than the `count`th oldest, then as many of its equals as make up the count.
    let mut removed = 0;
    map.retain(|_, v| {
        let older = age(v) < cut;
        removed += usize::from(older);
        !older
    });
    map.retain(|_, v| {
        let evict = removed < count && age(v) == cut;
        removed += usize::from(evict);
        !evict
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    #[test]
    fn evict_oldest_removes_the_oldest_eighth_at_once_ties_included() {
        // 20 entries: an eighth is 2; three share the oldest age, so exactly two of them go.
        let mut map: HashMap<u32, u64> = (0..20).map(|k| (k, u64::from(k.max(2)))).collect();
        crate::evict_oldest(&mut map, |&age| age);
        assert_eq!(map.len(), 18);
        assert_eq!(map.values().filter(|&&a| a == 2).count(), 1);
        assert!((3..20).all(|k| map.contains_key(&k)));
        // Fewer than eight entries: the single oldest; one entry or none: emptied, no panic.
        let mut map: HashMap<u32, u64> = [(1, 9), (2, 4), (3, 7)].into();
        crate::evict_oldest(&mut map, |&age| age);
        assert_eq!(map, [(1, 9), (3, 7)].into());
        let mut map: HashMap<u32, u64> = [(1, 9)].into();
        crate::evict_oldest(&mut map, |&age| age);
        assert!(map.is_empty());
        crate::evict_oldest(&mut map, |&age| age);
        assert!(map.is_empty());
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! The digits example, for the tests.

    /// Rows and labels of `examples/digits/<file>`.
    pub fn digits(file: &str) -> (Vec<f32>, Vec<i64>) {
        let path = format!(
            "{}/../../examples/digits/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(path).unwrap();
        let (mut rows, mut labels) = (Vec::new(), Vec::new());
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split(',').collect();
            let (label, pixels) = fields.split_last().unwrap();
            rows.extend(pixels.iter().map(|p| p.parse::<f32>().unwrap()));
            labels.push(label.parse().unwrap());
        }
        (rows, labels)
    }

    /// Uniform values in [0, 1) from a xorshift generator seeded with `seed` (not zero): reproducible test data.
    pub fn uniform(mut seed: u64) -> impl FnMut() -> f32 {
        move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 1_000_003) as f32 / 1_000_003.0
        }
    }

    /// The digits MLP.
    pub fn digits_model() -> rampart_infer::OnnxModel {
        let path = format!(
            "{}/../../examples/digits/model/model.onnx",
            env!("CARGO_MANIFEST_DIR")
        );
        rampart_infer::OnnxModel::from_path("digits", std::path::Path::new(&path)).unwrap()
    }
}
