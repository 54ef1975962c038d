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
//! A reload ([`ModelPool::swap`]) starts the new version, then swaps it in atomically: requests already queued or
//! running finish on the old version, whose threads end when its last job is done. A version carries the defences
//! built for it (`stages::defend`, a detector calibrated on that version's answers): a request takes both from one
//! [`Serving`] handle, so it never meets one version's model with another's defences.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
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
}

/// One version of the model, how its requests run, and its defences.
#[derive(Debug)]
struct Version {
    model: Arc<dyn Model>,
    mode: Arc<Mode>,
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
        Ok(ModelPool {
            current: ArcSwap::from_pointee(Version::start(model, workers, queue, execution)?),
            workers,
            queue,
            execution,
        })
    }

    /// Serves `model` from now on, with `defences` built for it: starts it, then swaps both in at once. In-flight
    /// jobs finish on the old version, with its defences.
    pub fn swap(
        &self,
        model: Arc<dyn Model>,
        defences: Option<Arc<Defences>>,
    ) -> std::io::Result<()> {
        let mut version = Version::start(model, self.workers, self.queue, self.execution)?;
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
            defences: Some(defences),
        }));
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
        if inline {
            return Ok(Version {
                model,
                mode: Arc::new(Mode::Inline {
                    permits: Semaphore::new(workers.max(1)),
                    waiting: AtomicUsize::new(0),
                    queue,
                }),
                defences: None,
            });
        }
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let model = Arc::clone(&model);
            std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || work(&*model, &rx))?;
        }
        Ok(Version {
            model,
            mode: Arc::new(Mode::Threads(tx)),
            defences: None,
        })
    }

    async fn run(&self, inputs: Vec<Tensor>, deadline: Instant) -> Result<Vec<Tensor>, JobError> {
        let queue = match &*self.mode {
            Mode::Threads(queue) => queue,
            Mode::Inline {
                permits,
                waiting,
                queue,
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

fn work(model: &dyn Model, rx: &Mutex<Receiver<Job>>) {
    loop {
        let job = {
            let Ok(rx) = rx.lock() else { return };
            match rx.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        if job.reply.is_closed() {
            continue;
        }
        if Instant::now() >= job.deadline {
            let _ = job.reply.send(Err(JobError::Deadline));
            continue;
        }
        let result = guarded_infer(model, &job.inputs);
        let _ = job.reply.send(result);
    }
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
}
