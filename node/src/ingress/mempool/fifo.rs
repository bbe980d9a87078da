//! A bounded map that forgets its oldest entries first.

use std::collections::VecDeque;

use tally_crypto::Digest;

use crate::FastMap;

/// A map of at most `max` entries that forgets the oldest first.
pub(super) struct Fifo<V> {
    map: FastMap<Digest, V>,
    /// Insertion order; may name entries removed since (skipped when popped).
    order: VecDeque<Digest>,
    max: usize,
}

impl<V> Fifo<V> {
    pub(super) fn new(max: usize) -> Fifo<V> {
        Fifo {
            map: FastMap::default(),
            order: VecDeque::new(),
            max,
        }
    }

    pub(super) fn get(&self, hash: &Digest) -> Option<&V> {
        self.map.get(hash)
    }

    /// Keeps the first value inserted under a hash.
    pub(super) fn insert(&mut self, hash: Digest, value: V) {
        if self.map.contains_key(&hash) {
            return;
        }
        self.map.insert(hash, value);
        self.order.push_back(hash);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(super) fn remove(&mut self, hash: &Digest) -> Option<V> {
        self.map.remove(hash)
    }

    pub(super) fn pop_oldest(&mut self) -> Option<V> {
        while let Some(hash) = self.order.pop_front() {
            if let Some(v) = self.map.remove(&hash) {
                return Some(v);
            }
        }
        None
    }
}
