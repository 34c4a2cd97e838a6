//! Reporting helpers: percentiles over sorted latencies, unit conversion and
//! the `--json` output.

pub fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx] as f64
}

pub fn us(ns: f64) -> f64 {
    ns / 1000.0
}

pub fn emit(json_out: bool, v: serde_json::Value) {
    if json_out {
        println!("{v}");
    }
}
