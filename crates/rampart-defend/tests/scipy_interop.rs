//! Interoperability with scipy, the reference the sanitisers and the Shapiro–Wilk test must match: the same
//! pseudo-random inputs go to `python3` with scipy (from PATH) and to Rampart, and the outputs are compared.
//! Without scipy the test skips, unless `RAMPART_REQUIRE_PEERS=1`, when it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test helpers: a failure here is a test failure"
)]

use std::process::Command;

use rampart_defend::sanitise::{gaussian, median, ImageShape};
use rampart_defend::shapiro::shapiro_wilk;

const SCRIPT: &str = r#"
import json, sys
import numpy as np
from scipy import ndimage, stats
rng = np.random.default_rng(11)
out = {"images": [], "samples": []}
for h, w in [(8, 8), (5, 7), (3, 3)]:
    a = rng.random((h, w)).astype(np.float32)
    out["images"].append({"h": h, "w": w, "a": a.ravel().tolist(),
        "median": {str(s): ndimage.median_filter(a, size=s).ravel().tolist() for s in (2, 3, 4, 5)},
        "gauss": {str(g): ndimage.gaussian_filter(a.astype(np.float64), g).ravel().tolist() for g in (0.5, 1.3)}})
for n in (4, 5, 11, 12, 40, 300):
    x = rng.gamma(2.0, size=n)
    r = stats.shapiro(x)
    out["samples"].append({"x": x.tolist(), "w": float(r.statistic), "p": float(r.pvalue)})
json.dump(out, sys.stdout)
"#;

fn scipy() -> Option<serde_json::Value> {
    let output = Command::new("python3").arg("-c").arg(SCRIPT).output();
    match output {
        Ok(o) if o.status.success() => Some(serde_json::from_slice(&o.stdout).unwrap()),
        other => {
            let why = match other {
                Ok(o) => String::from_utf8_lossy(&o.stderr).into_owned(),
                Err(e) => e.to_string(),
            };
            assert!(
                std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
                "scipy is required (RAMPART_REQUIRE_PEERS=1) but python3 -c 'import scipy' failed: {why}"
            );
            eprintln!("skipping: python3 with scipy not found ({why})");
            None
        }
    }
}

fn floats(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

#[test]
fn filters_and_shapiro_wilk_match_scipy() {
    let Some(reference) = scipy() else { return };
    for image in reference["images"].as_array().unwrap() {
        let shape = ImageShape {
            height: image["h"].as_u64().unwrap() as usize,
            width: image["w"].as_u64().unwrap() as usize,
            channels: 1,
        };
        let a: Vec<f32> = floats(&image["a"]).iter().map(|&v| v as f32).collect();
        for (size, want) in image["median"].as_object().unwrap() {
            let mut got = a.clone();
            median(&mut got, shape, size.parse().unwrap());
            let want = floats(want);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| (f64::from(*g) - w).abs() < 1e-7),
                "median {size} on {shape:?}"
            );
        }
        for (sigma, want) in image["gauss"].as_object().unwrap() {
            let mut got = a.clone();
            gaussian(&mut got, shape, sigma.parse().unwrap());
            let want = floats(want);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(g, w)| (f64::from(*g) - w).abs() < 1e-5),
                "gaussian {sigma} on {shape:?}"
            );
        }
    }
    for sample in reference["samples"].as_array().unwrap() {
        let x = floats(&sample["x"]);
        let got = shapiro_wilk(&x).unwrap();
        let (w, p) = (sample["w"].as_f64().unwrap(), sample["p"].as_f64().unwrap());
        assert!(
            (got.w - w).abs() < 2e-5,
            "n={}: W {} vs scipy {w}",
            x.len(),
            got.w
        );
        assert!(
            (got.p_value - p).abs() < 1e-4 + 1e-3 * p,
            "n={}: p {} vs scipy {p}",
            x.len(),
            got.p_value
        );
    }
}
