//! The whole check on the digits example, rendered as text, JSON and HTML.
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use rampart_data::Options;

#[test]
fn digits_report_in_every_format() {
    let mut opts = Options::new(common::digits("train.csv"));
    opts.against = Some(common::digits("test.csv"));
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    assert_eq!(report.rows, 1347);
    assert_eq!(report.classes.len(), 10);
    assert_eq!(report.class_counts.iter().sum::<u64>(), 1347);
    let names: Vec<&str> = report.checks.iter().map(|c| c.check).collect();
    for check in [
        "leaks",
        "duplicates",
        "near-duplicates",
        "leakage",
        "labels",
        "outliers",
        "poisoning",
        "schema",
    ] {
        assert!(names.contains(&check), "{check} missing from {names:?}");
    }
    // No schema was given: the schema check says it did not run rather than passing.
    let schema = report.checks.iter().find(|c| c.check == "schema").unwrap();
    assert_eq!(schema.status, rampart_data::report::Status::NotRun);
    let labels = report.labels.as_ref().unwrap();
    assert!(
        labels.count < 60,
        "{} label issues on clean digits",
        labels.count
    );

    let text = report.to_text(5);
    assert!(
        text.contains("class balance") && text.contains("verdict:"),
        "{text}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&serde_json::to_string(&report).unwrap()).unwrap();
    assert_eq!(json["rows"], 1347);
    let html = rampart_data::html::render(&report);
    assert!(html.contains("<svg") && html.contains("Class balance") && html.contains("Poisoning"));
    assert!(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"));
}

#[test]
fn html_escapes_what_the_data_says() {
    assert_eq!(
        rampart_data::html::escape("<img src=x onerror=\"a\">"),
        "&lt;img src=x onerror=&quot;a&quot;&gt;"
    );
}

/// Regression: the label audit's verdict counted the issues before they were attached to the report, so it always
/// saw 0 findings and passed whatever the audit found.
#[test]
fn label_issues_are_counted_against_the_limit() {
    let (header, mut rows) = common::read_digits();
    for i in common::choose(rows.len(), rows.len() / 10, 5) {
        rows[i].1 = (rows[i].1 + 1 + i % 9) % 10;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noisy.csv");
    common::write_digits(&path, &header, &rows);
    let mut opts = Options::new(path);
    opts.checks = Some(vec![rampart_data::Check::Labels]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let found = report.labels.as_ref().unwrap().count as u64;
    let verdict = report.checks.iter().find(|c| c.check == "labels").unwrap();
    assert!(found > 80, "{found} label issues in 10% noise");
    assert_eq!(verdict.findings, found);
    assert_eq!(verdict.checked, 1347);
    assert_eq!(verdict.status, rampart_data::report::Status::Fail);
    assert!(report.has_findings());

    // Within a looser limit the check passes, and still says how many it found.
    opts.limits.insert(
        rampart_data::Check::Labels,
        rampart_data::Limit::Percent(20.0),
    );
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let verdict = report.checks.iter().find(|c| c.check == "labels").unwrap();
    assert_eq!(verdict.status, rampart_data::report::Status::Pass);
    assert_eq!(verdict.findings, found);
    let text = report.to_text(3);
    assert!(
        text.contains(&format!(" {found} findings (")) && text.contains("limit 20%)"),
        "{text}"
    );
}
