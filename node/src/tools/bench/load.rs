//! The load: pre-signed transactions sent open-loop through `tx_submit_batch`, commits observed
//! through a block subscription, and the figures of one run.

use super::*;

/// Per-second samples for the report's timeline and plot.
#[derive(Default, Clone)]
pub(super) struct Second {
    pub(super) offered: u64,
    pub(super) committed: u64,
    /// In a block, but failed (e.g. "bad nonce"): not counted as committed.
    pub(super) failed: u64,
    /// From the submission that was admitted.
    pub(super) latencies: Vec<f64>,
    /// From the transaction's first submission (including refusals and resubmissions).
    pub(super) latencies_first: Vec<f64>,
}

pub(super) fn presign(
    chain: &ChainId,
    total: usize,
    accounts: usize,
    tx_bytes: usize,
) -> Vec<(Digest, Vec<u8>)> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let keys: Vec<SecretKey> = (0..accounts)
        .map(|i| {
            let mut seed = [0x5au8; 32];
            seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
            SecretKey::from_seed(&seed)
        })
        .collect();
    // The put's value pads the encoding to tx_bytes: overhead is 64 (signature) + header.
    let probe = |len: usize| {
        Transaction {
            chain_id: chain.clone(),
            sender: keys[0].public_key(),
            nonce: 0,
            action: Action::Put {
                key: 0u64.to_le_bytes().to_vec(),
                value: vec![0; len],
            },
        }
        .sign(&keys[0])
        .map(|t| t.encoded().len())
        .unwrap_or(0)
    };
    let pad = tx_bytes.saturating_sub(probe(0));
    let mut out: Vec<(Digest, Vec<u8>)> = vec![(Digest::ZERO, vec![]); total];
    let chunk = total.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        for (t, part) in out.chunks_mut(chunk).enumerate() {
            let keys = &keys;
            s.spawn(move || {
                for (j, slot) in part.iter_mut().enumerate() {
                    let i = t * chunk + j;
                    let sender = i % accounts;
                    let nonce = (i / accounts) as u64;
                    let tx = Transaction {
                        chain_id: chain.clone(),
                        sender: keys[sender].public_key(),
                        nonce,
                        action: Action::Put {
                            key: (i as u64).to_le_bytes().to_vec(),
                            value: vec![(i % 251) as u8; pad],
                        },
                    }
                    .sign(&keys[sender])
                    .expect("signs");
                    *slot = (tx.hash(), tx.into_encoded());
                }
            });
        }
    });
    out
}

#[derive(serde::Serialize, Clone)]
pub(super) struct TimelinePoint {
    pub(super) second: u64,
    pub(super) offered: u64,
    pub(super) committed: u64,
    pub(super) latency_p50_ms: f64,
    pub(super) latency_p99_ms: f64,
}

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

pub(super) async fn drive(
    a: &BenchArgs,
    rate: u64,
    info: &NetworkInfo,
    nodes: &Nodes,
    txs: Vec<(Digest, Vec<u8>)>,
    validators: usize,
    ceiling_before: Vec<f64>,
) -> Result<Report> {
    // Wait for the network.
    let clients: Vec<_> = info
        .nodes
        .iter()
        .map(|n| crate::tools::client::client(&n.rpc))
        .collect::<Result<_>>()?;
    let ready = Instant::now();
    for c in &clients {
        while crate::tools::client::call(c, "chain_status", json!({}))
            .await
            .is_err()
        {
            if let Some(e) = nodes.exited() {
                bail!("the network did not start: {e}");
            }
            if ready.elapsed() > Duration::from_secs(60) {
                bail!("the network did not start");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;

    let total_secs = a.warmup + a.duration;
    let submitted_at: Arc<Mutex<HashMap<Digest, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(txs.len())));
    let first_sent: Arc<Mutex<HashMap<Digest, Instant>>> =
        Arc::new(Mutex::new(HashMap::with_capacity(txs.len())));
    let seconds: Arc<Mutex<Vec<Second>>> = Arc::new(Mutex::new(vec![
        Second::default();
        total_secs as usize + 30
    ]));
    let committed_total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();

    // Commits: a block subscription (without bodies) on the first node.
    let ws_url = info.nodes[0].rpc.replace("http://", "ws://");
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .max_response_size(256 * 1024 * 1024)
        .build(&ws_url)
        .await?;
    let mut sub = ws
        .subscribe::<Value, _>(
            "subscribe_blocks",
            {
                let mut p = jsonrpsee::core::params::ObjectParams::new();
                p.insert("include_txs", false)?;
                p
            },
            "unsubscribe_blocks",
        )
        .await
        .context("subscribe_blocks")?;
    {
        let (submitted_at, first_sent, seconds, committed_total) = (
            submitted_at.clone(),
            first_sent.clone(),
            seconds.clone(),
            committed_total.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(block)) = sub.next().await {
                let now = Instant::now();
                let sec = (now - start).as_secs() as usize;
                let hashes: Vec<Digest> = block["tx_hashes"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|h| Digest::from_hex(h.as_str()?).ok())
                            .collect()
                    })
                    .unwrap_or_default();
                // A transaction counts as committed only if it succeeded.
                let ok: Vec<bool> = block["results"]
                    .as_array()
                    .map(|a| a.iter().map(|r| r["status"] == "ok").collect())
                    .unwrap_or_default();
                let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                let mut first = first_sent.lock().unwrap_or_else(|e| e.into_inner());
                let mut secs = seconds.lock().unwrap_or_else(|e| e.into_inner());
                for (j, h) in hashes.into_iter().enumerate() {
                    let first_at = first.remove(&h);
                    if !ok.get(j).copied().unwrap_or(false) {
                        if at.remove(&h).is_some()
                            && let Some(s) = secs.get_mut(sec)
                        {
                            s.failed += 1;
                        }
                        continue;
                    }
                    if let Some(t) = at.remove(&h) {
                        committed_total.fetch_add(1, Ordering::Relaxed);
                        if let Some(s) = secs.get_mut(sec) {
                            s.committed += 1;
                            s.latencies.push((now - t).as_secs_f64() * 1000.0);
                            let t0 = first_at.unwrap_or(t);
                            s.latencies_first.push((now - t0).as_secs_f64() * 1000.0);
                        }
                    }
                }
            }
        });
    }

    // Open loop: every 10 ms, the transactions due go out, whatever happened to earlier ones.
    let refused_full = Arc::new(AtomicU64::new(0));
    let refused_overloaded = Arc::new(AtomicU64::new(0));
    let refused_other = Arc::new(AtomicU64::new(0));
    let inflight = Arc::new(AtomicU64::new(0));
    let progress = indicatif::ProgressBar::new(total_secs);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut cpu_start = Vec::new();
    let mut measuring = false;
    let mut machine_start = None;
    let mut view_changes_start = 0.0;
    let mut reasons_start: std::collections::BTreeMap<String, f64> = Default::default();
    let mut blocks_start = 0.0;
    let mut client_cpu_start = 0.0;
    let per_tick = rate as f64 / 100.0;
    let cursors: Arc<Vec<AtomicU64>> =
        Arc::new((0..a.accounts).map(|_| AtomicU64::new(0)).collect());
    let resubmitted = Arc::new(AtomicU64::new(0));
    let mut sent = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut k = 0u64;
    let txs = Arc::new(txs);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed().as_secs_f64();
        if elapsed >= total_secs as f64 {
            break;
        }
        if !measuring && elapsed >= a.warmup as f64 {
            measuring = true;
            machine_start = machine_cpu();
            cpu_start = nodes.children.iter().map(|c| proc_stat(c.id())).collect();
            client_cpu_start = proc_stat(std::process::id()).map_or(0.0, |(c, _)| c);
            for n in &info.nodes {
                view_changes_start += metric_sum(&n.metrics, "tally_view_changes_total").await;
                for (r, v) in metric_by_reason(&n.metrics, "tally_view_changes_total").await {
                    *reasons_start.entry(r).or_insert(0.0) += v;
                }
            }
            blocks_start = metric_sum(&info.nodes[0].metrics, "tally_blocks_committed_total").await;
        }
        let due = ((k + 1) as f64 * per_tick) as usize;
        k += 1;
        let end = due.min(txs.len());
        if end <= sent {
            continue;
        }
        // Each slot is one account's turn (round robin); the account sends its next nonce.
        // A transaction refused with "mempool full" or "overloaded" (both mean: retry later)
        // moves the account's cursor back to it,
        // so it is sent again at the account's next turn, as a client would retry it; the
        // slots stay the open-loop schedule.
        let mut picked = Vec::with_capacity(end - sent);
        for slot in sent..end {
            let account = slot % a.accounts;
            let nonce = cursors[account].fetch_add(1, Ordering::Relaxed) as usize;
            let i = nonce * a.accounts + account;
            if i < txs.len() {
                picked.push(i);
            }
        }
        sent = end;
        let sec = (start.elapsed()).as_secs() as usize;
        {
            let now = Instant::now();
            let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
            let mut first = first_sent.lock().unwrap_or_else(|e| e.into_inner());
            for &i in &picked {
                at.entry(txs[i].0).or_insert(now);
                match first.entry(txs[i].0) {
                    std::collections::hash_map::Entry::Occupied(_) => {
                        resubmitted.fetch_add(1, Ordering::Relaxed);
                    }
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(now);
                    }
                }
            }
            let mut secs = seconds.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = secs.get_mut(sec) {
                s.offered += picked.len() as u64;
            }
        }
        // Each account always goes to the same node, as a client should (with data batches,
        // a node keeps each account's transactions in nonce order; docs/transactions.md).
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); clients.len()];
        for i in picked {
            groups[(i % a.accounts) % clients.len()].push(i);
        }
        for (client, picked) in clients.iter().zip(groups) {
            if picked.is_empty() {
                continue;
            }
            let client = client.clone();
            let (txs, full, overloaded, other, inflight, submitted_at, first_sent, cursors) = (
                txs.clone(),
                refused_full.clone(),
                refused_overloaded.clone(),
                refused_other.clone(),
                inflight.clone(),
                submitted_at.clone(),
                first_sent.clone(),
                cursors.clone(),
            );
            let accounts = a.accounts;
            inflight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let batch: Vec<String> = picked
                    .iter()
                    .map(|&i| tally_crypto::to_hex(&txs[i].1))
                    .collect();
                let mut p = jsonrpsee::core::params::ObjectParams::new();
                let _ = p.insert("txs", batch);
                let result: Result<Value, _> = client.request("tx_submit_batch", p).await;
                let retry = |i: usize| {
                    cursors[i % accounts].fetch_min((i / accounts) as u64, Ordering::Relaxed);
                };
                match result {
                    Ok(Value::Array(results)) => {
                        let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                        for (r, &i) in results.iter().zip(&picked) {
                            let Some(e) = r.get("error") else { continue };
                            let reason = e["data"]["reason"].as_str().unwrap_or("");
                            match reason {
                                // Already pending from an earlier attempt: still on its way.
                                "duplicate" => {}
                                // Already committed (an earlier attempt got in).
                                "stale_nonce" => {
                                    at.remove(&txs[i].0);
                                    first_sent
                                        .lock()
                                        .unwrap_or_else(|e| e.into_inner())
                                        .remove(&txs[i].0);
                                }
                                _ => {
                                    at.remove(&txs[i].0);
                                    if e["code"] == crate::rpc::codes::MEMPOOL_FULL {
                                        full.fetch_add(1, Ordering::Relaxed);
                                        retry(i);
                                    } else if e["code"] == crate::rpc::codes::OVERLOADED
                                        || e["code"] == crate::rpc::codes::RATE_LIMITED
                                    {
                                        overloaded.fetch_add(1, Ordering::Relaxed);
                                        retry(i);
                                    } else {
                                        other.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                    }
                    _ => {
                        other.fetch_add(picked.len() as u64, Ordering::Relaxed);
                        let mut at = submitted_at.lock().unwrap_or_else(|e| e.into_inner());
                        for &i in &picked {
                            at.remove(&txs[i].0);
                            retry(i);
                        }
                    }
                }
                inflight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        if k.is_multiple_of(100) {
            if let Some(e) = nodes.exited() {
                progress.finish_and_clear();
                bail!("stopped after {elapsed:.0} s: {e}");
            }
            progress.set_position(elapsed as u64);
            progress.set_message(format!(
                "committed {}  refused {}",
                committed_total.load(Ordering::Relaxed),
                refused_full.load(Ordering::Relaxed)
                    + refused_overloaded.load(Ordering::Relaxed)
                    + refused_other.load(Ordering::Relaxed)
            ));
        }
    }
    let cpu_end: Vec<_> = nodes.children.iter().map(|c| proc_stat(c.id())).collect();
    let client_cpu_end = proc_stat(std::process::id()).map_or(0.0, |(c, _)| c);
    let machine_end = machine_cpu();
    let window = start.elapsed().as_secs_f64() - a.warmup as f64;
    let client_cpu = (client_cpu_end - client_cpu_start) / window;
    let mut view_changes_end = 0.0;
    // Why: each node's view changes by reason (timeout, a higher view joined, …), so a run
    // that changed view says which kind without its logs.
    let mut view_change_reasons: std::collections::BTreeMap<String, f64> = Default::default();
    for n in &info.nodes {
        view_changes_end += metric_sum(&n.metrics, "tally_view_changes_total").await;
        for (r, v) in metric_by_reason(&n.metrics, "tally_view_changes_total").await {
            *view_change_reasons.entry(r).or_insert(0.0) += v;
        }
    }
    for (r, v) in &reasons_start {
        if let Some(e) = view_change_reasons.get_mut(r) {
            *e -= v;
        }
    }
    view_change_reasons.retain(|_, v| *v > 0.0);
    let blocks =
        metric_sum(&info.nodes[0].metrics, "tally_blocks_committed_total").await - blocks_start;
    // Let the last ones commit.
    let drain = Instant::now();
    while drain.elapsed() < Duration::from_secs(10)
        && !submitted_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    progress.finish_and_clear();

    let secs = seconds.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let measured = &secs[a.warmup as usize..total_secs as usize];
    let offered: u64 = measured.iter().map(|s| s.offered).sum();
    let committed: u64 = measured.iter().map(|s| s.committed).sum();
    let failed: u64 = measured.iter().map(|s| s.failed).sum();
    let mut lat: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.latencies.iter().copied())
        .collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let mut lat_first: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.latencies_first.iter().copied())
        .collect();
    lat_first.sort_by(|a, b| a.total_cmp(b));
    let percentiles = |l: &[f64]| Percentiles {
        p50: percentile(l, 0.5),
        p90: percentile(l, 0.9),
        p99: percentile(l, 0.99),
        max: l.last().copied().unwrap_or(0.0),
    };
    let nodes_use: Vec<NodeUse> = info
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let (cpu, rss) = match (
                cpu_start.get(i).copied().flatten(),
                cpu_end.get(i).copied().flatten(),
            ) {
                (Some((c0, _)), Some((c1, rss))) => ((c1 - c0) / window, rss as f64 / 1e6),
                _ => (0.0, 0.0),
            };
            NodeUse {
                name: n.name.clone(),
                cpu_cores: cpu,
                peak_rss_mb: rss,
            }
        })
        .collect();
    let committed_rate = committed as f64 / a.duration as f64;
    let timeline = secs[..total_secs as usize]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut l = s.latencies.clone();
            l.sort_by(|a, b| a.total_cmp(b));
            TimelinePoint {
                second: i as u64,
                offered: s.offered,
                committed: s.committed,
                latency_p50_ms: percentile(&l, 0.5),
                latency_p99_ms: percentile(&l, 0.99),
            }
        })
        .collect();
    Ok(Report {
        validators: info.nodes.len(),
        tx_bytes: a.tx_bytes,
        duration_s: a.duration,
        offered_tx_per_s: offered as f64 / a.duration as f64,
        committed_tx_per_s: committed_rate,
        latency_ms: percentiles(&lat),
        latency_from_first_submission_ms: percentiles(&lat_first),
        committed,
        failed,
        submitted: sent as u64,
        resubmitted: resubmitted.load(Ordering::Relaxed),
        refused_mempool_full: refused_full.load(Ordering::Relaxed),
        refused_overloaded: refused_overloaded.load(Ordering::Relaxed),
        refused_other: refused_other.load(Ordering::Relaxed),
        view_changes: view_changes_end - view_changes_start,
        view_change_reasons,
        blocks_per_s: blocks / window,
        transactions_per_block: if blocks > 0.0 {
            committed as f64 / blocks
        } else {
            0.0
        },
        client_cpu_cores: client_cpu,
        machine: machine_use(
            machine_start,
            machine_end,
            window,
            // Only when this run started the validators is their CPU known.
            (!nodes.children.is_empty())
                .then(|| nodes_use.iter().map(|n| n.cpu_cores).sum::<f64>() + client_cpu),
        ),
        nodes: nodes_use,
        ceiling: Ceiling::new(ceiling_before, Vec::new(), validators, committed_rate),
        timeline,
    })
}
