//! Signature verification off the event loop: requests are collected into batches and
//! batch-verified on blocking threads, as many at once as there are cores.

use std::sync::Arc;

use tally_crypto::{ChainId, CryptoError, Verifiable, Verified, verify_batch};
use tokio::sync::{Semaphore, mpsc};

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
        sink: Sink<T, M>,
    ) -> VerifyPool<T, M> {
        let (queue, mut rx) = mpsc::channel::<(T, M)>(capacity);
        let workers = Arc::new(Semaphore::new(
            std::thread::available_parallelism().map_or(2, |n| n.get()),
        ));
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
                tokio::task::spawn_blocking(move || {
                    let (things, metas): (Vec<T>, Vec<M>) = items.into_iter().unzip();
                    let results = verify_batch(&*context, &chain, things);
                    for (meta, result) in metas.into_iter().zip(results) {
                        sink(meta, result);
                    }
                    drop(permit);
                });
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
