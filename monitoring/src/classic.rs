//! OpenMetrics text → the classic Prometheus text format (0.0.4), which older tools
//! (promtool 2.42) read: counters are typed under their `_total` name, `# UNIT` and
//! `# EOF` lines go, info metrics become gauges named `_info`.

pub fn openmetrics_to_classic(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut counters = std::collections::HashSet::new();
    let mut infos = std::collections::HashSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            if let Some(name) = rest.strip_suffix(" counter") {
                counters.insert(name.to_string());
            } else if let Some(name) = rest.strip_suffix(" info") {
                infos.insert(name.to_string());
            }
        }
    }
    for line in text.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.rsplit_once(' ').unwrap_or((rest, "untyped"));
            match kind {
                "counter" => out.push_str(&format!("# TYPE {name}_total counter\n")),
                "info" => out.push_str(&format!("# TYPE {name}_info gauge\n")),
                "gaugehistogram" | "stateset" | "unknown" => {
                    out.push_str(&format!("# TYPE {name} untyped\n"))
                }
                _ => {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("# HELP {name}_total {help}\n"));
                continue;
            }
            if infos.contains(name) {
                out.push_str(&format!("# HELP {name}_info {help}\n"));
                continue;
            }
        }
        // A counter's creation timestamp has no classic equivalent.
        if let Some(name) = line.split(['{', ' ']).next()
            && name.ends_with("_created")
            && counters.contains(name.trim_end_matches("_created"))
        {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_counters_units_and_eof() {
        let om = "# HELP tally_blocks Blocks.\n# TYPE tally_blocks counter\ntally_blocks_total 3\n# HELP tally_x_seconds X.\n# TYPE tally_x_seconds histogram\n# UNIT tally_x_seconds seconds\ntally_x_seconds_sum 1.0\n# EOF\n";
        let c = openmetrics_to_classic(om);
        assert_eq!(
            c,
            "# HELP tally_blocks_total Blocks.\n# TYPE tally_blocks_total counter\ntally_blocks_total 3\n# HELP tally_x_seconds X.\n# TYPE tally_x_seconds histogram\ntally_x_seconds_sum 1.0\n"
        );
    }
}
