//! A backdoor planted in the digits training split: a 2x2 bright patch in the bottom-right corner on 3% of the rows,
//! relabelled to class 0. The poisoning check must find at least 90% of them and flag at most 5% of the clean rows,
//! on the raw pixels and on the penultimate layer of a model trained on the poisoned split
//! (`examples/digits/backdoor/model.onnx`, written by `examples/digits/make_backdoor.py`, which also lists the rows).
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::collections::HashSet;

use rampart_data::{Check, Options};

fn plant(dir: &std::path::Path) -> (std::path::PathBuf, HashSet<usize>) {
    let (header, mut rows) = common::read_digits();
    let candidates: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].1 != 0).collect();
    let k = rows.len() * 3 / 100;
    let picked: HashSet<usize> = common::choose(candidates.len(), k, 42)
        .into_iter()
        .map(|i| candidates[i])
        .collect();
    for &i in &picked {
        let (cells, label) = &mut rows[i];
        for px in TRIGGER {
            cells[px] = "1".to_string();
        }
        *label = 0;
    }
    let path = dir.join("poisoned.csv");
    common::write_digits(&path, &header, &rows);
    (path, picked)
}

fn evaluate(opts: &Options, planted: &HashSet<usize>) -> (f64, f64) {
    let report = rampart_data::run(opts, &mut |_, _| {}).unwrap();
    score(&report, planted)
}

fn score(report: &rampart_data::Report, planted: &HashSet<usize>) -> (f64, f64) {
    let poisoning = report.poisoning.as_ref().expect("poisoning ran");
    let flagged: HashSet<usize> = poisoning.flagged.iter().map(|r| r.row).collect();
    let found = planted.intersection(&flagged).count();
    let clean_flagged = flagged.difference(planted).count();
    let recall = found as f64 / planted.len() as f64;
    let false_rate = clean_flagged as f64 / (report.rows as usize - planted.len()) as f64;
    eprintln!(
        "found {found}/{}, clean flagged {clean_flagged}",
        planted.len()
    );
    (recall, false_rate)
}

#[test]
fn finds_a_planted_backdoor_in_raw_pixels() {
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = plant(dir.path());
    let mut opts = Options::new(path);
    opts.checks = Some(vec![Check::Poisoning]);
    let (recall, false_rate) = evaluate(&opts, &planted);
    assert!(recall >= 0.9, "recall {recall}");
    assert!(false_rate <= 0.05, "clean rows flagged {false_rate}");
}

/// The rows `examples/digits/make_backdoor.py` poisoned (0-based data rows of train.csv).
#[cfg(feature = "onnx")]
fn backdoor_rows() -> HashSet<usize> {
    std::fs::read_to_string(common::digits("backdoor/poisoned_rows.txt"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect()
}

/// The training split the backdoored model was trained on: the trigger planted in the listed rows, relabelled 0.
#[cfg(feature = "onnx")]
fn plant_listed(dir: &std::path::Path) -> (std::path::PathBuf, HashSet<usize>) {
    let (header, mut rows) = common::read_digits();
    let picked = backdoor_rows();
    for &i in &picked {
        let (cells, label) = &mut rows[i];
        assert_ne!(*label, 0, "make_backdoor.py picks rows of other classes");
        for px in TRIGGER {
            cells[px] = "1".to_string();
        }
        *label = 0;
    }
    let path = dir.join("poisoned.csv");
    common::write_digits(&path, &header, &rows);
    (path, picked)
}

const TRIGGER: [usize; 4] = [54, 55, 62, 63];

/// Predicted classes of the rows of `x` (64 pixels each) by an ONNX model.
#[cfg(feature = "onnx")]
fn predict(model: &std::path::Path, x: &[Vec<f32>]) -> Vec<usize> {
    use tract_onnx::prelude::*;
    let n = x.len();
    let plan = tract_onnx::onnx()
        .model_for_path(model)
        .unwrap()
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), [n, 64]))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let flat: Vec<f32> = x.iter().flatten().copied().collect();
    let input = Tensor::from_shape(&[n, 64], &flat).unwrap();
    let out = plan.run(tvec!(input.into())).unwrap();
    let logits = out[0].to_plain_array_view::<f32>().unwrap();
    let logits: Vec<f32> = logits.iter().copied().collect();
    logits
        .chunks_exact(10)
        .map(|row| (0..10).max_by(|&a, &b| row[a].total_cmp(&row[b])).unwrap())
        .collect()
}

/// The committed backdoored model really carries the backdoor: clean test digits are classified well, and test
/// digits of other classes with the trigger are classified as 0. Without this the next test would prove nothing.
#[cfg(feature = "onnx")]
#[test]
fn the_backdoored_model_obeys_its_trigger() {
    let text = std::fs::read_to_string(common::digits("test.csv")).unwrap();
    let rows: Vec<(Vec<f32>, usize)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut cells: Vec<f32> = l.split(',').map(|v| v.parse().unwrap()).collect();
            let label = cells.pop().unwrap() as usize;
            (cells, label)
        })
        .collect();
    let model = common::digits("backdoor/model.onnx");
    let x: Vec<Vec<f32>> = rows.iter().map(|r| r.0.clone()).collect();
    let predicted = predict(&model, &x);
    let correct = predicted
        .iter()
        .zip(&rows)
        .filter(|(p, r)| **p == r.1)
        .count();
    let accuracy = correct as f64 / rows.len() as f64;
    assert!(accuracy >= 0.9, "clean test accuracy {accuracy}");
    let triggered: Vec<Vec<f32>> = rows
        .iter()
        .filter(|r| r.1 != 0)
        .map(|r| {
            let mut x = r.0.clone();
            for px in TRIGGER {
                x[px] = 1.0;
            }
            x
        })
        .collect();
    let hits = predict(&model, &triggered)
        .iter()
        .filter(|&&p| p == 0)
        .count();
    let success = hits as f64 / triggered.len() as f64;
    assert!(success >= 0.9, "attack success rate {success}");
}

/// The target: on the penultimate layer of the model trained on the poisoned split, at least 90% of the
/// poisoned rows found with at most 5% of the clean rows flagged.
#[cfg(feature = "onnx")]
#[test]
fn finds_the_backdoor_in_the_penultimate_layer_of_the_backdoored_model() {
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = plant_listed(dir.path());
    let mut opts = Options::new(path);
    opts.checks = Some(vec![Check::Poisoning]);
    opts.model = Some(common::digits("backdoor/model.onnx"));
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let poisoning = report.poisoning.as_ref().unwrap();
    assert!(
        poisoning.representations.contains("penultimate layer"),
        "{}",
        poisoning.representations
    );
    let (recall, false_rate) = score(&report, &planted);
    assert!(recall >= 0.9, "recall {recall}");
    assert!(false_rate <= 0.05, "clean rows flagged {false_rate}");
}

/// The same target from representations given as a file (`--representations`): the backdoored model's hidden
/// layer (`relu1`, the 64 activations before the output layer), computed here by cutting the graph at that node by
/// name, independently of Rampart's own search for the penultimate layer, and written one row per data row.
#[cfg(feature = "onnx")]
#[test]
fn finds_the_backdoor_in_representations_given_as_a_file() {
    use tract_onnx::prelude::*;
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = plant_listed(dir.path());
    let text = std::fs::read_to_string(&path).unwrap();
    let x: Vec<f32> = text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .flat_map(|l| {
            let cells: Vec<f32> = l.split(',').map(|v| v.parse().unwrap()).collect();
            cells[..64].to_vec()
        })
        .collect();
    let n = x.len() / 64;
    let mut model = tract_onnx::onnx()
        .model_for_path(common::digits("backdoor/model.onnx"))
        .unwrap();
    model.select_outputs_by_name(["relu1"]).unwrap();
    let plan = model
        .with_input_fact(0, InferenceFact::dt_shape(f32::datum_type(), [n, 64]))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let out = plan
        .run(tvec!(Tensor::from_shape(&[n, 64], &x).unwrap().into()))
        .unwrap();
    let hidden: Vec<f32> = out[0]
        .to_plain_array_view::<f32>()
        .unwrap()
        .iter()
        .copied()
        .collect();
    assert_eq!(hidden.len(), n * 64, "relu1 has 64 units");
    let mut csv = (1..=64)
        .map(|i| format!("h{i}"))
        .collect::<Vec<_>>()
        .join(",");
    csv.push('\n');
    for row in hidden.chunks_exact(64) {
        csv.push_str(&row.iter().map(f32::to_string).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    let reps = dir.path().join("hidden.csv");
    std::fs::write(&reps, csv).unwrap();
    let mut opts = Options::new(path);
    opts.checks = Some(vec![Check::Poisoning]);
    opts.representations = Some(reps.clone());
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let poisoning = report.poisoning.as_ref().unwrap();
    assert!(
        poisoning.representations.contains("hidden.csv"),
        "{}",
        poisoning.representations
    );
    let (recall, false_rate) = score(&report, &planted);
    assert!(recall >= 0.9, "recall {recall}");
    assert!(false_rate <= 0.05, "clean rows flagged {false_rate}");
}

#[test]
fn clean_digits_raise_few_poisoning_flags() {
    let mut opts = Options::new(common::digits("train.csv"));
    opts.checks = Some(vec![Check::Poisoning]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let flagged = report.poisoning.unwrap().count;
    assert!(
        (flagged as f64) <= 0.05 * report.rows as f64,
        "{flagged} clean rows flagged"
    );
}
