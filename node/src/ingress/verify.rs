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

/// What happens to each result; `None` for an item skipped because it was already known.
pub type Sink<T, M> = Arc<dyn Fn(M, Option<Result<Verified<T>, CryptoError>>) + Send + Sync>;

/// Which items of a batch are already known (one call per batch, just before checking it):
/// those are not checked again. Under load a transaction's gossiped copy can wait in the
/// queue while the same body, fetched for a proposal, is checked and committed; without this
/// each such body's signature was checked twice (≈ 20% of a backup's checks at saturation).
pub type Known<T> = Arc<dyn Fn(&[T]) -> Vec<bool> + Send + Sync>;

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
    /// A pool batching up to `max_batch` items; `capacity` bounds the queue; `known` (if
    /// any) filters each batch; `checked` counts the signatures it checks.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        context: Arc<T::Context>,
        chain: ChainId,
        max_batch: usize,
        capacity: usize,
        priority: Priority,
        known: Option<Known<T>>,
        checked: Arc<dyn Fn(usize) + Send + Sync>,
        sink: Sink<T, M>,
    ) -> VerifyPool<T, M> {
        let (queue, mut rx) = mpsc::channel::<(T, M)>(capacity);
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = Arc::new(Semaphore::new(cores));
        let background = (priority == Priority::Background).then(|| background_threads(cores));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // A worker first, then the batch: while every worker is busy, what arrives
                // waits in the queue and the next batch takes all of it (up to `max_batch`).
                // Taking the batch first left it at whatever had arrived by then, so under
                // load the workers checked small batches one after another, each paying
                // the equation's fixed cost, instead of a few large ones.
                let Ok(permit) = workers.clone().acquire_owned().await else {
                    break;
                };
                let mut items = vec![first];
                while items.len() < max_batch {
                    match rx.try_recv() {
                        Ok(item) => items.push(item),
                        Err(_) => break,
                    }
                }
                let (context, chain, sink) = (context.clone(), chain.clone(), sink.clone());
                let (checked, known) = (checked.clone(), known.clone());
                let job = move || {
                    let (mut things, mut metas): (Vec<T>, Vec<M>) = items.into_iter().unzip();
                    if let Some(known) = known {
                        let skip = known(&things);
                        let (mut keep_things, mut keep_metas) = (Vec::new(), Vec::new());
                        for (i, (thing, meta)) in things.into_iter().zip(metas).enumerate() {
                            if skip.get(i).copied().unwrap_or(false) {
                                sink(meta, None);
                            } else {
                                keep_things.push(thing);
                                keep_metas.push(meta);
                            }
                        }
                        (things, metas) = (keep_things, keep_metas);
                    }
                    checked(things.len());
                    let results = verify_batch(&*context, &chain, things);
                    for (meta, result) in metas.into_iter().zip(results) {
                        sink(meta, Some(result));
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tally_crypto::{KeyCache, SecretKey};
    use tally_ledger::{Action, SignedTransaction, Transaction};

    use super::*;

    fn signed(key: &SecretKey, chain: &ChainId, nonce: u64) -> SignedTransaction {
        Transaction {
            chain_id: chain.clone(),
            sender: key.public_key(),
            nonce,
            action: Action::Put {
                key: b"k".to_vec(),
                value: vec![],
            },
        }
        .sign(key)
        .unwrap()
    }

    /// Items the filter calls known get `None` and cost no check; the others are checked and
    /// counted.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn known_items_are_skipped_and_not_counted() {
        let chain = ChainId::new("v").unwrap();
        let key = SecretKey::from_seed(&[7; 32]);
        let txs: Vec<SignedTransaction> = (0..10).map(|n| signed(&key, &chain, n)).collect();
        let known_hash = txs[3].hash();
        let checked = Arc::new(AtomicUsize::new(0));
        // (nonce, None if skipped / Some(signature valid))
        type Outcomes = Arc<Mutex<Vec<(u64, Option<bool>)>>>;
        let results: Outcomes = Arc::default();
        let (c, r) = (checked.clone(), results.clone());
        let pool = VerifyPool::spawn(
            Arc::new(KeyCache::default()),
            chain.clone(),
            64,
            64,
            Priority::Normal,
            Some(Arc::new(move |items: &[SignedTransaction]| {
                items.iter().map(|t| t.hash() == known_hash).collect()
            })),
            Arc::new(move |n| {
                c.fetch_add(n, Ordering::Relaxed);
            }),
            Arc::new(move |nonce: u64, result| {
                let ok = result.map(|r: Result<Verified<SignedTransaction>, _>| r.is_ok());
                r.lock().unwrap().push((nonce, ok));
            }),
        );
        for t in txs {
            let nonce = t.tx().nonce;
            assert!(pool.submit_wait(t, nonce).await);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while results.lock().unwrap().len() < 10 {
            assert!(std::time::Instant::now() < deadline, "all ten answered");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        let mut got = results.lock().unwrap().clone();
        got.sort();
        for (nonce, ok) in got {
            let want = if nonce == 3 { None } else { Some(true) };
            assert_eq!(ok, want, "nonce {nonce}");
        }
        assert_eq!(checked.load(Ordering::Relaxed), 9);
    }

    /// While every worker is busy, what arrives waits in the queue and the next batch takes
    /// all of it: a batch is formed when a worker is free, not before.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_busy_pool_checks_what_queued_as_one_batch() {
        let chain = ChainId::new("v").unwrap();
        let key = SecretKey::from_seed(&[9; 32]);
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let later = 100;
        let mut txs: Vec<SignedTransaction> = (0..(workers + later) as u64)
            .map(|n| signed(&key, &chain, n))
            .collect();
        // Each batch's size is recorded, then its worker waits at the gate until it opens.
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let sizes: Arc<Mutex<Vec<usize>>> = Arc::default();
        let answered = Arc::new(AtomicUsize::new(0));
        let (g, z, a) = (gate.clone(), sizes.clone(), answered.clone());
        let pool = VerifyPool::spawn(
            Arc::new(KeyCache::default()),
            chain.clone(),
            512,
            1024,
            Priority::Normal,
            Some(Arc::new(move |items: &[SignedTransaction]| {
                z.lock().unwrap().push(items.len());
                let (open, wake) = &*g;
                let mut open = open.lock().unwrap();
                while !*open {
                    open = wake.wait(open).unwrap();
                }
                vec![false; items.len()]
            })),
            Arc::new(|_| {}),
            Arc::new(move |_: u64, _| {
                a.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let wait_for = |n: usize| {
            let sizes = sizes.clone();
            async move {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while sizes.lock().unwrap().len() < n {
                    assert!(std::time::Instant::now() < deadline, "{n} batches formed");
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        };
        // One single-item batch per worker: every worker now waits at the gate.
        for n in 0..workers {
            let t = txs.remove(0);
            assert!(pool.submit_wait(t, n as u64).await);
            wait_for(n + 1).await;
        }
        // The next item reaches the batching task alone; the rest come after it.
        assert!(pool.submit_wait(txs.remove(0), 0).await);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        for t in txs {
            assert!(pool.submit_wait(t, 0).await);
        }
        {
            let (open, wake) = &*gate;
            *open.lock().unwrap() = true;
            wake.notify_all();
        }
        wait_for(workers + 1).await;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while answered.load(Ordering::Relaxed) < workers + later {
            assert!(std::time::Instant::now() < deadline, "every item answered");
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        let sizes = sizes.lock().unwrap().clone();
        assert_eq!(sizes.len(), workers + 1, "batch sizes {sizes:?}");
        assert_eq!(sizes[workers], later, "batch sizes {sizes:?}");
    }
}
