//! The `tally` binary: offline signing reproduces the documented vectors, `tally testnet`
//! writes a loadable network, key-file permissions are enforced, help exists everywhere.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use tally_crypto::{SecretKey, keyfile};
use tally_genesis::Genesis;
use tally_genesis::testnet::NetworkInfo;

fn tally(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_tally"))
        .args(args)
        .output()
        .unwrap()
}

fn vectors() -> Vec<HashMap<String, String>> {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/transactions.md"
    ))
    .unwrap();
    doc.split("## Test vectors")
        .nth(1)
        .unwrap()
        .split("### Vector ")
        .skip(1)
        .map(|v| {
            v.split("```text")
                .nth(1)
                .unwrap()
                .split("```")
                .next()
                .unwrap()
                .lines()
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .collect()
        })
        .collect()
}

#[test]
fn tx_sign_reproduces_the_documented_vectors() {
    let dir = tempfile::tempdir().unwrap();
    let vs = vectors();
    assert!(vs.len() >= 3);
    for (i, v) in vs.iter().enumerate() {
        let seed: [u8; 32] = hex::decode(&v["secret_seed"]).unwrap().try_into().unwrap();
        let key_file = dir.path().join(format!("k{i}.json"));
        keyfile::write(&key_file, &SecretKey::from_seed(&seed), false).unwrap();
        let mut args = vec![
            "tx".to_string(),
            "sign".into(),
            "--from".into(),
            key_file.display().to_string(),
            "--chain-id".into(),
            v["chain_id"].clone(),
            "--nonce".into(),
            v["nonce"].clone(),
        ];
        match v["action"].as_str() {
            "transfer" => args.extend([
                "transfer".into(),
                "--to".into(),
                v["to"].clone(),
                "--amount".into(),
                v["amount"].clone(),
            ]),
            _ => {
                // Keys in the vectors may be binary; the CLI takes text keys, so only
                // vectors with UTF-8 keys go through it (the rest are checked in tally-ledger).
                let Ok(k) = String::from_utf8(hex::decode(&v["data_key_hex"]).unwrap()) else {
                    continue;
                };
                args.extend([
                    "put".into(),
                    "--data-key".into(),
                    k,
                    "--data-value-hex".into(),
                    v["data_value_hex"].clone(),
                ]);
            }
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = tally(&args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(stdout.lines().count(), 1, "one JSON line");
        let json: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(json["hash"], v["hash"].as_str());
        assert_eq!(json["tx"], v["encoded"].as_str());
    }
}

#[test]
fn text_put_matches_hex_put() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k.json");
    keyfile::write(&key_file, &SecretKey::from_seed(&[0x42; 32]), false).unwrap();
    let k = key_file.display().to_string();
    let a = tally(&[
        "tx",
        "sign",
        "--from",
        &k,
        "--chain-id",
        "tally-test",
        "--nonce",
        "7",
        "put",
        "--data-key",
        "greeting",
        "--data-value",
        "hello, tally",
    ]);
    let b = tally(&[
        "tx",
        "sign",
        "--from",
        &k,
        "--chain-id",
        "tally-test",
        "--nonce",
        "7",
        "put",
        "--data-key",
        "greeting",
        "--data-value-hex",
        &hex::encode("hello, tally"),
    ]);
    assert!(a.status.success());
    assert_eq!(a.stdout, b.stdout);
    let v2 = &vectors()[1];
    let json: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    assert_eq!(json["hash"], v2["hash"].as_str());
}

#[test]
fn insecure_key_file_and_bad_input_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("k.json");
    let out = tally(&["keygen", "--out", key_file.to_str().unwrap()]);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["address"].as_str().unwrap().len(), 64);
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // keygen does not overwrite.
    assert!(
        !tally(&["keygen", "--out", key_file.to_str().unwrap()])
            .status
            .success()
    );

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let to = "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394";
    let out = tally(&[
        "tx",
        "sign",
        "--from",
        key_file.to_str().unwrap(),
        "--chain-id",
        "c",
        "--nonce",
        "0",
        "transfer",
        "--to",
        to,
        "--amount",
        "1",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must not be readable") && err.contains("chmod 600"),
        "{err}"
    );

    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    for (args, needle) in [
        (
            vec![
                "--chain-id",
                "has space",
                "--nonce",
                "0",
                "transfer",
                "--to",
                to,
                "--amount",
                "1",
            ],
            "chain",
        ),
        (
            vec![
                "--chain-id",
                "c",
                "--nonce",
                "0",
                "transfer",
                "--to",
                "abc",
                "--amount",
                "1",
            ],
            "--to",
        ),
        (
            vec![
                "--chain-id",
                "c",
                "--nonce",
                "-1",
                "transfer",
                "--to",
                to,
                "--amount",
                "1",
            ],
            "nonce",
        ),
    ] {
        let mut full = vec!["tx", "sign", "--from", key_file.to_str().unwrap()];
        full.extend(args);
        let out = tally(&full);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn testnet_writes_a_network_that_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("net");
    let out = tally(&[
        "testnet",
        "--validators",
        "4",
        "--consensus",
        "pbft",
        "--out",
        out_dir.to_str().unwrap(),
        "--base-port",
        "32600",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let info = NetworkInfo::load(&out_dir.join("network.json")).unwrap();
    let genesis = Genesis::load(&out_dir.join("genesis.json")).unwrap();
    assert_eq!(info.nodes.len(), 4);
    assert_eq!(info.chain_id, genesis.chain_id.as_str());
    assert_eq!(genesis.hash().to_hex(), info.genesis_hash);
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("network.json")).unwrap())
            .unwrap();
    for n in raw["nodes"].as_array().unwrap() {
        for field in ["name", "public_key", "home", "p2p", "rpc", "metrics"] {
            assert!(n[field].is_string(), "nodes[].{field}");
        }
    }
    for a in raw["accounts"].as_array().unwrap() {
        assert!(a["address"].is_string() && a["key_file"].is_string() && a["balance"].is_u64());
    }
    // Too few validators for PBFT is a clear error.
    let out = tally(&[
        "testnet",
        "--validators",
        "3",
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--base-port",
        "32700",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 4"));
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        vec!["--help"],
        vec!["keygen", "--help"],
        vec!["testnet", "--help"],
        vec!["tx", "--help"],
        vec!["tx", "sign", "--help"],
        vec![
            "tx",
            "sign",
            "--from",
            "x",
            "--chain-id",
            "c",
            "--nonce",
            "0",
            "transfer",
            "--help",
        ],
    ] {
        let out = tally(&args);
        assert!(out.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{args:?}"
        );
    }
}

/// The first port of a range nothing listens on, from `from` up: a local network of four
/// uses ports base + 10·i + {0, 1, 2}.
fn free_ports(from: u16) -> u16 {
    (0..200u16)
        .map(|k| from + (std::process::id() as u16 % 100 + k) * 50)
        .find(|b| (0..43).all(|i| std::net::TcpListener::bind(("127.0.0.1", b + i)).is_ok()))
        .expect("a free port range")
}

/// A short benchmark's options: 1 s of warm-up, 1 s measured, 20 accounts.
const QUICK: [&str; 6] = ["--duration", "1s", "--warmup", "1s", "--accounts", "20"];

/// `tally bench ARGS --json` on free ports from `ports_from`: its report, or the test fails
/// with the benchmark's standard error.
fn bench_json(args: &[&str], ports_from: u16) -> serde_json::Value {
    let base = free_ports(ports_from).to_string();
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    all.extend(["--base-port", &base, "--json"]);
    let out = tally(&all);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `tally bench` end to end, at a low rate: real processes, real signatures; the report's
/// figures are those of a network that committed what was offered.
#[test]
fn bench_drives_a_local_network_and_reports() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("run.svg");
    let r = bench_json(
        &[
            "--validators",
            "4",
            "--tx-bytes",
            "300",
            "--rate",
            "200",
            "--duration",
            "3s",
            "--warmup",
            "1s",
            "--accounts",
            "50",
            "--plot",
            plot.to_str().unwrap(),
        ],
        38_000,
    );
    assert_eq!(r["validators"], 4);
    assert_eq!(r["tx_bytes"], 300);
    // What the client sent in the window (it may fall a little behind on a busy machine).
    let offered = r["offered_tx_per_s"].as_f64().unwrap();
    assert!((180.0..=201.0).contains(&offered), "offered {offered} tx/s");
    // Latency at 200 tx/s is tens of milliseconds: nearly all of the window commits in it.
    let committed = r["committed_tx_per_s"].as_f64().unwrap();
    assert!(committed >= 100.0, "committed {committed} tx/s");
    assert_eq!(r["refused_other"], 0);
    let p50 = r["latency_ms"]["p50"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= r["latency_ms"]["max"].as_f64().unwrap());
    let nodes = r["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert!(n["cpu_cores"].as_f64().unwrap() > 0.0, "{n}");
        assert!(n["peak_rss_mb"].as_f64().unwrap() > 1.0, "{n}");
    }
    assert!(r["ceiling"]["ceiling_tx_per_s"].as_f64().unwrap() > 0.0);
    let before = r["ceiling"]["rounds_before_per_s"].as_array().unwrap();
    let after = r["ceiling"]["rounds_after_per_s"].as_array().unwrap();
    assert_eq!(before.len(), tally_node::tools::bench::CEILING_ROUNDS);
    assert_eq!(after.len(), tally_node::tools::bench::CEILING_ROUNDS);
    let rounds: Vec<_> = before.iter().chain(after).collect();
    let best = r["ceiling"]["verifications_per_s_all_cores"]
        .as_f64()
        .unwrap();
    assert!(
        rounds.iter().all(|v| v.as_f64().unwrap() <= best),
        "{rounds:?}"
    );
    assert!(
        rounds.iter().any(|v| v.as_f64().unwrap() == best),
        "{rounds:?}"
    );
    let m = &r["machine"];
    assert!(m["cores"].as_u64().unwrap() >= 1);
    assert!(m["busy_cores"].as_f64().unwrap() > 0.0, "{m}");
    assert!(m["other_programs_cores"].as_f64().unwrap() >= 0.0, "{m}");
    assert_eq!(r["timeline"].as_array().unwrap().len(), 4);
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));

    bench_runs_repeat_and_report_medians();
    bench_sweep_reports_a_row_per_rate();
    bench_stops_when_a_validator_dies();
}

/// `tally bench --runs`: each run on a fresh network, every run reported, and medians that
/// are figures some run measured. Bad values are refused before anything starts. (Called
/// from the test above, not a test of its own: two benchmarks at once on two cores would
/// measure each other.)
fn bench_runs_repeat_and_report_medians() {
    let refused = tally(&["bench", "--runs", "0"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--runs must be between 1 and"));
    let refused = tally(&["bench", "--runs", "2", "--network", "/nonexistent.json"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("running network"));

    let mut args = vec!["--runs", "2", "--rate", "100"];
    args.extend(QUICK);
    let r = bench_json(&args, 48_000);
    let runs = r["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    let rates: Vec<f64> = runs
        .iter()
        .map(|x| x["committed_tx_per_s"].as_f64().unwrap())
        .collect();
    assert!(rates.iter().all(|&c| c > 0.0), "{rates:?}");
    let m = &r["median"];
    assert_eq!(m["runs"], 2);
    let median = m["committed_tx_per_s"]["median"].as_f64().unwrap();
    assert!(rates.contains(&median), "{median} not in {rates:?}");
    let i = m["median_run"].as_u64().unwrap() as usize;
    assert_eq!(rates[i], median);
    let p99: Vec<f64> = runs
        .iter()
        .map(|x| x["latency_ms"]["p99"].as_f64().unwrap())
        .collect();
    assert!(p99.contains(&m["latency_p99_ms"]["median"].as_f64().unwrap()));
    assert_eq!(m["view_changes"]["max"].as_f64().unwrap(), 0.0);
}

/// `tally bench --rate A,B`: a sweep, lowest rate first, one row of medians per rate, each
/// row judged against the latency bounds, and the highest rate that met them.
fn bench_sweep_reports_a_row_per_rate() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("sweep.svg");
    let mut args = vec!["--rate", "150,100", "--plot", plot.to_str().unwrap()];
    args.extend(QUICK);
    let r = bench_json(&args, 52_000);
    let points = r["sweep"].as_array().unwrap();
    let offered: Vec<u64> = points
        .iter()
        .map(|p| p["offered_tx_per_s"].as_u64().unwrap())
        .collect();
    assert_eq!(offered, [100, 150]);
    let b = &r["bounds"];
    assert_eq!(b["p50_max_ms"].as_f64().unwrap(), 150.0);
    assert_eq!(b["p99_max_ms"].as_f64().unwrap(), 1000.0);
    let mut best = None;
    for p in points {
        let runs = p["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let m = &p["median"];
        let committed = m["committed_tx_per_s"]["median"].as_f64().unwrap();
        assert_eq!(committed, runs[0]["committed_tx_per_s"].as_f64().unwrap());
        assert!(committed > 0.0, "{p}");
        let rate = p["offered_tx_per_s"].as_u64().unwrap();
        let met = committed >= 0.98 * rate as f64
            && m["latency_p50_ms"]["median"].as_f64().unwrap() <= 150.0
            && m["latency_p99_ms"]["median"].as_f64().unwrap() <= 1000.0
            && m["view_changes"]["max"].as_f64().unwrap() == 0.0;
        assert_eq!(p["met"].as_bool().unwrap(), met, "{m}");
        if met {
            best = Some(rate);
        }
    }
    assert_eq!(r["sustainable_tx_per_s"].as_u64(), best);
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.contains("against committed throughput"), "{svg}");
}

/// The processes whose parent is `parent` and whose command line contains `word`.
fn children_of(parent: u32, word: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(word) {
            out.push(pid);
        }
    }
    out
}

/// A validator killed during the run: the benchmark stops at once and names it, instead of
/// reporting a degraded network's figures.
fn bench_stops_when_a_validator_dies() {
    let base = free_ports(56_000);
    let bench = Command::new(env!("CARGO_BIN_EXE_tally"))
        .args([
            "bench",
            "--rate",
            "100",
            "--duration",
            "60s",
            "--warmup",
            "1s",
            "--accounts",
            "20",
            "--base-port",
            &base.to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    let mut nodes = Vec::new();
    while nodes.len() < 4 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(100));
        nodes = children_of(bench.id(), "start");
    }
    assert_eq!(nodes.len(), 4, "the benchmark's validators");
    // Let the load start, then kill one.
    std::thread::sleep(Duration::from_secs(6));
    let node1 = children_of(bench.id(), "/node1");
    assert_eq!(node1.len(), 1, "{nodes:?}");
    let killed = Command::new("kill")
        .args(["-9", &node1[0].to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let stopped = Instant::now();
    let out = bench.wait_with_output().unwrap();
    assert!(!out.status.success());
    // Checked every second; the network's shut-down and the second ceiling are skipped.
    assert!(
        stopped.elapsed() < Duration::from_secs(20),
        "{:?}",
        stopped.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("validator node1 exited"), "{err}");
}
