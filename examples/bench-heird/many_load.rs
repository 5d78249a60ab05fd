//! Section 5 (`many-load`): reload under load with many idle connections held open, so that
//! every handoff moves them all while the load client runs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::args::Cli;
use crate::procs::{field, raise_nofile, strip_ansi};
use crate::reload::{Mode, ReloadResult, run_reload};
use crate::stats::{f2, med_max, ms_us};
use crate::svg;

pub(crate) struct ManyLoad {
    wanted: usize,
    pub(crate) run: ReloadResult,
    /// `moved=`/`not_moved=` of each old process's "connections moved" line, in log order.
    counts: Vec<(u64, u64)>,
}

pub(crate) fn run_many_load(cli: &Cli, bin: &Path, work: &Path) -> anyhow::Result<ManyLoad> {
    // One fd per idle client socket here; heird raises its own limit.
    raise_nofile();
    let dir = work.join("many-load");
    let run = run_reload(cli, bin, &dir, Mode::Handoff, cli.many_conns)?;
    let text = strip_ansi(&std::fs::read_to_string(dir.join("heird.log")).unwrap_or_default());
    let counts = text
        .lines()
        .filter(|l| l.contains("connections moved"))
        .map(|l| {
            let n = |k| field(l, k).and_then(|v| v.parse().ok()).unwrap_or(0);
            (n("moved"), n("not_moved"))
        })
        .collect();
    Ok(ManyLoad {
        wanted: cli.many_conns,
        run,
        counts,
    })
}

/// The number after `"key":` in a JSON reply.
fn json_u64(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.find(&format!("\"{key}\":"))? + key.len() + 3..];
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl ManyLoad {
    pub(crate) fn table(&self, cli: &Cli) -> String {
        let r = &self.run;
        let s = &r.stats;
        let handoffs = r.restarts.len();
        let ok = r.ok_restarts();
        let last_pid = r.restarts.iter().rev().find_map(|h| h.new);
        let replies = &r.idle_replies;
        let answered = replies.iter().filter(|t| !t.is_empty()).count();
        let by_last = replies
            .iter()
            .filter(|t| last_pid.is_some() && json_u64(t, "pid").map(|p| p as u32) == last_pid)
            .count();
        let mut moves: BTreeMap<u64, usize> = BTreeMap::new();
        for t in replies.iter().filter(|t| !t.is_empty()) {
            *moves
                .entry(json_u64(t, "connection_moves").unwrap_or(0))
                .or_default() += 1;
        }
        let moves: Vec<String> = moves.iter().map(|(m, n)| format!("{m}: {n}")).collect();
        let moved: Vec<String> = self.counts.iter().map(|(m, _)| m.to_string()).collect();
        let not_moved: u64 = self.counts.iter().map(|c| c.1).sum();
        let all_moved =
            self.counts.len() == ok && self.counts.iter().all(|&(m, _)| m >= replies.len() as u64);
        let ratio = r.p99_ratio();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "### 5. Reload under load with {} idle connections open\n\n\
             {} idle keep-alive connections (each served one `GET /healthz` first) held open, plus \
             C={} keep-alive + K={} new-connection clients on `{}`, T={} s, a handoff every S={} s, \
             \"after\" = the {} s after each signal, steady = the rest (first 1 s skipped)\n\n| | |\n|---|---|",
            self.wanted,
            replies.len(),
            cli.keepalive,
            cli.newconn,
            cli.path,
            cli.reload_duration().as_secs_f64(),
            cli.every.as_secs_f64(),
            cli.window.as_secs_f64()
        );
        let rows = [
            (
                "idle connections opened",
                format!("{} in {:.1} s", replies.len(), r.idle_open_s),
            ),
            ("handoffs (ok)", format!("{handoffs} ({ok})")),
            (
                "signal → successor ready, `MAINPID=` (ms, median / max)",
                med_max(&r.signal_to_ready()),
            ),
            (
                "successor fork → ready, heird's `ready_ms` (median / max)",
                med_max(&r.log_ready()),
            ),
            (
                "signal → first response from new pid (ms, median / max)",
                med_max(&r.signal_to_first()),
            ),
            (
                "signal → old process exited (ms, median / max)",
                med_max(&r.signal_to_old_exit()),
            ),
            ("latency steady p50 / p99 / max (ms)", r.steady.cell()),
            ("latency 1 s after a handoff p50 / p99 / max (ms)", r.after.cell()),
            (
                "**p99 after / p99 steady** (target ≤ 1.05)",
                format!("**{}** ({})", f2(ratio), crate::report::verdict(ratio <= 1.05)),
            ),
            (
                "load requests OK (req/s)",
                format!("{} ({:.0})", s.ok, s.ok as f64 / r.elapsed_s),
            ),
            ("**failed** load requests", format!("**{}**", s.failed())),
            (
                "  refused / reset / closed before response / timeout / non-200 / other",
                format!(
                    "{} / {} / {} / {} / {} / {}",
                    s.refused, s.reset, s.closed_before_response, s.timeout, s.non_200, s.other
                ),
            ),
            (
                "**reconnects** of the load's keep-alive clients (per handoff)",
                format!("**{}** ({:.1})", s.reconnects, r.reconnects_per_restart()),
            ),
            ("old processes' `moved=`, one per handoff", moved.join(", ")),
            ("old processes' `not_moved=`, total", not_moved.to_string()),
            (
                "every idle connection moved at every handoff (`moved=` ≥ idle count each time)",
                if all_moved { "yes".into() } else { "**no**".into() },
            ),
            (
                "idle connections answering `GET /info` at the end / from the last pid",
                format!("{answered} / {by_last}"),
            ),
            ("their `connection_moves` (value: connections)", moves.join(", ")),
        ];
        for (k, v) in rows {
            let _ = writeln!(out, "| {k} | {v} |");
        }
        let _ = writeln!(
            out,
            "\n| # | → ready (ms) | fork → ready | → first new-pid response | → old exited | max latency in the 1 s after (ms) | moved / not_moved |\n|---|---|---|---|---|---|---|"
        );
        let opt = |v: Option<f64>, base: f64| v.map_or("–".into(), |v| format!("{:.1}", v - base));
        for (i, h) in r.restarts.iter().enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                opt(h.ready, h.signal),
                h.log_ready_ms.map_or("–".into(), |v| format!("{v:.2}")),
                opt(h.first_response, h.signal),
                opt(h.old_exit, h.signal),
                ms_us(h.window_max_us),
                self.counts
                    .get(i)
                    .map_or("–".into(), |(m, n)| format!("{m} / {n}"))
            );
        }
        out
    }

    /// Latency over time (the picture of section 1, for this run).
    pub(crate) fn plot(&self, cli: &Cli, revision: &str) -> (String, String) {
        let r = &self.run;
        let signals: Vec<f64> = r.restarts.iter().map(|x| x.signal).collect();
        let title = format!(
            "heird handoff with {} idle connections: {} handoffs, {} failed, {} reconnects, p99 steady {} ms / 1 s after {} ms",
            r.idle_replies.len(),
            r.restarts.len(),
            r.stats.failed(),
            r.stats.reconnects,
            ms_us(r.steady.p99),
            ms_us(r.after.p99)
        );
        let panel = svg::LatencyPanel {
            title: &title,
            samples: &r.samples,
            restarts: &signals,
            failures: &r.failure_times,
            reconnects: &r.reconnect_times,
            length_ms: r.elapsed_s * 1e3,
        };
        let svg = svg::latency_over_time(
            "Latency over time with many idle connections moved at each handoff (dashed lines)",
            &format!(
                "C={} keep-alive + K={} new-connection clients on {}; heird {revision}",
                cli.keepalive, cli.newconn, cli.path
            ),
            &[panel],
            100,
        );
        ("many-load-latency.svg".to_string(), svg)
    }
}
