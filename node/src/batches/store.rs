//! The batches a validator holds until they are in a block.
//!
//! Every batch a peer streams is a claim on this node's memory and disk, so each author has a
//! [`Quota`] (batches and bytes); a batch beyond it is refused, and the author (which must
//! wait for its batches to be ordered before making more) is the only one slowed. An author
//! may hold one batch per index: a second, different batch with the same `(author, index)` is
//! an equivocation and is refused (attesters sign at most one per index, so it can never get
//! a proof where the first did).
//!
//! Batches are written to the `batches` column family (synced when the caller is about to
//! attest them: "I hold it" must survive a crash) and read back at start-up, so a restarted
//! validator still serves the batches it attested. They are removed when their block is
//! written, and a batch already in an executed block is not stored again (the batch task
//! checks before inserting): nothing would order it, so it would hold its author's quota
//! for good.

use std::collections::BTreeMap;
use std::sync::Arc;

use tally_consensus::{ValidatorId, ValidatorSet};
use tally_crypto::Digest;
use tally_storage::{StorageError, Store};

use super::body::TxBatch;
use crate::FastMap;

/// What one author may have stored at a validator at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    pub batches: usize,
    pub bytes: usize,
}

impl Default for Quota {
    /// 64 MiB and 4,096 batches per author: at 5,000 transactions of 512 bytes a second per
    /// author (20,000 in a network of four) that is ≈ 25 s of batches waiting to be ordered.
    /// With n authors a validator holds at most n × 64 MiB.
    fn default() -> Quota {
        Quota {
            batches: 4096,
            bytes: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Inserted {
    New,
    /// The same batch was already held.
    Known,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("author {author} already has {batches} batches / {bytes} bytes stored (quota)")]
    OverQuota {
        author: ValidatorId,
        batches: usize,
        bytes: usize,
    },
    #[error("author {author} made two different batches with index {index}")]
    Equivocation {
        author: ValidatorId,
        index: u64,
        held: Digest,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

#[derive(Default)]
struct Author {
    by_index: BTreeMap<u64, Digest>,
    bytes: usize,
}

pub struct BatchStore {
    store: Arc<dyn Store>,
    validators: ValidatorSet,
    quota: Quota,
    batches: FastMap<Digest, Arc<TxBatch>>,
    authors: Vec<Author>,
}

impl BatchStore {
    /// Opens the store, loading every batch kept from before a restart. A stored batch that
    /// no longer decodes (it cannot: only checked batches are written) is dropped.
    pub fn open(
        store: Arc<dyn Store>,
        validators: ValidatorSet,
        quota: Quota,
    ) -> Result<BatchStore, StorageError> {
        let mut s = BatchStore {
            authors: (0..validators.len()).map(|_| Author::default()).collect(),
            store,
            validators,
            quota,
            batches: FastMap::default(),
        };
        let mut unreadable = Vec::new();
        for (key, value) in s.store.batches_scan()? {
            match TxBatch::decode(&value, &s.validators) {
                Ok(b) if b.digest().0.as_slice() == key.as_slice() => {
                    s.index(Arc::new(b));
                }
                _ => unreadable.push(key),
            }
        }
        if !unreadable.is_empty() {
            tracing::warn!(
                count = unreadable.len(),
                "dropping unreadable stored batches"
            );
            s.store.batches_delete(&unreadable)?;
        }
        Ok(s)
    }

    fn index(&mut self, b: Arc<TxBatch>) {
        let h = b.header();
        let a = &mut self.authors[h.author.0 as usize];
        a.by_index.insert(h.index, b.digest());
        a.bytes += b.bytes();
        self.batches.insert(b.digest(), b);
    }

    /// Checks a batch against its author's quota and earlier batches without storing it.
    fn admissible(&self, b: &TxBatch) -> Result<Option<Inserted>, Refused> {
        if self.batches.contains_key(&b.digest()) {
            return Ok(Some(Inserted::Known));
        }
        let h = b.header();
        let a = &self.authors[h.author.0 as usize];
        if let Some(held) = a.by_index.get(&h.index) {
            return Err(Refused::Equivocation {
                author: h.author,
                index: h.index,
                held: *held,
            });
        }
        if a.by_index.len() + 1 > self.quota.batches || a.bytes + b.bytes() > self.quota.bytes {
            return Err(Refused::OverQuota {
                author: h.author,
                batches: a.by_index.len(),
                bytes: a.bytes,
            });
        }
        Ok(None)
    }

    /// Stores `batches` (checked by [`TxBatch::decode`] or made by this node) in one write,
    /// synced when `sync`. Returns one answer per batch, in order; a refused batch changes
    /// nothing.
    pub fn insert(
        &mut self,
        batches: Vec<TxBatch>,
        sync: bool,
    ) -> Result<Vec<Result<Inserted, Refused>>, StorageError> {
        let mut answers = Vec::with_capacity(batches.len());
        let mut accepted = Vec::new();
        for b in batches {
            let answer = self.admissible(&b);
            if matches!(answer, Ok(None)) {
                // Index now, so later batches of this call see its quota and index.
                let b = Arc::new(b);
                self.index(b.clone());
                accepted.push(b);
            }
            answers.push(answer.map(|a| a.unwrap_or(Inserted::New)));
        }
        if !accepted.is_empty() {
            let entries: Vec<_> = accepted
                .iter()
                .map(|b| (b.digest().0.to_vec(), b.encode()))
                .collect();
            if let Err(e) = self.store.batches_put(&entries, sync) {
                for b in &accepted {
                    self.unindex(&b.digest());
                }
                return Err(e);
            }
        }
        Ok(answers)
    }

    fn unindex(&mut self, digest: &Digest) -> Option<Arc<TxBatch>> {
        let b = self.batches.remove(digest)?;
        let a = &mut self.authors[b.header().author.0 as usize];
        a.by_index.remove(&b.header().index);
        a.bytes -= b.bytes();
        Some(b)
    }

    /// Whether a batch of `author` numbered in `from..to` is held (not yet in a block).
    pub fn holds_between(&self, author: u16, from: u64, to: u64) -> bool {
        from < to
            && self
                .authors
                .get(author as usize)
                .is_some_and(|a| a.by_index.range(from..to).next().is_some())
    }

    pub fn get(&self, digest: &Digest) -> Option<Arc<TxBatch>> {
        self.batches.get(digest).cloned()
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.batches.contains_key(digest)
    }

    /// Forgets batches now written into blocks (or no longer orderable), freeing their
    /// authors' quota.
    pub fn remove(&mut self, digests: &[Digest]) -> Result<(), StorageError> {
        let keys: Vec<Vec<u8>> = digests
            .iter()
            .filter(|d| self.unindex(d).is_some())
            .map(|d| d.0.to_vec())
            .collect();
        if keys.is_empty() {
            return Ok(());
        }
        self.store.batches_delete(&keys)
    }

    /// The headers of `author`'s batches held, in number order.
    pub fn own_headers(&self, author: ValidatorId) -> Vec<tally_consensus::BatchHeader> {
        self.authors
            .get(author.0 as usize)
            .map(|a| {
                a.by_index
                    .values()
                    .filter_map(|d| self.batches.get(d))
                    .map(|b| *b.header())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `(batches, bytes)` held for `author`.
    pub fn usage(&self, author: ValidatorId) -> (usize, usize) {
        self.authors
            .get(author.0 as usize)
            .map_or((0, 0), |a| (a.by_index.len(), a.bytes))
    }

    /// Batches held in all.
    /// Bytes of the bodies held, every author's.
    pub fn bytes(&self) -> usize {
        self.authors.iter().map(|a| a.bytes).sum()
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tally_crypto::SecretKey;
    use tally_storage::{MemStore, RocksStore};

    fn validators() -> ValidatorSet {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        ValidatorSet::new(&keys).unwrap()
    }

    fn batch(author: u16, index: u64, fill: u8) -> TxBatch {
        TxBatch::new(
            ValidatorId(author),
            index,
            (0..4).map(|i| vec![fill.wrapping_add(i); 200]).collect(),
        )
    }

    const SMALL: Quota = Quota {
        batches: 3,
        bytes: 2000,
    };

    #[test]
    fn each_author_is_held_to_its_quota_and_others_are_not_affected() {
        let mut s = BatchStore::open(Arc::new(MemStore::new()), validators(), SMALL).unwrap();
        // 800 bytes each: two fit in 2,000 bytes, the third does not.
        let r = s
            .insert(
                vec![batch(1, 0, 0), batch(1, 1, 10), batch(1, 2, 20)],
                false,
            )
            .unwrap();
        assert_eq!(r[0], Ok(Inserted::New));
        assert_eq!(r[1], Ok(Inserted::New));
        assert!(matches!(
            r[2],
            Err(Refused::OverQuota {
                author: ValidatorId(1),
                batches: 2,
                bytes: 1600
            })
        ));
        assert_eq!(s.usage(ValidatorId(1)), (2, 1600));
        assert_eq!(
            s.insert(vec![batch(2, 0, 0)], false).unwrap(),
            vec![Ok(Inserted::New)]
        );
        // Removing one frees its quota.
        let first = batch(1, 0, 0).digest();
        s.remove(&[first]).unwrap();
        assert_eq!(s.usage(ValidatorId(1)), (1, 800));
        assert_eq!(
            s.insert(vec![batch(1, 2, 20)], false).unwrap(),
            vec![Ok(Inserted::New)]
        );
        assert!(!s.contains(&first) && s.len() == 3);
    }

    #[test]
    fn a_second_batch_with_the_same_index_is_an_equivocation() {
        let mut s =
            BatchStore::open(Arc::new(MemStore::new()), validators(), Quota::default()).unwrap();
        let first = batch(3, 7, 0);
        assert_eq!(
            s.insert(vec![first.clone()], false).unwrap(),
            vec![Ok(Inserted::New)]
        );
        assert_eq!(
            s.insert(vec![first.clone()], false).unwrap(),
            vec![Ok(Inserted::Known)]
        );
        assert_eq!(
            s.insert(vec![batch(3, 7, 99)], false).unwrap(),
            vec![Err(Refused::Equivocation {
                author: ValidatorId(3),
                index: 7,
                held: first.digest()
            })]
        );
        assert_eq!(s.usage(ValidatorId(3)), (1, 800));
    }

    #[test]
    fn batches_survive_a_restart_and_removed_ones_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (batch(0, 0, 1), batch(2, 5, 2));
        {
            let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
            let mut s = BatchStore::open(store, validators(), Quota::default()).unwrap();
            s.insert(vec![a.clone(), b.clone(), batch(2, 6, 3)], true)
                .unwrap();
            s.remove(&[batch(2, 6, 3).digest()]).unwrap();
        }
        let store: Arc<dyn Store> = Arc::new(RocksStore::open(dir.path()).unwrap());
        let s = BatchStore::open(store, validators(), Quota::default()).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(*s.get(&a.digest()).unwrap(), a);
        assert_eq!(*s.get(&b.digest()).unwrap(), b);
        assert_eq!(s.usage(ValidatorId(2)), (1, 800));
    }

    #[test]
    fn a_stored_value_that_does_not_match_its_key_is_dropped_at_open() {
        let store: Arc<dyn Store> = Arc::new(MemStore::new());
        let good = batch(1, 0, 0);
        store
            .batches_put(
                &[
                    (good.digest().0.to_vec(), good.encode()),
                    (vec![7; 32], good.encode()),
                    (vec![8; 32], vec![1, 2, 3]),
                ],
                false,
            )
            .unwrap();
        let s = BatchStore::open(store.clone(), validators(), Quota::default()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(store.batches_scan().unwrap().len(), 1);
    }
}
