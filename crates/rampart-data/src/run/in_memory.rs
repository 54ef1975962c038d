//! The checks that need the rows in memory, each from the matrix of numeric features and the class of every row:
//! the label audit, outliers and poisoning.

use super::{Options, OutlierMethod};
use crate::checks::{dedup, labels, logreg, outliers, poison};
use crate::error::{DataError, Result};
use crate::matrix::Matrix;
use crate::report;

pub(super) fn cannot(check: &'static str, reason: impl Into<String>) -> DataError {
    DataError::CannotRun {
        check,
        reason: reason.into(),
    }
}

pub(super) fn label_audit(
    opts: &Options,
    features: &Matrix,
    labels: Option<&[usize]>,
    k: usize,
    rows: u64,
    n: usize,
) -> Result<report::LabelSection> {
    let labels = labels.ok_or_else(|| {
        cannot(
            "labels",
            "needs a label column (--label NAME) with a value in every row",
        )
    })?;
    if k < 2 {
        return Err(cannot("labels", "needs at least two classes"));
    }
    let (probs, source) = match &opts.pred_probs {
        Some(path) => {
            let (probs, total) = crate::repr::read_matrix(path, None, n)?;
            check_probabilities(path, &probs, total, rows, k)?;
            (
                probs,
                format!("predicted probabilities from `{}`", path.display()),
            )
        }
        None => {
            if features.cols() == 0 {
                return Err(cannot(
                    "labels",
                    "no numeric feature columns to train on; pass --pred-probs FILE",
                ));
            }
            let folds = opts.folds.clamp(2, 20);
            let probs = logreg::cross_val_proba(
                features,
                labels,
                k,
                folds,
                logreg::LogRegOptions::default(),
            );
            (
                probs,
                format!("{folds}-fold cross-validated logistic regression"),
            )
        }
    };
    let audit = labels::find_label_issues(labels, &probs);
    Ok(report::LabelSection::from_audit(source, audit, labels))
}

/// A probabilities file must have one row per data row, one column per class, and rows that are distributions.
fn check_probabilities(
    path: &std::path::Path,
    probs: &Matrix,
    total: u64,
    rows: u64,
    k: usize,
) -> Result<()> {
    let shape = |message: String| DataError::Shape {
        path: path.to_path_buf(),
        message,
    };
    if total != rows {
        return Err(shape(format!(
            "has {total} rows; the data has {rows}: write one row of probabilities per data row"
        )));
    }
    if probs.cols() < k {
        return Err(shape(format!(
            "has {} columns; the labels have {k} classes: write one column per class",
            probs.cols()
        )));
    }
    for (i, row) in probs.iter_rows().enumerate() {
        let sum: f64 = row.iter().sum();
        if row.iter().any(|p| !(0.0..=1.0).contains(p)) || (sum - 1.0).abs() > 1e-3 {
            return Err(shape(format!(
                "row {} (line {}) is not a probability distribution (sum {sum:.4})",
                i + 1,
                i + 2
            )));
        }
    }
    Ok(())
}

pub(super) fn outlier_check(
    opts: &Options,
    features: &Matrix,
    lines: &[u64],
    names: &[String],
) -> report::OutlierSection {
    let scaled = dedup::scale_unit(features);
    let iforest = outliers::isolation_forest(&scaled, 100, 0x1f0e);
    let m = features.rows().min(opts.max_pairwise_rows);
    let idx: Vec<usize> = (0..m).collect();
    let knn = outliers::knn_distance(&scaled.select(&idx), 5);
    let knn_z = outliers::robust_z(&knn);
    let flagged: Vec<usize> = match opts.outlier_method {
        OutlierMethod::IsolationForest => (0..features.rows())
            .filter(|&i| iforest.get(i).is_some_and(|&s| s >= opts.iforest_threshold))
            .collect(),
        OutlierMethod::Knn => (0..m)
            .filter(|&i| knn_z.get(i).is_some_and(|&z| z >= opts.knn_z))
            .collect(),
    };
    report::OutlierSection {
        method: match opts.outlier_method {
            OutlierMethod::IsolationForest => {
                format!("isolation forest, score >= {}", opts.iforest_threshold)
            }
            OutlierMethod::Knn => format!("5-NN distance, robust z >= {}", opts.knn_z),
        },
        count: flagged.len() as u64,
        listed: flagged
            .iter()
            .take(opts.keep)
            .map(|&i| report::OutlierRow {
                line: lines.get(i).copied().unwrap_or(0),
                iforest: iforest.get(i).copied().unwrap_or(0.0),
                knn_distance: knn.get(i).copied(),
            })
            .collect(),
        columns: outliers::column_outliers(features, names, lines, opts.column_z),
        iforest_scores: iforest,
        knn_scores: knn,
    }
}

/// Learned representations of the first `n` rows, when the user gave some (`--representations FILE` or
/// `--model MODEL.onnx`), with a description for the report; `None` when neither was given.
pub(super) fn representations(
    opts: &Options,
    features: &Matrix,
    rows: u64,
    n: usize,
) -> Result<Option<(Matrix, String)>> {
    if let Some(path) = &opts.representations {
        let (reps, total) = crate::repr::read_matrix(path, None, n)?;
        if total != rows {
            return Err(DataError::Shape {
                path: path.clone(),
                message: format!(
                    "has {total} rows; the data has {rows}: write one representation per data row"
                ),
            });
        }
        Ok(Some((reps, format!("`{}`", path.display()))))
    } else if let Some(model) = &opts.model {
        if features.cols() == 0 {
            return Err(cannot(
                "poisoning",
                "no numeric feature columns to feed the model",
            ));
        }
        Ok(Some((
            crate::repr::penultimate(model, features)?,
            format!("penultimate layer of `{}`", model.display()),
        )))
    } else {
        Ok(None)
    }
}

pub(super) fn poisoning(
    opts: &Options,
    features: &Matrix,
    learned: Option<&(Matrix, String)>,
    labels: Option<&[usize]>,
    k: usize,
) -> Result<(String, poison::PoisonReport)> {
    let labels = labels.ok_or_else(|| {
        cannot(
            "poisoning",
            "needs a label column (--label NAME) with a value in every row",
        )
    })?;
    // A candidate cluster's labels are tested among its neighbours in the input features; with none (text data
    // with embeddings), in the representations themselves.
    if let Some((reps, source)) = learned {
        let inputs = dedup::scale_unit(if features.cols() > 0 { features } else { reps });
        return Ok((
            source.clone(),
            poison::detect(reps, &inputs, labels, k, opts.poison),
        ));
    }
    if features.cols() == 0 {
        return Err(cannot(
            "poisoning",
            "no numeric features; pass --representations FILE or --model MODEL.onnx",
        ));
    }
    let reps = dedup::scale_unit(features);
    Ok((
        "the numeric features (pass --model or --representations for learned ones)".to_string(),
        poison::detect(&reps, &reps, labels, k, opts.poison),
    ))
}
