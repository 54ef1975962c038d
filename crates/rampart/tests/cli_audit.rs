//! `rampart audit`, `seal` and `unseal` from the outside: trycmd cases pin messages and exit codes, and a
//! flow test runs init, append, verify, tamper, prove and show, and seal/unseal recording into the log.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

use std::path::Path;
use std::process::{Command, Output};

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .case("tests/cmd/audit-*.toml")
        .case("tests/cmd/seal-*.toml")
        .case("tests/cmd/unseal-*.toml");
}

fn rampart(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RAMPART_AUDIT_LOG")
        .env("XDG_STATE_HOME", cwd.join("state"))
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn audit_flow_detects_tampering_and_forks() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let o = rampart(
        &["audit", "init", "log", "--origin", "example.com/audit"],
        cwd,
    );
    assert!(o.status.success(), "{}", text(&o));
    let vkey = std::fs::read_to_string(cwd.join("log/log.vkey"))
        .unwrap()
        .trim()
        .to_owned();
    for i in 0..20 {
        let o = rampart(
            &[
                "audit",
                "append",
                "log",
                &format!("{{\"action\":\"test\",\"n\":{i}}}"),
            ],
            cwd,
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), i.to_string());
    }
    assert_eq!(
        rampart(&["audit", "append", "log", "not json"], cwd)
            .status
            .code(),
        Some(2)
    );
    let o = rampart(&["audit", "verify", "log", "--key", &vkey], cwd);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("ok: 20 entries verified"));

    let o = rampart(
        &[
            "audit", "prove", "log", "7", "--from", "5", "--format", "json",
        ],
        cwd,
    );
    assert!(o.status.success(), "{}", text(&o));
    let proof: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(proof["tree_size"], 20);
    assert_eq!(proof["consistency"]["from"], 5);
    assert_eq!(
        rampart(&["audit", "prove", "log", "20"], cwd).status.code(),
        Some(2)
    );
    let o = rampart(
        &["audit", "show", "log", "--from", "3", "--count", "2"],
        cwd,
    );
    assert!(
        text(&o).contains("3\t{\"action\":\"test\",\"n\":3}"),
        "{}",
        text(&o)
    );

    // The state remembers 20 entries: a log truncated and re-signed by the key holder is caught.
    let backup = cwd.join("backup");
    std::fs::create_dir(&backup).unwrap();
    for f in ["checkpoint", "log.key", "log.vkey"] {
        std::fs::copy(cwd.join("log").join(f), backup.join(f)).unwrap();
    }
    let key =
        rampart_log::SignerKey::parse(&std::fs::read_to_string(cwd.join("log/log.key")).unwrap())
            .unwrap();
    let view = rampart_log::LogView::open(&cwd.join("log"), key.verifier()).unwrap();
    let shorter = rampart_log::Checkpoint {
        origin: key.name().into(),
        size: 15,
        root: view.root_at(15).unwrap(),
    };
    std::fs::write(cwd.join("log/checkpoint"), shorter.sign(&key).unwrap()).unwrap();
    let o = rampart(&["audit", "verify", "log", "--key", &vkey], cwd);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("shrank"), "{}", text(&o));
    std::fs::copy(backup.join("checkpoint"), cwd.join("log/checkpoint")).unwrap();

    // A flipped byte in an entry is named.
    let bundle = cwd.join("log/tile/entries/000.p/20");
    let mut data = std::fs::read(&bundle).unwrap();
    let at = data.len() - 3;
    data[at] ^= 1;
    std::fs::write(&bundle, data).unwrap();
    let o = rampart(
        &["audit", "verify", "log", "--key", &vkey, "--format", "json"],
        cwd,
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["first_bad_entry"], 19);
}

#[test]
fn seal_and_unseal_record_into_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert!(rampart(&["audit", "init", "log"], cwd).status.success());
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    std::fs::write(cwd.join("model.onnx"), vec![9u8; 100_000]).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .current_dir(cwd)
            .env("RAMPART_AUDIT_LOG", cwd.join("log"))
            .env(
                "RAMPART_AGE_IDENTITY",
                age::secrecy::ExposeSecret::expose_secret(&identity.to_string()),
            )
            .output()
            .unwrap()
    };
    let o = run(&["seal", "model.onnx", "-r", &recipient, "-o", "model.age"]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["unseal", "model.age", "-o", "restored.onnx"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        std::fs::read(cwd.join("restored.onnx")).unwrap(),
        vec![9u8; 100_000]
    );
    let o = run(&["unseal", "model.age", "-o", "restored.onnx"]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an existing output is refused: {}",
        text(&o)
    );
    let o = rampart(&["audit", "show", "log", "--format", "json"], cwd);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let actions: Vec<_> = shown["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["entry"]["action"].clone())
        .collect();
    assert_eq!(
        actions,
        [serde_json::json!("seal"), serde_json::json!("unseal")]
    );
    assert!(shown["entries"][0]["entry"]["subject"]["sealed"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));
}

#[test]
fn sign_records_into_the_log_and_fails_closed_without_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    assert!(rampart(&["audit", "init", "log"], cwd).status.success());
    let o = rampart(&["keygen", "--out", "keys"], cwd);
    assert!(o.status.success(), "{}", text(&o));
    std::fs::create_dir(cwd.join("model")).unwrap();
    std::fs::write(cwd.join("model/weights.bin"), vec![7u8; 4096]).unwrap();
    let sign = |log: &str, signature: &str| {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args([
                "sign",
                "model",
                "--key",
                "keys/private.pem",
                "--signature",
                signature,
            ])
            .current_dir(cwd)
            .env("RAMPART_AUDIT_LOG", cwd.join(log))
            .output()
            .unwrap()
    };
    let o = sign("log", "model.sig");
    assert!(o.status.success(), "{}", text(&o));
    let o = rampart(&["audit", "show", "log", "--format", "json"], cwd);
    let shown: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let entry = &shown["entries"][0]["entry"];
    assert_eq!(entry["action"], "sign");
    assert!(entry["subject"]["manifest"]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    // A named log that cannot take the record: the command fails and leaves no signature behind.
    let o = sign("no-such-log", "other.sig");
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(!cwd.join("other.sig").exists());
}
