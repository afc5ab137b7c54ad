//! Saved results side by side (`echo-bench compare A.json B.json`) and
//! results of runs made at the same time on several machines made one
//! (`echo-bench merge A.json B.json ...`). Both read what `--json`
//! writes; both work from the histograms in it, never from averaged
//! percentiles.
//!
//! Where two histograms differ beyond their noise: for each percentile
//! `q` of a histogram of `n` samples, the rank of the true percentile
//! lies within `q*n +- 1.96 * sqrt(n*q*(1-q))` with 95% confidence (the
//! binomial bound on order statistics, which assumes nothing about the
//! distribution), and the values at those ranks bound it. Two runs whose
//! bounds for a percentile do not overlap differ there beyond sampling
//! noise. Latencies of one run are not independent samples (a stall delays
//! many at once), so this is a lower bound on the noise: a difference
//! inside it is noise, one outside it deserves a second pair of runs.

use crate::histogram::{from_base64, percentile_name, to_base64};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::fmt::Write;

/// The z value of a two-sided 95% interval.
const Z95: f64 = 1.96;

/// The percentiles compared when the results name none.
const COMPARED: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

/// The figures of a result compared, as (label, JSON pointer).
const FIGURES: [(&str, &str); 14] = [
    ("req/s", "/req_per_s"),
    ("MB/s", "/mb_per_s"),
    ("messages", "/messages"),
    ("window s", "/duration_s"),
    ("connections", "/connections/established"),
    ("failed", "/connections/failed"),
    ("opened in s", "/connections/open_s"),
    ("errors", "/errors_total"),
    ("outstanding", "/outstanding/count"),
    ("latency min us", "/latency_us/min"),
    ("latency mean us", "/latency_us/mean"),
    ("latency max us", "/latency_us/max"),
    ("connect p50 us", "/connect_us/p50"),
    ("first echo p50 us", "/first_echo_us/p50"),
];

/// The settings that explain different figures: when two results differ
/// in one of these, they measured different things.
const SETTINGS: [&str; 13] = [
    "/addr",
    "/transport",
    "/protocol",
    "/mode",
    "/threads",
    "/size",
    "/depth",
    "/connections/requested",
    "/source_ips",
    "/cores",
    "/tool_version",
    "/schema_version",
    "/procs",
];

/// A histogram kept in a result (`latency_us`, ...), if it has one.
pub fn histogram_of(v: &Value, key: &str) -> Option<Histogram<u64>> {
    from_base64(v[key]["histogram"].as_str()?).ok()
}

/// The 95% bounds of percentile `p` (0-100) of `h`, in microseconds.
pub fn bounds(h: &Histogram<u64>, p: f64) -> (f64, f64) {
    let n = h.len() as f64;
    let q = p / 100.0;
    let half = if n > 0.0 {
        Z95 * (q * (1.0 - q) / n).sqrt()
    } else {
        0.0
    };
    let at = |q: f64| h.value_at_quantile(q.clamp(0.0, 1.0)) as f64 / 1000.0;
    (at(q - half), at(q + half))
}

/// `echo-bench compare`: each figure of `a` and `b` side by side with the
/// change, the settings in which they differ, and the percentiles where
/// their latency histograms differ beyond noise.
pub fn compare(a: &Value, b: &Value, names: (&str, &str)) -> String {
    let mut o = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(o, "A  {}  {}", names.0, about(a));
    let _ = writeln!(o, "B  {}  {}", names.1, about(b));
    let differ: Vec<String> = SETTINGS
        .iter()
        .filter(|p| a.pointer(p) != b.pointer(p))
        .map(|p| {
            format!(
                "{} {} vs {}",
                &p[1..],
                brief(a.pointer(p)),
                brief(b.pointer(p))
            )
        })
        .collect();
    if !differ.is_empty() {
        let _ = writeln!(o, "settings differ: {}", differ.join("; "));
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "{:<20} {:>14} {:>14} {:>9}", "", "A", "B", "change");
    for (label, ptr) in FIGURES {
        row(&mut o, label, num(a, ptr), num(b, ptr));
    }
    let (ha, hb) = (histogram_of(a, "latency_us"), histogram_of(b, "latency_us"));
    let mut beyond = Vec::new();
    for p in COMPARED {
        let label = format!("latency p{} us", percentile_name(p));
        match (&ha, &hb) {
            (Some(ha), Some(hb)) if !ha.is_empty() && !hb.is_empty() => {
                let (va, vb) = (
                    ha.value_at_quantile(p / 100.0) as f64 / 1000.0,
                    hb.value_at_quantile(p / 100.0) as f64 / 1000.0,
                );
                let (ba, bb) = (bounds(ha, p), bounds(hb, p));
                let apart = ba.1 < bb.0 || bb.1 < ba.0;
                if apart {
                    beyond.push(format!(
                        "p{}: A {va:.1} [{:.1}, {:.1}] vs B {vb:.1} [{:.1}, {:.1}] us",
                        percentile_name(p),
                        ba.0,
                        ba.1,
                        bb.0,
                        bb.1
                    ));
                }
                row(
                    &mut o,
                    &format!("{label}{}", if apart { " *" } else { "" }),
                    Some(va),
                    Some(vb),
                );
            }
            _ => {
                let key = format!("/latency_us/percentiles/{}", percentile_name(p));
                row(&mut o, &label, num(a, &key), num(b, &key));
            }
        }
    }
    let _ = writeln!(o);
    match (&ha, &hb) {
        (Some(_), Some(_)) if beyond.is_empty() => {
            let _ = writeln!(
                o,
                "latency: no percentile differs beyond its 95% sampling bounds"
            );
        }
        (Some(_), Some(_)) => {
            let _ = writeln!(
                o,
                "latency differs beyond noise (*: 95% bounds apart) at {}",
                beyond.join("; ")
            );
        }
        _ => {
            let _ = writeln!(
                o,
                "latency: a result has no histogram (older than schema 1); percentiles only"
            );
        }
    }
    let _ = writeln!(
        o,
        "req/s of single runs carry no noise estimate: compare several interleaved runs"
    );
    o
}

/// One line naming a result: when, what, how it went.
fn about(v: &Value) -> String {
    let command = v["command"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    format!(
        "{} {} (passed: {})",
        v["started_at"].as_str().unwrap_or("(no start time)"),
        command,
        v["passed"]
    )
}

/// A setting's value for the "settings differ" line.
fn brief(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::Array(a)) => format!("{} processes", a.len()),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

fn num(v: &Value, ptr: &str) -> Option<f64> {
    v.pointer(ptr)?.as_f64()
}

/// One row of the table: both values and the change from A to B.
fn row(o: &mut String, label: &str, a: Option<f64>, b: Option<f64>) {
    let cell = |x: Option<f64>| x.map_or("-".to_string(), fmt_num);
    let change = match (a, b) {
        (Some(a), Some(b)) if a == b => "=".into(),
        (Some(a), Some(b)) if a != 0.0 => format!("{:+.1}%", (b - a) / a * 100.0),
        _ => "".into(),
    };
    let _ = writeln!(o, "{label:<20} {:>14} {:>14} {change:>9}", cell(a), cell(b));
}

fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else if x.abs() >= 100.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.3}")
    }
}

/// `echo-bench merge`: the results of runs made at the same time (on
/// several machines, against one server) as one: counts, rates and
/// errors summed, histograms added and their percentiles read from the
/// sum, the window and opening time the longest. The merged result keeps
/// each input's circumstances under `merged_from`.
pub fn merge(results: &[Value]) -> Result<Value, String> {
    let Some(first) = results.first() else {
        return Err("nothing to merge".into());
    };
    let sum = |ptr: &str| -> f64 { results.iter().filter_map(|v| num(v, ptr)).sum() };
    let most = |ptr: &str| -> f64 {
        results
            .iter()
            .filter_map(|v| num(v, ptr))
            .fold(0.0, f64::max)
    };
    let int = |x: f64| x.round() as u64;
    let mut out = json!({
        "schema_version": crate::run_info::SCHEMA_VERSION,
        "tool": "echo-bench",
        "tool_version": env!("CARGO_PKG_VERSION"),
        "started_at": first["started_at"],
        "command": first["command"],
        "addr": first["addr"],
        "transport": first["transport"],
        "protocol": first["protocol"],
        "mode": first["mode"],
        "size": first["size"],
        "depth": first["depth"],
        "connections": {
            "requested": int(sum("/connections/requested")),
            "established": int(sum("/connections/established")),
            "failed": int(sum("/connections/failed")),
            "open_s": most("/connections/open_s"),
        },
        "messages": int(sum("/messages")),
        "duration_s": most("/duration_s"),
        "req_per_s": sum("/req_per_s"),
        "mb_per_s": sum("/mb_per_s"),
        "outstanding": {
            "count": int(sum("/outstanding/count")),
            "oldest_ms": most("/outstanding/oldest_ms"),
        },
        "errors_total": int(sum("/errors_total")),
        "passed": results.iter().all(|v| v["passed"] == true),
        "merged_from": results.iter().map(|v| json!({
            "started_at": v["started_at"],
            "command": v["command"],
            "cores": v["cores"],
            "req_per_s": v["req_per_s"],
            "passed": v["passed"],
        })).collect::<Vec<_>>(),
    });
    let mut errors = serde_json::Map::new();
    for v in results {
        if let Some(e) = v["errors"].as_object() {
            for (k, n) in e {
                let had = errors.get(k).and_then(Value::as_u64).unwrap_or(0);
                errors.insert(k.clone(), json!(had + n.as_u64().unwrap_or(0)));
            }
        }
    }
    out["errors"] = Value::Object(errors);
    let chosen: Vec<f64> = first["latency_us"]["percentiles"]
        .as_object()
        .map(|m| m.keys().filter_map(|k| k.parse().ok()).collect())
        .unwrap_or_else(|| crate::histogram::DEFAULT_PERCENTILES.to_vec());
    for key in ["latency_us", "connect_us", "first_echo_us"] {
        let mut merged: Option<Histogram<u64>> = None;
        for (i, v) in results.iter().enumerate() {
            if v.get(key).is_none() {
                continue;
            }
            let h = histogram_of(v, key)
                .ok_or_else(|| format!("result {} has no {key} histogram to merge", i + 1))?;
            match &mut merged {
                None => merged = Some(h),
                Some(m) => m
                    .add(&h)
                    .map_err(|e| format!("cannot add the {key} histograms: {e:?}"))?,
            }
        }
        if let Some(h) = merged {
            let mut p = crate::histogram::Percentiles::of(&h, &chosen).json();
            p["histogram"] = json!(to_base64(&h));
            out[key] = p;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(values_ns: impl IntoIterator<Item = u64>) -> Histogram<u64> {
        let mut h = Histogram::new_with_bounds(1, 100_000_000_000, 3).unwrap();
        for v in values_ns {
            h.record(v).unwrap();
        }
        h
    }

    #[test]
    fn bounds_narrow_as_samples_grow() {
        let few = hist((1..=100).map(|i| i * 1000));
        let many = hist((1..=100_000).map(|i| i * 10));
        let (lo, hi) = bounds(&few, 50.0);
        assert!(lo < 50.0 && hi > 50.0, "{lo} {hi}");
        let (lo2, hi2) = bounds(&many, 50.0);
        assert!((hi2 - lo2) / 500.0 < (hi - lo) / 50.0);
    }

    #[test]
    fn shifted_histograms_differ_beyond_noise_and_equal_ones_do_not() {
        let res = |h: &Histogram<u64>| json!({ "latency_us": { "histogram": to_base64(h) } });
        let a = hist((1..=10_000).map(|i| 50_000 + i % 1000));
        let b = hist((1..=10_000).map(|i| 100_000 + i % 1000));
        let t = compare(&res(&a), &res(&b), ("a", "b"));
        assert!(t.contains("latency p50 us *"), "{t}");
        let t = compare(&res(&a), &res(&a), ("a", "a"));
        assert!(t.contains("no percentile differs"), "{t}");
    }
}
