//! Multi-Paxos (Lamport, "Paxos Made Simple", 2001) with flexible quorums (Howard, Malkhi and
//! Spiegelman, "Flexible Paxos", 2016) and a leader lease, as a pure state machine: no I/O, no
//! clock, no randomness (each tick carries the driver's entropy).
//!
//! Every replica is an acceptor and a learner; one at a time leads. A leader runs phase 1
//! once, for every slot it does not know chosen, with a ballot `(round, node)` above any it
//! saw; then phase 2 per slot, pipelined. Slots that phase 1 found empty are filled with
//! no-ops. Phase-1 quorums have `q1` acceptors, phase-2 quorums `q2`, and `q1 + q2 > n` makes
//! every phase-1 quorum meet every phase-2 quorum — the only intersection Paxos needs
//! ([`PaxosConfig::check`] refuses anything else).
//!
//! **The lease.** An acceptor that acknowledges a leader's heartbeat promises no other
//! proposer for `lease_ms` of its own clock (and one that restarts promises nobody for
//! `lease_ms`, since it forgot whom it acknowledged). A leader whose heartbeat, sent at `t`,
//! was acknowledged by `n − q1 + 1` acceptors (itself included) — so by a member of every
//! phase-1 quorum — holds the lease until `t + lease_ms · (1 − drift)` on its clock: no other
//! leader can complete phase 1 before then, so none can choose anything, and the leader may
//! answer reads from its own state ([`Paxos::lease_valid`]). `drift` bounds how much faster
//! or slower one replica's clock may run than another's (documented in
//! `docs/consensus.md`).

pub mod messages;
mod proposer;
pub mod storage;

use std::collections::{BTreeMap, BTreeSet};

pub use messages::{AcceptedValues, Ballot, Body, Durable, Message, Payload, Record, Slot, Value};

use crate::protocol::Millis;
use crate::{Batch, Signer, ValidatorId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PaxosConfig {
    /// A follower that has not heard a leader for a timeout drawn from
    /// `[election_ms, 2 · election_ms)` runs phase 1. Above `lease_ms`.
    pub election_ms: Millis,
    pub heartbeat_ms: Millis,
    pub q1: usize,
    pub q2: usize,
    pub lease_ms: Millis,
    /// The clock-drift bound, in parts per thousand.
    pub drift_per_mille: u64,
    /// Slots a leader holds open (proposed, not known chosen) before it stops asking for
    /// batches.
    pub max_open: u64,
    /// Values per `Chosen` message.
    pub max_entries: usize,
    /// Executed slots kept (for followers slightly behind) before compaction.
    pub keep_executed: u64,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuorumError {
    #[error("q1 = {q1} and q2 = {q2} must each be between 1 and n = {n}")]
    OutOfRange { q1: usize, q2: usize, n: usize },
    #[error("q1 + q2 = {} must exceed n = {n}, or a phase-1 quorum can miss a chosen value", q1 + q2)]
    NoIntersection { q1: usize, q2: usize, n: usize },
    #[error(
        "election_ms must exceed lease_ms, or followers elect a new leader inside the old one's lease"
    )]
    LeaseTooLong,
}

impl PaxosConfig {
    /// Majority quorums for `n`, with the defaults of the other settings.
    pub fn majorities(n: usize) -> PaxosConfig {
        PaxosConfig {
            election_ms: 1_000,
            heartbeat_ms: 100,
            q1: n / 2 + 1,
            q2: n / 2 + 1,
            lease_ms: 500,
            drift_per_mille: 100,
            max_open: 256,
            max_entries: 64,
            keep_executed: 1_024,
        }
    }

    /// The quorum rule (`q1 + q2 > n`) and the lease's bound.
    pub fn check(&self, n: usize) -> Result<(), QuorumError> {
        let (q1, q2) = (self.q1, self.q2);
        if q1 == 0 || q2 == 0 || q1 > n || q2 > n {
            return Err(QuorumError::OutOfRange { q1, q2, n });
        }
        if q1 + q2 <= n {
            return Err(QuorumError::NoIntersection { q1, q2, n });
        }
        if self.election_ms <= self.lease_ms {
            return Err(QuorumError::LeaseTooLong);
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub enum PaxosInput {
    Message(Message),
    Tick {
        entropy: u64,
    },
    Propose(Batch),
    /// The driver executed (durably) every chosen slot up to `slot`.
    Executed {
        slot: Slot,
    },
    /// The driver brought the chain to `slot` by block sync.
    CaughtUp {
        slot: Slot,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaxosOutput {
    Persist(Record),
    Send {
        to: ValidatorId,
        msg: Message,
    },
    /// `slot` is chosen with `payload`: execute, in slot order.
    Commit {
        slot: Slot,
        payload: Payload,
    },
    RequestBatch,
    FetchState {
        slot: Slot,
        from: ValidatorId,
    },
    Event(PaxosEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PaxosEvent {
    Phase1Started {
        ballot: Ballot,
    },
    BecameLeader {
        ballot: Ballot,
    },
    /// A higher ballot was seen: this replica follows it.
    Preempted {
        by: Ballot,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    /// Running phase 1 with `ballot`.
    Preparing,
    Leader,
}

pub struct Paxos {
    cfg: PaxosConfig,
    me: ValidatorId,
    n: usize,
    // Acceptor.
    promised: Ballot,
    accepted: BTreeMap<Slot, (Ballot, Payload)>,
    base: Slot,
    /// No promise to another proposer before this (the lease given to a leader, or the
    /// restart guard).
    lease_given_until: Millis,
    lease_given_to: Option<Ballot>,
    /// When this replica last heard a leader (other than itself), and which: it promises no
    /// other proposer within `election_ms` of that (leader stickiness, as Raft's pre-vote).
    heard_leader: Option<(Millis, ValidatorId)>,
    // Learner.
    chosen: BTreeMap<Slot, Payload>,
    commit: Slot,
    committed_out: Slot,
    executed: Slot,
    // Proposer.
    role: Role,
    ballot: Ballot,
    highest_seen: Ballot,
    leader: Option<ValidatorId>,
    promises: BTreeMap<ValidatorId, (Slot, AcceptedValues)>,
    /// Open slots: the value proposed and who accepted it.
    open: BTreeMap<Slot, (Payload, BTreeSet<ValidatorId>)>,
    next_slot: Slot,
    election_deadline: Millis,
    next_heartbeat: Millis,
    heartbeat_seq: u64,
    heartbeats: BTreeMap<u64, (Millis, BTreeSet<ValidatorId>)>,
    lease_until: Millis,
    /// As leader: when the latest heartbeat a phase-1 quorum acknowledged was sent. A leader
    /// that heard from a quorum within `election_ms` promises no rival (check-quorum).
    quorum_heard_at: Option<Millis>,
    entropy: u64,
    fetching: Option<Slot>,
    /// Signs the values this replica proposes as leader (their commit proofs); `None` in the
    /// simulator.
    signer: Option<Box<dyn Signer>>,
}

impl Paxos {
    /// A replica starting from its durable state, with its chain executed up to `executed`,
    /// at time `now` (it promises nobody for `lease_ms` from there).
    pub fn new(
        cfg: PaxosConfig,
        me: ValidatorId,
        validators: usize,
        durable: Durable,
        executed: Slot,
        now: Millis,
        signer: Option<Box<dyn Signer>>,
    ) -> Paxos {
        let commit = executed.max(durable.base);
        Paxos {
            lease_given_until: now + cfg.lease_ms,
            cfg,
            me,
            n: validators,
            promised: durable.promised,
            accepted: durable.accepted,
            base: durable.base,
            lease_given_to: None,
            heard_leader: None,
            quorum_heard_at: None,
            chosen: BTreeMap::new(),
            commit,
            committed_out: commit,
            executed,
            role: Role::Follower,
            ballot: Ballot::default(),
            highest_seen: durable.promised,
            leader: None,
            promises: BTreeMap::new(),
            open: BTreeMap::new(),
            next_slot: commit + 1,
            election_deadline: 0,
            next_heartbeat: 0,
            heartbeat_seq: 0,
            heartbeats: BTreeMap::new(),
            lease_until: 0,
            entropy: 0x2545_F491_4F6C_DD1D ^ me.0 as u64,
            fetching: None,
            signer,
        }
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    pub fn promised(&self) -> Ballot {
        self.promised
    }

    pub fn commit_index(&self) -> Slot {
        self.commit
    }

    pub fn leader(&self) -> Option<ValidatorId> {
        self.leader
    }

    /// This replica leads and holds the lease at `now`: it may answer reads from its own
    /// state without a round trip.
    pub fn lease_valid(&self, now: Millis) -> bool {
        self.role == Role::Leader && now < self.lease_until
    }

    /// Until when (this replica's clock) it may answer reads from its own state: `Some` only
    /// while it leads, holds the lease, and has executed every slot it knows chosen (so its
    /// state reflects everything chosen by anyone: no other leader can choose before then).
    pub fn lease_expiry(&self, now: Millis) -> Option<Millis> {
        (self.lease_valid(now) && self.executed >= self.commit).then_some(self.lease_until)
    }

    /// The value this replica holds for `slot`: chosen, or accepted.
    pub fn value_at(&self, slot: Slot) -> Option<&Payload> {
        self.chosen
            .get(&slot)
            .or_else(|| self.accepted.get(&slot).map(|(_, p)| p))
    }

    /// Values held (accepted or chosen), and the digests they name together.
    pub fn held(&self) -> (usize, usize) {
        let count = |p: &Payload| match &p.value {
            Value::Batch(b) => b.txs.len(),
            Value::Noop => 0,
        };
        let a = self.accepted.values().map(|(_, p)| count(p)).sum::<usize>();
        let c = self.chosen.values().map(count).sum::<usize>();
        (self.accepted.len() + self.chosen.len(), a + c)
    }

    /// The slot a block sync under way is bringing the chain to.
    pub fn fetching(&self) -> Option<Slot> {
        self.fetching
    }

    /// Every slot up to here is executed and dropped.
    pub fn base(&self) -> Slot {
        self.base
    }

    pub fn config(&self) -> &PaxosConfig {
        &self.cfg
    }

    /// The open slots' proposed values (a driver avoids proposing them twice).
    pub fn open_payloads(&self) -> impl Iterator<Item = &Payload> {
        self.open.values().map(|(p, _)| p)
    }

    fn send(&self, to: ValidatorId, body: Body, out: &mut Vec<PaxosOutput>) {
        out.push(PaxosOutput::Send {
            to,
            msg: Message {
                from: self.me,
                body,
            },
        });
    }

    fn peers(&self) -> impl Iterator<Item = ValidatorId> + use<> {
        let me = self.me;
        (0..self.n as u16)
            .map(ValidatorId)
            .filter(move |v| *v != me)
    }

    fn reset_election_timer(&mut self, now: Millis) {
        self.election_deadline = now
            + crate::entropy::election_timeout(
                &mut self.entropy,
                self.cfg.election_ms,
                2 * self.cfg.election_ms,
            );
    }

    pub fn step(&mut self, now: Millis, input: PaxosInput, out: &mut Vec<PaxosOutput>) {
        match input {
            PaxosInput::Tick { entropy } => {
                self.entropy ^= entropy;
                self.tick(now, out);
            }
            PaxosInput::Message(msg) => {
                if msg.from != self.me && (msg.from.0 as usize) < self.n {
                    self.on_message(now, msg, out);
                }
            }
            PaxosInput::Propose(batch) => self.propose(Value::Batch(batch), out),
            PaxosInput::Executed { slot } => self.on_executed(slot, out),
            PaxosInput::CaughtUp { slot } => self.on_caught_up(now, slot, out),
        }
    }

    fn on_message(&mut self, now: Millis, msg: Message, out: &mut Vec<PaxosOutput>) {
        let from = msg.from;
        match msg.body {
            Body::Prepare { ballot, from_slot } => {
                self.on_prepare(now, from, ballot, from_slot, out)
            }
            Body::Accept {
                ballot,
                slot,
                payload,
                commit,
            } => self.on_accept(now, from, ballot, slot, payload, commit, out),
            Body::Heartbeat {
                ballot,
                commit,
                seq,
            } => self.on_heartbeat(now, from, ballot, commit, seq, out),
            Body::Promise {
                ballot,
                base,
                accepted,
            } => self.on_promise(now, from, ballot, base, accepted, out),
            Body::Accepted { ballot, slot } => self.on_accepted(from, ballot, slot, out),
            Body::HeartbeatAck { ballot, seq } => self.on_heartbeat_ack(from, ballot, seq),
            Body::Nack { ballot, promised } => self.on_nack(now, ballot, promised, out),
            Body::NeedChosen { from_slot } => self.on_need_chosen(from, from_slot, out),
            Body::Chosen { entries } => self.on_chosen(entries, out),
            Body::CatchUp { slot } => {
                if slot > self.commit && self.fetching.is_none_or(|f| f < slot) {
                    self.fetching = Some(slot);
                    out.push(PaxosOutput::FetchState { slot, from });
                }
            }
        }
    }

    // ---- acceptor ----

    /// May this acceptor promise `ballot` at `now`? Not while it holds a lease for another
    /// leader (or just restarted); nor, for another proposer, while it heard a live leader
    /// within `election_ms` or leads with a quorum heard within it. A replica that cannot
    /// hear the leader but still reaches the others (a one-way or partial partition) must not
    /// depose a leader a quorum follows; once the leader is really gone, every replica stops
    /// hearing it and promises again after `election_ms`.
    fn may_promise(&self, now: Millis, ballot: Ballot) -> bool {
        if ballot == self.promised && ballot != Ballot::default() {
            // A repeated prepare: the promise stands.
            return true;
        }
        if ballot.node != self.me {
            let sticky = self.heard_leader.is_some_and(|(at, leader)| {
                leader != ballot.node && now < at + self.cfg.election_ms
            });
            let leading = self.role == Role::Leader
                && self
                    .quorum_heard_at
                    .is_some_and(|at| now < at + self.cfg.election_ms);
            if sticky || leading {
                return false;
            }
        }
        ballot > self.promised
            && (now >= self.lease_given_until
                || self.lease_given_to.is_some_and(|b| b.node == ballot.node))
    }

    fn see(&mut self, now: Millis, ballot: Ballot, out: &mut Vec<PaxosOutput>) {
        if ballot > self.highest_seen {
            self.highest_seen = ballot;
        }
        if ballot > self.ballot && self.role != Role::Follower && ballot.node != self.me {
            self.role = Role::Follower;
            self.open.clear();
            self.promises.clear();
            self.lease_until = 0;
            out.push(PaxosOutput::Event(PaxosEvent::Preempted { by: ballot }));
            self.reset_election_timer(now);
        }
    }

    fn on_prepare(
        &mut self,
        now: Millis,
        from: ValidatorId,
        ballot: Ballot,
        from_slot: Slot,
        out: &mut Vec<PaxosOutput>,
    ) {
        if !self.may_promise(now, ballot) {
            let promised = self.promised;
            return self.send(from, Body::Nack { ballot, promised }, out);
        }
        self.see(now, ballot, out);
        self.promised = ballot;
        out.push(PaxosOutput::Persist(Record::Promise { ballot }));
        let accepted = self
            .accepted
            .range(from_slot.max(self.base + 1)..)
            .map(|(s, (b, p))| (*s, *b, p.clone()))
            .collect();
        self.reset_election_timer(now);
        let base = self.base.max(self.executed);
        self.send(
            from,
            Body::Promise {
                ballot,
                base,
                accepted,
            },
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn on_accept(
        &mut self,
        now: Millis,
        from: ValidatorId,
        ballot: Ballot,
        slot: Slot,
        payload: Payload,
        commit: Slot,
        out: &mut Vec<PaxosOutput>,
    ) {
        if !self.hear_leader(now, from, ballot, out) {
            return;
        }
        if slot > self.base {
            self.promised = ballot;
            self.accepted.insert(slot, (ballot, payload.clone()));
            out.push(PaxosOutput::Persist(Record::Accept {
                slot,
                ballot,
                payload,
            }));
        } else if ballot > self.promised {
            // An executed slot: nothing to store but the promise the reply implies.
            self.promised = ballot;
            out.push(PaxosOutput::Persist(Record::Promise { ballot }));
        }
        self.send(from, Body::Accepted { ballot, slot }, out);
        self.learn_commit(from, ballot, commit, out);
    }

    fn on_heartbeat(
        &mut self,
        now: Millis,
        from: ValidatorId,
        ballot: Ballot,
        commit: Slot,
        seq: u64,
        out: &mut Vec<PaxosOutput>,
    ) {
        if !self.hear_leader(now, from, ballot, out) {
            return;
        }
        // The lease: no promise to anyone else for lease_ms of this clock.
        self.lease_given_until = self.lease_given_until.max(now + self.cfg.lease_ms);
        self.lease_given_to = Some(ballot);
        self.send(from, Body::HeartbeatAck { ballot, seq }, out);
        self.learn_commit(from, ballot, commit, out);
    }

    /// A leader's accept or heartbeat in `ballot`: refused (NACK) below this acceptor's
    /// promise; otherwise this replica follows that leader.
    fn hear_leader(
        &mut self,
        now: Millis,
        from: ValidatorId,
        ballot: Ballot,
        out: &mut Vec<PaxosOutput>,
    ) -> bool {
        if ballot < self.promised {
            let promised = self.promised;
            self.send(from, Body::Nack { ballot, promised }, out);
            return false;
        }
        self.see(now, ballot, out);
        if ballot.node != self.me {
            if self.role == Role::Preparing {
                // A live leader this replica may follow: its own election is abandoned.
                self.role = Role::Follower;
                self.promises.clear();
            }
            self.leader = Some(ballot.node);
            self.heard_leader = Some((now, ballot.node));
            self.reset_election_timer(now);
        }
        true
    }

    /// The leader of `ballot` knows every slot up to `commit` chosen: those this acceptor
    /// accepted in `ballot` are the chosen values; a gap is asked for.
    fn learn_commit(
        &mut self,
        leader: ValidatorId,
        ballot: Ballot,
        commit: Slot,
        out: &mut Vec<PaxosOutput>,
    ) {
        let mut gap = false;
        for slot in self.commit + 1..=commit {
            if self.chosen.contains_key(&slot) {
                continue;
            }
            match self.accepted.get(&slot) {
                Some((b, p)) if *b == ballot => {
                    self.chosen.insert(slot, p.clone());
                }
                _ => gap = true,
            }
        }
        self.advance_commit(out);
        if gap && self.fetching.is_none() {
            let from_slot = self.commit + 1;
            self.send(leader, Body::NeedChosen { from_slot }, out);
        }
    }

    fn on_chosen(&mut self, entries: Vec<(Slot, Payload)>, out: &mut Vec<PaxosOutput>) {
        for (slot, payload) in entries {
            if slot > self.commit {
                self.chosen.insert(slot, payload);
            }
        }
        self.advance_commit(out);
    }

    /// Executes (outputs) chosen slots in order, as far as they are contiguous.
    fn advance_commit(&mut self, out: &mut Vec<PaxosOutput>) {
        if self.fetching.is_some() {
            // Block sync is executing these slots; commits resume after it.
            return;
        }
        while let Some(payload) = self.chosen.get(&(self.commit + 1)) {
            self.commit += 1;
            let slot = self.commit;
            if slot > self.committed_out {
                out.push(PaxosOutput::Commit {
                    slot,
                    payload: payload.clone(),
                });
                self.committed_out = slot;
            }
        }
    }

    fn on_executed(&mut self, slot: Slot, out: &mut Vec<PaxosOutput>) {
        self.executed = self.executed.max(slot.min(self.commit));
        let target = self.executed.saturating_sub(self.cfg.keep_executed);
        if target > self.base {
            self.base = target;
            self.accepted = self.accepted.split_off(&(target + 1));
            self.chosen = self.chosen.split_off(&(target + 1));
            out.push(PaxosOutput::Persist(Record::Compact { slot: target }));
        }
    }

    fn on_caught_up(&mut self, now: Millis, slot: Slot, out: &mut Vec<PaxosOutput>) {
        // An earlier, shorter sync may finish while a longer one runs: that one still
        // executes the slots after `slot`.
        if self.fetching.is_some_and(|f| slot >= f) {
            self.fetching = None;
        }
        if slot > self.commit {
            self.commit = slot;
            self.committed_out = slot;
            self.executed = slot;
            self.chosen = self.chosen.split_off(&(slot + 1));
            // The chain holds every slot up to `slot`: their acceptances are not needed.
            if slot > self.base {
                self.base = slot;
                self.accepted = self.accepted.split_off(&(slot + 1));
                out.push(PaxosOutput::Persist(Record::Compact { slot }));
            }
            self.advance_commit(out);
        }
        if self.role == Role::Preparing {
            self.maybe_finish_phase1(now, out);
        }
    }
}

#[cfg(test)]
mod tests;
