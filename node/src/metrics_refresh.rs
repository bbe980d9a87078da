//! The metrics fed from elsewhere (the mempool, the batch path, the p2p counters, RocksDB and
//! the process), refreshed at each scrape of `/metrics`.

use std::sync::{Arc, Mutex};

use tally_monitoring::{DirectionLabels, P2pLabels};
use tally_p2p::P2pStats;

use crate::shared::Shared;

/// Refreshes, at each scrape, the gauges and counters fed from elsewhere.
pub fn refresher(
    shared: Arc<Shared>,
    stats: Arc<P2pStats>,
    batches: Option<Arc<crate::batches::service::BatchPath>>,
) -> tally_monitoring::Refresh {
    type Key = (&'static str, &'static str, &'static str);
    let last: Arc<Mutex<std::collections::HashMap<Key, u64>>> = Arc::default();
    let last_cpu = Arc::new(Mutex::new(0.0f64));
    Arc::new(move || {
        let m = &shared.metrics;
        {
            let pool = shared.mempool();
            m.mempool_transactions.set(pool.len() as i64);
            m.mempool_bytes.set(pool.bytes() as i64);
            m.mempool_ready.set(pool.ready_count() as i64);
        }
        if let Some(path) = &batches {
            {
                let store = path.store();
                m.batch_store_batches.set(store.len() as i64);
                m.batch_store_bytes.set(store.bytes() as i64);
            }
            m.proof_pool_proofs.set(path.pool().len() as i64);
            m.batches_unproven.set(path.unproven() as i64);
            m.batch_frames_queued_bytes
                .set(path.queued_frame_bytes() as i64);
        }
        use std::sync::atomic::Ordering::Relaxed;
        m.peers.set(stats.connected_peers.load(Relaxed) as i64);
        m.rpc_waiters.set(
            shared
                .tx_waiters
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len() as i64,
        );
        m.storage_size.set(shared.store.size_bytes() as i64);
        let mem = shared.store.memory_usage();
        for (kind, bytes) in [
            ("memtables", mem.memtables),
            ("block_cache", mem.block_cache),
            ("table_readers", mem.table_readers),
        ] {
            m.storage_memory
                .get_or_create(&tally_monitoring::KindLabels { kind: kind.into() })
                .set(bytes as i64);
        }
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let mut delta = |name: Key, now: u64| {
            let before = last.insert(name, now).unwrap_or(0);
            now.saturating_sub(before)
        };
        for (protocol, direction, msgs, bytes) in [
            (
                "consensus",
                "in",
                &stats.consensus_in_messages,
                &stats.consensus_in_bytes,
            ),
            (
                "consensus",
                "out",
                &stats.consensus_out_messages,
                &stats.consensus_out_bytes,
            ),
            (
                "gossip",
                "in",
                &stats.gossip_in_messages,
                &stats.gossip_in_bytes,
            ),
            (
                "gossip",
                "out",
                &stats.gossip_out_messages,
                &stats.gossip_out_bytes,
            ),
            (
                "batches",
                "in",
                &stats.batch_in_messages,
                &stats.batch_in_bytes,
            ),
            (
                "batches",
                "out",
                &stats.batch_out_messages,
                &stats.batch_out_bytes,
            ),
            ("sync", "in", &stats.sync_in_messages, &stats.sync_in_bytes),
            (
                "sync",
                "out",
                &stats.sync_out_messages,
                &stats.sync_out_bytes,
            ),
        ] {
            let labels = P2pLabels {
                protocol: protocol.into(),
                direction: direction.into(),
            };
            m.p2p_messages
                .get_or_create(&labels)
                .inc_by(delta((protocol, direction, "messages"), msgs.load(Relaxed)));
            m.p2p_bytes
                .get_or_create(&labels)
                .inc_by(delta((protocol, direction, "bytes"), bytes.load(Relaxed)));
        }
        for (direction, c) in [
            ("out", &stats.dropped_outbound),
            ("in", &stats.dropped_inbound),
        ] {
            m.p2p_dropped
                .get_or_create(&DirectionLabels {
                    direction: direction.into(),
                })
                .inc_by(delta(("dropped", direction, ""), c.load(Relaxed)));
        }
        m.p2p_gossip_rejected.inc_by(delta(
            ("gossip_rejected", "", ""),
            stats.gossip_rejected.load(Relaxed),
        ));
        m.p2p_genesis_mismatch.inc_by(delta(
            ("genesis_mismatch", "", ""),
            stats.genesis_mismatch.load(Relaxed),
        ));
        if let Some((cpu, rss, fds)) = tally_monitoring::process_usage() {
            let mut last_cpu = last_cpu.lock().unwrap_or_else(|e| e.into_inner());
            if cpu > *last_cpu {
                m.process_cpu.inc_by(cpu - *last_cpu);
                *last_cpu = cpu;
            }
            m.process_resident_memory.set(rss as i64);
            m.process_open_fds.set(fds as i64);
        }
    })
}
