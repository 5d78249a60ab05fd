//! The tables: one per section, and the targets of issue 6.

use std::fmt::Write as _;
use std::process::Command;
use std::time::SystemTime;

use crate::MIB;
use crate::args::Cli;
use crate::footprint::Footprint;
use crate::reload::{Mode, ReloadResult};

use crate::stats::{f2, med_max, median, ms_us, pct, sorted};
use crate::throughput::Throughput;

pub(crate) struct Report<'a> {
    pub(crate) cli: &'a Cli,
    pub(crate) started: SystemTime,
    pub(crate) revision: String,
    pub(crate) load_before: String,
    pub(crate) load_after: String,
    pub(crate) reload: Vec<ReloadResult>,
    pub(crate) throughput: Option<Throughput>,
    pub(crate) footprint: Option<Footprint>,
}

pub(crate) fn kib_mib(kib: f64) -> String {
    if kib.is_nan() {
        "–".into()
    } else {
        format!("{:.1}", kib / 1024.0)
    }
}

pub(crate) fn verdict(met: bool) -> &'static str {
    if met { "**met**" } else { "**missed**" }
}

impl Report<'_> {
    pub(crate) fn reload_cfg(&self) -> String {
        let c = self.cli;
        format!(
            "C={} keep-alive + K={} new-connection clients on `{}`, T={} s, a restart every S={} s, \
             \"after\" = the {} s after each signal, steady = the rest (first 1 s skipped)",
            c.keepalive,
            c.newconn,
            c.path,
            c.reload_duration().as_secs_f64(),
            c.every.as_secs_f64(),
            c.window.as_secs_f64()
        )
    }

    pub(crate) fn reload_table(&self, out: &mut String) {
        if self.reload.is_empty() {
            return;
        }
        let _ = writeln!(out, "### 1. Reload under load\n\n{}\n", self.reload_cfg());
        let _ = write!(out, "| |");
        for r in &self.reload {
            let _ = write!(out, " {} |", r.mode.name());
        }
        let _ = write!(out, "\n|---|");
        for _ in &self.reload {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
        type Row = (&'static str, fn(&ReloadResult) -> String);
        let rows: Vec<Row> = vec![
            ("restarts (ok)", |r| {
                format!("{} ({})", r.restarts.len(), r.ok_restarts())
            }),
            ("requests OK (req/s)", |r| {
                format!("{} ({:.0})", r.stats.ok, r.stats.ok as f64 / r.elapsed_s)
            }),
            ("**failed**", |r| format!("**{}**", r.stats.failed())),
            ("  refused / reset / closed before response", |r| {
                format!(
                    "{} / {} / {}",
                    r.stats.refused, r.stats.reset, r.stats.closed_before_response
                )
            }),
            ("  timeout / non-200 / other", |r| {
                format!("{} / {} / {}", r.stats.timeout, r.stats.non_200, r.stats.other)
            }),
            ("**reconnects** total (per restart)", |r| {
                format!("**{}** ({:.1})", r.stats.reconnects, r.reconnects_per_restart())
            }),
            ("`Connection: close` seen by keep-alive clients", |r| {
                r.stats.connection_close_seen.to_string()
            }),
            ("latency steady p50 / p99 / max (ms)", |r| r.steady.cell()),
            ("latency 1 s after restart p50 / p99 / max (ms)", |r| {
                r.after.cell()
            }),
            ("p99 after / p99 steady", |r| f2(r.p99_ratio())),
            ("signal → successor ready (ms, median / max)", |r| {
                med_max(&r.signal_to_ready())
            }),
            (
                "successor fork → ready, heird's `ready_ms` (median / max)",
                |r| med_max(&r.log_ready()),
            ),
            ("signal → first response from new pid (ms, median / max)", |r| {
                med_max(&r.signal_to_first())
            }),
            ("signal → old process exited (ms, median / max)", |r| {
                med_max(&r.signal_to_old_exit())
            }),
            ("RSS of the serving process (MiB, median / max)", |r| {
                let v: Vec<f64> = r.rss_main_kib.iter().map(|&k| k as f64).collect();
                let s = sorted(v.clone());
                format!("{} / {}", kib_mib(median(&v)), kib_mib(pct(&s, 100.0)))
            }),
            ("RSS of all heird processes, peak (MiB)", |r| {
                kib_mib(r.rss_sum_max_kib as f64)
            }),
        ];
        for (name, f) in rows {
            let _ = write!(out, "| {name} |");
            for r in &self.reload {
                let _ = write!(out, " {} |", f(r));
            }
            let _ = writeln!(out);
        }
        let _ = writeln!(out);
    }

    pub(crate) fn throughput_table(&self, out: &mut String) {
        let Some(t) = &self.throughput else { return };
        let c = self.cli;
        let _ = writeln!(
            out,
            "### 2. Throughput (hello world, `GET /`)\n\n{} `-t{} -c{} -d{}s` pinned to core {}, servers \
             pinned to core {} (`taskset -c`), {} rounds in ABBA order, fresh server processes and a 1 s \
             warm-up each round, each ratio taken within its round. \
             `heird /healthz` is the same heird process answering a static `ok` without the demo app's \
             `x-heird-pid` header. Server CPU is the server's utime+stime over the run; per request it \
             depends less than req/s on what else the machine runs.\n",
            t.wrk_version,
            c.wrk_threads,
            c.wrk_connections,
            c.tp_duration.as_secs(),
            c.client_cpu,
            c.server_cpu,
            c.rounds()
        );
        let names: Vec<&str> = t.targets.clone();
        let _ = write!(out, "| round |");
        for n in &names {
            let _ = write!(out, " {n} req/s (server CPU) |");
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let _ = write!(out, " {n} ÷ axum |");
        }
        let _ = write!(out, "\n|---|");
        for _ in 0..names.len() * 2 - 1 {
            let _ = write!(out, "---|");
        }
        let _ = writeln!(out);
        let rounds = c.rounds();
        for round in 0..rounds {
            let _ = write!(out, "| {} |", round + 1);
            for n in &names {
                match t.runs.iter().find(|r| r.round == round && r.server == *n) {
                    Some(r) => {
                        let _ = write!(out, " {:.0} ({:.0}%) |", r.rps, r.server_cpu * 100.0);
                    }
                    None => {
                        let _ = write!(out, " – |");
                    }
                }
            }
            for n in names.iter().filter(|n| **n != "axum") {
                let ratio = t.ratios(n).get(round).copied().unwrap_or(f64::NAN);
                let _ = write!(out, " {} |", format_ratio(ratio));
            }
            let _ = writeln!(out);
        }
        let _ = write!(out, "| **median** |");
        for n in &names {
            let _ = write!(out, " {:.0} |", median(&t.rps(n)));
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let _ = write!(out, " **{}** |", format_ratio(median(&t.ratios(n))));
        }
        let _ = write!(out, "\n| server CPU per request, median (µs) |");
        for n in &names {
            let _ = write!(out, " {} |", f2(median(&t.cpu_per_req(n))));
        }
        for n in names.iter().filter(|n| **n != "axum") {
            let ratio = median(&t.cpu_per_req(n)) / median(&t.cpu_per_req("axum"));
            let _ = write!(out, " {}× the CPU |", f2(ratio));
        }
        let _ = writeln!(out, "\n");
    }

    pub(crate) fn footprint_table(&self, out: &mut String) {
        let Some(f) = &self.footprint else { return };
        let rss: Vec<f64> = f.idle.iter().map(|s| s.rss_kib as f64).collect();
        let anon: Vec<f64> = f.idle.iter().map(|s| s.anon_kib as f64).collect();
        let file: Vec<f64> = f.idle.iter().map(|s| s.file_kib as f64).collect();
        let threads: Vec<f64> = f.idle.iter().map(|s| s.threads as f64).collect();
        let er = sorted(f.exec_ready_ms.clone());
        let _ = writeln!(out, "### 3. Footprint\n");
        let _ = writeln!(out, "| | heird |\n|---|---|");
        let _ = writeln!(
            out,
            "| idle RSS, median of {} starts (MiB) | {} (anon {}, file {}; {} threads) |",
            f.idle.len(),
            kib_mib(median(&rss)),
            kib_mib(median(&anon)),
            kib_mib(median(&file)),
            median(&threads)
        );
        if let Some(t) = &self.throughput {
            for (name, _, idle, after, _) in &t.servers {
                let _ = writeln!(
                    out,
                    "| RSS of {name} pinned to one core: idle / after the wrk runs (MiB) | {} / {} |",
                    idle.map_or("–".into(), |s| kib_mib(s.rss_kib as f64)),
                    after.map_or("–".into(), |s| kib_mib(s.rss_kib as f64))
                );
            }
        }
        let _ = writeln!(
            out,
            "| binary as built (MiB; release profile `strip` = {}) | {:.2} |",
            f.profile_strip,
            f.size as f64 / MIB
        );
        let _ = writeln!(
            out,
            "| binary stripped with `strip` (MiB) | {:.2} |",
            f.stripped as f64 / MIB
        );
        let _ = writeln!(
            out,
            "| exec → READY=1, fresh start (ms, median / p90 / max of {}) | {} / {} / {} |",
            er.len(),
            f2(median(&er)),
            f2(pct(&er, 90.0)),
            f2(pct(&er, 100.0))
        );
        let _ = writeln!(out);
    }

    pub(crate) fn targets_table(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "### Targets (issue 6)\n\n| target | figure | |\n|---|---|---|"
        );
        if let Some(h) = self.reload.iter().find(|r| r.mode == Mode::Handoff) {
            let n = h.ok_restarts();
            let failed = h.stats.failed();
            let v = if n < 100 {
                format!(
                    "{} (only {n} handoffs: run `--long` for 100+)",
                    verdict(failed == 0)
                )
            } else {
                verdict(failed == 0).to_string()
            };
            let _ = writeln!(
                out,
                "| 0 failed requests over 100+ handoffs | {failed} failed over {n} handoffs ({} reconnects) | {v} |",
                h.stats.reconnects
            );
            let ratio = h.p99_ratio();
            let _ = writeln!(
                out,
                "| p99 in the 1 s after a handoff ≤ 1.05 × steady p99 | {} ms vs {} ms = {}× | {} |",
                ms_us(h.after.p99),
                ms_us(h.steady.p99),
                f2(ratio),
                verdict(ratio <= 1.05)
            );
            let lr = sorted(h.log_ready());
            let m = median(&lr);
            let _ = writeln!(
                out,
                "| exec → successor ready < 5 ms | fork → ready {} ms median, {} ms max, under load (signal → ready seen on the notify socket {} ms median) | {} |",
                f2(m),
                f2(pct(&lr, 100.0)),
                f2(median(&h.signal_to_ready())),
                verdict(m < 5.0)
            );
        }
        if let Some(t) = &self.throughput {
            let r = median(&t.ratios("heird"));
            let _ = writeln!(
                out,
                "| throughput ≥ 0.97 × plain axum | {}× (median of {} same-round ratios) | {} |",
                format_ratio(r),
                t.ratios("heird").len(),
                verdict(r >= 0.97)
            );
        }
        if let Some(f) = &self.footprint {
            let rss = median(&f.idle.iter().map(|s| s.rss_kib as f64).collect::<Vec<_>>());
            let _ = writeln!(
                out,
                "| idle RSS < 8 MiB | {} MiB | {} |",
                kib_mib(rss),
                verdict(rss < 8.0 * 1024.0)
            );
            let _ = writeln!(
                out,
                "| stripped binary < 4 MiB | {:.2} MiB (as built: {:.2} MiB) | {} |",
                f.stripped as f64 / MIB,
                f.size as f64 / MIB,
                verdict((f.stripped as f64) < 4.0 * MIB)
            );
        }
        let _ = writeln!(out);
    }

    pub(crate) fn tables(&self) -> String {
        let mut out = String::new();
        self.reload_table(&mut out);
        self.throughput_table(&mut out);
        self.footprint_table(&mut out);
        self.targets_table(&mut out);
        out
    }

    pub(crate) fn machine(&self) -> String {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .and_then(|r| r.split_once(':'))
                    .map(|x| x.1.trim())
            })
            .unwrap_or("unknown")
            .to_string();
        let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let mem = std::fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or("")
            .split_whitespace()
            .nth(1)
            .and_then(|k| k.parse::<f64>().ok())
            .map_or("?".into(), |k| format!("{:.0} GiB", k / 1024.0 / 1024.0));
        let rustc = Command::new("rustc")
            .arg("-V")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        format!(
            "nproc {nproc}, {model}, {mem} RAM, Linux {}, {rustc}",
            kernel.trim()
        )
    }
}

pub(crate) fn format_ratio(r: f64) -> String {
    if r.is_nan() {
        "–".into()
    } else {
        format!("{r:.3}")
    }
}
