//! Log replication: appends with flow control, the commit rule, compaction and catch-up.

use super::*;

impl Raft {
    pub(super) fn append_local(&mut self, payload: Payload, out: &mut Vec<RaftOutput>) {
        let index = self.log.last_index() + 1;
        let signature = match &self.signer {
            Some(signer) => signer.sign(
                crate::LEADER_COMMIT_DOMAIN,
                &crate::commit_body(
                    crate::View(self.term),
                    crate::Seq(index),
                    &payload.batch().digest(),
                ),
            ),
            None => Signature([0; 64]),
        };
        let entry = Entry {
            term: self.term,
            index,
            payload,
            leader: self.me,
            signature,
        };
        out.push(RaftOutput::Persist(Record::Append {
            entries: vec![entry.clone()],
        }));
        self.log.entries.push(entry);
        let last = self.log.last_index();
        self.progress[self.me.0 as usize].matched = last;
        // A cluster of one commits on its own.
        self.advance_commit(out);
    }

    pub(super) fn propose(&mut self, now: Millis, batch: Batch, out: &mut Vec<RaftOutput>) {
        if self.role != Role::Leader || self.transfer.is_some() || !self.has_room() {
            return;
        }
        self.append_local(Payload::Batch(batch), out);
        for to in self.peers() {
            let p = &self.progress[to.0 as usize];
            if !p.probing && p.inflight < self.cfg.max_inflight {
                self.send_append(now, to, out);
            }
        }
    }

    fn has_room(&self) -> bool {
        self.log.last_index() - self.commit < self.cfg.max_uncommitted
    }

    pub(super) fn maybe_request_batch(&self, out: &mut Vec<RaftOutput>) {
        if self.role == Role::Leader && self.transfer.is_none() && self.has_room() {
            out.push(RaftOutput::RequestBatch);
        }
    }

    pub(super) fn broadcast_append(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        for to in self.peers() {
            self.send_append(now, to, out);
        }
    }

    /// Every heartbeat: followers with nothing in flight get an append (entries, or none);
    /// a follower silent for two heartbeats with appends in flight is probed again (the
    /// appends or their replies were lost).
    pub(super) fn heartbeat(&mut self, now: Millis, out: &mut Vec<RaftOutput>) {
        for to in self.peers() {
            let p = &mut self.progress[to.0 as usize];
            if p.inflight > 0 && now >= p.last_reply + 2 * self.cfg.heartbeat_ms {
                p.inflight = 0;
                p.probing = true;
                p.next = p.matched + 1;
            }
            if p.inflight == 0 || p.probing {
                self.send_append(now, to, out);
            }
        }
    }

    /// Sends `to` the entries from its next index (or a heartbeat, or a catch-up when they
    /// are compacted here).
    pub(super) fn send_append(&mut self, now: Millis, to: ValidatorId, out: &mut Vec<RaftOutput>) {
        let _ = now;
        let i = to.0 as usize;
        let next = self.progress[i].next.max(1);
        if next <= self.log.base_index {
            self.progress[i].probing = true;
            self.send(
                to,
                self.term,
                Body::CatchUp {
                    index: self.log.base_index,
                    term: self.log.base_term,
                },
                out,
            );
            return;
        }
        let prev_index = next - 1;
        let prev_term = self
            .log
            .term_at(prev_index)
            .expect("prev is at or after the base");
        let entries = self.log.slice(next, self.cfg.max_entries);
        let p = &mut self.progress[i];
        if !p.probing {
            p.next = next + entries.len() as Index;
        }
        p.inflight += 1;
        // Only what the follower will hold when this arrives may commit there.
        let commit = self.commit.min(prev_index + entries.len() as Index);
        self.send(
            to,
            self.term,
            Body::Append {
                prev_index,
                prev_term,
                entries,
                commit,
            },
            out,
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        now: Millis,
        from: ValidatorId,
        prev_index: Index,
        prev_term: Term,
        mut entries: Vec<Entry>,
        leader_commit: Index,
        out: &mut Vec<RaftOutput>,
    ) {
        // Same term (higher terms were adopted before): `from` is this term's leader.
        if self.role != Role::Follower || self.leader != Some(from) {
            let term = self.term;
            self.become_follower(now, term, Some(from), out);
        }
        self.leader_contact = Some(now);
        self.reset_election_timer(now);
        if self.fetching.is_some() {
            // Block sync is bringing the chain forward; entries wait for it.
            return;
        }
        let (mut prev_index, mut prev_term) = (prev_index, prev_term);
        if prev_index < self.log.base_index {
            // Entries up to the base are executed here, hence committed and matching.
            let skip = (self.log.base_index - prev_index) as usize;
            if skip > entries.len() {
                self.reply_append(from, true, self.log.base_index, out);
                return;
            }
            if skip > 0 {
                prev_term = entries[skip - 1].term;
            }
            entries.drain(..skip);
            prev_index = self.log.base_index;
            if prev_term != self.log.base_term {
                // Cannot happen with a correct leader (committed entries match); refuse.
                self.reply_append(from, false, self.log.base_index, out);
                return;
            }
        }
        if prev_index > self.log.last_index() && prev_index <= self.executed {
            // The chain is ahead of the log (a block sync finished just before a restart):
            // the leader's entry at `prev_index` is the committed one the chain holds.
            self.log = Log {
                base_index: prev_index,
                base_term: prev_term,
                entries: Vec::new(),
            };
            out.push(RaftOutput::Persist(Record::Reset {
                index: prev_index,
                term: prev_term,
            }));
        }
        if self.log.term_at(prev_index) != Some(prev_term) {
            let hint = prev_index
                .saturating_sub(1)
                .min(self.log.last_index().max(self.executed));
            self.reply_append(from, false, hint.max(self.log.base_index), out);
            return;
        }
        // Skip what matches; truncate at the first conflict; append the rest.
        let mut first_new = entries.len();
        for (k, e) in entries.iter().enumerate() {
            match self.log.term_at(e.index) {
                Some(t) if t == e.term => continue,
                _ => {
                    first_new = k;
                    break;
                }
            }
        }
        let matched = prev_index + entries.len() as Index;
        if first_new < entries.len() {
            let start = entries[first_new].index;
            if start <= self.commit {
                // Committed entries never change (a correct leader holds them all).
                self.reply_append(from, false, self.commit, out);
                return;
            }
            let new: Vec<Entry> = entries.drain(first_new..).collect();
            let keep = (start - self.log.base_index - 1) as usize;
            self.log.entries.truncate(keep);
            self.log.entries.extend(new.iter().cloned());
            out.push(RaftOutput::Persist(Record::Append { entries: new }));
        }
        let new_commit = leader_commit.min(matched);
        if new_commit > self.commit {
            self.commit = new_commit;
            self.emit_commits(out);
        }
        self.reply_append(from, true, matched, out);
    }

    fn reply_append(
        &self,
        to: ValidatorId,
        success: bool,
        index: Index,
        out: &mut Vec<RaftOutput>,
    ) {
        self.send(to, self.term, Body::AppendReply { success, index }, out);
    }

    pub(super) fn on_append_reply(
        &mut self,
        now: Millis,
        from: ValidatorId,
        success: bool,
        index: Index,
        out: &mut Vec<RaftOutput>,
    ) {
        if self.role != Role::Leader {
            return;
        }
        let last = self.log.last_index();
        let p = &mut self.progress[from.0 as usize];
        p.last_reply = now;
        p.inflight = p.inflight.saturating_sub(1);
        if success {
            let index = index.min(last);
            if index > p.matched {
                p.matched = index;
            }
            if p.probing {
                p.probing = false;
                p.inflight = 0;
                p.next = p.matched + 1;
            } else {
                p.next = p.next.max(p.matched + 1);
            }
            self.advance_commit(out);
            self.maybe_finish_transfer(now, out);
            // Keep the pipe full.
            while {
                let p = &self.progress[from.0 as usize];
                !p.probing && p.inflight < self.cfg.max_inflight && p.next <= self.log.last_index()
            } {
                self.send_append(now, from, out);
            }
        } else {
            // A follower that refuses below what it acknowledged has lost its log (a wiped
            // or replaced disk): only what it says it holds may be counted on. (Keeping the
            // stale match sent it the same refused append forever: ≈ 150,000 messages a
            // second between a wiped follower and its leader.) The commit index never goes
            // back; a late, stale refusal only costs one more round trip.
            if index < p.matched {
                p.matched = index;
            }
            // Back off to the hint, never below what is known to match.
            let before = (p.probing, p.next);
            p.next = (index + 1)
                .max(p.matched + 1)
                .min(p.next.max(p.matched + 1));
            p.probing = true;
            p.inflight = 0;
            // A refusal that moved the probe back is answered at once: the search for the
            // point where the logs match converges in round trips. One that taught nothing
            // (a duplicate, or a follower that keeps refusing the same append) waits for the
            // next heartbeat, which probes again: at most one probe per heartbeat to a
            // follower that cannot take the leader's entries, instead of a message storm.
            if before != (true, p.next) {
                self.send_append(now, from, out);
            }
        }
    }

    /// The leader commits the highest index a majority holds whose entry is of its own term
    /// (§5.4.2: entries of earlier terms commit only under one of the current term).
    pub(super) fn advance_commit(&mut self, out: &mut Vec<RaftOutput>) {
        if self.role != Role::Leader {
            return;
        }
        let mut matched: Vec<Index> = self.progress.iter().map(|p| p.matched).collect();
        matched.sort_unstable_by(|a, b| b.cmp(a));
        let candidate = matched[self.majority() - 1];
        if candidate > self.commit && self.log.term_at(candidate) == Some(self.term) {
            self.commit = candidate;
            self.emit_commits(out);
        }
    }

    pub(super) fn emit_commits(&mut self, out: &mut Vec<RaftOutput>) {
        while self.committed_out < self.commit {
            let index = self.committed_out + 1;
            let Some(entry) = self.log.get(index) else {
                break;
            };
            out.push(RaftOutput::Commit(entry.clone()));
            self.committed_out = index;
        }
    }

    /// Executed entries leave the log once `keep_executed` newer ones are executed too.
    pub(super) fn on_executed(&mut self, index: Index, out: &mut Vec<RaftOutput>) {
        self.executed = self.executed.max(index.min(self.commit));
        let target = self.executed.saturating_sub(self.cfg.keep_executed);
        if target > self.log.base_index
            && let Some(term) = self.log.term_at(target)
        {
            let drop = (target - self.log.base_index) as usize;
            self.log.entries.drain(..drop);
            self.log.base_index = target;
            self.log.base_term = term;
            out.push(RaftOutput::Persist(Record::Compact {
                index: target,
                term,
            }));
        }
    }

    pub(super) fn on_catch_up(
        &mut self,
        now: Millis,
        from: ValidatorId,
        index: Index,
        term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        if self.role != Role::Follower || self.leader != Some(from) {
            let t = self.term;
            self.become_follower(now, t, Some(from), out);
        }
        self.leader_contact = Some(now);
        self.reset_election_timer(now);
        if self.log.term_at(index) == Some(term) {
            // Already there.
            return self.reply_append(from, true, index, out);
        }
        if index < self.log.base_index {
            // Past it: this log's base is executed, so committed, so the leader's too.
            return self.reply_append(from, true, self.log.base_index, out);
        }
        if self.executed >= index {
            // The chain already holds `index` (a sync finished just before a restart, say):
            // only the log is behind.
            return self.on_caught_up(now, index, term, out);
        }
        if self.fetching.is_none_or(|f| f < index) {
            self.fetching = Some(index);
            out.push(RaftOutput::FetchState { index, term, from });
        }
    }

    pub(super) fn on_caught_up(
        &mut self,
        now: Millis,
        index: Index,
        term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let _ = now;
        // An earlier, shorter sync may finish while a longer one runs.
        if self.fetching.is_some_and(|f| index >= f) {
            self.fetching = None;
        }
        if index <= self.log.base_index || self.log.term_at(index) == Some(term) {
            return;
        }
        // The chain holds every entry up to `index`: the log restarts after it. (Entries
        // after `index` here follow a different entry at `index`, so none is committed.)
        self.log = Log {
            base_index: index,
            base_term: term,
            entries: Vec::new(),
        };
        out.push(RaftOutput::Persist(Record::Reset { index, term }));
        self.commit = self.commit.max(index);
        self.committed_out = self.committed_out.max(index);
        self.executed = self.executed.max(index);
        if let Some(leader) = self.leader {
            self.reply_append(leader, true, index, out);
        }
    }
}
