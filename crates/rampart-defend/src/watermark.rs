//! DAWN output watermarking (Szyller et al. 2021): a keyed hash of each input picks a small fraction of queries,
//! which are answered with a keyed, deterministic wrong label. A model trained on those answers reproduces the wrong
//! labels far more often than chance; [`verify`] measures that and the probability of so many matches by chance.
//!
//! The choice is `HMAC-SHA256(key, input bytes)`: its first 8 bytes, as a fraction of 2^64, below `fraction` select
//! the query; the next 8 bytes pick the wrong label `(true + 1 + h mod (K - 1)) mod K`. The same input always gets
//! the same answer, so repeating a query reveals nothing.

use hmac::digest::KeyInit;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::stats::binomial_sf;
use crate::DefendError;

/// A watermarking key: 32 secret bytes and a public id for the audit log.
#[derive(Clone)]
pub struct WatermarkKey {
    secret: [u8; 32],
    /// HMAC-SHA256 keyed with the secret, cloned for each input (keying it costs two blocks of SHA-256).
    mac: Hmac<Sha256>,
    /// [`WatermarkKey::id`], computed once.
    id: String,
}

impl std::fmt::Debug for WatermarkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WatermarkKey")
            .field("id", &self.id())
            .finish_non_exhaustive()
    }
}

impl WatermarkKey {
    /// A key from 32 secret bytes.
    pub fn from_bytes(secret: [u8; 32]) -> WatermarkKey {
        let digest = Sha256::new()
            .chain_update(b"rampart-watermark-key-id\0")
            .chain_update(secret)
            .finalize();
        let mut padded = [0u8; 64];
        padded
            .iter_mut()
            .zip(secret)
            .for_each(|(p, byte)| *p = byte);
        WatermarkKey {
            secret,
            // HMAC pads a key shorter than SHA-256's 64-byte block with zeros: the padded key is the same key, and
            // keying with a whole block cannot fail.
            mac: <Hmac<Sha256> as KeyInit>::new(&padded.into()),
            id: digest.iter().take(8).map(|b| format!("{b:02x}")).collect(),
        }
    }

    /// A new key from the operating system's randomness.
    pub fn generate() -> Result<WatermarkKey, DefendError> {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret)
            .map_err(|e| DefendError::Config(format!("cannot gather randomness: {e}")))?;
        Ok(WatermarkKey::from_bytes(secret))
    }

    /// Writes a new key to `path` unless a file is there: to a temporary file (mode 0600) beside it, synced, then
    /// linked to its name, which fails when the name is taken (a key another process wrote first is kept). Returns
    /// the new key, or `None` when `path` was there already. No half-written key is ever at `path`.
    pub fn create_file(path: &std::path::Path) -> std::io::Result<Option<WatermarkKey>> {
        if path.exists() {
            return Ok(None);
        }
        let key = WatermarkKey::generate().map_err(|e| std::io::Error::other(e.to_string()))?;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix(".watermark-key");
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600));
        let mut temporary = builder.tempfile_in(dir)?;
        std::io::Write::write_all(&mut temporary, format!("{}\n", key.to_hex()).as_bytes())?;
        temporary.as_file().sync_all()?;
        match std::fs::hard_link(temporary.path(), path) {
            Ok(()) => Ok(Some(key)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Parses a key file: 64 hex digits (surrounding whitespace ignored).
    pub fn from_hex(text: &str) -> Result<WatermarkKey, DefendError> {
        let text = text.trim();
        let bad = || DefendError::Read {
            what: "the watermark key".into(),
            reason: "it must be 64 hex digits; create one with `rampart watermark keygen`".into(),
        };
        if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        // All zeros is no secret: a placeholder, never a key `keygen` makes.
        if text.bytes().all(|b| b == b'0') {
            return Err(bad());
        }
        let mut secret = [0u8; 32];
        for (i, byte) in secret.iter_mut().enumerate() {
            *byte = text
                .get(2 * i..2 * i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(bad)?;
        }
        Ok(WatermarkKey::from_bytes(secret))
    }

    /// The key file's text.
    pub fn to_hex(&self) -> String {
        self.secret.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The public id: the first 16 hex digits of SHA-256 over a domain tag and the key.
    pub fn id(&self) -> String {
        self.id.clone()
    }

    /// HMAC-SHA256 over the input's little-endian bytes (-0.0 as 0.0), fed 64 values at a time.
    fn hash(&self, input: &[f32]) -> [u8; 32] {
        let mut mac = self.mac.clone();
        let mut bytes = [0u8; 256];
        for chunk in input.chunks(64) {
            for (out, v) in bytes.chunks_exact_mut(4).zip(chunk) {
                // -0.0 and 0.0 are the same input.
                let v = if *v == 0.0 { 0.0_f32 } else { *v };
                out.copy_from_slice(&v.to_le_bytes());
            }
            mac.update(bytes.get(..4 * chunk.len()).unwrap_or_default());
        }
        mac.finalize().into_bytes().into()
    }
}

/// The watermarking stage of one classifier.
#[derive(Debug, Clone)]
pub struct Watermarker {
    key: WatermarkKey,
    fraction: f64,
}

impl Watermarker {
    /// Watermarks `fraction` of the queries (DAWN suggests at most a few percent; 0 < fraction <= 0.2).
    pub fn new(key: WatermarkKey, fraction: f64) -> Result<Watermarker, DefendError> {
        if !(fraction > 0.0 && fraction <= 0.2) {
            return Err(DefendError::Config(format!(
                "watermark fraction `{fraction}` must be in (0, 0.2]"
            )));
        }
        Ok(Watermarker { key, fraction })
    }

    /// The key's public id, for the audit record.
    pub fn key_id(&self) -> String {
        self.key.id()
    }

    /// The label to answer for `input` whose true label is `label` of `classes`: `Some(wrong)` when the input is
    /// watermarked, `None` when it is answered truthfully.
    pub fn wrong_label(&self, input: &[f32], label: usize, classes: usize) -> Option<usize> {
        match self.mark(input, label, classes) {
            Mark::Watermarked { wrong, .. } => Some(wrong),
            Mark::Control { .. } | Mark::Plain => None,
        }
    }

    /// What the key decides for `input` whose true label is `label` of `classes`: watermarked (the first `fraction`
    /// of the hash's range), a control kept for verification (the next `fraction`), or answered and forgotten.
    pub fn mark(&self, input: &[f32], label: usize, classes: usize) -> Mark {
        if classes < 2 || label >= classes {
            return Mark::Plain;
        }
        let h = self.key.hash(input);
        let word = |at: usize| {
            h.get(at..at + 8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
        };
        let pick = word(0) as f64 / 18_446_744_073_709_551_616.0;
        if pick >= 2.0 * self.fraction {
            Mark::Plain
        } else if pick >= self.fraction {
            Mark::Control { label }
        } else {
            let shift = 1 + (word(8) % (classes as u64 - 1)) as usize;
            Mark::Watermarked {
                label,
                wrong: (label + shift) % classes,
            }
        }
    }

    /// Applies the watermark to one row of scores in place: when selected, the true label's score and the wrong
    /// label's score swap, so the answer stays a plausible distribution. Returns what the key decided.
    pub fn apply(&self, input: &[f32], scores: &mut [f32]) -> Mark {
        let Some(label) = crate::argmax(scores) else {
            return Mark::Plain;
        };
        let mark = self.mark(input, label, scores.len());
        if let Mark::Watermarked { wrong, .. } = mark {
            scores.swap(label, wrong);
        }
        mark
    }
}

/// The key's decision for one answered row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Answered with the keyed wrong label instead of the model's own `label`.
    Watermarked {
        /// The model's own label.
        label: usize,
        /// The label answered.
        wrong: usize,
    },
    /// Answered truthfully, and kept with the watermarked rows: [`verify`] measures on such rows how often a model
    /// gives the keyed label by chance.
    Control {
        /// The model's own label.
        label: usize,
    },
    /// Answered truthfully, nothing to keep.
    Plain,
}

impl Mark {
    /// The model's own label of a row worth keeping for verification (watermarked or control).
    pub fn kept_label(self) -> Option<usize> {
        match self {
            Mark::Watermarked { label, .. } | Mark::Control { label } => Some(label),
            Mark::Plain => None,
        }
    }
}

/// One logged query: the input and the label the model itself gave it (before any watermark), as the gateway's
/// audit record keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedQuery {
    /// The input row.
    pub input: Vec<f32>,
    /// The model's own label.
    pub label: usize,
}

/// The verdict of [`verify`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Verification {
    /// The key's id.
    pub key_id: String,
    /// Distinct queries in the log (a query asked again counts once).
    pub queries: usize,
    /// Logged queries that the key watermarked.
    pub watermarked: usize,
    /// Of those, how many the suspect labels with the watermark's wrong label.
    pub matches: usize,
    /// The chance rate of a match, measured on the unwatermarked queries (at least `1 / classes`).
    pub null_rate: f64,
    /// `P(X >= matches)` for `X ~ Binomial(watermarked, null_rate)`: the false-identification probability.
    pub p_value: f64,
    /// Whether `p_value` is below the significance asked for.
    pub identified: bool,
}

/// The keyed label shift of `input`, whether or not the input is selected.
fn shift(key: &WatermarkKey, input: &[f32], classes: usize) -> usize {
    let h = key.hash(input);
    let choose = h
        .get(8..16)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes);
    1 + (choose % (classes as u64 - 1)) as usize
}

/// A suspect model as a function from a batch of inputs to its labels.
pub type Suspect<'a> = dyn FnMut(&[Vec<f32>]) -> Result<Vec<usize>, DefendError> + 'a;

/// Decides whether `suspect` (a function from inputs to labels) was trained on the watermarked answers given to the
/// queries in `log`.
///
/// For the queries the key selects, the suspect should give the keyed wrong label; an independent model gives it at
/// the chance rate, measured on the other queries as how often the suspect gives the label the same keyed shift would
/// produce (floored at `1 / classes`). The binomial tail of the matches under that rate is the probability that an
/// independent model matches this often: the false-identification probability.
pub fn verify(
    key: &WatermarkKey,
    fraction: f64,
    classes: usize,
    log: &[LoggedQuery],
    suspect: &mut Suspect<'_>,
    significance: f64,
) -> Result<Verification, DefendError> {
    let marker = Watermarker::new(key.clone(), fraction)?;
    if classes < 2 {
        return Err(DefendError::Config(
            "watermark verification needs at least 2 classes".into(),
        ));
    }
    if let Some(q) = log.iter().find(|q| q.label >= classes) {
        return Err(DefendError::Read {
            what: "the query log".into(),
            reason: format!("label {} is not one of {classes} classes", q.label),
        });
    }
    // A query asked again is one piece of evidence, not several: the matches would not be independent, and a row an
    // honest model happens to match, repeated, would make its match look significant.
    let mut seen = std::collections::HashSet::new();
    let log: Vec<&LoggedQuery> = log
        .iter()
        .filter(|q| {
            seen.insert(
                q.input
                    .iter()
                    .map(|v| (*v + 0.0).to_bits())
                    .collect::<Vec<u32>>(),
            )
        })
        .collect();
    let inputs: Vec<Vec<f32>> = log.iter().map(|q| q.input.clone()).collect();
    let labels = if inputs.is_empty() {
        Vec::new()
    } else {
        suspect(&inputs)?
    };
    if labels.len() != inputs.len() {
        return Err(DefendError::Model(
            "the suspect returned the wrong number of labels".into(),
        ));
    }
    let (mut watermarked, mut matches, mut others, mut chance_hits) =
        (0usize, 0usize, 0usize, 0usize);
    for (q, &got) in log.iter().zip(&labels) {
        match marker.wrong_label(&q.input, q.label, classes) {
            Some(wrong) => {
                watermarked += 1;
                matches += usize::from(got == wrong);
            }
            None => {
                others += 1;
                chance_hits +=
                    usize::from(got == (q.label + shift(key, &q.input, classes)) % classes);
            }
        }
    }
    let measured = (chance_hits + 1) as f64 / (others + 2) as f64;
    let null_rate = measured.max(1.0 / classes as f64);
    let p_value = binomial_sf(matches as u64, watermarked as u64, null_rate);
    Ok(Verification {
        key_id: key.id(),
        queries: log.len(),
        watermarked,
        matches,
        null_rate,
        p_value,
        identified: watermarked > 0 && p_value < significance,
    })
}

/// Most rows read from a query log (after the principal filter).
pub const MAX_LOG_ROWS: usize = 1_000_000;

/// The query log's column of the answer's time (seconds since the Unix epoch), not an input.
pub const TIME_COLUMN: &str = "time";
/// The query log's column of the principal answered, not an input.
pub const PRINCIPAL_COLUMN: &str = "principal";

/// Reads a query log: CSV with a header row, numeric input columns and the model's own label in `label_column`,
/// as the gateway records it (`time` and `principal` columns, when present, are not inputs). With `principal`,
/// only that principal's rows are kept.
pub fn read_query_log(
    input: impl std::io::Read,
    label_column: &str,
    principal: Option<&str>,
) -> Result<Vec<LoggedQuery>, DefendError> {
    let bad = |reason: String| DefendError::Read {
        what: "the query log".into(),
        reason,
    };
    let (mut reader, header, label_at) = crate::profile::labelled_csv(input, label_column, &bad)?;
    let principal_at = header.iter().position(|h| h == PRINCIPAL_COLUMN);
    let is_input =
        |i: usize, name: &str| i != label_at && name != TIME_COLUMN && Some(i) != principal_at;
    let width = header
        .iter()
        .enumerate()
        .filter(|&(i, h)| is_input(i, h))
        .count();
    if width == 0 {
        return Err(bad("there is no input column besides the label".into()));
    }
    if principal.is_some() && principal_at.is_none() {
        return Err(bad(format!(
            "no column `{PRINCIPAL_COLUMN}` to select a principal's rows by"
        )));
    }
    let mut log = Vec::new();
    let mut record = csv::StringRecord::new();
    let mut line = 1usize;
    loop {
        line += 1;
        match reader.read_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => return Err(bad(format!("row {line}: {e}"))),
        }
        if record.len() != header.len() {
            return Err(bad(format!(
                "row {line} has {} fields, the header {}",
                record.len(),
                header.len()
            )));
        }
        if let (Some(want), Some(at)) = (principal, principal_at) {
            if record.get(at) != Some(want) {
                continue;
            }
        }
        if log.len() >= MAX_LOG_ROWS {
            return Err(bad(format!("more than {MAX_LOG_ROWS} rows; split the log")));
        }
        let mut input = Vec::with_capacity(width);
        let mut label = 0usize;
        for (i, (field, name)) in record.iter().zip(header.iter()).enumerate() {
            if i == label_at {
                label = field.trim().parse().map_err(|_| {
                    bad(format!(
                        "row {line}: label `{}` is not a class index",
                        crate::clip(field)
                    ))
                })?;
            } else if is_input(i, name) {
                let v: f32 = field
                    .trim()
                    .parse()
                    .ok()
                    .filter(|v: &f32| v.is_finite())
                    .ok_or_else(|| {
                        bad(format!(
                            "row {line}: `{}` is not a finite number",
                            crate::clip(field)
                        ))
                    })?;
                input.push(v);
            }
        }
        log.push(LoggedQuery { input, label });
    }
    if log.is_empty() {
        return Err(bad(match principal {
            Some(p) => format!("it has no rows of principal `{}`", crate::clip(p)),
            None => "it has no rows".into(),
        }));
    }
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> WatermarkKey {
        WatermarkKey::from_bytes([b; 32])
    }

    #[test]
    fn selection_is_keyed_deterministic_and_near_the_fraction() {
        let m = Watermarker::new(key(1), 0.05).unwrap();
        let inputs: Vec<Vec<f32>> = (0..4000).map(|i| vec![i as f32, 0.5]).collect();
        let picked: Vec<usize> = inputs
            .iter()
            .filter_map(|x| m.wrong_label(x, 3, 10))
            .collect();
        assert!((150..250).contains(&picked.len()), "{}", picked.len());
        assert!(picked.iter().all(|&w| w != 3 && w < 10));
        assert_eq!(
            m.wrong_label(&inputs[7], 3, 10),
            m.wrong_label(&inputs[7], 3, 10)
        );
        let other = Watermarker::new(key(2), 0.05).unwrap();
        let same = inputs
            .iter()
            .filter(|x| m.wrong_label(x, 3, 10).is_some() && other.wrong_label(x, 3, 10).is_some())
            .count();
        assert!(same < 30, "keys overlap on {same}");
        assert_eq!(m.wrong_label(&[0.0], 3, 10), m.wrong_label(&[-0.0], 3, 10));
        assert!(Watermarker::new(key(1), 0.5).is_err());
    }

    #[test]
    fn query_logs_parse_and_refuse_bad_rows() {
        let log =
            read_query_log("a,b,label\n0.5,1,3\n0,0.25,0\n".as_bytes(), "label", None).unwrap();
        assert_eq!(
            log[0],
            LoggedQuery {
                input: vec![0.5, 1.0],
                label: 3
            }
        );
        assert_eq!(log.len(), 2);
        let err = |t: &str| {
            read_query_log(t.as_bytes(), "label", None)
                .unwrap_err()
                .to_string()
        };
        assert!(err("a,b\n1,2\n").contains("no column `label`"));
        assert!(err("time,principal,label\n1,p,2\n").contains("no input column"));
        assert!(err("a,label\n1,-1\n").contains("class index"));
        assert!(err("a,label\ninf,1\n").contains("finite"));
        assert!(err("a,label\n").contains("no rows"));
        assert!(err("a,label\n1\n").contains("fields"));
    }

    #[test]
    fn the_gateway_record_keeps_inputs_apart_from_time_and_principal() {
        let text =
            "time,principal,label,a,b\n1700000000,alice,3,0.5,1\n1700000001,\"b,ob\",0,0,0.25\n";
        let all = read_query_log(text.as_bytes(), "label", None).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[1].input, vec![0.0, 0.25]);
        let bob = read_query_log(text.as_bytes(), "label", Some("b,ob")).unwrap();
        assert_eq!(
            bob,
            vec![LoggedQuery {
                input: vec![0.0, 0.25],
                label: 0
            }]
        );
        let err = read_query_log(text.as_bytes(), "label", Some("carol"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no rows of principal `carol`"), "{err}");
        let err = read_query_log("a,label\n1,2\n".as_bytes(), "label", Some("alice"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no column `principal`"), "{err}");
    }

    #[test]
    fn controls_are_as_many_as_the_watermarked_and_never_watermarked() {
        let m = Watermarker::new(key(3), 0.05).unwrap();
        let (mut marked, mut controls) = (0, 0);
        for i in 0..8000 {
            let input = [i as f32, 0.25];
            match m.mark(&input, 4, 10) {
                Mark::Watermarked { label, wrong } => {
                    assert!(label == 4 && wrong != 4 && wrong < 10);
                    assert_eq!(m.wrong_label(&input, 4, 10), Some(wrong));
                    marked += 1;
                }
                Mark::Control { label } => {
                    assert_eq!((label, m.wrong_label(&input, 4, 10)), (4, None));
                    controls += 1;
                }
                Mark::Plain => assert_eq!(m.wrong_label(&input, 4, 10), None),
            }
        }
        assert!((320..480).contains(&marked), "{marked}");
        assert!((320..480).contains(&controls), "{controls}");
        // Scores: the watermarked row's label and wrong label swap; a control's stay.
        let mut scores = [0.1, 0.7, 0.2];
        let before = scores;
        match m.apply(&[1.0], &mut scores) {
            Mark::Watermarked { label, wrong } => {
                assert_eq!(label, 1);
                assert_eq!(
                    (scores[wrong], scores[label]),
                    (before[label], before[wrong])
                );
            }
            Mark::Control { .. } | Mark::Plain => assert_eq!(scores, before),
        }
        assert_eq!(m.apply(&[1.0], &mut [f32::NAN, f32::NAN]), Mark::Plain);
    }

    #[test]
    fn the_choice_is_hmac_sha256_of_the_little_endian_values() {
        // The definition, value by value, against the stage's chunked feed: logs of earlier versions must still
        // verify. Lengths around the chunk of 64, and -0.0 hashed as 0.0.
        let k = key(0x5c);
        for len in [0, 1, 63, 64, 65, 200] {
            let input: Vec<f32> = (0..len).map(|i| (i as f32 - 7.0) / 3.0).collect();
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&[0x5c; 32]).unwrap();
            for v in &input {
                mac.update(&v.to_le_bytes());
            }
            let want: [u8; 32] = mac.finalize().into_bytes().into();
            assert_eq!(k.hash(&input), want, "{len} values");
        }
        assert_eq!(k.hash(&[-0.0, 1.0]), k.hash(&[0.0, 1.0]));
        let digest = Sha256::new()
            .chain_update(b"rampart-watermark-key-id\0")
            .chain_update([0x5c; 32])
            .finalize();
        assert_eq!(k.id(), hex_of(&digest[..8]));
    }

    fn hex_of(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn key_files_round_trip_and_the_id_hides_the_key() {
        let k = key(0xab);
        assert_eq!(
            WatermarkKey::from_hex(&format!("{}\n", k.to_hex()))
                .unwrap()
                .to_hex(),
            k.to_hex()
        );
        assert_eq!(k.id().len(), 16);
        assert!(!k.to_hex().contains(&k.id()));
        assert!(WatermarkKey::from_hex("abc").is_err());
        assert!(WatermarkKey::from_hex(&"0".repeat(64)).is_err());
        assert!(!format!("{k:?}").contains("abab"));
        // A key file is read within bounds: /dev/zero is refused, not read until memory runs out.
        let err = crate::read_bounded(std::path::Path::new("/dev/zero"), crate::MAX_KEY_BYTES)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 4096 bytes"), "{err}");
    }

    #[test]
    fn verify_identifies_a_copy_and_clears_an_honest_model() {
        let k = key(9);
        let m = Watermarker::new(k.clone(), 0.05).unwrap();
        // The "true model": label = floor(10 * x0).
        let truth = |x: &[f32]| ((x[0] * 10.0) as usize).min(9);
        let log: Vec<LoggedQuery> = (0..5000)
            .map(|i| {
                let input = vec![(i as f32 * 0.618_034) % 1.0, i as f32];
                let label = truth(&input);
                LoggedQuery { input, label }
            })
            .collect();
        // A copy that memorised the answers it was served.
        let answers: std::collections::HashMap<Vec<u32>, usize> = log
            .iter()
            .map(|q| {
                (
                    q.input.iter().map(|v| v.to_bits()).collect(),
                    m.wrong_label(&q.input, q.label, 10).unwrap_or(q.label),
                )
            })
            .collect();
        let mut copy = |xs: &[Vec<f32>]| {
            Ok::<_, DefendError>(
                xs.iter()
                    .map(|x| answers[&x.iter().map(|v| v.to_bits()).collect::<Vec<_>>()])
                    .collect(),
            )
        };
        let v = verify(&k, 0.05, 10, &log, &mut copy, 0.001).unwrap();
        assert!(v.identified && v.p_value < 1e-100, "{v:?}");
        assert_eq!(v.matches, v.watermarked);
        // An honest model: the true labels.
        let mut honest =
            |xs: &[Vec<f32>]| Ok::<_, DefendError>(xs.iter().map(|x| truth(x)).collect());
        let v = verify(&k, 0.05, 10, &log, &mut honest, 0.001).unwrap();
        assert!(!v.identified && v.matches == 0 && v.p_value == 1.0, "{v:?}");
        assert!(v.watermarked > 200 && v.watermarked < 300);
        // A row an honest model happens to answer with the watermark label, asked 500 times, is one match.
        let unlucky = log
            .iter()
            .find(|q| m.wrong_label(&q.input, q.label, 10).is_some())
            .unwrap()
            .clone();
        let wrong = m.wrong_label(&unlucky.input, unlucky.label, 10).unwrap();
        let mut repeated = log.clone();
        repeated.extend(std::iter::repeat_n(unlucky.clone(), 500));
        let mut honest_but_unlucky = |xs: &[Vec<f32>]| {
            Ok::<_, DefendError>(
                xs.iter()
                    .map(|x| if *x == unlucky.input { wrong } else { truth(x) })
                    .collect(),
            )
        };
        let v = verify(&k, 0.05, 10, &repeated, &mut honest_but_unlucky, 0.001).unwrap();
        assert!(
            !v.identified && v.matches == 1 && v.queries == log.len(),
            "{v:?}"
        );
        // Another key's watermark is not this one's.
        let v = verify(&key(10), 0.05, 10, &log, &mut copy, 0.001).unwrap();
        assert!(!v.identified, "{v:?}");
    }
}
