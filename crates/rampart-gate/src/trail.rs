//! The gateway's audit trail on the tamper-evident log (`rampart-log`), and the trail of events that are not
//! requests (model loads and refusals, policy and key reloads).
//!
//! [`LogSink`] is the [`AuditSink`] of `[audit] sink = "log"` (the default): each request record is one entry of
//! the log, as JSON (who, what, the outcome and a SHA-256 of the input; never the input, a key or a token).
//! Entries are submitted as they come and waited for on [`AuditSink::sync`], so one group commit covers a whole
//! batch. [`Trail`] appends the other events, one `rampart_log::Record` each, durably before the action they
//! describe takes effect.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rampart_log::{Log, Options, Receipt, Record};

use crate::audit::{AuditRecord, AuditSink, JsonLinesSink};
use crate::config::{AuditSinkKind, Config};

/// Request records into the tamper-evident log.
#[derive(Debug)]
pub struct LogSink {
    log: Arc<Log>,
    // The receipt of the last entry submitted: once it is durable, every earlier one is.
    last: Mutex<Option<Receipt>>,
}

impl LogSink {
    /// A sink appending to `log`.
    pub fn new(log: Arc<Log>) -> LogSink {
        LogSink {
            log,
            last: Mutex::new(None),
        }
    }
}

impl AuditSink for LogSink {
    fn append(&self, records: &[AuditRecord]) -> std::io::Result<()> {
        let entries = records
            .iter()
            .map(|record| serde_json::to_vec(record).map_err(std::io::Error::other))
            .collect::<std::io::Result<Vec<_>>>()?;
        let last = self
            .log
            .submit_all(entries)
            .map_err(std::io::Error::other)?;
        if last.is_some() {
            *self.last.lock().unwrap_or_else(|p| p.into_inner()) = last;
        }
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        let last = self.last.lock().unwrap_or_else(|p| p.into_inner()).take();
        match last {
            Some(receipt) => receipt.wait().map(|_| ()).map_err(std::io::Error::other),
            None => Ok(()),
        }
    }
}

/// Where events other than requests are recorded: the same place as the requests.
#[derive(Debug, Clone)]
pub enum Trail {
    /// The tamper-evident log.
    Log(Arc<Log>),
    /// The JSON-lines file.
    Lines(Arc<JsonLinesSink>),
    /// Nowhere (`[audit] enabled = false`); events go to the process log only.
    Off,
}

impl Trail {
    /// Appends `record` and returns once it is durable; an error means the action must not take effect.
    pub fn append(&self, record: &Record) -> std::io::Result<()> {
        match self {
            Trail::Log(log) => log
                .append_json(record)
                .map(|_| ())
                .map_err(std::io::Error::other),
            Trail::Lines(sink) => sink.append_event(record),
            Trail::Off => Ok(()),
        }
    }

    /// The log, when the trail is one.
    pub fn log(&self) -> Option<&Arc<Log>> {
        match self {
            Trail::Log(log) => Some(log),
            _ => None,
        }
    }

    /// Signs a checkpoint over everything appended (the log only): called after the last record at shutdown, so
    /// that `rampart audit verify` sees every entry under a signed checkpoint.
    pub fn checkpoint(&self) {
        if let Trail::Log(log) = self {
            if let Err(err) = log.checkpoint() {
                tracing::error!(error = %err, "cannot sign the audit log's final checkpoint");
            }
        }
    }
}

/// The audit log's directory: `audit.dir`, else `audit` in the state directory.
pub fn log_dir(config: &Config) -> PathBuf {
    match &config.audit.dir {
        Some(dir) => config.resolve(dir),
        None => config.state_dir().join("audit"),
    }
}

/// Opens the log in `dir`, creating it (with `origin`, else a random one) when the directory holds none.
pub fn open_log(dir: &Path, origin: Option<&str>) -> rampart_log::Result<Log> {
    if dir.join("checkpoint").exists() {
        return Log::open(dir, Options::default());
    }
    let origin = match origin {
        Some(origin) => origin.to_owned(),
        None => rampart_log::random_origin()?,
    };
    Log::create(dir, &origin, Options::default())
}

/// The sink and the trail the config names (`[audit] sink`).
pub fn open(config: &Config, json_path: &Path) -> std::io::Result<(Arc<dyn AuditSink>, Trail)> {
    match config.audit.sink {
        AuditSinkKind::Log => {
            let dir = log_dir(config);
            let log = open_log(&dir, config.audit.origin.as_deref()).map_err(|err| {
                std::io::Error::other(format!(
                    "cannot open the audit log `{}`: {err}",
                    dir.display()
                ))
            })?;
            let log = Arc::new(log);
            Ok((Arc::new(LogSink::new(Arc::clone(&log))), Trail::Log(log)))
        }
        AuditSinkKind::Jsonl => {
            let sink = Arc::new(JsonLinesSink::open(json_path)?);
            Ok((Arc::clone(&sink) as Arc<dyn AuditSink>, Trail::Lines(sink)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::rfc3339;

    fn record(status: u16) -> AuditRecord {
        AuditRecord {
            time: rfc3339(std::time::SystemTime::now()),
            client_ip: "127.0.0.1".into(),
            principal: Some("p".into()),
            action: "infer",
            model: Some("digits".into()),
            version: None,
            route: "/v2/models/{name}/infer",
            outcome: "allowed",
            stage: None,
            reason: None,
            status,
            latency_us: 1,
            input_sha256: Some("00".repeat(32)),
            defend: None,
        }
    }

    #[test]
    fn records_and_events_land_in_a_log_that_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(open_log(dir.path(), Some("example.com/gate")).unwrap());
        let sink = LogSink::new(Arc::clone(&log));
        sink.append(&[record(200), record(403)]).unwrap();
        sink.sync().unwrap();
        Trail::Log(Arc::clone(&log))
            .append(&Record::new("deploy.load", "gateway").subject("model", "digits"))
            .unwrap();
        Trail::Log(Arc::clone(&log)).checkpoint();
        drop(sink);
        let log = Arc::into_inner(log).unwrap();
        log.close().unwrap();
        let key = rampart_log::read_verifier(dir.path(), None).unwrap();
        let verified = rampart_log::verify(dir.path(), key, &[]).unwrap();
        assert!(verified.problem.is_none(), "{:?}", verified.problem);
        assert_eq!(verified.checkpoint.unwrap().size, 3);
        let view = rampart_log::LogView::open(
            dir.path(),
            rampart_log::read_verifier(dir.path(), None).unwrap(),
        )
        .unwrap();
        let first: serde_json::Value = serde_json::from_slice(&view.entry(0).unwrap()).unwrap();
        assert_eq!(first["status"], 200);
        assert_eq!(first["model"], "digits");
    }

    #[test]
    fn a_second_start_reopens_the_same_log() {
        let dir = tempfile::tempdir().unwrap();
        let log = open_log(dir.path(), None).unwrap();
        log.append(b"{}").unwrap();
        log.close().unwrap();
        let log = open_log(dir.path(), None).unwrap();
        assert_eq!(log.append(b"{}").unwrap(), 1);
    }
}
