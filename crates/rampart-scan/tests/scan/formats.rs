//! Malformed structure in the formats with a well-formedness contract: safetensors, GGUF, NumPy.

use rampart_scan::Severity;

use crate::assert_finding;
use crate::build::*;

#[test]
fn safetensors_out_of_bounds_and_overlap() {
    let oob = r#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    assert_finding(
        &safetensors(oob, &[0u8; 8]),
        "safetensors.malformed",
        Severity::Medium,
    );
    let overlap = r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    assert_finding(
        &safetensors(overlap, &[0u8; 12]),
        "safetensors.malformed",
        Severity::Medium,
    );
    let mismatch = r#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    assert_finding(
        &safetensors(mismatch, &[0u8; 8]),
        "safetensors.malformed",
        Severity::Medium,
    );
    let not_json = "{\"a\": [1, 2";
    assert_finding(
        &safetensors(not_json, &[0u8; 8]),
        "safetensors.malformed",
        Severity::Medium,
    );
    let hidden = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    assert_finding(
        &safetensors(hidden, &[0u8; 64]),
        "safetensors.malformed",
        Severity::Low,
    );
}

#[test]
fn gguf_malformed_headers() {
    let mut huge = gguf(&[], &[]);
    huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_finding(&huge, "gguf.malformed", Severity::Medium);
    let mut bad_len = gguf(&[("general.name", "x")], &[]);
    // The length of the first key (after the 24-byte header) claims far more than the file.
    bad_len[24..32].copy_from_slice(&(1u64 << 40).to_le_bytes());
    assert_finding(&bad_len, "gguf.malformed", Severity::Medium);
    let mut oob = gguf(&[], &[("t", 64)]);
    oob.truncate(oob.len() - 128);
    assert_finding(&oob, "gguf.malformed", Severity::Medium);
    let mut version = gguf(&[], &[]);
    version[4] = 9;
    assert_finding(&version, "gguf.malformed", Severity::Medium);
}

#[test]
fn numpy_header_without_descr() {
    let data = npy("'<f8'", "(1,)", &[0u8; 8]);
    let at = data.windows(5).position(|w| w == b"descr").unwrap();
    let mut broken = data.clone();
    broken[at + 2] = b'x';
    assert_finding(&broken, "numpy.malformed", Severity::Medium);
}

#[test]
fn unsupported_compression_is_not_clean() {
    assert_finding(
        b"BZh91AY&SY\x00\x00",
        "format.unsupported-compression",
        Severity::Medium,
    );
    assert_finding(
        b"\xfd7zXZ\x00\x00\x04",
        "format.unsupported-compression",
        Severity::Medium,
    );
}
