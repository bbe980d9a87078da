//! What a peer's bytes reach in the node crate: frames of the batch stream (batches,
//! attestations, fetches, proofs), gossiped transaction bundles, and sync requests and
//! responses (the first byte picks the decoder). No input panics; a batch-stream frame that
//! decodes re-encodes to one that decodes to the same value; the borsh wire types accept only
//! their canonical encoding (re-encoding gives back the input).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tally_consensus::ValidatorSet;
use tally_crypto::SecretKey;
use tally_node::batches::wire::BatchFrame;
use tally_node::wire::{self, SyncRequest, SyncResponse, TxBundle};

fn validators() -> &'static ValidatorSet {
    static SET: OnceLock<ValidatorSet> = OnceLock::new();
    SET.get_or_init(|| {
        let keys: Vec<_> = (1..=4u8)
            .map(|i| SecretKey::from_seed(&[i; 32]).public_key())
            .collect();
        ValidatorSet::new(&keys).expect("four distinct keys")
    })
}

fn canonical<T: borsh::BorshSerialize + borsh::BorshDeserialize>(bytes: &[u8]) {
    if let Some(v) = wire::decode::<T>(bytes) {
        assert_eq!(wire::encode(&v), bytes, "a non-canonical encoding was accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => {
            if let Ok(f) = BatchFrame::decode(bytes, validators()) {
                assert_eq!(BatchFrame::decode(&f.encode(), validators()), Ok(f));
            }
        }
        1 => canonical::<TxBundle>(bytes),
        2 => canonical::<SyncRequest>(bytes),
        _ => canonical::<SyncResponse>(bytes),
    }
});
