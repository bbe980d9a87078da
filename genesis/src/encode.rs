//! The canonical encoding hashed into the genesis hash (`docs/genesis.md`).

use crate::{Genesis, Protocol};

pub(crate) fn canonical(g: &Genesis) -> Vec<u8> {
    let mut out = Vec::new();
    let tag = b"tally/genesis/v1";
    out.push(tag.len() as u8);
    out.extend_from_slice(tag);
    bytes8(&mut out, g.chain_id.as_str().as_bytes());
    let p = &g.consensus;
    out.push(match p.protocol {
        Protocol::Pbft => 0,
        Protocol::Raft => 1,
        Protocol::Multipaxos => 2,
    });
    for x in [
        p.batch_bytes_max,
        p.batch_delay_ms,
        p.checkpoint_interval,
        p.watermark_window,
        p.view_change_timeout_ms,
        p.raft_election_timeout_ms.min,
        p.raft_election_timeout_ms.max,
        p.heartbeat_ms,
    ] {
        out.extend_from_slice(&x.to_le_bytes());
    }
    // 0 encodes "the default majority".
    out.extend_from_slice(&p.paxos_q1.unwrap_or(0).to_le_bytes());
    out.extend_from_slice(&p.paxos_q2.unwrap_or(0).to_le_bytes());
    out.push(match p.payload {
        crate::Payload::Transactions => 0,
        crate::Payload::Batches => 1,
    });
    out.extend_from_slice(&(g.validators.len() as u32).to_le_bytes());
    for v in &g.validators {
        bytes8(&mut out, v.name.as_bytes());
        out.extend_from_slice(&v.public_key.0);
        out.extend_from_slice(&(v.p2p.len() as u16).to_le_bytes());
        out.extend_from_slice(v.p2p.as_bytes());
    }
    out.extend_from_slice(&(g.accounts.len() as u32).to_le_bytes());
    for a in &g.accounts {
        out.extend_from_slice(&a.address.0);
        out.extend_from_slice(&a.balance.to_le_bytes());
    }
    out
}

fn bytes8(out: &mut Vec<u8>, b: &[u8]) {
    out.push(b.len() as u8);
    out.extend_from_slice(b);
}
