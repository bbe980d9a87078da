//! The proposer: phase 1 once per leadership, phase 2 per slot, heartbeats and the lease.

use super::*;

impl Paxos {
    pub(super) fn tick(&mut self, now: Millis, out: &mut Vec<PaxosOutput>) {
        if self.election_deadline == 0 {
            self.reset_election_timer(now);
        }
        match self.role {
            Role::Leader => {
                if now >= self.next_heartbeat {
                    self.next_heartbeat = now + self.cfg.heartbeat_ms;
                    self.heartbeat(now, out);
                }
                if (self.open.len() as u64) < self.cfg.max_open {
                    out.push(PaxosOutput::RequestBatch);
                }
            }
            Role::Follower | Role::Preparing => {
                if now >= self.election_deadline {
                    self.start_phase1(now, out);
                }
            }
        }
    }

    fn start_phase1(&mut self, now: Millis, out: &mut Vec<PaxosOutput>) {
        self.reset_election_timer(now);
        let round = self.highest_seen.round.max(self.promised.round) + 1;
        self.ballot = Ballot {
            round,
            node: self.me,
        };
        self.role = Role::Preparing;
        self.leader = None;
        self.promises.clear();
        self.open.clear();
        out.push(PaxosOutput::Event(PaxosEvent::Phase1Started {
            ballot: self.ballot,
        }));
        let from_slot = self.commit + 1;
        // This replica's own acceptor promises last (`maybe_finish_phase1`), once the others'
        // promises would make a quorum with it: an election that fails leaves its promise
        // where it was, so when it hears the leader again it follows rather than refusing the
        // leader's messages (which would depose a leader a quorum follows — the Multi-Paxos
        // counterpart of Raft's disruptive rejoining node, which pre-vote prevents).
        for to in self.peers() {
            self.send(
                to,
                Body::Prepare {
                    ballot: self.ballot,
                    from_slot,
                },
                out,
            );
        }
        self.maybe_finish_phase1(now, out);
    }

    pub(super) fn on_promise(
        &mut self,
        now: Millis,
        from: ValidatorId,
        ballot: Ballot,
        base: Slot,
        accepted: AcceptedValues,
        out: &mut Vec<PaxosOutput>,
    ) {
        if self.role != Role::Preparing || ballot != self.ballot {
            return;
        }
        self.promises.insert(from, (base, accepted));
        self.maybe_finish_phase1(now, out);
    }

    /// With `q1` promises: catch up first if some acceptor executed past what this replica
    /// knows chosen (its promise no longer lists those slots); then re-propose, in this
    /// ballot, the highest-ballot value each open slot was accepted with, no-ops in the gaps.
    pub(super) fn maybe_finish_phase1(&mut self, now: Millis, out: &mut Vec<PaxosOutput>) {
        if self.role != Role::Preparing {
            return;
        }
        // This replica is one of the acceptors, under the same rules as the others.
        if !self.promises.contains_key(&self.me)
            && self.promises.len() + 1 >= self.cfg.q1
            && self.may_promise(now, self.ballot)
        {
            let ballot = self.ballot;
            self.highest_seen = self.highest_seen.max(ballot);
            self.promised = ballot;
            out.push(PaxosOutput::Persist(Record::Promise { ballot }));
            let accepted = self
                .accepted
                .range(self.commit + 1..)
                .map(|(s, (b, p))| (*s, *b, p.clone()))
                .collect();
            self.promises
                .insert(self.me, (self.base.max(self.executed), accepted));
        }
        if self.promises.len() < self.cfg.q1 {
            return;
        }
        let (far, base) = self
            .promises
            .iter()
            .map(|(v, (b, _))| (*v, *b))
            .max_by_key(|(_, b)| *b)
            .expect("q1 ≥ 1 promises");
        if base > self.commit {
            if self.fetching.is_none() && far != self.me {
                self.fetching = Some(base);
                out.push(PaxosOutput::FetchState {
                    slot: base,
                    from: far,
                });
            }
            return;
        }
        let mut values: BTreeMap<Slot, (Ballot, Payload)> = BTreeMap::new();
        for (_, accepted) in self.promises.values() {
            for (slot, b, p) in accepted {
                if *slot <= self.commit {
                    continue;
                }
                if values.get(slot).is_none_or(|(vb, _)| b > vb) {
                    values.insert(*slot, (*b, p.clone()));
                }
            }
        }
        self.role = Role::Leader;
        self.leader = Some(self.me);
        self.promises.clear();
        self.lease_until = 0;
        self.quorum_heard_at = None;
        self.heartbeats.clear();
        out.push(PaxosOutput::Event(PaxosEvent::BecameLeader {
            ballot: self.ballot,
        }));
        let last = values.keys().next_back().copied().unwrap_or(self.commit);
        self.next_slot = self.commit + 1;
        for slot in self.commit + 1..=last {
            let payload = match values.remove(&slot) {
                Some((_, p)) => p,
                None => self.signed(slot, Value::Noop),
            };
            self.propose_at(slot, payload, out);
        }
        self.next_slot = last + 1;
        self.next_heartbeat = now + self.cfg.heartbeat_ms;
        self.heartbeat(now, out);
    }

    pub(super) fn propose(&mut self, value: Value, out: &mut Vec<PaxosOutput>) {
        if self.role != Role::Leader || self.open.len() as u64 >= self.cfg.max_open {
            return;
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        let payload = self.signed(slot, value);
        self.propose_at(slot, payload, out);
    }

    /// `value`, proposed by this leader for `slot` in its ballot, with its signature.
    fn signed(&self, slot: Slot, value: Value) -> Payload {
        let signature = match &self.signer {
            Some(signer) => signer.sign(
                crate::LEADER_COMMIT_DOMAIN,
                &crate::commit_body(
                    crate::View(self.ballot.round),
                    crate::Seq(slot),
                    &value.batch().digest(),
                ),
            ),
            None => tally_crypto::Signature([0; 64]),
        };
        Payload {
            value,
            proposer: self.ballot,
            signature,
        }
    }

    /// Phase 2 for `slot`: accept locally (durably), then ask every other acceptor.
    fn propose_at(&mut self, slot: Slot, payload: Payload, out: &mut Vec<PaxosOutput>) {
        let ballot = self.ballot;
        self.accepted.insert(slot, (ballot, payload.clone()));
        out.push(PaxosOutput::Persist(Record::Accept {
            slot,
            ballot,
            payload: payload.clone(),
        }));
        let mut voters = BTreeSet::new();
        voters.insert(self.me);
        self.open.insert(slot, (payload.clone(), voters));
        self.send_accepts(slot, &payload, out);
        self.maybe_chosen(slot, out);
    }

    fn send_accepts(&self, slot: Slot, payload: &Payload, out: &mut Vec<PaxosOutput>) {
        for to in self.peers() {
            self.send(
                to,
                Body::Accept {
                    ballot: self.ballot,
                    slot,
                    payload: payload.clone(),
                    commit: self.commit,
                },
                out,
            );
        }
    }

    pub(super) fn on_accepted(
        &mut self,
        from: ValidatorId,
        ballot: Ballot,
        slot: Slot,
        out: &mut Vec<PaxosOutput>,
    ) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        if let Some((_, voters)) = self.open.get_mut(&slot) {
            voters.insert(from);
            self.maybe_chosen(slot, out);
        }
    }

    fn maybe_chosen(&mut self, slot: Slot, out: &mut Vec<PaxosOutput>) {
        let Some((payload, voters)) = self.open.get(&slot) else {
            return;
        };
        if voters.len() >= self.cfg.q2 {
            let payload = payload.clone();
            self.open.remove(&slot);
            self.chosen.insert(slot, payload);
            self.advance_commit(out);
        }
    }

    /// Heartbeats carry the commit index and ask for lease acknowledgements; open slots are
    /// proposed again (their accepts or replies may be lost).
    fn heartbeat(&mut self, now: Millis, out: &mut Vec<PaxosOutput>) {
        self.heartbeat_seq += 1;
        let seq = self.heartbeat_seq;
        let mut acks = BTreeSet::new();
        acks.insert(self.me);
        self.heartbeats.insert(seq, (now, acks));
        // Only recent heartbeats can still extend the lease.
        while self.heartbeats.len() > 16 {
            self.heartbeats.pop_first();
        }
        for to in self.peers() {
            self.send(
                to,
                Body::Heartbeat {
                    ballot: self.ballot,
                    commit: self.commit,
                    seq,
                },
                out,
            );
        }
        let open: Vec<(Slot, Payload)> = self
            .open
            .iter()
            .map(|(s, (p, _))| (*s, p.clone()))
            .collect();
        for (slot, payload) in open {
            self.send_accepts(slot, &payload, out);
        }
        self.on_heartbeat_ack(self.me, self.ballot, seq);
    }

    pub(super) fn on_heartbeat_ack(&mut self, from: ValidatorId, ballot: Ballot, seq: u64) {
        if self.role != Role::Leader || ballot != self.ballot {
            return;
        }
        let Some((sent, acks)) = self.heartbeats.get_mut(&seq) else {
            return;
        };
        acks.insert(from);
        // Acknowledged by a member of every phase-1 quorum.
        if acks.len() > self.n - self.cfg.q1 {
            let until = *sent + self.cfg.lease_ms * (1000 - self.cfg.drift_per_mille) / 1000;
            self.lease_until = self.lease_until.max(until);
            self.quorum_heard_at = Some(self.quorum_heard_at.map_or(*sent, |t| t.max(*sent)));
        }
    }

    pub(super) fn on_nack(
        &mut self,
        now: Millis,
        ballot: Ballot,
        promised: Ballot,
        out: &mut Vec<PaxosOutput>,
    ) {
        if ballot != self.ballot || promised <= self.ballot {
            return;
        }
        if promised.node == self.me && self.role != Role::Follower {
            // A ballot of this replica's own, from an election it started before it restarted
            // (never finished, so never persisted here), holds that acceptor's promise: it
            // would refuse this replica's messages for ever. Run phase 1 again above it; the
            // acceptors that follow this replica promise it (same node), and the open values
            // are recovered from its own acceptances.
            self.highest_seen = self.highest_seen.max(promised);
            self.start_phase1(now, out);
            return;
        }
        self.see(now, promised, out);
    }

    pub(super) fn on_need_chosen(
        &mut self,
        from: ValidatorId,
        from_slot: Slot,
        out: &mut Vec<PaxosOutput>,
    ) {
        if from_slot <= self.base {
            let slot = self.base;
            return self.send(from, Body::CatchUp { slot }, out);
        }
        if !self.chosen.contains_key(&from_slot) {
            // Not held in memory (this replica restarted since, and executed them): the
            // chain has them.
            if self.executed >= from_slot {
                let slot = self.executed;
                self.send(from, Body::CatchUp { slot }, out);
            }
            return;
        }
        let entries: Vec<(Slot, Payload)> = self
            .chosen
            .range(from_slot..)
            .take(self.cfg.max_entries)
            .map(|(s, p)| (*s, p.clone()))
            .collect();
        self.send(from, Body::Chosen { entries }, out);
    }
}
