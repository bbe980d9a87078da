//! The PBFT core alone: messages processed per second by one backup replica, with signature
//! creation and checks excluded (messages are signed and verified before the clock starts;
//! the replica's own signer returns a constant). Shows the core will not be the bottleneck.
//!
//! `cargo bench -p tally-consensus --bench core` (TALLY_BENCH_SEQS sets the length).

use std::time::Instant;

use tally_consensus::pbft::messages::SignedBody;
use tally_consensus::pbft::{
    Checkpoint, Commit, Message, Pbft, PbftConfig, PrePrepare, Prepare, Signed,
};
use tally_consensus::protocol::{Input, Protocol};
use tally_consensus::{Batch, Seq, Signer, ValidatorId, ValidatorSet, View};
use tally_crypto::{ChainId, Digest, Domain, PublicKey, SecretKey, Signature};

struct ConstantSigner(PublicKey);

impl Signer for ConstantSigner {
    fn public_key(&self) -> PublicKey {
        self.0
    }
    fn sign(&self, _: Domain, _: &[u8]) -> Signature {
        Signature([7; 64])
    }
}

fn main() {
    let seqs: u64 = std::env::var("TALLY_BENCH_SEQS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let txs_per_batch = 64;
    let (k, l) = (64, 256);
    let chain = ChainId::new("bench").unwrap();
    let keys: Vec<SecretKey> = (1..=4u8).map(|i| SecretKey::from_seed(&[i; 32])).collect();
    let set = ValidatorSet::new(&keys.iter().map(|k| k.public_key()).collect::<Vec<_>>()).unwrap();
    let sign =
        |from: usize, body: &dyn Fn() -> Message| body_sign(&keys[from], &chain, from, body());
    let root = |seq: u64| Digest::of(&seq.to_le_bytes());

    // Pre-build every input, verified for real, before timing.
    let prep = Instant::now();
    let mut inputs: Vec<Input> = Vec::new();
    let mut messages = 0u64;
    for seq in 1..=seqs {
        let batch = Batch {
            txs: (0..txs_per_batch)
                .map(|i| Digest::of(&(seq * 1000 + i).to_le_bytes()))
                .collect(),
        };
        let d = batch.digest();
        let (v, s) = (View(0), Seq(seq));
        let mut msgs = vec![sign(0, &|| {
            Message::PrePrepare(
                unsigned(
                    0,
                    PrePrepare {
                        view: v,
                        seq: s,
                        digest: d,
                    },
                ),
                batch.clone(),
            )
        })];
        for from in [2, 3] {
            msgs.push(sign(from, &|| {
                Message::Prepare(unsigned(
                    from,
                    Prepare {
                        view: v,
                        seq: s,
                        digest: d,
                    },
                ))
            }));
        }
        for from in [0, 2, 3] {
            msgs.push(sign(from, &|| {
                Message::Commit(unsigned(
                    from,
                    Commit {
                        view: v,
                        seq: s,
                        digest: d,
                    },
                ))
            }));
        }
        if seq % k == 0 {
            for from in [0, 2, 3] {
                msgs.push(sign(from, &|| {
                    Message::Checkpoint(unsigned(
                        from,
                        Checkpoint {
                            seq: s,
                            block_hash: root(seq),
                        },
                    ))
                }));
            }
        }
        for (i, m) in msgs.into_iter().enumerate() {
            messages += 1;
            inputs.push(Input::Message(tally_consensus::PeerMessage::Pbft(
                tally_crypto::verify(&set, &chain, m).expect("valid"),
            )));
            if i == 0 {
                // The driver found the batch's transactions held and valid.
                inputs.push(Input::Validated {
                    view: v,
                    seq: s,
                    digest: d,
                });
            }
        }
        inputs.push(Input::Executed {
            seq: s,
            digest: d,
            block_hash: root(seq),
            epoch: v,
        });
    }
    eprintln!(
        "prepared {messages} signed and verified messages in {:.1} s",
        prep.elapsed().as_secs_f64()
    );

    let mut replica = Pbft::new(
        PbftConfig::new(k, l, 2_000),
        set,
        ValidatorId(1),
        Box::new(ConstantSigner(keys[1].public_key())),
        &[],
        Seq(0),
        &[],
    );
    let mut out = Vec::with_capacity(64);
    let (mut committed, mut outputs) = (0u64, 0u64);
    let start = Instant::now();
    for input in inputs {
        replica.step(0, input, &mut out);
        outputs += out.len() as u64;
        committed += out
            .iter()
            .filter(|o| matches!(o, tally_consensus::Output::Commit { .. }))
            .count() as u64;
        out.clear();
    }
    let secs = start.elapsed().as_secs_f64();
    assert_eq!(committed, seqs, "every batch committed");
    assert!(
        replica.stable_checkpoint() >= Seq(seqs - k),
        "checkpoints became stable"
    );
    println!(
        "pbft core, n = 4, one backup: {messages} messages ({seqs} batches of {txs_per_batch} tx, {outputs} outputs) in {:.3} s: {:.0} messages/s, {:.0} batches/s, {:.0} tx/s ordered",
        secs,
        messages as f64 / secs,
        seqs as f64 / secs,
        (seqs * txs_per_batch) as f64 / secs
    );
}

fn unsigned<T>(from: usize, body: T) -> Signed<T> {
    Signed {
        from: ValidatorId(from as u16),
        body,
        signature: Signature([0; 64]),
    }
}

fn body_sign(key: &SecretKey, chain: &ChainId, _from: usize, msg: Message) -> Message {
    fn s<T: SignedBody>(key: &SecretKey, chain: &ChainId, mut m: Signed<T>) -> Signed<T> {
        m.signature = key.sign(T::DOMAIN, chain, &m.body.signing_bytes());
        m
    }
    match msg {
        Message::PrePrepare(m, b) => Message::PrePrepare(s(key, chain, m), b),
        Message::Prepare(m) => Message::Prepare(s(key, chain, m)),
        Message::Commit(m) => Message::Commit(s(key, chain, m)),
        Message::Checkpoint(m) => Message::Checkpoint(s(key, chain, m)),
        other => other,
    }
}
