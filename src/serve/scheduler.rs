//! The one thread that owns the engine: it admits waiting requests into free KV slots, advances
//! every running sequence one step at a time, and sends each request its tokens over a channel.
//! Request handlers talk to it only through [`Command`]s and [`JobEvent`]s.

use super::error::ApiError;
use super::metrics::Metrics;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;
use switchyard::models::{
    BatchOptions, Engine, EngineOptions, Model, SequenceId, SequenceParams, StopReason,
};
use switchyard::{AnyDevice, Device};
use tokio::sync::{mpsc, oneshot};

/// One request, tokenized and checked, for the scheduler.
pub struct Job {
    pub prompt: Vec<u32>,
    pub params: SequenceParams,
    /// Alternatives per token when the client asked for log-probabilities.
    pub logprobs: Option<usize>,
    pub events: mpsc::UnboundedSender<JobEvent>,
    pub received: Instant,
}

/// What a request's handler hears.
pub enum JobEvent {
    Token(TokenOut),
    Done(Done),
    Failed(ApiError),
}

/// One generated token.
pub struct TokenOut {
    pub token: u32,
    /// Text made final by this token (may be empty).
    pub text: String,
    pub logprob: Option<TokenLogprob>,
}

/// The log-probability of a token and of the most likely alternatives, from the raw logits.
pub struct TokenLogprob {
    pub logprob: f32,
    /// Most likely first.
    pub top: Vec<(u32, f32)>,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    Stop,
    Length,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
        }
    }
}

pub struct Done {
    pub finish_reason: FinishReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
}

pub enum Command {
    Submit(Job),
    /// Stop: every queued and running request gets a final error.
    Shutdown,
}

/// What handlers and the scheduler share.
pub struct Shared {
    pub metrics: Metrics,
    /// The model is loaded, the graphs compiled.
    pub ready: AtomicBool,
    pub shutting_down: AtomicBool,
    /// Requests accepted and not yet ended (queued or running).
    pub in_system: AtomicUsize,
    pub max_queue: usize,
    /// Set once before `ready`.
    pub slots: AtomicUsize,
    pub max_context: AtomicUsize,
}

impl Shared {
    pub fn new(max_queue: usize) -> Shared {
        Shared {
            metrics: Metrics::new(),
            ready: AtomicBool::new(false),
            shutting_down: AtomicBool::new(false),
            in_system: AtomicUsize::new(0),
            max_queue,
            slots: AtomicUsize::new(0),
            max_context: AtomicUsize::new(0),
        }
    }

    /// Takes a place for a new request, or refuses when every slot and queue place is taken.
    pub fn admit(&self) -> Result<(), ApiError> {
        let slots = self.slots.load(Ordering::Acquire);
        let limit = slots + self.max_queue;
        self.in_system
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map(|_| ())
            .map_err(|_| ApiError::queue_full(slots, self.max_queue))
    }

    /// Gives back a place taken by [`Shared::admit`].
    pub fn release(&self) {
        self.in_system.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Where the engine runs.
pub struct EngineSetup {
    pub model: Arc<Model>,
    pub device: String,
    pub engine: EngineOptions,
    pub batch: BatchOptions,
}

struct Running {
    job: Job,
    prompt_tokens: usize,
    generated: usize,
    first: Option<Instant>,
    last: Instant,
}

/// Loads the engine, reports through `loaded`, then serves commands until shutdown or until
/// every sender is gone.
pub fn run(
    setup: EngineSetup,
    shared: Arc<Shared>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    loaded: oneshot::Sender<Result<String, String>>,
) {
    let start = Instant::now();
    let model = setup.model.clone();
    let engine = AnyDevice::open(&setup.device)
        .map_err(|e| e.to_string())
        .and_then(|device| {
            Engine::new(device, &model.config, model.weights.as_ref(), &setup.engine)
                .map_err(|e| e.to_string())
        });
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            let _ = loaded.send(Err(e));
            return;
        }
    };
    let mut batch = match engine.batch(model.tokenizer.as_ref(), &setup.batch) {
        Ok(b) => b,
        Err(e) => {
            let _ = loaded.send(Err(e.to_string()));
            return;
        }
    };
    let m = &shared.metrics;
    shared.slots.store(batch.slots(), Ordering::Release);
    shared
        .max_context
        .store(batch.max_context(), Ordering::Release);
    m.slots_total.set(batch.slots() as i64);
    shared.ready.store(true, Ordering::Release);
    let _ = loaded.send(Ok(format!(
        "{} with {} slots of {} positions (KV pool {:.1} MiB), {} tokens per step, loaded in {:.1} s",
        engine.device().info().display_name(),
        batch.slots(),
        batch.max_context(),
        batch.pool_bytes() as f64 / (1024.0 * 1024.0),
        batch.step_tokens(),
        start.elapsed().as_secs_f64()
    )));

    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut running: HashMap<SequenceId, Running> = HashMap::new();
    // Every accepted request ends here exactly once.
    let end = |_job: &Job, outcome: &str| {
        m.ended(outcome);
        shared.release();
    };
    loop {
        let mut stop = false;
        if !batch.has_work() && queue.is_empty() {
            match commands.blocking_recv() {
                Some(Command::Submit(job)) => queue.push_back(job),
                Some(Command::Shutdown) | None => stop = true,
            }
        }
        while let Ok(c) = commands.try_recv() {
            match c {
                Command::Submit(job) => queue.push_back(job),
                Command::Shutdown => stop = true,
            }
        }
        if stop {
            let bye = ApiError::unavailable("the server is shutting down");
            for job in queue.drain(..) {
                end(&job, "aborted");
                let _ = job.events.send(JobEvent::Failed(bye.clone()));
            }
            for (id, r) in running.drain() {
                batch.cancel(id);
                end(&r.job, "aborted");
                let _ = r.job.events.send(JobEvent::Failed(bye.clone()));
            }
            break;
        }
        // Clients that went away: queued ones never start, running ones free their slot now.
        queue.retain(|job| {
            let gone = job.events.is_closed();
            if gone {
                end(job, "cancelled");
            }
            !gone
        });
        running.retain(|&id, r| {
            let gone = r.job.events.is_closed();
            if gone {
                batch.cancel(id);
                end(&r.job, "cancelled");
            }
            !gone
        });
        while batch.free_slots() > 0 {
            let Some(job) = queue.pop_front() else { break };
            match batch.add(job.prompt.clone(), job.params.clone()) {
                Ok(id) => {
                    m.queue_time.observe(job.received.elapsed().as_secs_f64());
                    m.prompt_tokens.inc_by(job.prompt.len() as u64);
                    running.insert(
                        id,
                        Running {
                            prompt_tokens: job.prompt.len(),
                            job,
                            generated: 0,
                            first: None,
                            last: Instant::now(),
                        },
                    );
                }
                Err(e) => {
                    let e = ApiError::from_model(&e);
                    let outcome = e.outcome();
                    end(&job, outcome);
                    let _ = job.events.send(JobEvent::Failed(e));
                }
            }
        }
        m.running.set(running.len() as i64);
        m.waiting.set(queue.len() as i64);
        m.slots_used.set(batch.active() as i64);
        if !batch.has_work() {
            continue;
        }
        let events = match batch.step() {
            Ok(events) => events,
            Err(e) => {
                let failure = ApiError::internal(format!("the engine failed: {e}"));
                for (id, r) in running.drain() {
                    batch.cancel(id);
                    end(&r.job, "error");
                    let _ = r.job.events.send(JobEvent::Failed(failure.clone()));
                }
                continue;
            }
        };
        let now = Instant::now();
        for ev in events {
            let Some(r) = running.get_mut(&ev.id) else {
                continue;
            };
            match r.first {
                None => {
                    r.first = Some(now);
                    m.time_to_first_token
                        .observe((now - r.job.received).as_secs_f64());
                }
                Some(_) => m.inter_token_latency.observe((now - r.last).as_secs_f64()),
            }
            r.last = now;
            r.generated += 1;
            m.generation_tokens.inc();
            let logprob = match (r.job.logprobs, &ev.logits) {
                (Some(k), Some(logits)) => Some(token_logprob(logits, ev.token, k)),
                _ => None,
            };
            let sent = r
                .job
                .events
                .send(JobEvent::Token(TokenOut {
                    token: ev.token,
                    text: ev.text,
                    logprob,
                }))
                .is_ok();
            if let Some(reason) = ev.finished {
                let finish_reason = match reason {
                    StopReason::Eos | StopReason::StopString | StopReason::Cancelled => {
                        FinishReason::Stop
                    }
                    StopReason::MaxTokens | StopReason::ContextLimit => FinishReason::Length,
                };
                let r = running.remove(&ev.id).expect("looked up above");
                m.e2e_latency.observe((now - r.job.received).as_secs_f64());
                // The metrics count the request as ended before its client hears so: a client
                // that reads /metrics right after its response sees its slot free.
                m.running.set(running.len() as i64);
                m.slots_used.set(batch.active() as i64);
                end(&r.job, finish_reason.as_str());
                let _ = r.job.events.send(JobEvent::Done(Done {
                    finish_reason,
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.generated,
                }));
            } else if !sent {
                let r = running.remove(&ev.id).expect("looked up above");
                batch.cancel(ev.id);
                end(&r.job, "cancelled");
            }
        }
        m.running.set(running.len() as i64);
        m.slots_used.set(batch.active() as i64);
    }
    m.running.set(0);
    m.waiting.set(0);
    m.slots_used.set(0);
}

/// Log-softmax of `logits` at `token`, and the `k` most likely tokens with theirs.
fn token_logprob(logits: &[f32], token: u32, k: usize) -> TokenLogprob {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    let log_z = max as f64 + sum.ln();
    let lp = |i: usize| (logits[i] as f64 - log_z) as f32;
    let mut order: Vec<usize> = (0..logits.len()).collect();
    let k = k.min(logits.len());
    if k > 0 {
        order.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
        order.truncate(k);
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    } else {
        order.clear();
    }
    TokenLogprob {
        logprob: lp(token as usize),
        top: order.into_iter().map(|i| (i as u32, lp(i))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logprobs_are_a_log_softmax() {
        // ln(e^1 / (e^1 + e^2 + e^3)) = 1 - ln(e + e^2 + e^3) = -2.40760596...
        let t = token_logprob(&[1.0, 2.0, 3.0], 0, 2);
        assert!((t.logprob - -2.407_606).abs() < 1e-5, "{}", t.logprob);
        assert_eq!(t.top.iter().map(|p| p.0).collect::<Vec<_>>(), vec![2, 1]);
        let total: f32 = [0, 1, 2]
            .iter()
            .map(|&i| token_logprob(&[1.0, 2.0, 3.0], i, 0).logprob.exp())
            .sum();
        assert!((total - 1.0).abs() < 1e-6);
    }
}
