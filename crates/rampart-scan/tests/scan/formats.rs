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
    let dup = r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}"#;
    let r = assert_finding(
        &safetensors(dup, &[0u8; 2]),
        "safetensors.malformed",
        Severity::Medium,
    );
    assert!(r.findings.iter().any(|f| f.message.contains("twice")));
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

#[test]
fn directories_are_walked_and_missing_paths_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
    std::fs::write(dir.path().join("a/b/model.bin"), payload("os", "system")).unwrap();
    std::fs::write(dir.path().join("a/config.json"), b"{\"hidden\": 64}").unwrap();
    std::fs::write(
        dir.path().join("weights.safetensors"),
        safetensors(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
    )
    .unwrap();
    let r = rampart_scan::scan_path(dir.path(), &rampart_scan::Options::default()).unwrap();
    assert_eq!(r.files.len(), 3);
    assert_eq!(r.max_severity(), Some(Severity::Critical));
    assert!(
        r.findings.iter().all(|f| f.path.ends_with("model.bin")),
        "{:#?}",
        r.findings
    );
    let missing =
        rampart_scan::scan_path(&dir.path().join("nope"), &rampart_scan::Options::default());
    assert!(missing.unwrap_err().to_string().contains("cannot read"));
}

#[cfg(unix)]
#[test]
fn onnx_external_data_through_a_symlink() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), b"x").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("secret"),
        dir.path().join("weights.bin"),
    )
    .unwrap();
    let tensor = Pb::new()
        .str(8, "w")
        .msg(13, Pb::new().str(1, "location").str(2, "weights.bin"))
        .varint(14, 1);
    let model = Pb::new()
        .varint(1, 8)
        .msg(7, Pb::new().msg(1, Pb::new().str(4, "Relu")).msg(5, tensor))
        .msg(8, Pb::new().varint(2, 17));
    std::fs::write(dir.path().join("model.onnx"), &model.0).unwrap();
    let r = rampart_scan::scan_path(
        &dir.path().join("model.onnx"),
        &rampart_scan::Options::default(),
    )
    .unwrap();
    assert!(
        r.findings
            .iter()
            .any(|f| f.rule == "onnx.external-data-escape" && f.message.contains("symbolic link")),
        "{:#?}",
        r.findings
    );
}
