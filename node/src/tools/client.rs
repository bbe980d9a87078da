//! The CLI's client commands: `tx send`, `status`, `block`, `account`, with `--verify`
//! reads that ask 2f+1 nodes and check certificates against the genesis keys.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Args;
use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::{Value, json};
use tally_consensus::{BatchHeader, CommitCertificate, FaultModel, Seq, ValidatorId, View};
use tally_crypto::{Digest, Signature, keyfile};
use tally_genesis::Genesis;
use tally_genesis::testnet::NetworkInfo;
use tally_ledger::BlockHeader;

use crate::cli::ActionArgs;
use crate::execution::block::{BlockBatch, StoredBlock};

#[derive(Args, Debug, Clone)]
pub struct Endpoints {
    /// A node's JSON-RPC URL (repeat for several). Default: http://127.0.0.1:26601.
    #[arg(long)]
    pub rpc: Vec<String>,
    /// network.json of a `tally testnet` folder: every node's URL and the genesis.
    #[arg(long)]
    pub network: Option<PathBuf>,
    /// The genesis file (for --verify), when not given by --network.
    #[arg(long)]
    pub genesis: Option<PathBuf>,
}

impl Endpoints {
    fn network(&self) -> Result<Option<NetworkInfo>> {
        match &self.network {
            Some(p) => Ok(Some(NetworkInfo::load(p)?)),
            None => Ok(None),
        }
    }

    pub fn urls(&self) -> Result<Vec<String>> {
        if !self.rpc.is_empty() {
            return Ok(self.rpc.clone());
        }
        if let Some(n) = self.network()? {
            return Ok(n.nodes.iter().map(|n| n.rpc.clone()).collect());
        }
        Ok(vec!["http://127.0.0.1:26601".into()])
    }

    pub fn genesis(&self) -> Result<Genesis> {
        if let Some(g) = &self.genesis {
            return Ok(Genesis::load(g)?);
        }
        if let Some(n) = self.network()? {
            return Ok(Genesis::load(&n.genesis)?);
        }
        bail!("--verify needs the genesis: pass --genesis FILE or --network network.json")
    }
}

pub fn client(url: &str) -> Result<HttpClient> {
    Ok(HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .build(url)?)
}

pub async fn call(c: &HttpClient, method: &str, params: Value) -> Result<Value> {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v)?;
        }
    }
    Ok(c.request(method, p).await?)
}

/// Checks a block from JSON with only the genesis: the header hash, the batch digest of its
/// transactions, and a quorum of valid COMMIT signatures for (seq = height, digest).
pub fn verify_block_json(block: &Value, genesis: &Genesis) -> Result<String> {
    let hexd = |k: &str| -> Result<Digest> {
        Ok(Digest::from_hex(
            block[k].as_str().context("missing field")?,
        )?)
    };
    let height = block["height"].as_u64().context("height")?;
    let txs: Vec<Vec<u8>> = block["txs"]
        .as_array()
        .context("txs")?
        .iter()
        .map(|t| hex::decode(t.as_str().unwrap_or_default()))
        .collect::<Result<_, _>>()?;
    let batches = match block["batches"].as_array() {
        None => Vec::new(),
        Some(list) => list
            .iter()
            .map(|b| -> Result<BlockBatch> {
                let num = |k: &str| b[k].as_u64().with_context(|| format!("batches[].{k}"));
                Ok(BlockBatch {
                    header: BatchHeader {
                        author: ValidatorId(u16::try_from(num("author")?)?),
                        index: num("index")?,
                        tx_count: u32::try_from(num("tx_count")?)?,
                        bytes: u32::try_from(num("bytes")?)?,
                        tx_digest: Digest::from_hex(
                            b["tx_digest"].as_str().context("batches[].tx_digest")?,
                        )?,
                    },
                    executed: b["executed"].as_bool().context("batches[].executed")?,
                })
            })
            .collect::<Result<_>>()?,
    };
    // The digest consensus ordered: of the transactions' hashes, or (data batches) of the
    // batch headers, each executed batch's transactions matching its header.
    let ordered = StoredBlock {
        header: BlockHeader {
            height,
            prev_hash: Digest([0; 32]),
            batch_digest: Digest([0; 32]),
            state_root: Digest([0; 32]),
        },
        txs,
        outcomes: Vec::new(),
        certificate: None,
        batches,
    };
    let digest = ordered.ordered_digest()?;
    if digest != hexd("batch_digest")? {
        bail!("the block's transactions do not hash to its batch digest");
    }
    let header = BlockHeader {
        height,
        prev_hash: hexd("prev_hash")?,
        batch_digest: digest,
        state_root: hexd("state_root")?,
    };
    if header.hash() != hexd("hash")? {
        bail!("the block's header does not hash to its hash");
    }
    let c = &block["certificate"];
    let certificate = CommitCertificate {
        view: View(c["view"].as_u64().context("certificate.view")?),
        seq: Seq(c["seq"].as_u64().context("certificate.seq")?),
        digest: Digest::from_hex(c["digest"].as_str().context("certificate.digest")?)?,
        signatures: c["signatures"]
            .as_array()
            .context("certificate.signatures")?
            .iter()
            .map(|s| -> Result<(ValidatorId, Signature)> {
                Ok((
                    ValidatorId(s["validator"].as_u64().context("validator")? as u16),
                    Signature::from_hex(s["signature"].as_str().context("signature")?)?,
                ))
            })
            .collect::<Result<_>>()?,
    };
    let set = crate::shared::validator_set(genesis)?;
    certificate.verify(&set, &genesis.chain_id, Some((Seq(height), digest)))?;
    let signers: Vec<&str> = certificate
        .signatures
        .iter()
        .filter_map(|(id, _)| {
            genesis
                .validators
                .get(id.0 as usize)
                .map(|v| v.name.as_str())
        })
        .collect();
    Ok(match set.model() {
        FaultModel::Byzantine => format!(
            "certificate valid: view {}, {} of {} validators signed ({}; quorum {})",
            certificate.view.0,
            signers.len(),
            set.len(),
            signers.join(", "),
            set.quorum()
        ),
        FaultModel::Crash => format!(
            "commit proof valid: signed by {}, the leader of {} {} (crash-fault proof: it names \
             the proposer, not a quorum)",
            signers.join(", "),
            genesis.consensus.protocol.epoch_name(),
            certificate.view.0,
        ),
    })
}

/// Who a verified read heard the same answer from.
fn quorum_words(genesis: &Genesis) -> &'static str {
    match genesis.consensus.protocol {
        tally_genesis::Protocol::Pbft => "2f+1 nodes",
        _ => "a majority of nodes",
    }
}

/// Asks every endpoint; requires a quorum (2f+1; a majority with crash faults) of identical
/// answers. Returns it.
async fn quorum_read(
    urls: &[String],
    genesis: &Genesis,
    method: &str,
    params: Value,
    key: impl Fn(&Value) -> Value,
) -> Result<Value> {
    let need = crate::shared::validator_set(genesis)?.quorum();
    if urls.len() < need {
        bail!(
            "--verify needs {need} nodes (a quorum), {} given",
            urls.len()
        );
    }
    let mut answers: Vec<(Value, Value)> = Vec::new();
    for url in urls {
        if let Ok(c) = client(url)
            && let Ok(v) = call(&c, method, params.clone()).await
        {
            answers.push((key(&v), v));
        }
    }
    for (k, v) in &answers {
        let same = answers.iter().filter(|(k2, _)| k2 == k).count();
        if same >= need {
            return Ok(v.clone());
        }
    }
    bail!(
        "no {need} of {} nodes gave the same answer ({} answered)",
        urls.len(),
        answers.len()
    )
}

pub async fn status(e: &Endpoints, verify: bool) -> Result<()> {
    let urls = e.urls()?;
    let c = client(&urls[0])?;
    let s = call(&c, "chain_status", json!({})).await?;
    println!("{}", serde_json::to_string_pretty(&s)?);
    if verify {
        let genesis = e.genesis()?;
        // Heights differ between nodes; agree on a block every node has.
        let mut min = u64::MAX;
        for url in &urls {
            if let Ok(c) = client(url)
                && let Ok(s) = call(&c, "chain_status", json!({})).await
            {
                min = min.min(s["height"].as_u64().unwrap_or(0));
            }
        }
        if min == 0 || min == u64::MAX {
            bail!("no committed block common to the nodes yet");
        }
        let b = quorum_read(&urls, &genesis, "block_get", json!({"height": min}), |v| {
            v["hash"].clone()
        })
        .await?;
        println!(
            "verified: block {min} has hash {} at {}",
            b["hash"].as_str().unwrap_or(""),
            quorum_words(&genesis)
        );
    }
    Ok(())
}

pub async fn block(e: &Endpoints, height: u64, verify: bool) -> Result<()> {
    let urls = e.urls()?;
    let b = if verify {
        let genesis = e.genesis()?;
        let b = quorum_read(
            &urls,
            &genesis,
            "block_get",
            json!({"height": height}),
            |v| v["hash"].clone(),
        )
        .await?;
        let summary = verify_block_json(&b, &genesis)?;
        println!("{}", serde_json::to_string_pretty(&b)?);
        println!(
            "verified: {} agree on block {height}; {summary}",
            quorum_words(&genesis)
        );
        return Ok(());
    } else {
        call(&client(&urls[0])?, "block_get", json!({"height": height})).await?
    };
    println!("{}", serde_json::to_string_pretty(&b)?);
    Ok(())
}

pub async fn account(e: &Endpoints, address: &str, verify: bool) -> Result<()> {
    let urls = e.urls()?;
    let params = json!({"address": address});
    let a = if verify {
        let genesis = e.genesis()?;
        let mut last = Err(anyhow::anyhow!("no answer"));
        // Nodes may be a block apart: retry briefly until a quorum agrees.
        for _ in 0..10 {
            last = quorum_read(
                &urls,
                &genesis,
                "account_get",
                params.clone(),
                |v| json!({ "balance": v["balance"], "nonce": v["nonce"] }),
            )
            .await;
            if last.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let a = last?;
        println!("{}", serde_json::to_string_pretty(&a)?);
        println!(
            "verified: {} report the same account",
            quorum_words(&genesis)
        );
        return Ok(());
    } else {
        call(&client(&urls[0])?, "account_get", params).await?
    };
    println!("{}", serde_json::to_string_pretty(&a)?);
    Ok(())
}

pub async fn send(
    e: &Endpoints,
    from: &std::path::Path,
    chain_id: Option<String>,
    nonce: Option<u64>,
    action: &ActionArgs,
    timeout_ms: u64,
) -> Result<()> {
    let urls = e.urls()?;
    let c = client(&urls[0])?;
    let key = keyfile::load(from)?;
    let chain_id = match chain_id {
        Some(c) => c,
        None => call(&c, "chain_status", json!({})).await?["chain_id"]
            .as_str()
            .context("chain_status.chain_id")?
            .to_string(),
    };
    let nonce = match nonce {
        Some(n) => n,
        None => call(
            &c,
            "account_get",
            json!({"address": key.public_key().to_hex()}),
        )
        .await?["nonce"]
            .as_u64()
            .context("account_get.nonce")?,
    };
    let signed = crate::cli::sign_tx(&key, &chain_id, nonce, action)?;
    let started = Instant::now();
    let r = call(
        &c,
        "tx_submit",
        json!({"tx": hex::encode(signed.encoded())}),
    )
    .await?;
    println!(
        "submitted {} (nonce {nonce})",
        r["hash"].as_str().unwrap_or("")
    );
    let status = call(
        &c,
        "tx_wait",
        json!({"hash": signed.hash().to_hex(), "timeout_ms": timeout_ms}),
    )
    .await?;
    let height = status["height"].as_u64().context("tx_wait.height")?;
    println!(
        "{} in block {height} (index {}) after {} ms",
        status["status"].as_str().unwrap_or(""),
        status["index"],
        started.elapsed().as_millis()
    );
    if let Some(err) = status.get("error") {
        println!("error: {}", err["message"].as_str().unwrap_or(""));
    }
    let b = call(&c, "block_get", json!({"height": height})).await?;
    let cert = &b["certificate"];
    println!(
        "block {height} hash {}; commit certificate: view {}, {} signatures",
        b["hash"].as_str().unwrap_or(""),
        cert["view"],
        cert["signatures"].as_array().map_or(0, |s| s.len()),
    );
    if let Ok(genesis) = e.genesis() {
        println!("{}", verify_block_json(&b, &genesis)?);
    }
    if status["status"] == "failed" {
        bail!("the transaction failed");
    }
    Ok(())
}

/// `tally evidence`: the equivocation evidence every node holds, deduplicated. With
/// `verify`, each piece is checked against the genesis alone — both statements validly
/// signed by the named validator's genesis key for this chain, of one kind, for one slot,
/// saying different things — and the JSON fields a client in another language would use
/// must match the raw record. Fails if any piece does not check out.
pub async fn evidence(e: &Endpoints, verify: bool) -> Result<()> {
    use tally_consensus::pbft::Evidence;
    let urls = e.urls()?;
    let mut seen = std::collections::BTreeMap::new();
    let mut reached = 0;
    for url in &urls {
        let Ok(c) = client(url) else { continue };
        let Ok(list) = call(&c, "evidence_list", json!({})).await else {
            eprintln!("{url}: unreachable");
            continue;
        };
        reached += 1;
        for item in list.as_array().cloned().unwrap_or_default() {
            let raw = item["raw"].as_str().unwrap_or("").to_string();
            seen.entry(raw).or_insert((url.clone(), item));
        }
    }
    if reached == 0 {
        bail!("no node answered");
    }
    let genesis = if verify { Some(e.genesis()?) } else { None };
    let mut bad = 0;
    for (raw, (url, item)) in &seen {
        let who = format!(
            "validator {} ({})",
            item["name"].as_str().unwrap_or("?"),
            item["validator"]
        );
        let what = format!(
            "{} at view {} seq {} (from {url})",
            item["kind"].as_str().unwrap_or("?"),
            item["view"],
            item["seq"]
        );
        let Some(g) = &genesis else {
            println!("{who} equivocated: {what}");
            continue;
        };
        let checked = (|| -> Result<()> {
            let bytes = hex::decode(raw).context("raw is not hex")?;
            let ev = Evidence::decode(&bytes)?;
            let set = crate::shared::validator_set(g)?;
            ev.verify(&set, &g.chain_id)?;
            if item["validator"].as_u64() != Some(ev.validator().0 as u64) {
                bail!("the JSON names another validator than the signed statements");
            }
            for (json, s) in item["statements"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .zip([&ev.first, &ev.second])
            {
                let same = json["domain"].as_str() == Some(s.domain().tag())
                    && json["signed_bytes"].as_str()
                        == Some(tally_crypto::to_hex(&s.signing_bytes()).as_str())
                    && json["signature"].as_str()
                        == Some(tally_crypto::to_hex(&s.signature().0).as_str());
                if !same {
                    bail!("the JSON statements differ from the raw record");
                }
            }
            Ok(())
        })();
        match checked {
            Ok(()) => println!(
                "{who} equivocated: {what}: verified (two conflicting statements, both signed by its genesis key)"
            ),
            Err(err) => {
                bad += 1;
                println!("{who}: {what}: DOES NOT VERIFY: {err}");
            }
        }
    }
    if seen.is_empty() {
        println!("no evidence at {reached} of {} nodes", urls.len());
    }
    if bad > 0 {
        bail!("{bad} pieces of evidence do not verify");
    }
    Ok(())
}
