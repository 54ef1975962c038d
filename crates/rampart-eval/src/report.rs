//! The evaluation report and its renderings: text for people, JSON, JUnit XML (one test case per attack and
//! threshold) and a self-contained HTML page with robust accuracy against epsilon drawn as an inline SVG.

use std::fmt::Write;

use serde::Serialize;

use crate::extraction::ExtractionPoint;
use crate::membership::MembershipScore;

/// One attack at one epsilon, as measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AttackResult {
    /// `fgsm`, `pgd`, `square` or `hsj`.
    pub attack: String,
    /// `linf` or `l2`.
    pub norm: String,
    /// The perturbation budget.
    pub eps: f32,
    /// Examples attacked.
    pub examples: usize,
    /// The fraction still classified correctly on the adversarial examples (measured on them).
    pub robust_accuracy: f64,
    /// The fraction of correctly classified examples the attack turned.
    pub success_rate: f64,
    /// Mean queries (black-box) or gradient evaluations (white-box) per example.
    pub mean_queries: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// The attack's settings, for the record.
    pub settings: String,
}

/// A threshold checked against a measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Gate {
    /// What was checked, such as `min-robust-accuracy pgd linf eps=0.1`.
    pub name: String,
    /// The threshold.
    pub threshold: f64,
    /// The measured value.
    pub value: f64,
    /// Whether the measurement is on the safe side of the threshold.
    pub passed: bool,
}

/// Everything an evaluation measured.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Report {
    /// The model's path or URL.
    pub target: String,
    /// The data file.
    pub data: String,
    /// Examples evaluated.
    pub examples: usize,
    /// Accuracy on the clean examples.
    pub clean_accuracy: f64,
    /// Every attack run, at every epsilon.
    pub attacks: Vec<AttackResult>,
    /// Membership inference, when member and non-member files were given.
    pub membership: Option<Vec<MembershipScore>>,
    /// Extraction risk, when asked for.
    pub extraction: Option<Vec<ExtractionPoint>>,
    /// The thresholds and their verdicts.
    pub gates: Vec<Gate>,
}

impl Report {
    /// Whether every gate passed.
    pub fn passed(&self) -> bool {
        self.gates.iter().all(|g| g.passed)
    }

    /// The human-readable summary.
    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "target: {}", self.target);
        let _ = writeln!(
            s,
            "data: {} ({} examples), clean accuracy {:.4}",
            self.data, self.examples, self.clean_accuracy
        );
        if !self.attacks.is_empty() {
            let _ = writeln!(
                s,
                "\n{:<8} {:<5} {:>8} {:>10} {:>9} {:>10} {:>9}",
                "attack", "norm", "eps", "robust acc", "success", "queries/ex", "seconds"
            );
            for a in &self.attacks {
                let _ = writeln!(
                    s,
                    "{:<8} {:<5} {:>8} {:>10.4} {:>9.4} {:>10.1} {:>9.2}",
                    a.attack,
                    a.norm,
                    a.eps,
                    a.robust_accuracy,
                    a.success_rate,
                    a.mean_queries,
                    a.seconds
                );
            }
        }
        if let Some(m) = &self.membership {
            let _ = writeln!(s, "\nmembership inference (0.5 = no leak):");
            for r in m {
                let _ = writeln!(
                    s,
                    "  {:<10} AUC {:.4}, TPR at 1% FPR {:.4}",
                    r.attack, r.auc, r.tpr_at_1pct_fpr
                );
            }
        }
        if let Some(e) = &self.extraction {
            let _ = writeln!(s, "\nextraction (surrogate trained on N queries):");
            for p in e {
                let _ = writeln!(
                    s,
                    "  N={:<7} agreement {:.4}, accuracy {:.4}",
                    p.queries, p.agreement, p.accuracy
                );
            }
        }
        if !self.gates.is_empty() {
            let _ = writeln!(s, "\ngates:");
            for g in &self.gates {
                let verdict = if g.passed { "pass" } else { "FAIL" };
                let _ = writeln!(
                    s,
                    "  {verdict} {} (measured {:.4}, threshold {})",
                    g.name, g.value, g.threshold
                );
            }
        }
        s
    }

    /// JUnit XML: one test case per attack (and epsilon), per privacy measurement and per threshold.
    pub fn junit(&self) -> String {
        let mut cases = Vec::new();
        for a in &self.attacks {
            let name = format!("{} {} eps={}", a.attack, a.norm, a.eps);
            let failure = self
                .gates
                .iter()
                .find(|g| !g.passed && g.name.ends_with(&name))
                .map(|g| format!("robust accuracy {:.4} is below {}", g.value, g.threshold));
            cases.push((
                "attack",
                name,
                a.seconds,
                failure,
                format!(
                    "robust accuracy {:.4} over {} examples",
                    a.robust_accuracy, a.examples
                ),
            ));
        }
        for g in &self.gates {
            let failure =
                (!g.passed).then(|| format!("measured {:.4}, threshold {}", g.value, g.threshold));
            cases.push((
                "gate",
                g.name.clone(),
                0.0,
                failure,
                format!("measured {:.4}", g.value),
            ));
        }
        let failures = cases.iter().filter(|c| c.3.is_some()).count();
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<testsuites name=\"rampart eval\" tests=\"{}\" failures=\"{failures}\">",
            cases.len()
        );
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\">",
            xml(&self.target),
            cases.len()
        );
        for (class, name, secs, failure, out) in cases {
            let _ = write!(
                s,
                "    <testcase classname=\"rampart.eval.{class}\" name=\"{}\" time=\"{secs:.3}\">",
                xml(&name)
            );
            if let Some(f) = failure {
                let _ = write!(s, "<failure message=\"{}\"/>", xml(&f));
            }
            let _ = writeln!(s, "<system-out>{}</system-out></testcase>", xml(&out));
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }

    /// A self-contained HTML page (no script, no external resource).
    pub fn html(&self) -> String {
        let mut s = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>rampart eval</title>\n<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}.fail{color:#b00;font-weight:bold}.pass{color:#070}</style></head><body>\n");
        let _ = writeln!(s, "<h1>rampart eval</h1><p>Target <code>{}</code>, data <code>{}</code>: {} examples, clean accuracy {:.4}.</p>", xml(&self.target), xml(&self.data), self.examples, self.clean_accuracy);
        if !self.attacks.is_empty() {
            s.push_str("<h2>Robust accuracy against epsilon</h2>\n");
            s.push_str(&self.svg());
            s.push_str("<table><tr><th>attack</th><th>norm</th><th>eps</th><th>robust accuracy</th><th>success rate</th><th>queries / example</th><th>seconds</th><th>settings</th></tr>\n");
            for a in &self.attacks {
                let _ = writeln!(s, "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.1}</td><td>{:.2}</td><td style=\"text-align:left\">{}</td></tr>", xml(&a.attack), a.norm, a.eps, a.robust_accuracy, a.success_rate, a.mean_queries, a.seconds, xml(&a.settings));
            }
            s.push_str("</table>\n");
        }
        if let Some(m) = &self.membership {
            s.push_str("<h2>Membership inference</h2><table><tr><th>attack</th><th>AUC</th><th>TPR at 1% FPR</th></tr>\n");
            for r in m {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                    xml(&r.attack),
                    r.auc,
                    r.tpr_at_1pct_fpr
                );
            }
            s.push_str("</table>\n");
        }
        if let Some(e) = &self.extraction {
            s.push_str("<h2>Extraction</h2><table><tr><th>queries</th><th>agreement</th><th>accuracy</th></tr>\n");
            for p in e {
                let _ = writeln!(
                    s,
                    "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td></tr>",
                    p.queries, p.agreement, p.accuracy
                );
            }
            s.push_str("</table>\n");
        }
        if !self.gates.is_empty() {
            s.push_str("<h2>Gates</h2><table><tr><th>gate</th><th>threshold</th><th>measured</th><th>verdict</th></tr>\n");
            for g in &self.gates {
                let (class, word) = if g.passed {
                    ("pass", "pass")
                } else {
                    ("fail", "FAIL")
                };
                let _ = writeln!(s, "<tr><td style=\"text-align:left\">{}</td><td>{}</td><td>{:.4}</td><td class=\"{class}\">{word}</td></tr>", xml(&g.name), g.threshold, g.value);
            }
            s.push_str("</table>\n");
        }
        s.push_str("</body></html>\n");
        s
    }

    /// Robust accuracy against epsilon, one line per attack and norm, with the clean accuracy at eps 0.
    fn svg(&self) -> String {
        let (w, h, pad) = (560.0f64, 320.0f64, 44.0f64);
        let max_eps = self
            .attacks
            .iter()
            .map(|a| f64::from(a.eps))
            .fold(0.0, f64::max)
            .max(1e-9);
        let px = |eps: f64| pad + (w - 2.0 * pad) * eps / max_eps;
        let py = |acc: f64| h - pad - (h - 2.0 * pad) * acc;
        let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" role=\"img\" aria-label=\"robust accuracy against epsilon\">\n");
        let _ = writeln!(s, "<line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#333\"/><line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#333\"/>", h - pad, w - pad, h - pad, h - pad);
        for tick in 0..=4 {
            let acc = f64::from(tick) / 4.0;
            let eps = max_eps * f64::from(tick) / 4.0;
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"end\">{acc:.2}</text>",
                pad - 4.0,
                py(acc) + 4.0
            );
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{eps:.3}</text>",
                px(eps),
                h - pad + 16.0
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">epsilon</text>",
            w / 2.0,
            h - 6.0
        );
        let colors = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
        ];
        let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        for a in &self.attacks {
            let key = format!("{} {}", a.attack, a.norm);
            match series.iter_mut().find(|(k, _)| *k == key) {
                Some((_, pts)) => pts.push((f64::from(a.eps), a.robust_accuracy)),
                None => series.push((
                    key,
                    vec![
                        (0.0, self.clean_accuracy),
                        (f64::from(a.eps), a.robust_accuracy),
                    ],
                )),
            }
        }
        for (i, (key, mut pts)) in series.into_iter().enumerate() {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let color = colors.get(i % colors.len()).copied().unwrap_or("#000");
            let path: Vec<String> = pts
                .iter()
                .map(|&(e, a)| format!("{:.1},{:.1}", px(e), py(a)))
                .collect();
            let _ = writeln!(
                s,
                "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
                path.join(" ")
            );
            for &(e, a) in &pts {
                let _ = writeln!(s, "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{color}\"><title>{} eps={e}: {a:.4}</title></circle>", px(e), py(a), xml(&key));
            }
            let _ = writeln!(
                s,
                "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"{color}\">{}</text>",
                w - pad - 110.0,
                pad + 14.0 * i as f64,
                xml(&key)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

/// Escapes text for XML and HTML.
pub fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            target: "m<1>.onnx".into(),
            data: "t.csv".into(),
            examples: 10,
            clean_accuracy: 0.9,
            attacks: vec![
                AttackResult {
                    attack: "pgd".into(),
                    norm: "linf".into(),
                    eps: 0.05,
                    examples: 10,
                    robust_accuracy: 0.6,
                    success_rate: 0.3,
                    mean_queries: 40.0,
                    seconds: 0.1,
                    settings: String::new(),
                },
                AttackResult {
                    attack: "pgd".into(),
                    norm: "linf".into(),
                    eps: 0.1,
                    examples: 10,
                    robust_accuracy: 0.3,
                    success_rate: 0.6,
                    mean_queries: 40.0,
                    seconds: 0.1,
                    settings: String::new(),
                },
            ],
            gates: vec![Gate {
                name: "min-robust-accuracy pgd linf eps=0.1".into(),
                threshold: 0.5,
                value: 0.3,
                passed: false,
            }],
            ..Report::default()
        }
    }

    #[test]
    fn junit_has_one_case_per_attack_and_gate_and_escapes() {
        let xml = sample().junit();
        assert_eq!(xml.matches("<testcase ").count(), 3);
        assert!(xml.contains("failures=\"2\""));
        assert!(xml.contains("m&lt;1&gt;.onnx"));
    }

    #[test]
    fn html_is_self_contained_with_a_plot() {
        let html = sample().html();
        assert!(html.contains("<svg") && html.contains("<polyline"));
        assert!(!html.contains("<script") && !html.contains("src="));
        assert!(html.contains("FAIL"));
        assert!(!sample().passed());
    }
}
