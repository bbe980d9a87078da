//! The state root's cost per changed entry: `LtHash::add` (expansion and lane sums), against
//! the same expansion through the blake3 crate's reader, one 64-byte block after another.
//! `cargo bench -p tally-ledger --bench state`

use std::hint::black_box;
use std::time::Instant;

use tally_ledger::LtHash;
use tally_ledger::state::ENTRY_CONTEXT;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_per_entry(entries: &[(Vec<u8>, Vec<u8>)], mut f: impl FnMut(&[u8], &[u8])) -> f64 {
    let runs = (0..9)
        .map(|_| {
            let started = Instant::now();
            for (k, v) in entries {
                f(k, v);
            }
            started.elapsed().as_secs_f64() * 1e9 / entries.len() as f64
        })
        .collect();
    median(runs)
}

fn main() {
    for (what, key_len, value_len) in [("account", 33, 16), ("data, 512 bytes", 40, 512)] {
        let entries: Vec<(Vec<u8>, Vec<u8>)> = (0..20_000u32)
            .map(|i| {
                let mut k = vec![0x02; key_len];
                k[1..5].copy_from_slice(&i.to_le_bytes());
                (k, vec![i as u8; value_len])
            })
            .collect();
        let mut h = LtHash::zero();
        let ours = time_per_entry(&entries, |k, v| h.add(k, v));
        black_box(&h);
        let mut sum = [0u16; 1024];
        let reader = time_per_entry(&entries, |k, v| {
            let mut hasher = blake3::Hasher::new_derive_key(ENTRY_CONTEXT);
            hasher.update(&(k.len() as u32).to_le_bytes());
            hasher.update(k);
            hasher.update(v);
            let mut bytes = [0u8; 2048];
            hasher.finalize_xof().fill(&mut bytes);
            for (lane, pair) in sum.iter_mut().zip(bytes.chunks_exact(2)) {
                *lane = lane.wrapping_add(u16::from_le_bytes([pair[0], pair[1]]));
            }
        });
        black_box(&sum);
        println!(
            "{what:>16}: LtHash::add {ours:>6.0} ns per entry; through the crate's reader {reader:>6.0} ns ({:.2}x)",
            reader / ours
        );
    }
}
