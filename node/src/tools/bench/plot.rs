//! SVG charts: one run's throughput and latency per second, a sweep's throughput-latency curve.

use super::*;

/// Two stacked line charts: throughput (offered, committed) and latency (p50, p99).
pub(super) fn plot_svg(r: &Report) -> String {
    let (w, h, pad) = (900.0, 260.0, 50.0);
    let t = &r.timeline;
    let n = t.len().max(2) as f64;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / (n - 1.0);
    let max_tp = t
        .iter()
        .map(|p| p.offered.max(p.committed))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let max_lat = t.iter().map(|p| p.latency_p99_ms).fold(1.0f64, f64::max);
    let line = |vals: Vec<f64>, max: f64, top: f64, color: &str| {
        let pts: Vec<String> = vals
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    x(i),
                    top + h - pad - (h - 2.0 * pad) * v / max
                )
            })
            .collect();
        format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        )
    };
    let axes = |top: f64, title: &str, max: f64, unit: &str| {
        format!(
            "<text x=\"{pad}\" y=\"{}\" font-size=\"14\">{title}</text><line x1=\"{pad}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#888\"/><line x1=\"{pad}\" y1=\"{}\" x2=\"{pad}\" y2=\"{}\" stroke=\"#888\"/><text x=\"5\" y=\"{}\" font-size=\"11\">{max:.0} {unit}</text><text x=\"5\" y=\"{}\" font-size=\"11\">0</text><text x=\"{}\" y=\"{}\" font-size=\"11\">{} s</text>",
            top + 20.0,
            top + h - pad,
            w - pad,
            top + h - pad,
            top + pad,
            top + h - pad,
            top + pad + 4.0,
            top + h - pad,
            w - pad - 20.0,
            top + h - pad + 15.0,
            t.len()
        )
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{}\" font-family=\"sans-serif\">",
        2.0 * h
    );
    s.push_str(&axes(
        0.0,
        "throughput (tx/s): offered (grey), committed (blue)",
        max_tp,
        "tx/s",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.offered as f64).collect(),
        max_tp,
        0.0,
        "#999",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.committed as f64).collect(),
        max_tp,
        0.0,
        "#1f77b4",
    ));
    s.push_str(&axes(
        h,
        "latency (ms): p50 (green), p99 (red)",
        max_lat,
        "ms",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.latency_p50_ms).collect(),
        max_lat,
        h,
        "#2ca02c",
    ));
    s.push_str(&line(
        t.iter().map(|p| p.latency_p99_ms).collect(),
        max_lat,
        h,
        "#d62728",
    ));
    s.push_str("</svg>\n");
    s
}

/// A sweep's throughput-latency curve: median committed rate across, median p50 and p99
/// latency up, one point per offered rate, and the latency bounds as dashed lines.
pub(super) fn sweep_svg(points: &[SweepPoint], b: &Bounds) -> String {
    let (w, h, pad) = (900.0, 520.0, 60.0);
    let max_x = points
        .iter()
        .map(|p| (p.offered_tx_per_s as f64).max(p.median.committed_tx_per_s.median))
        .fold(1.0f64, f64::max);
    let max_y = points
        .iter()
        .map(|p| p.median.latency_p99_ms.median)
        .fold(b.p50_max_ms, f64::max)
        .max(1.0);
    let x = |v: f64| pad + (w - 2.0 * pad) * v / max_x;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max_y;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\">\
         <text x=\"{pad}\" y=\"25\" font-size=\"14\">latency (ms) against committed throughput (tx/s): p50 (green), p99 (red); labels: offered tx/s</text>\
         <line x1=\"{pad}\" y1=\"{b0}\" x2=\"{r}\" y2=\"{b0}\" stroke=\"#888\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b0}\" stroke=\"#888\"/>\
         <text x=\"5\" y=\"{t}\" font-size=\"11\">{max_y:.0} ms</text>\
         <text x=\"{r}\" y=\"{xl}\" font-size=\"11\" text-anchor=\"end\">{max_x:.0} tx/s</text>\
         <text x=\"{pad}\" y=\"{xl}\" font-size=\"11\">0</text>",
        b0 = h - pad,
        r = w - pad,
        t = pad + 4.0,
        xl = h - pad + 15.0,
    );
    for (bound, label) in [(b.p50_max_ms, "p50 bound"), (b.p99_max_ms, "p99 bound")] {
        if bound <= max_y {
            s.push_str(&format!(
                "<line x1=\"{pad}\" y1=\"{yy:.1}\" x2=\"{r}\" y2=\"{yy:.1}\" stroke=\"#bbb\" stroke-dasharray=\"6 4\"/>\
                 <text x=\"{r}\" y=\"{ly:.1}\" font-size=\"10\" text-anchor=\"end\" fill=\"#888\">{label} {bound:.0} ms</text>",
                yy = y(bound),
                r = w - pad,
                ly = y(bound) - 3.0,
            ));
        }
    }
    for (pick, color) in [
        (
            &(|p: &SweepPoint| p.median.latency_p50_ms.median) as &dyn Fn(&SweepPoint) -> f64,
            "#2ca02c",
        ),
        (&|p: &SweepPoint| p.median.latency_p99_ms.median, "#d62728"),
    ] {
        let pts: Vec<String> = points
            .iter()
            .map(|p| {
                format!(
                    "{:.1},{:.1}",
                    x(p.median.committed_tx_per_s.median),
                    y(pick(p))
                )
            })
            .collect();
        s.push_str(&format!(
            "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            pts.join(" ")
        ));
        for p in points {
            s.push_str(&format!(
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"{color}\"/>",
                x(p.median.committed_tx_per_s.median),
                y(pick(p))
            ));
        }
    }
    for p in points {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"10\" text-anchor=\"middle\">{}</text>",
            x(p.median.committed_tx_per_s.median),
            y(p.median.latency_p99_ms.median) - 8.0,
            p.offered_tx_per_s
        ));
    }
    s.push_str("</svg>\n");
    s
}
