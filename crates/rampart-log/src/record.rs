//! The audit record: what an entry of the log says. One JSON object, digests not contents.

use std::collections::BTreeMap;

/// One audited action. Holds digests of requests and artifacts, never raw inputs or secrets.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// When, in RFC 3339 UTC.
    pub time: String,
    /// What was done: `seal`, `unseal`, `sign`, `deploy`, `export.approve`, `gate.request`, ...
    pub action: String,
    /// Who did it: a principal, or `user@host` for the command line.
    pub actor: String,
    /// The decision or result: `ok`, `denied`, `error`, ...
    pub outcome: String,
    /// What it was done to, as digests (`sha256:…`) or names.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub subject: BTreeMap<String, String>,
    /// Anything else worth keeping (no secrets).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// A record of `action` by `actor` with outcome `ok`, stamped now.
    pub fn new(action: impl Into<String>, actor: impl Into<String>) -> Record {
        Record {
            time: rfc3339_now(),
            action: action.into(),
            actor: actor.into(),
            outcome: "ok".into(),
            subject: BTreeMap::new(),
            details: serde_json::Map::new(),
        }
    }

    /// Adds a subject (a digest or a name).
    pub fn subject(mut self, key: impl Into<String>, value: impl Into<String>) -> Record {
        self.subject.insert(key.into(), value.into());
        self
    }

    /// Sets the outcome.
    pub fn outcome(mut self, outcome: impl Into<String>) -> Record {
        self.outcome = outcome.into();
        self
    }
}

/// The current time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

/// Formats seconds since the Unix epoch (civil-from-days, proleptic Gregorian calendar).
pub fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_795_647_599), "2026-11-25T22:59:59Z");
    }
}
