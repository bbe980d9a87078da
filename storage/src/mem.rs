//! The in-memory backend.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use tally_crypto::Digest;

use crate::{
    BlockCommit, Entry, META_INITIALIZED, META_LATEST_HEIGHT, StateInstall, StateSnapshot,
    StorageError, Store, Write, decode_height, in_range,
};

#[derive(Default)]
struct Inner {
    blocks: HashMap<u64, Vec<u8>>,
    tx_index: HashMap<Digest, Vec<u8>>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    consensus: BTreeMap<Vec<u8>, Vec<u8>>,
    evidence: BTreeMap<Vec<u8>, Vec<u8>>,
    batches: BTreeMap<Vec<u8>, Vec<u8>>,
    meta: HashMap<Vec<u8>, Vec<u8>>,
    bytes: u64,
}

/// A [`Store`] in memory. Every write is atomic (one lock); `sync` has no meaning.
#[derive(Default)]
pub struct MemStore {
    inner: Mutex<Inner>,
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave half a write: every write is prepared
        // before the lock is taken and applied with infallible map operations.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Store for MemStore {
    fn commit_block(&self, c: BlockCommit) -> Result<(), StorageError> {
        let mut inner = self.lock();
        let latest = match inner.meta.get(META_LATEST_HEIGHT) {
            Some(b) => decode_height(b)?,
            None => 0,
        };
        if c.height != latest + 1 {
            return Err(StorageError::OutOfOrder {
                expected: latest + 1,
                got: c.height,
            });
        }
        inner.bytes += c.block.len() as u64;
        inner.blocks.insert(c.height, c.block);
        for (h, v) in c.tx_index {
            inner.tx_index.insert(h, v);
        }
        for (k, v) in c.state {
            match v {
                Some(v) => inner.state.insert(k, v),
                None => inner.state.remove(&k),
            };
        }
        for (k, v) in c.meta {
            inner.meta.insert(k, v);
        }
        inner
            .meta
            .insert(META_LATEST_HEIGHT.to_vec(), c.height.to_le_bytes().to_vec());
        Ok(())
    }

    fn latest_height(&self) -> Result<u64, StorageError> {
        match self.lock().meta.get(META_LATEST_HEIGHT) {
            Some(b) => decode_height(b),
            None => Ok(0),
        }
    }

    fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().blocks.get(&height).cloned())
    }

    fn tx_index(&self, hash: &Digest) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().tx_index.get(hash).cloned())
    }

    fn state_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().state.get(key).cloned())
    }

    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError> {
        Ok(scan(&self.lock().state, after, limit))
    }

    fn meta_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().meta.get(key).cloned())
    }

    fn initialize(&self, state: Vec<Entry>, meta: Vec<Entry>) -> Result<(), StorageError> {
        let mut inner = self.lock();
        if inner.meta.contains_key(META_INITIALIZED) {
            return Err(StorageError::AlreadyInitialized);
        }
        inner.state.extend(state);
        inner.meta.extend(meta);
        inner.meta.insert(META_INITIALIZED.to_vec(), vec![1]);
        Ok(())
    }

    fn meta_put(&self, entries: &[Entry], _sync: bool) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for (k, v) in entries {
            inner.meta.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn write_consensus(
        &self,
        writes: &[Write],
        delete_ranges: &[(Vec<u8>, Vec<u8>)],
        _sync: bool,
    ) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for range in delete_ranges {
            inner.consensus.retain(|k, _| !in_range(k, range));
        }
        for (k, v) in writes {
            match v {
                Some(v) => inner.consensus.insert(k.clone(), v.clone()),
                None => inner.consensus.remove(k),
            };
        }
        Ok(())
    }

    fn consensus_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().consensus.get(key).cloned())
    }

    fn consensus_scan(&self, prefix: &[u8]) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .consensus
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn evidence_put(&self, key: &[u8], value: &[u8]) -> Result<(), StorageError> {
        self.lock().evidence.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn evidence_scan(&self) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .evidence
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn batches_put(&self, entries: &[Entry], _sync: bool) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for (k, v) in entries {
            inner.batches.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    fn batch_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.lock().batches.get(key).cloned())
    }

    fn sync_writes(&self) -> Result<(), StorageError> {
        Ok(())
    }

    fn batches_delete(&self, keys: &[Vec<u8>]) -> Result<(), StorageError> {
        let mut inner = self.lock();
        for k in keys {
            inner.batches.remove(k);
        }
        Ok(())
    }

    fn batches_scan(&self) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .lock()
            .batches
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn snapshot(&self) -> Box<dyn StateSnapshot + '_> {
        let inner = self.lock();
        Box::new(MemSnapshot {
            height: match inner.meta.get(META_LATEST_HEIGHT) {
                Some(b) => decode_height(b).unwrap_or(0),
                None => 0,
            },
            state: inner.state.clone(),
        })
    }

    fn install_state(&self, install: StateInstall) -> Result<(), StorageError> {
        let mut inner = self.lock();
        inner.state = install.state.into_iter().collect();
        let height = install.height;
        inner.blocks.retain(|h, _| *h <= height);
        for (h, b) in install.blocks {
            inner.blocks.insert(h, b);
        }
        for h in &install.tx_index_delete {
            inner.tx_index.remove(h);
        }
        for (h, v) in install.tx_index_put {
            inner.tx_index.insert(h, v);
        }
        for (k, v) in install.meta {
            inner.meta.insert(k, v);
        }
        inner
            .meta
            .insert(META_LATEST_HEIGHT.to_vec(), height.to_le_bytes().to_vec());
        Ok(())
    }

    fn size_bytes(&self) -> u64 {
        self.lock().bytes
    }
}

/// A copy of the state (the in-memory backend's snapshot).
struct MemSnapshot {
    height: u64,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl StateSnapshot for MemSnapshot {
    fn latest_height(&self) -> Result<u64, StorageError> {
        Ok(self.height)
    }

    fn state_scan(&self, after: Option<&[u8]>, limit: usize) -> Result<Vec<Entry>, StorageError> {
        Ok(scan(&self.state, after, limit))
    }
}

/// Up to `limit` entries of `state` with keys strictly after `after`.
fn scan(state: &BTreeMap<Vec<u8>, Vec<u8>>, after: Option<&[u8]>, limit: usize) -> Vec<Entry> {
    use std::ops::Bound;
    let lower = match after {
        Some(a) => Bound::Excluded(a.to_vec()),
        None => Bound::Unbounded,
    };
    state
        .range((lower, Bound::Unbounded))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
