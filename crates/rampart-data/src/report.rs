//! The report of a run: JSON (serde) and a text summary for people. The HTML form lives in [`crate::html`].

use std::fmt::Write;
use std::path::Path;

use serde::Serialize;

use crate::checks::dedup::{Duplicate, NearDuplicate};
use crate::checks::labels::LabelAudit;
use crate::checks::leaks::Leak;
use crate::checks::outliers::ColumnOutliers;
use crate::checks::poison::{ClassPoison, PoisonReport};
use crate::schema::Violation;

/// Verdict of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Fail,
    NotRun,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub check: &'static str,
    pub status: Status,
    pub findings: u64,
    /// Rows the check looked at (the in-memory rows for the in-memory checks).
    pub checked: u64,
    /// Findings allowed (a count or a percentage of rows).
    pub limit: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SchemaSection {
    pub violations: u64,
    pub listed: Vec<Violation>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeakSection {
    pub total: u64,
    pub by_kind: Vec<(String, u64)>,
    pub listed: Vec<Leak>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DuplicateSection {
    pub count: u64,
    pub conflicting_labels: u64,
    pub listed: Vec<Duplicate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NearDuplicateSection {
    /// Rows that nearly repeat an earlier row.
    pub rows: u64,
    pub listed: Vec<NearDuplicate>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LeakageSection {
    pub against: String,
    pub against_rows: u64,
    pub count: u64,
    pub lines: Vec<u64>,
}

/// One suspected label error.
#[derive(Debug, Clone, Serialize)]
pub struct LabelIssue {
    pub line: u64,
    /// 0-based data row.
    pub row: usize,
    pub given: String,
    pub suggested: String,
    pub self_confidence: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LabelSection {
    pub source: String,
    pub count: usize,
    /// Most suspicious first (lowest self-confidence).
    pub issues: Vec<LabelIssue>,
    pub confident_joint: Vec<Vec<i64>>,
    #[serde(skip)]
    pub scores: Vec<f64>,
    #[serde(skip)]
    audit: Option<(LabelAudit, Vec<usize>)>,
}

impl LabelSection {
    pub(crate) fn from_audit(source: String, audit: LabelAudit, labels: &[usize]) -> Self {
        Self {
            source,
            count: audit.issues.len(),
            issues: Vec::new(),
            confident_joint: audit.confident_joint.clone(),
            scores: audit.self_confidence.clone(),
            audit: Some((audit, labels.to_vec())),
        }
    }

    pub(crate) fn with_lines(mut self, lines: &[u64], classes: &[String]) -> Self {
        if let Some((audit, labels)) = self.audit.take() {
            let name = |c: usize| classes.get(c).cloned().unwrap_or_else(|| c.to_string());
            self.issues = audit
                .issues
                .iter()
                .map(|&i| LabelIssue {
                    line: lines.get(i).copied().unwrap_or(0),
                    row: i,
                    given: name(labels.get(i).copied().unwrap_or(0)),
                    suggested: name(audit.predicted.get(i).copied().unwrap_or(0)),
                    self_confidence: audit.self_confidence.get(i).copied().unwrap_or(0.0),
                })
                .collect();
        }
        self
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OutlierRow {
    pub line: u64,
    pub iforest: f64,
    pub knn_distance: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OutlierSection {
    pub method: String,
    pub count: u64,
    pub listed: Vec<OutlierRow>,
    /// Columns with cells beyond the robust z-score threshold (informational).
    pub columns: Vec<ColumnOutliers>,
    #[serde(skip)]
    pub iforest_scores: Vec<f64>,
    #[serde(skip)]
    pub knn_scores: Vec<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoisonRow {
    pub line: u64,
    pub row: usize,
    pub label: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoisonSection {
    pub representations: String,
    pub classes: Vec<ClassPoison>,
    pub count: usize,
    pub flagged: Vec<PoisonRow>,
}

impl PoisonSection {
    pub(crate) fn new(
        representations: String,
        result: PoisonReport,
        lines: &[u64],
        classes: &[String],
    ) -> Self {
        let mut class_of = std::collections::HashMap::new();
        for c in &result.classes {
            for &m in &c.members {
                class_of.insert(m, c.class);
            }
        }
        let flagged = result
            .flagged
            .iter()
            .map(|&i| PoisonRow {
                line: lines.get(i).copied().unwrap_or(0),
                row: i,
                label: class_of
                    .get(&i)
                    .and_then(|&c| classes.get(c))
                    .cloned()
                    .unwrap_or_default(),
            })
            .collect();
        Self {
            representations,
            count: result.flagged.len(),
            classes: result.classes,
            flagged,
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub data: String,
    pub rows: u64,
    pub bytes: u64,
    pub columns: Vec<String>,
    pub label_column: Option<String>,
    pub numeric_columns: Vec<String>,
    pub text_columns: Vec<String>,
    pub classes: Vec<String>,
    pub class_counts: Vec<u64>,
    /// Rows the in-memory checks used (the first ones when the file is larger).
    pub in_memory_rows: usize,
    pub sampled: bool,
    pub streaming_seconds: f64,
    pub seconds: f64,
    pub verdict: &'static str,
    pub checks: Vec<CheckResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub schema: Option<SchemaSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leaks: Option<LeakSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicates: Option<DuplicateSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub near_duplicates: Option<NearDuplicateSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub leakage: Option<LeakageSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<LabelSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outliers: Option<OutlierSection>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poisoning: Option<PoisonSection>,
}

impl Report {
    pub(crate) fn new(data: &Path, columns: &[String], rows: u64, bytes: u64) -> Self {
        Self {
            data: data.display().to_string(),
            rows,
            bytes,
            columns: columns.to_vec(),
            label_column: None,
            numeric_columns: Vec::new(),
            text_columns: Vec::new(),
            classes: Vec::new(),
            class_counts: Vec::new(),
            in_memory_rows: 0,
            sampled: false,
            streaming_seconds: 0.0,
            seconds: 0.0,
            verdict: "clean",
            checks: Vec::new(),
            schema: None,
            leaks: None,
            duplicates: None,
            near_duplicates: None,
            leakage: None,
            labels: None,
            outliers: None,
            poisoning: None,
        }
    }

    /// Whether any check failed.
    pub fn has_findings(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }

    /// Set the verdict from the check results.
    pub fn finish(&mut self) {
        self.verdict = if self.has_findings() {
            "findings"
        } else {
            "clean"
        };
    }

    /// Human summary: the verdict per check, then the first findings of each.
    pub fn to_text(&self, shown: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rampart data check: {} ({} rows, {} columns)",
            self.data,
            self.rows,
            self.columns.len()
        );
        if let Some(label) = &self.label_column {
            let balance: Vec<String> = self
                .classes
                .iter()
                .zip(&self.class_counts)
                .map(|(c, n)| format!("{c}:{n}"))
                .collect();
            let _ = writeln!(
                out,
                "label column `{label}`, class balance {}",
                balance.join(" ")
            );
        }
        if self.sampled {
            let _ = writeln!(
                out,
                "note: in-memory checks used the first {} rows (raise --max-rows for all)",
                self.in_memory_rows
            );
        }
        let _ = writeln!(out);
        for c in &self.checks {
            let status = match c.status {
                Status::Pass => "pass",
                Status::Fail => "FAIL",
                Status::NotRun => "not run",
            };
            let noun = if c.findings == 1 {
                "finding "
            } else {
                "findings"
            };
            let _ = write!(
                out,
                "  {status:<8} {:<16} {:>7} {noun}",
                c.check, c.findings
            );
            if c.status == Status::NotRun {
                let _ = write!(out, " (limit {})", c.limit);
            } else if c.limit.ends_with('%') {
                let share = 100.0 * c.findings as f64 / c.checked.max(1) as f64;
                let _ = write!(
                    out,
                    " ({share:.1}% of {} rows; limit {})",
                    c.checked, c.limit
                );
            } else {
                let _ = write!(out, " in {} rows (limit {})", c.checked, c.limit);
            }
            if let Some(note) = &c.note {
                let _ = write!(out, "  [{note}]");
            }
            let _ = writeln!(out);
        }
        let more = |out: &mut String, total: usize| {
            if total > shown {
                let _ = writeln!(out, "    ... {} more (see --format json)", total - shown);
            }
        };
        if let Some(s) = self.schema.as_ref().filter(|s| s.violations > 0) {
            let _ = writeln!(out, "\nschema violations:");
            for v in s.listed.iter().take(shown) {
                let place = if v.line > 0 {
                    format!("line {}", v.line)
                } else {
                    "file".to_string()
                };
                let _ = writeln!(
                    out,
                    "    {place}, column `{}`: {}",
                    v.column.as_deref().unwrap_or("-"),
                    v.message
                );
            }
            more(&mut out, s.violations as usize);
        }
        if let Some(l) = self.leaks.as_ref().filter(|l| l.total > 0) {
            let kinds: Vec<String> = l.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
            let _ = writeln!(out, "\nleaks ({}):", kinds.join(", "));
            for f in l.listed.iter().take(shown) {
                let _ = writeln!(
                    out,
                    "    line {}, column `{}`: {} {}",
                    f.line, f.column, f.kind, f.excerpt
                );
            }
            more(&mut out, l.total as usize);
        }
        if let Some(d) = self.duplicates.as_ref().filter(|d| d.count > 0) {
            let _ = writeln!(out, "\nexact duplicates:");
            for f in d.listed.iter().take(shown) {
                let conflict = if f.conflicting_label {
                    " (different label)"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "    line {} repeats line {}{conflict}",
                    f.line, f.first_line
                );
            }
            more(&mut out, d.count as usize);
        }
        if let Some(d) = self.near_duplicates.as_ref().filter(|d| d.rows > 0) {
            let _ = writeln!(out, "\nnear duplicates:");
            for p in d.listed.iter().take(shown) {
                let _ = writeln!(
                    out,
                    "    line {} ~ line {} ({}, similarity {:.3})",
                    p.line, p.other_line, p.basis, p.similarity
                );
            }
            more(&mut out, d.listed.len());
        }
        if let Some(l) = self.leakage.as_ref().filter(|l| l.count > 0) {
            let lines: Vec<String> = l.lines.iter().take(shown).map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "\nleakage: {} rows also in `{}`: lines {}",
                l.count,
                l.against,
                lines.join(", ")
            );
        }
        if let Some(l) = &self.labels {
            let _ = writeln!(out, "\nlabel issues ({}, {} found):", l.source, l.count);
            for i in l.issues.iter().take(shown) {
                let _ = writeln!(
                    out,
                    "    line {}: labelled {}, likely {} (self-confidence {:.3})",
                    i.line, i.given, i.suggested, i.self_confidence
                );
            }
            more(&mut out, l.count);
        }
        if let Some(o) = self.outliers.as_ref().filter(|o| o.count > 0) {
            let _ = writeln!(out, "\noutliers ({}):", o.method);
            for r in o.listed.iter().take(shown) {
                let _ = writeln!(out, "    line {}: isolation score {:.3}", r.line, r.iforest);
            }
            more(&mut out, o.count as usize);
        }
        if let Some(p) = &self.poisoning {
            let _ = writeln!(
                out,
                "\npoisoning (representations: {}), {} rows flagged:",
                p.representations, p.count
            );
            for c in p
                .classes
                .iter()
                .filter(|c| c.spectral_flagged + c.cluster_flagged > 0)
            {
                let name = self.classes.get(c.class).cloned().unwrap_or_default();
                let agreement = c
                    .label_agreement
                    .map(|a| format!(", {a:.2} agree with their input-space neighbours"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "    class {name}: {} spectral, {} in a small cluster (share {:.2}, silhouette {:.2}{agreement})",
                    c.spectral_flagged, c.cluster_flagged, c.cluster_share, c.silhouette
                );
            }
        }
        let _ = writeln!(out, "\nverdict: {}", self.verdict);
        out
    }
}
