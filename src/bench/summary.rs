//! Summarizing a test's samples: mean ± stdev over the measured runs, time to first token,
//! per-token latency percentiles, bytes per generated token against the roofline, and cost.

use super::{percentile, usd_per_million_tokens, DeviceRun, Sample, Summary, Test, TestResult};

/// The result of `test` from its `samples` on `run`'s device, `None` when no measured
/// repetition completed. `kv_bytes_per_position` is the KV cache one attended position reads.
pub(crate) fn summarize(
    test: Test,
    samples: Vec<Sample>,
    run: &DeviceRun,
    kv_bytes_per_position: usize,
) -> Option<TestResult> {
    let measured: Vec<&Sample> = samples.iter().filter(|s| !s.warmup).collect();
    let tps = Summary::of(&measured.iter().map(|s| s.tokens_per_s).collect::<Vec<_>>())?;
    let ttft = Summary::of(&measured.iter().filter_map(|s| s.ttft_s).collect::<Vec<_>>());
    let mut lat: Vec<f64> = measured
        .iter()
        .flat_map(|s| s.token_latencies_s.iter().copied())
        .collect();
    lat.sort_by(f64::total_cmp);
    let (percentiles, bytes_per_token) = match test {
        Test::Tg(n) => (
            Some([
                percentile(&lat, 50.0),
                percentile(&lat, 90.0),
                percentile(&lat, 99.0),
            ]),
            // Step i attends i + 1 positions: on average (n + 1) / 2.
            Some(run.weight_bytes as f64 + kv_bytes_per_position as f64 * (n as f64 + 1.0) / 2.0),
        ),
        Test::Pp(_) => (None, None),
    };
    let roofline_fraction = match (bytes_per_token, &run.bandwidth) {
        (Some(b), Some(bw)) => Some(b * tps.mean / bw.bytes_per_s),
        _ => None,
    };
    Some(TestResult {
        test,
        tokens_per_s: tps,
        ttft_s: ttft,
        latency_p50_p90_p99_s: percentiles,
        bytes_per_token,
        roofline_fraction,
        usd_per_million_tokens: run
            .price
            .as_ref()
            .map(|p| usd_per_million_tokens(p.usd_per_hour, tps.mean)),
        samples,
    })
}
