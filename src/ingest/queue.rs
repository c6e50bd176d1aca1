//! The bounded queue between HTTP handlers and the store's single writer.
//!
//! Handlers submit a [`Job`] (the messages of one request) and wait for its outcome; the
//! writer drains many jobs into one transaction (group commit), so concurrent requests share
//! one fsync. The bound is in bytes of request bodies: when it is reached, `submit` fails at
//! once with [`SubmitError::QueueFull`] and the client gets 503 and retries later.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use super::Message;

/// One request's messages on their way to the writer.
pub struct Job {
    pub source: Arc<str>,
    pub messages: Vec<Message>,
    pub reply: oneshot::Sender<Result<JobOutcome, String>>,
    /// Held until the writer is done with the job; dropping it frees queue space.
    _slot: QueueSlot,
}

impl Job {
    /// Frees the job's queue space, then answers its request (in that order, so a client
    /// that got its answer never sees its own bytes still queued).
    pub fn answer(self, result: Result<JobOutcome, String>) {
        let Job { reply, _slot, .. } = self;
        drop(_slot);
        let _ = reply.send(result);
    }
}

struct QueueSlot {
    _permit: OwnedSemaphorePermit,
    bytes: u64,
    depth: Arc<AtomicU64>,
}

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.depth.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What the writer did with a job's messages, once durably committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct JobOutcome {
    pub stored: usize,
    pub duplicates: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("ingest queue is full")]
    QueueFull,
    #[error("store writer stopped")]
    WriterGone,
    #[error("store commit failed: {0}")]
    Commit(String),
}

/// The sending side, shared by all handlers.
#[derive(Clone)]
pub struct Ingestor {
    sender: mpsc::UnboundedSender<Job>,
    space: Arc<Semaphore>,
    depth_bytes: Arc<AtomicU64>,
    capacity_bytes: u64,
}

/// The receiving side, owned by the writer thread.
pub type JobReceiver = mpsc::UnboundedReceiver<Job>;

impl Ingestor {
    /// A queue holding at most `capacity_bytes` of request bodies. The channel itself is
    /// unbounded because the semaphore already bounds what can be in it.
    pub fn new(capacity_bytes: u64) -> (Ingestor, JobReceiver) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let permits = usize::try_from(capacity_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let ingestor = Ingestor {
            sender,
            space: Arc::new(Semaphore::new(permits)),
            depth_bytes: Arc::new(AtomicU64::new(0)),
            capacity_bytes,
        };
        (ingestor, receiver)
    }

    /// Queues the messages and waits until they are durably committed (or refused).
    /// `bytes` is the request body size that the queue bound counts.
    pub async fn submit(
        &self,
        source: Arc<str>,
        messages: Vec<Message>,
        bytes: u64,
    ) -> Result<JobOutcome, SubmitError> {
        if messages.is_empty() {
            return Ok(JobOutcome::default());
        }
        let weight = u32::try_from(bytes.max(1)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&self.space)
            .try_acquire_many_owned(weight)
            .map_err(|_| SubmitError::QueueFull)?;
        self.depth_bytes.fetch_add(bytes, Ordering::Relaxed);
        let (reply, outcome) = oneshot::channel();
        let slot = QueueSlot {
            _permit: permit,
            bytes,
            depth: Arc::clone(&self.depth_bytes),
        };
        let job = Job {
            source,
            messages,
            reply,
            _slot: slot,
        };
        self.sender.send(job).map_err(|_| SubmitError::WriterGone)?;
        match outcome.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(reason)) => Err(SubmitError::Commit(reason)),
            Err(_) => Err(SubmitError::WriterGone),
        }
    }

    /// Bytes of request bodies waiting for (or inside) the writer.
    pub fn depth_bytes(&self) -> u64 {
        self.depth_bytes.load(Ordering::Relaxed)
    }

    pub fn capacity_bytes(&self) -> u64 {
        self.capacity_bytes
    }

    /// False once the writer has stopped.
    pub fn writer_alive(&self) -> bool {
        !self.sender.is_closed()
    }
}
