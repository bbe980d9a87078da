//! Raft (Ongaro and Ousterhout, "In Search of an Understandable Consensus Algorithm", 2014,
//! and Ongaro's thesis, 2014) for crash faults, as a pure state machine like [`crate::pbft`]:
//! no I/O, no clock (the driver passes `now`), no randomness (the driver passes entropy with
//! every tick, from which the election timeouts are drawn).
//!
//! What it adds to the paper's core, all on by default:
//! * **pre-vote** (thesis §9.6): a replica that timed out first asks whether it could win,
//!   without raising its term, so a replica cut off and rejoining cannot depose a healthy
//!   leader by bumping the term;
//! * **check-quorum** (thesis §6.2): a leader that has not heard from a majority within an
//!   election timeout steps down; and a follower that heard from its leader within the
//!   minimum election timeout ignores (pre-)votes. Together with pre-vote this is what keeps
//!   a partially connected replica from deposing a leader the others still reach (the
//!   Cloudflare outage of November 2020);
//! * **flow control**: at most `max_inflight` appends of at most `max_entries` each in flight
//!   per follower; a follower that lost track is probed one append at a time;
//! * **leadership transfer** (thesis §3.10): [`RaftInput::TransferLeadership`];
//! * **compaction** tied to executed blocks ([`RaftInput::Executed`]), and catch-up of a
//!   follower whose entries are compacted through block sync ([`RaftOutput::FetchState`]).
//!
//! The ordering rule is PBFT's: every [`RaftOutput::Persist`] of a step is durable before any
//! message of that step is sent. A vote, a term and appended entries are therefore on disk
//! before any reply that depends on them.

mod election;
pub mod messages;
mod replication;
pub mod storage;

use std::collections::BTreeSet;

pub use messages::{Body, Durable, Entry, Index, Message, Payload, Record, Term};

use crate::protocol::Millis;
use crate::{Batch, Signer, ValidatorId};
use tally_crypto::Signature;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaftConfig {
    /// Election timeouts are drawn from `[election_ms, election_max_ms)`; `election_ms` is
    /// also the check-quorum period and the vote-stickiness window.
    pub election_ms: Millis,
    pub election_max_ms: Millis,
    /// A leader's heartbeat interval; well under `election_ms`.
    pub heartbeat_ms: Millis,
    pub pre_vote: bool,
    pub check_quorum: bool,
    /// Appends in flight per follower.
    pub max_inflight: usize,
    /// Entries per append.
    pub max_entries: usize,
    /// Entries a leader holds uncommitted before it stops asking for batches.
    pub max_uncommitted: u64,
    /// Executed entries kept in the log (for followers slightly behind) before compaction.
    pub keep_executed: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            election_ms: 1_000,
            election_max_ms: 2_000,
            heartbeat_ms: 100,
            pre_vote: true,
            check_quorum: true,
            max_inflight: 8,
            max_entries: 64,
            max_uncommitted: 256,
            keep_executed: 1_024,
        }
    }
}

#[derive(Clone, Debug)]
pub enum RaftInput {
    /// A message from `msg.from` (the driver sets it from the authenticated connection).
    Message(Message),
    /// Time passed; `entropy` is fresh randomness for the next election timeout.
    Tick { entropy: u64 },
    /// A batch to order (answering [`RaftOutput::RequestBatch`]); ignored unless leader.
    Propose(Batch),
    /// The driver executed every committed entry up to `index`.
    Executed { index: Index },
    /// The driver brought the chain to `index` (entry term `term`) by block sync.
    CaughtUp { index: Index, term: Term },
    /// Hand leadership to `to` (an operator's request, or a graceful shutdown).
    TransferLeadership { to: ValidatorId },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftOutput {
    Persist(Record),
    Send {
        to: ValidatorId,
        msg: Message,
    },
    /// `entry` is committed; execute it, in index order.
    Commit(Entry),
    /// The leader has room for another entry.
    RequestBatch,
    /// Block-sync the chain up to `index` from `from` (the leader), then report
    /// [`RaftInput::CaughtUp`].
    FetchState {
        index: Index,
        term: Term,
        from: ValidatorId,
    },
    Event(RaftEvent),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaftEvent {
    BecameLeader {
        term: Term,
    },
    BecameFollower {
        term: Term,
        leader: Option<ValidatorId>,
    },
    PreCampaign {
        term: Term,
    },
    Campaign {
        term: Term,
    },
    /// Check-quorum: the leader lost touch with a majority.
    SteppedDown {
        term: Term,
    },
    TransferStarted {
        to: ValidatorId,
    },
    TransferAborted {
        to: ValidatorId,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A leader's view of one follower.
#[derive(Clone, Debug)]
struct Progress {
    /// The next index to send.
    next: Index,
    /// The highest index known to match.
    matched: Index,
    /// Appends sent and not answered.
    inflight: usize,
    /// Sending one append at a time until the follower answers.
    probing: bool,
    last_reply: Millis,
    /// Heard from since the last check-quorum.
    active: bool,
}

pub struct Raft {
    cfg: RaftConfig,
    me: ValidatorId,
    /// Validators, by id `0..n`.
    n: usize,
    term: Term,
    voted_for: Option<ValidatorId>,
    role: Role,
    leader: Option<ValidatorId>,
    log: Log,
    commit: Index,
    /// Entries up to here were handed to the driver as [`RaftOutput::Commit`].
    committed_out: Index,
    executed: Index,
    /// Pre-votes or votes received in the current campaign.
    votes: BTreeSet<ValidatorId>,
    progress: Vec<Progress>,
    election_deadline: Millis,
    /// When the leader was last heard (followers), for check-quorum's vote stickiness.
    leader_contact: Option<Millis>,
    next_quorum_check: Millis,
    next_heartbeat: Millis,
    entropy: u64,
    transfer: Option<(ValidatorId, Millis)>,
    /// Catching up by block sync to this index.
    fetching: Option<Index>,
    /// Signs the entries this replica creates as leader (their commit proofs); `None` in the
    /// simulator.
    signer: Option<Box<dyn Signer>>,
    /// A log reset decided at start-up (see [`Raft::new`]), persisted with the first step's
    /// outputs.
    pending_reset: Option<Record>,
}

/// The log: entries after a base (the last compacted or synced entry).
#[derive(Clone, Debug, Default)]
struct Log {
    base_index: Index,
    base_term: Term,
    entries: Vec<Entry>,
}

impl Log {
    fn last_index(&self) -> Index {
        self.base_index + self.entries.len() as Index
    }

    fn last_term(&self) -> Term {
        self.entries.last().map_or(self.base_term, |e| e.term)
    }

    /// The term of the entry at `index`, if this log knows it.
    fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.base_index {
            return Some(self.base_term);
        }
        self.get(index).map(|e| e.term)
    }

    fn get(&self, index: Index) -> Option<&Entry> {
        if index <= self.base_index {
            return None;
        }
        self.entries.get((index - self.base_index - 1) as usize)
    }

    fn slice(&self, from: Index, max: usize) -> Vec<Entry> {
        if from <= self.base_index {
            return Vec::new();
        }
        let start = (from - self.base_index - 1) as usize;
        self.entries.iter().skip(start).take(max).cloned().collect()
    }
}

impl Raft {
    /// A replica starting from its durable state, with its chain executed up to `executed`,
    /// whose entry there has term `executed_term` (the term its block's commit proof names;
    /// `None` when not known, e.g. a chain that holds only its genesis block).
    /// `signer` signs the entries it creates as leader (`None`: unsigned, for the simulator).
    ///
    /// The chain can be ahead of the log: a block sync writes the blocks, and only then does
    /// the replica reset its log after them ([`RaftInput::CaughtUp`]); a replica that stops in
    /// between restarts with a chain of the committed entries and a log that may still hold,
    /// at the same indexes, entries that were never committed (of an older leader). Taking
    /// that log as it is would make this replica count them as committed and refuse, for
    /// ever, the leader's entries there (a simulated seed showed it: the leader resent the
    /// same append hundreds of thousands of times). So where the log's entry at `executed`
    /// is not the chain's, the log restarts after the chain's tip, as after a block sync.
    pub fn new(
        cfg: RaftConfig,
        me: ValidatorId,
        validators: usize,
        durable: Durable,
        executed: Index,
        executed_term: Option<Term>,
        signer: Option<Box<dyn Signer>>,
    ) -> Raft {
        let mut log = Log {
            base_index: durable.base_index,
            base_term: durable.base_term,
            entries: durable.entries,
        };
        let mut pending_reset = None;
        if let Some(term) = executed_term
            && executed > 0
            && executed >= log.base_index
            && log.term_at(executed) != Some(term)
        {
            // Entries after a different entry at `executed` were never committed either.
            log = Log {
                base_index: executed,
                base_term: term,
                entries: Vec::new(),
            };
            pending_reset = Some(Record::Reset {
                index: executed,
                term,
            });
        }
        // What was executed was committed; nothing else is known to be.
        let commit = executed
            .max(log.base_index)
            .min(log.last_index().max(executed));
        let progress = (0..validators)
            .map(|_| Progress {
                next: 1,
                matched: 0,
                inflight: 0,
                probing: true,
                last_reply: 0,
                active: false,
            })
            .collect();
        Raft {
            cfg,
            me,
            n: validators,
            term: durable.term,
            voted_for: durable.voted_for,
            role: Role::Follower,
            leader: None,
            log,
            commit,
            committed_out: commit,
            executed,
            votes: BTreeSet::new(),
            progress,
            election_deadline: 0,
            leader_contact: None,
            next_quorum_check: 0,
            next_heartbeat: 0,
            entropy: 0x9E37_79B9_7F4A_7C15 ^ me.0 as u64,
            transfer: None,
            fetching: None,
            signer,
            pending_reset,
        }
    }

    /// As leader: the follower whose log matches the most of this one (ties: the lowest id),
    /// the best target for a leadership transfer.
    pub fn most_caught_up_follower(&self) -> Option<ValidatorId> {
        if self.role != Role::Leader {
            return None;
        }
        self.peers()
            .max_by_key(|p| (self.progress[p.0 as usize].matched, std::cmp::Reverse(p.0)))
    }

    pub fn config(&self) -> &RaftConfig {
        &self.cfg
    }

    pub fn term(&self) -> Term {
        self.term
    }

    pub fn role(&self) -> &Role {
        &self.role
    }

    pub fn leader(&self) -> Option<ValidatorId> {
        self.leader
    }

    pub fn commit_index(&self) -> Index {
        self.commit
    }

    pub fn last_index(&self) -> Index {
        self.log.last_index()
    }

    pub fn base_index(&self) -> Index {
        self.log.base_index
    }

    /// The entry at `index`, while the log holds it.
    pub fn entry(&self, index: Index) -> Option<&Entry> {
        self.log.get(index)
    }

    /// The index a block sync under way is bringing the chain to.
    pub fn fetching(&self) -> Option<Index> {
        self.fetching
    }

    pub fn voted_for(&self) -> Option<ValidatorId> {
        self.voted_for
    }

    fn majority(&self) -> usize {
        self.n / 2 + 1
    }

    fn peers(&self) -> impl Iterator<Item = ValidatorId> + use<> {
        let me = self.me;
        (0..self.n as u16)
            .map(ValidatorId)
            .filter(move |v| *v != me)
    }

    fn send(&self, to: ValidatorId, term: Term, body: Body, out: &mut Vec<RaftOutput>) {
        out.push(RaftOutput::Send {
            to,
            msg: Message {
                from: self.me,
                term,
                body,
            },
        });
    }

    fn persist_hard_state(&self, out: &mut Vec<RaftOutput>) {
        out.push(RaftOutput::Persist(Record::HardState {
            term: self.term,
            voted_for: self.voted_for,
        }));
    }

    /// A fresh timeout in `[election_ms, election_max_ms)` from the driver's entropy.
    fn reset_election_timer(&mut self, now: Millis) {
        self.election_deadline = now
            + crate::entropy::election_timeout(
                &mut self.entropy,
                self.cfg.election_ms,
                self.cfg.election_max_ms,
            );
    }

    /// Feeds one input at `now`; appends the outputs, in the order they must be carried out.
    pub fn step(&mut self, now: Millis, input: RaftInput, out: &mut Vec<RaftOutput>) {
        if let Some(reset) = self.pending_reset.take() {
            out.push(RaftOutput::Persist(reset));
        }
        match input {
            RaftInput::Tick { entropy } => {
                self.entropy ^= entropy;
                self.tick(now, out);
            }
            RaftInput::Message(msg) => self.on_message(now, msg, out),
            RaftInput::Propose(batch) => self.propose(now, batch, out),
            RaftInput::Executed { index } => self.on_executed(index, out),
            RaftInput::CaughtUp { index, term } => self.on_caught_up(now, index, term, out),
            RaftInput::TransferLeadership { to } => self.start_transfer(now, to, out),
        }
    }

    fn tick(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        if self.election_deadline == 0 {
            self.reset_election_timer(now);
        }
        match self.role {
            Role::Leader => self.leader_tick(now, out),
            _ => {
                if now >= self.election_deadline {
                    self.reset_election_timer(now);
                    if self.cfg.pre_vote {
                        self.pre_campaign(now, out);
                    } else {
                        self.campaign(now, false, out);
                    }
                }
            }
        }
    }

    fn on_message(&mut self, now: Millis, msg: Message, out: &mut Vec<RaftOutput>) {
        if msg.from == self.me || msg.from.0 as usize >= self.n {
            return;
        }
        if self.role == Role::Leader {
            self.progress[msg.from.0 as usize].active = true;
        }
        match &msg.body {
            Body::PreVote {
                last_index,
                last_term,
            } => return self.on_pre_vote(now, &msg, *last_index, *last_term, out),
            Body::PreVoteReply { granted } => {
                return self.on_pre_vote_reply(now, &msg, *granted, out);
            }
            Body::Vote { transfer, .. } if !*transfer && self.in_lease(now) => {
                // Vote stickiness: a leader is alive; neither the term nor the vote moves.
                return;
            }
            _ => {}
        }
        if msg.term > self.term {
            let leader = match msg.body {
                Body::Append { .. } | Body::CatchUp { .. } | Body::TimeoutNow => Some(msg.from),
                _ => None,
            };
            self.become_follower(now, msg.term, leader, out);
        } else if msg.term < self.term {
            // A stale leader learns the term from the rejection and steps down.
            if matches!(msg.body, Body::Append { .. } | Body::CatchUp { .. }) {
                self.send(
                    msg.from,
                    self.term,
                    Body::AppendReply {
                        success: false,
                        index: 0,
                    },
                    out,
                );
            }
            return;
        }
        match msg.body {
            Body::Vote {
                last_index,
                last_term,
                ..
            } => self.on_vote(now, msg.from, last_index, last_term, out),
            Body::VoteReply { granted } => self.on_vote_reply(now, msg.from, granted, out),
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            } => self.on_append(now, msg.from, prev_index, prev_term, entries, commit, out),
            Body::AppendReply { success, index } => {
                self.on_append_reply(now, msg.from, success, index, out)
            }
            Body::CatchUp { index, term } => self.on_catch_up(now, msg.from, index, term, out),
            Body::TimeoutNow => {
                if self.role == Role::Follower && self.leader == Some(msg.from) {
                    self.reset_election_timer(now);
                    self.campaign(now, true, out);
                }
            }
            Body::PreVote { .. } | Body::PreVoteReply { .. } => {}
        }
    }

    /// A follower heard from its leader within the minimum election timeout (or this replica
    /// leads): with check-quorum, (pre-)votes are then refused.
    fn in_lease(&self, now: Millis) -> bool {
        if !self.cfg.check_quorum {
            return false;
        }
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self
                        .leader_contact
                        .is_some_and(|t| now < t + self.cfg.election_ms)
            }
        }
    }

    fn become_follower(
        &mut self,
        now: Millis,
        term: Term,
        leader: Option<ValidatorId>,
        out: &mut Vec<RaftOutput>,
    ) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state(out);
        }
        let changed = self.role != Role::Follower || self.leader != leader;
        self.role = Role::Follower;
        self.leader = leader;
        self.votes.clear();
        self.transfer = None;
        if leader.is_some() {
            self.leader_contact = Some(now);
        }
        self.reset_election_timer(now);
        if changed {
            out.push(RaftOutput::Event(RaftEvent::BecameFollower {
                term,
                leader,
            }));
        }
    }

    /// The log is at least as up to date as `(last_index, last_term)` (§5.4.1).
    fn candidate_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.log.last_term(), self.log.last_index())
    }
}

#[cfg(test)]
mod tests;
