//! The evaluator on the digits example: the engine agrees with tract, attacks lower accuracy within their budgets,
//! black-box attacks work on flat inputs, the privacy measurements behave, and bad input is refused.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failure is the test's verdict"
)]

use std::path::{Path, PathBuf};

use rampart_eval::data::Dataset;
use rampart_eval::extraction::extraction;
use rampart_eval::hsj::{hop_skip_jump, HsjConfig};
use rampart_eval::membership::{membership, roc};
use rampart_eval::square::{square_attack, SquareConfig};
use rampart_eval::target::{accuracy, InferScorer, Scorer};
use rampart_eval::whitebox::{distances, fgsm, pgd, Bounds, Norm, PgdConfig};
use rampart_eval::{Engine, EvalError};
use rampart_infer::OnnxModel;

const BOUNDS: Bounds = Bounds { min: 0.0, max: 1.0 };

fn digits(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/digits")
        .join(path)
}

fn test_rows(n: usize) -> Dataset {
    let mut d = Dataset::from_path(&digits("test.csv"), "label").unwrap();
    d.truncate(n);
    d
}

fn models() -> Vec<PathBuf> {
    let mut out = vec![digits("model/model.onnx")];
    let cnn = digits("model_cnn/model.onnx");
    if cnn.exists() {
        out.push(cnn);
    }
    out
}

fn load(path: &Path) -> (Engine, InferScorer<OnnxModel>) {
    let bytes = std::fs::read(path).unwrap();
    let engine = Engine::from_onnx(&bytes).unwrap();
    let tract = InferScorer::new(OnnxModel::from_bytes("m", &bytes).unwrap(), 64).unwrap();
    (engine, tract)
}

#[test]
fn the_engine_computes_the_same_logits_as_tract() {
    let data = test_rows(450);
    for path in models() {
        let (engine, tract) = load(&path);
        let mine = engine.logits(&data.x).unwrap();
        let theirs = tract.scores(&data.x).unwrap();
        let worst = mine
            .iter()
            .zip(&theirs)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-3, "{}: logits differ by {worst}", path.display());
    }
}

#[test]
fn pgd_is_at_least_as_strong_as_fgsm_and_stays_in_budget() {
    let data = test_rows(120);
    for path in models() {
        let (engine, tract) = load(&path);
        let clean = accuracy(&tract.scores(&data.x).unwrap(), 10, &data.labels);
        let f = fgsm(&engine, &data.x, &data.labels, Norm::Linf, 0.1, BOUNDS).unwrap();
        let cfg = PgdConfig {
            norm: Norm::Linf,
            eps: 0.1,
            step: 0.01,
            steps: 40,
            restarts: 1,
            bounds: BOUNDS,
            seed: 0,
        };
        let p = pgd(&engine, &data.x, &data.labels, &cfg).unwrap();
        let acc_f = accuracy(&tract.scores(&f.x).unwrap(), 10, &data.labels);
        let acc_p = accuracy(&tract.scores(&p.x).unwrap(), 10, &data.labels);
        assert!(acc_f < clean - 0.1, "FGSM {acc_f} vs clean {clean}");
        assert!(acc_p <= acc_f, "PGD {acc_p} vs FGSM {acc_f}");
        for adv in [&f.x, &p.x] {
            let d = distances(adv, &data.x, 64, Norm::Linf);
            assert!(d.iter().all(|&v| v <= 0.1 + 1e-6));
            assert!(adv.iter().all(|&v| (0.0..=1.0).contains(&v)));
        }
        // L2 with restarts.
        let cfg = PgdConfig {
            norm: Norm::L2,
            eps: 1.0,
            step: 0.1,
            steps: 20,
            restarts: 2,
            bounds: BOUNDS,
            seed: 1,
        };
        let p2 = pgd(&engine, &data.x, &data.labels, &cfg).unwrap();
        assert!(distances(&p2.x, &data.x, 64, Norm::L2)
            .iter()
            .all(|&v| v <= 1.0 + 1e-4));
        assert!(accuracy(&tract.scores(&p2.x).unwrap(), 10, &data.labels) < clean);
    }
}

#[test]
fn square_attack_works_on_flat_and_image_layouts() {
    let data = test_rows(48);
    let (_, tract) = load(&digits("model/model.onnx"));
    let clean = accuracy(&tract.scores(&data.x).unwrap(), 10, &data.labels);
    for (norm, eps, image) in [
        (Norm::Linf, 0.1, [1, 1, 64]),
        (Norm::Linf, 0.1, [1, 8, 8]),
        (Norm::L2, 1.0, [1, 8, 8]),
    ] {
        let cfg = SquareConfig {
            norm,
            eps,
            queries: 300,
            p_init: 0.8,
            image,
            bounds: BOUNDS,
            seed: 0,
        };
        let out = square_attack(&tract, &data.x, &data.labels, &cfg).unwrap();
        let acc = accuracy(&tract.scores(&out.x).unwrap(), 10, &data.labels);
        assert!(acc < clean, "{norm:?} {image:?}: {acc} vs {clean}");
        assert!(out.queries.iter().all(|&q| q <= 300));
        assert!(distances(&out.x, &data.x, 64, norm)
            .iter()
            .all(|&v| v <= eps + 1e-4));
    }
}

#[test]
fn hop_skip_jump_finds_confirmed_adversarial_examples() {
    let data = test_rows(16);
    let (_, tract) = load(&digits("model/model.onnx"));
    let cfg = HsjConfig {
        norm: Norm::L2,
        queries: 600,
        init_evals: 50,
        max_evals: 200,
        bounds: BOUNDS,
        seed: 0,
    };
    let out = hop_skip_jump(&tract, &data.x, &data.labels, &cfg).unwrap();
    let pred = rampart_eval::target::argmax_rows(&tract.scores(&out.x).unwrap(), 10);
    let found = out.distance.iter().filter(|d| d.is_finite()).count();
    assert!(found >= 12, "found {found} of 16");
    for ((d, p), l) in out.distance.iter().zip(&pred).zip(&data.labels) {
        if d.is_finite() {
            assert_ne!(
                p, l,
                "a claimed adversarial example is classified correctly"
            );
        }
    }
    assert!(out.queries.iter().all(|&q| q <= 600));
}

#[test]
fn membership_and_extraction_measure_something_real() {
    let (_, tract) = load(&digits("model/model.onnx"));
    let train = Dataset::from_path(&digits("train.csv"), "label").unwrap();
    let test = test_rows(450);
    let sm = tract.scores(&train.x).unwrap();
    let so = tract.scores(&test.x).unwrap();
    let scores = membership(&sm, &train.labels, &so, &test.labels, 10).unwrap();
    for s in &scores {
        assert!(s.auc > 0.5 && s.auc <= 1.0, "{s:?}");
    }
    // The same rows as members and non-members leak nothing.
    let same = membership(&so, &test.labels, &so, &test.labels, 10).unwrap();
    assert!(same.iter().all(|s| (s.auc - 0.5).abs() < 1e-9), "{same:?}");
    let half = 225 * 64;
    let points = extraction(
        &tract,
        &test.x[..half],
        &test.x[half..],
        &test.labels[225..],
        1000,
        BOUNDS,
        0,
    )
    .unwrap();
    assert_eq!(
        points.iter().map(|p| p.queries).collect::<Vec<_>>(),
        vec![10, 30, 100, 300, 1000]
    );
    assert!(points.last().unwrap().agreement > points[0].agreement);
    assert!(points.last().unwrap().agreement > 0.8, "{points:?}");
}

#[test]
fn roc_of_separated_and_identical_scores() {
    assert_eq!(roc(&[3.0, 4.0], &[1.0, 2.0]), (1.0, 1.0));
    assert_eq!(roc(&[1.0, 2.0], &[3.0, 4.0]).0, 0.0);
    assert_eq!(roc(&[1.0, 1.0], &[1.0, 1.0]).0, 0.5);
}

#[test]
fn bad_models_are_refused_with_the_cause() {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/eval/corpus/onnx_graph");
    let err =
        Engine::from_onnx(&std::fs::read(corpus.join("unsupported.onnx")).unwrap()).unwrap_err();
    assert!(
        err.to_string().contains("unsupported operator `Sigmoid`"),
        "{err}"
    );
    assert!(matches!(
        Engine::from_onnx(b"not a model"),
        Err(EvalError::Model(_))
    ));
    let truncated = std::fs::read(corpus.join("truncated.onnx")).unwrap();
    assert!(Engine::from_onnx(&truncated).is_err());
}

/// Runs the parsers over the committed fuzz corpus, so CI exercises what the fuzzers start from.
#[test]
fn fuzz_corpus_never_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/eval/corpus");
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("onnx_graph")).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        if let Ok(engine) = Engine::from_onnx(&bytes) {
            let x = vec![0.5; engine.features()];
            engine.loss_gradient(&x, &[0]).unwrap();
        }
        seen += 1;
    }
    for entry in std::fs::read_dir(root.join("csv")).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let _ = Dataset::parse(&text, "label");
        seen += 1;
    }
    assert!(seen >= 8);
}
