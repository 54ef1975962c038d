//! Integration tests of `rampart-scan`: every technique and format, built in test code with harmless payloads.

mod benign;
mod build;
mod formats;
mod hostile;
mod malicious;
mod peers;

use rampart_scan::{scan_bytes, Finding, Options, Report, Severity};

pub fn scan(data: &[u8]) -> Report {
    scan_bytes("sample", data, &Options::default())
}

/// Asserts that the scan has a finding of `rule` at `min` severity or above.
#[track_caller]
pub fn assert_finding(data: &[u8], rule: &str, min: Severity) -> Report {
    let report = scan(data);
    assert!(
        report
            .findings
            .iter()
            .any(|f| f.rule == rule && f.severity >= min),
        "expected a {rule} finding at {min} or above, got: {:#?}",
        report.findings
    );
    report
}

/// Asserts that the scan has nothing at `low` or above (info findings are allowed).
#[track_caller]
pub fn assert_clean(data: &[u8]) -> Report {
    let report = scan(data);
    let bad: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.severity >= Severity::Low)
        .collect();
    assert!(bad.is_empty(), "expected no finding, got: {bad:#?}");
    report
}
