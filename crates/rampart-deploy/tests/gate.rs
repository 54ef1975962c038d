#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The deployment gate refuses an unsigned, a tampered and a malicious model, and the slot keeps the old
//! version serving through each refusal.

mod common;

use std::sync::Arc;

use rampart_deploy::{check, Error, ModelSlot};
use rampart_seal::MemoryFile;

/// "Builds" a model by naming its config: enough to tell versions apart.
fn build(files: &[MemoryFile]) -> Result<String, String> {
    files
        .iter()
        .find(|f| f.path.as_os_str() == "config.json")
        .map(|f| String::from_utf8_lossy(&f.data).into_owned())
        .ok_or_else(|| "no config.json".to_owned())
}

fn failed(err: Error) -> Vec<&'static str> {
    match err {
        Error::Refused(report) => {
            assert!(!report.passed);
            report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| c.name)
                .collect()
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[test]
fn old_version_keeps_serving_after_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key();
    let config = common::config(&key);
    let log_dir = tmp.path().join("audit");
    let log = Arc::new(
        rampart_log::Log::create(
            &log_dir,
            "rampart.test/gate",
            rampart_log::Options::default(),
        )
        .unwrap(),
    );
    let slot = ModelSlot::new(config.clone(), Some(Arc::clone(&log)), "gateway");
    assert!(slot.current().is_none());

    let v1 = tmp.path().join("v1");
    common::good_model(&v1, &key, "v1");
    assert!(
        check(&v1, &config).passed,
        "{}",
        check(&v1, &config).summary()
    );
    slot.load_dir(&v1, build).unwrap();
    assert_eq!(slot.current().unwrap().model, "{\"version\": \"v1\"}");

    // Unsigned.
    let unsigned = tmp.path().join("unsigned");
    common::write_model(
        &unsigned,
        &[("config.json", b"{\"version\": \"unsigned\"}")],
    );
    assert!(!check(&unsigned, &config).passed);
    assert_eq!(
        failed(slot.load_dir(&unsigned, build).unwrap_err()),
        ["signature"]
    );
    assert_eq!(slot.current().unwrap().model, "{\"version\": \"v1\"}");

    // Signed by a key the gate does not trust.
    let foreign = tmp.path().join("foreign");
    common::good_model(&foreign, &common::key(), "foreign");
    assert_eq!(
        failed(slot.load_dir(&foreign, build).unwrap_err()),
        ["signature"]
    );

    // Tampered after signing.
    let tampered = tmp.path().join("tampered");
    common::good_model(&tampered, &key, "v2");
    std::fs::write(tampered.join("config.json"), b"{\"version\": \"evil\"}").unwrap();
    assert!(!check(&tampered, &config).passed);
    let problems = failed(slot.load_dir(&tampered, build).unwrap_err());
    assert_eq!(problems, ["signature"]);
    assert_eq!(slot.current().unwrap().model, "{\"version\": \"v1\"}");

    // Signed by the trusted key, but malicious: the scan refuses it.
    let malicious = tmp.path().join("malicious");
    common::write_model(
        &malicious,
        &[
            ("model.pkl", common::MALICIOUS_PICKLE),
            ("config.json", b"{}"),
        ],
    );
    common::sign(&malicious, &key);
    let report = check(&malicious, &config);
    assert!(!report.passed);
    assert_eq!(
        failed(slot.load_dir(&malicious, build).unwrap_err()),
        ["scan"]
    );
    assert_eq!(slot.current().unwrap().model, "{\"version\": \"v1\"}");

    // A good new version is swapped in.
    let v2 = tmp.path().join("v2");
    common::good_model(&v2, &key, "v2");
    slot.load_dir(&v2, build).unwrap();
    assert_eq!(slot.current().unwrap().model, "{\"version\": \"v2\"}");

    // Every decision is in the log: 2 loads and 4 refusals.
    drop(slot);
    let log = Arc::try_unwrap(log).unwrap();
    let checkpoint = log.close().unwrap();
    assert_eq!(checkpoint.size, 6);
}

#[test]
fn policy_limits_refuse() {
    let tmp = tempfile::tempdir().unwrap();
    let key = common::key();
    let mut config = common::config(&key);
    let dir = tmp.path().join("m");
    common::good_model(&dir, &key, "v1");
    config.policy.allowed_extensions = vec!["onnx".into()];
    let report = check(&dir, &config);
    assert!(!report.passed);
    assert!(
        report.summary().contains("config.json"),
        "{}",
        report.summary()
    );
    config.policy.allowed_extensions = vec!["onnx".into(), "json".into()];
    config.policy.max_bytes = 1000;
    assert!(!check(&dir, &config).passed);
    config.policy.max_bytes = 1 << 30;
    assert!(check(&dir, &config).passed);
}
