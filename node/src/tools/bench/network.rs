//! The validators a benchmark starts (one `tally start` process each) and what it reads about
//! them and the machine from `/proc`.

use super::*;

pub(super) struct Nodes {
    pub(super) children: Vec<Child>,
    /// Each child's name and log file, in the same order.
    pub(super) logs: Vec<(String, PathBuf)>,
    pub(super) _dir: Option<tempfile::TempDir>,
}

impl Nodes {
    /// The first validator this benchmark started that is no longer running, with the end of
    /// its log: a fault-free benchmark with a dead validator measures nothing worth keeping.
    pub(super) fn exited(&self) -> Option<String> {
        self.children
            .iter()
            .zip(&self.logs)
            .find(|(c, _)| has_exited(c.id()))
            .map(|(_, (name, log))| {
                format!(
                    "validator {name} exited; the end of its log ({}):\n{}",
                    log.display(),
                    log_tail(log, 12)
                )
            })
    }
}

/// Whether a child process has ended (a zombie until it is waited for) or is gone.
pub(super) fn has_exited(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z" | "X") | None)
}

/// The last `lines` lines of a log file.
pub(super) fn log_tail(path: &std::path::Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for c in &self.children {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
        }
        for c in &mut self.children {
            let _ = c.wait();
        }
    }
}

pub(super) fn proc_stat(pid: u32) -> Option<(f64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let cpu = (f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()?;
    Some((cpu, hwm * 1024))
}

/// The samples of the counter family `name` summed per value of its `reason` label.
pub(super) async fn metric_by_reason(
    url: &str,
    name: &str,
) -> std::collections::BTreeMap<String, f64> {
    by_reason(&metrics_page(url).await, name)
}

fn by_reason(page: &str, name: &str) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let Some(reason) = rest
            .split("reason=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        if let Some(v) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *out.entry(reason.to_string()).or_insert(0.0) += v;
        }
    }
    out
}

async fn metrics_page(url: &str) -> String {
    let addr = url.trim_start_matches("http://").to_string();
    let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
        return String::new();
    };
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    out
}

pub(super) async fn metric_sum(url: &str, name: &str) -> f64 {
    metrics_page(url)
        .await
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(super) fn start_network(a: &BenchArgs) -> Result<(NetworkInfo, Nodes)> {
    if let Some(path) = &a.network {
        return Ok((
            NetworkInfo::load(path)?,
            Nodes {
                children: vec![],
                logs: vec![],
                _dir: None,
            },
        ));
    }
    let dir = tempfile::Builder::new().prefix("tally-bench").tempdir()?;
    let out = dir.path().join("net");
    let mut opts = TestnetOptions::new(a.validators, a.consensus, out.clone());
    opts.chain_id = "tally-bench".into();
    opts.base_port = a.base_port;
    opts.accounts = 1;
    let mut params = tally_genesis::ConsensusParams::new(a.consensus);
    if let Some(v) = a.batch_delay_ms {
        params.batch_delay_ms = v;
    }
    params.payload = a.payload.unwrap_or(tally_genesis::Payload::Batches);
    if let Some(v) = a.batch_bytes_max {
        params.batch_bytes_max = v;
    }
    if let Some(v) = a.watermark_window {
        params.watermark_window = v;
    }
    if let Some(v) = a.checkpoint_interval {
        params.checkpoint_interval = v;
    }
    opts.params = Some(params);
    let info = generate(&opts)?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    let mut logs = Vec::new();
    for n in &info.nodes {
        // Quieter logs: a benchmark measures the node, not its terminal.
        let config = n.home.join("config.toml");
        let text = std::fs::read_to_string(&config)?.replace("log = \"info\"", "log = \"warn\"");
        std::fs::write(&config, text)?;
        let log_path = n.home.join("node.log");
        let log = std::fs::File::create(&log_path)?;
        logs.push((n.name.clone(), log_path));
        children.push(
            Command::new(&exe)
                .args(["start", "--home"])
                .arg(&n.home)
                .stdout(Stdio::from(log.try_clone()?))
                .stderr(Stdio::from(log))
                .spawn()?,
        );
    }
    let keep = a.keep.then(|| dir.path().to_path_buf());
    if let Some(k) = keep {
        eprintln!("network folder: {} (kept)", k.display());
        return Ok((
            info,
            Nodes {
                children,
                logs,
                _dir: None,
            },
        ))
        .map(|(i, n)| {
            std::mem::forget(dir);
            (i, n)
        });
    }
    Ok((
        info,
        Nodes {
            children,
            logs,
            _dir: Some(dir),
        },
    ))
}

#[derive(serde::Serialize)]
pub(super) struct NodeUse {
    pub(super) name: String,
    pub(super) cpu_cores: f64,
    pub(super) peak_rss_mb: f64,
}

#[derive(serde::Serialize)]
pub(super) struct MachineUse {
    pub(super) cores: usize,
    /// CPU in use on the whole machine (user, system and interrupts), in cores.
    pub(super) busy_cores: f64,
    /// Busy CPU spent neither by the validators nor by this client: other programs sharing the
    /// machine. Absent when the benchmark targets a running network.
    pub(super) other_programs_cores: Option<f64>,
    /// CPU the hypervisor gave to other guests while this one wanted to run.
    pub(super) steal_cores: f64,
}

/// Whole-machine CPU seconds so far, `(busy, steal)`, from the first line of `/proc/stat`.
pub(super) fn machine_cpu() -> Option<(f64, f64)> {
    parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
}

pub(super) fn parse_proc_stat(text: &str) -> Option<(f64, f64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    // user nice system idle iowait irq softirq steal …, in clock ticks (100 per second).
    let f: Vec<f64> = fields.map(|x| x.parse().ok()).collect::<Option<_>>()?;
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5)? + f.get(6)?;
    Some((busy / 100.0, f.get(7).copied().unwrap_or(0.0) / 100.0))
}

pub(super) fn machine_use(
    start: Option<(f64, f64)>,
    end: Option<(f64, f64)>,
    window: f64,
    ours: Option<f64>,
) -> MachineUse {
    let (busy, steal) = match (start, end) {
        (Some((b0, s0)), Some((b1, s1))) if window > 0.0 => {
            ((b1 - b0) / window, (s1 - s0) / window)
        }
        _ => (0.0, 0.0),
    };
    MachineUse {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        busy_cores: busy,
        other_programs_cores: ours.map(|o| (busy - o).max(0.0)),
        steal_cores: steal,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn view_changes_are_summed_per_reason() {
        let page = "# HELP tally_view_changes_total x\n\
            tally_view_changes_total{reason=\"timeout\"} 2\n\
            tally_view_changes_total{reason=\"join_higher_view\"} 1\n\
            tally_view_changes_total{node=\"a\",reason=\"timeout\"} 3\n\
            tally_blocks_committed_total 9\n";
        let r = super::by_reason(page, "tally_view_changes_total");
        assert_eq!(r.len(), 2);
        assert_eq!(r["timeout"], 5.0);
        assert_eq!(r["join_higher_view"], 1.0);
    }
}
