//! Byzantine behaviour, as a test fixture: a faulty validator runs the honest core and its
//! outgoing messages pass through [`Byzantine::mutate`]. Nothing here is reachable from the
//! node.

use tally_crypto::{ChainId, Digest, SecretKey};

use super::rng::Rng;
use crate::pbft::messages::{PreparedProof, SignedBody};
use crate::pbft::{Message, Signed};
use crate::{Batch, Seq, ValidatorId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Behavior {
    /// As primary, sends different batches to different replicas for one sequence number.
    EquivocatingPrimary,
    /// PREPAREs and COMMITs for a random digest to some replicas.
    ConflictingVotes,
    /// Corrupts signatures, or claims to be another validator.
    ForgedSignatures,
    /// Replays messages of older views.
    ReplayOld,
    /// Sends nothing.
    Silence,
    /// VIEW-CHANGEs claiming prepared certificates it does not have (or hiding its own).
    LyingViewChange,
    /// As new primary, a NEW-VIEW whose O does not follow from its V.
    WrongNewView,
}

pub const ALL: [Behavior; 7] = [
    Behavior::EquivocatingPrimary,
    Behavior::ConflictingVotes,
    Behavior::ForgedSignatures,
    Behavior::ReplayOld,
    Behavior::Silence,
    Behavior::LyingViewChange,
    Behavior::WrongNewView,
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
        }
    }
}

pub struct Byzantine {
    pub behaviors: Vec<Behavior>,
    pub id: ValidatorId,
    pub key: SecretKey,
    pub chain: ChainId,
    pub n: usize,
    /// Messages seen, for replays (bounded).
    pub seen: Vec<Message>,
}

impl Byzantine {
    fn has(&self, b: Behavior) -> bool {
        self.behaviors.contains(&b)
    }

    fn sign<T: SignedBody>(&self, body: T) -> Signed<T> {
        Signed {
            from: self.id,
            signature: self.key.sign(T::DOMAIN, &self.chain, &body.signing_bytes()),
            body,
        }
    }

    pub fn observe(&mut self, msg: &Message, rng: &mut Rng) {
        if self.seen.len() < 256 {
            self.seen.push(msg.clone());
        } else {
            let i = rng.range(0, 255) as usize;
            self.seen[i] = msg.clone();
        }
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
            Message::PrePrepare(m) if self.has(Behavior::EquivocatingPrimary) && to.0 % 2 == 1 => {
                let mut body = m.body.clone();
                body.batch
                    .txs
                    .push(Digest::of(&rng.next_u64().to_le_bytes()));
                out[0] = Message::PrePrepare(self.sign(body));
                faults.push(Behavior::EquivocatingPrimary.fault_name());
            }
            Message::Prepare(m) if self.has(Behavior::ConflictingVotes) && rng.chance(0.5) => {
                let mut body = m.body;
                body.digest = Digest::of(&rng.next_u64().to_le_bytes());
                out[0] = Message::Prepare(self.sign(body));
                faults.push(Behavior::ConflictingVotes.fault_name());
            }
            Message::Commit(m) if self.has(Behavior::ConflictingVotes) && rng.chance(0.5) => {
                let mut body = m.body;
                body.digest = Digest::of(&rng.next_u64().to_le_bytes());
                out[0] = Message::Commit(self.sign(body));
                faults.push(Behavior::ConflictingVotes.fault_name());
            }
            Message::ViewChange(m) if self.has(Behavior::LyingViewChange) => {
                let mut body = m.body.clone();
                match rng.range(0, 2) {
                    0 => body.prepared.clear(),
                    1 => {
                        // A made-up prepared certificate for the next sequence number, signed
                        // by itself only: too few prepares (and not the primary's pre-prepare
                        // unless it was that primary).
                        let seq = Seq(body.stable_seq.0 + 1);
                        let view = crate::View(body.new_view.0.saturating_sub(1));
                        body.prepared.retain(|p| p.pre_prepare.body.seq != seq);
                        let pre_prepare = self.sign(crate::pbft::PrePrepare {
                            view,
                            seq,
                            batch: Batch {
                                txs: vec![Digest::of(&rng.next_u64().to_le_bytes())],
                            },
                        });
                        let digest = pre_prepare.body.batch.digest();
                        let prepares = vec![self.sign(crate::pbft::Prepare { view, seq, digest })];
                        body.prepared.push(PreparedProof {
                            pre_prepare,
                            prepares,
                        });
                    }
                    _ => {
                        // Claims its prepared certificates are from a higher view than they
                        // are: breaks every signature inside.
                        for p in &mut body.prepared {
                            p.pre_prepare.body.view = crate::View(body.new_view.0 - 1);
                        }
                    }
                }
                out[0] = Message::ViewChange(self.sign(body));
                faults.push(Behavior::LyingViewChange.fault_name());
            }
            Message::NewView(m) if self.has(Behavior::WrongNewView) => {
                let mut body = m.body.clone();
                if body.pre_prepares.is_empty() || rng.chance(0.3) {
                    let seq = body
                        .pre_prepares
                        .last()
                        .map(|p| p.body.seq.next())
                        .unwrap_or(Seq(1));
                    body.pre_prepares.push(self.sign(crate::pbft::PrePrepare {
                        view: body.view,
                        seq,
                        batch: Batch::null(),
                    }));
                } else {
                    let i = rng.range(0, body.pre_prepares.len() as u64 - 1) as usize;
                    let mut pp = body.pre_prepares[i].body.clone();
                    pp.batch = if pp.batch.is_null() {
                        Batch {
                            txs: vec![Digest::of(&rng.next_u64().to_le_bytes())],
                        }
                    } else {
                        Batch::null()
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
                Message::PrePrepare(mut m) => {
                    m.body.batch.txs.push(Digest::ZERO);
                    Message::PrePrepare(m)
                }
                other => {
                    let mut m = other;
                    if let Message::Checkpoint(c) = &mut m {
                        c.body.state_root = Digest::of(b"forged");
                    }
                    m
                }
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
