//! Runs the parsers over the committed fuzz corpus (`fuzz/defend/corpus/`), so CI exercises what the fuzzers found.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure here is a test failure"
)]

use std::path::Path;

use rampart_defend::image_input::{decode_one, ImageLimits};
use rampart_defend::profile::Profile;
use rampart_defend::sanitise::ImageShape;
use rampart_defend::watermark::{read_query_log, WatermarkKey};

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/defend/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus for {target}");
    files
}

#[test]
fn decode_image_corpus() {
    let shape = ImageShape {
        height: 8,
        width: 8,
        channels: 1,
    };
    for (name, bytes) in corpus("decode_image") {
        let result = decode_one(&bytes, shape, &ImageLimits::default());
        match name.as_str() {
            "gray8x8.png" | "gray8x8.jpg" => assert!(result.is_ok(), "{name}: {result:?}"),
            _ => assert!(result.is_err(), "{name} must be refused"),
        }
    }
}

#[test]
fn profile_csv_corpus() {
    for (name, bytes) in corpus("profile_csv") {
        let result = Profile::from_csv(bytes.as_slice(), "label", 16);
        assert_eq!(result.is_ok(), name == "small.csv", "{name}");
    }
}

#[test]
fn query_log_corpus() {
    for (name, bytes) in corpus("query_log") {
        let log = read_query_log(bytes.as_slice(), "label", None);
        assert_eq!(log.is_ok(), name == "small.csv", "{name}");
        let key = WatermarkKey::from_hex(&String::from_utf8_lossy(&bytes));
        assert_eq!(key.is_ok(), name == "key.txt", "{name}");
    }
}
