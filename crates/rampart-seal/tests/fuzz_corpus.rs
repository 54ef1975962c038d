//! Runs the unseal fuzz target over its committed corpus (`fuzz/seal/corpus`), so CI exercises it.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

#[test]
fn fuzz_corpus_unseals_without_panic() {
    let root =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seal/corpus/unseal");
    let mut seen = 0;
    for entry in std::fs::read_dir(root).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        rampart_seal::fuzz_unseal(&data);
        for cut in [0, 30, data.len() / 2, data.len().saturating_sub(1)] {
            rampart_seal::fuzz_unseal(&data[..cut.min(data.len())]);
        }
        let mut flipped = data.clone();
        if let Some(b) = flipped.last_mut() {
            *b ^= 1;
        }
        rampart_seal::fuzz_unseal(&flipped);
        seen += 1;
    }
    assert!(seen >= 3);
}
