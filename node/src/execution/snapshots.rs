//! Snapshots of the state at the latest checkpoints, served to a peer that repairs a
//! diverged state (`repair`). The executor takes one right after it applies a block at a
//! checkpoint height and before it applies the next, so each is exactly the state that
//! block's hash commits to; the latest [`SNAPSHOTS_KEPT`] are held. A RocksDB snapshot costs
//! nothing to take; holding it keeps compaction from dropping the entries it sees, about
//! three checkpoint intervals of state churn.
//!
//! A thread owns the snapshots (they borrow the store); requests reach it on a channel.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::mpsc;

use tally_storage::{Entry, StateSnapshot, Store};

/// Checkpoint snapshots held.
pub const SNAPSHOTS_KEPT: usize = 3;
/// The most state bytes one page of a snapshot carries.
pub const PAGE_BYTES_MAX: usize = 4 * 1024 * 1024;

enum Command {
    Take {
        height: u64,
        done: mpsc::Sender<()>,
    },
    Heights {
        reply: mpsc::Sender<Vec<u64>>,
    },
    Read {
        height: u64,
        after: Option<Vec<u8>>,
        max_bytes: usize,
        reply: mpsc::Sender<Option<Page>>,
    },
    Clear {
        done: mpsc::Sender<()>,
    },
}

/// A page of a snapshot: entries in key order after the requested key, and whether it is
/// the last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub done: bool,
}

/// The handle to the snapshot thread.
#[derive(Clone)]
pub struct Snapshots {
    tx: mpsc::Sender<Command>,
}

impl Snapshots {
    pub fn spawn(store: Arc<dyn Store>) -> Snapshots {
        let (tx, rx) = mpsc::channel::<Command>();
        std::thread::Builder::new()
            .name("snapshots".into())
            .spawn(move || serve(&*store, rx))
            .expect("spawning the snapshot thread");
        Snapshots { tx }
    }

    /// Takes a snapshot of the state now, as that of `height` (returns once taken).
    pub fn take(&self, height: u64) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Command::Take { height, done }).is_ok() {
            let _ = wait.recv();
        }
    }

    /// The heights held.
    pub fn heights(&self) -> Vec<u64> {
        let (reply, wait) = mpsc::channel();
        if self.tx.send(Command::Heights { reply }).is_err() {
            return vec![];
        }
        wait.recv().unwrap_or_default()
    }

    /// Entries of the snapshot at `height` after `after`, up to `max_bytes` (at least one
    /// entry, at most [`PAGE_BYTES_MAX`]); `None` if no snapshot of that height is held.
    pub fn read(&self, height: u64, after: Option<Vec<u8>>, max_bytes: usize) -> Option<Page> {
        let (reply, wait) = mpsc::channel();
        let max_bytes = max_bytes.clamp(1, PAGE_BYTES_MAX);
        self.tx
            .send(Command::Read {
                height,
                after,
                max_bytes,
                reply,
            })
            .ok()?;
        wait.recv().ok().flatten()
    }

    /// Drops every snapshot (the state they show was replaced).
    pub fn clear(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Command::Clear { done }).is_ok() {
            let _ = wait.recv();
        }
    }
}

fn serve(store: &dyn Store, rx: mpsc::Receiver<Command>) {
    let mut held: VecDeque<(u64, Box<dyn StateSnapshot + '_>)> = VecDeque::new();
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Command::Take { height, done } => {
                let snapshot = store.snapshot();
                if snapshot.latest_height().ok() == Some(height) {
                    held.retain(|(h, _)| *h != height);
                    held.push_back((height, snapshot));
                    while held.len() > SNAPSHOTS_KEPT {
                        held.pop_front();
                    }
                }
                let _ = done.send(());
            }
            Command::Heights { reply } => {
                let _ = reply.send(held.iter().map(|(h, _)| *h).collect());
            }
            Command::Read {
                height,
                after,
                max_bytes,
                reply,
            } => {
                let page = held
                    .iter()
                    .find(|(h, _)| *h == height)
                    .and_then(|(_, s)| read_page(&**s, after, max_bytes));
                let _ = reply.send(page);
            }
            Command::Clear { done } => {
                held.clear();
                let _ = done.send(());
            }
        }
    }
}

fn read_page(s: &dyn StateSnapshot, after: Option<Vec<u8>>, max_bytes: usize) -> Option<Page> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut cursor = after;
    loop {
        let chunk = s.state_scan(cursor.as_deref(), 256).ok()?;
        let last = chunk.len() < 256;
        for e in chunk {
            if bytes > 0 && bytes + e.0.len() + e.1.len() > max_bytes {
                return Some(Page {
                    entries,
                    done: false,
                });
            }
            bytes += e.0.len() + e.1.len();
            cursor = Some(e.0.clone());
            entries.push(e);
        }
        if last {
            return Some(Page {
                entries,
                done: true,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_storage::{BlockCommit, MemStore};

    fn commit(store: &dyn Store, height: u64, state: Vec<(Vec<u8>, Option<Vec<u8>>)>) {
        store
            .commit_block(BlockCommit {
                height,
                block: vec![height as u8],
                state,
                ..Default::default()
            })
            .unwrap();
    }

    /// A snapshot taken at a height keeps serving that state, page by page, after later
    /// blocks; only the latest three are held; a clear drops them all.
    #[test]
    fn snapshots_serve_the_state_of_their_height() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let snaps = Snapshots::spawn(store.clone());
        for h in 1..=5u64 {
            let state = (0..100u8)
                .map(|i| (vec![b'k', i], Some(vec![h as u8; 100])))
                .collect();
            commit(&*store, h, state);
            snaps.take(h);
        }
        assert_eq!(snaps.heights(), vec![3, 4, 5]);
        assert!(snaps.read(2, None, 1000).is_none());
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let page = snaps.read(4, after.clone(), 1000).unwrap();
            assert!(page.entries.len() <= 10 && !page.entries.is_empty());
            after = page.entries.last().map(|e| e.0.clone());
            got.extend(page.entries);
            if page.done {
                break;
            }
        }
        assert_eq!(got.len(), 100);
        assert!(got.iter().all(|(_, v)| v == &vec![4u8; 100]));
        // A height that does not match the store's is not taken.
        snaps.take(9);
        assert_eq!(snaps.heights(), vec![3, 4, 5]);
        snaps.clear();
        assert!(snaps.heights().is_empty());
    }
}
