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

/// Files written by the real libraries (NumPy, joblib, h5py; from `scripts/requirements-peers.txt`).
const REAL_LAYOUTS: &str = r#"
import collections, json, os, pickle, sys
import h5py, joblib, numpy as np
out = sys.argv[1]
np.save(os.path.join(out, "array.npy"), np.arange(10.0))
np.savez_compressed(os.path.join(out, "arrays.npz"), a=np.arange(3), b=np.ones((2, 2), dtype=np.float32))
for p in range(6):
    with open(os.path.join(out, f"numpy_p{p}.pkl"), "wb") as f:
        pickle.dump({"a": np.arange(5, dtype=np.float32), "s": np.float64(1.5), "od": collections.OrderedDict(x=np.int64(3)), "rng": np.random.default_rng(0)}, f, protocol=p)
joblib.dump({"w": np.arange(100.0), "o": np.array([1, "x"], dtype=object), "m": np.ones((3, 4), dtype=np.float32)}, os.path.join(out, "model.joblib"))
joblib.dump([np.arange(5)] * 3, os.path.join(out, "p2.joblib"), protocol=2)
joblib.dump(np.arange(50), os.path.join(out, "z.joblib"), compress=3)
dense = {"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"name": f"d{i}", "units": 8}} for i in range(300)]}}
lam = {"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Lambda", "config": {"name": "evil", "function": ["YWJj", None, None], "function_type": "lambda"}}]}}
for name, cfg in [("dense.h5", dense), ("lambda.h5", lam)]:
    with h5py.File(os.path.join(out, name), "w") as f:
        f.attrs["keras_version"] = "2.13.1"
        f.attrs["model_config"] = json.dumps(cfg)
        f.create_group("model_weights").create_dataset("kernel", data=np.random.rand(200, 200))
"#;

#[test]
fn real_layouts_from_numpy_joblib_and_h5py() {
    let python = Command::new("python3")
        .args(["-c", "import h5py, joblib, numpy"])
        .output();
    if !python.is_ok_and(|o| o.status.success()) {
        let required = std::env::var("RAMPART_REQUIRE_PEERS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "python3 with numpy, joblib and h5py is not on PATH; run scripts/setup-test-env.sh"
        );
        eprintln!("skipping: python3 with numpy, joblib and h5py is not on PATH");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new("python3")
        .args(["-c", REAL_LAYOUTS])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let report = rampart_scan::scan_path(dir.path(), &rampart_scan::Options::default()).unwrap();
    assert_eq!(report.files.len(), 13);
    for f in &report.findings {
        let expected = (f.path.ends_with("lambda.h5") && f.rule == "keras.lambda")
            || (f.rule == "numpy.object-array" && f.severity == Severity::Low);
        assert!(expected, "unexpected finding: {f}");
    }
    assert!(report
        .findings
        .iter()
        .any(|f| f.path.ends_with("lambda.h5") && f.severity == Severity::Critical));
    let dense = report
        .files
        .iter()
        .find(|f| f.path.ends_with("dense.h5"))
        .unwrap();
    assert!(
        dense.formats.contains(&"keras-hdf5".to_string()),
        "{dense:?}"
    );
}
