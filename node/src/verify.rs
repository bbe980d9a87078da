//! Signature verification off the event loop: requests are collected into batches and
//! batch-verified on blocking threads, as many at once as there are cores.
//!
//! Consensus messages are verified at normal priority. Transactions (clients', gossiped) on
//! background threads with a lower scheduling priority (nice +5): under overload, checking
//! the signatures of transactions that will wait seconds in the pool must not delay the
//! votes that commit the ones before them — when it did, backups saw no commit for the
//! view-change timeout and a loaded network fell into view changes.

use std::sync::Arc;

use tally_crypto::{ChainId, CryptoError, Verifiable, Verified, verify_batch};
use tokio::sync::{Semaphore, mpsc};

/// Scheduling class of a pool's verification threads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Tokio's blocking threads, at the process's priority.
    Normal,
    /// Dedicated threads, one per core, at nice +5.
    Background,
}

/// Nice value of background verification threads (Linux applies it to the calling thread).
const BACKGROUND_NICE: i32 = 5;

type Job = Box<dyn FnOnce() + Send>;

/// Starts `n` threads at background priority running the jobs sent on the returned channel.
fn background_threads(n: usize) -> std::sync::mpsc::Sender<Job> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    for i in 0..n {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("verify-bg-{i}"))
            .spawn(move || {
                if let Err(e) = rustix::process::nice(BACKGROUND_NICE) {
                    tracing::debug!("could not lower verification thread priority: {e}");
                }
                loop {
                    let job = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start a verification thread: {e}");
        }
    }
    tx
}

/// What happens to each result.
pub type Sink<T, M> = Arc<dyn Fn(M, Result<Verified<T>, CryptoError>) + Send + Sync>;

pub struct VerifyPool<T, M> {
    queue: mpsc::Sender<(T, M)>,
}

impl<T, M> Clone for VerifyPool<T, M> {
    fn clone(&self) -> Self {
        VerifyPool {
            queue: self.queue.clone(),
        }
    }
}

impl<T, M> VerifyPool<T, M>
where
    T: Verifiable + Send + 'static,
    T::Context: Send + Sync + 'static,
    M: Send + 'static,
{
    /// A pool batching up to `max_batch` items; `capacity` bounds the queue.
    pub fn spawn(
        context: Arc<T::Context>,
        chain: ChainId,
        max_batch: usize,
        capacity: usize,
        priority: Priority,
        sink: Sink<T, M>,
    ) -> VerifyPool<T, M> {
        let (queue, mut rx) = mpsc::channel::<(T, M)>(capacity);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = Arc::new(Semaphore::new(cores));
        let background = (priority == Priority::Background).then(|| background_threads(cores));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = vec![first];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let Ok(permit) = workers.clone().acquire_owned().await else {
                    break;
                };
                let (context, chain, sink) = (context.clone(), chain.clone(), sink.clone());
                let job = move || {
                    let (things, metas): (Vec<T>, Vec<M>) = items.into_iter().unzip();
                    let results = verify_batch(&*context, &chain, things);
                    for (meta, result) in metas.into_iter().zip(results) {
                        sink(meta, result);
                    }
                    drop(permit);
                };
                match &background {
                    Some(threads) => {
                        if threads.send(Box::new(job)).is_err() {
                            break;
                        }
                    }
                    None => {
                        tokio::task::spawn_blocking(job);
                    }
                }
            }
        });
        VerifyPool { queue }
    }

    /// Queues an item; `false` when the queue is full (the caller sheds load).
    pub fn submit(&self, item: T, meta: M) -> bool {
        self.queue.try_send((item, meta)).is_ok()
    }

    /// Queues an item, waiting for room.
    pub async fn submit_wait(&self, item: T, meta: M) -> bool {
        self.queue.send((item, meta)).await.is_ok()
    }
}
