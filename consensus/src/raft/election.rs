//! Elections: pre-vote, vote, becoming leader, check-quorum and leadership transfer.

use super::*;

impl Raft {
    pub(super) fn pre_campaign(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        self.role = Role::PreCandidate;
        self.leader = None;
        self.votes.clear();
        self.votes.insert(self.me);
        let term = self.term + 1;
        out.push(RaftOutput::Event(RaftEvent::PreCampaign { term }));
        if self.votes.len() >= self.majority() {
            return self.campaign(now, false, out);
        }
        for to in self.peers() {
            self.send(
                to,
                term,
                Body::PreVote {
                    last_index: self.log.last_index(),
                    last_term: self.log.last_term(),
                },
                out,
            );
        }
    }

    pub(super) fn campaign(&mut self, now: Millis, transfer: bool, out: &mut Vec<RaftOutput>) {
        self.role = Role::Candidate;
        self.leader = None;
        self.term += 1;
        self.voted_for = Some(self.me);
        self.votes.clear();
        self.votes.insert(self.me);
        // The term and the vote for itself are durable before any request leaves.
        self.persist_hard_state(out);
        out.push(RaftOutput::Event(RaftEvent::Campaign { term: self.term }));
        if self.votes.len() >= self.majority() {
            return self.become_leader(now, out);
        }
        for to in self.peers() {
            self.send(
                to,
                self.term,
                Body::Vote {
                    last_index: self.log.last_index(),
                    last_term: self.log.last_term(),
                    transfer,
                },
                out,
            );
        }
    }

    pub(super) fn on_pre_vote(
        &mut self,
        now: Millis,
        msg: &Message,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let granted = msg.term > self.term
            && !self.in_lease(now)
            && self.candidate_up_to_date(last_index, last_term);
        // A grant names the term asked about; a refusal this replica's own term.
        let term = if granted { msg.term } else { self.term };
        self.send(msg.from, term, Body::PreVoteReply { granted }, out);
    }

    pub(super) fn on_pre_vote_reply(
        &mut self,
        now: Millis,
        msg: &Message,
        granted: bool,
        out: &mut Vec<RaftOutput>,
    ) {
        if self.role != Role::PreCandidate {
            return;
        }
        if !granted {
            if msg.term > self.term {
                // A real, higher term: adopt it (no leader known yet).
                self.term = msg.term;
                self.voted_for = None;
                self.persist_hard_state(out);
                self.role = Role::Follower;
                self.votes.clear();
                out.push(RaftOutput::Event(RaftEvent::BecameFollower {
                    term: self.term,
                    leader: None,
                }));
            }
            return;
        }
        if msg.term != self.term + 1 {
            return;
        }
        self.votes.insert(msg.from);
        if self.votes.len() >= self.majority() {
            self.campaign(now, false, out);
        }
    }

    pub(super) fn on_vote(
        &mut self,
        now: Millis,
        from: ValidatorId,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let free = self.voted_for.is_none() || self.voted_for == Some(from);
        let granted =
            free && self.role != Role::Leader && self.candidate_up_to_date(last_index, last_term);
        if granted && self.voted_for.is_none() {
            self.voted_for = Some(from);
            // The vote is durable before the reply that announces it.
            self.persist_hard_state(out);
        }
        if granted {
            self.reset_election_timer(now);
        }
        self.send(from, self.term, Body::VoteReply { granted }, out);
    }

    pub(super) fn on_vote_reply(
        &mut self,
        now: Millis,
        from: ValidatorId,
        granted: bool,
        out: &mut Vec<RaftOutput>,
    ) {
        if self.role != Role::Candidate || !granted {
            return;
        }
        self.votes.insert(from);
        if self.votes.len() >= self.majority() {
            self.become_leader(now, out);
        }
    }

    pub(super) fn become_leader(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        self.role = Role::Leader;
        self.leader = Some(self.me);
        self.votes.clear();
        self.transfer = None;
        let next = self.log.last_index() + 1;
        for p in &mut self.progress {
            p.next = next;
            p.matched = 0;
            p.inflight = 0;
            p.probing = true;
            p.last_reply = now;
            p.active = true;
        }
        self.progress[self.me.0 as usize].matched = self.log.last_index();
        self.next_quorum_check = now + self.cfg.election_ms;
        out.push(RaftOutput::Event(RaftEvent::BecameLeader {
            term: self.term,
        }));
        // A no-op of the new term commits the entries of earlier terms (§5.4.2).
        self.append_local(Payload::Noop, out);
        self.broadcast_append(now, out);
        self.next_heartbeat = now + self.cfg.heartbeat_ms;
    }

    pub(super) fn leader_tick(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        if self.cfg.check_quorum && now >= self.next_quorum_check {
            self.next_quorum_check = now + self.cfg.election_ms;
            let me = self.me.0 as usize;
            let active = self
                .progress
                .iter()
                .enumerate()
                .filter(|(i, p)| *i == me || p.active)
                .count();
            for p in &mut self.progress {
                p.active = false;
            }
            if active < self.majority() {
                let term = self.term;
                out.push(RaftOutput::Event(RaftEvent::SteppedDown { term }));
                self.become_follower(now, term, None, out);
                return;
            }
        }
        if let Some((to, deadline)) = self.transfer
            && now >= deadline
        {
            self.transfer = None;
            out.push(RaftOutput::Event(RaftEvent::TransferAborted { to }));
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_ms;
            self.heartbeat(now, out);
        }
        self.maybe_request_batch(out);
    }

    pub(super) fn start_transfer(
        &mut self,
        now: Millis,
        to: ValidatorId,
        out: &mut Vec<RaftOutput>,
    ) {
        if self.role != Role::Leader || to == self.me || to.0 as usize >= self.n {
            return;
        }
        self.transfer = Some((to, now + self.cfg.election_ms));
        out.push(RaftOutput::Event(RaftEvent::TransferStarted { to }));
        self.maybe_finish_transfer(now, out);
    }

    /// Sends TIMEOUT-NOW once the target holds the whole log; otherwise brings it up to date.
    pub(super) fn maybe_finish_transfer(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        let Some((to, _)) = self.transfer else {
            return;
        };
        if self.progress[to.0 as usize].matched == self.log.last_index() {
            self.send(to, self.term, Body::TimeoutNow, out);
        } else {
            self.send_append(now, to, out);
        }
    }
}
