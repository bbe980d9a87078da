//! Byzantine behaviour, as a test fixture. A faulty validator runs the honest core; its
//! outgoing messages pass through [`Byzantine::mutate`], and on every tick
//! [`Byzantine::act`] lets it send validly signed messages of its own making. Nothing here
//! is reachable from the node.

use tally_crypto::{ChainId, Digest, SecretKey};

use super::rng::Rng;
use crate::pbft::messages::{
    CheckpointCert, PreparedCert, PreparedClaim, SignedBody, ViewChangeProofs,
};
use crate::pbft::{Checkpoint, Commit, Message, PrePrepare, Prepare, Signed, ViewChange};
use crate::{Batch, Seq, ValidatorId, View};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// As primary, sends different batches to different replicas for one sequence number.
    EquivocatingPrimary,
    /// PREPAREs and COMMITs for a random digest to some replicas.
    ConflictingVotes,
    /// Corrupts signatures, or claims to be another validator.
    ForgedSignatures,
    /// Replays messages seen earlier.
    ReplayOld,
    /// Sends nothing.
    Silence,
    /// VIEW-CHANGEs hiding its prepared certificates, or claiming ones it cannot prove.
    LyingViewChange,
    /// As new primary, a NEW-VIEW whose O does not follow from its V.
    WrongNewView,
    /// PRE-PREPAREs of its own naming pending requests: as a backup, for stale and future
    /// views, outside the window, over the batch limit (a censorship attempt: an honest node
    /// that acted on them would set those requests aside).
    ForgedPrePrepare,
    /// CHECKPOINTs for ever larger sequence numbers with made-up block hashes.
    CheckpointFlood,
    /// PREPAREs and COMMITs for many digests, sequence numbers and views.
    VoteFlood,
    /// Holds its messages back and sends them seconds later.
    Withhold,
    /// VIEW-CHANGEs with more claims than the window holds, or claims far above it.
    OversizedViewChange,
}

pub const ALL: [Behavior; 12] = [
    Behavior::EquivocatingPrimary,
    Behavior::ConflictingVotes,
    Behavior::ForgedSignatures,
    Behavior::ReplayOld,
    Behavior::Silence,
    Behavior::LyingViewChange,
    Behavior::WrongNewView,
    Behavior::ForgedPrePrepare,
    Behavior::CheckpointFlood,
    Behavior::VoteFlood,
    Behavior::Withhold,
    Behavior::OversizedViewChange,
];

impl Behavior {
    pub fn fault_name(self) -> &'static str {
        match self {
            Behavior::EquivocatingPrimary => "byz_equivocating_pre_prepare",
            Behavior::ConflictingVotes => "byz_conflicting_vote",
            Behavior::ForgedSignatures => "byz_forged_signature",
            Behavior::ReplayOld => "byz_replayed_message",
            Behavior::Silence => "byz_silenced_message",
            Behavior::LyingViewChange => "byz_lying_view_change",
            Behavior::WrongNewView => "byz_wrong_new_view",
            Behavior::ForgedPrePrepare => "byz_forged_pre_prepare",
            Behavior::CheckpointFlood => "byz_checkpoint_flood",
            Behavior::VoteFlood => "byz_vote_flood",
            Behavior::Withhold => "byz_withheld_message",
            Behavior::OversizedViewChange => "byz_oversized_view_change",
        }
    }

    /// The name `tally sim --adversary` takes.
    pub fn name(self) -> &'static str {
        match self {
            Behavior::EquivocatingPrimary => "equivocating-primary",
            Behavior::ConflictingVotes => "conflicting-votes",
            Behavior::ForgedSignatures => "forged-signatures",
            Behavior::ReplayOld => "replay",
            Behavior::Silence => "silence",
            Behavior::LyingViewChange => "lying-view-change",
            Behavior::WrongNewView => "wrong-new-view",
            Behavior::ForgedPrePrepare => "forged-pre-prepare",
            Behavior::CheckpointFlood => "checkpoint-flood",
            Behavior::VoteFlood => "vote-flood",
            Behavior::Withhold => "withhold",
            Behavior::OversizedViewChange => "oversized-view-change",
        }
    }

    pub fn from_name(name: &str) -> Option<Behavior> {
        ALL.iter().copied().find(|b| b.name() == name)
    }
}

/// What a Byzantine validator knows when it acts: its own core's view and watermarks, and
/// the requests still pending (it may be omniscient).
pub struct Context<'a> {
    pub view: View,
    pub stable: Seq,
    pub window: u64,
    pub checkpoint_interval: u64,
    pub batch_txs_max: usize,
    pub pending: &'a [Digest],
}

pub struct Byzantine {
    pub behaviors: Vec<Behavior>,
    pub id: ValidatorId,
    pub key: SecretKey,
    pub chain: ChainId,
    pub n: usize,
    /// Messages seen, for replays (bounded).
    pub seen: Vec<Message>,
    /// The highest checkpoint sequence number it has flooded.
    pub flood_seq: u64,
}

impl Byzantine {
    pub fn has(&self, b: Behavior) -> bool {
        self.behaviors.contains(&b)
    }

    fn sign<T: SignedBody>(&self, body: T) -> Signed<T> {
        Signed {
            from: self.id,
            signature: self.key.sign(T::DOMAIN, &self.chain, &body.signing_bytes()),
            body,
        }
    }

    fn random_digest(rng: &mut Rng) -> Digest {
        Digest::of(&rng.next_u64().to_le_bytes())
    }

    pub fn observe(&mut self, msg: &Message, rng: &mut Rng) {
        if self.seen.len() < 256 {
            self.seen.push(msg.clone());
        } else {
            let i = rng.range(0, 255) as usize;
            self.seen[i] = msg.clone();
        }
    }

    /// Messages of its own making, sent on a tick: `(to, message)`; `None` broadcasts.
    pub fn act(
        &mut self,
        ctx: &Context<'_>,
        rng: &mut Rng,
        faults: &mut Vec<&'static str>,
    ) -> Vec<(Option<ValidatorId>, Message)> {
        let mut out = Vec::new();
        if self.has(Behavior::ForgedPrePrepare) && rng.chance(0.5) && !ctx.pending.is_empty() {
            let take = rng.range(1, ctx.pending.len().min(8) as u64) as usize;
            let start = rng.range(0, (ctx.pending.len() - take) as u64) as usize;
            let mut batch = Batch {
                txs: ctx.pending[start..start + take].to_vec(),
            };
            let mut view = ctx.view;
            let mut seq = Seq(ctx.stable.0 + rng.range(1, ctx.window));
            match rng.range(0, 4) {
                0 => {} // current view: it is not the primary (or is: then it is its right)
                1 => view = View(ctx.view.0 + rng.range(1, 5)),
                2 => view = View(ctx.view.0.saturating_sub(rng.range(1, 3))),
                3 => seq = Seq(ctx.stable.0 + ctx.window + rng.range(1, 100)),
                _ => {
                    while batch.txs.len() <= ctx.batch_txs_max {
                        batch.txs.push(Self::random_digest(rng));
                    }
                }
            }
            let pp = self.sign(PrePrepare {
                view,
                seq,
                digest: batch.digest(),
            });
            out.push((None, Message::PrePrepare(pp, batch)));
            faults.push(Behavior::ForgedPrePrepare.fault_name());
        }
        if self.has(Behavior::CheckpointFlood) {
            for _ in 0..rng.range(1, 3) {
                self.flood_seq = self.flood_seq.max(ctx.stable.0) + ctx.checkpoint_interval;
                let cp = self.sign(Checkpoint {
                    seq: Seq(self.flood_seq),
                    block_hash: Self::random_digest(rng),
                });
                out.push((None, Message::Checkpoint(cp)));
            }
            faults.push(Behavior::CheckpointFlood.fault_name());
        }
        if self.has(Behavior::VoteFlood) {
            for _ in 0..rng.range(1, 4) {
                let view = View(ctx.view.0 + rng.range(0, 3));
                let seq = Seq(ctx.stable.0 + rng.range(1, ctx.window + 5));
                let digest = Self::random_digest(rng);
                let msg = if rng.chance(0.5) {
                    Message::Prepare(self.sign(Prepare { view, seq, digest }))
                } else {
                    Message::Commit(self.sign(Commit { view, seq, digest }))
                };
                out.push((None, msg));
            }
            faults.push(Behavior::VoteFlood.fault_name());
        }
        if self.has(Behavior::OversizedViewChange) && rng.chance(0.2) {
            let count = ctx.window + rng.range(1, 10);
            let base = if rng.chance(0.5) {
                ctx.stable.0
            } else {
                ctx.stable.0 + ctx.window
            };
            let claims: Vec<PreparedClaim> = (1..=count)
                .map(|i| PreparedClaim {
                    seq: Seq(base + i),
                    view: View(0),
                    digest: Self::random_digest(rng),
                })
                .collect();
            let proofs: Vec<PreparedCert> = claims
                .iter()
                .map(|c| PreparedCert {
                    pre_prepare: self.sign(PrePrepare {
                        view: c.view,
                        seq: c.seq,
                        digest: c.digest,
                    }),
                    prepares: vec![],
                })
                .collect();
            let vc = self.sign(ViewChange {
                new_view: View(ctx.view.0 + 1),
                stable_seq: Seq(0),
                stable_hash: Digest::ZERO,
                prepared: claims,
            });
            out.push((
                None,
                Message::ViewChange(
                    vc,
                    ViewChangeProofs {
                        stable: CheckpointCert::default(),
                        prepared: proofs,
                    },
                ),
            ));
            faults.push(Behavior::OversizedViewChange.fault_name());
        }
        out
    }

    /// What actually goes to `to` instead of `msg`; the fault names it committed.
    pub fn mutate(
        &self,
        msg: &Message,
        to: ValidatorId,
        rng: &mut Rng,
        faults: &mut Vec<&'static str>,
    ) -> Vec<Message> {
        if self.has(Behavior::Silence) && rng.chance(0.9) {
            faults.push(Behavior::Silence.fault_name());
            return vec![];
        }
        let mut out = vec![msg.clone()];
        match msg {
            Message::PrePrepare(m, batch)
                if self.has(Behavior::EquivocatingPrimary) && to.0 % 2 == 1 =>
            {
                let mut batch = batch.clone();
                batch.txs.push(Self::random_digest(rng));
                let body = PrePrepare {
                    digest: batch.digest(),
                    ..m.body
                };
                out[0] = Message::PrePrepare(self.sign(body), batch);
                faults.push(Behavior::EquivocatingPrimary.fault_name());
            }
            Message::Prepare(m) if self.has(Behavior::ConflictingVotes) && rng.chance(0.5) => {
                let mut body = m.body;
                body.digest = Self::random_digest(rng);
                out[0] = Message::Prepare(self.sign(body));
                faults.push(Behavior::ConflictingVotes.fault_name());
            }
            Message::Commit(m) if self.has(Behavior::ConflictingVotes) && rng.chance(0.5) => {
                let mut body = m.body;
                body.digest = Self::random_digest(rng);
                out[0] = Message::Commit(self.sign(body));
                faults.push(Behavior::ConflictingVotes.fault_name());
            }
            Message::ViewChange(m, proofs) if self.has(Behavior::LyingViewChange) => {
                let mut body = m.body.clone();
                let mut proofs = proofs.clone();
                match rng.range(0, 2) {
                    0 => {
                        body.prepared.clear();
                        proofs.prepared.clear();
                    }
                    1 => {
                        // A made-up claim for the next sequence number, "proven" by its own
                        // signatures only: too few prepares.
                        let seq = Seq(body.stable_seq.0 + 1);
                        let view = View(body.new_view.0.saturating_sub(1));
                        let keep: Vec<bool> = body.prepared.iter().map(|c| c.seq != seq).collect();
                        let mut k = keep.iter();
                        body.prepared.retain(|_| *k.next().unwrap_or(&true));
                        let mut k = keep.iter();
                        proofs.prepared.retain(|_| *k.next().unwrap_or(&true));
                        let digest = Self::random_digest(rng);
                        let claim = PreparedClaim { seq, view, digest };
                        body.prepared.insert(0, claim);
                        proofs.prepared.insert(
                            0,
                            PreparedCert {
                                pre_prepare: self.sign(PrePrepare { view, seq, digest }),
                                prepares: vec![(
                                    self.id,
                                    self.sign(Prepare { view, seq, digest }).signature,
                                )],
                            },
                        );
                    }
                    _ => {
                        // Claims its prepared certificates are from a higher view than they
                        // are, keeping the proofs as they were: claim and proof disagree.
                        for c in &mut body.prepared {
                            c.view = View(body.new_view.0 - 1);
                        }
                    }
                }
                out[0] = Message::ViewChange(self.sign(body), proofs);
                faults.push(Behavior::LyingViewChange.fault_name());
            }
            Message::NewView(m) if self.has(Behavior::WrongNewView) => {
                let mut body = m.body.clone();
                if body.pre_prepares.is_empty() || rng.chance(0.3) {
                    let seq = body
                        .pre_prepares
                        .last()
                        .map(|p| p.body.seq.next())
                        .unwrap_or(Seq(body.stable.seq.0 + 1));
                    body.pre_prepares.push(self.sign(PrePrepare {
                        view: body.view,
                        seq,
                        digest: Batch::null().digest(),
                    }));
                } else {
                    let i = rng.range(0, body.pre_prepares.len() as u64 - 1) as usize;
                    let mut pp = body.pre_prepares[i].body;
                    pp.digest = if pp.digest == Batch::null().digest() {
                        Self::random_digest(rng)
                    } else {
                        Batch::null().digest()
                    };
                    body.pre_prepares[i] = self.sign(pp);
                }
                out[0] = Message::NewView(self.sign(body));
                faults.push(Behavior::WrongNewView.fault_name());
            }
            _ => {}
        }
        if self.has(Behavior::ForgedSignatures) && rng.chance(0.3) {
            let forged = match out[0].clone() {
                Message::Prepare(mut m) => {
                    if rng.chance(0.5) {
                        m.signature.0[rng.range(0, 63) as usize] ^= 1;
                    } else {
                        m.from = ValidatorId(((m.from.0 as usize + 1) % self.n) as u16);
                    }
                    Message::Prepare(m)
                }
                Message::Commit(mut m) => {
                    m.signature.0[rng.range(0, 63) as usize] ^= 0x80;
                    Message::Commit(m)
                }
                Message::PrePrepare(mut m, batch) => {
                    m.body.digest = Digest::ZERO;
                    Message::PrePrepare(m, batch)
                }
                Message::Checkpoint(mut c) => {
                    c.body.block_hash = Digest::of(b"forged");
                    Message::Checkpoint(c)
                }
                other => other,
            };
            out.push(forged);
            faults.push(Behavior::ForgedSignatures.fault_name());
        }
        if self.has(Behavior::ReplayOld)
            && rng.chance(0.2)
            && let Some(old) = rng.pick(&self.seen)
        {
            out.push(old.clone());
            faults.push(Behavior::ReplayOld.fault_name());
        }
        out
    }
}
