//! The pictures (SVG), drawn from the raw samples.

use std::collections::HashMap;

use crate::report::Report;

use crate::stats::{median, ms_us};
use crate::svg;

impl Report<'_> {
    /// The pictures: (file name, SVG).
    pub(crate) fn plots(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if !self.reload.is_empty() {
            let signals: Vec<Vec<f64>> = self
                .reload
                .iter()
                .map(|r| r.restarts.iter().map(|x| x.signal).collect())
                .collect();
            let titles: Vec<String> = self
                .reload
                .iter()
                .map(|r| {
                    format!(
                        "{}: {} restarts, {} failed, {} reconnects, p99 steady {} ms / 1 s after {} ms",
                        r.mode.name(),
                        r.restarts.len(),
                        r.stats.failed(),
                        r.stats.reconnects,
                        ms_us(r.steady.p99),
                        ms_us(r.after.p99)
                    )
                })
                .collect();
            let panels: Vec<svg::LatencyPanel<'_>> = self
                .reload
                .iter()
                .enumerate()
                .map(|(i, r)| svg::LatencyPanel {
                    title: &titles[i],
                    samples: &r.samples,
                    restarts: &signals[i],
                    failures: &r.failure_times,
                    reconnects: &r.reconnect_times,
                    length_ms: r.elapsed_s * 1e3,
                })
                .collect();
            let c = self.cli;
            out.push((
                "reload-latency.svg".to_string(),
                svg::latency_over_time(
                    "Latency over time, a restart every dashed line",
                    &format!(
                        "C={} keep-alive + K={} new-connection clients on {}; heird {}; load {}",
                        c.keepalive,
                        c.newconn,
                        c.path,
                        self.revision,
                        self.load_before
                            .split_whitespace()
                            .take(3)
                            .collect::<Vec<_>>()
                            .join(" ")
                    ),
                    &panels,
                    100,
                ),
            ));
        }
        if let Some(t) = &self.throughput {
            let groups: Vec<svg::BarGroup<'_>> = t
                .targets
                .iter()
                .map(|n| {
                    let v = t.cpu_per_req(n);
                    svg::BarGroup {
                        label: n,
                        bars: vec![(median(&v), v)],
                    }
                })
                .collect();
            out.push((
                "cpu-per-request.svg".to_string(),
                svg::bars(
                    "Server CPU per request, HTTP/1.1 keep-alive hello world (wrk)",
                    &format!(
                        "utime+stime / requests; bar = median, dots = rounds; server pinned to one core; heird {}; load {}",
                        self.revision,
                        self.load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
                    ),
                    "µs",
                    &["server CPU per request (µs)"],
                    &groups,
                ),
            ));
        }
        if !self.cli.instructions.is_empty() {
            // SERIES PROTO VALUE lines; a series keeps the order it first appears in.
            let mut series: Vec<String> = Vec::new();
            let mut protos: Vec<String> = Vec::new();
            let mut vals: HashMap<(String, String), Vec<f64>> = HashMap::new();
            for f in &self.cli.instructions {
                for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
                    let w: Vec<&str> = line.split_whitespace().collect();
                    let [name, proto, v] = w[..] else { continue };
                    let Ok(v) = v.parse::<f64>() else { continue };
                    if !series.iter().any(|s| s == name) {
                        series.push(name.to_string());
                    }
                    if !protos.iter().any(|p| p == proto) {
                        protos.push(proto.to_string());
                    }
                    vals.entry((name.to_string(), proto.to_string()))
                        .or_default()
                        .push(v);
                }
            }
            let groups: Vec<svg::BarGroup<'_>> = protos
                .iter()
                .map(|p| svg::BarGroup {
                    label: p,
                    bars: series
                        .iter()
                        .map(|s| {
                            let v = vals.get(&(s.clone(), p.clone())).cloned().unwrap_or_default();
                            (median(&v), v)
                        })
                        .collect(),
                })
                .collect();
            let names: Vec<&str> = series.iter().map(String::as_str).collect();
            out.push((
                "instructions-per-request.svg".to_string(),
                svg::bars(
                    "Server user-space instructions per request (callgrind), hello world, one keep-alive connection",
                    "bench/callgrind.sh: (I(2N) - I(N)) / N, h2load -c1 -m1; the kernel's TCP work is not counted",
                    "instr.",
                    &names,
                    &groups,
                ),
            ));
        }
        out
    }
}
