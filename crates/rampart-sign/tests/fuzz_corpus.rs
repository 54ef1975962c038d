//! Runs the bundle parser over the committed fuzz corpus (`fuzz/sign/corpus/bundle`), as the fuzz target does.

use rampart_sign::{read_statement, Bundle};

#[test]
fn the_fuzz_corpus_parses_without_panicking() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/sign/corpus/bundle");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(bundle) = Bundle::parse(&data) {
            let _ = bundle.to_json();
            let _ = read_statement(&bundle.payload);
        }
        let _ = read_statement(&data);
        seen += 1;
    }
    assert!(seen >= 5, "the corpus is missing");
}

#[test]
fn the_escaping_path_sample_is_refused() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/sign/corpus/bundle");
    let data = std::fs::read(format!("{dir}/escaping-path.sig")).unwrap();
    let bundle = Bundle::parse(&data).unwrap();
    let err = read_statement(&bundle.payload).unwrap_err();
    assert!(err.to_string().contains("escapes"), "{err}");
}
