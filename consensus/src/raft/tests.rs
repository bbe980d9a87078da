//! Unit tests of the Raft core: replicas driven by hand, one rule each.

use super::*;

fn cfg() -> RaftConfig {
    RaftConfig {
        election_ms: 100,
        election_max_ms: 200,
        heartbeat_ms: 20,
        ..RaftConfig::default()
    }
}

/// An entry as the simulator and these tests make them: unsigned, "by" validator 0.
fn unsigned(term: Term, index: Index, payload: Payload) -> Entry {
    Entry {
        term,
        index,
        payload,
        leader: ValidatorId(0),
        signature: tally_crypto::Signature([0; 64]),
    }
}

fn replica(me: u16, n: usize) -> Raft {
    Raft::new(cfg(), ValidatorId(me), n, Durable::default(), 0, None, None)
}

/// What a replica stored: `term`, no vote, a log from index 1 holding `entries`.
fn durable_log(term: Term, entries: Vec<Entry>) -> Durable {
    Durable {
        term,
        voted_for: None,
        base_index: 0,
        base_term: 0,
        entries,
    }
}

fn msg(from: u16, term: Term, body: Body) -> RaftInput {
    RaftInput::Message(Message {
        from: ValidatorId(from),
        term,
        body,
    })
}

fn sends(out: &[RaftOutput]) -> Vec<(ValidatorId, Message)> {
    out.iter()
        .filter_map(|o| match o {
            RaftOutput::Send { to, msg } => Some((*to, msg.clone())),
            _ => None,
        })
        .collect()
}

/// Ticks until the election timeout fires.
fn time_out(r: &mut Raft, from: Millis) -> (Millis, Vec<RaftOutput>) {
    let mut now = from;
    loop {
        now += 10;
        let mut out = Vec::new();
        r.step(now, RaftInput::Tick { entropy: now }, &mut out);
        if !out.is_empty() {
            return (now, out);
        }
        assert!(now < from + 1_000, "no election timeout");
    }
}

#[test]
fn a_cut_off_replica_does_not_raise_its_term() {
    // Pre-vote: timing out again and again, alone, it asks but never campaigns.
    let mut r = replica(0, 3);
    let mut now = 0;
    for _ in 0..5 {
        let (t, out) = time_out(&mut r, now);
        now = t;
        assert!(
            sends(&out)
                .iter()
                .all(|(_, m)| matches!(m.body, Body::PreVote { .. }))
        );
        assert!(out.iter().all(|o| !matches!(o, RaftOutput::Persist(_))));
    }
    assert_eq!(r.term(), 0);
}

#[test]
fn a_vote_is_durable_before_the_reply() {
    let mut r = replica(1, 3);
    let mut out = Vec::new();
    let vote = Body::Vote {
        last_index: 0,
        last_term: 0,
        transfer: false,
    };
    r.step(0, msg(0, 1, vote), &mut out);
    let persist = out
        .iter()
        .position(|o| {
            matches!(o, RaftOutput::Persist(Record::HardState { term: 1, voted_for: Some(v) }) if *v == ValidatorId(0))
        })
        .expect("the vote is persisted");
    let reply = out
        .iter()
        .position(|o| matches!(o, RaftOutput::Send { msg, .. } if msg.body == Body::VoteReply { granted: true }))
        .expect("the vote is granted");
    assert!(persist < reply);
    // One vote per term.
    let mut out = Vec::new();
    r.step(
        1,
        msg(
            2,
            1,
            Body::Vote {
                last_index: 5,
                last_term: 1,
                transfer: false,
            },
        ),
        &mut out,
    );
    assert_eq!(sends(&out)[0].1.body, Body::VoteReply { granted: false });
}

/// Makes replica 0 of three the leader of term 1; returns it and the time.
fn leader() -> (Raft, Millis) {
    let mut r = replica(0, 3);
    let (now, _) = time_out(&mut r, 0);
    let mut out = Vec::new();
    r.step(
        now,
        msg(1, 1, Body::PreVoteReply { granted: true }),
        &mut out,
    );
    assert_eq!(r.term(), 1);
    r.step(now, msg(1, 1, Body::VoteReply { granted: true }), &mut out);
    assert_eq!(*r.role(), Role::Leader);
    (r, now)
}

#[test]
fn a_follower_that_hears_its_leader_ignores_votes_unless_leadership_is_handed_over() {
    let mut f = replica(1, 3);
    let mut out = Vec::new();
    let heartbeat = Body::Append {
        prev_index: 0,
        prev_term: 0,
        entries: vec![],
        commit: 0,
    };
    f.step(0, msg(0, 1, heartbeat), &mut out);
    let vote = |transfer| Body::Vote {
        last_index: 9,
        last_term: 1,
        transfer,
    };
    out.clear();
    f.step(10, msg(2, 2, vote(false)), &mut out);
    assert!(
        out.is_empty(),
        "a vote within the lease is ignored: {out:?}"
    );
    assert_eq!(f.term(), 1);
    f.step(10, msg(2, 2, vote(true)), &mut out);
    assert_eq!(f.term(), 2);
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| m.body == Body::VoteReply { granted: true })
    );
}

#[test]
fn entries_of_an_earlier_term_commit_only_under_one_of_the_current_term() {
    // Raft §5.4.2, Figure 8: replica 0 leads term 3 with an entry of term 2 at index 1 that
    // a majority holds; it must not commit it until its own no-op at index 2 is held too.
    let durable = durable_log(2, vec![unsigned(2, 1, Payload::Batch(Batch::null()))]);
    let mut r = Raft::new(cfg(), ValidatorId(0), 3, durable, 0, None, None);
    let (now, _) = time_out(&mut r, 0);
    let mut out = Vec::new();
    r.step(
        now,
        msg(1, 3, Body::PreVoteReply { granted: true }),
        &mut out,
    );
    r.step(now, msg(1, 3, Body::VoteReply { granted: true }), &mut out);
    assert_eq!((r.role(), r.term(), r.last_index()), (&Role::Leader, 3, 2));
    out.clear();
    r.step(
        now,
        msg(
            1,
            3,
            Body::AppendReply {
                success: true,
                index: 1,
            },
        ),
        &mut out,
    );
    assert_eq!(r.commit_index(), 0, "index 1 is of term 2");
    r.step(
        now,
        msg(
            1,
            3,
            Body::AppendReply {
                success: true,
                index: 2,
            },
        ),
        &mut out,
    );
    assert_eq!(r.commit_index(), 2);
    let committed: Vec<Index> = out
        .iter()
        .filter_map(|o| match o {
            RaftOutput::Commit(e) => Some(e.index),
            _ => None,
        })
        .collect();
    assert_eq!(committed, vec![1, 2]);
}

#[test]
fn a_leader_that_hears_no_majority_steps_down() {
    let (mut r, mut now) = leader();
    let mut stepped_down = false;
    for _ in 0..30 {
        now += 10;
        let mut out = Vec::new();
        r.step(now, RaftInput::Tick { entropy: now }, &mut out);
        stepped_down |= out
            .iter()
            .any(|o| matches!(o, RaftOutput::Event(RaftEvent::SteppedDown { .. })));
    }
    assert!(stepped_down);
    assert_ne!(*r.role(), Role::Leader);
}

#[test]
fn a_follower_replaces_conflicting_uncommitted_entries() {
    let old = |index| unsigned(1, index, Payload::Noop);
    let durable = durable_log(1, vec![old(1), old(2), old(3)]);
    let mut f = Raft::new(cfg(), ValidatorId(1), 3, durable, 0, None, None);
    let new = unsigned(2, 2, Payload::Batch(Batch::null()));
    let mut out = Vec::new();
    let append = Body::Append {
        prev_index: 1,
        prev_term: 1,
        entries: vec![new.clone()],
        commit: 1,
    };
    f.step(0, msg(0, 2, append), &mut out);
    assert!(out.contains(&RaftOutput::Persist(Record::Append {
        entries: vec![new.clone()]
    })));
    assert_eq!((f.last_index(), f.commit_index()), (2, 1));
    assert_eq!(f.entry(2), Some(&new));
    assert!(sends(&out).iter().any(|(_, m)| m.body
        == Body::AppendReply {
            success: true,
            index: 2
        }));
}

#[test]
fn a_follower_whose_chain_is_ahead_of_its_log_takes_entries_after_the_chain() {
    // A block sync brought the chain to 5, then the replica crashed before its log was reset:
    // the log holds 1–3, the chain 1–5. The leader's appends after 5 must be taken.
    let old = |index| unsigned(1, index, Payload::Noop);
    let durable = durable_log(1, vec![old(1), old(2), old(3)]);
    let mut f = Raft::new(cfg(), ValidatorId(1), 3, durable, 5, None, None);
    let next = unsigned(2, 6, Payload::Noop);
    let mut out = Vec::new();
    let append = Body::Append {
        prev_index: 5,
        prev_term: 1,
        entries: vec![next.clone()],
        commit: 6,
    };
    f.step(0, msg(0, 2, append), &mut out);
    assert!(out.contains(&RaftOutput::Persist(Record::Reset { index: 5, term: 1 })));
    assert!(out.contains(&RaftOutput::Commit(next)));
    assert!(sends(&out).iter().any(|(_, m)| m.body
        == Body::AppendReply {
            success: true,
            index: 6
        }));
}

#[test]
fn a_replica_whose_chain_replaced_its_log_restarts_from_the_chain() {
    // Found by a simulated seed (n = 5): a former leader's log holds its own term-2 entries
    // 1–6, never committed past 2. A block sync brought its chain to 4 with the entries the
    // cluster committed (term 3 from index 3), and the replica stopped before its log was
    // reset. Restarted, it must not count its term-2 entries 3–4 as committed: the log starts
    // again after the chain, and the leader's next append is taken.
    let entry = |term, index| unsigned(term, index, Payload::Noop);
    let durable = durable_log(2, (1..=6).map(|i| entry(2, i)).collect());
    let mut f = Raft::new(cfg(), ValidatorId(1), 3, durable.clone(), 4, Some(3), None);
    assert_eq!(f.commit_index(), 4);
    assert_eq!(
        f.last_index(),
        4,
        "the stale entries after the chain are gone"
    );
    let next = entry(3, 5);
    let append = Body::Append {
        prev_index: 4,
        prev_term: 3,
        entries: vec![next.clone()],
        commit: 5,
    };
    let mut out = Vec::new();
    f.step(0, msg(0, 3, append.clone()), &mut out);
    assert_eq!(
        out.first(),
        Some(&RaftOutput::Persist(Record::Reset { index: 4, term: 3 })),
        "the reset is durable before anything else the replica does"
    );
    assert!(out.contains(&RaftOutput::Commit(next)));
    assert!(sends(&out).iter().any(|(_, m)| m.body
        == Body::AppendReply {
            success: true,
            index: 5
        }));

    // Without the chain's term (the old behaviour) the replica takes its log as committed up
    // to 4 and refuses the leader's append, whatever it resends.
    let mut stale = Raft::new(cfg(), ValidatorId(1), 3, durable.clone(), 4, None, None);
    let mut out = Vec::new();
    stale.step(0, msg(0, 3, append), &mut out);
    assert!(
        sends(&out)
            .iter()
            .any(|(_, m)| matches!(m.body, Body::AppendReply { success: false, .. }))
    );

    // A log that agrees with the chain is kept as it is.
    let kept = Raft::new(cfg(), ValidatorId(1), 3, durable, 4, Some(2), None);
    assert_eq!(kept.last_index(), 6);
}

#[test]
fn a_stale_replica_is_not_elected() {
    // Classic bug: a replica that missed committed entries must not win an election. A
    // follower whose log ends with a term-2 entry refuses, to a candidate whose log ends in
    // term 1, both the pre-vote and the vote — however high the candidate's term.
    let entry = |term, index| unsigned(term, index, Payload::Noop);
    let durable = durable_log(2, vec![entry(1, 1), entry(2, 2)]);
    let mut f = Raft::new(cfg(), ValidatorId(1), 3, durable, 0, None, None);
    let mut out = Vec::new();
    let pre_vote = Body::PreVote {
        last_index: 5,
        last_term: 1,
    };
    f.step(1_000, msg(2, 9, pre_vote), &mut out);
    assert_eq!(sends(&out)[0].1.body, Body::PreVoteReply { granted: false });
    assert_eq!(f.term(), 2, "a pre-vote changes nothing");
    out.clear();
    let vote = Body::Vote {
        last_index: 5,
        last_term: 1,
        transfer: false,
    };
    f.step(1_000, msg(2, 9, vote), &mut out);
    assert_eq!(sends(&out)[0].1.body, Body::VoteReply { granted: false });
    assert_eq!((f.term(), f.voted_for()), (9, None));
}

/// Elections stuck under pre-vote (the etcd bug class): a replica whose term is ahead of the
/// others' (it campaigned before) but whose log is behind refuses their pre-votes, and cannot
/// win itself. The others must learn its term from the refusals and still elect one of
/// themselves, instead of pre-voting in a lower term forever.
#[test]
fn elections_are_not_stuck_under_pre_vote() {
    let entry = |index| unsigned(1, index, Payload::Noop);
    let up_to_date = durable_log(1, (1..=3).map(entry).collect());
    let ahead_but_stale = Durable {
        term: 5,
        voted_for: Some(ValidatorId(2)),
        ..Durable::default()
    };
    let mut rs = [
        Raft::new(cfg(), ValidatorId(0), 3, up_to_date.clone(), 0, None, None),
        Raft::new(cfg(), ValidatorId(1), 3, up_to_date, 0, None, None),
        Raft::new(cfg(), ValidatorId(2), 3, ahead_but_stale, 0, None, None),
    ];
    let mut now = 0;
    let mut leader = None;
    // Every message delivered at the next tick; 5 s of time at most.
    let mut in_flight: Vec<(ValidatorId, Message)> = Vec::new();
    while now < 5_000 && leader.is_none() {
        now += 5;
        let mut next = Vec::new();
        for (to, m) in in_flight.drain(..) {
            let mut out = Vec::new();
            rs[to.0 as usize].step(now, RaftInput::Message(m), &mut out);
            next.extend(sends(&out));
        }
        for r in rs.iter_mut() {
            let mut out = Vec::new();
            r.step(now, RaftInput::Tick { entropy: now }, &mut out);
            next.extend(sends(&out));
        }
        in_flight = next;
        leader = rs.iter().position(|r| *r.role() == Role::Leader);
    }
    let leader = leader.expect("no leader within 5 s");
    assert_ne!(leader, 2, "the replica with the stale log cannot lead");
    assert!(
        rs[leader].term() > 5,
        "the leader's term passed the stale replica's"
    );
}

/// A follower deleting committed entries after compaction (the classic bug class): a late,
/// duplicated append from its leader that starts below the follower's compacted base must
/// neither rewrite nor drop anything — entries up to the base are executed, hence committed —
/// and is acknowledged up to what the follower holds.
#[test]
fn a_follower_does_not_delete_committed_entries_after_compaction() {
    let entry = |index| unsigned(2, index, Payload::Batch(Batch::null()));
    let durable = Durable {
        term: 2,
        voted_for: Some(ValidatorId(0)),
        base_index: 10,
        base_term: 2,
        entries: vec![entry(11), entry(12)],
    };
    let mut f = Raft::new(cfg(), ValidatorId(1), 3, durable, 10, None, None);
    for (prev, last) in [(4, 12), (4, 8), (9, 11)] {
        let mut out = Vec::new();
        let append = Body::Append {
            prev_index: prev,
            prev_term: 2,
            entries: (prev + 1..=last).map(entry).collect(),
            commit: 12,
        };
        f.step(1, msg(0, 2, append), &mut out);
        // Nothing at or below the base is written again, nothing is reset or truncated.
        for o in &out {
            match o {
                RaftOutput::Persist(Record::Append { entries }) => {
                    assert!(entries.iter().all(|e| e.index > 12), "{entries:?}")
                }
                RaftOutput::Persist(Record::Reset { .. }) => panic!("reset after {prev}"),
                _ => {}
            }
        }
        let acked = sends(&out).into_iter().find_map(|(_, m)| match m.body {
            Body::AppendReply { success, index } => Some((success, index)),
            _ => None,
        });
        assert_eq!(acked, Some((true, last.max(10))), "append after {prev}");
        assert_eq!((f.base_index(), f.last_index()), (10, 12));
        assert!(f.entry(11).is_some() && f.entry(12).is_some());
    }
}

#[test]
fn a_wiped_follower_is_not_sent_the_same_refused_append_forever() {
    // Replica 1 acknowledged the leader's no-op (index 1), then lost its disk: it refuses the
    // next append, saying it holds nothing. The leader must go back to what it says (before,
    // it kept its stale match and resent the same append at once, forever: ≈ 150,000
    // messages a second between two real processes).
    let (mut r, now) = leader();
    let mut out = Vec::new();
    r.step(
        now,
        msg(
            1,
            1,
            Body::AppendReply {
                success: true,
                index: 1,
            },
        ),
        &mut out,
    );
    assert_eq!(r.commit_index(), 1);
    let refused = || {
        msg(
            1,
            1,
            Body::AppendReply {
                success: false,
                index: 0,
            },
        )
    };
    out.clear();
    r.step(now + 1, refused(), &mut out);
    let first = sends(&out);
    assert!(
        matches!(
            first.as_slice(),
            [(to, Message { body: Body::Append { prev_index: 0, .. }, .. })] if *to == ValidatorId(1)
        ),
        "the leader resends from what the follower holds: {first:?}"
    );
    assert_eq!(r.commit_index(), 1, "the commit index never goes back");
    // The same refusal again (a late duplicate, or a follower that keeps refusing) teaches
    // nothing: no append until the next heartbeat, which probes the same place once.
    out.clear();
    r.step(now + 2, refused(), &mut out);
    assert!(
        sends(&out).is_empty(),
        "no answer to a refusal that taught nothing"
    );
    for k in 3..r.cfg.heartbeat_ms {
        out.clear();
        r.step(now + k, refused(), &mut out);
        assert!(sends(&out).is_empty(), "refusal {k} within one heartbeat");
    }
    out.clear();
    let at = now + 50 + r.cfg.heartbeat_ms;
    r.step(at, RaftInput::Tick { entropy: at }, &mut out);
    let probes: Vec<_> = sends(&out)
        .into_iter()
        .filter(|(to, _)| *to == ValidatorId(1))
        .collect();
    assert_eq!(probes, first, "the heartbeat probes the same place once");
}
