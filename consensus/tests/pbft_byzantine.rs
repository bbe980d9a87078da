//! Regressions for what a read of the code (at 6de98d4) found a lying validator could do,
//! one test per finding, named after it (issue 18). Each failed on that code.

mod support;

use support::*;
use tally_consensus::pbft::messages::{
    CheckpointCert, PreparedCert, worst_case_new_view_bytes, worst_case_view_change_bytes,
};
use tally_consensus::pbft::{Message, NewView, Pbft, Record, Status, ViewChange, ViewChangeProofs};
use tally_consensus::protocol::{Event, Input, Output, Protocol, ViewChangeReason};
use tally_consensus::{Batch, Seq, ValidatorId, View};
use tally_crypto::Digest;

fn asks_driver(out: &[Output]) -> bool {
    out.iter().any(|o| {
        matches!(
            o,
            Output::Validate { .. } | Output::FetchPayload { .. } | Output::FetchState { .. }
        )
    })
}

/// Finding 1 (the core's side): a PRE-PREPARE the core does not accept — from a backup, for
/// a stale view, outside the watermarks, over the batch limit, a second digest for a
/// `(view, seq)` — asks nothing of the driver: no transaction is looked up, fetched or set
/// aside. One for a future view is held (bounded, see finding 3) and asks for nothing until
/// the replica is in that view and its sender is that view's primary.
#[test]
fn finding_1_pre_prepares_the_core_refuses_ask_nothing_of_the_driver() {
    let h = H::new(4);
    let mut r = h.replica(2, &[], 0);
    let big = Batch {
        txs: (0..65u32).map(|i| Digest::of(&i.to_le_bytes())).collect(),
    };
    let refused = [
        (h.pre_prepare(3, 0, 1, &batch(1)), "not_primary"),
        (h.pre_prepare(0, 0, L + 1, &batch(1)), "outside_window"),
        (h.pre_prepare(0, 0, 1, &big), "batch_too_large"),
    ];
    for (msg, why) in refused {
        let out = step(&mut r, 0, h.input(msg));
        assert!(!asks_driver(&out), "{why}: {out:?}");
        assert!(rejected(&out, why), "{why}: {out:?}");
    }
    // A future view: held, nothing asked.
    let out = step(&mut r, 0, h.input(h.pre_prepare(1, 1, 1, &batch(7))));
    assert!(!asks_driver(&out));
    // Accepted once: asked once; a conflicting one for the same slot asks nothing.
    let out = step(&mut r, 0, h.input(h.pre_prepare(0, 0, 1, &batch(1))));
    assert_eq!(validations(&out).len(), 1);
    let out = step(&mut r, 0, h.input(h.pre_prepare(0, 0, 1, &batch(2))));
    assert!(!asks_driver(&out));
    // Stale: once in view 1 (via NEW-VIEW), view 0's pre-prepares ask nothing.
    let nv = h.new_view(1, &[0, 2, 3], vec![], vec![]);
    let out = step(&mut r, 0, h.input(nv));
    assert_eq!(r.view(), View(1));
    // The held pre-prepare of view 1 (from its primary, 1) is examined now, and only now.
    assert_eq!(validations(&out), vec![(View(1), Seq(1), batch(7))]);
    let out = step(&mut r, 0, h.input(h.pre_prepare(0, 0, 2, &batch(3))));
    assert!(!asks_driver(&out));
    assert!(rejected(&out, "stale_view"));
}

/// Finding 2: view-change timeouts double on every successive view change until a request
/// commits in the new view — also when a NEW-VIEW came and then nothing committed — and the
/// view-change timer starts when 2f+1 VIEW-CHANGEs are held, not when the replica sends its
/// own (TOCS'02 §4.5.2).
#[test]
fn finding_2_view_change_timeouts_double_until_a_request_commits_in_the_new_view() {
    let h = H::new(4);
    // (a) Alone in its view change, a replica does not time out into the next view.
    let mut r = h.replica(2, &[], 0);
    let mut now = 0;
    step(&mut r, now, tick(true));
    while r.view() == View(0) {
        now += 5;
        step(&mut r, now, tick(true));
    }
    let started = now;
    while now < started + 20 * TIMEOUT {
        now += 5;
        step(&mut r, now, tick(true));
    }
    assert_eq!(r.view(), View(1), "no timer without 2f+1 VIEW-CHANGEs");

    // (b) Each view change completes (a NEW-VIEW with an empty O) and then nothing commits:
    // the time from entering view v to giving up on it doubles.
    let new_view = |view: u64| h.new_view(view, &[0, 1, 3], vec![], vec![]);
    let mut r = h.replica(2, &[], 0);
    let mut now = 0;
    let mut spent = Vec::new();
    for view in 1..=3u64 {
        let entered = now;
        loop {
            now += 5;
            let out = step(&mut r, now, tick(true));
            if out.iter().any(|o| {
                matches!(
                    o,
                    Output::Event(Event::ViewChangeStarted {
                        reason: ViewChangeReason::Timeout,
                        ..
                    })
                )
            }) {
                break;
            }
            assert!(
                now < entered + 100 * TIMEOUT,
                "view {} never timed out",
                view - 1
            );
        }
        spent.push(now - entered);
        if view != 2 {
            // Skip view 2's primary: replica 2 itself.
            step(&mut r, now, h.input(new_view(view)));
            assert_eq!((r.view(), r.status()), (View(view), Status::Normal));
        } else {
            // As the primary of view 2 it sends the NEW-VIEW itself once it holds 2f+1.
            for from in [0u16, 1] {
                step(&mut r, now, h.input(h.view_change(from, 2, vec![])));
            }
            assert_eq!((r.view(), r.status()), (View(2), Status::Normal));
        }
    }
    // View 0: T; view 1 (after one view change): T; view 2 (after two): 2T.
    assert!(spent[0] >= TIMEOUT && spent[0] < TIMEOUT + 20, "{spent:?}");
    assert!(spent[1] >= TIMEOUT && spent[1] < TIMEOUT + 20, "{spent:?}");
    assert!(
        spent[2] >= 2 * TIMEOUT && spent[2] < 2 * TIMEOUT + 20,
        "{spent:?}"
    );

    // (c) A request committed in the new view ends the backoff.
    let mut r = h.replica(1, &[], 0);
    let mut now = 0;
    step(&mut r, now, tick(true));
    while r.view() == View(0) {
        now += 5;
        step(&mut r, now, tick(true));
    }
    for from in [2u16, 3] {
        step(&mut r, now, h.input(h.view_change(from, 1, vec![])));
    }
    assert_eq!(
        (r.view(), r.status()),
        (View(1), Status::Normal),
        "primary of view 1"
    );
    // As primary of view 1 it proposes; the others commit it.
    let b = batch(5);
    let out = step(&mut r, now, Input::Propose(b.clone()));
    let seq = broadcasts(&out)
        .iter()
        .find_map(|m| match m {
            Message::PrePrepare(p, _) => Some(p.body.seq.0),
            _ => None,
        })
        .expect("proposed");
    for from in [2u16, 3] {
        step(&mut r, now, h.input(h.prepare(from, 1, seq, b.digest())));
        let out = step(&mut r, now, h.input(h.commit(from, 1, seq, b.digest())));
        if from == 3 {
            assert_eq!(commits(&out), vec![Seq(seq)]);
        }
    }
    let entered = now;
    loop {
        now += 5;
        let out = step(&mut r, now, tick(true));
        if out
            .iter()
            .any(|o| matches!(o, Output::Event(Event::ViewChangeStarted { .. })))
        {
            break;
        }
    }
    assert!(
        now - entered < TIMEOUT + 20,
        "back to the base timeout: {}",
        now - entered
    );
}

/// Finding 3: a validator signing CHECKPOINTs for ever larger sequence numbers, and PREPAREs
/// and COMMITs for ever new digests and views, cannot grow a replica's memory: 100,000 of
/// each leave it within the stated bound, and far below it.
#[test]
fn finding_3_checkpoint_and_vote_floods_are_bounded() {
    let h = H::new(4);
    let mut r = h.replica(1, &[], 0);
    let bound = r.footprint_bound();
    let mut peak = r.footprint();
    for i in 0..100_000u64 {
        let msg = match i % 4 {
            0 => h.checkpoint(3, K * (i + 1), Digest::of(&i.to_le_bytes())),
            1 => h.checkpoint(3, K * (1 + i % (L / K)), Digest::of(&i.to_le_bytes())),
            2 => h.prepare(3, i % 3, 1 + i % L, Digest::of(&i.to_le_bytes())),
            _ => h.commit(3, i % 5, 1 + i % (L + 2), Digest::of(&i.to_le_bytes())),
        };
        step(&mut r, 0, h.input(msg));
        peak = peak.max(r.footprint());
    }
    assert!(peak.within(&bound), "{peak:?} within {bound:?}");
    // What one sender can make it keep: its checkpoint votes (L/K + 1), one vote per slot
    // and kind in the current view, and its future-view budget.
    assert!(peak.messages < 4 * L as usize + 200, "{peak:?}");
    assert!(peak.bytes <= 64 * 1024 + 40_000, "{peak:?}");
}

/// Finding 4 (the core's side): a replica whose block at a stable checkpoint differs from
/// the certified one stops voting and executing, asks for a repair, and resumes once the
/// driver reports the certified state installed.
#[test]
fn finding_4_a_diverged_replica_stops_voting_and_asks_for_repair() {
    let h = H::new(4);
    let mut r = h.replica(1, &[], 0);
    for seq in 1..=K {
        commit_at(&h, &mut r, seq, &batch(seq as u8));
        executed(&mut r, seq, &batch(seq as u8), Digest::of(&[seq as u8, 1]));
    }
    let certified = Digest::of(b"the others' block at K");
    let mut out = Vec::new();
    for from in [0u16, 2, 3] {
        out.extend(step(&mut r, 0, h.input(h.checkpoint(from, K, certified))));
    }
    let (target, own) = out
        .iter()
        .find_map(|o| match o {
            Output::RepairState {
                certified,
                own_hash,
            } => Some((certified.clone(), *own_hash)),
            _ => None,
        })
        .expect("asks for a repair");
    assert_eq!((target.seq, target.block_hash), (Seq(K), certified));
    assert_eq!(own, Some(Digest::of(&[K as u8, 1])));
    assert!(
        persisted(&out)
            .iter()
            .any(|r| matches!(r, Record::Repair(c) if c.seq == Seq(K)))
    );
    assert!(r.is_diverged());
    assert_eq!(
        r.stable_checkpoint(),
        Seq(K),
        "it follows the certified checkpoint"
    );
    // Diverged: no PREPARE, no COMMIT, no CHECKPOINT, no execution.
    let b = batch(20);
    let mut out = accept(&h, &mut r, 0, K + 1, &b);
    out.extend(step(&mut r, 0, h.input(h.prepare(2, 0, K + 1, b.digest()))));
    out.extend(step(&mut r, 0, h.input(h.prepare(3, 0, K + 1, b.digest()))));
    for from in [0u16, 2, 3] {
        out.extend(step(
            &mut r,
            0,
            h.input(h.commit(from, 0, K + 1, b.digest())),
        ));
    }
    assert!(broadcasts(&out).is_empty(), "{out:?}");
    assert!(commits(&out).is_empty());
    // A restart keeps it diverged (the repair is persisted).
    let records: Vec<Record> = persisted(&out);
    let _ = records;
    // The driver installs the certified state: voting and execution resume, and the commit
    // the replica collected meanwhile is executed.
    let out = step(
        &mut r,
        0,
        Input::Repaired {
            seq: Seq(K),
            block_hash: certified,
        },
    );
    assert!(!r.is_diverged());
    assert_eq!(commits(&out), vec![Seq(K + 1)]);
    assert!(
        persisted(&out)
            .iter()
            .any(|r| matches!(r, Record::Repair(c) if c.seq == Seq(0)))
    );
    let b2 = batch(21);
    let out = accept(&h, &mut r, 0, K + 2, &b2);
    assert!(matches!(broadcasts(&out)[0], Message::Prepare(p) if p.body.seq == Seq(K + 2)));
}

/// A diverged replica that restarts resumes its repair rather than voting on the state it
/// knows is wrong.
#[test]
fn finding_4_a_restart_resumes_the_repair() {
    let h = H::new(4);
    let cert = h.checkpoint_cert(K, Digest::of(b"certified"), &[0, 2, 3]);
    let records = vec![Record::Stable(cert.clone()), Record::Repair(cert.clone())];
    let mut r = h.replica(1, &records, K + 3);
    assert!(r.is_diverged());
    let out = step(&mut r, 0, tick(false));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::RepairState { certified, .. } if *certified == cert))
    );
    let out = accept(&h, &mut r, 0, K + 4, &batch(1));
    assert!(broadcasts(&out).is_empty());
}

/// Finding 5: an equivocation is caught also when one of the two statements arrives inside
/// a VIEW-CHANGE's proofs or a NEW-VIEW, and the evidence verifies with only the genesis
/// keys (and fails when tampered with).
#[test]
fn finding_5_equivocation_inside_view_change_proofs_is_evidence() {
    let h = H::new(4);
    let mut r = h.replica(1, &[], 0);
    accept(&h, &mut r, 0, 1, &batch(1));
    // Replica 2's view change proves that primary 0 also pre-prepared batch 2 at (0, 1).
    let other = h.prepared_cert(0, 1, batch(2).digest());
    let out = step(&mut r, 0, h.input(h.view_change(2, 1, vec![other])));
    let evidence: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Evidence(e) => Some(e.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(evidence.len(), 1, "{out:?}");
    let e = &evidence[0];
    assert_eq!((e.validator(), e.kind()), (ValidatorId(0), "pre_prepare"));
    e.verify(&h.set, &h.chain).unwrap();
    // The raw encoding round-trips; a tampered copy does not verify.
    let decoded = tally_consensus::pbft::Evidence::decode(&e.encode()).unwrap();
    assert_eq!(&decoded, e);
    let mut bytes = e.encode();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    let tampered = tally_consensus::pbft::Evidence::decode(&bytes).unwrap();
    assert!(tampered.verify(&h.set, &h.chain).is_err());
    // Two statements that do not conflict are not evidence.
    let same = tally_consensus::pbft::Evidence {
        first: e.first.clone(),
        second: e.first.clone(),
    };
    assert!(same.verify(&h.set, &h.chain).is_err());

    // A NEW-VIEW's O and a normal-case PRE-PREPARE of the same view, for one sequence number,
    // from the same primary: O re-issues a null batch at 1 (a gap below the claim at 2), then
    // primary 1 pre-prepares a batch at 1.
    let mut r = h.replica(2, &[], 0);
    let cert = h.prepared_cert(0, 2, batch(2).digest());
    let vcs: Vec<_> = [(0u16, vec![cert.clone()]), (1, vec![]), (3, vec![])]
        .into_iter()
        .map(|(from, certs)| h.view_change_parts(from, 1, certs).0)
        .collect();
    let nv = Message::NewView(h.sign(
        1,
        NewView {
            view: View(1),
            view_changes: vcs,
            stable: CheckpointCert::default(),
            pre_prepares: vec![
                h.signed_pre_prepare(1, 1, 1, Batch::null().digest()),
                h.signed_pre_prepare(1, 1, 2, batch(2).digest()),
            ],
            proofs: vec![cert],
        },
    ));
    step(&mut r, 0, h.input(nv));
    assert_eq!(r.view(), View(1));
    let out = step(&mut r, 0, h.input(h.pre_prepare(1, 1, 1, &batch(9))));
    assert!(
        out.iter().any(|o| matches!(o, Output::Evidence(e) if e.validator() == ValidatorId(1) && e.kind() == "pre_prepare")),
        "{out:?}"
    );
    // And a prepared certificate inside a later view change showing that primary signing
    // yet another batch at (1, 1).
    let conflicting: PreparedCert = h.prepared_cert(1, 1, batch(8).digest());
    let mut r = h.replica(2, &[], 0);
    step(
        &mut r,
        0,
        h.input(h.new_view(1, &[0, 1, 3], vec![], vec![])),
    );
    accept(&h, &mut r, 1, 1, &batch(1));
    let out = step(&mut r, 0, h.input(h.view_change(3, 2, vec![conflicting])));
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Evidence(e) if e.validator() == ValidatorId(1) && e.kind() == "pre_prepare")),
        "{out:?}"
    );
}

/// Finding 6: view-change messages carry digests, not batches, so their size is bounded by
/// the validator count and the window alone. The worst case — every claim with a full
/// certificate, batches of the largest size — is built here and stays within the bound,
/// which for the default window of 256 is a few megabytes even at 128 validators, far under
/// the 64 MiB frame.
#[test]
fn finding_6_view_change_messages_are_bounded_by_design() {
    for (n, window) in [(4usize, 256u64), (7, 256), (31, 256), (128, 256)] {
        let h = H::new(n);
        let big = Batch {
            txs: (0..65_536u32)
                .map(|i| Digest::of(&i.to_le_bytes()))
                .collect(),
        };
        let digest = big.digest();
        let certs: Vec<PreparedCert> = (1..=window)
            .map(|seq| h.prepared_cert(0, seq, digest))
            .collect();
        let stable = h.checkpoint_cert(0, Digest::ZERO, &[]);
        let vc_body = |from: u16| {
            h.sign(
                from,
                ViewChange {
                    new_view: View(1),
                    stable_seq: Seq(0),
                    stable_hash: Digest::ZERO,
                    prepared: certs.iter().map(|c| c.claim()).collect(),
                },
            )
        };
        let vc = Message::ViewChange(
            vc_body(2 % n as u16),
            ViewChangeProofs {
                stable: stable.clone(),
                prepared: certs.clone(),
            },
        );
        let vc_bytes = vc.encode().len() as u64;
        assert_eq!(vc.wire_size() as u64, vc_bytes, "n {n}");
        let quorum = h.set.quorum();
        let primary = 1u16 % n as u16;
        let nv = Message::NewView(
            h.sign(
                primary,
                NewView {
                    view: View(1),
                    view_changes: (0..quorum as u16).map(vc_body).collect(),
                    stable,
                    pre_prepares: (1..=window)
                        .map(|seq| h.signed_pre_prepare(primary, 1, seq, digest))
                        .collect(),
                    proofs: certs,
                },
            ),
        );
        let nv_bytes = nv.encode().len() as u64;
        assert_eq!(nv.wire_size() as u64, nv_bytes, "n {n}");
        assert!(
            vc_bytes <= worst_case_view_change_bytes(n, window),
            "n {n}: {vc_bytes}"
        );
        assert!(
            nv_bytes <= worst_case_new_view_bytes(n, window),
            "n {n}: {nv_bytes}"
        );
        assert!(
            nv_bytes < 16 * 1024 * 1024,
            "n {n}: NEW-VIEW of {nv_bytes} bytes"
        );
        // The batches do not enter: the same messages with one-transaction batches are
        // exactly as large.
        assert!(
            vc_bytes < 64 * 1024 * 1024 && big.txs.len() * 32 * window as usize > 64 * 1024 * 1024
        );
    }
}

/// Finding 7: after a restart, a replica never votes for a digest at a sequence number whose
/// block it executed with another digest, nor at an executed one whose digest it no longer
/// knows — whatever its persisted votes (here, none: they were pruned or lost).
#[test]
fn finding_7_restarted_replica_never_votes_against_what_it_executed() {
    let h = H::new(4);
    let executed_batch = batch(1);
    let mut r = h.replica_with(1, &[], 5, &[(Seq(5), executed_batch.digest())]);
    let out = step(&mut r, 0, h.input(h.pre_prepare(0, 0, 5, &batch(2))));
    assert!(rejected(&out, "pre_prepare_conflicts_with_executed"));
    assert!(!asks_driver(&out));
    // The digest it executed: fine.
    let out = accept(&h, &mut r, 0, 5, &executed_batch);
    assert!(matches!(broadcasts(&out)[0], Message::Prepare(p) if p.body.seq == Seq(5)));
    // Executed, digest unknown (not in `recent`): no vote at all.
    let out = step(&mut r, 0, h.input(h.pre_prepare(0, 0, 3, &batch(3))));
    assert!(rejected(&out, "pre_prepare_conflicts_with_executed"));
    // A NEW-VIEW re-issuing another digest at the executed sequence number installs nothing
    // there.
    let mut r = h.replica_with(2, &[], 1, &[(Seq(1), executed_batch.digest())]);
    let cert = h.prepared_cert(0, 1, batch(2).digest());
    let vcs: Vec<_> = [(0u16, vec![cert.clone()]), (1, vec![]), (3, vec![])]
        .into_iter()
        .map(|(from, certs)| h.view_change_parts(from, 1, certs).0)
        .collect();
    let nv = Message::NewView(h.sign(
        1,
        NewView {
            view: View(1),
            view_changes: vcs,
            stable: CheckpointCert::default(),
            pre_prepares: vec![h.signed_pre_prepare(1, 1, 1, batch(2).digest())],
            proofs: vec![cert],
        },
    ));
    let out = step(&mut r, 0, h.input(nv));
    assert!(
        rejected(&out, "new_view_conflicts_with_executed"),
        "{out:?}"
    );
    assert!(!asks_driver(&out));
}

/// What a peer can make a replica store stays within the stated bound while it handles a
/// mixed flood from the future views: messages of views it has not entered are held within
/// the sender's budget, and an honest sender's are not pushed out by a faulty one's.
#[test]
fn future_view_messages_are_held_per_sender() {
    let h = H::new(4);
    let mut r: Pbft = h.replica(2, &[], 0);
    // Replica 3 floods view 5; replica 0 sends one PREPARE of view 1.
    step(&mut r, 0, h.input(h.prepare(0, 1, 1, batch(1).digest())));
    for i in 0..20_000u64 {
        step(
            &mut r,
            0,
            h.input(h.prepare(3, 5, 1 + i % L, Digest::of(&i.to_le_bytes()))),
        );
    }
    let f = r.footprint();
    assert!(f.within(&r.footprint_bound()));
    assert!(f.bytes < 2 * 64 * 1024 + 10_000, "{f:?}");
    // Entering view 1 replays replica 0's PREPARE (it was not pushed out).
    let nv = h.new_view(1, &[0, 2, 3], vec![], vec![]);
    let out = step(&mut r, 0, h.input(nv));
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Event(Event::Vote {
            from: ValidatorId(0),
            view: View(1),
            ..
        })
    )));
}
