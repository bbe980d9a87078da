//! The harness the PBFT rule tests share: a validator set with known keys, replicas, and
//! signed messages built by hand.

#![allow(dead_code)]

use tally_consensus::pbft::messages::SignedBody;
use tally_consensus::pbft::{
    Checkpoint, CheckpointCert, Commit, Message, Pbft, PbftConfig, PrePrepare, Prepare,
    PreparedCert, Record, Signed, ViewChange, ViewChangeProofs,
};
use tally_consensus::protocol::{
    Input, Output, PeerMessage, Protocol, Record as Stored, WireMessage,
};
use tally_consensus::{Batch, KeySigner, Seq, ValidatorId, ValidatorSet, View};
use tally_crypto::{ChainId, Digest, SecretKey};

pub const K: u64 = 4;
pub const L: u64 = 8;
pub const TIMEOUT: u64 = 100;

pub struct H {
    pub keys: Vec<SecretKey>,
    pub set: ValidatorSet,
    pub chain: ChainId,
}

impl H {
    pub fn new(n: usize) -> H {
        let keys: Vec<SecretKey> = (1..=n as u8)
            .map(|i| SecretKey::from_seed(&[i; 32]))
            .collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        H {
            keys,
            set,
            chain: ChainId::new("rules").unwrap(),
        }
    }

    pub fn config(&self) -> PbftConfig {
        let mut c = PbftConfig::new(K, L, TIMEOUT);
        c.batch_txs_max = 64;
        c.future_bytes_per_sender = 64 * 1024;
        c
    }

    pub fn replica(&self, me: u16, records: &[Record], executed: u64) -> Pbft {
        self.replica_with(me, records, executed, &[])
    }

    pub fn replica_with(
        &self,
        me: u16,
        records: &[Record],
        executed: u64,
        recent: &[(Seq, Digest)],
    ) -> Pbft {
        Pbft::new(
            self.config(),
            self.set.clone(),
            ValidatorId(me),
            Box::new(KeySigner::new(
                self.keys[me as usize].clone(),
                self.chain.clone(),
            )),
            records,
            Seq(executed),
            recent,
        )
    }

    pub fn sign<T: SignedBody>(&self, from: u16, body: T) -> Signed<T> {
        Signed {
            from: ValidatorId(from),
            signature: self.keys[from as usize].sign(T::DOMAIN, &self.chain, &body.signing_bytes()),
            body,
        }
    }

    pub fn input(&self, msg: Message) -> Input {
        Input::Message(PeerMessage::Pbft(
            tally_crypto::verify(&self.set, &self.chain, msg).expect("valid"),
        ))
    }

    pub fn signed_pre_prepare(
        &self,
        from: u16,
        view: u64,
        seq: u64,
        digest: Digest,
    ) -> Signed<PrePrepare> {
        self.sign(
            from,
            PrePrepare {
                view: View(view),
                seq: Seq(seq),
                digest,
            },
        )
    }

    pub fn pre_prepare(&self, from: u16, view: u64, seq: u64, batch: &Batch) -> Message {
        Message::PrePrepare(
            self.signed_pre_prepare(from, view, seq, batch.digest()),
            batch.clone(),
        )
    }

    pub fn signed_prepare(
        &self,
        from: u16,
        view: u64,
        seq: u64,
        digest: Digest,
    ) -> Signed<Prepare> {
        self.sign(
            from,
            Prepare {
                view: View(view),
                seq: Seq(seq),
                digest,
            },
        )
    }

    pub fn prepare(&self, from: u16, view: u64, seq: u64, digest: Digest) -> Message {
        Message::Prepare(self.signed_prepare(from, view, seq, digest))
    }

    pub fn commit(&self, from: u16, view: u64, seq: u64, digest: Digest) -> Message {
        Message::Commit(self.sign(
            from,
            Commit {
                view: View(view),
                seq: Seq(seq),
                digest,
            },
        ))
    }

    pub fn checkpoint(&self, from: u16, seq: u64, block_hash: Digest) -> Message {
        Message::Checkpoint(self.sign(
            from,
            Checkpoint {
                seq: Seq(seq),
                block_hash,
            },
        ))
    }

    /// A certificate for `(seq, block_hash)` signed by `signers`.
    pub fn checkpoint_cert(&self, seq: u64, block_hash: Digest, signers: &[u16]) -> CheckpointCert {
        CheckpointCert {
            seq: Seq(seq),
            block_hash,
            signatures: signers
                .iter()
                .map(|&i| {
                    (
                        ValidatorId(i),
                        self.sign(
                            i,
                            Checkpoint {
                                seq: Seq(seq),
                                block_hash,
                            },
                        )
                        .signature,
                    )
                })
                .collect(),
        }
    }

    /// A prepared certificate for `digest` at `(view, seq)`: the primary's pre-prepare and
    /// the prepares of the 2f backups after it.
    pub fn prepared_cert(&self, view: u64, seq: u64, digest: Digest) -> PreparedCert {
        let n = self.set.len() as u16;
        let primary = (view % n as u64) as u16;
        let backups: Vec<u16> = (1..n)
            .map(|i| (primary + i) % n)
            .take(self.set.quorum() - 1)
            .collect();
        PreparedCert {
            pre_prepare: self.signed_pre_prepare(primary, view, seq, digest),
            prepares: backups
                .iter()
                .map(|&b| {
                    (
                        ValidatorId(b),
                        self.signed_prepare(b, view, seq, digest).signature,
                    )
                })
                .collect(),
        }
    }

    /// VIEW-CHANGE(to) from `from` with a genesis stable checkpoint and these certificates.
    pub fn view_change(&self, from: u16, to: u64, certs: Vec<PreparedCert>) -> Message {
        let (vc, proofs) = self.view_change_parts(from, to, certs);
        Message::ViewChange(vc, proofs)
    }

    pub fn view_change_parts(
        &self,
        from: u16,
        to: u64,
        certs: Vec<PreparedCert>,
    ) -> (Signed<ViewChange>, ViewChangeProofs) {
        let vc = self.sign(
            from,
            ViewChange {
                new_view: View(to),
                stable_seq: Seq(0),
                stable_hash: Digest::ZERO,
                prepared: certs.iter().map(|c| c.claim()).collect(),
            },
        );
        (
            vc,
            ViewChangeProofs {
                stable: CheckpointCert::default(),
                prepared: certs,
            },
        )
    }
}

impl H {
    /// NEW-VIEW(view) from its primary with the (claim-free) VIEW-CHANGEs of `from`, the
    /// genesis checkpoint, and the given O and certificates.
    pub fn new_view(
        &self,
        view: u64,
        from: &[u16],
        pre_prepares: Vec<Signed<PrePrepare>>,
        proofs: Vec<PreparedCert>,
    ) -> Message {
        let primary = (view % self.set.len() as u64) as u16;
        let view_changes = from
            .iter()
            .map(|f| self.view_change_parts(*f, view, vec![]).0)
            .collect();
        Message::NewView(self.sign(
            primary,
            tally_consensus::pbft::NewView {
                view: View(view),
                view_changes,
                stable: CheckpointCert::default(),
                pre_prepares,
                proofs,
            },
        ))
    }
}

pub fn batch(tag: u8) -> Batch {
    Batch {
        txs: vec![Digest::of(&[tag])],
    }
}

pub fn step(r: &mut Pbft, now: u64, input: Input) -> Vec<Output> {
    let mut out = Vec::new();
    r.step(now, input, &mut out);
    out
}

pub fn tick(pending: bool) -> Input {
    Input::Tick {
        pending_requests: pending,
        entropy: 0,
    }
}

pub fn broadcasts(out: &[Output]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            Output::Broadcast(WireMessage::Pbft(m)) => Some(m),
            _ => None,
        })
        .collect()
}

pub fn commits(out: &[Output]) -> Vec<Seq> {
    out.iter()
        .filter_map(|o| match o {
            Output::Commit { seq, .. } => Some(*seq),
            _ => None,
        })
        .collect()
}

pub fn validations(out: &[Output]) -> Vec<(View, Seq, Batch)> {
    out.iter()
        .filter_map(|o| match o {
            Output::Validate { view, seq, batch } => Some((*view, *seq, batch.clone())),
            _ => None,
        })
        .collect()
}

pub fn persisted(out: &[Output]) -> Vec<Record> {
    out.iter()
        .filter_map(|o| match o {
            Output::Persist(Stored::Pbft(r)) => Some(r.clone()),
            _ => None,
        })
        .collect()
}

pub fn rejected(out: &[Output], why: &str) -> bool {
    out.iter().any(|o| {
        matches!(o, Output::Event(tally_consensus::Event::Rejected { reason }) if *reason == why)
    })
}

/// A backup accepts the primary's pre-prepare and the driver validates its batch.
pub fn accept(h: &H, r: &mut Pbft, view: u64, seq: u64, b: &Batch) -> Vec<Output> {
    let primary = (view % h.set.len() as u64) as u16;
    let mut out = step(r, 0, h.input(h.pre_prepare(primary, view, seq, b)));
    out.extend(step(
        r,
        0,
        Input::Validated {
            view: View(view),
            seq: Seq(seq),
            digest: b.digest(),
        },
    ));
    out
}

/// Drives replica 1 (a backup of view 0) until `seq` is prepared and committed with the
/// COMMITs of replicas 0, 2.
pub fn commit_at(h: &H, r: &mut Pbft, seq: u64, b: &Batch) -> Vec<Output> {
    let d = b.digest();
    let mut out = accept(h, r, 0, seq, b);
    out.extend(step(r, 0, h.input(h.prepare(2, 0, seq, d))));
    out.extend(step(r, 0, h.input(h.commit(0, 0, seq, d))));
    out.extend(step(r, 0, h.input(h.commit(2, 0, seq, d))));
    out
}

/// Reports `seq` executed with batch `b` and block hash `hash`.
pub fn executed(r: &mut Pbft, seq: u64, b: &Batch, hash: Digest) -> Vec<Output> {
    step(
        r,
        0,
        Input::Executed {
            seq: Seq(seq),
            digest: b.digest(),
            block_hash: hash,
            epoch: View::default(),
        },
    )
}
