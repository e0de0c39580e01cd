//! The generation loop: stop conditions, streaming, compile-once decoding, and that the fixtures
//! exercise the features they are meant to (rope scaling, windows, soft-capping).

use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use switchyard_candle::CandleDevice;
use switchyard_models::{
    generate, Engine, EngineOptions, GenerateOptions, Generation, Model, ModelConfig, RopeScaling,
    StopReason,
};
use switchyard_runtime::{
    CompileOptions, DType, Device, DeviceInfo, ExecuteArgs, Graph, HostTensor, Result as RtResult,
};

fn fixture(arch: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(arch)
}

fn run(
    model: &Model,
    config: &ModelConfig,
    opts: &GenerateOptions,
    max_context: Option<usize>,
) -> (Generation, Vec<String>) {
    let engine = Engine::new(
        CandleDevice::cpu(),
        config,
        model.weights.as_ref(),
        &EngineOptions {
            max_context,
            ..Default::default()
        },
    )
    .unwrap();
    let mut session = engine.new_session().unwrap();
    let tok = model.tokenizer.as_ref().unwrap();
    let prompt = tok
        .encode("Hello world! The quick brown fox", true)
        .unwrap();
    let mut pieces = Vec::new();
    let out = generate(&engine, &mut session, Some(tok), &prompt, opts, |p| {
        pieces.push(p.to_string());
        ControlFlow::Continue(())
    })
    .unwrap();
    (out, pieces)
}

#[test]
fn stop_conditions() {
    let m = Model::load_dir(&fixture("llama")).unwrap();
    let greedy = GenerateOptions {
        max_new_tokens: 20,
        ignore_eos: true,
        ..Default::default()
    };
    let (full, pieces) = run(&m, &m.config, &greedy, None);
    assert_eq!(full.stop_reason, StopReason::MaxTokens);
    assert_eq!(full.generated_ids.len(), 20);
    let text = full.text.clone().unwrap();
    assert_eq!(pieces.concat(), text, "streamed pieces add up to the text");

    // End of sequence: make the 6th generated token an EOS id.
    let eos = full.generated_ids[5];
    let first = full.generated_ids.iter().position(|&t| t == eos).unwrap();
    let opts = GenerateOptions {
        eos_token_ids: vec![eos],
        ignore_eos: false,
        ..greedy.clone()
    };
    let (out, _) = run(&m, &m.config, &opts, None);
    assert_eq!(out.stop_reason, StopReason::Eos);
    assert_eq!(out.generated_ids, full.generated_ids[..=first]);

    // A stop string from the middle of the text: generation stops there and the text excludes it.
    let chars: Vec<char> = text.chars().collect();
    let stop: String = chars[chars.len() / 2..chars.len() / 2 + 3].iter().collect();
    let cut = text.find(&stop).unwrap();
    let opts = GenerateOptions {
        stop_strings: vec![stop.clone()],
        ..greedy.clone()
    };
    let (out, pieces) = run(&m, &m.config, &opts, None);
    assert_eq!(out.stop_reason, StopReason::StopString);
    assert_eq!(out.text.as_deref(), Some(&text[..cut]));
    assert_eq!(
        pieces.concat(),
        text[..cut],
        "no part of the stop string was streamed"
    );

    // The context limit: a 12-slot cache holds the prompt and 12 - prompt decode steps, which
    // yield one more token than they feed.
    let (out, _) = run(&m, &m.config, &greedy, Some(12));
    assert_eq!(out.stop_reason, StopReason::ContextLimit);
    let room = 12 - out.prompt_ids.len();
    assert_eq!(out.generated_ids, full.generated_ids[..room + 1]);
}

#[test]
fn streaming_never_splits_a_character() {
    let m = Model::load_dir(&fixture("llama")).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    let text = "na\u{ef}ve \u{4e16}\u{754c}\u{1F680}\u{1F30D} \u{e9}t\u{e9}";
    let ids = tok.encode(text, false).unwrap();
    // The byte-level tokenizer splits these characters over several tokens: some tokens alone
    // are not valid UTF-8.
    let partial = ids
        .iter()
        .filter(|&&i| tok.decode(&[i], true).unwrap().contains('\u{FFFD}'))
        .count();
    assert!(
        partial >= 4,
        "only {partial} partial-character tokens in {ids:?}"
    );
    let mut stream = tok.stream(true);
    let mut out = String::new();
    for id in ids {
        if let Some(piece) = stream.push(id).unwrap() {
            assert!(
                !piece.contains('\u{FFFD}'),
                "a partial character was emitted: {piece:?}"
            );
            out.push_str(&piece);
        }
    }
    assert_eq!(out, text);
}

/// A device that counts compiles and executions of the device it wraps.
struct Counting<D> {
    inner: D,
    compiles: AtomicUsize,
    executes: AtomicUsize,
}

impl<D: Device> Device for Counting<D> {
    type Buffer = D::Buffer;
    type Executable = D::Executable;
    fn info(&self) -> &DeviceInfo {
        self.inner.info()
    }
    fn allocate(&self, dtype: DType, dims: &[usize]) -> RtResult<Self::Buffer> {
        self.inner.allocate(dtype, dims)
    }
    fn upload(&self, host: &HostTensor) -> RtResult<Self::Buffer> {
        self.inner.upload(host)
    }
    fn download(&self, buffer: &Self::Buffer) -> RtResult<HostTensor> {
        self.inner.download(buffer)
    }
    fn compile(&self, graph: &Graph, options: &CompileOptions) -> RtResult<Self::Executable> {
        self.compiles.fetch_add(1, Ordering::SeqCst);
        self.inner.compile(graph, options)
    }
    fn execute(
        &self,
        exe: &Self::Executable,
        args: ExecuteArgs<'_, Self::Buffer>,
    ) -> RtResult<Vec<Self::Buffer>> {
        self.executes.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(exe, args)
    }
    fn synchronize(&self) -> RtResult<()> {
        self.inner.synchronize()
    }
}

#[test]
fn decoding_reuses_the_compiled_executables() {
    let m = Model::load_dir(&fixture("qwen2")).unwrap();
    let device = Counting {
        inner: CandleDevice::cpu(),
        compiles: AtomicUsize::new(0),
        executes: AtomicUsize::new(0),
    };
    let engine = Engine::new(
        device,
        &m.config,
        m.weights.as_ref(),
        &EngineOptions::default(),
    )
    .unwrap();
    assert_eq!(
        engine.device().compiles.load(Ordering::SeqCst),
        2,
        "prefill and decode"
    );
    let opts = GenerateOptions {
        max_new_tokens: 60,
        ignore_eos: true,
        ..Default::default()
    };
    for _ in 0..2 {
        let mut s = engine.new_session().unwrap();
        let out = generate(&engine, &mut s, None, &[1, 5, 9], &opts, |_| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(out.generated_ids.len(), 60);
    }
    assert_eq!(
        engine.device().compiles.load(Ordering::SeqCst),
        2,
        "nothing recompiled per token or per session"
    );
    assert_eq!(
        engine.device().executes.load(Ordering::SeqCst),
        2 * 60,
        "one prefill and 59 decode steps per run"
    );
}

#[test]
fn fixtures_exercise_their_features() {
    // Each feature, switched off, must move the logits far beyond the golden tolerance.
    let logits = |arch: &str, edit: &dyn Fn(&mut ModelConfig)| {
        let m = Model::load_dir(&fixture(arch)).unwrap();
        let mut c = m.config.clone();
        edit(&mut c);
        let opts = GenerateOptions {
            max_new_tokens: 1,
            return_prompt_logits: true,
            ..Default::default()
        };
        run(&m, &c, &opts, None).0.last_prompt_logits.unwrap()
    };
    let differs = |arch: &str, what: &str, edit: &dyn Fn(&mut ModelConfig)| {
        let a = logits(arch, &|_| {});
        let b = logits(arch, edit);
        let d = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(
            d > 1e-2,
            "{arch}: turning off {what} changed logits by only {d:e}"
        );
    };
    differs("llama", "llama3 rope scaling", &|c| {
        c.rope.as_mut().unwrap().scaling = RopeScaling::None
    });
    differs("mistral", "the sliding window", &|c| {
        c.layer_windows.iter_mut().for_each(|w| *w = None)
    });
    differs("phi3", "the sliding window", &|c| {
        c.layer_windows.iter_mut().for_each(|w| *w = None)
    });
    differs("gemma2", "alternating windows", &|c| {
        c.layer_windows.iter_mut().for_each(|w| *w = None)
    });
    differs("gemma2", "attention soft-capping", &|c| {
        c.attn_softcap = None
    });
    differs("gemma2", "final soft-capping", &|c| c.final_softcap = None);
    // Gemma 2's query_pre_attn_scalar equals head_dim in the fixture, as in the 2B/9B models
    // (and as GGUF files assume); a different one is parsed by the config tests.
    differs("gemma3", "per-head q/k norms", &|c| c.qk_norm = false);
    differs("gemma3", "the sliding layers' rotary base", &|c| {
        c.rope_local = None
    });
    differs("gemma3", "five sliding layers in six", &|c| {
        c.layer_windows.iter_mut().for_each(|w| *w = None)
    });
    differs("phi3", "partial rotary", &|c| {
        c.rope.as_mut().unwrap().rotary_dim = c.head_dim
    });
}
