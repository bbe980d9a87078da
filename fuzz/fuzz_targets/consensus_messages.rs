//! Everything a peer's bytes reach before any check: the PBFT, Raft and Multi-Paxos message
//! decoders, commit certificates, batch headers, evidence, and the records a restart reads
//! back (the first byte picks the decoder). No input panics; whatever decodes re-encodes to
//! something that decodes to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tally_consensus::{BatchHeader, CommitCertificate, paxos, pbft, raft};

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    match which % 8 {
        0 => {
            if let Ok(m) = pbft::Message::decode(bytes) {
                assert_eq!(pbft::Message::decode(&m.encode()).ok(), Some(m));
            }
        }
        1 => {
            if let Some(m) = raft::Message::decode(bytes) {
                assert_eq!(raft::Message::decode(&m.encode()), Some(m));
            }
        }
        2 => {
            if let Some(m) = paxos::Message::decode(bytes) {
                assert_eq!(paxos::Message::decode(&m.encode()), Some(m));
            }
        }
        3 => {
            if let Ok(c) = CommitCertificate::decode(bytes) {
                assert_eq!(CommitCertificate::decode(&c.encode()), Ok(c));
            }
        }
        4 => {
            if let Some(h) = BatchHeader::decode(bytes) {
                assert_eq!(BatchHeader::decode(&h.encode()), Some(h));
            }
        }
        5 => {
            if let Ok(e) = pbft::Evidence::decode(bytes) {
                assert!(pbft::Evidence::decode(&e.encode()).is_ok());
            }
        }
        6 => {
            let _ = pbft::Record::decode(bytes);
        }
        _ => {
            // A store's consensus column as a restart reads it: key/value pairs.
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = bytes
                .chunks(64)
                .map(|c| {
                    let (k, v) = c.split_at(c.len().min(12));
                    (k.to_vec(), v.to_vec())
                })
                .collect();
            let _ = raft::storage::restore(&pairs);
            let _ = paxos::storage::restore(&pairs);
        }
    }
});
