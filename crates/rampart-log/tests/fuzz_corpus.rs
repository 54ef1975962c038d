//! Runs the fuzz targets' parsers over their committed corpus (`fuzz/log/corpus`), so CI exercises them.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

#[test]
fn fuzz_corpus_parses_without_panic() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/log/corpus");
    let mut seen = 0;
    for (target, run) in [
        ("note", rampart_log::fuzz_note as fn(&[u8])),
        ("bundle", rampart_log::fuzz_bundle),
    ] {
        for entry in std::fs::read_dir(root.join(target)).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            run(&data);
            for cut in [0, data.len() / 2, data.len().saturating_sub(1)] {
                run(&data[..cut]);
            }
            seen += 1;
        }
    }
    assert!(seen >= 4);
}
