//! Benchmark output: a markdown table to paste, and csv / json / jsonl with every sample.

use super::{BenchReport, DeviceRun, Test};
use serde_json::json;
use std::fmt::Write;

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn ms(s: f64) -> String {
    format!("{:.1}", s * 1e3)
}

impl BenchReport {
    /// The header line: machine, model, dtypes, build, repetitions.
    pub fn header(&self) -> String {
        let dtypes: Vec<String> = {
            let mut d: Vec<String> = self
                .devices
                .iter()
                .filter_map(|r| r.dtype.clone())
                .collect();
            d.dedup();
            d
        };
        format!(
            "{} | machine: {} | model: {} ({}) | dtype: {} | r={} after {} warm-up",
            self.switchyard,
            self.machine,
            self.model,
            self.model_description,
            if dtypes.is_empty() {
                "-".into()
            } else {
                dtypes.join(", ")
            },
            self.repetitions,
            self.warmup
        )
    }

    /// A markdown table, one row per device × test, with notes on load, memory, roofline and
    /// prices below it.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{}\n", self.header());
        if self.devices.is_empty() {
            s.push_str("no device measured in this run\n");
        } else {
            s.push_str(
                "| device | test | t/s | TTFT ms | p50 ms | p90 ms | p99 ms | roofline | $/1M tok |\n",
            );
            s.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        }
        for run in &self.devices {
            if let Some(why) = &run.skipped {
                let _ = writeln!(s, "| {} | skipped: {why} | | | | | | | |", run.display_name);
                continue;
            }
            for r in &run.results {
                let (p50, p90, p99) = match r.latency_p50_p90_p99_s {
                    Some([a, b, c]) => (ms(a), ms(b), ms(c)),
                    None => (String::new(), String::new(), String::new()),
                };
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} ± {:.2} | {} | {} | {} | {} | {} | {} |",
                    run.display_name,
                    r.test.label(),
                    r.tokens_per_s.mean,
                    r.tokens_per_s.stdev,
                    r.ttft_s.map(|t| ms(t.mean)).unwrap_or_default(),
                    p50,
                    p90,
                    p99,
                    r.roofline_fraction
                        .map(|f| format!("{:.0}%", f * 100.0))
                        .unwrap_or_default(),
                    r.usd_per_million_tokens
                        .map(|c| format!("{c:.4}"))
                        .unwrap_or_default(),
                );
            }
        }
        if self.devices.iter().any(|r| !r.batches.is_empty()) {
            s.push_str(&self.batch_markdown());
        }
        s.push('\n');
        if self.interrupted {
            s.push_str("- interrupted: only the runs completed before the stop are reported\n");
        }
        for run in self.devices.iter().filter(|r| r.skipped.is_none()) {
            let _ = write!(
                s,
                "- {}: load {:.2} s ({:.0} MB of weights: {}), compile {:.1} ms",
                run.display_name,
                run.load_s,
                run.weight_bytes as f64 / 1e6,
                run.weight_types,
                run.compile_s * 1e3
            );
            if let Some(first) = first_call(run) {
                let _ = write!(s, ", first call {first}");
            }
            if let Some(shapes) = &run.static_shapes {
                let _ = write!(s, ", {shapes}");
            }
            if let Some(b) = run.peak_host_bytes {
                let _ = write!(s, ", peak host memory {}", gib(b));
            }
            if let Some(b) = run.device_memory_bytes {
                let _ = write!(s, ", device memory {}", gib(b));
            }
            match &run.bandwidth {
                Some(bw) => {
                    let _ = write!(
                        s,
                        "; roofline {:.1} GB/s ({})",
                        bw.bytes_per_s / 1e9,
                        bw.source
                    );
                }
                None if run.info.as_ref().is_some_and(|i| i.emulated) => {
                    s.push_str("; emulated: no roofline or cost");
                }
                None => {}
            }
            if let Some(p) = &run.price {
                let _ = write!(s, "; price ${:.4}/h from {}", p.usd_per_hour, p.source);
            }
            s.push('\n');
        }
        if let Some(p) = &self.projection {
            s.push_str(&p.markdown());
        }
        s
    }

    /// The batched tests' table: per device and batch size, prompt tokens/s, aggregate and
    /// per-sequence generation tokens/s, time to first token, step latency and cost.
    fn batch_markdown(&self) -> String {
        let mut s = String::from(
            "\n| device | test | B | prompt t/s | gen t/s (all) | gen t/s (each) | TTFT ms | step p50 ms | p90 ms | p99 ms | $/1M tok |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for run in self.devices.iter().filter(|r| r.skipped.is_none()) {
            for b in &run.batches {
                let [p50, p90, p99] = b.step_latency_p50_p90_p99_s;
                let _ = writeln!(
                    s,
                    "| {} | pp{}+tg{} | {} | {:.2} ± {:.2} | {:.2} ± {:.2} | {:.2} | {} | {} | {} | {} | {} |",
                    run.display_name,
                    b.test.prompt,
                    b.test.gen,
                    b.batch,
                    b.prompt_tokens_per_s.mean,
                    b.prompt_tokens_per_s.stdev,
                    b.gen_tokens_per_s.mean,
                    b.gen_tokens_per_s.stdev,
                    b.per_sequence_tokens_per_s.mean,
                    ms(b.ttft_s.mean),
                    ms(p50),
                    ms(p90),
                    ms(p99),
                    b.usd_per_million_tokens
                        .map(|c| format!("{c:.4}"))
                        .unwrap_or_default(),
                );
            }
        }
        s
    }

    /// Every sample as CSV (one row per run, warm-up runs flagged).
    pub fn csv(&self) -> String {
        let mut s = String::from(
            "device,test,rep,warmup,tokens,seconds,tokens_per_s,ttft_ms,p50_ms,p90_ms,p99_ms,dtype,model,commit,projected,batch\n",
        );
        for run in &self.devices {
            for r in &run.results {
                for smp in &r.samples {
                    let mut lat = smp.token_latencies_s.clone();
                    lat.sort_by(f64::total_cmp);
                    let pct = |p| {
                        if lat.is_empty() {
                            String::new()
                        } else {
                            format!("{:.4}", super::percentile(&lat, p) * 1e3)
                        }
                    };
                    let _ = writeln!(
                        s,
                        "{},{},{},{},{},{:.6},{:.4},{},{},{},{},{},{},{},false,1",
                        csv_field(&run.display_name),
                        r.test.label(),
                        smp.rep,
                        smp.warmup,
                        smp.tokens,
                        smp.seconds,
                        smp.tokens_per_s,
                        smp.ttft_s
                            .map(|t| format!("{:.4}", t * 1e3))
                            .unwrap_or_default(),
                        pct(50.0),
                        pct(90.0),
                        pct(99.0),
                        run.dtype.as_deref().unwrap_or(""),
                        csv_field(&self.model),
                        csv_field(&self.switchyard),
                    );
                }
            }
        }
        // Batched runs: the generation phase's aggregate rate, TTFT the sequences' mean, the
        // percentiles over generation steps.
        for run in &self.devices {
            for b in &run.batches {
                for smp in &b.samples {
                    let mut lat = smp.step_latencies_s.clone();
                    lat.sort_by(f64::total_cmp);
                    let pct = |p| format!("{:.4}", super::percentile(&lat, p) * 1e3);
                    let ttft = smp.ttft_s.iter().sum::<f64>() / smp.ttft_s.len().max(1) as f64;
                    let _ = writeln!(
                        s,
                        "{},pp{}+tg{},{},{},{},{:.6},{:.4},{:.4},{},{},{},{},{},{},false,{}",
                        csv_field(&run.display_name),
                        b.test.prompt,
                        b.test.gen,
                        smp.rep,
                        smp.warmup,
                        smp.gen_tokens,
                        smp.gen_s,
                        smp.gen_tokens as f64 / smp.gen_s.max(1e-12),
                        ttft * 1e3,
                        pct(50.0),
                        pct(90.0),
                        pct(99.0),
                        run.dtype.as_deref().unwrap_or(""),
                        csv_field(&self.model),
                        csv_field(&self.switchyard),
                        smp.batch,
                    );
                }
            }
        }
        // Projected rows: labelled in the device column and by `projected`, no samples.
        for p in self.projection.iter().flat_map(|p| &p.targets) {
            let device = csv_field(&format!("{} (projected)", p.target));
            for x in &p.prompts {
                let _ = writeln!(
                    s,
                    "{device},pp{n},,,{n},{:.6},{:.4},{:.4},,,,{},{},{},true,1",
                    x.ttft_s,
                    x.tokens_per_s,
                    x.ttft_s * 1e3,
                    p.dtype.name(),
                    csv_field(&self.model),
                    csv_field(&self.switchyard),
                    n = x.tokens,
                );
            }
            for x in &p.decodes {
                let _ = writeln!(
                    s,
                    "{device},tg{n},,,{},{:.6},{:.4},,,,,{},{},{},true,{}",
                    x.tokens * x.batch,
                    (x.tokens * x.batch) as f64 / x.aggregate_tokens_per_s,
                    x.aggregate_tokens_per_s,
                    p.dtype.name(),
                    csv_field(&self.model),
                    csv_field(&self.switchyard),
                    x.batch,
                    n = x.tokens,
                );
            }
        }
        s
    }

    /// The whole report, samples included, as one JSON document.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).expect("reports serialize")
    }

    /// One JSON object per sample, each carrying its device, test and run metadata.
    pub fn jsonl(&self) -> String {
        let mut s = String::new();
        for run in &self.devices {
            if let Some(why) = &run.skipped {
                let _ = writeln!(
                    s,
                    "{}",
                    json!({"device": run.display_name, "skipped": why, "model": self.model})
                );
                continue;
            }
            for r in &run.results {
                for smp in &r.samples {
                    let mut v = serde_json::to_value(smp).expect("samples serialize");
                    v["device"] = json!(run.display_name);
                    v["test"] = json!(r.test.label());
                    v["dtype"] = json!(run.dtype);
                    v["model"] = json!(self.model);
                    v["switchyard"] = json!(self.switchyard);
                    v["projected"] = json!(false);
                    let _ = writeln!(s, "{v}");
                }
            }
        }
        for run in self.devices.iter().filter(|r| r.skipped.is_none()) {
            for b in &run.batches {
                for smp in &b.samples {
                    let mut v = serde_json::to_value(smp).expect("samples serialize");
                    v["device"] = json!(run.display_name);
                    v["test"] = json!(format!("pp{}+tg{}", b.test.prompt, b.test.gen));
                    v["gen_tokens_per_s"] = json!(smp.gen_tokens as f64 / smp.gen_s.max(1e-12));
                    v["dtype"] = json!(run.dtype);
                    v["model"] = json!(self.model);
                    v["switchyard"] = json!(self.switchyard);
                    v["projected"] = json!(false);
                    let _ = writeln!(s, "{v}");
                }
            }
        }
        for p in self.projection.iter().flat_map(|p| &p.targets) {
            let base = json!({
                "device": format!("{} (projected)", p.target),
                "projected": true,
                "dtype": p.dtype.name(),
                "devices": p.devices,
                "efficiency": p.efficiency,
                "model": self.model,
                "switchyard": self.switchyard,
            });
            for x in &p.prompts {
                let mut v = base.clone();
                v["test"] = json!(format!("pp{}", x.tokens));
                v["batch"] = json!(1);
                v["tokens_per_s"] = json!(x.tokens_per_s);
                v["ttft_s"] = json!(x.ttft_s);
                v["bound"] = json!(x.bound);
                let _ = writeln!(s, "{v}");
            }
            for x in &p.decodes {
                let mut v = base.clone();
                v["test"] = json!(format!("tg{}", x.tokens));
                v["batch"] = json!(x.batch);
                v["tokens_per_s"] = json!(x.aggregate_tokens_per_s);
                v["per_sequence_tokens_per_s"] = json!(x.per_sequence_tokens_per_s);
                v["usd_per_million_tokens"] = json!(x.usd_per_million_tokens);
                v["bound"] = json!(x.bound);
                let _ = writeln!(s, "{v}");
            }
        }
        s
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The first (warm-up) call's latency: the first prefill if there is a pp test, else the first
/// token of the first tg test.
fn first_call(run: &DeviceRun) -> Option<String> {
    let first = run.first_call_s?;
    match run.results.first()?.test {
        Test::Pp(n) => Some(format!("{} ms (pp{n})", ms(first))),
        Test::Tg(_) => Some(format!("{} ms (first token)", ms(first))),
    }
}
