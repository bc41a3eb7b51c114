//! Medians, quantiles and the number formats of the tables.

use hdrhistogram::Histogram;

/// A latency histogram: 1 ns to 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

/// The median of `values` (mean of the middle two for an even count); NaN
/// for none.
pub fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let mid = v.len() / 2;
    if !v.len().is_multiple_of(2) {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// p50, p90, p95 and p99 of a histogram, nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Quantiles {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

impl Quantiles {
    /// Reads the four quantiles off `h`.
    pub fn of(h: &Histogram<u64>) -> Quantiles {
        Quantiles {
            p50: h.value_at_quantile(0.50) as f64,
            p90: h.value_at_quantile(0.90) as f64,
            p95: h.value_at_quantile(0.95) as f64,
            p99: h.value_at_quantile(0.99) as f64,
        }
    }

    /// The element-wise median over several runs.
    pub fn median_of(runs: &[Quantiles]) -> Quantiles {
        let m = |f: fn(&Quantiles) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
        Quantiles {
            p50: m(|q| q.p50),
            p90: m(|q| q.p90),
            p95: m(|q| q.p95),
            p99: m(|q| q.p99),
        }
    }

    /// As JSON, nanoseconds.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({"p50_ns": self.p50, "p90_ns": self.p90, "p95_ns": self.p95, "p99_ns": self.p99})
    }
}

/// Relative change from `base` to `new`, percent.
pub fn pct_change(base: f64, new: f64) -> f64 {
    (new - base) / base * 100.0
}

/// `+17.3%` / `-36.8%`, as the kernel patch's table prints them.
pub fn fmt_pct(p: f64) -> String {
    if p.is_finite() {
        format!("{p:+.1}%")
    } else {
        "n/a".to_owned()
    }
}

/// An integer with thousands separators: `3,611,591`.
pub fn fmt_count(v: f64) -> String {
    let n = v.round() as u64;
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A duration in nanoseconds with a readable unit: `850ns`, `12.7us`.
pub fn fmt_ns(ns: f64) -> String {
    // A unit's range ends where its rounding reaches 1000 of it (999.6 ns
    // was "1000ns").
    if ns < 999.5 {
        format!("{ns:.0}ns")
    } else if ns < 999_950.0 {
        format!("{:.1}us", ns / 1e3)
    } else if ns < 999_950_000.0 {
        format!("{:.1}ms", ns / 1e6)
    } else {
        format!("{:.2}s", ns / 1e9)
    }
}

/// Bytes with a binary unit: `1.5 MiB`.
pub fn fmt_bytes(b: f64) -> String {
    let units = ["B", "KiB", "MiB", "GiB"];
    let mut v = b;
    let mut u = 0;
    while v.abs() >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert_eq!(median(&[7.0]), 7.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn formats_as_the_kernel_patch_prints() {
        assert_eq!(fmt_count(3_611_591.4), "3,611,591");
        assert_eq!(fmt_count(314.0), "314");
        assert_eq!(fmt_count(1000.0), "1,000");
        assert_eq!(fmt_pct(pct_change(341_913.0, 401_213.0)), "+17.3%");
        assert_eq!(fmt_pct(-36.81), "-36.8%");
        assert_eq!(fmt_ns(850.0), "850ns");
        assert_eq!(fmt_ns(12_700.0), "12.7us");
        assert_eq!(fmt_ns(999.6), "1.0us");
        assert_eq!(fmt_ns(999_960.0), "1.0ms");
        assert_eq!(fmt_bytes(1536.0 * 1024.0), "1.5 MiB");
    }

    #[test]
    fn quantiles_of_a_histogram() {
        let mut h = histogram();
        for v in 1..=100u64 {
            h.record(v * 1000).unwrap();
        }
        let q = Quantiles::of(&h);
        assert!((q.p50 - 50_000.0).abs() < 100.0);
        assert!((q.p95 - 95_000.0).abs() < 100.0);
        let m = Quantiles::median_of(&[q, Quantiles::default(), q]);
        assert_eq!(m, q);
    }
}
