//! Per-point metrics of a serving run, the cheapest point within the SLOs, and the report as a
//! markdown table, csv, json (every request's timings) or jsonl.

use super::client::RequestRecord;
use serde::Serialize;
use std::collections::BTreeMap;
use switchyard::bench::percentile;
use switchyard::bench::{usd_per_million_tokens, DevicePrice};

/// Mean and percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Dist {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Dist {
    fn of_seconds(values: impl Iterator<Item = f64>) -> Option<Dist> {
        let mut v: Vec<f64> = values.map(|s| s * 1e3).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Dist {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: percentile(&v, 50.0),
            p90: percentile(&v, 90.0),
            p99: percentile(&v, 99.0),
        })
    }
}

/// How a point loads the server.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Load {
    /// At most this many requests in flight.
    Concurrency(usize),
    /// Poisson arrivals at this many requests per second (infinity: all at once).
    Rate(f64),
}

impl Load {
    pub fn label(&self) -> String {
        match self {
            Load::Concurrency(c) => format!("c={c}"),
            Load::Rate(r) if r.is_infinite() => "rate=inf".into(),
            Load::Rate(r) => format!("rate={r}"),
        }
    }
}

/// Service-level objectives a point must meet (on the 99th percentile).
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
}

/// One load point on one server.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub load: Load,
    pub duration_s: f64,
    pub completed: usize,
    pub failed: usize,
    /// Failure reasons and how often each happened.
    pub failures: BTreeMap<String, usize>,
    pub request_throughput: f64,
    pub output_tokens_per_s: f64,
    pub total_tokens_per_s: f64,
    /// Tokens per second one user sees while its answer streams: 1 / the mean TPOT. (The mean of
    /// each request's 1 / TPOT is not used: one answer whose tokens arrive in a burst has a TPOT
    /// near zero and would swamp it.)
    pub per_user_tokens_per_s: f64,
    pub ttft_ms: Dist,
    pub tpot_ms: Dist,
    pub itl_ms: Dist,
    pub e2e_ms: Dist,
    pub usd_per_million_output_tokens: Option<f64>,
    pub meets_slo: bool,
    pub requests: Vec<RequestRecord>,
}

impl Point {
    /// The metrics of `requests`, run at `load`, taking `duration_s` in all.
    pub fn of(
        load: Load,
        requests: Vec<RequestRecord>,
        duration_s: f64,
        price: Option<&DevicePrice>,
        slo: &Slo,
    ) -> Point {
        let ok: Vec<&RequestRecord> = requests.iter().filter(|r| r.error.is_none()).collect();
        let mut failures = BTreeMap::new();
        for r in requests.iter().filter_map(|r| r.error.as_ref()) {
            *failures.entry(r.clone()).or_insert(0) += 1;
        }
        let out: usize = ok.iter().map(|r| r.output_tokens).sum();
        let prompt: usize = ok.iter().filter_map(|r| r.prompt_tokens).sum();
        let d = duration_s.max(1e-9);
        let tpots: Vec<f64> = ok.iter().filter_map(|r| r.tpot_s()).collect();
        let per_user = if tpots.is_empty() {
            0.0
        } else {
            tpots.len() as f64 / tpots.iter().sum::<f64>().max(1e-9)
        };
        let output_tps = out as f64 / d;
        let ttft = Dist::of_seconds(ok.iter().filter_map(|r| r.ttft_s)).unwrap_or_default();
        let tpot = Dist::of_seconds(tpots.iter().copied()).unwrap_or_default();
        let meets_slo = failures.is_empty()
            && !ok.is_empty()
            && slo.ttft_ms.is_none_or(|t| ttft.p99 <= t)
            && slo.tpot_ms.is_none_or(|t| tpot.p99 <= t);
        Point {
            load,
            duration_s,
            completed: ok.len(),
            failed: requests.len() - ok.len(),
            failures,
            request_throughput: ok.len() as f64 / d,
            output_tokens_per_s: output_tps,
            total_tokens_per_s: (out + prompt) as f64 / d,
            per_user_tokens_per_s: per_user,
            ttft_ms: ttft,
            tpot_ms: tpot,
            itl_ms: Dist::of_seconds(ok.iter().flat_map(|r| r.itl_s.iter().copied()))
                .unwrap_or_default(),
            e2e_ms: Dist::of_seconds(ok.iter().map(|r| r.e2e_s)).unwrap_or_default(),
            usd_per_million_output_tokens: price
                .filter(|_| output_tps > 0.0)
                .map(|p| usd_per_million_tokens(p.usd_per_hour, output_tps)),
            meets_slo,
            requests,
        }
    }
}

/// Every point measured on one server.
#[derive(Debug, Clone, Serialize)]
pub struct ServerResult {
    /// The device (`cpu`, `neuron:0 (emulated)`) or the URL.
    pub label: String,
    pub emulated: bool,
    pub price: Option<DevicePrice>,
    /// Why there is no price.
    pub price_note: Option<String>,
    pub points: Vec<Point>,
}

impl ServerResult {
    /// The point within the SLOs with the lowest cost per token (without a price: the highest
    /// output throughput).
    pub fn best(&self) -> Option<&Point> {
        self.points.iter().filter(|p| p.meets_slo).min_by(|a, b| {
            match (
                a.usd_per_million_output_tokens,
                b.usd_per_million_output_tokens,
            ) {
                (Some(x), Some(y)) => x.total_cmp(&y),
                _ => b.output_tokens_per_s.total_cmp(&a.output_tokens_per_s),
            }
        })
    }
}

/// A whole run.
#[derive(Debug, Clone, Serialize)]
pub struct ServeReport {
    pub model: String,
    pub workload: String,
    pub machine: String,
    pub build: String,
    pub slo: Slo,
    pub servers: Vec<ServerResult>,
}

fn ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

impl ServeReport {
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "model: {} · {} · {} · {}\n",
            self.model, self.workload, self.machine, self.build
        );
        let slo = match (self.slo.ttft_ms, self.slo.tpot_ms) {
            (None, None) => "none".to_string(),
            (t, p) => [
                t.map(|t| format!("p99 TTFT ≤ {} ms", ms(t))),
                p.map(|p| format!("p99 TPOT ≤ {} ms", ms(p))),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", "),
        };
        s += &format!("SLO: {slo}\n");
        for server in &self.servers {
            let price = match (&server.price, &server.price_note) {
                (Some(p), _) => format!("${:.4}/h ({})", p.usd_per_hour, p.source),
                (None, Some(n)) => format!("no cost: {n}"),
                (None, None) => "no cost".into(),
            };
            s += &format!("\n### {} — {price}\n\n", server.label);
            s += "| load | req/s | output tok/s | total tok/s | tok/s per user | TTFT p50 / p99 ms | TPOT p50 / p99 ms | ITL p50 / p99 ms | E2E p50 / p99 ms | failed | $/1M output | SLO |\n";
            s += "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|\n";
            for p in &server.points {
                s += &format!(
                    "| {} | {:.2} | {:.1} | {:.1} | {:.1} | {} / {} | {} / {} | {} / {} | {} / {} | {} | {} | {} |\n",
                    p.load.label(),
                    p.request_throughput,
                    p.output_tokens_per_s,
                    p.total_tokens_per_s,
                    p.per_user_tokens_per_s,
                    ms(p.ttft_ms.p50),
                    ms(p.ttft_ms.p99),
                    ms(p.tpot_ms.p50),
                    ms(p.tpot_ms.p99),
                    ms(p.itl_ms.p50),
                    ms(p.itl_ms.p99),
                    ms(p.e2e_ms.p50),
                    ms(p.e2e_ms.p99),
                    p.failed,
                    p.usd_per_million_output_tokens
                        .map_or("-".into(), |c| format!("{c:.4}")),
                    if p.meets_slo { "yes" } else { "no" },
                );
            }
            for p in &server.points {
                for (reason, n) in &p.failures {
                    s += &format!("\n{}: {n} failed: {reason}", p.load.label());
                }
            }
            s += &match server.best() {
                Some(b) => format!(
                    "\nwithin the SLO at the lowest cost: {} ({:.1} output tok/s, {:.1} tok/s per user{})\n",
                    b.load.label(),
                    b.output_tokens_per_s,
                    b.per_user_tokens_per_s,
                    b.usd_per_million_output_tokens
                        .map_or(String::new(), |c| format!(", ${c:.4} per 1M output tokens"))
                ),
                None => "\nno point meets the SLO\n".into(),
            };
        }
        s
    }

    pub fn csv(&self) -> String {
        let mut s = String::from("server,emulated,load,concurrency,rate,completed,failed,duration_s,request_throughput,output_tokens_per_s,total_tokens_per_s,per_user_tokens_per_s,ttft_mean_ms,ttft_p50_ms,ttft_p90_ms,ttft_p99_ms,tpot_mean_ms,tpot_p50_ms,tpot_p90_ms,tpot_p99_ms,itl_mean_ms,itl_p50_ms,itl_p90_ms,itl_p99_ms,e2e_mean_ms,e2e_p50_ms,e2e_p90_ms,e2e_p99_ms,usd_per_million_output_tokens,meets_slo\n");
        for server in &self.servers {
            for p in &server.points {
                let (c, r) = match p.load {
                    Load::Concurrency(c) => (c.to_string(), String::new()),
                    Load::Rate(r) => (String::new(), r.to_string()),
                };
                let d = |d: &Dist| format!("{:.3},{:.3},{:.3},{:.3}", d.mean, d.p50, d.p90, d.p99);
                s += &format!(
                    "\"{}\",{},{},{c},{r},{},{},{:.3},{:.4},{:.3},{:.3},{:.3},{},{},{},{},{},{}\n",
                    server.label.replace('"', "\"\""),
                    server.emulated,
                    p.load.label(),
                    p.completed,
                    p.failed,
                    p.duration_s,
                    p.request_throughput,
                    p.output_tokens_per_s,
                    p.total_tokens_per_s,
                    p.per_user_tokens_per_s,
                    d(&p.ttft_ms),
                    d(&p.tpot_ms),
                    d(&p.itl_ms),
                    d(&p.e2e_ms),
                    p.usd_per_million_output_tokens
                        .map_or(String::new(), |c| format!("{c:.6}")),
                    p.meets_slo,
                );
            }
        }
        s
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }

    /// One object per request, with its server and load.
    pub fn jsonl(&self) -> String {
        let mut s = String::new();
        for server in &self.servers {
            for p in &server.points {
                for r in &p.requests {
                    let mut v = serde_json::to_value(r).expect("serializes");
                    v["server"] = server.label.clone().into();
                    v["load"] = p.load.label().into();
                    s += &v.to_string();
                    s.push('\n');
                }
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(ttft: f64, e2e: f64, tokens: usize) -> RequestRecord {
        RequestRecord {
            start_s: 0.0,
            prompt_tokens: Some(10),
            output_tokens: tokens,
            ttft_s: Some(ttft),
            itl_s: vec![(e2e - ttft) / (tokens - 1) as f64; tokens - 1],
            e2e_s: e2e,
            error: None,
        }
    }

    #[test]
    fn point_metrics_follow_their_definitions() {
        // Two requests of 11 tokens in 2 s: 11 output tok/s, 21 total tok/s; TPOT of the first
        // (1.1 - 0.1) / 10 = 0.1 s, of the second (2.0 - 0.5) / 10 = 0.15 s.
        let mut failed = record(0.1, 0.2, 2);
        failed.error = Some("HTTP 429: busy".into());
        let price = DevicePrice {
            usd_per_hour: 3.6,
            source: "test".into(),
        };
        let slo = Slo {
            ttft_ms: Some(1000.0),
            tpot_ms: None,
        };
        let p = Point::of(
            Load::Concurrency(2),
            vec![record(0.1, 1.1, 11), record(0.5, 2.0, 11), failed],
            2.0,
            Some(&price),
            &slo,
        );
        assert_eq!((p.completed, p.failed), (2, 1));
        assert_eq!(p.failures["HTTP 429: busy"], 1);
        assert!((p.output_tokens_per_s - 11.0).abs() < 1e-9);
        assert!((p.total_tokens_per_s - 21.0).abs() < 1e-9);
        assert!((p.tpot_ms.mean - 125.0).abs() < 1e-6);
        assert!((p.per_user_tokens_per_s - 1.0 / 0.125).abs() < 1e-9);
        // $3.6/h = $0.001/s; 11 tok/s -> 1e6 / 11 s -> $90.909 per million.
        assert!((p.usd_per_million_output_tokens.unwrap() - 90.909).abs() < 1e-3);
        assert!(!p.meets_slo, "a failed request breaks the SLO");
    }
}
