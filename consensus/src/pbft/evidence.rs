//! Equivocation evidence: two validly signed, conflicting messages from one validator.

use std::collections::HashMap;

use tally_crypto::Digest;

use super::messages::{Checkpoint, Commit, Message, PrePrepare, Prepare, Signed};
use crate::{Seq, ValidatorId, View};

/// Proof that `validator` signed two different things where it may sign only one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    PrePrepare(Signed<PrePrepare>, Signed<PrePrepare>),
    Prepare(Signed<Prepare>, Signed<Prepare>),
    Commit(Signed<Commit>, Signed<Commit>),
    Checkpoint(Signed<Checkpoint>, Signed<Checkpoint>),
}

impl Evidence {
    pub fn validator(&self) -> ValidatorId {
        match self {
            Evidence::PrePrepare(a, _) => a.from,
            Evidence::Prepare(a, _) => a.from,
            Evidence::Commit(a, _) => a.from,
            Evidence::Checkpoint(a, _) => a.from,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Evidence::PrePrepare(..) => "pre_prepare",
            Evidence::Prepare(..) => "prepare",
            Evidence::Commit(..) => "commit",
            Evidence::Checkpoint(..) => "checkpoint",
        }
    }
}

/// First-seen signed votes per `(kind, view, seq, sender)`, inside the watermark window.
#[derive(Default)]
pub struct EvidenceTracker {
    seen: HashMap<(u8, View, Seq, ValidatorId), (Digest, Message)>,
    reported: HashMap<(u8, View, Seq, ValidatorId), ()>,
}

impl EvidenceTracker {
    /// Records a validly signed message; returns evidence when it conflicts with one seen
    /// before from the same sender (reported once per slot and sender).
    pub fn observe(&mut self, msg: &Message) -> Option<Evidence> {
        let (tag, view, seq, digest) = match msg {
            Message::PrePrepare(m) => (0, m.body.view, m.body.seq, m.body.batch.digest()),
            Message::Prepare(m) => (1, m.body.view, m.body.seq, m.body.digest),
            Message::Commit(m) => (2, m.body.view, m.body.seq, m.body.digest),
            Message::Checkpoint(m) => (3, View(0), m.body.seq, m.body.state_root),
            Message::ViewChange(_) | Message::NewView(_) => return None,
        };
        let key = (tag, view, seq, msg.from());
        match self.seen.get(&key) {
            None => {
                self.seen.insert(key, (digest, msg.clone()));
                None
            }
            Some((d, _)) if *d == digest => None,
            Some((_, first)) => {
                if self.reported.insert(key, ()).is_some() {
                    return None;
                }
                Some(match (first, msg) {
                    (Message::PrePrepare(a), Message::PrePrepare(b)) => {
                        Evidence::PrePrepare(a.clone(), b.clone())
                    }
                    (Message::Prepare(a), Message::Prepare(b)) => {
                        Evidence::Prepare(a.clone(), b.clone())
                    }
                    (Message::Commit(a), Message::Commit(b)) => {
                        Evidence::Commit(a.clone(), b.clone())
                    }
                    (Message::Checkpoint(a), Message::Checkpoint(b)) => {
                        Evidence::Checkpoint(a.clone(), b.clone())
                    }
                    _ => unreachable!("the key's tag fixes the message kind"),
                })
            }
        }
    }

    /// Forgets everything at or below the stable checkpoint.
    pub fn prune(&mut self, up_to: Seq) {
        self.seen.retain(|(_, _, s, _), _| *s > up_to);
        self.reported.retain(|(_, _, s, _), _| *s > up_to);
    }
}
