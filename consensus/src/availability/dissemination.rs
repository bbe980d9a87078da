//! Getting f + 1 attestations for each batch, as a sans-IO state machine: the node (or the
//! simulator) stores and checks batch bodies and carries out the outputs; this decides who
//! is asked, when to ask others, when to attest, and when a batch is proven.
//!
//! **Author.** It streams each new batch once to every validator; the f validators
//! [`designated`] for it attest without being asked. A batch still unproven after
//! `retry_ms` is sent again, asking for an attestation, to the next validators of
//! [`ask_order`] not asked yet (one more each time), so a slow or silent attester delays
//! a proof by one retry and cannot block it while f + 1 validators are up.
//!
//! **Attester.** It attests a batch when it is designated for it or was asked, only after
//! the node reports the body stored durably and every transaction valid, and at most one
//! batch per `(author, index)`: an author that makes two batches with one number cannot get
//! both attested by an honest validator. What it remembers to enforce that is bounded: the
//! `window` highest numbers it has seen from each author. A number below all of them, once
//! the window is full, gets no attestation ([`DisseminatorOutput::Ignored`]) but is no offence:
//! an honest author resends its stored batches after a restart, and its numbers jump at each
//! restart (it resumes above a reserved mark), so an old number proves no lie. Counting
//! numbers rather than spanning a range keeps those jumps from pushing an author's recent
//! batches out of the window.

use std::collections::{BTreeMap, BTreeSet};

use tally_crypto::{Digest, Signature};

use super::{ATTEST_DOMAIN, BatchHeader, BatchProof, attestation_body};
use crate::{Millis, Signer, ValidatorId, ValidatorSet};

/// The validators asked to attest `header`, in the order they are asked: the author first,
/// then the others from the one after the author, starting at an offset that turns with the
/// batch index (so checking spreads evenly), each exactly once.
pub fn ask_order(validators: &ValidatorSet, header: &BatchHeader) -> Vec<ValidatorId> {
    let n = validators.len() as u64;
    let author = u64::from(header.author.0);
    let mut order = vec![header.author];
    if n > 1 {
        let offset = header.index % (n - 1);
        for j in 0..n - 1 {
            let step = 1 + (offset + j) % (n - 1);
            order.push(ValidatorId(((author + step) % n) as u16));
        }
    }
    order
}

/// The author and the f validators that attest `header` when nobody is slow.
pub fn designated(validators: &ValidatorSet, header: &BatchHeader) -> Vec<ValidatorId> {
    let mut d = ask_order(validators, header);
    d.truncate(validators.weak_quorum());
    d
}

/// What validators send each other about batches (the body travels as bytes the node
/// encodes; this names it by its header).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// The batch with `header` (its body alongside); `attest`: the author asks for an
    /// attestation even if the receiver is not designated.
    Batch { header: BatchHeader, attest: bool },
    /// The sender attests `header`.
    Attestation {
        header: BatchHeader,
        signature: Signature,
    },
}

#[derive(Clone, Debug)]
pub enum DisseminatorInput {
    /// This node made and durably stored a batch.
    Made {
        header: BatchHeader,
    },
    /// A batch frame from `from`, whose body the node decoded and checked against the header.
    Received {
        from: ValidatorId,
        header: BatchHeader,
        attest: bool,
    },
    /// The node stored the body durably and checked every transaction (`valid`).
    Checked {
        header: BatchHeader,
        valid: bool,
    },
    /// An attestation from `from` whose signature the node verified.
    Attested {
        from: ValidatorId,
        header: BatchHeader,
        signature: Signature,
    },
    /// The batches with these headers are in blocks: forget them.
    Committed {
        headers: Vec<BatchHeader>,
    },
    Tick,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DisseminatorOutput {
    /// Send the batch (body and header) to `to` (every other validator when `None`).
    Send {
        to: Option<ValidatorId>,
        frame: Frame,
    },
    /// Check the body of `header` (store it synced, check every transaction) and answer
    /// [`DisseminatorInput::Checked`].
    Check { header: BatchHeader },
    /// One of this node's batches is proven: it may be proposed.
    Proven(BatchProof),
    /// A validator broke the protocol (an author reusing a batch number, an attestation
    /// for a batch nobody asked it about …): for peer scoring and logs.
    Misbehaved {
        by: ValidatorId,
        what: AttestationError,
    },
    /// A batch got no attestation for a reason an honest author can cause (a number below
    /// the window): for metrics only, never for peer scoring.
    Ignored {
        by: ValidatorId,
        what: AttestationError,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestationError {
    #[error("author made two batches numbered {index}")]
    NumberReused { index: u64 },
    #[error("batch number {index} is below the window this node keeps for its author")]
    NumberTooOld { index: u64 },
    #[error("attestation for a batch this node is not collecting")]
    NotCollecting,
    #[error("batch from {from} names another author")]
    NotTheAuthor { from: ValidatorId },
    #[error("batch holds a transaction that fails the validity rule")]
    InvalidBody,
}

struct Own {
    header: BatchHeader,
    asked: usize,
    attestations: BTreeMap<ValidatorId, Signature>,
    last_ask: Millis,
}

pub struct Disseminator {
    me: ValidatorId,
    validators: ValidatorSet,
    signer: Box<dyn Signer>,
    retry_ms: Millis,
    window: u64,
    now: Millis,
    own: BTreeMap<u64, Own>,
    /// Per author: batch number → digest this node attested or is checking.
    seen: Vec<BTreeMap<u64, Digest>>,
    /// Headers being checked that this node will attest when the check passes.
    to_attest: BTreeSet<Digest>,
}

impl Disseminator {
    pub fn new(
        me: ValidatorId,
        validators: ValidatorSet,
        signer: Box<dyn Signer>,
        retry_ms: Millis,
        window: u64,
    ) -> Disseminator {
        Disseminator {
            me,
            seen: vec![BTreeMap::new(); validators.len()],
            validators,
            signer,
            retry_ms,
            window,
            now: 0,
            own: BTreeMap::new(),
            to_attest: BTreeSet::new(),
        }
    }

    /// This node's batches still waiting for their proof.
    pub fn unproven(&self) -> usize {
        self.own.len()
    }

    /// The number of this node's oldest batch still waiting for its proof.
    pub fn lowest_unproven(&self) -> Option<u64> {
        self.own.keys().next().copied()
    }

    /// Everything this state machine holds, in entries (for the memory bound:
    /// unproven own batches × n + per author at most `window` numbers).
    pub fn footprint(&self) -> usize {
        self.own
            .values()
            .map(|o| 1 + o.attestations.len())
            .sum::<usize>()
            + self.seen.iter().map(BTreeMap::len).sum::<usize>()
            + self.to_attest.len()
    }

    pub fn step(
        &mut self,
        now: Millis,
        input: DisseminatorInput,
        out: &mut Vec<DisseminatorOutput>,
    ) {
        self.now = self.now.max(now);
        match input {
            DisseminatorInput::Made { header } => self.on_made(header, out),
            DisseminatorInput::Received {
                from,
                header,
                attest,
            } => self.on_received(from, header, attest, out),
            DisseminatorInput::Checked { header, valid } => self.on_checked(header, valid, out),
            DisseminatorInput::Attested {
                from,
                header,
                signature,
            } => self.on_attested(from, header, signature, out),
            DisseminatorInput::Committed { headers } => {
                for h in headers {
                    if h.author == self.me {
                        self.own.remove(&h.index);
                    }
                }
            }
            DisseminatorInput::Tick => self.on_tick(out),
        }
    }

    fn on_made(&mut self, header: BatchHeader, out: &mut Vec<DisseminatorOutput>) {
        debug_assert_eq!(header.author, self.me);
        out.push(DisseminatorOutput::Send {
            to: None,
            frame: Frame::Batch {
                header,
                attest: false,
            },
        });
        let mut own = Own {
            header,
            asked: self.validators.weak_quorum(),
            attestations: BTreeMap::new(),
            last_ask: self.now,
        };
        let signature = self.signer.sign(ATTEST_DOMAIN, &attestation_body(&header));
        own.attestations.insert(self.me, signature);
        self.own.insert(header.index, own);
        self.try_prove(header.index, out);
    }

    /// Records `(author, index) → digest`; false when the author already used the number
    /// for another batch or it is below the window (the `window` highest numbers seen from
    /// the author: every number above the lowest kept that was ever seen is still kept).
    fn remember(&mut self, header: &BatchHeader, out: &mut Vec<DisseminatorOutput>) -> bool {
        let window = self.window.max(1) as usize;
        let Some(seen) = self.seen.get_mut(header.author.0 as usize) else {
            return false;
        };
        let digest = header.digest();
        match seen.get(&header.index) {
            Some(d) if *d == digest => true,
            Some(_) => {
                out.push(DisseminatorOutput::Misbehaved {
                    by: header.author,
                    what: AttestationError::NumberReused {
                        index: header.index,
                    },
                });
                false
            }
            None => {
                let lowest = seen.keys().next().copied();
                if seen.len() >= window && lowest.is_some_and(|l| header.index < l) {
                    out.push(DisseminatorOutput::Ignored {
                        by: header.author,
                        what: AttestationError::NumberTooOld {
                            index: header.index,
                        },
                    });
                    return false;
                }
                seen.insert(header.index, digest);
                while seen.len() > window {
                    seen.pop_first();
                }
                true
            }
        }
    }

    fn on_received(
        &mut self,
        from: ValidatorId,
        header: BatchHeader,
        attest: bool,
        out: &mut Vec<DisseminatorOutput>,
    ) {
        if from != header.author {
            out.push(DisseminatorOutput::Misbehaved {
                by: from,
                what: AttestationError::NotTheAuthor { from },
            });
            return;
        }
        if header.author == self.me || !self.remember(&header, out) {
            return;
        }
        let wanted = attest || designated(&self.validators, &header).contains(&self.me);
        if wanted && self.to_attest.insert(header.digest()) {
            out.push(DisseminatorOutput::Check { header });
        }
    }

    fn on_checked(&mut self, header: BatchHeader, valid: bool, out: &mut Vec<DisseminatorOutput>) {
        if !self.to_attest.remove(&header.digest()) {
            return;
        }
        if !valid {
            out.push(DisseminatorOutput::Misbehaved {
                by: header.author,
                what: AttestationError::InvalidBody,
            });
            return;
        }
        let signature = self.signer.sign(ATTEST_DOMAIN, &attestation_body(&header));
        out.push(DisseminatorOutput::Send {
            to: Some(header.author),
            frame: Frame::Attestation { header, signature },
        });
    }

    fn on_attested(
        &mut self,
        from: ValidatorId,
        header: BatchHeader,
        signature: Signature,
        out: &mut Vec<DisseminatorOutput>,
    ) {
        match self.own.get_mut(&header.index) {
            Some(own) if own.header == header => {
                own.attestations.insert(from, signature);
                self.try_prove(header.index, out);
            }
            // Late attestations for a proven batch are normal; others are not.
            _ if header.author == self.me => {}
            _ => out.push(DisseminatorOutput::Misbehaved {
                by: from,
                what: AttestationError::NotCollecting,
            }),
        }
    }

    fn try_prove(&mut self, index: u64, out: &mut Vec<DisseminatorOutput>) {
        let need = self.validators.weak_quorum();
        if self
            .own
            .get(&index)
            .is_some_and(|o| o.attestations.len() >= need)
        {
            let own = self.own.remove(&index).expect("present");
            out.push(DisseminatorOutput::Proven(BatchProof {
                header: own.header,
                attestations: own.attestations.into_iter().collect(),
            }));
        }
    }

    fn on_tick(&mut self, out: &mut Vec<DisseminatorOutput>) {
        let (now, retry) = (self.now, self.retry_ms);
        for own in self.own.values_mut() {
            if now.saturating_sub(own.last_ask) < retry {
                continue;
            }
            own.last_ask = now;
            // Ask the next validator not asked yet; when all were, ask again those that
            // have not answered (a frame may have been dropped).
            let order = ask_order(&self.validators, &own.header);
            let targets: Vec<ValidatorId> = if own.asked < order.len() {
                own.asked += 1;
                order[..own.asked].to_vec()
            } else {
                order
            };
            for to in targets {
                if to != self.me && !own.attestations.contains_key(&to) {
                    out.push(DisseminatorOutput::Send {
                        to: Some(to),
                        frame: Frame::Batch {
                            header: own.header,
                            attest: true,
                        },
                    });
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KeySigner;
    use tally_crypto::{ChainId, SecretKey};

    fn setup(n: u8) -> (ValidatorSet, ChainId, Vec<Disseminator>) {
        let keys: Vec<SecretKey> = (1..=n).map(|i| SecretKey::from_seed(&[i; 32])).collect();
        let set =
            ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
        let chain = ChainId::new("dissemination").unwrap();
        let nodes = keys
            .into_iter()
            .enumerate()
            .map(|(i, k)| {
                Disseminator::new(
                    ValidatorId(i as u16),
                    set.clone(),
                    Box::new(KeySigner::new(k, chain.clone())),
                    100,
                    64,
                )
            })
            .collect();
        (set, chain, nodes)
    }

    fn header(author: u16, index: u64, tag: &[u8]) -> BatchHeader {
        BatchHeader {
            author: ValidatorId(author),
            index,
            tx_count: 1,
            bytes: 200,
            tx_digest: Digest::of(tag),
        }
    }

    /// Delivers every output among `nodes` (checks pass unless the validator is in `refuse`)
    /// until nothing moves, skipping validators in `down`. Returns the proofs made.
    fn run(
        nodes: &mut [Disseminator],
        now: Millis,
        first: (usize, DisseminatorInput),
        down: &[usize],
    ) -> Vec<BatchProof> {
        let mut queue = vec![first];
        let mut proofs = Vec::new();
        while let Some((at, input)) = queue.pop() {
            if down.contains(&at) {
                continue;
            }
            let mut out = Vec::new();
            nodes[at].step(now, input, &mut out);
            for o in out {
                match o {
                    DisseminatorOutput::Send { to, frame } => {
                        let targets: Vec<usize> = match to {
                            Some(t) => vec![t.0 as usize],
                            None => (0..nodes.len()).filter(|&i| i != at).collect(),
                        };
                        for t in targets {
                            let input = match &frame {
                                Frame::Batch { header, attest } => DisseminatorInput::Received {
                                    from: ValidatorId(at as u16),
                                    header: *header,
                                    attest: *attest,
                                },
                                Frame::Attestation { header, signature } => {
                                    DisseminatorInput::Attested {
                                        from: ValidatorId(at as u16),
                                        header: *header,
                                        signature: *signature,
                                    }
                                }
                            };
                            queue.push((t, input));
                        }
                    }
                    DisseminatorOutput::Check { header } => queue.push((
                        at,
                        DisseminatorInput::Checked {
                            header,
                            valid: true,
                        },
                    )),
                    DisseminatorOutput::Proven(p) => proofs.push(p),
                    DisseminatorOutput::Misbehaved { .. } | DisseminatorOutput::Ignored { .. } => {}
                }
            }
        }
        proofs
    }

    #[test]
    fn designated_attesters_prove_a_batch_without_being_asked() {
        let (set, chain, mut nodes) = setup(4);
        let h = header(2, 0, b"a");
        let proofs = run(
            &mut nodes,
            0,
            (2, DisseminatorInput::Made { header: h }),
            &[],
        );
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].verify(&set, &chain), Ok(()));
        assert_eq!(proofs[0].holders().collect::<Vec<_>>(), {
            let mut d = designated(&set, &h);
            d.sort();
            d
        });
        assert_eq!(nodes[2].unproven(), 0);
    }

    #[test]
    fn a_silent_designated_attester_is_replaced_after_a_retry() {
        let (set, chain, mut nodes) = setup(7);
        let h = header(0, 5, b"b");
        let silent: Vec<usize> = designated(&set, &h)[1..]
            .iter()
            .map(|v| v.0 as usize)
            .collect();
        assert_eq!(silent.len(), 2);
        // Both designated attesters are down: no proof yet.
        let proofs = run(
            &mut nodes,
            0,
            (0, DisseminatorInput::Made { header: h }),
            &silent,
        );
        assert!(proofs.is_empty());
        // Each retry asks one more validator in the rotated order.
        let mut proofs = Vec::new();
        for round in 1..=4 {
            proofs = run(
                &mut nodes,
                100 * round,
                (0, DisseminatorInput::Tick),
                &silent,
            );
            if !proofs.is_empty() {
                assert_eq!(round, 2, "two more validators asked after two retries");
                break;
            }
        }
        assert_eq!(proofs.len(), 1);
        assert_eq!(proofs[0].verify(&set, &chain), Ok(()));
        assert!(
            proofs[0]
                .holders()
                .all(|v| !silent.contains(&(v.0 as usize)))
        );
    }

    #[test]
    fn an_author_reusing_a_number_gets_only_the_first_batch_attested() {
        let (set, _, mut nodes) = setup(4);
        let (first, second) = (header(1, 3, b"first"), header(1, 3, b"second"));
        let attester = designated(&set, &first)[1];
        let a = attester.0 as usize;
        let mut out = Vec::new();
        nodes[a].step(
            0,
            DisseminatorInput::Received {
                from: ValidatorId(1),
                header: first,
                attest: false,
            },
            &mut out,
        );
        assert_eq!(out, vec![DisseminatorOutput::Check { header: first }]);
        out.clear();
        nodes[a].step(
            0,
            DisseminatorInput::Received {
                from: ValidatorId(1),
                header: second,
                attest: true,
            },
            &mut out,
        );
        assert_eq!(
            out,
            vec![DisseminatorOutput::Misbehaved {
                by: ValidatorId(1),
                what: AttestationError::NumberReused { index: 3 }
            }]
        );
        // A relayed batch (sender is not the author) is refused.
        out.clear();
        nodes[a].step(
            0,
            DisseminatorInput::Received {
                from: ValidatorId(2),
                header: header(1, 4, b"x"),
                attest: true,
            },
            &mut out,
        );
        assert!(matches!(
            out[..],
            [DisseminatorOutput::Misbehaved {
                by: ValidatorId(2),
                ..
            }]
        ));
    }

    #[test]
    fn what_an_attester_remembers_stays_within_the_window() {
        let (_, _, mut nodes) = setup(4);
        let mut out = Vec::new();
        for index in 0..10_000u64 {
            nodes[3].step(
                0,
                DisseminatorInput::Received {
                    from: ValidatorId(0),
                    header: header(0, index, &index.to_le_bytes()),
                    attest: false,
                },
                &mut out,
            );
        }
        assert!(nodes[3].seen[0].len() <= 64, "{}", nodes[3].seen[0].len());
        // A number far below the window gets no attestation, and is no offence.
        out.clear();
        nodes[3].step(
            0,
            DisseminatorInput::Received {
                from: ValidatorId(0),
                header: header(0, 5, b"old"),
                attest: true,
            },
            &mut out,
        );
        assert!(matches!(
            out[..],
            [DisseminatorOutput::Ignored {
                what: AttestationError::NumberTooOld { index: 5 },
                ..
            }]
        ));
    }

    /// An honest author resumes above a reserved mark after each restart and resends the
    /// batches it stored: numbers that jump far ahead must not push its older batches out of
    /// an attester's window, nor make their resending look like a lie.
    #[test]
    fn an_author_restarting_with_jumps_in_its_numbers_is_no_liar() {
        let (_, _, mut nodes) = setup(4);
        let mut out = Vec::new();
        // Before its restarts, the author made batch 7; then ten lives, each 10,000 higher.
        let old = header(0, 7, b"before the restarts");
        let mut sent = vec![old];
        for life in 1..=10u64 {
            sent.push(header(0, 7 + life * 10_000, &life.to_le_bytes()));
        }
        // Resent after the last restart: the old one again, then the newest again.
        sent.push(old);
        sent.push(*sent.last().unwrap());
        for (i, h) in sent.iter().enumerate() {
            nodes[3].step(
                i as u64,
                DisseminatorInput::Received {
                    from: ValidatorId(0),
                    header: *h,
                    attest: true,
                },
                &mut out,
            );
        }
        let reported: Vec<_> = out
            .iter()
            .filter(|o| {
                matches!(
                    o,
                    DisseminatorOutput::Misbehaved { .. } | DisseminatorOutput::Ignored { .. }
                )
            })
            .collect();
        assert!(reported.is_empty(), "{reported:?}");
        // Each distinct batch is checked once (the resent ones are already being checked).
        let checks = out
            .iter()
            .filter(|o| matches!(o, DisseminatorOutput::Check { .. }))
            .count();
        assert_eq!(checks, 11);
        assert!(nodes[3].seen[0].len() <= 64);
    }

    #[test]
    fn an_invalid_body_gets_no_attestation() {
        let (set, _, mut nodes) = setup(4);
        let h = header(0, 0, b"bad");
        let a = designated(&set, &h)[1].0 as usize;
        let mut out = Vec::new();
        nodes[a].step(
            0,
            DisseminatorInput::Received {
                from: ValidatorId(0),
                header: h,
                attest: false,
            },
            &mut out,
        );
        out.clear();
        nodes[a].step(
            0,
            DisseminatorInput::Checked {
                header: h,
                valid: false,
            },
            &mut out,
        );
        assert!(
            out.iter()
                .all(|o| !matches!(o, DisseminatorOutput::Send { .. }))
        );
    }
}
