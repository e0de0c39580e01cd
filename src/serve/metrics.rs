//! The server's Prometheus metrics, named in the style vLLM uses with the prefix `switchyard:`.

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Every metric `/metrics` exports.
pub struct Metrics {
    registry: Registry,
    /// Requests that ended, by outcome: `stop`, `length` (finish reasons), `embedded` (an
    /// embeddings request answered), `cancelled` (the client went away), `invalid` (4xx), `unauthorized`, `rejected` (429), `aborted`
    /// (shutting down or not ready), `error` (5xx).
    pub requests: IntCounterVec,
    pub prompt_tokens: IntCounter,
    pub generation_tokens: IntCounter,
    pub time_to_first_token: Histogram,
    pub inter_token_latency: Histogram,
    pub e2e_latency: Histogram,
    pub queue_time: Histogram,
    pub running: IntGauge,
    pub waiting: IntGauge,
    pub slots_used: IntGauge,
    pub slots_total: IntGauge,
}

/// Latency buckets in seconds, from 1 ms (a fixture's step) to 2 minutes (a long generation).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
    5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 120.0,
];

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(format!("switchyard:{name}"), help).expect("valid name");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(format!("switchyard:{name}"), help).expect("valid name");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let histogram = |name: &str, help: &str| {
            let opts = HistogramOpts::new(format!("switchyard:{name}"), help)
                .buckets(LATENCY_BUCKETS.to_vec());
            let h = Histogram::with_opts(opts).expect("valid buckets");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let requests = IntCounterVec::new(
            Opts::new(
                "switchyard:requests_total",
                "Requests that ended, by outcome.",
            ),
            &["outcome"],
        )
        .expect("valid name");
        registry
            .register(Box::new(requests.clone()))
            .expect("registered once");
        Metrics {
            requests,
            prompt_tokens: counter("prompt_tokens_total", "Prompt tokens admitted."),
            generation_tokens: counter("generation_tokens_total", "Tokens generated."),
            time_to_first_token: histogram(
                "time_to_first_token_seconds",
                "From a request's arrival to its first generated token.",
            ),
            inter_token_latency: histogram(
                "inter_token_latency_seconds",
                "Between consecutive tokens of one request.",
            ),
            e2e_latency: histogram(
                "e2e_request_latency_seconds",
                "From a request's arrival to its last token.",
            ),
            queue_time: histogram(
                "request_queue_time_seconds",
                "From a request's arrival to its admission into a KV slot.",
            ),
            running: gauge("num_requests_running", "Requests holding a KV slot."),
            waiting: gauge("num_requests_waiting", "Requests queued for a KV slot."),
            slots_used: gauge("kv_slots_used", "KV-pool sequence slots in use."),
            slots_total: gauge("kv_slots_total", "KV-pool sequence slots."),
            registry,
        }
    }

    /// Counts one finished request.
    pub fn ended(&self, outcome: &str) {
        self.requests.with_label_values(&[outcome]).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .expect("writing to a Vec");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
