//! Any bytes as a .parquet file: the reader and every streaming check must return rows or an error, never panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("input.parquet");
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let mut opts = rampart_data::Options::new(path);
    opts.max_rows = 200;
    let _ = rampart_data::run(&opts, &mut |_, _| {});
});
