//! The audit trail: one record per decision, written by a dedicated thread in batches behind [`AuditSink`].
//!
//! Requests hand their record to a bounded queue and go on. The writer thread sleeps until a record comes, then
//! lingers [`LINGER`] so that a batch gathers (unless a whole batch is already waiting), and writes the batch with one
//! call: under load it wakes about a hundred times a second, not once per request, and the log behind it makes each
//! batch durable with one `fdatasync`. A full queue makes requests wait (back-pressure): a record is never dropped.
//!
//! A record holds who, what, which model, the outcome and a SHA-256 digest of the input, never the input itself, a
//! key or a token. The tamper-evident log (`crate::trail::LogSink`) is the default sink; a JSON-lines file is the
//! other (`[audit] sink = "jsonl"`).

use std::fmt::Debug;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::metrics::Metrics;

/// One decision.
#[derive(Debug, Clone, Serialize)]
pub struct AuditRecord {
    /// When it was answered, RFC 3339 UTC.
    pub time: String,
    /// The client address.
    pub client_ip: String,
    /// The authenticated principal, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// The action (`infer`, `read_metadata`).
    pub action: &'static str,
    /// The model, if the route names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The registry version, if the route names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The route template.
    pub route: &'static str,
    /// `allowed` or `refused` or `failed`.
    pub outcome: &'static str,
    /// The stage that refused, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    /// The machine-readable reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    /// The HTTP status.
    pub status: u16,
    /// Time to answer, in microseconds.
    pub latency_us: u64,
    /// Hex SHA-256 of the request body, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_sha256: Option<String>,
    /// What the inference-time defences decided, when the model has any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub defend: Option<Box<crate::stages::defend::DefendAudit>>,
}

/// Where audit records go. Called from a blocking thread with a batch; must be durable when it returns `Ok` from
/// [`AuditSink::sync`].
pub trait AuditSink: Send + Sync + Debug {
    /// Appends a batch.
    fn append(&self, records: &[AuditRecord]) -> std::io::Result<()>;
    /// Makes appended records durable.
    fn sync(&self) -> std::io::Result<()>;
}

/// Appends JSON lines to a file. The file holds whole lines only: a write that fails part-way (a full disk) is cut
/// back off it, so that the next write, once there is room, starts a line of its own instead of ending a broken one.
#[derive(Debug)]
pub struct JsonLinesSink {
    path: PathBuf,
    file: std::sync::Mutex<Lines>,
}

/// The file, and the lines being written to it.
#[derive(Debug)]
struct Lines {
    file: File,
    buffer: Vec<u8>,
}

impl Lines {
    /// Appends `buffer` (whole lines) in one write; on a failure, cuts off what of it reached the file.
    fn write_buffer(&mut self) -> std::io::Result<()> {
        append_lines(&mut self.file, &self.buffer, "the audit file")
    }

    /// Serialises `items` into the buffer, one line each.
    fn fill<T: Serialize>(&mut self, items: &[T]) -> std::io::Result<()> {
        self.buffer.clear();
        for item in items {
            serde_json::to_writer(&mut self.buffer, item).map_err(std::io::Error::other)?;
            self.buffer.push(b'\n');
        }
        Ok(())
    }
}

impl JsonLinesSink {
    /// Opens `path` for appending, creating it (and its directory) if needed. A last line left unfinished (by a
    /// crash, or another writer) is ended, so that the next record starts a line of its own.
    pub fn open(path: &Path) -> std::io::Result<JsonLinesSink> {
        use std::os::unix::fs::FileExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let len = file.metadata()?.len();
        let mut last = [b'\n'];
        if len > 0 {
            // A file the gateway may append to but not read is taken as it is.
            let _ = File::open(path).and_then(|f| f.read_exact_at(&mut last, len - 1));
        }
        if last != [b'\n'] {
            file.write_all(b"\n")?;
        }
        Ok(JsonLinesSink {
            path: path.to_owned(),
            file: std::sync::Mutex::new(Lines {
                file,
                buffer: Vec::with_capacity(1 << 16),
            }),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one event that is not a request (a model load, a policy reload) and makes it durable.
    pub fn append_event<T: Serialize>(&self, event: &T) -> std::io::Result<()> {
        let mut lines = self.file.lock().unwrap_or_else(|p| p.into_inner());
        lines.fill(std::slice::from_ref(event))?;
        lines.write_buffer()?;
        lines.file.sync_data()
    }
}

impl AuditSink for JsonLinesSink {
    fn append(&self, records: &[AuditRecord]) -> std::io::Result<()> {
        let mut lines = self.file.lock().unwrap_or_else(|p| p.into_inner());
        lines.fill(records)?;
        lines.write_buffer()
    }

    fn sync(&self) -> std::io::Result<()> {
        let lines = self.file.lock().unwrap_or_else(|p| p.into_inner());
        lines.file.sync_data()
    }
}

/// Appends `lines` (whole lines) to `file` in one write. On a failure (a full disk), what of them reached the file is
/// cut off, so that the file holds whole lines only and the next write starts a line of its own; `what` names the
/// file in the message when that cut fails too.
pub(crate) fn append_lines(file: &mut File, lines: &[u8], what: &str) -> std::io::Result<()> {
    let whole = file.metadata()?.len();
    match file.write_all(lines) {
        Ok(()) => Ok(()),
        Err(err) => {
            if let Err(cut) = file.set_len(whole) {
                tracing::error!(error = %cut, "cannot cut a failed write off {what}");
            }
            Err(err)
        }
    }
}

/// Runs this test binary's ignored test `test` again in a shell whose files may grow to 2 KiB (`ulimit -f 2`, with
/// SIGXFSZ ignored so that a write past it fails with EFBIG instead of killing the process), with
/// `RAMPART_TEST_FSIZE_DIR` set to `dir`; fails unless it passes.
#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
pub(crate) fn rerun_with_file_limit(test: &str, dir: &Path) {
    let child = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2; exec \"$0\" --exact {test} --ignored --quiet --test-threads 1"
        ))
        .arg(std::env::current_exe().unwrap())
        .env("RAMPART_TEST_FSIZE_DIR", dir)
        .output()
        .unwrap();
    assert!(
        child.status.success(),
        "{}{}",
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
}

/// How long the writer waits after the first record of a batch for more to arrive: a record reaches the sink within
/// this (the tamper-evident log then makes it durable in its next commit); `[audit] flush_ms` bounds how long the
/// writer may go without a sync.
pub const LINGER: Duration = Duration::from_millis(10);

/// The handle stages record through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Auditor {
    tx: Option<SyncSender<AuditRecord>>,
    /// Whether records reach the sink: false from a failed write or sync (or a panic in the sink) until a batch is
    /// written again.
    healthy: Arc<AtomicBool>,
}

impl Auditor {
    /// An auditor that records nothing (audit disabled).
    pub fn disabled() -> Auditor {
        Auditor {
            tx: None,
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Whether records reach the sink: false while it fails (a full disk, a log it cannot write). A gateway that
    /// must not act unaudited refuses requests meanwhile (`[audit] on_failure`); their refusals are records too, and
    /// the first batch of them the sink takes makes it healthy again. An auditor that records nothing is healthy.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Starts the writer thread: records are appended in batches of up to `batch` and synced every `sync_every`.
    /// The returned task ends, after the thread wrote and synced everything queued, when every [`Auditor`] clone is
    /// dropped. Must be called inside a Tokio runtime.
    pub fn start(
        sink: Arc<dyn AuditSink>,
        batch: usize,
        sync_every: Duration,
        metrics: Arc<Metrics>,
    ) -> (Auditor, tokio::task::JoinHandle<()>) {
        let batch = batch.max(1);
        let (tx, rx) = sync_channel::<AuditRecord>(batch.saturating_mul(8).max(64));
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = Writer {
            sink,
            metrics,
            healthy: Arc::clone(&healthy),
        };
        let spawned = std::thread::Builder::new()
            .name("rampart-audit".into())
            .spawn(move || {
                write_loop(&writer, &rx, batch, sync_every);
                let _ = done.send(());
            });
        if let Err(err) = spawned {
            // Without a writer every record would wait forever: refuse to audit rather than hang requests.
            tracing::error!(error = %err, "cannot start the audit writer thread");
            return (Auditor::disabled(), tokio::spawn(async {}));
        }
        let task = tokio::spawn(async move {
            let _ = finished.await;
        });
        (
            Auditor {
                tx: Some(tx),
                healthy,
            },
            task,
        )
    }

    /// Queues a record; waits when the writer is behind (back-pressure rather than lost records).
    pub async fn record(&self, record: AuditRecord) {
        let Some(tx) = &self.tx else { return };
        let mut record = record;
        loop {
            match tx.try_send(record) {
                Ok(()) | Err(TrySendError::Disconnected(_)) => return,
                Err(TrySendError::Full(back)) => {
                    record = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        }
    }
}

/// What the writer thread writes to, and where it says how that went.
struct Writer {
    sink: Arc<dyn AuditSink>,
    metrics: Arc<Metrics>,
    healthy: Arc<AtomicBool>,
}

impl Writer {
    /// Runs one call on the sink: a failure, or a panic in it (which would otherwise end the thread and leave the
    /// trail silently unwritten), is counted and logged, and marks the trail unhealthy until a batch is written
    /// again (`appends`: this call writes one; a sync alone does not show that records go through).
    fn call(
        &self,
        what: &str,
        records: u64,
        appends: bool,
        call: impl FnOnce(&dyn AuditSink) -> std::io::Result<()>,
    ) -> bool {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call(&*self.sink)))
            .unwrap_or_else(|_| Err(std::io::Error::other("the audit sink panicked")));
        match outcome {
            Ok(()) => {
                if appends && !self.healthy.swap(true, Ordering::Relaxed) {
                    tracing::info!("the audit trail is written again");
                }
                true
            }
            Err(err) => {
                self.metrics.audit_errors.inc_by(records.max(1));
                self.healthy.store(false, Ordering::Relaxed);
                tracing::error!(error = %err, "cannot {what} the audit trail");
                false
            }
        }
    }
}

/// The writer thread: batches, writes, syncs; returns when every sender is gone and everything is written.
fn write_loop(writer: &Writer, rx: &Receiver<AuditRecord>, batch: usize, sync_every: Duration) {
    let mut buffer: Vec<AuditRecord> = Vec::with_capacity(batch);
    let mut dirty = false;
    let mut last_sync = Instant::now();
    let mut open = true;
    while open {
        let first = if dirty {
            match rx.recv_timeout(sync_every.saturating_sub(last_sync.elapsed())) {
                Ok(record) => Some(record),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    open = false;
                    None
                }
            }
        } else {
            match rx.recv() {
                Ok(record) => Some(record),
                Err(_) => {
                    open = false;
                    None
                }
            }
        };
        if let Some(record) = first {
            buffer.push(record);
            drain(rx, &mut buffer, batch);
            if buffer.len() < batch {
                std::thread::sleep(LINGER);
            }
        }
        loop {
            drain(rx, &mut buffer, batch);
            if buffer.is_empty() {
                break;
            }
            if writer.call("write", buffer.len() as u64, true, |sink| {
                sink.append(&buffer)
            }) {
                dirty = true;
            }
            buffer.clear();
            if open {
                break;
            }
        }
        if dirty && (!open || last_sync.elapsed() >= sync_every) {
            writer.call("sync", 0, false, |sink| sink.sync());
            dirty = false;
            last_sync = Instant::now();
        }
    }
}

/// Moves queued records into `buffer` until it holds `batch`.
fn drain(rx: &Receiver<AuditRecord>, buffer: &mut Vec<AuditRecord>, batch: usize) {
    while buffer.len() < batch {
        match rx.try_recv() {
            Ok(record) => buffer.push(record),
            Err(_) => break,
        }
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // Digit by digit: this runs for every audit record, and `format!` costs several times as much. The year has
    // four digits until 9999 (the time is never before 1970).
    let mut text = String::with_capacity(24);
    if year > 9999 {
        text.push_str(&year.to_string());
    } else {
        push_digits(&mut text, year.unsigned_abs(), 4);
    }
    for (separator, value, width) in [
        ('-', month.unsigned_abs(), 2),
        ('-', day.unsigned_abs(), 2),
        ('T', rem / 3600, 2),
        (':', rem % 3600 / 60, 2),
        (':', rem % 60, 2),
        ('.', u64::from(since.subsec_millis()), 3),
    ] {
        text.push(separator);
        push_digits(&mut text, value, width);
    }
    text.push('Z');
    text
}

/// Appends the last `width` decimal digits of `value`, zero-padded.
fn push_digits(text: &mut String, value: u64, width: u32) {
    for place in (0..width).rev() {
        let digit = value / 10_u64.pow(place) % 10;
        text.push(char::from(b'0' + digit as u8));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(rfc3339(t), "9999-12-31T23:59:59.999Z");
        let t = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(rfc3339(t), "10000-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_782_400_007);
        assert_eq!(rfc3339(t), "2000-02-29T00:00:00.007Z");
    }

    fn record(status: u16) -> AuditRecord {
        AuditRecord {
            time: rfc3339(SystemTime::now()),
            client_ip: "127.0.0.1".into(),
            principal: Some("p".into()),
            action: "infer",
            model: None,
            version: None,
            route: "/",
            outcome: "allowed",
            stage: None,
            reason: None,
            status,
            latency_us: 1,
            input_sha256: None,
            defend: None,
        }
    }

    /// Panics on a record of status 500 (a bug in a sink), takes the others.
    #[derive(Debug, Default)]
    struct Panicky(std::sync::Mutex<Vec<u16>>);

    impl AuditSink for Panicky {
        fn append(&self, records: &[AuditRecord]) -> std::io::Result<()> {
            assert!(records.iter().all(|r| r.status != 500), "a bug in the sink");
            self.0
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.status));
            Ok(())
        }
        fn sync(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_sink_that_panics_marks_the_trail_unhealthy_and_the_writer_goes_on() {
        let sink = Arc::new(Panicky::default());
        let metrics = Arc::new(Metrics::new());
        let (auditor, task) = Auditor::start(
            Arc::clone(&sink) as Arc<dyn AuditSink>,
            1,
            Duration::from_millis(50),
            Arc::clone(&metrics),
        );
        // Until the writer got there (a panic's backtrace can take a while to print).
        let until = |healthy: bool| {
            let auditor = auditor.clone();
            async move {
                for _ in 0..1000 {
                    if auditor.is_healthy() == healthy {
                        return true;
                    }
                    tokio::time::sleep(LINGER).await;
                }
                false
            }
        };
        auditor.record(record(200)).await;
        auditor.record(record(500)).await;
        assert!(until(false).await);
        assert_eq!(metrics.audit_errors.get(), 1);
        auditor.record(record(201)).await;
        assert!(until(true).await);
        drop(auditor);
        task.await.unwrap();
        assert_eq!(*sink.0.lock().unwrap(), vec![200, 201]);
    }

    /// Run by `a_write_that_fails_part_way_is_cut_off` in a child process whose files may not grow past 2 KiB (bash's
    /// `ulimit -f 2`, SIGXFSZ ignored so that a write past it fails with EFBIG instead of killing the process).
    #[test]
    #[ignore = "run by a_write_that_fails_part_way_is_cut_off, under a file size limit"]
    fn fill_a_file_past_its_size_limit() {
        let Some(dir) = std::env::var_os("RAMPART_TEST_FSIZE_DIR") else {
            return;
        };
        let path = Path::new(&dir).join("audit.jsonl");
        let sink = JsonLinesSink::open(&path).unwrap();
        // Batches of three records of about 200 bytes: the write that crosses 2 KiB fails part-way.
        let mut failed = 0;
        for i in 0..20u16 {
            if sink.append(&[record(i), record(i), record(i)]).is_err() {
                failed += 1;
            }
        }
        assert!(failed > 0, "the size limit was not reached");
        // A small event still fits where the failed batch was cut off.
        sink.append_event(&serde_json::json!({"event": "after"}))
            .unwrap();
    }

    #[test]
    fn a_write_that_fails_part_way_is_cut_off() {
        let dir = tempfile::tempdir().unwrap();
        // An unfinished last line, as a crash leaves it, is ended at open.
        std::fs::write(dir.path().join("audit.jsonl"), b"{\"partial\":").unwrap();
        rerun_with_file_limit("audit::tests::fill_a_file_past_its_size_limit", dir.path());
        let text = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(text.ends_with('\n'));
        assert_eq!(lines.first(), Some(&"{\"partial\":"));
        assert_eq!(lines.last(), Some(&r#"{"event":"after"}"#));
        // Between them, whole records only, in whole batches of three.
        let records = &lines[1..lines.len() - 1];
        assert!(
            records.len() >= 3 && records.len().is_multiple_of(3),
            "{} records",
            records.len()
        );
        for line in records {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(value["action"], "infer");
        }
    }

    #[tokio::test]
    async fn records_reach_the_file_before_the_writer_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let sink = Arc::new(JsonLinesSink::open(&path).unwrap());
        let (auditor, task) =
            Auditor::start(sink, 4, Duration::from_millis(50), Arc::new(Metrics::new()));
        for i in 0..10u16 {
            auditor.record(record(200 + i)).await;
        }
        drop(auditor);
        task.await.unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 10);
        assert!(text
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
    }
}
