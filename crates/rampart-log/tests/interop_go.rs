//! Checks checkpoints, tiles, inclusion and consistency proofs with Go's `golang.org/x/mod/sumdb/note` and
//! `sumdb/tlog` (Debian `golang-golang-x-mod-dev`): an implementation Rampart did not write.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `tests/fixtures/tlogcheck` offline in GOPATH mode against Debian's Go sources.
fn build_checker(out: &Path) -> Option<PathBuf> {
    let gopath = Path::new("/usr/share/gocode");
    let go_ok = Command::new("go")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !go_ok || !gopath.join("src/golang.org/x/mod/sumdb/tlog").is_dir() {
        assert!(
            !common::require_peers(),
            "go or golang-golang-x-mod-dev is missing (scripts/apt-packages.txt)"
        );
        eprintln!("skipping: go or golang-golang-x-mod-dev is not installed");
        return None;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tlogcheck/main.go");
    let bin = out.join("tlogcheck");
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&bin)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", gopath)
        .env("GOFLAGS", "")
        .env("GOPROXY", "off")
        .env("GOCACHE", out.join("gocache"))
        .env("HOME", out)
        .status()
        .unwrap();
    assert!(status.success(), "building the Go checker failed");
    Some(bin)
}

#[test]
fn go_verifies_checkpoints_tiles_and_proofs() {
    let tmp = tempfile::tempdir().unwrap();
    let Some(checker) = build_checker(tmp.path()) else {
        return;
    };
    let dir = tmp.path().join("log");
    // Sizes chosen to cross tile boundaries: a partial level 0 tile, full ones, a level 1 tile, a level 2 one.
    let log = common::make_log(&dir, 300);
    let old = log.checkpoint().unwrap();
    assert_eq!(old.size, 300);
    let old_note = tmp.path().join("old-checkpoint");
    std::fs::copy(dir.join("checkpoint"), &old_note).unwrap();
    for i in 300..66_000u64 {
        let _pending = log.submit(format!("{{\"n\":{i}}}").into_bytes()).unwrap();
    }
    log.close().unwrap();
    let view = common::view(&dir);
    assert_eq!(view.checkpoint().size, 66_000);
    for index in [0u64, 255, 256, 299, 4_097, 65_535, 65_999] {
        let from = (index < 300).then_some(300);
        let proof = tmp.path().join(format!("proof-{index}.json"));
        std::fs::write(&proof, common::proof_json(&view, index, from)).unwrap();
        let mut cmd = Command::new(&checker);
        cmd.arg(&dir)
            .arg(dir.join("log.vkey"))
            .arg(index.to_string())
            .arg(&proof);
        if from.is_some() {
            cmd.arg(&old_note);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "go rejected entry {index}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    }

    // The Go checker is not a rubber stamp: a wrong proof and a forged checkpoint fail.
    let proof = tmp.path().join("bad.json");
    let good = common::proof_json(&view, 5, None);
    let mut json: serde_json::Value = serde_json::from_str(&good).unwrap();
    json["inclusion"][0] = serde_json::json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    std::fs::write(&proof, json.to_string()).unwrap();
    let out = Command::new(&checker)
        .arg(&dir)
        .arg(dir.join("log.vkey"))
        .arg("5")
        .arg(&proof)
        .output()
        .unwrap();
    assert!(!out.status.success());
    std::fs::write(&proof, &good).unwrap();
    let text = std::fs::read_to_string(dir.join("checkpoint")).unwrap();
    std::fs::write(dir.join("checkpoint"), text.replace("66000", "66001")).unwrap();
    let out = Command::new(&checker)
        .arg(&dir)
        .arg(dir.join("log.vkey"))
        .arg("5")
        .arg(&proof)
        .output()
        .unwrap();
    assert!(!out.status.success());
}
