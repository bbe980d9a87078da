//! Monitoring against a live network under load, with the real tools:
//! * `promtool check metrics` on every node's `/metrics`;
//! * `promtool check rules` on `monitoring/alerts.yml`;
//! * a real Prometheus server scrapes the network; the committed-transaction rate it
//!   computes is above zero; every query of every panel of `monitoring/grafana/tally.json`
//!   (Grafana's `$__rate_interval` and `$instance` substituted as Grafana would) returns at
//!   least one series; the alert rules load and evaluate.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::Net;

const REPO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

async fn http_get(addr: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
        return (0, String::new());
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies: keep it simple, strip the chunk-size lines.
    let body = if text.to_lowercase().contains("transfer-encoding: chunked") {
        let mut out = String::new();
        let mut rest = body.as_str();
        while let Some((size, tail)) = rest.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                break;
            }
            out.push_str(&tail[..n.min(tail.len())]);
            rest = tail.get(n + 2..).unwrap_or("");
        }
        out
    } else {
        body
    };
    (code, body)
}

fn encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn query(prom: &str, q: &str) -> Value {
    let (code, body) = http_get(prom, &format!("/api/v1/query?query={}", encode(q))).await;
    assert_eq!(code, 200, "query {q}: {body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_a_loaded_network_and_every_panel_has_data() {
    scenario(4, "pbft").await;
}

/// The same dashboard and rules on a Raft network (three validators): every panel has data
/// (the families PBFT alone fills are exported with their labels at zero) and every rule
/// evaluates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_rules_work_for_a_raft_network() {
    scenario(3, "raft").await;
}

async fn scenario(validators: usize, protocol: &str) {
    for tool in ["promtool", "prometheus"] {
        assert!(
            Command::new(tool).arg("--version").output().is_ok(),
            "{tool} is missing: `make test` installs Debian's prometheus package"
        );
    }
    let net = Net::start(validators, &["--consensus", protocol]);
    let all: Vec<usize> = (0..validators).collect();
    net.wait_up(&all).await;

    // Load: transfers from every account, spread over the nodes, for the whole test.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let keys: Vec<_> = (0..net.info.accounts.len())
            .map(|a| net.account_key(a))
            .collect();
        let txs: Vec<Vec<String>> = (0..400u64)
            .map(|round| {
                keys.iter()
                    .enumerate()
                    .map(|(a, k)| {
                        hex::encode(net.transfer(k, round, (a + 1) % keys.len(), 1).encoded())
                    })
                    .collect()
            })
            .collect();
        let clients = net.clients.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            use jsonrpsee::core::client::ClientT;
            for (i, batch) in txs.into_iter().enumerate() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut p = jsonrpsee::core::params::ObjectParams::new();
                p.insert("txs", batch).unwrap();
                let _ = clients[i % clients.len()]
                    .request::<Value, _>("tx_submit_batch", p)
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // Prometheus scraping the network, with the alert rules.
    let prom_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let prom = format!("127.0.0.1:{port}");
    let targets: Vec<String> = net
        .info
        .nodes
        .iter()
        .map(|n| format!("'{}'", n.metrics.trim_start_matches("http://")))
        .collect();
    let config = prom_dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - '{REPO}/monitoring/alerts.yml'\nscrape_configs:\n  - job_name: tally\n    static_configs:\n      - targets: [{}]\n",
            targets.join(", ")
        ),
    )
    .unwrap();
    let mut server = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            prom_dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(prom_dir.path().join("prometheus.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = &mut server;
    let _server = Kill(server);
    let ready = Instant::now();
    while http_get(&prom, "/-/ready").await.0 != 200 {
        assert!(
            ready.elapsed() < Duration::from_secs(30),
            "prometheus did not start"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // promtool on every node's live output.
    for n in &net.info.nodes {
        let addr = n.metrics.trim_start_matches("http://");
        let (code, body) = http_get(addr, "/metrics").await;
        assert_eq!(code, 200);
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {}: {}{}",
            n.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Every family the node exports is documented in the metrics reference.
        let reference = std::fs::read_to_string(format!("{REPO}/docs/metrics.md")).unwrap();
        for line in body.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().unwrap();
                let documented = [name, &format!("{name}_total")].iter().any(|n| {
                    reference.contains(&format!("`{n}`")) || reference.contains(&format!("`{n}{{"))
                });
                assert!(
                    !name.starts_with("tally_") || documented,
                    "{name} is exported but not in docs/metrics.md"
                );
            }
        }
    }
    let out = Command::new("promtool")
        .args(["check", "rules", &format!("{REPO}/monitoring/alerts.yml")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // Let Prometheus gather enough samples for rates over 30 s.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let rate = query(
        &prom,
        "sum(rate(tally_transactions_committed_total{outcome=\"ok\"}[30s]))",
    )
    .await;
    let value: f64 = rate["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap();
    assert!(value > 0.0, "committed transaction rate: {rate}");
    eprintln!(
        "PromQL sum(rate(tally_transactions_committed_total{{outcome=\"ok\"}}[30s])) = {value:.1}"
    );

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{REPO}/monitoring/grafana/tally.json")).unwrap(),
    )
    .unwrap();
    let mut checked = 0;
    let mut empty = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let q = expr
                .replace("$__rate_interval", "30s")
                .replace("$instance", ".*");
            let r = query(&prom, &q).await;
            assert_eq!(r["status"], "success", "{q}: {r}");
            let series = r["data"]["result"].as_array().map_or(0, |a| a.len());
            if series == 0 {
                empty.push(format!("panel {}: {q}", panel["title"]));
            }
            checked += 1;
        }
    }
    assert!(
        empty.is_empty(),
        "queries that returned no series:\n{}",
        empty.join("\n")
    );
    eprintln!("{checked} dashboard queries returned data");
    assert!(checked >= 30);

    let (_, rules) = http_get(&prom, "/api/v1/rules").await;
    let rules: Value = serde_json::from_str(&rules).unwrap();
    let loaded: Vec<&Value> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(loaded.len(), 9, "alert rules loaded");
    for r in loaded {
        assert_eq!(r["health"], "ok", "rule {} evaluates: {r}", r["name"]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = load.await;
    let _ = json!({});
}
