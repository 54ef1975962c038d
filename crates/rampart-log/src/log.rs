//! The log as callers see it: concurrent appends, group-committed by one committer thread.
//!
//! Any number of threads call [`Log::append`] (or [`Log::submit`] and later [`Receipt::wait`]). Entries
//! queue up while the committer writes the previous batch; the committer then writes the whole queue to
//! the write-ahead file with one `fdatasync` and wakes every appender in it. An index is returned only
//! once its entry is durable. A checkpoint is signed every `checkpoint_interval`, on request and on close.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
use crate::fsutil::write_secret;
use crate::note::{SignerKey, VerifierKey};
use crate::writer::Writer;

/// At most this many entries wait for the committer; appenders beyond it wait (back-pressure).
const MAX_QUEUE: usize = 1 << 20;

/// How a log is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// How often a checkpoint is signed while entries arrive.
    pub checkpoint_interval: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            checkpoint_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug)]
struct State {
    next: u64,
    queue: Vec<Vec<u8>>,
    durable: u64,
    failed: Option<String>,
    closing: bool,
    requested: u64,
    done: u64,
    checkpoint: Checkpoint,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    committer: Condvar,
    appenders: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a thread panicked while holding it; the state is plain data, still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// An open, writable log. `Send + Sync`: share it behind an `Arc`.
#[derive(Debug)]
pub struct Log {
    shared: Arc<Shared>,
    committer: Option<JoinHandle<()>>,
    dir: PathBuf,
    verifier: VerifierKey,
    _lock: std::fs::File,
}

/// An entry accepted but perhaps not yet durable.
#[derive(Debug)]
#[must_use = "an entry is durable only once `wait` returns"]
pub struct Receipt {
    shared: Arc<Shared>,
    index: u64,
}

impl Receipt {
    /// The entry's index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// Blocks until the entry is durable and returns its index.
    pub fn wait(self) -> Result<u64> {
        let mut state = self.shared.lock();
        loop {
            if state.durable > self.index {
                return Ok(self.index);
            }
            if let Some(failed) = &state.failed {
                return Err(Error::Failed(failed.clone()));
            }
            state = self
                .shared
                .appenders
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }
}

/// The files of a log directory.
pub(crate) fn key_path(dir: &Path) -> PathBuf {
    dir.join("log.key")
}

/// The verifier key file, public.
pub fn vkey_path(dir: &Path) -> PathBuf {
    dir.join("log.vkey")
}

impl Log {
    /// Creates a new log in `dir` (created if missing, must not hold a log) with a fresh Ed25519 key named `origin`.
    pub fn create(dir: &Path, origin: &str, options: Options) -> Result<Log> {
        if dir.join("checkpoint").exists() || key_path(dir).exists() {
            return Err(Error::Exists {
                dir: dir.to_owned(),
            });
        }
        std::fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
        let key = SignerKey::generate(origin)?;
        let lock = lock(dir)?;
        write_secret(&key_path(dir), format!("{}\n", key.to_text()).as_bytes())?;
        crate::fsutil::write_atomic(
            &vkey_path(dir),
            format!("{}\n", key.verifier().to_text()).as_bytes(),
            true,
        )?;
        let verifier = key.verifier();
        let writer = Writer::create(dir, key)?;
        Ok(Log::start(dir, writer, verifier, lock, options))
    }

    /// Opens the log in `dir` for appending, repairing a torn tail left by a crash.
    pub fn open(dir: &Path, options: Options) -> Result<Log> {
        if !dir.join("checkpoint").exists() {
            return Err(Error::NotALog {
                dir: dir.to_owned(),
            });
        }
        let lock = lock(dir)?;
        let path = key_path(dir);
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        let key = SignerKey::parse(&text)?;
        let verifier = key.verifier();
        let path = dir.join("checkpoint");
        let signed = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        let checkpoint = Checkpoint::open(&signed, &verifier, &path)?;
        let writer = Writer::recover(dir, key, &checkpoint)?;
        Ok(Log::start(dir, writer, verifier, lock, options))
    }

    fn start(
        dir: &Path,
        writer: Writer,
        verifier: VerifierKey,
        lock: std::fs::File,
        options: Options,
    ) -> Log {
        let size = writer.size();
        let checkpoint = Checkpoint {
            origin: verifier.name().to_owned(),
            size,
            root: [0; 32],
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                next: size,
                queue: Vec::new(),
                durable: size,
                failed: None,
                closing: false,
                requested: 0,
                done: 0,
                checkpoint,
            }),
            committer: Condvar::new(),
            appenders: Condvar::new(),
        });
        let for_thread = Arc::clone(&shared);
        let committer = std::thread::Builder::new()
            .name("rampart-log-commit".into())
            .spawn(move || commit_loop(&for_thread, writer, options.checkpoint_interval))
            .map_err(|e| tracing::error!(error = %e, "cannot start the audit log's committer"))
            .ok();
        if committer.is_none() {
            shared.lock().failed = Some("cannot start the committer thread".into());
        }
        Log {
            shared,
            committer,
            dir: dir.to_owned(),
            verifier,
            _lock: lock,
        }
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key that verifies this log's checkpoints.
    pub fn verifier(&self) -> &VerifierKey {
        &self.verifier
    }

    /// Queues an entry and returns at once; the entry is durable when the receipt's `wait` returns.
    pub fn submit(&self, entry: Vec<u8>) -> Result<Receipt> {
        if entry.len() > usize::from(u16::MAX) {
            return Err(Error::EntryTooLarge { len: entry.len() });
        }
        let mut state = self.room()?;
        let index = state.next;
        state.next += 1;
        state.queue.push(entry);
        if state.queue.len() == 1 {
            self.shared.committer.notify_one();
        }
        Ok(Receipt {
            shared: Arc::clone(&self.shared),
            index,
        })
    }

    /// The state, once the queue has room: waits while it is full; fails when the log failed or is closing.
    fn room(&self) -> Result<MutexGuard<'_, State>> {
        let mut state = self.shared.lock();
        while state.queue.len() >= MAX_QUEUE && state.failed.is_none() && !state.closing {
            state = self
                .shared
                .appenders
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        if let Some(failed) = &state.failed {
            return Err(Error::Failed(failed.clone()));
        }
        if state.closing {
            return Err(Error::Closed);
        }
        Ok(state)
    }

    /// Queues several entries under one lock (a gateway's batch of records) and returns the receipt of the last;
    /// once it is durable, so is every one before it. `None` when `entries` is empty.
    pub fn submit_all(&self, entries: Vec<Vec<u8>>) -> Result<Option<Receipt>> {
        if let Some(entry) = entries.iter().find(|e| e.len() > usize::from(u16::MAX)) {
            return Err(Error::EntryTooLarge { len: entry.len() });
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let mut state = self.room()?;
        let was_empty = state.queue.is_empty();
        state.next += entries.len() as u64;
        let index = state.next - 1;
        state.queue.extend(entries);
        if was_empty {
            self.shared.committer.notify_one();
        }
        Ok(Some(Receipt {
            shared: Arc::clone(&self.shared),
            index,
        }))
    }

    /// Appends an entry and returns its index once it is durable.
    pub fn append(&self, entry: &[u8]) -> Result<u64> {
        self.submit(entry.to_vec())?.wait()
    }

    /// Appends a record as one line of JSON and returns its index once it is durable.
    pub fn append_json<T: serde::Serialize + ?Sized>(&self, record: &T) -> Result<u64> {
        self.append(&serde_json::to_vec(record)?)
    }

    /// Signs a checkpoint over every entry appended before this call, and returns it.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let mut state = self.shared.lock();
        state.requested += 1;
        let ticket = state.requested;
        self.shared.committer.notify_one();
        loop {
            if state.done >= ticket {
                return Ok(state.checkpoint.clone());
            }
            if let Some(failed) = &state.failed {
                return Err(Error::Failed(failed.clone()));
            }
            state = self
                .shared
                .appenders
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// Commits what is queued, signs a final checkpoint and closes the log.
    pub fn close(mut self) -> Result<Checkpoint> {
        self.shutdown()
    }

    fn shutdown(&mut self) -> Result<Checkpoint> {
        self.shared.lock().closing = true;
        self.shared.committer.notify_one();
        if let Some(handle) = self.committer.take() {
            if handle.join().is_err() {
                return Err(Error::Failed("the committer thread panicked".into()));
            }
        }
        let state = self.shared.lock();
        match &state.failed {
            Some(failed) => Err(Error::Failed(failed.clone())),
            None => Ok(state.checkpoint.clone()),
        }
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        if self.committer.is_some() {
            if let Err(e) = self.shutdown() {
                tracing::error!(error = %e, "closing the audit log failed");
            }
        }
    }
}

/// A fresh origin for a log created without one: `rampart.invalid/audit/<12 hex digits>`.
pub fn random_origin() -> Result<String> {
    let mut id = [0u8; 6];
    getrandom::getrandom(&mut id).map_err(|e| Error::Random(e.to_string()))?;
    Ok(format!(
        "rampart.invalid/audit/{}",
        id.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn lock(dir: &Path) -> Result<std::fs::File> {
    let path = dir.join("lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io("open", &path))?;
    rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).map_err(
        |_| Error::Locked {
            dir: dir.to_owned(),
        },
    )?;
    Ok(file)
}

fn commit_loop(shared: &Shared, mut writer: Writer, interval: Duration) {
    let mut last_checkpoint = Instant::now();
    loop {
        let (batch, requested, closing) = {
            let mut state = shared.lock();
            loop {
                let due =
                    last_checkpoint.elapsed() >= interval && writer.size() != writer.checkpointed();
                if !state.queue.is_empty() || state.closing || state.requested > state.done || due {
                    break;
                }
                // With entries not yet in a checkpoint, wake when the next one is due; with none, only when called
                // (appends, checkpoint requests and closing all notify): an idle log does not poll. It woke every
                // millisecond once the interval had passed without anything to sign.
                state = if writer.size() != writer.checkpointed() {
                    let wait = interval
                        .saturating_sub(last_checkpoint.elapsed())
                        .max(Duration::from_millis(1));
                    shared
                        .committer
                        .wait_timeout(state, wait)
                        .map(|(s, _)| s)
                        .unwrap_or_else(|e| e.into_inner().0)
                } else {
                    shared
                        .committer
                        .wait(state)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                };
            }
            let batch = std::mem::take(&mut state.queue);
            if !batch.is_empty() {
                shared.appenders.notify_all();
            }
            (batch, state.requested, state.closing)
        };
        let mut result = Ok(());
        if !batch.is_empty() {
            result = writer.commit(&batch);
            if result.is_ok() {
                let mut state = shared.lock();
                state.durable = writer.size();
                shared.appenders.notify_all();
            }
        }
        let due = last_checkpoint.elapsed() >= interval && writer.size() != writer.checkpointed();
        let done = shared.lock().done;
        if result.is_ok() && (closing || due || requested > done) {
            match writer.checkpoint() {
                Ok(checkpoint) => {
                    last_checkpoint = Instant::now();
                    let mut state = shared.lock();
                    state.checkpoint = checkpoint;
                    state.done = requested;
                    shared.appenders.notify_all();
                }
                Err(e) => result = Err(e),
            }
        }
        if let Err(e) = result {
            tracing::error!(error = %e, "the audit log failed; refusing further appends");
            let mut state = shared.lock();
            state.failed = Some(e.to_string());
            shared.appenders.notify_all();
            return;
        }
        if closing && shared.lock().queue.is_empty() {
            return;
        }
    }
}
