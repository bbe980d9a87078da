//! Unit tests of the Multi-Paxos core: replicas driven by hand, one rule each.

use super::*;

fn cfg(n: usize) -> PaxosConfig {
    PaxosConfig {
        election_ms: 100,
        heartbeat_ms: 20,
        lease_ms: 50,
        ..PaxosConfig::majorities(n)
    }
}

fn msg(from: u16, body: Body) -> PaxosInput {
    PaxosInput::Message(Message {
        from: ValidatorId(from),
        body,
    })
}

fn sent(out: &[PaxosOutput]) -> Vec<(ValidatorId, Body)> {
    out.iter()
        .filter_map(|o| match o {
            PaxosOutput::Send { to, msg } => Some((*to, msg.body.clone())),
            _ => None,
        })
        .collect()
}

/// Ticks replica `p` until it starts phase 1; returns the time and its ballot.
fn start_phase1(p: &mut Paxos, from: Millis) -> Millis {
    let mut now = from;
    loop {
        now += 10;
        let mut out = Vec::new();
        p.step(now, PaxosInput::Tick { entropy: now }, &mut out);
        if *p.role() == Role::Preparing {
            return now;
        }
        assert!(now < from + 1_000);
    }
}

#[test]
fn phase_one_keeps_the_highest_ballot_value_and_fills_gaps_with_no_ops() {
    let mut p = Paxos::new(cfg(3), ValidatorId(0), 3, Durable::default(), 0, 0, None);
    let now = start_phase1(&mut p, 100);
    let ballot = p.ballot();
    let old = Ballot {
        round: 0,
        node: ValidatorId(2),
    };
    let older = Ballot {
        round: 0,
        node: ValidatorId(1),
    };
    let value = |b: u8| Payload {
        value: Value::Batch(Batch {
            txs: vec![tally_crypto::Digest([b; 32])],
        }),
        proposer: older,
        signature: tally_crypto::Signature([0; 64]),
    };
    let mut out = Vec::new();
    let promise = Body::Promise {
        ballot,
        base: 0,
        // Slot 1 accepted twice (the higher ballot wins), slot 3 once, slot 2 never.
        accepted: vec![
            (1, older, value(1)),
            (1, old, value(2)),
            (3, older, value(3)),
        ],
    };
    p.step(now, msg(1, promise), &mut out);
    assert_eq!(*p.role(), Role::Leader);
    let accepts: Vec<(Slot, Value)> = sent(&out)
        .into_iter()
        .filter(|(to, _)| *to == ValidatorId(1))
        .filter_map(|(_, b)| match b {
            Body::Accept { slot, payload, .. } => Some((slot, payload.value)),
            _ => None,
        })
        .collect();
    assert_eq!(
        accepts[..3],
        [(1, value(2).value), (2, Value::Noop), (3, value(3).value)]
    );
}

#[test]
fn a_leased_acceptor_promises_no_one_else_and_a_restarted_one_no_one_at_all() {
    let leader = Ballot {
        round: 1,
        node: ValidatorId(0),
    };
    let rival = Ballot {
        round: 2,
        node: ValidatorId(2),
    };
    let prepare = Body::Prepare {
        ballot: rival,
        from_slot: 1,
    };
    // Restarted at 0: no promise before lease_ms.
    let mut a = Paxos::new(cfg(3), ValidatorId(1), 3, Durable::default(), 0, 0, None);
    let mut out = Vec::new();
    a.step(10, msg(2, prepare.clone()), &mut out);
    assert!(matches!(sent(&out)[0].1, Body::Nack { .. }));
    // A heartbeat's acknowledgement gives the leader lease_ms of this clock.
    out.clear();
    a.step(
        100,
        msg(
            0,
            Body::Heartbeat {
                ballot: leader,
                commit: 0,
                seq: 1,
            },
        ),
        &mut out,
    );
    assert_eq!(
        sent(&out)[0].1,
        Body::HeartbeatAck {
            ballot: leader,
            seq: 1
        }
    );
    out.clear();
    a.step(140, msg(2, prepare.clone()), &mut out);
    assert!(
        matches!(sent(&out)[0].1, Body::Nack { .. }),
        "inside the lease"
    );
    // Past the lease but within an election timeout of hearing the leader: still no promise
    // to another proposer (stickiness: a replica that cannot hear a live leader must not
    // depose it through the others).
    out.clear();
    a.step(151, msg(2, prepare.clone()), &mut out);
    assert!(
        matches!(sent(&out)[0].1, Body::Nack { .. }),
        "within an election timeout of hearing the leader"
    );
    out.clear();
    a.step(201, msg(2, prepare), &mut out);
    assert!(out.contains(&PaxosOutput::Persist(Record::Promise { ballot: rival })));
    assert!(matches!(sent(&out).last().unwrap().1, Body::Promise { .. }));
}

#[test]
fn a_leader_holds_its_lease_only_with_acknowledgements_from_every_phase_one_quorum() {
    // n = 5, q1 = 4, q2 = 2: a phase-1 quorum leaves out one acceptor, so the lease needs
    // n − q1 + 1 = 2 acknowledgements (the leader's own and one more).
    let mut c = cfg(5);
    (c.q1, c.q2) = (4, 2);
    assert_eq!(c.check(5), Ok(()));
    let mut p = Paxos::new(c, ValidatorId(0), 5, Durable::default(), 0, 0, None);
    let now = start_phase1(&mut p, 100);
    let ballot = p.ballot();
    let mut out = Vec::new();
    for from in 1..=3 {
        p.step(
            now,
            msg(
                from,
                Body::Promise {
                    ballot,
                    base: 0,
                    accepted: vec![],
                },
            ),
            &mut out,
        );
    }
    assert_eq!(*p.role(), Role::Leader);
    assert!(!p.lease_valid(now), "no acknowledgement yet");
    p.step(
        now + 5,
        msg(1, Body::HeartbeatAck { ballot, seq: 1 }),
        &mut out,
    );
    assert!(p.lease_valid(now + 5));
    // lease_ms · (1 − drift) = 45 from the heartbeat's sending.
    assert!(!p.lease_valid(now + 45));
}

#[test]
fn no_lease_read_across_a_leader_change() {
    // Classic bug: a leader answering reads from its lease after another took over. Here
    // the leader holds a lease; a rival's prepare reaches it (it is also an acceptor). While
    // it heard a quorum within an election timeout it refuses (a replica that cannot hear the
    // leader but reaches it — a one-way partition — must not depose it); after that it
    // promises the rival, and from that moment it no longer leads and no longer claims the lease — the
    // rival cannot finish phase 1 without that promise or the leased acceptor's.
    let mut p = Paxos::new(cfg(3), ValidatorId(0), 3, Durable::default(), 0, 0, None);
    let now = start_phase1(&mut p, 100);
    let ballot = p.ballot();
    let mut out = Vec::new();
    p.step(
        now,
        msg(
            1,
            Body::Promise {
                ballot,
                base: 0,
                accepted: vec![],
            },
        ),
        &mut out,
    );
    assert_eq!(*p.role(), Role::Leader);
    p.step(
        now + 1,
        msg(1, Body::HeartbeatAck { ballot, seq: 1 }),
        &mut out,
    );
    assert!(p.lease_valid(now + 2));
    let rival = Ballot {
        round: ballot.round + 1,
        node: ValidatorId(2),
    };
    let prepare = || {
        msg(
            2,
            Body::Prepare {
                ballot: rival,
                from_slot: 1,
            },
        )
    };
    out.clear();
    p.step(now + 3, prepare(), &mut out);
    assert!(
        !out.contains(&PaxosOutput::Persist(Record::Promise { ballot: rival })),
        "a leader under its lease promised a rival"
    );
    assert_eq!(*p.role(), Role::Leader);
    assert!(p.lease_valid(now + 3));
    // The lease runs out and no quorum has been heard for an election timeout (no heartbeat
    // acknowledged since): the rival's prepare is promised.
    let later = now + 1 + cfg(3).election_ms;
    assert!(!p.lease_valid(later));
    out.clear();
    p.step(later, prepare(), &mut out);
    assert!(out.contains(&PaxosOutput::Persist(Record::Promise { ballot: rival })));
    assert!(
        !p.lease_valid(later),
        "a leader that promised a rival serves no lease read"
    );
    assert_ne!(*p.role(), Role::Leader);
}

#[test]
fn a_replica_whose_election_failed_follows_the_leader_again_and_deposes_no_one() {
    // Classic bug (Raft's disruptive rejoining node): a replica cut from the leader keeps
    // starting elections the others refuse; if each raised its own promise, the first
    // heartbeat it hears after healing would be refused with a higher ballot, and the leader
    // would step down though a quorum follows it. Its own acceptor promises only once the
    // others' promises would make a quorum, so here it follows the leader again.
    let mut p = Paxos::new(cfg(3), ValidatorId(2), 3, Durable::default(), 0, 0, None);
    let mut now = 100;
    for _ in 0..3 {
        now = start_phase1(&mut p, now);
        assert!(p.ballot().round >= 1);
    }
    let leader = Ballot {
        round: 1,
        node: ValidatorId(0),
    };
    let mut out = Vec::new();
    p.step(
        now + 1,
        msg(
            0,
            Body::Heartbeat {
                ballot: leader,
                commit: 0,
                seq: 7,
            },
        ),
        &mut out,
    );
    assert_eq!(
        sent(&out),
        vec![(
            ValidatorId(0),
            Body::HeartbeatAck {
                ballot: leader,
                seq: 7
            }
        )],
        "the leader's heartbeat is acknowledged, not refused with a higher ballot"
    );
    assert_eq!(*p.role(), Role::Follower);
    assert!(
        !out.iter()
            .any(|o| matches!(o, PaxosOutput::Persist(Record::Promise { .. })))
    );
}

#[test]
fn a_leader_refused_with_its_own_ballot_from_before_a_restart_runs_phase_one_above_it() {
    // Found by the simulator (n = 5): a replica started an election, one acceptor promised
    // it, the replica crashed before its own promise (so the ballot was never persisted),
    // restarted and won a lower ballot. That acceptor refused every accept and heartbeat with
    // the higher ballot — the leader's own — and stayed behind for ever.
    let mut p = Paxos::new(cfg(3), ValidatorId(0), 3, Durable::default(), 0, 0, None);
    let now = start_phase1(&mut p, 100);
    let ballot = p.ballot();
    let mut out = Vec::new();
    let promise = Body::Promise {
        ballot,
        base: 0,
        accepted: vec![],
    };
    p.step(now, msg(1, promise), &mut out);
    assert_eq!(*p.role(), Role::Leader);
    let forgotten = Ballot {
        round: ballot.round + 3,
        node: ValidatorId(0),
    };
    let mut out = Vec::new();
    let nack = Body::Nack {
        ballot,
        promised: forgotten,
    };
    p.step(now + 1, msg(2, nack.clone()), &mut out);
    assert_eq!(*p.role(), Role::Preparing);
    assert!(p.ballot() > forgotten);
    let prepares = sent(&out)
        .into_iter()
        .filter(|(_, b)| matches!(b, Body::Prepare { ballot, .. } if *ballot == p.ballot()))
        .count();
    assert_eq!(prepares, 2, "phase 1 again, to both other acceptors");
    // A repeated refusal naming the old ballot changes nothing more.
    let mut out = Vec::new();
    p.step(now + 2, msg(2, nack), &mut out);
    assert!(sent(&out).is_empty());
}
