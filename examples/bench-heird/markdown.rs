//! `--write`: the markdown block with the machine, the revision and the raw numbers.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::report::Report;
use crate::stats::ms_us;

/// The git revision of the work tree (taken when the run starts), marked as changed by the same
/// rule as `bench/callgrind.sh` and `bench/h2.sh`: uncommitted changes in src/, Cargo.toml or
/// Cargo.lock.
pub(crate) fn revision() -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "src",
        "Cargo.toml",
        "Cargo.lock",
    ])
    .is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{head} + uncommitted changes in src/, Cargo.toml or Cargo.lock")
    } else {
        head
    }
}

impl Report<'_> {
    pub(crate) fn raw(&self, out: &mut String) {
        let _ = writeln!(out, "<details><summary>Raw numbers</summary>\n");
        for r in &self.reload {
            let s = &r.stats;
            let _ = writeln!(
                out,
                "**{}** — {:.2} s; ok {}, refused {}, reset {}, closed_before_response {}, timeout {}, \
                 non_200 {}, other {}, reconnects {}, connection_close_seen {}; all OK latencies p50/p99/max \
                 {} ms over {} samples (steady {}, after {}); processes left at the end: {:?}\n",
                r.mode.name(),
                r.elapsed_s,
                s.ok,
                s.refused,
                s.reset,
                s.closed_before_response,
                s.timeout,
                s.non_200,
                s.other,
                s.reconnects,
                s.connection_close_seen,
                r.all.cell(),
                r.all.n,
                r.steady.n,
                r.after.n,
                r.leftovers
            );
            if !s.errors.is_empty() {
                let _ = writeln!(out, "First failures:\n\n```");
                for e in &s.errors {
                    let _ = writeln!(out, "{e}");
                }
                let _ = writeln!(out, "```\n");
            }
            let _ = writeln!(
                out,
                "| # | signal at (ms) | → ready | fork → ready (heird) | → first new-pid response | → old exited | max latency in the window after | old → new pid | failure |\n|---|---|---|---|---|---|---|---|---|"
            );
            let opt = |v: Option<f64>, base: f64| v.map_or("–".into(), |v| format!("{:.1}", v - base));
            for (i, h) in r.restarts.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "| {} | {:.1} | {} | {} | {} | {} | {} | {} → {} | {} |",
                    i + 1,
                    h.signal,
                    opt(h.ready, h.signal),
                    h.log_ready_ms.map_or("–".into(), |v| format!("{v:.2}")),
                    opt(h.first_response, h.signal),
                    opt(h.old_exit, h.signal),
                    ms_us(h.window_max_us),
                    h.old,
                    h.new.map_or("–".into(), |p| p.to_string()),
                    h.failure.as_deref().unwrap_or("")
                );
            }
            let rss: Vec<String> = r.rss_main_kib.iter().step_by(10).map(|k| k.to_string()).collect();
            let _ = writeln!(
                out,
                "\nRSS of the serving process every 0.5 s (KiB): {}\n",
                rss.join(" ")
            );
        }
        if let Some(t) = &self.throughput {
            let _ = writeln!(
                out,
                "wrk runs:\n\n| round | server | req/s | requests | p50 | p99 | server CPU | CPU µs/req | errors |\n|---|---|---|---|---|---|---|---|---|"
            );
            for r in &t.runs {
                let _ = writeln!(
                    out,
                    "| {} | {} | {:.1} | {} | {} | {} | {:.0}% | {:.2} | {} |",
                    r.round + 1,
                    r.server,
                    r.rps,
                    r.requests,
                    r.p50,
                    r.p99,
                    r.server_cpu * 100.0,
                    r.cpu_us_per_req,
                    r.errors
                );
            }
            let _ = writeln!(out);
            for (name, addr, _, _, aff) in &t.servers {
                let _ = writeln!(out, "- {name} on {addr}, Cpus_allowed_list {aff}");
            }
            let _ = writeln!(out);
        }
        if let Some(f) = &self.footprint {
            let er: Vec<String> = f.exec_ready_ms.iter().map(|v| format!("{v:.2}")).collect();
            let rss: Vec<String> = f.idle.iter().map(|s| s.rss_kib.to_string()).collect();
            let _ = writeln!(out, "exec → READY=1 per start (ms): {}\n", er.join(" "));
            let _ = writeln!(out, "idle VmRSS per start (KiB): {}\n", rss.join(" "));
            let _ = writeln!(
                out,
                "binary: {} bytes as built, {} bytes stripped\n",
                f.size, f.stripped
            );
        }
        let _ = writeln!(out, "</details>\n");
    }

    pub(crate) fn markdown(&self) -> String {
        let mut out = String::new();
        let title = if self.cli.long {
            "Long mode"
        } else {
            "Default mode"
        };
        let _ = writeln!(out, "## {title}\n");
        let _ = writeln!(
            out,
            "- date: {} (UTC)\n- machine: {}\n- heird revision: {}\n- load average before / after: {} / {}\n- command: `{}`\n",
            humantime::format_rfc3339_seconds(self.started),
            self.machine(),
            self.revision,
            self.load_before
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.load_after
                .split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" "),
            self.cli
                .command
                .clone()
                .unwrap_or_else(|| std::env::args().collect::<Vec<_>>().join(" "))
        );
        out.push_str(&self.tables());
        self.raw(&mut out);
        out
    }
}

/// Replaces (or appends) the block of `mode` in `path`, keeping the rest of the file.
pub(crate) fn write_block(path: &Path, mode: &str, body: &str) -> anyhow::Result<()> {
    let begin = format!("<!-- bench:{mode} -->");
    let end = format!("<!-- /bench:{mode} -->");
    let block = format!("{begin}\n{body}{end}\n");
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(&begin), old.find(&end)) {
        (Some(b), Some(e)) if e > b => format!(
            "{}{}{}",
            &old[..b],
            block,
            &old[e + end.len()..].trim_start_matches('\n')
        ),
        _ if old.trim().is_empty() => format!(
            "# heird benchmark results\n\nWritten by `bench/run.sh` (see `bench/README.md`); do not edit by hand.\n\
             One block per mode; each block is replaced when that mode runs again.\n\n{block}"
        ),
        _ => format!("{}\n{block}", old.trim_end()),
    };
    std::fs::write(path, new)?;
    Ok(())
}
