//! A backdoor planted in the digits training split: a 2x2 bright patch in the bottom-right corner on 3% of the rows,
//! relabelled to class 0. The poisoning check must find at least 90% of them and flag at most 5% of the clean rows,
//! on the raw pixels and on the penultimate layer of the example model.
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
        for px in [54, 55, 62, 63] {
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
    let poisoning = report.poisoning.expect("poisoning ran");
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

#[cfg(feature = "onnx")]
#[test]
#[ignore = "not yet run at hand-off (tract build did not finish in time); run with --ignored and remove this"]
fn finds_a_planted_backdoor_in_the_model_penultimate_layer() {
    let dir = tempfile::tempdir().unwrap();
    let (path, planted) = plant(dir.path());
    let mut opts = Options::new(path);
    opts.checks = Some(vec![Check::Poisoning]);
    opts.model = Some(common::digits("model/model.onnx"));
    let (recall, false_rate) = evaluate(&opts, &planted);
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
