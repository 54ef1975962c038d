//! The label audit against cleanlab itself: the same out-of-fold probabilities in, the same label issues out.
//! The peer is `python3` with `cleanlab` on PATH; without it the test fails when `RAMPART_REQUIRE_PEERS=1` and
//! skips otherwise.
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::process::Command;

use rampart_data::checks::{labels, logreg};
use rampart_data::matrix::Matrix;

fn peer_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import cleanlab.filter, numpy"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
            "python3 with cleanlab is not on PATH (run scripts/setup-test-env.sh)"
        );
        eprintln!("skipping: python3 with cleanlab is not on PATH");
    }
    ok
}

#[test]
fn same_label_issues_as_cleanlab_on_noisy_digits() {
    if !peer_available() {
        return;
    }
    let (_, rows) = common::read_digits();
    let n = rows.len();
    let mut rng = rampart_data::matrix::Rng::new(7);
    let mut noisy: Vec<usize> = rows.iter().map(|r| r.1).collect();
    for i in common::choose(n, n / 10, 99) {
        let shift = 1 + rng.below(9);
        noisy[i] = (noisy[i] + shift) % 10;
    }
    let data: Vec<f64> = rows
        .iter()
        .flat_map(|r| r.0.iter().map(|v| v.parse::<f64>().unwrap()))
        .collect();
    let x = Matrix::from_vec(n, 64, data).unwrap();
    let probs = logreg::cross_val_proba(&x, &noisy, 10, 5, logreg::LogRegOptions::default());
    let ours = labels::find_label_issues(&noisy, &probs);

    let dir = tempfile::tempdir().unwrap();
    let probs_path = dir.path().join("probs.csv");
    let labels_path = dir.path().join("labels.txt");
    let mut text = (0..10)
        .map(|c| format!("p{c}"))
        .collect::<Vec<_>>()
        .join(",");
    text.push('\n');
    for row in probs.iter_rows() {
        text.push_str(
            &row.iter()
                .map(|v| format!("{v:.17e}"))
                .collect::<Vec<_>>()
                .join(","),
        );
        text.push('\n');
    }
    std::fs::write(&probs_path, text).unwrap();
    std::fs::write(
        &labels_path,
        noisy
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n"),
    )
    .unwrap();
    let script = "import sys, numpy as np\nfrom cleanlab.filter import find_label_issues\n\
        p = np.loadtxt(sys.argv[1], delimiter=',', skiprows=1)\nl = np.loadtxt(sys.argv[2], dtype=int)\n\
        print(' '.join(str(i) for i in np.flatnonzero(find_label_issues(l, p))))\n";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&probs_path)
        .arg(&labels_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: Vec<usize> = String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(|v| v.parse().unwrap())
        .collect();
    let mut mine = ours.issues.clone();
    mine.sort_unstable();
    assert_eq!(mine, theirs, "rampart and cleanlab disagree");
    assert!(mine.len() > 50, "found {}", mine.len());
}
