//! Runs the fuzz targets' committed corpus (fuzz/data/corpus) through the same code paths, so CI exercises them.
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

fn corpus(target: &str) -> Vec<std::path::PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/data/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    files
}

#[test]
fn loaders_and_checks_survive_the_corpus() {
    let mut targets = vec![("load_csv", "csv"), ("load_jsonl", "jsonl")];
    if cfg!(feature = "parquet") {
        targets.push(("load_parquet", "parquet"));
    }
    for (target, ext) in targets {
        for file in corpus(target) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(format!("input.{ext}"));
            std::fs::copy(&file, &path).unwrap();
            let mut opts = rampart_data::Options::new(path);
            opts.max_rows = 200;
            let _ = rampart_data::run(&opts, &mut |_, _| {});
        }
    }
}

#[test]
fn schema_parser_survives_the_corpus() {
    for file in corpus("schema") {
        let text = std::fs::read_to_string(&file).unwrap();
        let _ = rampart_data::schema::Schema::parse(&file, &text);
    }
}
