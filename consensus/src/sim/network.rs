//! The simulated network: partitions, loss, delay, duplication, withholding, delivery with
//! real signature checks, and what the evidence checker learns of each delivery.

use tally_crypto::{Digest, Verified};

use super::byzantine::Behavior;
use super::{Ev, Partition, Sim};
use crate::pbft::{Message, Statement};
use crate::protocol::{Input, Protocol};
use crate::{Seq, ValidatorId};

impl Sim {
    pub(super) fn partition(&mut self) {
        let count = self.nodes.len();
        let mut group: Vec<u8> = (0..count).map(|_| self.rng.range(0, 1) as u8).collect();
        if group.iter().all(|g| *g == group[0]) {
            group[self.rng.range(0, count as u64 - 1) as usize] ^= 1;
        }
        let one_way = self.rng.chance(0.3);
        self.fault(if one_way {
            "one_way_partition"
        } else {
            "symmetric_partition"
        });
        self.partition = Some(Partition { group, one_way });
    }

    pub(super) fn blocked(&self, from: usize, to: usize) -> bool {
        match &self.partition {
            None => false,
            Some(p) if p.one_way => p.group[from] == 0 && p.group[to] == 1,
            Some(p) => p.group[from] != p.group[to],
        }
    }

    pub(super) fn verify(&mut self, msg: &Message) -> Option<Verified<Message>> {
        let key = Digest::of(&msg.encode());
        if let Some(v) = self.verified.get(&key) {
            return v.clone();
        }
        let v = tally_crypto::verify_cached(
            &self.validators,
            &self.chain,
            msg.clone(),
            &mut self.signatures,
        )
        .ok();
        self.verified.insert(key, v.clone());
        v
    }

    pub(super) fn send(&mut self, from_node: usize, to: ValidatorId, msg: Message) {
        if !self.nodes[from_node].faulty && msg.from() == self.nodes[from_node].validator {
            self.checker.check_honest_signature(from_node, &msg);
        }
        let msgs = if let Some(byz) = &self.nodes[from_node].byz {
            let mut faults = Vec::new();
            let out = byz.mutate(&msg, to, &mut self.rng, &mut faults);
            for f in faults {
                self.fault(f);
            }
            out
        } else {
            vec![msg]
        };
        for m in msgs {
            self.transmit_to_validator(from_node, to, m);
        }
    }

    pub(super) fn transmit_to_validator(&mut self, from_node: usize, to: ValidatorId, m: Message) {
        if self.verify(&m).is_some() {
            self.checker.record_proposals_in(&m);
        }
        for dest in 0..self.nodes.len() {
            if dest != from_node && self.nodes[dest].validator == to {
                self.transmit(from_node, dest, m.clone());
            }
        }
    }

    pub(super) fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        self.report.messages_sent += 1;
        if self.blocked(from, to) {
            self.fault("partition_drop");
            return;
        }
        if self.rng.chance(self.p.loss) {
            self.fault("message_loss");
            return;
        }
        let mut delay = self.rng.range(self.p.min_delay, self.p.max_delay);
        if self.nodes[from]
            .byz
            .as_ref()
            .is_some_and(|b| b.has(Behavior::Withhold))
            && self.rng.chance(0.3)
        {
            self.fault(Behavior::Withhold.fault_name());
            delay += self.rng.range(500, 5_000);
        }
        if self.rng.chance(self.p.duplicate) {
            self.fault("message_duplicate");
            let d2 = self.rng.range(self.p.min_delay, self.p.max_delay * 2);
            self.schedule(
                d2,
                Ev::Deliver {
                    to,
                    msg: msg.clone(),
                },
            );
        }
        self.schedule(delay, Ev::Deliver { to, msg });
    }

    pub(super) fn deliver(&mut self, to: usize, msg: Message) {
        if self.nodes[to].core.is_none() {
            self.fault("delivered_to_crashed");
            return;
        }
        if let Some(byz) = &mut self.nodes[to].byz {
            byz.observe(&msg, &mut self.rng);
        }
        match self.verify(&msg) {
            None => self.fault("invalid_signature_rejected"),
            Some(v) => {
                self.report.messages_delivered += 1;
                if !self.nodes[to].faulty {
                    self.expect_evidence(to, &msg);
                }
                self.step(to, Input::Message(crate::protocol::PeerMessage::Pbft(v)));
            }
        }
    }

    /// Tells the evidence checker about a statement delivered to an honest replica where it
    /// examines it: the current view in normal operation, inside the window.
    pub(super) fn expect_evidence(&mut self, to: usize, msg: &Message) {
        let Some(core) = &self.nodes[to].core else {
            return;
        };
        let (view, stable, high) = (core.view(), core.stable_checkpoint(), core.high_watermark());
        let normal = core.status() == crate::pbft::Status::Normal;
        let in_window = |s: Seq| s > stable && s <= high;
        let primary = self.validators.primary(view);
        let statement = match msg {
            Message::PrePrepare(m, b)
                if m.body.view == view
                    && normal
                    && in_window(m.body.seq)
                    && b.txs.len() <= self.pbft.batch_txs_max
                    && m.from == primary =>
            {
                Statement::PrePrepare(*m)
            }
            Message::Prepare(m)
                if m.body.view == view && normal && in_window(m.body.seq) && m.from != primary =>
            {
                Statement::Prepare(*m)
            }
            Message::Commit(m) if m.body.view == view && normal && in_window(m.body.seq) => {
                Statement::Commit(*m)
            }
            Message::Checkpoint(m)
                if in_window(m.body.seq)
                    && m.body.seq.0.is_multiple_of(self.pbft.checkpoint_interval) =>
            {
                Statement::Checkpoint(*m)
            }
            _ => return,
        };
        if statement.from() != self.nodes[to].validator {
            self.checker.statement_delivered(to, &statement);
        }
    }
}
