//! `rampart scan`: find malicious content in model files before anything loads them.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use rampart_scan::{Options, Report, Severity, Verdict, RULES};
use serde_json::json;

use crate::Outcome;

/// Arguments of `rampart scan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories to scan (directories are walked). Formats are recognised by content, not by name
    #[arg(required = true, value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Output format: `text` for people, `json` or `sarif` (SARIF 2.1.0) for machines
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Exit 1 when a finding is at or above this severity
    #[arg(long, value_enum, default_value_t = FailOn::Medium)]
    fail_on: FailOn,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Format {
    Text,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FailOn {
    Low,
    Medium,
    High,
    Critical,
}

impl FailOn {
    fn severity(self) -> Severity {
        match self {
            FailOn::Low => Severity::Low,
            FailOn::Medium => Severity::Medium,
            FailOn::High => Severity::High,
            FailOn::Critical => Severity::Critical,
        }
    }
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let opts = Options::default();
    let mut report = Report::default();
    let progress = std::io::stderr().is_terminal();
    for path in &args.paths {
        if progress {
            eprintln!("scanning {}...", path.display());
        }
        let r = rampart_scan::scan_path(path, &opts)
            .with_context(|| format!("scanning `{}`", path.display()))?;
        report.files.extend(r.files);
        report.findings.extend(r.findings);
    }
    let threshold = args.fail_on.severity();
    let verdict = report.verdict(threshold);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => write_text(&mut out, &report, threshold, verdict)?,
        Format::Json => {
            let mut doc = json!({
                "verdict": verdict,
                "fail_on": threshold,
                "max_severity": report.max_severity(),
                "files": report.files,
                "findings": report.findings,
            });
            // Sorted keys whatever serde_json's features (cedar-policy turns on `preserve_order`).
            doc.sort_all_objects();
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        Format::Sarif => {
            let mut doc = sarif(&report);
            doc.sort_all_objects();
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
    }
    out.flush()?;
    Ok(if verdict == Verdict::Fail {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn write_text(
    out: &mut impl Write,
    report: &Report,
    threshold: Severity,
    verdict: Verdict,
) -> std::io::Result<()> {
    for f in &report.findings {
        let why = RULES
            .iter()
            .find(|(id, _, _)| *id == f.rule)
            .map_or("", |(_, _, why)| why);
        writeln!(out, "{f}")?;
        if f.severity >= Severity::Medium && !why.is_empty() {
            writeln!(out, "    why it matters: {why}")?;
        }
    }
    let count = |s: Severity| report.findings.iter().filter(|f| f.severity == s).count();
    let verdict = match verdict {
        Verdict::Pass => "pass",
        Verdict::Fail => "FAIL",
    };
    writeln!(
        out,
        "{verdict}: {} file(s) scanned; findings: {} critical, {} high, {} medium, {} low, {} info (failing at {threshold} or above)",
        report.files.len(),
        count(Severity::Critical),
        count(Severity::High),
        count(Severity::Medium),
        count(Severity::Low),
        count(Severity::Info),
    )
}

fn sarif_level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub code scanning ranks results by this CVSS-like score.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.8",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn sarif(report: &Report) -> serde_json::Value {
    // Only the rules the results use, in first-use order, so that `ruleIndex` points into this list.
    let mut used: Vec<&(&str, &str, &str)> = Vec::new();
    for f in &report.findings {
        if let Some(rule) = RULES.iter().find(|(id, _, _)| *id == f.rule) {
            if !used.iter().any(|(id, _, _)| *id == f.rule) {
                used.push(rule);
            }
        }
    }
    let rules: Vec<_> = used
        .iter()
        .map(|(id, short, why)| {
            json!({
                "id": id,
                "name": id,
                "shortDescription": { "text": short },
                "fullDescription": { "text": why },
                "help": { "text": why },
            })
        })
        .collect();
    let results: Vec<_> = report
        .findings
        .iter()
        .map(|f| {
            let index = used.iter().position(|(id, _, _)| *id == f.rule).unwrap_or(0);
            let mut location = json!({ "physicalLocation": { "artifactLocation": { "uri": uri(&f.path) } } });
            if let (Some(member), Some(obj)) = (&f.member, location.as_object_mut()) {
                obj.insert("logicalLocations".into(), json!([{ "fullyQualifiedName": member, "kind": "member" }]));
            }
            json!({
                "ruleId": f.rule,
                "ruleIndex": index,
                "level": sarif_level(f.severity),
                "message": { "text": f.message },
                "locations": [location],
                "properties": { "severity": f.severity, "security-severity": security_severity(f.severity) },
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": { "driver": {
                "name": "rampart",
                "semanticVersion": env!("CARGO_PKG_VERSION"),
                "informationUri": "https://example.invalid/rampart",
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

/// A relative URI reference for a path (SARIF wants forward slashes and percent-encoding of reserved bytes).
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.replace('\\', "/").bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
