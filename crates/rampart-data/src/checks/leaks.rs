//! Personal data and secrets in cells: e-mail addresses, phone numbers, payment cards (Luhn), IBANs (mod 97),
//! private keys, cloud and SaaS access keys, JWTs and high-entropy tokens.
//!
//! Built for streaming speed: one table-driven pass over a cell counts its digits, its longest key-like token and
//! whether it has an `@`; a cell that none of the detectors could fire on (most of them) stops there, and the others
//! go through cheap triggers (an `@`, enough digits, a known prefix) before any regular expression runs. Findings carry a masked excerpt, never the value itself.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use regex::Regex;
use serde::Serialize;

use crate::load::Row;

/// One leak found in a cell.
#[derive(Debug, Clone, Serialize)]
pub struct Leak {
    pub line: u64,
    pub column: String,
    pub kind: &'static str,
    /// The match with most characters masked.
    pub excerpt: String,
}

#[expect(
    clippy::unwrap_used,
    reason = "constant patterns, exercised by the unit tests"
)]
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63})*\.[A-Za-z]{2,24}",
    )
    .unwrap()
});
#[expect(
    clippy::unwrap_used,
    reason = "constant patterns, exercised by the unit tests"
)]
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{2,4}[\s.-]\d{2,4}(?:[\s.-]\d{2,4})?|\+\d{9,15}").unwrap()
});
#[expect(
    clippy::unwrap_used,
    reason = "constant patterns, exercised by the unit tests"
)]
static IBAN: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b").unwrap()
});
#[expect(
    clippy::unwrap_used,
    reason = "constant patterns, exercised by the unit tests"
)]
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{0,1024}").unwrap()
});

/// Access-key formats: (kind, pattern).
const KEY_PATTERNS: &[(&str, &str)] = &[
    ("aws-access-key", r"\b(?:AKIA|ASIA|ABIA|ACCA)[0-9A-Z]{16}\b"),
    ("gcp-api-key", r"\bAIza[0-9A-Za-z_-]{35}"),
    ("gcp-oauth-token", r"\bya29\.[0-9A-Za-z_-]{20,}"),
    (
        "github-token",
        r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{60,})",
    ),
    ("slack-token", r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    ("stripe-key", r"\b(?:sk|rk)_live_[0-9A-Za-z]{20,}"),
    ("openai-key", r"\bsk-(?:proj-)?[A-Za-z0-9_-]{20,}"),
    ("huggingface-token", r"\bhf_[A-Za-z]{30,}"),
    ("azure-storage-key", r"AccountKey=[A-Za-z0-9+/]{86}=="),
    ("gcp-service-account", r#""type"\s*:\s*"service_account""#),
];

#[expect(
    clippy::unwrap_used,
    reason = "constant patterns, exercised by the unit tests"
)]
static KEYS: LazyLock<(regex::RegexSet, Vec<Regex>)> = LazyLock::new(|| {
    let set = regex::RegexSet::new(KEY_PATTERNS.iter().map(|(_, p)| *p)).unwrap();
    let each = KEY_PATTERNS
        .iter()
        .map(|(_, p)| Regex::new(p).unwrap())
        .collect();
    (set, each)
});

/// Scans rows for leaks and keeps counts per kind and the first findings.
#[derive(Debug)]
pub struct LeakScanner {
    skip: Vec<bool>,
    columns: Vec<String>,
    /// Findings per kind.
    pub counts: BTreeMap<&'static str, u64>,
    /// The first findings (at most `keep`).
    pub findings: Vec<Leak>,
    pub total: u64,
    keep: usize,
}

impl LeakScanner {
    /// `skip` marks columns not to scan (the label column).
    pub fn new(columns: &[String], skip: &[usize], keep: usize) -> Self {
        Self {
            skip: (0..columns.len()).map(|i| skip.contains(&i)).collect(),
            columns: columns.to_vec(),
            counts: BTreeMap::new(),
            findings: Vec::new(),
            total: 0,
            keep,
        }
    }

    /// Scan one row.
    pub fn scan_row(&mut self, row: &Row) {
        for index in 0..row.len() {
            if self.skip.get(index).copied().unwrap_or(false) {
                continue;
            }
            if let Some(cell) = row.get(index) {
                self.scan_cell(row.line(), index, cell);
            }
        }
    }

    fn found(&mut self, line: u64, column: usize, kind: &'static str, text: &str) {
        self.total += 1;
        *self.counts.entry(kind).or_default() += 1;
        if self.findings.len() < self.keep {
            self.findings.push(Leak {
                line,
                column: self.columns.get(column).cloned().unwrap_or_default(),
                kind,
                excerpt: mask(kind, text),
            });
        }
    }

    /// Scan one cell; returns nothing, records findings.
    pub fn scan_cell(&mut self, line: u64, column: usize, cell: &str) {
        if cell.len() < 6 {
            return;
        }
        let bytes = cell.as_bytes();
        if bytes.len() < 9 {
            // Fewer than 9 digits and no token run of 10: only an e-mail address could be here.
            if !bytes.contains(&b'@') {
                return;
            }
        } else {
            // Plain numbers, most cells of most data sets, first, in a loop that stops at the first other byte.
            let mut digits = 0usize;
            let mut plain = true;
            for &b in bytes {
                if b.is_ascii_digit() {
                    digits += 1;
                } else if !matches!(b, b'.' | b'-' | b'+' | b'e' | b'E') {
                    plain = false;
                    break;
                }
            }
            if plain && digits < 9 {
                return;
            }
        }
        let stats = CellStats::of(bytes);
        // Every detector needs one of these (see `CellStats`): most cells of a data set stop here, after one pass.
        if !(stats.at || stats.digits >= 9 || stats.longest >= MIN_TRIGGER_RUN) {
            return;
        }
        for (kind, start, end) in detect(cell, &stats) {
            let text = cell.get(start..end).unwrap_or_default();
            self.found(line, column, kind, text);
        }
    }

    /// [`LeakScanner::scan_cell`] without the triggers that pass cells over: the reference its findings are
    /// tested against.
    #[cfg(test)]
    fn scan_cell_reference(&mut self, line: u64, column: usize, cell: &str) {
        if cell.len() < 6 {
            return;
        }
        for (kind, start, end) in detect(cell, &CellStats::of(cell.as_bytes())) {
            let text = cell.get(start..end).unwrap_or_default();
            self.found(line, column, kind, text);
        }
    }
}

/// Every detector over one cell: (kind, start, end) of each match.
fn detect(cell: &str, stats: &CellStats) -> Vec<(&'static str, usize, usize)> {
    let &CellStats {
        digits,
        plain,
        longest,
        at,
    } = stats;
    let bytes = cell.as_bytes();
    let mut hits: Vec<(&'static str, usize, usize)> = Vec::new();
    if plain && digits < 9 {
        return hits;
    }
    if cell.contains("-----BEGIN") && cell.contains("PRIVATE KEY") {
        let start = cell.find("-----BEGIN").unwrap_or(0);
        hits.push(("private-key", start, cell.len()));
    }
    if at {
        for m in EMAIL.find_iter(cell) {
            hits.push(("email", m.start(), m.end()));
        }
    }
    if cell.contains("eyJ") {
        for m in JWT.find_iter(cell) {
            hits.push(("jwt", m.start(), m.end()));
        }
    }
    if longest >= 16 || cell.contains("service_account") {
        let (set, each) = &*KEYS;
        for index in set.matches(cell).iter() {
            if let (Some((kind, _)), Some(re)) = (KEY_PATTERNS.get(index), each.get(index)) {
                for m in re.find_iter(cell) {
                    hits.push((kind, m.start(), m.end()));
                }
            }
        }
    }
    if digits >= 12 {
        for (start, end) in card_candidates(bytes) {
            hits.push(("payment-card", start, end));
        }
        for m in IBAN.find_iter(cell) {
            if iban_valid(m.as_str()) {
                hits.push(("iban", m.start(), m.end()));
            }
        }
    }
    if digits >= 9 {
        for m in PHONE.find_iter(cell) {
            let n = m.as_str().bytes().filter(u8::is_ascii_digit).count();
            let overlaps = hits.iter().any(|&(_, s, e)| m.start() < e && s < m.end());
            if (9..=15).contains(&n) && !overlaps && !looks_like_date(m.as_str()) {
                hits.push(("phone", m.start(), m.end()));
            }
        }
    }
    if longest >= 24 {
        for (start, end) in high_entropy_tokens(cell) {
            if !hits.iter().any(|&(_, s, e)| start < e && s < end) {
                hits.push(("high-entropy-token", start, end));
            }
        }
    }
    hits
}

/// Shortest run of token bytes that a detector without another trigger needs: `-----BEGIN` (10) for private keys;
/// `service_account` (15) and 16 or more for the access keys; 24 for JWTs and high-entropy tokens.
const MIN_TRIGGER_RUN: usize = 10;

/// Byte classes for the one pass over a cell.
const DIGIT: u8 = 1;
/// Part of a key-like token: ASCII letters and digits, `_ - . = / +`.
const TOKEN: u8 = 2;
/// Part of a plain number: digits, `. - + e E`.
const NUMERIC: u8 = 4;
const AT: u8 = 8;

static CLASSES: [u8; 256] = byte_classes();

#[expect(
    clippy::indexing_slicing,
    reason = "i < 256, the table's length; const fn has no get_mut yet"
)]
const fn byte_classes() -> [u8; 256] {
    let mut table = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        let mut class = 0;
        if b.is_ascii_digit() {
            class |= DIGIT | NUMERIC;
        }
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'=' | b'/' | b'+') {
            class |= TOKEN;
        }
        if matches!(b, b'.' | b'-' | b'+' | b'e' | b'E') {
            class |= NUMERIC;
        }
        if b == b'@' {
            class |= AT;
        }
        table[i] = class;
        i += 1;
    }
    table
}

/// What one pass over a cell tells: enough to skip every detector that cannot fire.
///
/// E-mail needs an `@`; phone numbers 9 digits, cards and IBANs 12; every other detector a token run of at least
/// [`MIN_TRIGGER_RUN`] bytes. A plain number (digits and `. - + e E` only) with fewer than 9 digits holds nothing.
struct CellStats {
    digits: usize,
    plain: bool,
    longest: usize,
    at: bool,
}

impl CellStats {
    fn of(bytes: &[u8]) -> Self {
        let (mut digits, mut run, mut longest) = (0usize, 0usize, 0usize);
        let (mut any, mut all) = (0u8, u8::MAX);
        for &b in bytes {
            let class = CLASSES.get(usize::from(b)).copied().unwrap_or(0);
            digits += usize::from(class & DIGIT);
            any |= class;
            all &= class;
            if class & TOKEN != 0 {
                run += 1;
                longest = longest.max(run);
            } else {
                run = 0;
            }
        }
        Self {
            digits,
            plain: all & NUMERIC != 0,
            longest,
            at: any & AT != 0,
        }
    }
}

fn looks_like_date(text: &str) -> bool {
    let parts: Vec<&str> = text
        .split(['-', '.', '/', ' '])
        .filter(|p| !p.is_empty())
        .collect();
    matches!(parts.as_slice(), [y, m, d] if y.len() == 4 && m.len() <= 2 && d.len() <= 2)
}

/// Runs of 13 to 19 digits (single spaces or dashes allowed between groups) that pass Luhn and start with a known
/// issuer prefix.
fn card_candidates(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let starts_clean = i == 0 || !bytes.get(i - 1).is_some_and(u8::is_ascii_alphanumeric);
        if !bytes.get(i).is_some_and(u8::is_ascii_digit) || !starts_clean {
            i += 1;
            continue;
        }
        let mut digits: Vec<u8> = Vec::with_capacity(19);
        let mut j = i;
        let mut last_digit_end = i;
        while let Some(&b) = bytes.get(j) {
            if b.is_ascii_digit() {
                digits.push(b - b'0');
                j += 1;
                last_digit_end = j;
                if digits.len() > 19 {
                    break;
                }
            } else if (b == b' ' || b == b'-') && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
                j += 1;
            } else {
                break;
            }
        }
        let ends_clean = !bytes
            .get(last_digit_end)
            .is_some_and(u8::is_ascii_alphanumeric);
        if (13..=19).contains(&digits.len())
            && ends_clean
            && luhn(&digits)
            && issuer_prefix(&digits)
        {
            out.push((i, last_digit_end));
        }
        i = j.max(i + 1);
    }
    out
}

/// The Luhn checksum over decimal digits.
pub fn luhn(digits: &[u8]) -> bool {
    let mut sum = 0u32;
    for (position, &d) in digits.iter().rev().enumerate() {
        let mut v = u32::from(d);
        if position % 2 == 1 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    !digits.is_empty() && sum % 10 == 0
}

fn issuer_prefix(digits: &[u8]) -> bool {
    let n = |k: usize| {
        digits
            .iter()
            .take(k)
            .fold(0u32, |acc, &d| acc * 10 + u32::from(d))
    };
    let (d1, d2, d3, d4) = (n(1), n(2), n(3), n(4));
    d1 == 4
        || (51..=55).contains(&d2)
        || (2221..=2720).contains(&d4)
        || d2 == 34
        || d2 == 37
        || d4 == 6011
        || d2 == 65
        || (644..=649).contains(&d3)
        || d2 == 35
        || d2 == 36
        || d2 == 38
        || (300..=305).contains(&d3)
        || d2 == 62
}

/// IBAN check: length per country (where known) and ISO 13616 mod-97 == 1.
pub fn iban_valid(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let len = compact.len();
    if !(15..=34).contains(&len) {
        return false;
    }
    let country = compact.get(..2).unwrap_or_default();
    let expected = match country {
        "DE" => 22,
        "GB" | "IE" => 22,
        "FR" | "IT" | "MC" => 27,
        "ES" | "SE" => 24,
        "NL" => 18,
        "BE" => 16,
        "CH" | "LI" => 21,
        "AT" => 20,
        "PL" => 28,
        "PT" => 25,
        "NO" => 15,
        "DK" | "FI" => 18,
        _ => len,
    };
    if len != expected {
        return false;
    }
    let rearranged = compact
        .get(4..)
        .unwrap_or_default()
        .chars()
        .chain(compact.get(..4).unwrap_or_default().chars());
    let mut remainder = 0u32;
    for c in rearranged {
        let value = match c {
            '0'..='9' => c as u32 - '0' as u32,
            'A'..='Z' => c as u32 - 'A' as u32 + 10,
            _ => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

/// Tokens of 24+ characters from the base64/base64url alphabet with upper case, lower case and digits, and a Shannon
/// entropy of at least 4 bits per character. Pure hex strings (digests, ids) are not reported.
fn high_entropy_tokens(cell: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let is_token =
        |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'=' | b'_' | b'-');
    let bytes = cell.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes.get(i).copied().is_some_and(is_token) {
            i += 1;
            continue;
        }
        let start = i;
        while bytes.get(i).copied().is_some_and(is_token) {
            i += 1;
        }
        let token = bytes.get(start..i).unwrap_or_default();
        if token.len() >= 24
            && token.iter().any(u8::is_ascii_uppercase)
            && token.iter().any(u8::is_ascii_lowercase)
            && token.iter().any(u8::is_ascii_digit)
            && shannon_entropy(token) >= 4.0
        {
            out.push((start, i));
        }
    }
    out
}

/// Bits per symbol of the byte distribution.
pub fn shannon_entropy(bytes: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &b in bytes {
        if let Some(c) = counts.get_mut(usize::from(b)) {
            *c += 1;
        }
    }
    let n = bytes.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

/// Mask a matched value: keep enough to find it again, never enough to use it.
pub fn mask(kind: &str, text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let stars = |n: usize| "*".repeat(n.min(12));
    match kind {
        "email" => {
            let (local, domain) = text.split_once('@').unwrap_or((text, ""));
            let tld = domain.rsplit('.').next().unwrap_or_default();
            format!(
                "{}{}@{}.{tld}",
                local.chars().next().unwrap_or('*'),
                stars(local.chars().count().saturating_sub(1)),
                stars(domain.len().saturating_sub(tld.len() + 1))
            )
        }
        "payment-card" | "iban" | "phone" => {
            let digits: Vec<char> = chars
                .iter()
                .copied()
                .filter(char::is_ascii_alphanumeric)
                .collect();
            let tail: String = digits
                .iter()
                .rev()
                .take(if kind == "phone" { 2 } else { 4 })
                .rev()
                .collect();
            let head: String = if kind == "iban" {
                digits.iter().take(2).collect()
            } else {
                String::new()
            };
            format!(
                "{head}{}{tail}",
                stars(digits.len().saturating_sub(head.len() + tail.len()))
            )
        }
        "private-key" => "-----BEGIN ... PRIVATE KEY----- [redacted]".to_string(),
        _ => {
            let head: String = chars.iter().take(4).collect();
            format!(
                "{head}{} ({} chars)",
                stars(chars.len().saturating_sub(4)),
                chars.len()
            )
        }
    }
}

/// Characters shown of a value in messages.
pub(crate) fn excerpt(value: &str) -> String {
    let mut out: String = value.chars().take(40).collect();
    if value.chars().count() > 40 {
        out.push('…');
    }
    format!("`{out}`")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(cell: &str) -> Vec<&'static str> {
        let mut scanner = LeakScanner::new(&["c".to_string()], &[], 100);
        scanner.scan_cell(2, 0, cell);
        scanner.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn finds_each_kind() {
        assert_eq!(kinds("write to jane.doe@example.com today"), vec!["email"]);
        assert_eq!(kinds("card 4111 1111 1111 1111 exp"), vec!["payment-card"]);
        assert_eq!(kinds("card 4111 1111 1111 1112 exp"), Vec::<&str>::new());
        assert_eq!(kinds("pay to DE89 3704 0044 0532 0130 00"), vec!["iban"]);
        assert_eq!(kinds("GB82WEST12345698765432"), vec!["iban"]);
        assert_eq!(kinds("GB82WEST12345698765433"), Vec::<&str>::new());
        assert_eq!(kinds("call +1 415-555-0132 now"), vec!["phone"]);
        assert_eq!(kinds("id AKIAIOSFODNN7EXAMPLE"), vec!["aws-access-key"]);
        assert_eq!(
            kinds("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----"),
            vec!["private-key"]
        );
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(kinds(jwt), vec!["jwt"]);
        assert_eq!(
            kinds("token=Zk9xT2pWcUx3R1h5bE1uQjd8aQ4rS9vW"),
            vec!["high-entropy-token"]
        );
        assert_eq!(
            kinds("2024-01-15 and 0.123, nothing here"),
            Vec::<&str>::new()
        );
        assert_eq!(
            kinds("sha d41d8cd98f00b204e9800998ecf8427e"),
            Vec::<&str>::new()
        );
    }

    #[test]
    fn masks_never_show_the_value() {
        let m = mask("payment-card", "4111 1111 1111 1111");
        assert_eq!(m, "************1111");
        let m = mask("email", "jane.doe@example.com");
        assert!(!m.contains("jane.doe") && !m.contains("example"), "{m}");
        assert!(!mask("aws-access-key", "AKIAIOSFODNN7EXAMPLE").contains("IOSFODNN7"));
    }

    #[test]
    fn the_triggers_never_hide_a_finding() {
        // Cells of random text, numbers and tokens, with leaks of every kind planted in some: the scanner with its
        // triggers must find exactly what every detector run on every cell finds.
        let planted = [
            "jane.doe@example.com",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
            "DE89 3704 0044 0532 0130 00",
            "GB82WEST12345698765432",
            "+1 415-555-0132",
            "(415) 555 0132",
            "555-123-4567",
            "AKIAIOSFODNN7EXAMPLE",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "-----BEGIN RSA PRIVATE KEY-----\nMIIE\n-----END RSA PRIVATE KEY-----",
            "\"type\": \"service_account\"",
            "Zk9xT2pWcUx3R1h5bE1uQjd8aQ4rS9vW",
            "xoxb-1234567890-abcdefghij",
        ];
        let alphabet = b"abcXYZ0123456789 .-+@_/=:eE()";
        let mut rng = crate::matrix::Rng::new(11);
        let columns = vec!["c".to_string()];
        let mut fast = LeakScanner::new(&columns, &[], 100_000);
        let mut reference = LeakScanner::new(&columns, &[], 100_000);
        for line in 0..20_000u64 {
            let length = (rng.next_u64() % 40) as usize;
            let mut cell: String = (0..length)
                .map(|_| char::from(alphabet[(rng.next_u64() % alphabet.len() as u64) as usize]))
                .collect();
            match rng.next_u64() % 4 {
                0 => cell = format!("{:.6}", rng.next_u64() as f64 / 1e9),
                1 => cell.push_str(planted[(rng.next_u64() % planted.len() as u64) as usize]),
                _ => {}
            }
            fast.scan_cell(line, 0, &cell);
            reference.scan_cell_reference(line, 0, &cell);
        }
        let kinds = |s: &LeakScanner| -> Vec<(u64, &'static str, String)> {
            s.findings
                .iter()
                .map(|f| (f.line, f.kind, f.excerpt.clone()))
                .collect()
        };
        assert!(reference.total > 3_000, "{}", reference.total);
        assert_eq!(reference.counts.len(), 11, "{:?}", reference.counts);
        assert_eq!(kinds(&fast), kinds(&reference));
        assert_eq!(fast.counts, reference.counts);
    }

    #[test]
    fn numbers_only_rows_are_still_scanned() {
        // Regression: a row of numbers and dashes used to be passed over whole, and its phone number with it.
        let mut scanner = LeakScanner::new(&["id".to_string(), "phone".to_string()], &[], 10);
        scanner.scan_row(&Row::from_cells(2, [Some("17"), Some("555-123-4567")]));
        assert_eq!(scanner.findings.len(), 1);
        assert_eq!(scanner.findings[0].kind, "phone");
        let mut scanner = LeakScanner::new(&["a".to_string(), "b".to_string()], &[], 10);
        scanner.scan_row(&Row::from_cells(2, [Some("0.625"), Some("-1.5e-3"), None]));
        assert_eq!(scanner.total, 0);
    }

    #[test]
    fn the_one_pass_sees_every_trigger() {
        let stats = CellStats::of(b"0.625e-3");
        assert!(stats.plain && stats.digits == 5 && !stats.at);
        let stats = CellStats::of(b"x -----BEGIN y@z");
        assert!(!stats.plain && stats.at && stats.longest == 10);
        // The shortest cells each detector fires on pass the trigger.
        for cell in [
            "a@b.co",
            "+1 415-555-0132",
            "AKIAIOSFODNN7EXAMPLE",
            "\"type\": \"service_account\"",
            "-----BEGIN RSA PRIVATE KEY-----",
        ] {
            let s = CellStats::of(cell.as_bytes());
            assert!(
                s.at || s.digits >= 9 || s.longest >= MIN_TRIGGER_RUN,
                "{cell}"
            );
        }
    }
}
