//! Plain SVG charts for the benchmark, drawn from the raw samples (no plotting dependency):
//! latency over time with the restarts marked, and bars side by side.

use std::fmt::Write as _;

/// One panel of the latency-over-time chart: a run of the reload section.
pub struct LatencyPanel<'a> {
    pub title: &'a str,
    /// (ms since start at completion, latency in µs) of every OK response.
    pub samples: &'a [(u64, u64)],
    /// ms since start of each restart signal.
    pub restarts: &'a [f64],
    /// ms since start of each failed request.
    pub failures: &'a [u64],
    /// ms since start of each reconnect of a keep-alive client.
    pub reconnects: &'a [u64],
    /// Length of the run (ms).
    pub length_ms: f64,
}

const W: f64 = 960.0;
const PANEL_H: f64 = 210.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 34.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn header(out: &mut String, w: f64, h: f64, title: &str) {
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">
<rect width="{w}" height="{h}" fill="white"/>
<text x="{x}" y="20" font-size="15" font-weight="bold">{t}</text>
"#,
        x = LEFT,
        t = esc(title)
    );
}

/// Latency over time, one panel per run, same axes: per bin of `bin_ms`, the median, p99 and
/// maximum latency of the responses completed in it (log scale), each restart as a dashed
/// line, failed requests (red) and keep-alive reconnects (orange) as counts per bin below.
pub fn latency_over_time(title: &str, note: &str, panels: &[LatencyPanel<'_>], bin_ms: u64) -> String {
    let n = panels.len() as f64;
    let h = TOP + n * (PANEL_H + 40.0) + 40.0;
    let mut out = String::new();
    header(&mut out, W, h, title);
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" fill="#555">{}</text>"##,
        h - 12.0,
        esc(note)
    );
    let length = panels.iter().map(|p| p.length_ms).fold(1.0, f64::max);
    // Common y range (log10 of ms), from the smallest median to the largest maximum.
    let all_max = panels
        .iter()
        .flat_map(|p| p.samples.iter().map(|s| s.1))
        .max()
        .unwrap_or(1000) as f64
        / 1e3;
    let all_min = panels
        .iter()
        .flat_map(|p| p.samples.iter().map(|s| s.1))
        .min()
        .unwrap_or(1000) as f64
        / 1e3;
    let lo = 10f64.powf((all_min.max(0.01)).log10().floor());
    let hi = 10f64.powf((all_max.max(lo * 10.0)).log10().ceil());
    let plot_w = W - LEFT - RIGHT;
    let lat_h = PANEL_H - 50.0;
    for (i, p) in panels.iter().enumerate() {
        let y0 = TOP + i as f64 * (PANEL_H + 40.0) + 18.0;
        let x = |ms: f64| LEFT + ms / length * plot_w;
        let y = |lat_ms: f64| {
            let f = (lat_ms.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10());
            y0 + lat_h * (1.0 - f)
        };
        let _ = writeln!(
            out,
            r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
            y0 - 6.0,
            esc(p.title)
        );
        let _ = writeln!(
            out,
            r##"<rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{lat_h}" fill="#fafafa" stroke="#999"/>"##
        );
        // y grid: decades.
        let mut d = lo;
        while d <= hi * 1.001 {
            let yy = y(d);
            let _ = writeln!(
                out,
                r##"<line x1="{LEFT}" x2="{}" y1="{yy:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
                LEFT + plot_w,
                LEFT - 4.0,
                yy + 4.0,
                fmt_ms(d)
            );
            d *= 10.0;
        }
        // Bins.
        let bins = (length / bin_ms as f64).ceil() as usize + 1;
        let mut per: Vec<Vec<u64>> = vec![Vec::new(); bins];
        for &(at, us) in p.samples {
            let b = (at / bin_ms) as usize;
            if b < bins {
                per[b].push(us);
            }
        }
        let mut lines = [String::new(), String::new(), String::new()];
        for (b, v) in per.iter_mut().enumerate() {
            if v.is_empty() {
                continue;
            }
            v.sort_unstable();
            let q = |f: f64| v[((v.len() as f64 - 1.0) * f).round() as usize] as f64 / 1e3;
            let xx = x((b as f64 + 0.5) * bin_ms as f64);
            for (k, val) in [q(0.5), q(0.99), q(1.0)].into_iter().enumerate() {
                let _ = write!(lines[k], "{xx:.1},{:.1} ", y(val));
            }
        }
        for (k, (color, name)) in [("#1f77b4", "p50"), ("#9467bd", "p99"), ("#bbbbbb", "max")]
            .into_iter()
            .enumerate()
            .rev()
        {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.2" points="{}"/>"#,
                lines[k]
            );
            let ly = y0 + 14.0 + k as f64 * 16.0;
            let lx = LEFT + plot_w + 12.0;
            let _ = writeln!(
                out,
                r#"<line x1="{lx}" x2="{}" y1="{ly}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{name} per {bin_ms} ms</text>"#,
                lx + 16.0,
                lx + 20.0,
                ly + 4.0
            );
        }
        // Restarts.
        for &s in p.restarts {
            let xx = x(s);
            let _ = writeln!(
                out,
                r##"<line x1="{xx:.1}" x2="{xx:.1}" y1="{y0}" y2="{}" stroke="#d62728" stroke-dasharray="3,3" stroke-width="0.8"/>"##,
                y0 + lat_h + 32.0
            );
        }
        // Failures and reconnects per bin, as bars below the latency plot.
        let bars_y = y0 + lat_h + 4.0;
        let bar_h = 28.0;
        let count = |times: &[u64]| {
            let mut c = vec![0u64; bins];
            for &t in times {
                let b = (t / bin_ms) as usize;
                if b < bins {
                    c[b] += 1;
                }
            }
            c
        };
        let fails = count(p.failures);
        let recon = count(p.reconnects);
        let cmax = fails
            .iter()
            .chain(recon.iter())
            .copied()
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        let bw = (plot_w / bins as f64).max(1.0);
        for (b, (&f, &r)) in fails.iter().zip(recon.iter()).enumerate() {
            let xx = x(b as f64 * bin_ms as f64);
            if r > 0 {
                let hh = (r as f64 / cmax * bar_h).max(1.5);
                let _ = writeln!(
                    out,
                    r##"<rect x="{xx:.1}" y="{:.1}" width="{:.1}" height="{hh:.1}" fill="#ff7f0e"/>"##,
                    bars_y + bar_h - hh,
                    bw / 2.0
                );
            }
            if f > 0 {
                let hh = (f as f64 / cmax * bar_h).max(1.5);
                let _ = writeln!(
                    out,
                    r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{hh:.1}" fill="#d62728"/>"##,
                    xx + bw / 2.0,
                    bars_y + bar_h - hh,
                    bw / 2.0
                );
            }
        }
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#999"/>"##,
            LEFT + plot_w,
            bars_y + bar_h,
            bars_y + bar_h
        );
        let lx = LEFT + plot_w + 12.0;
        let _ = writeln!(
            out,
            r##"<rect x="{lx}" y="{:.1}" width="10" height="8" fill="#d62728"/><text x="{}" y="{:.1}">failed: {}</text>
<rect x="{lx}" y="{:.1}" width="10" height="8" fill="#ff7f0e"/><text x="{}" y="{:.1}">reconnects: {}</text>
<line x1="{lx}" x2="{}" y1="{:.1}" y2="{:.1}" stroke="#d62728" stroke-dasharray="3,3"/><text x="{}" y="{:.1}">restart signal</text>"##,
            bars_y,
            lx + 14.0,
            bars_y + 8.0,
            p.failures.len(),
            bars_y + 14.0,
            lx + 14.0,
            bars_y + 22.0,
            p.reconnects.len(),
            lx + 16.0,
            y0 + 68.0,
            y0 + 68.0,
            lx + 20.0,
            y0 + 72.0,
        );
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{:.1}" text-anchor="end" fill="#555" font-size="10">≤{cmax:.0}/bin</text>"##,
            LEFT - 4.0,
            bars_y + bar_h - 2.0
        );
        // x axis: seconds.
        let step = if length > 60_000.0 { 10_000.0 } else { 2_000.0 };
        let mut t = 0.0;
        while t <= length {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} s</text>"#,
                x(t),
                bars_y + bar_h + 14.0,
                t / 1e3
            );
            t += step;
        }
    }
    out.push_str("</svg>\n");
    out
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 1.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms}")
    }
}

/// One group of bars: a label and, per series, the value and the individual runs (dots).
pub struct BarGroup<'a> {
    pub label: &'a str,
    pub bars: Vec<(f64, Vec<f64>)>,
}

/// Bars side by side: one group per measure, one bar per series (the median), each run as a dot
/// on its bar, the value written above it.
pub fn bars(title: &str, note: &str, unit: &str, series: &[&str], groups: &[BarGroup<'_>]) -> String {
    let colors = [
        "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#e377c2", "#bcbd22", "#17becf",
        "#d62728", "#393b79", "#637939", "#843c39", "#7b4173",
    ];
    let h = 360.0;
    let plot_h = 240.0;
    let y0 = TOP + 20.0;
    let plot_w = W - LEFT - RIGHT;
    let mut out = String::new();
    header(&mut out, W, h, title);
    let _ = writeln!(
        out,
        r##"<text x="{LEFT}" y="{}" fill="#555">{}</text>"##,
        h - 12.0,
        esc(note)
    );
    let vmax = groups
        .iter()
        .flat_map(|g| {
            g.bars
                .iter()
                .flat_map(|(v, runs)| std::iter::once(*v).chain(runs.iter().copied()))
        })
        .fold(0.0, f64::max)
        .max(1e-9)
        * 1.25;
    let y = |v: f64| y0 + plot_h * (1.0 - v / vmax);
    let _ = writeln!(
        out,
        r##"<line x1="{LEFT}" x2="{}" y1="{}" y2="{}" stroke="#999"/><text x="{}" y="{}" text-anchor="end">0</text><text x="{}" y="{}" text-anchor="end">{}</text>"##,
        LEFT + plot_w,
        y0 + plot_h,
        y0 + plot_h,
        LEFT - 4.0,
        y0 + plot_h + 4.0,
        LEFT - 4.0,
        y0 + 10.0,
        esc(unit)
    );
    let gw = plot_w / groups.len().max(1) as f64;
    for (gi, g) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * gw;
        let bw = (gw * 0.8) / g.bars.len().max(1) as f64;
        for (bi, (v, runs)) in g.bars.iter().enumerate() {
            let bx = gx + gw * 0.1 + bi as f64 * bw;
            let c = colors[bi % colors.len()];
            if *v > 0.0 {
                let label = fmt_val(*v);
                let _ = writeln!(
                    out,
                    r#"<rect x="{bx:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{c}" fill-opacity="0.8"/>"#,
                    y(*v),
                    bw * 0.9,
                    y0 + plot_h - y(*v),
                );
                let (lx, ly) = (bx + bw * 0.45, y(*v) - 4.0);
                // About 7 px a character at 12 px: a label wider than its bar would run into its
                // neighbours' (many series), so it stands upright above the bar instead.
                if label.chars().count() as f64 * 7.0 > bw {
                    let _ = writeln!(
                        out,
                        r#"<text x="{lx:.1}" y="{ly:.1}" font-size="11" dominant-baseline="middle" transform="rotate(-90 {lx:.1} {ly:.1})">{label}</text>"#,
                    );
                } else {
                    let _ = writeln!(
                        out,
                        r#"<text x="{lx:.1}" y="{ly:.1}" text-anchor="middle">{label}</text>"#,
                    );
                }
            }
            for r in runs {
                let _ = writeln!(
                    out,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.5" fill="black" fill-opacity="0.6"/>"#,
                    bx + bw * 0.45,
                    y(*r)
                );
            }
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            gx + gw / 2.0,
            y0 + plot_h + 18.0,
            esc(g.label)
        );
    }
    // A legend only when there is more than one series (one says it in the title).
    for (si, s) in series.iter().enumerate().filter(|_| series.len() > 1) {
        let lx = LEFT + plot_w + 12.0;
        let ly = y0 + 10.0 + si as f64 * 18.0;
        let _ = writeln!(
            out,
            r#"<rect x="{lx}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            ly - 10.0,
            colors[si % colors.len()],
            lx + 16.0,
            ly,
            esc(s)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn fmt_val(v: f64) -> String {
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
