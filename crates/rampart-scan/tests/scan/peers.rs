//! Against picklescan (PyPI): on the same samples, everything picklescan calls dangerous rampart calls critical, and
//! the benign samples both call clean. Rampart's extra catches (published bypasses) are covered in `malicious`.

use std::process::Command;

use rampart_scan::{Severity, Verdict};

use crate::build::*;
use crate::scan;

/// The picklescan on PATH, or `None` (the test then skips, or fails under `RAMPART_REQUIRE_PEERS=1`).
fn picklescan() -> Option<&'static str> {
    let found = Command::new("picklescan")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        let required = std::env::var("RAMPART_REQUIRE_PEERS").is_ok_and(|v| v == "1");
        assert!(!required, "picklescan is not on PATH; run scripts/setup-test-env.sh and put its bin directory on PATH");
        eprintln!("skipping: picklescan is not on PATH (scripts/setup-test-env.sh installs it)");
        return None;
    }
    Some("picklescan")
}

#[test]
fn agrees_with_picklescan_where_picklescan_sees() {
    let Some(bin) = picklescan() else { return };
    let dir = tempfile::tempdir().unwrap();
    let samples: Vec<(&str, Vec<u8>)> = vec![
        ("posix_system.pkl", payload("posix", "system")),
        ("builtins_eval.pkl", payload("builtins", "eval")),
        ("subprocess.pkl", payload("subprocess", "Popen")),
        ("runpy.pkl", payload("runpy", "run_path")),
        (
            "in_zip.pt",
            torch_zip(payload("os", "system"), &[floats(4)]),
        ),
        (
            "benign_state.pt",
            torch_zip(
                torch_state_dict(&[("w", 4), ("b", 2)]),
                &[floats(4), floats(2)],
            ),
        ),
        (
            "benign_optimizer.pt",
            torch_zip(torch_optimizer_state(), &[floats(4), floats(4)]),
        ),
        (
            "benign_dict.pkl",
            P::new()
                .proto(2)
                .empty_dict()
                .str("a")
                .int(1)
                .setitem()
                .stop()
                .done(),
        ),
    ];
    for (name, data) in &samples {
        let path = dir.path().join(name);
        std::fs::write(&path, data).unwrap();
        let out = Command::new(bin).arg("-p").arg(&path).output().unwrap();
        let peer_dangerous = out.status.code() == Some(1);
        let report = scan(data);
        let ours = report.max_severity();
        if peer_dangerous {
            assert_eq!(
                ours,
                Some(Severity::Critical),
                "{name}: picklescan flags it, rampart says {:#?}",
                report.findings
            );
        }
        if name.starts_with("benign") {
            assert!(
                !peer_dangerous,
                "{name}: picklescan flags a benign sample: {}",
                String::from_utf8_lossy(&out.stdout)
            );
            assert_eq!(
                report.verdict(Severity::Low),
                Verdict::Pass,
                "{name}: {:#?}",
                report.findings
            );
        } else {
            assert!(
                peer_dangerous,
                "{name}: picklescan misses it: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}
