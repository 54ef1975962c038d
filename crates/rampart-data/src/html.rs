//! A self-contained HTML report: no scripts, no external resources, plots as inline SVG.

use std::fmt::Write;

use crate::report::{Report, Status};

/// Escape text for HTML.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// A bar chart of labelled values.
fn bars(title: &str, labels: &[String], values: &[f64]) -> String {
    let (w, h, pad) = (560.0, 200.0, 30.0);
    let max = values.iter().copied().fold(0.0f64, f64::max).max(1e-12);
    let n = values.len().max(1) as f64;
    let bw = (w - 2.0 * pad) / n;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        escape(title)
    );
    for (i, v) in values.iter().enumerate() {
        let bh = (h - 2.0 * pad) * v / max;
        let x = pad + i as f64 * bw;
        let y = h - pad - bh;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{bh:.1}" fill="#4a78b5"><title>{}: {v}</title></rect>"##,
            (bw - 2.0).max(1.0),
            escape(labels.get(i).map_or("", String::as_str))
        );
        if values.len() <= 40 {
            let _ = write!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
                x + bw / 2.0,
                h - pad + 12.0,
                escape(labels.get(i).map_or("", String::as_str))
            );
        }
    }
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/><text x="{pad}" y="{2}" font-size="10">max {max:.4}</text></svg></figure>"##,
        h - pad,
        w - pad,
        pad - 8.0
    );
    svg
}

/// A histogram of `values` over `bins` equal bins; `marked` values are stacked in red.
fn histogram(title: &str, values: &[f64], marked: &[f64], bins: usize) -> String {
    let lo = values
        .iter()
        .chain(marked)
        .copied()
        .fold(f64::INFINITY, f64::min);
    let hi = values
        .iter()
        .chain(marked)
        .copied()
        .fold(f64::NEG_INFINITY, f64::max);
    let (lo, hi) = if lo.is_finite() && hi > lo {
        (lo, hi)
    } else {
        (0.0, 1.0)
    };
    let count = |vals: &[f64]| {
        let mut c = vec![0usize; bins];
        for v in vals {
            let b = (((v - lo) / (hi - lo)) * bins as f64).floor().max(0.0) as usize;
            if let Some(slot) = c.get_mut(b.min(bins - 1)) {
                *slot += 1;
            }
        }
        c
    };
    let all = count(values);
    let red = count(marked);
    let (w, h, pad) = (360.0, 160.0, 24.0);
    let max = all
        .iter()
        .zip(&red)
        .map(|(a, r)| a + r)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = (w - 2.0 * pad) / bins as f64;
    let mut svg = format!(
        r#"<figure><figcaption>{}</figcaption><svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img">"#,
        escape(title)
    );
    for (i, (a, r)) in all.iter().zip(&red).enumerate() {
        let x = pad + i as f64 * bw;
        let ha = (h - 2.0 * pad) * *a as f64 / max;
        let hr = (h - 2.0 * pad) * *r as f64 / max;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{ha:.1}" fill="#8aa9d6"><title>{a}</title></rect>"##,
            h - pad - ha,
            (bw - 1.0).max(0.5)
        );
        if *r > 0 {
            let _ = write!(
                svg,
                r##"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{hr:.1}" fill="#c0392b"><title>{r} flagged</title></rect>"##,
                h - pad - ha - hr,
                (bw - 1.0).max(0.5)
            );
        }
    }
    let _ = write!(
        svg,
        r##"<line x1="{pad}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/><text x="{pad}" y="{2}" font-size="10">{lo:.3}</text><text x="{1}" y="{2}" font-size="10" text-anchor="end">{hi:.3}</text></svg></figure>"##,
        h - pad,
        w - pad,
        h - 6.0
    );
    svg
}

/// Render the whole report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>rampart data check: {}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}
.pass{{color:#1e7e34}}.fail{{color:#c0392b;font-weight:bold}}.not-run{{color:#888}}figure{{display:inline-block;margin:0.5em}}figcaption{{font-size:0.9em}}</style></head><body>"#,
        escape(&report.data)
    );
    let _ = write!(
        out,
        "<h1>rampart data check</h1><p><code>{}</code>: {} rows, {} columns. Verdict: <b class=\"{}\">{}</b></p>",
        escape(&report.data),
        report.rows,
        report.columns.len(),
        if report.verdict == "clean" { "pass" } else { "fail" },
        report.verdict
    );
    out.push_str(
        "<table><tr><th>check</th><th>status</th><th>findings</th><th>rows checked</th><th>limit</th><th>note</th></tr>",
    );
    for c in &report.checks {
        let (class, label) = match c.status {
            Status::Pass => ("pass", "pass"),
            Status::Fail => ("fail", "FAIL"),
            Status::NotRun => ("not-run", "not run"),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"{class}\">{label}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            c.check,
            c.findings,
            c.checked,
            escape(&c.limit),
            escape(c.note.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    if !report.classes.is_empty() {
        out.push_str("<h2>Class balance</h2>");
        let counts: Vec<f64> = report.class_counts.iter().map(|&c| c as f64).collect();
        out.push_str(&bars("rows per class", &report.classes, &counts));
    }
    if let Some(l) = &report.labels {
        let _ = write!(
            out,
            "<h2>Label issues</h2><p>{} issues, from {}.</p>",
            l.count,
            escape(&l.source)
        );
        let flagged: Vec<f64> = l.issues.iter().map(|i| i.self_confidence).collect();
        out.push_str(&histogram(
            "self-confidence p(given label) of every row (red: label issues)",
            &l.scores,
            &flagged,
            40,
        ));
        table(
            &mut out,
            &["line", "given", "likely", "self-confidence"],
            l.issues.iter().take(200).map(|i| {
                vec![
                    i.line.to_string(),
                    i.given.clone(),
                    i.suggested.clone(),
                    format!("{:.4}", i.self_confidence),
                ]
            }),
        );
    }
    if let Some(o) = &report.outliers {
        let _ = write!(
            out,
            "<h2>Outliers</h2><p>{} rows flagged ({}).</p>",
            o.count,
            escape(&o.method)
        );
        let flagged: Vec<f64> = o.listed.iter().map(|r| r.iforest).collect();
        out.push_str(&histogram(
            "isolation-forest score (red: flagged)",
            &o.iforest_scores,
            &flagged,
            40,
        ));
        out.push_str(&histogram(
            "mean distance to the 5 nearest rows",
            &o.knn_scores,
            &[],
            40,
        ));
        table(
            &mut out,
            &["line", "isolation score", "5-NN distance"],
            o.listed.iter().take(200).map(|r| {
                vec![
                    r.line.to_string(),
                    format!("{:.4}", r.iforest),
                    r.knn_distance
                        .map(|d| format!("{d:.4}"))
                        .unwrap_or_default(),
                ]
            }),
        );
    }
    if let Some(p) = &report.poisoning {
        let _ = write!(
            out,
            "<h2>Poisoning</h2><p>{} rows flagged; representations: {}.</p>",
            p.count,
            escape(&p.representations)
        );
        let flagged: std::collections::HashSet<usize> = p.flagged.iter().map(|r| r.row).collect();
        for c in &p.classes {
            let name = report.classes.get(c.class).cloned().unwrap_or_default();
            let (mut clean, mut marked) = (Vec::new(), Vec::new());
            for (score, member) in c.spectral_scores.iter().zip(&c.members) {
                if flagged.contains(member) {
                    marked.push(score.sqrt())
                } else {
                    clean.push(score.sqrt())
                }
            }
            let title = format!(
                "class {name}: |projection| on the top singular vector ({} flagged)",
                marked.len()
            );
            out.push_str(&histogram(&title, &clean, &marked, 30));
        }
        table(
            &mut out,
            &[
                "class",
                "rows",
                "spectral flagged",
                "smaller cluster share",
                "silhouette",
                "neighbours agree",
                "cluster flagged",
            ],
            p.classes.iter().map(|c| {
                vec![
                    report.classes.get(c.class).cloned().unwrap_or_default(),
                    c.rows.to_string(),
                    c.spectral_flagged.to_string(),
                    format!("{:.2}", c.cluster_share),
                    format!("{:.2}", c.silhouette),
                    c.label_agreement
                        .map_or_else(|| "-".to_string(), |a| format!("{a:.2}")),
                    c.cluster_flagged.to_string(),
                ]
            }),
        );
        table(
            &mut out,
            &["line", "label"],
            p.flagged
                .iter()
                .take(200)
                .map(|r| vec![r.line.to_string(), r.label.clone()]),
        );
    }
    if let Some(l) = report.leaks.as_ref().filter(|l| l.total > 0) {
        let _ = write!(out, "<h2>Leaks</h2><p>{} findings.</p>", l.total);
        table(
            &mut out,
            &["line", "column", "kind", "masked excerpt"],
            l.listed.iter().take(200).map(|f| {
                vec![
                    f.line.to_string(),
                    f.column.clone(),
                    f.kind.to_string(),
                    f.excerpt.clone(),
                ]
            }),
        );
    }
    if let Some(s) = report.schema.as_ref().filter(|s| s.violations > 0) {
        let _ = write!(out, "<h2>Schema</h2><p>{} violations.</p>", s.violations);
        table(
            &mut out,
            &["line", "column", "problem"],
            s.listed.iter().take(200).map(|v| {
                vec![
                    v.line.to_string(),
                    v.column.clone().unwrap_or_default(),
                    v.message.clone(),
                ]
            }),
        );
    }
    if let Some(d) = report.duplicates.as_ref().filter(|d| d.count > 0) {
        let _ = write!(out, "<h2>Exact duplicates</h2><p>{} rows repeat an earlier row ({} with a different label).</p>", d.count, d.conflicting_labels);
        table(
            &mut out,
            &["line", "repeats line", "different label"],
            d.listed.iter().take(200).map(|f| {
                vec![
                    f.line.to_string(),
                    f.first_line.to_string(),
                    f.conflicting_label.to_string(),
                ]
            }),
        );
    }
    if let Some(d) = report.near_duplicates.as_ref().filter(|d| d.rows > 0) {
        let _ = write!(out, "<h2>Near duplicates</h2><p>{} rows.</p>", d.rows);
        table(
            &mut out,
            &["line", "close to line", "basis", "similarity"],
            d.listed.iter().take(200).map(|p| {
                vec![
                    p.line.to_string(),
                    p.other_line.to_string(),
                    p.basis.to_string(),
                    format!("{:.3}", p.similarity),
                ]
            }),
        );
    }
    if let Some(l) = report.leakage.as_ref().filter(|l| l.count > 0) {
        let _ = write!(
            out,
            "<h2>Leakage</h2><p>{} rows also appear in <code>{}</code>.</p>",
            l.count,
            escape(&l.against)
        );
        table(
            &mut out,
            &["line"],
            l.lines.iter().take(200).map(|l| vec![l.to_string()]),
        );
    }
    out.push_str("</body></html>\n");
    out
}

fn table(out: &mut String, header: &[&str], rows: impl Iterator<Item = Vec<String>>) {
    out.push_str("<table><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr>");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{}</td>", escape(&cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</table>");
}
