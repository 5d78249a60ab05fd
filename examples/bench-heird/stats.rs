//! Statistics helpers and number formats.

/// Nearest-rank percentile of an ascending slice.
pub(crate) fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let s = sorted(v.to_vec());
    if s.is_empty() {
        return f64::NAN;
    }
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// p50 / p99 / max of latencies in µs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lat {
    pub(crate) n: usize,
    pub(crate) p50: f64,
    pub(crate) p99: f64,
    pub(crate) max: f64,
}

impl Lat {
    pub(crate) fn of(us: Vec<f64>) -> Lat {
        let s = sorted(us);
        Lat {
            n: s.len(),
            p50: pct(&s, 50.0),
            p99: pct(&s, 99.0),
            max: pct(&s, 100.0),
        }
    }
    pub(crate) fn cell(&self) -> String {
        format!("{} / {} / {}", ms_us(self.p50), ms_us(self.p99), ms_us(self.max))
    }
}

pub(crate) fn ms_us(us: f64) -> String {
    if us.is_nan() {
        "–".into()
    } else {
        format!("{:.2}", us / 1000.0)
    }
}

pub(crate) fn f1(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.1}")
    }
}

pub(crate) fn f2(x: f64) -> String {
    if x.is_nan() {
        "–".into()
    } else {
        format!("{x:.2}")
    }
}

/// "median / max" of a set of ms values, with n.
pub(crate) fn med_max(v: &[f64]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    let s = sorted(v.to_vec());
    format!("{} / {}", f1(median(&s)), f1(pct(&s, 100.0)))
}
