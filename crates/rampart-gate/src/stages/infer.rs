//! Running the model: a bounded queue in front of the model, per model, executed one of two ways.
//!
//! - **Threads**: dedicated inference threads take jobs from a bounded channel. Inference is CPU-bound and
//!   synchronous, so a model that takes long never runs on the async runtime's threads.
//! - **Inline**: a model that answers in microseconds (the digits MLP takes ~10 µs) runs on the runtime's thread that
//!   handled the request, under a semaphore of `workers` permits. Handing such a job to another thread and back costs
//!   more than running it (two futex wake-ups and two context switches per request).
//!
//! `execution = "auto"` (the default) times the model on a zero input at start and runs it inline when it answers
//! within [`INLINE_BUDGET`]; an upstream (network) model always gets threads. Either way a full queue is answered at
//! once with 503 (load shedding) instead of letting latency grow without bound, and a job whose deadline passed while
//! it waited is dropped without running.
//!
//! **Batching** (`max_batch`, off by default): one run of the model answers several requests, each with its own rows
//! of the outputs (up to `max_batch` rows in all). Inline, a request's rows wait while the runtime thread reads the
//! other requests already in, and the first of them to be resumed runs everyone's; on threads, a thread takes the
//! requests queued behind the one it takes. There is no timer, and requests that come one at a time soon stop waiting
//! for company (`LONELY`).
//! A run that fails is made again request by request, so that one client's input that breaks the model fails only
//! that client's request. Only models whose rows are independent (no operation mixes the rows of a batch) and whose
//! inputs and outputs all have the batch as their first dimension may be batched: the operator says so by setting
//! `max_batch`.
//!
//! A reload ([`ModelPool::swap`]) starts the new version, then swaps it in atomically: requests already queued or
//! running finish on the old version, whose threads end when its last job is done. A version carries the defences
//! built for it (`stages::defend`, a detector calibrated on that version's answers): a request takes both from one
//! [`Serving`] handle, so it never meets one version's model with another's defences.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use rampart_infer::{InferError, Model, Tensor, TensorData};
use tokio::sync::{oneshot, Semaphore};

use crate::stages::defend::Defences;

/// A model whose fastest time on a probe input is below this runs inline on the runtime's threads.
pub const INLINE_BUDGET: Duration = Duration::from_micros(100);

/// How a model's requests are executed (`execution` in a model's config).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Execution {
    /// Inline when a probe shows the model answers within [`INLINE_BUDGET`], else threads.
    #[default]
    Auto,
    /// On the runtime's threads, at most `workers` at once.
    Inline,
    /// On `workers` dedicated threads.
    Threads,
}

/// Why a job did not produce outputs.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The queue was full.
    #[error("the model's queue is full")]
    QueueFull,
    /// The deadline passed before a thread took the job, or while waiting for it.
    #[error("the request's deadline passed")]
    Deadline,
    /// The model refused or failed.
    #[error(transparent)]
    Model(#[from] InferError),
    /// The inference threads are gone (shutting down).
    #[error("the model is shutting down")]
    Closed,
}

struct Job {
    inputs: Vec<Tensor>,
    deadline: Instant,
    reply: oneshot::Sender<Result<Vec<Tensor>, JobError>>,
}

/// A model with its queue and its way of running; the version served can be swapped.
#[derive(Debug)]
pub struct ModelPool {
    current: ArcSwap<Version>,
    workers: usize,
    queue: usize,
    execution: Execution,
    max_batch: usize,
    /// Counts the model's runs (every version's), once the gateway's metrics give it a counter.
    runs: Runs,
}

/// A model's run counter, shared by its versions and their threads; unset until [`ModelPool::count_runs`].
type Runs = Arc<std::sync::OnceLock<Counter>>;

fn count(runs: &Runs) {
    if let Some(counter) = runs.get() {
        counter.inc();
    }
}

/// One version of the model, how its requests run, and its defences.
#[derive(Debug)]
struct Version {
    model: Arc<dyn Model>,
    mode: Arc<Mode>,
    runs: Runs,
    defences: Option<Arc<Defences>>,
}

/// The version served when a request arrived: its model, its defences, and its queue, for the whole request.
#[derive(Debug, Clone)]
pub struct Serving(Arc<Version>);

impl Serving {
    /// The model.
    pub fn model(&self) -> &dyn Model {
        &*self.0.model
    }

    /// The defences built for this version, if the model has any.
    pub fn defences(&self) -> Option<&Defences> {
        self.0.defences.as_deref()
    }

    /// Queues a job on this version and waits for its outputs, no later than `deadline`.
    pub async fn run(
        &self,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, JobError> {
        self.0.run(inputs, deadline).await
    }
}

#[derive(Debug)]
enum Mode {
    Threads(SyncSender<Job>),
    Inline {
        permits: Semaphore,
        waiting: AtomicUsize,
        queue: usize,
        /// Gathers concurrent requests' rows into one run (`max_batch` above one row).
        batcher: Option<Batcher>,
    },
}

/// Takes a place in the inline queue; gives it back when dropped.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ModelPool {
    /// Starts the model with `workers` at once (threads or inline permits) and a queue of `queue` places.
    pub fn start(
        model: Arc<dyn Model>,
        workers: usize,
        queue: usize,
        execution: Execution,
    ) -> std::io::Result<ModelPool> {
        ModelPool::start_batching(model, workers, queue, execution, 0)
    }

    /// [`ModelPool::start`], gathering up to `max_batch` rows of concurrent requests into one run of the model (see
    /// the module's documentation; 0 or 1 runs each request alone).
    pub fn start_batching(
        model: Arc<dyn Model>,
        workers: usize,
        queue: usize,
        execution: Execution,
        max_batch: usize,
    ) -> std::io::Result<ModelPool> {
        let runs = Runs::default();
        Ok(ModelPool {
            current: ArcSwap::from_pointee(Version::start(
                model, workers, queue, execution, max_batch, &runs,
            )?),
            workers,
            queue,
            execution,
            max_batch,
            runs,
        })
    }

    /// Serves `model` from now on, with `defences` built for it: starts it, then swaps both in at once. In-flight
    /// jobs finish on the old version, with its defences.
    pub fn swap(
        &self,
        model: Arc<dyn Model>,
        defences: Option<Arc<Defences>>,
    ) -> std::io::Result<()> {
        let mut version = Version::start(
            model,
            self.workers,
            self.queue,
            self.execution,
            self.max_batch,
            &self.runs,
        )?;
        version.defences = defences;
        self.current.store(Arc::new(version));
        Ok(())
    }

    /// Gives the version served now its defences (at start, once they are built on it).
    pub fn attach(&self, defences: Arc<Defences>) {
        let now = self.current.load_full();
        self.current.store(Arc::new(Version {
            model: Arc::clone(&now.model),
            mode: Arc::clone(&now.mode),
            runs: Arc::clone(&now.runs),
            defences: Some(defences),
        }));
    }

    /// Counts every run of the model (of this version and the next) in `counter`; the first counter given stays.
    pub fn count_runs(&self, counter: Counter) {
        let _ = self.runs.set(counter);
    }

    /// The model served now.
    pub fn model(&self) -> Arc<dyn Model> {
        Arc::clone(&self.current.load().model)
    }

    /// The defences of the version served now.
    pub fn defences(&self) -> Option<Arc<Defences>> {
        self.current.load().defences.clone()
    }

    /// The version served now, held for one request.
    pub fn serving(&self) -> Serving {
        Serving(self.current.load_full())
    }

    /// Whether the model served now runs on the runtime's threads.
    pub fn is_inline(&self) -> bool {
        matches!(*self.current.load().mode, Mode::Inline { .. })
    }

    /// Queues a job and waits for its outputs, no later than `deadline`.
    pub async fn run(
        &self,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, JobError> {
        self.serving().run(inputs, deadline).await
    }
}

impl Version {
    /// Starts the model with `workers` at once (threads or inline permits) and a queue of `queue` places.
    fn start(
        model: Arc<dyn Model>,
        workers: usize,
        queue: usize,
        execution: Execution,
        max_batch: usize,
        runs: &Runs,
    ) -> std::io::Result<Version> {
        let name = model.metadata().name.clone();
        let inline = match execution {
            Execution::Inline => true,
            Execution::Threads => false,
            Execution::Auto => match probe(&*model) {
                Some(fastest) => {
                    let inline = fastest < INLINE_BUDGET;
                    tracing::info!(
                        model = %name,
                        probe_us = fastest.as_micros() as u64,
                        execution = if inline { "inline" } else { "threads" },
                        "chose how to run the model"
                    );
                    inline
                }
                None => false,
            },
        };
        // The most rows a run takes: 1 unless batching is asked for and the model's shapes allow it.
        let max_rows = if max_batch > 1 && batchable(&*model, max_batch) {
            max_batch
        } else {
            1
        };
        if inline {
            let batcher = (max_rows > 1).then(|| Batcher::new(max_rows, queue));
            return Ok(Version {
                model,
                runs: Arc::clone(runs),
                mode: Arc::new(Mode::Inline {
                    permits: Semaphore::new(workers.max(1)),
                    waiting: AtomicUsize::new(0),
                    queue,
                    batcher,
                }),
                defences: None,
            });
        }
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let model = Arc::clone(&model);
            let runs = Arc::clone(runs);
            std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || work(&*model, &rx, &runs, max_rows))?;
        }
        Ok(Version {
            model,
            runs: Arc::clone(runs),
            mode: Arc::new(Mode::Threads(tx)),
            defences: None,
        })
    }

    async fn run(&self, inputs: Vec<Tensor>, deadline: Instant) -> Result<Vec<Tensor>, JobError> {
        let queue = match &*self.mode {
            Mode::Threads(queue) => queue,
            Mode::Inline {
                batcher: Some(batcher),
                permits,
                ..
            } if batcher.takes(&inputs) => {
                return batcher
                    .run(&*self.model, &self.runs, permits, inputs, deadline)
                    .await;
            }
            Mode::Inline {
                permits,
                waiting,
                queue,
                ..
            } => {
                // Without a free permit the request takes a place in the queue while it waits, as a job in the
                // channel would.
                let _permit = match permits.try_acquire() {
                    Ok(permit) => permit,
                    Err(tokio::sync::TryAcquireError::Closed) => return Err(JobError::Closed),
                    Err(tokio::sync::TryAcquireError::NoPermits) => {
                        if waiting.fetch_add(1, Ordering::AcqRel) >= *queue {
                            waiting.fetch_sub(1, Ordering::AcqRel);
                            return Err(JobError::QueueFull);
                        }
                        let _place = Waiting(waiting);
                        match tokio::time::timeout_at(deadline.into(), permits.acquire()).await {
                            Ok(Ok(permit)) => permit,
                            Ok(Err(_)) => return Err(JobError::Closed),
                            Err(_) => return Err(JobError::Deadline),
                        }
                    }
                };
                if Instant::now() >= deadline {
                    return Err(JobError::Deadline);
                }
                // The model was chosen to run inline for its cost on one row; a client's batch may be thousands.
                let values: usize = inputs.iter().map(|t| t.data.len()).sum();
                count(&self.runs);
                return off_runtime_if(values > HEAVY_VALUES, || {
                    guarded_infer(&*self.model, &inputs)
                });
            }
        };
        let (reply, answer) = oneshot::channel();
        match queue.try_send(Job {
            inputs,
            deadline,
            reply,
        }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(JobError::QueueFull),
            Err(TrySendError::Disconnected(_)) => return Err(JobError::Closed),
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JobError::Closed),
            Err(_) => Err(JobError::Deadline),
        }
    }
}

/// A request body past which parsing and the defences run off the runtime's thread ([`off_runtime_if`]): about a
/// hundred rows of the digits example as JSON.
pub(crate) const HEAVY_BODY_BYTES: usize = 64 << 10;
/// Input values past which an inline model runs off the runtime's thread.
const HEAVY_VALUES: usize = 16 << 10;

/// Runs `work` and, when it is `heavy`, first hands this runtime thread's other tasks (other connections) to another
/// thread (`tokio::task::block_in_place`), so that they are not held up for as long as it runs. Outside a
/// multi-threaded runtime (tests), it just runs.
pub(crate) fn off_runtime_if<R>(heavy: bool, work: impl FnOnce() -> R) -> R {
    let threaded = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if heavy && threaded {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

/// The fastest of a few runs on an all-zero input shaped as the model declares (any-size dimensions as 1), after one
/// warm-up run; `None` when the model is not in process or does not take such an input (or fails on it, a panic
/// included). The fastest, not the median: at start-up the machine may be busy (other gateways starting, a build), and
/// being preempted only adds time, so the fastest run is the model's own cost and the choice does not depend on what
/// else ran then.
fn probe(model: &dyn Model) -> Option<Duration> {
    let metadata = model.metadata();
    if metadata.platform != "onnx" {
        return None;
    }
    let mut inputs = Vec::with_capacity(metadata.inputs.len());
    for spec in &metadata.inputs {
        let shape: Vec<usize> = spec
            .shape
            .iter()
            .map(|&d| usize::try_from(d).unwrap_or(1))
            .collect();
        let count = shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
        if count > 1 << 24 {
            return None;
        }
        let data = match spec.datatype {
            rampart_infer::DataType::Bool => TensorData::Bool(vec![false; count]),
            rampart_infer::DataType::Uint8 => TensorData::Uint8(vec![0; count]),
            rampart_infer::DataType::Int32 => TensorData::Int32(vec![0; count]),
            rampart_infer::DataType::Int64 => TensorData::Int64(vec![0; count]),
            rampart_infer::DataType::Fp32 => TensorData::Fp32(vec![0.0; count]),
            rampart_infer::DataType::Fp64 => TensorData::Fp64(vec![0.0; count]),
            rampart_infer::DataType::Bytes => return None,
        };
        inputs.push(Tensor::new(spec.name.clone(), shape, data).ok()?);
    }
    guarded_infer(model, &inputs).ok()?;
    let mut fastest = Duration::MAX;
    for _ in 0..7 {
        let started = Instant::now();
        guarded_infer(model, &inputs).ok()?;
        fastest = fastest.min(started.elapsed());
    }
    Some(fastest)
}

/// An inference thread: takes the queue's jobs one by one or, with `max_rows` above one, each with the jobs queued
/// behind it that fit with it (a batch, as [`Batcher::take`] gathers them; the first that does not fit starts the
/// next one).
fn work(model: &dyn Model, rx: &Mutex<Receiver<Job>>, runs: &Runs, max_rows: usize) {
    let mut carried: Option<Job> = None;
    loop {
        let job = match carried.take() {
            Some(job) => job,
            None => {
                let Ok(rx) = rx.lock() else { return };
                match rx.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            }
        };
        let Some(job) = live(job) else { continue };
        let first = match gathered(job, max_rows) {
            Ok(first) => first,
            Err(job) => {
                count(runs);
                let result = guarded_infer(model, &job.inputs);
                let _ = job.reply.send(result);
                continue;
            }
        };
        let (mut rows, mut values) = (first.rows, first.values);
        let mut batch = vec![first];
        if let Ok(rx) = rx.lock() {
            while rows < max_rows {
                let Ok(next) = rx.try_recv() else { break };
                let Some(next) = live(next) else { continue };
                let joins = rows_of(&next.inputs).is_some_and(|r| {
                    fits(&batch, rows, values, &next.inputs, r, max_rows, usize::MAX)
                });
                if !joins {
                    carried = Some(next);
                    break;
                }
                match gathered(next, max_rows) {
                    Ok(next) => {
                        rows += next.rows;
                        values += next.values;
                        batch.push(next);
                    }
                    Err(next) => {
                        carried = Some(next);
                        break;
                    }
                }
            }
        }
        run_batch(model, runs, batch);
    }
}

/// A job still worth running: `None` when its client is gone, or when its deadline passed (it is answered so).
fn live(job: Job) -> Option<Job> {
    if job.reply.is_closed() {
        return None;
    }
    if Instant::now() >= job.deadline {
        let _ = job.reply.send(Err(JobError::Deadline));
        return None;
    }
    Some(job)
}

/// A job as a member of a batch, when it can be one (its inputs all have its rows first, fewer than `max_rows`).
fn gathered(job: Job, max_rows: usize) -> Result<Gathered, Job> {
    match rows_of(&job.inputs) {
        Some(rows) if rows < max_rows => Ok(Gathered {
            id: 0,
            rows,
            values: values_of(&job.inputs),
            inputs: job.inputs,
            reply: job.reply,
        }),
        _ => Err(job),
    }
}

/// Whether a request of inputs `next` (`next_rows` rows) may join `batch` (of `rows` rows and `values` values so
/// far): within the bounds, and inputs of the same names, types and shapes but for the rows.
fn fits(
    batch: &[Gathered],
    rows: usize,
    values: usize,
    next: &[Tensor],
    next_rows: usize,
    max_rows: usize,
    max_values: usize,
) -> bool {
    rows + next_rows <= max_rows
        && values.saturating_add(values_of(next)) <= max_values
        && batch
            .first()
            .is_some_and(|f| same_but_rows(&f.inputs, next))
}

/// Runs the model on one request's inputs. A panic in the model (a bug in its runtime on some input) fails that
/// request, as any model error does (500, audited), instead of unwinding through the gateway: on an inference
/// thread it would end the thread, and after `workers` such requests the model would have none left. The model
/// goes on serving: an in-process model drops the run state the panic interrupted rather than reusing it.
fn guarded_infer(model: &dyn Model, inputs: &[Tensor]) -> Result<Vec<Tensor>, JobError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| model.infer(inputs))) {
        Ok(result) => result.map_err(JobError::from),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(model = %model.metadata().name, panic = %message, "the model panicked");
            Err(JobError::Model(rampart_infer::InferError::Runtime(
                "the model panicked".into(),
            )))
        }
    }
}

/// Whether a model's declared inputs and outputs all have a first dimension of any size (the batch); a model that
/// does not is served a request at a time, with a warning.
fn batchable(model: &dyn Model, max_batch: usize) -> bool {
    let metadata = model.metadata();
    let batched = !metadata.inputs.is_empty()
        && metadata
            .inputs
            .iter()
            .chain(&metadata.outputs)
            .all(|spec| spec.shape.first().is_some_and(|&d| d < 0));
    if batched {
        tracing::info!(model = %metadata.name, max_batch, "one run answers the requests that arrive together");
    } else {
        tracing::warn!(
            model = %metadata.name,
            "max_batch needs a first dimension of any size on every input and output: the model runs a request at a time"
        );
    }
    batched
}

/// Concurrent inline requests' rows gathered into one run of the model (see the module's documentation).
#[derive(Debug)]
struct Batcher {
    /// The most rows one run takes.
    max_rows: usize,
    /// The most requests waiting to be gathered; more are shed (503), as with a full queue.
    queue: usize,
    /// The requests waiting, in arrival order.
    waiting: Mutex<Vec<Gathered>>,
    next: AtomicU64,
    /// Runs in a row that answered a single request ([`LONELY`]).
    lonely: AtomicUsize,
}

/// After this many runs in a row that answered a single request (requests come one at a time), a request no longer
/// waits for company before it runs: waiting costs a pass of the runtime thread's I/O for nothing. One request in
/// [`PROBE`] still waits, and a run that gathers two or more requests brings the waiting back for all.
const LONELY: usize = 8;
const PROBE: u64 = 16;

/// A request waiting in a [`Batcher`], and where its outputs go.
struct Gathered {
    id: u64,
    inputs: Vec<Tensor>,
    rows: usize,
    values: usize,
    reply: oneshot::Sender<Result<Vec<Tensor>, JobError>>,
}

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gathered")
            .field("id", &self.id)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

/// A request's place in a [`Batcher`]: a request dropped while it waits (its client went away) leaves it.
struct Place<'a> {
    batcher: &'a Batcher,
    id: u64,
}

impl Drop for Place<'_> {
    fn drop(&mut self) {
        self.batcher.withdraw(self.id);
    }
}

impl Batcher {
    fn new(max_rows: usize, queue: usize) -> Batcher {
        Batcher {
            max_rows,
            queue,
            waiting: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
            lonely: AtomicUsize::new(0),
        }
    }

    /// Whether a request may join others: its inputs all have its rows as their first dimension, and it is not
    /// already as large as a batch.
    fn takes(&self, inputs: &[Tensor]) -> bool {
        rows_of(inputs).is_some_and(|rows| rows < self.max_rows)
            && values_of(inputs) <= HEAVY_VALUES
    }

    /// Runs a request's inputs, gathered with those of the requests that arrive with it.
    async fn run(
        &self,
        model: &dyn Model,
        runs: &Runs,
        permits: &Semaphore,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, JobError> {
        let (reply, mut answer) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = lock(&self.waiting);
            if waiting.len() >= self.queue {
                return Err(JobError::QueueFull);
            }
            waiting.push(Gathered {
                id,
                rows: rows_of(&inputs).unwrap_or(1),
                values: values_of(&inputs),
                inputs,
                reply,
            });
        }
        let _place = Place { batcher: self, id };
        // The runtime thread first reads the other requests already in: the first resumed runs them all. Requests
        // that have been coming one at a time do not wait, but for a probe now and then.
        if self.lonely.load(Ordering::Relaxed) < LONELY || id.is_multiple_of(PROBE) {
            tokio::task::yield_now().await;
        }
        loop {
            match answer.try_recv() {
                Ok(result) => return result,
                Err(oneshot::error::TryRecvError::Closed) => return Err(JobError::Closed),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            if !self.is_waiting(id) {
                // Another request's run took this one; its outputs come when that run ends.
                return answer.await.unwrap_or(Err(JobError::Closed));
            }
            let permit = match permits.try_acquire() {
                Ok(permit) => permit,
                Err(tokio::sync::TryAcquireError::Closed) => return Err(JobError::Closed),
                Err(tokio::sync::TryAcquireError::NoPermits) => {
                    tokio::select! {
                        biased;
                        result = &mut answer => return result.unwrap_or(Err(JobError::Closed)),
                        permit = permits.acquire() => match permit {
                            Ok(permit) => permit,
                            Err(_) => return Err(JobError::Closed),
                        },
                        () = tokio::time::sleep_until(deadline.into()) => {
                            if self.withdraw(id) {
                                return Err(JobError::Deadline);
                            }
                            continue;
                        }
                    }
                }
            };
            if Instant::now() >= deadline && self.withdraw(id) {
                return Err(JobError::Deadline);
            }
            if let Some(batch) = self.take(id) {
                if batch.len() > 1 {
                    self.lonely.store(0, Ordering::Relaxed);
                } else if self.lonely.load(Ordering::Relaxed) < LONELY {
                    self.lonely.fetch_add(1, Ordering::Relaxed);
                }
                run_batch(model, runs, batch);
            }
            drop(permit);
        }
    }

    fn is_waiting(&self, id: u64) -> bool {
        lock(&self.waiting).iter().any(|g| g.id == id)
    }

    /// Takes request `id` out of the queue; whether it was still there.
    fn withdraw(&self, id: u64) -> bool {
        let mut waiting = lock(&self.waiting);
        match waiting.iter().position(|g| g.id == id) {
            Some(at) => {
                waiting.remove(at);
                true
            }
            None => false,
        }
    }

    /// Request `id` and the waiting requests that fit with it (in arrival order, up to `max_rows` rows and
    /// [`HEAVY_VALUES`] values, inputs of the same names, types and shapes but for the rows); `None` when another
    /// run took it.
    fn take(&self, id: u64) -> Option<Vec<Gathered>> {
        let mut waiting = lock(&self.waiting);
        let at = waiting.iter().position(|g| g.id == id)?;
        let first = waiting.remove(at);
        let (mut rows, mut values) = (first.rows, first.values);
        let mut batch = vec![first];
        let mut i = 0;
        while i < waiting.len() && rows < self.max_rows {
            let joins = waiting.get(i).is_some_and(|g| {
                fits(
                    &batch,
                    rows,
                    values,
                    &g.inputs,
                    g.rows,
                    self.max_rows,
                    HEAVY_VALUES,
                )
            });
            if joins {
                let g = waiting.remove(i);
                rows += g.rows;
                values += g.values;
                batch.push(g);
            } else {
                i += 1;
            }
        }
        Some(batch)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs a batch once and hands each request its rows of the outputs. A request alone, a run that fails and
/// outputs that do not split by rows make each request run alone: one client's input that breaks the model fails
/// that client's request only.
fn run_batch(model: &dyn Model, runs: &Runs, batch: Vec<Gathered>) {
    if batch.len() > 1 {
        let rows: Vec<usize> = batch.iter().map(|g| g.rows).collect();
        let split = merge(&batch)
            .and_then(|merged| {
                count(runs);
                guarded_infer(model, &merged).ok()
            })
            .and_then(|outputs| split(&outputs, &rows));
        match split {
            Some(parts) => {
                for (g, part) in batch.into_iter().zip(parts) {
                    let _ = g.reply.send(Ok(part));
                }
                return;
            }
            None => tracing::debug!(
                model = %model.metadata().name,
                requests = rows.len(),
                "a batched run failed or its outputs do not split by rows: running its requests one by one"
            ),
        }
    }
    for g in batch {
        count(runs);
        let result = guarded_infer(model, &g.inputs);
        let _ = g.reply.send(result);
    }
}

/// The rows of a request: the first dimension of its inputs, when they all have the same (and at least one).
fn rows_of(inputs: &[Tensor]) -> Option<usize> {
    let rows = *inputs.first()?.shape.first()?;
    (rows > 0 && inputs.iter().all(|t| t.shape.first() == Some(&rows))).then_some(rows)
}

fn values_of(inputs: &[Tensor]) -> usize {
    inputs.iter().map(|t| t.data.len()).sum()
}

/// Whether two requests' inputs can be stacked: the same names, types and dimensions but the first.
fn same_but_rows(a: &[Tensor], b: &[Tensor]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && x.datatype() == y.datatype()
                && x.shape.get(1..).is_some()
                && x.shape.get(1..) == y.shape.get(1..)
        })
}

/// The batch's inputs stacked along the first dimension.
fn merge(batch: &[Gathered]) -> Option<Vec<Tensor>> {
    let first = &batch.first()?.inputs;
    (0..first.len())
        .map(|i| {
            let parts: Vec<&Tensor> = batch
                .iter()
                .map(|g| g.inputs.get(i))
                .collect::<Option<_>>()?;
            let head = parts.first()?;
            let mut shape = head.shape.clone();
            *shape.first_mut()? = parts
                .iter()
                .map(|t| t.shape.first().copied())
                .sum::<Option<usize>>()?;
            let data = concat(parts.iter().map(|t| &t.data))?;
            Tensor::new(head.name.clone(), shape, data).ok()
        })
        .collect()
}

/// The elements of tensors of one type, one after the other; `None` for mixed types.
fn concat<'a>(mut parts: impl Iterator<Item = &'a TensorData>) -> Option<TensorData> {
    macro_rules! stack {
        ($($variant:ident),*) => {
            match parts.next()? {
                $(TensorData::$variant(first) => {
                    let mut out = first.clone();
                    for part in parts {
                        let TensorData::$variant(more) = part else { return None };
                        out.extend_from_slice(more);
                    }
                    Some(TensorData::$variant(out))
                })*
            }
        };
    }
    stack!(Bool, Uint8, Int32, Int64, Fp32, Fp64, Bytes)
}

/// Each request's rows of the outputs (`rows` per request, in order), when every output has the batch's rows as
/// its first dimension.
fn split(outputs: &[Tensor], rows: &[usize]) -> Option<Vec<Vec<Tensor>>> {
    let total: usize = rows.iter().sum();
    let mut parts: Vec<Vec<Tensor>> = rows
        .iter()
        .map(|_| Vec::with_capacity(outputs.len()))
        .collect();
    for output in outputs {
        if output.shape.first() != Some(&total) || total == 0 || output.data.len() % total != 0 {
            return None;
        }
        let per_row = output.data.len() / total;
        let mut start = 0;
        for (part, &n) in parts.iter_mut().zip(rows) {
            let mut shape = output.shape.clone();
            *shape.first_mut()? = n;
            let range = start * per_row..(start + n) * per_row;
            part.push(Tensor::new(output.name.clone(), shape, slice(&output.data, range)?).ok()?);
            start += n;
        }
    }
    Some(parts)
}

fn slice(data: &TensorData, range: std::ops::Range<usize>) -> Option<TensorData> {
    macro_rules! cut {
        ($($variant:ident),*) => {
            match data {
                $(TensorData::$variant(v) => Some(TensorData::$variant(v.get(range)?.to_vec())),)*
            }
        };
    }
    cut!(Bool, Uint8, Int32, Int64, Fp32, Fp64, Bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_infer::{DataType, ModelMetadata, TensorSpec};

    #[test]
    fn heavy_work_leaves_the_runtime_thread_to_others() {
        // One runtime thread: while heavy work runs, another task must still get to run (it would wait for the
        // work to end if the work held the thread), and light work runs in place.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            for heavy in [true, false] {
                let flag = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let work = {
                    let (flag, started) = (Arc::clone(&flag), Arc::clone(&started));
                    tokio::spawn(async move {
                        off_runtime_if(heavy, || {
                            started.store(true, Ordering::Release);
                            let until =
                                Instant::now() + Duration::from_secs(if heavy { 20 } else { 1 });
                            while !flag.load(Ordering::Acquire) && Instant::now() < until {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            flag.load(Ordering::Acquire)
                        })
                    })
                };
                while !started.load(Ordering::Acquire) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let other = {
                    let flag = Arc::clone(&flag);
                    tokio::spawn(async move { flag.store(true, Ordering::Release) })
                };
                assert_eq!(work.await.unwrap(), heavy, "heavy {heavy}");
                other.await.unwrap();
            }
        });
    }

    /// A model that takes `delay` per call and echoes its input.
    #[derive(Debug)]
    struct Slow {
        metadata: ModelMetadata,
        delay: Duration,
    }

    fn slow(delay: Duration) -> Arc<dyn Model> {
        let spec = TensorSpec {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![-1, 2],
        };
        Arc::new(Slow {
            metadata: ModelMetadata {
                name: "slow".into(),
                versions: Vec::new(),
                platform: "onnx".into(),
                inputs: vec![spec.clone()],
                outputs: vec![spec],
            },
            delay,
        })
    }

    impl Model for Slow {
        fn metadata(&self) -> &ModelMetadata {
            &self.metadata
        }
        fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
            std::thread::sleep(self.delay);
            Ok(inputs.to_vec())
        }
    }

    /// Echoes its input, but panics on an input whose first value is negative (a runtime's bug on some input).
    #[derive(Debug)]
    struct Fragile(ModelMetadata);

    impl Model for Fragile {
        fn metadata(&self) -> &ModelMetadata {
            &self.0
        }
        fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
            if let Some(TensorData::Fp32(values)) = inputs.first().map(|t| &t.data) {
                assert!(
                    values.first().is_none_or(|&v| v >= 0.0),
                    "a bug on this input"
                );
            }
            Ok(inputs.to_vec())
        }
    }

    /// A panic fails its request alone: more of them than there are workers leave the model serving, in both modes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_model_that_panics_fails_that_request_and_goes_on_serving() {
        let metadata = slow(Duration::ZERO).metadata().clone();
        for execution in [Execution::Inline, Execution::Threads] {
            let pool =
                ModelPool::start(Arc::new(Fragile(metadata.clone())), 2, 4, execution).unwrap();
            let deadline = Instant::now() + Duration::from_secs(10);
            let poison =
                vec![Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![-1.0, 2.0])).unwrap()];
            for _ in 0..5 {
                match pool.run(poison.clone(), deadline).await {
                    Err(JobError::Model(InferError::Runtime(message))) => {
                        assert_eq!(message, "the model panicked");
                    }
                    other => panic!("{execution:?}: a panic answered {other:?}"),
                }
                assert_eq!(
                    pool.run(input(), deadline).await.unwrap(),
                    input(),
                    "{execution:?}"
                );
            }
        }
    }

    fn input() -> Vec<Tensor> {
        vec![Tensor::new("x", vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).unwrap()]
    }

    #[test]
    fn auto_runs_fast_models_inline_and_slow_ones_on_threads() {
        let fast = ModelPool::start(slow(Duration::ZERO), 1, 4, Execution::Auto).unwrap();
        assert!(fast.is_inline());
        let slow = ModelPool::start(slow(Duration::from_millis(2)), 1, 4, Execution::Auto).unwrap();
        assert!(!slow.is_inline());
        let forced = ModelPool::start(slow_model(), 1, 4, Execution::Threads).unwrap();
        assert!(!forced.is_inline());
    }

    fn slow_model() -> Arc<dyn Model> {
        slow(Duration::ZERO)
    }

    /// One request runs, `queue` wait, the rest are shed at once; every mode behaves alike.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_full_queue_sheds_load_in_both_modes() {
        for execution in [Execution::Inline, Execution::Threads] {
            let pool = Arc::new(
                ModelPool::start(slow(Duration::from_millis(300)), 1, 1, execution).unwrap(),
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut tasks = Vec::new();
            for _ in 0..4 {
                let pool = Arc::clone(&pool);
                tasks.push(tokio::spawn(
                    async move { pool.run(input(), deadline).await },
                ));
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            let mut ok = 0;
            let mut full = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(outputs) => {
                        assert_eq!(outputs, input());
                        ok += 1;
                    }
                    Err(JobError::QueueFull) => full += 1,
                    Err(other) => panic!("{execution:?}: unexpected {other}"),
                }
            }
            assert_eq!((ok, full), (2, 2), "{execution:?}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_request_whose_deadline_passes_while_waiting_is_not_run() {
        for execution in [Execution::Inline, Execution::Threads] {
            let pool = Arc::new(
                ModelPool::start(slow(Duration::from_millis(300)), 1, 4, execution).unwrap(),
            );
            let long = Instant::now() + Duration::from_secs(10);
            let first = {
                let pool = Arc::clone(&pool);
                tokio::spawn(async move { pool.run(input(), long).await })
            };
            tokio::time::sleep(Duration::from_millis(30)).await;
            let short = Instant::now() + Duration::from_millis(50);
            let err = pool.run(input(), short).await.unwrap_err();
            assert!(matches!(err, JobError::Deadline), "{execution:?}: {err}");
            assert!(first.await.unwrap().is_ok());
        }
    }

    /// A model of independent rows: `y` is each row doubled and `s` each row's sum. It records the rows and width of
    /// each call, and fails a call holding a row whose first value is negative (a client's input that breaks the
    /// model). With `whole`, it also answers `n`, the call's row count, as one value (declared batch first): outputs
    /// that do not split by rows.
    #[derive(Debug)]
    struct Doubler {
        metadata: ModelMetadata,
        calls: Mutex<Vec<(usize, usize)>>,
        whole: bool,
        /// How long the first call takes (so that requests queue behind it).
        first_call: Duration,
    }

    fn doubler(first: i64, whole: bool) -> Arc<Doubler> {
        let spec = |name: &str, shape: Vec<i64>| TensorSpec {
            name: name.into(),
            datatype: DataType::Fp32,
            shape,
        };
        let mut outputs = vec![spec("y", vec![first, -1]), spec("s", vec![first])];
        if whole {
            outputs.push(spec("n", vec![-1]));
        }
        Arc::new(Doubler {
            metadata: ModelMetadata {
                name: "doubler".into(),
                versions: Vec::new(),
                platform: "onnx".into(),
                inputs: vec![spec("x", vec![first, -1])],
                outputs,
            },
            calls: Mutex::new(Vec::new()),
            whole,
            first_call: Duration::ZERO,
        })
    }

    impl Model for Doubler {
        fn metadata(&self) -> &ModelMetadata {
            &self.metadata
        }
        fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
            let x = &inputs[0];
            let TensorData::Fp32(values) = &x.data else {
                return Err(InferError::InvalidInput("not FP32".into()));
            };
            let (rows, width) = (x.shape[0], x.shape[1]);
            let first = {
                let mut calls = self.calls.lock().unwrap();
                calls.push((rows, width));
                calls.len() == 1
            };
            if first {
                std::thread::sleep(self.first_call);
            }
            if values.chunks(width).any(|row| row[0] < 0.0) {
                return Err(InferError::Runtime("a negative row".into()));
            }
            let doubled = values.iter().map(|v| v * 2.0).collect();
            let sums = values.chunks(width).map(|row| row.iter().sum()).collect();
            let mut out = vec![
                Tensor::new("y", vec![rows, width], TensorData::Fp32(doubled))?,
                Tensor::new("s", vec![rows], TensorData::Fp32(sums))?,
            ];
            if self.whole {
                out.push(Tensor::new(
                    "n",
                    vec![1],
                    TensorData::Fp32(vec![rows as f32]),
                )?);
            }
            Ok(out)
        }
    }

    /// A request of `rows` rows of `width` values starting at `start`.
    fn rows(start: f32, rows: usize, width: usize) -> Vec<Tensor> {
        let values = (0..rows * width).map(|i| start + i as f32).collect();
        vec![Tensor::new("x", vec![rows, width], TensorData::Fp32(values)).unwrap()]
    }

    /// What the doubler answers a request alone.
    fn alone(request: &[Tensor]) -> Vec<Tensor> {
        doubler(-1, false).infer(request).unwrap()
    }

    /// Sends every request at once from one task (every request is in before the first is resumed) and collects
    /// the answers, in order.
    async fn all_at_once(
        pool: &ModelPool,
        requests: &[Vec<Tensor>],
    ) -> Vec<Result<Vec<Tensor>, JobError>> {
        let deadline = Instant::now() + Duration::from_secs(10);
        futures_util::future::join_all(requests.iter().map(|r| pool.run(r.clone(), deadline))).await
    }

    fn batched(model: Arc<Doubler>, max_batch: usize, queue: usize) -> ModelPool {
        ModelPool::start_batching(model, 2, queue, Execution::Inline, max_batch).unwrap()
    }

    fn waiting(pool: &ModelPool) -> usize {
        match &*pool.current.load().mode {
            Mode::Inline {
                batcher: Some(batcher),
                ..
            } => lock(&batcher.waiting).len(),
            _ => panic!("the pool does not batch"),
        }
    }

    #[tokio::test]
    async fn concurrent_requests_share_a_run_and_each_gets_its_own_rows() {
        let model = doubler(-1, false);
        let pool = batched(Arc::clone(&model), 32, 64);
        let requests: Vec<Vec<Tensor>> = (0..10)
            .map(|i| rows(100.0 * i as f32, 1 + i % 3, 2))
            .collect();
        let answers = all_at_once(&pool, &requests).await;
        for (request, answer) in requests.iter().zip(answers) {
            assert_eq!(answer.unwrap(), alone(request));
        }
        // All ten were in before the first was resumed: one run took their 19 rows.
        assert_eq!(*model.calls.lock().unwrap(), vec![(19, 2)]);
        assert_eq!(waiting(&pool), 0);
    }

    #[tokio::test]
    async fn a_run_takes_at_most_max_batch_rows_and_only_inputs_of_one_shape() {
        let model = doubler(-1, false);
        let pool = batched(Arc::clone(&model), 4, 64);
        // Widths 2 and 3 alternate; 3-row requests of width 2 fill a run of 4 rows with one of 1 row at most.
        let requests: Vec<Vec<Tensor>> = (0..12)
            .map(|i| rows(10.0 * i as f32, if i % 4 == 0 { 3 } else { 1 }, 2 + i % 2))
            .collect();
        let answers = all_at_once(&pool, &requests).await;
        for (request, answer) in requests.iter().zip(answers) {
            assert_eq!(answer.unwrap(), alone(request));
        }
        let calls = model.calls.lock().unwrap().clone();
        assert!(calls.iter().all(|&(rows, _)| rows <= 4), "{calls:?}");
        let total = |width| -> usize { calls.iter().filter(|c| c.1 == width).map(|c| c.0).sum() };
        assert_eq!((total(2), total(3)), (12, 6), "{calls:?}");
        assert!(calls.len() < 12, "no run was shared: {calls:?}");
    }

    #[tokio::test]
    async fn a_request_that_breaks_a_shared_run_fails_alone() {
        let model = doubler(-1, false);
        let pool = batched(Arc::clone(&model), 32, 64);
        let requests: Vec<Vec<Tensor>> = (0..5)
            .map(|i| rows(if i == 2 { -5.0 } else { 10.0 * i as f32 }, 1, 2))
            .collect();
        let answers = all_at_once(&pool, &requests).await;
        for (i, (request, answer)) in requests.iter().zip(answers).enumerate() {
            match answer {
                Ok(outputs) => assert_eq!(outputs, alone(request), "request {i}"),
                Err(JobError::Model(InferError::Runtime(message))) => {
                    assert_eq!((i, message.as_str()), (2, "a negative row"));
                }
                Err(other) => panic!("request {i}: {other}"),
            }
        }
        // The shared run, then each request alone.
        assert_eq!(
            *model.calls.lock().unwrap(),
            [vec![(5, 2)], vec![(1, 2); 5]].concat()
        );
    }

    #[tokio::test]
    async fn outputs_that_do_not_split_by_rows_are_made_again_request_by_request() {
        let model = doubler(-1, true);
        let pool = batched(Arc::clone(&model), 32, 64);
        let requests: Vec<Vec<Tensor>> = (0..3).map(|i| rows(i as f32, 2, 2)).collect();
        let answers = all_at_once(&pool, &requests).await;
        for (request, answer) in requests.iter().zip(answers) {
            assert_eq!(answer.unwrap(), doubler(-1, true).infer(request).unwrap());
        }
        assert_eq!(
            *model.calls.lock().unwrap(),
            [vec![(6, 2)], vec![(2, 2); 3]].concat()
        );
    }

    #[tokio::test]
    async fn batching_sheds_load_withdraws_dropped_requests_and_keeps_deadlines() {
        let model = doubler(-1, false);
        let pool = batched(Arc::clone(&model), 32, 2);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Two places: the third request at once is shed.
        let requests: Vec<Vec<Tensor>> = (0..3).map(|i| rows(i as f32, 1, 2)).collect();
        let answers = all_at_once(&pool, &requests).await;
        assert!(answers[0].is_ok() && answers[1].is_ok());
        assert!(
            matches!(answers[2], Err(JobError::QueueFull)),
            "{:?}",
            answers[2]
        );
        // A request dropped while it waits (its client went away) leaves its place.
        let mut dropped = Box::pin(pool.run(rows(0.0, 1, 2), deadline));
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(std::future::Future::poll(dropped.as_mut(), &mut context).is_pending());
        assert_eq!(waiting(&pool), 1);
        drop(dropped);
        assert_eq!(waiting(&pool), 0);
        // A request whose deadline passed while it waited is not run.
        let calls = model.calls.lock().unwrap().len();
        let err = pool.run(rows(0.0, 1, 2), Instant::now()).await.unwrap_err();
        assert!(matches!(err, JobError::Deadline), "{err}");
        assert_eq!(model.calls.lock().unwrap().len(), calls);
    }

    #[tokio::test]
    async fn requests_that_come_one_at_a_time_stop_waiting_for_company_until_some_comes() {
        let model = doubler(-1, false);
        let pool = batched(Arc::clone(&model), 32, 64);
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        // Whether a request, polled once, is answered at once (it did not wait for company).
        let mut at_once = |i: usize| {
            let mut request = Box::pin(pool.run(rows(i as f32, 1, 2), deadline));
            std::future::Future::poll(request.as_mut(), &mut context).is_ready()
        };
        // The first requests wait (and, alone, run alone), until LONELY of them have.
        let waited = (0..LONELY).filter(|&i| !at_once(i)).count();
        assert_eq!(waited, LONELY);
        for i in 0..LONELY {
            assert_eq!(
                pool.run(rows(i as f32, 1, 2), deadline).await.unwrap(),
                alone(&rows(i as f32, 1, 2))
            );
        }
        // Then all but the probes run at once.
        let waiting: Vec<usize> = (0..2 * PROBE as usize).filter(|&i| !at_once(i)).collect();
        assert_eq!(waiting.len(), 2, "{waiting:?}");
        // A run that gathers company brings the waiting back.
        let requests: Vec<Vec<Tensor>> = (0..PROBE).map(|i| rows(i as f32, 1, 2)).collect();
        let answers = all_at_once(&pool, &requests).await;
        assert!(answers.iter().all(Result::is_ok));
        let calls = model.calls.lock().unwrap().clone();
        assert!(calls.iter().any(|&(rows, _)| rows > 1), "{calls:?}");
        assert!(!at_once(0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_inference_thread_takes_the_requests_queued_behind_the_one_it_takes() {
        let mut model = doubler(-1, false);
        Arc::get_mut(&mut model).unwrap().first_call = Duration::from_millis(300);
        let pool = Arc::new(
            ModelPool::start_batching(
                Arc::clone(&model) as Arc<dyn Model>,
                1,
                64,
                Execution::Threads,
                8,
            )
            .unwrap(),
        );
        assert!(!pool.is_inline());
        // The thread takes the first request and is busy with it while the others queue.
        let first = {
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                pool.run(rows(0.0, 1, 2), Instant::now() + Duration::from_secs(10))
                    .await
            })
        };
        while model.calls.lock().unwrap().is_empty() {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // Behind it: three of width 2, one of width 3, two of width 2.
        let requests: Vec<Vec<Tensor>> = [2, 2, 2, 3, 2, 2]
            .iter()
            .enumerate()
            .map(|(i, &width)| rows(10.0 * i as f32, 1, width))
            .collect();
        let answers = all_at_once(&pool, &requests).await;
        for (request, answer) in requests.iter().zip(answers) {
            assert_eq!(answer.unwrap(), alone(request));
        }
        assert_eq!(first.await.unwrap().unwrap(), alone(&rows(0.0, 1, 2)));
        // The width-3 request ends the first batch and runs alone; the two behind it make the next.
        assert_eq!(
            *model.calls.lock().unwrap(),
            vec![(1, 2), (3, 2), (1, 3), (2, 2)]
        );
    }

    #[test]
    fn only_models_batch_first_everywhere_are_batched() {
        let fixed = batched(doubler(1, false), 32, 64);
        assert!(matches!(
            &*fixed.current.load().mode,
            Mode::Inline { batcher: None, .. }
        ));
        let off = batched(doubler(-1, false), 1, 64);
        assert!(matches!(
            &*off.current.load().mode,
            Mode::Inline { batcher: None, .. }
        ));
        let on = batched(doubler(-1, false), 2, 64);
        assert!(matches!(
            &*on.current.load().mode,
            Mode::Inline {
                batcher: Some(_),
                ..
            }
        ));
        // Requests of no rows, of inputs that disagree on their rows, or as large as a batch run alone.
        let Mode::Inline {
            batcher: Some(batcher),
            ..
        } = &*on.current.load().mode
        else {
            unreachable!()
        };
        assert!(batcher.takes(&rows(0.0, 1, 2)));
        assert!(!batcher.takes(&rows(0.0, 2, 2)));
        assert!(!batcher.takes(&rows(0.0, 0, 2)));
        let mut two = rows(0.0, 1, 2);
        two.extend(rows(0.0, 1, 2).into_iter().map(|mut t| {
            t.shape = vec![2, 1];
            t
        }));
        assert!(!batcher.takes(&two));
    }
}
