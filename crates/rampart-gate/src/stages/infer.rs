//! Running the model: a bounded queue in front of dedicated inference threads per model.
//!
//! Inference is CPU-bound and synchronous, so it never runs on the async runtime's threads. A full queue is answered
//! at once with 503 (load shedding) instead of letting latency grow without bound, and a job whose deadline passed
//! while it waited is dropped without running.
//!
//! A reload ([`ModelPool::swap`]) starts the new version's threads, then swaps it in atomically: requests already
//! queued finish on the old version, whose threads end when its last job is done.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use rampart_infer::{InferError, Model, Tensor};
use tokio::sync::oneshot;

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

/// A model with its queue and threads; the version served can be swapped.
#[derive(Debug)]
pub struct ModelPool {
    current: ArcSwap<Version>,
    workers: usize,
    queue: usize,
}

/// One version of the model and the queue its threads take jobs from.
#[derive(Debug)]
struct Version {
    model: Arc<dyn Model>,
    queue: SyncSender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl ModelPool {
    /// Starts `workers` threads taking jobs from a queue of `queue` places.
    pub fn start(
        model: Arc<dyn Model>,
        workers: usize,
        queue: usize,
    ) -> std::io::Result<ModelPool> {
        Ok(ModelPool {
            current: ArcSwap::from_pointee(Version::start(model, workers, queue)?),
            workers,
            queue,
        })
    }

    /// Serves `model` from now on: starts its threads, then swaps it in. In-flight jobs finish on the old version.
    pub fn swap(&self, model: Arc<dyn Model>) -> std::io::Result<()> {
        self.current
            .store(Arc::new(Version::start(model, self.workers, self.queue)?));
        Ok(())
    }

    /// The model served now.
    pub fn model(&self) -> Arc<dyn Model> {
        Arc::clone(&self.current.load().model)
    }

    /// Queues a job and waits for its outputs, no later than `deadline`.
    pub async fn run(
        &self,
        inputs: Vec<Tensor>,
        deadline: Instant,
    ) -> Result<Vec<Tensor>, JobError> {
        let (reply, answer) = oneshot::channel();
        let queue = self.current.load().queue.clone();
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

impl Version {
    fn start(model: Arc<dyn Model>, workers: usize, queue: usize) -> std::io::Result<Version> {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = Arc::new(Mutex::new(rx));
        let name = model.metadata().name.clone();
        for i in 0..workers {
            let rx = Arc::clone(&rx);
            let model = Arc::clone(&model);
            std::thread::Builder::new()
                .name(format!("infer-{name}-{i}"))
                .spawn(move || work(&*model, &rx))?;
        }
        Ok(Version { model, queue: tx })
    }
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
        let result = model.infer(&job.inputs).map_err(JobError::from);
        let _ = job.reply.send(result);
    }
}
