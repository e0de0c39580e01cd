//! Graph builders: one decoder-only transformer graph per architecture and entry point.
//!
//! Every architecture is the same skeleton — embed, N × (attention block, MLP block), final norm,
//! output head — and differs in data ([`ModelConfig`]) and a handful of structural choices
//! (norm kind, fused projections, post-norms, learned positions) that are matched on [`Arch`]
//! below. Weight parameters carry their checkpoint names (GPT-2's without the optional
//! `transformer.` prefix).
//!
//! Graph interface (both entries):
//! - inputs `tokens` u32 `[1, t]`, `positions` i32 `[t]` (absolute positions, consecutive), and for
//!   the prefill entry `last_index` u32 `[1]` (which of the `t` rows to return logits for);
//! - state `kv.{layer}.k` / `kv.{layer}.v` `[1, cache_len, kv_heads, head_dim]`, written at
//!   `positions[0]`;
//! - symbol `kv_len` (the attended cache length, `positions[0] + t` on dynamic devices, a bucket
//!   size on static ones), and `t` (prefill only; fixed to 1 for decode);
//! - outputs `logits` f32 `[1, vocab]` and `next_token` u32 `[1]` (its argmax, so greedy decoding
//!   can read back one id instead of the logits).
//!
//! The pool entry ([`Entry::Pool`]) advances many sequences in one call, each in its own slot of
//! a KV pool, like llama.cpp's per-token sequence ids: inputs `tokens` u32 `[1, t]`,
//! `positions` i32 `[t]` and `slots` i32 `[t]` (token `i` belongs to the sequence in slot
//! `slots[i]` at position `positions[i]`: one prompt chunk is a run of one slot, a batched decode
//! step one token per slot, and a step may hold both), `rows` u32 `[r]` (the tokens whose logits
//! are wanted); state `kv.{layer}.{k,v}` `[slots, cache_len, kv_heads, head_dim]`, each token
//! written at its own slot and position; outputs `logits` `[r, vocab]` and `next_token` `[r]`.

use crate::config::{Activation, Arch, ModelConfig};
use crate::error::{ModelError, Result};
use switchyard_runtime::{
    AttentionAttrs, DType, Dim, Graph, GraphBuilder, HostTensor, NodeId, Result as RtResult,
    TensorSpec, UnaryOp,
};

/// Which entry point to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Many tokens at once (`t` symbolic up to `max_tokens`), logits of one chosen row.
    Prefill {
        /// Largest number of tokens per call.
        max_tokens: usize,
    },
    /// One token per call.
    Decode,
    /// Tokens of many sequences per call, each in its own slot of a KV pool.
    Pool {
        /// Largest number of tokens per call.
        max_tokens: usize,
        /// Slots in the pool (the state's first axis).
        slots: usize,
    },
}

/// How to build a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphOptions {
    /// The entry point.
    pub entry: Entry,
    /// Dtype of activations and (float) weights.
    pub compute: DType,
    /// Length of the KV cache (positions written; at least the positions a session may reach).
    pub cache_len: usize,
    /// Weights stored block-quantized, by name, with their type (matmul and gather operands
    /// only); every other weight is in `compute`.
    pub quantized: std::collections::BTreeMap<String, DType>,
}

/// Name of the KV-cache state of `layer` (`k` or `v`).
pub fn kv_state_name(layer: usize, which: char) -> String {
    format!("kv.{layer}.{which}")
}

struct Builder<'a> {
    b: GraphBuilder,
    cfg: &'a ModelConfig,
    dt: DType,
    t: Dim,
    quantized: &'a std::collections::BTreeMap<String, DType>,
    /// The pool entry: the `slots` input and the pool's number of slots.
    pool: Option<(NodeId, usize)>,
}

impl Builder<'_> {
    fn weight(&mut self, name: &str, dims: &[usize]) -> RtResult<NodeId> {
        let dtype = self.quantized.get(name).copied().unwrap_or(self.dt);
        self.b.weight(name, TensorSpec::new(dtype, dims))
    }

    /// `x · Wᵀ (+ b)` for a `[out, in]` weight, or `x · W (+ b)` for GPT-2's `Conv1D` `[in, out]`.
    fn linear(
        &mut self,
        x: NodeId,
        name: &str,
        out: usize,
        inp: usize,
        bias: bool,
    ) -> RtResult<NodeId> {
        let y = if self.cfg.conv1d {
            let w = self.weight(&format!("{name}.weight"), &[inp, out])?;
            self.b.matmul(x, w)?
        } else {
            let w = self.weight(&format!("{name}.weight"), &[out, inp])?;
            self.b.matmul_t(x, w)?
        };
        if bias {
            let bv = self.weight(&format!("{name}.bias"), &[out])?;
            return self.b.add(y, bv);
        }
        Ok(y)
    }

    fn norm(&mut self, x: NodeId, name: &str) -> RtResult<NodeId> {
        let h = self.cfg.hidden_size;
        let eps = self.cfg.norm_eps;
        let w = self.weight(&format!("{name}.weight"), &[h])?;
        match self.cfg.arch {
            Arch::Gpt2 => {
                let bias = self.weight(&format!("{name}.bias"), &[h])?;
                self.b.layer_norm(x, w, bias, eps)
            }
            a if a.is_gemma() => {
                // Gemma scales by (1 + w).
                let w1 = self.b.affine(w, 1.0, 1.0)?;
                self.b.rms_norm(x, w1, eps)
            }
            _ => self.b.rms_norm(x, w, eps),
        }
    }

    /// Gemma 3's per-head RMS norm of queries or keys (`[.., head_dim]`, weight `(1 + w)`).
    fn head_norm(&mut self, x: NodeId, name: &str) -> RtResult<NodeId> {
        let w = self.weight(&format!("{name}.weight"), &[self.cfg.head_dim])?;
        let w1 = self.b.affine(w, 1.0, 1.0)?;
        self.b.rms_norm(x, w1, self.cfg.norm_eps)
    }

    fn act(&mut self, x: NodeId) -> RtResult<NodeId> {
        let op = match self.cfg.activation {
            Activation::Silu => UnaryOp::Silu,
            Activation::GeluTanh => UnaryOp::GeluTanh,
            Activation::GeluErf => UnaryOp::GeluErf,
        };
        self.b.unary(op, x)
    }

    /// `[1, t, n·d]` to `[1, t, n, d]`.
    fn split_heads(&mut self, x: NodeId, n: usize) -> RtResult<NodeId> {
        let d = self.cfg.head_dim;
        self.b.reshape(
            x,
            vec![Dim::Fixed(1), self.t.clone(), Dim::Fixed(n), Dim::Fixed(d)],
        )
    }

    /// Swaps the sequence and head axes: `[1, t, n, d]` ⇄ `[1, n, t, d]`.
    fn swap_seq_heads(&mut self, x: NodeId) -> RtResult<NodeId> {
        self.b.transpose(x, &[0, 2, 1, 3])
    }

    fn layer_prefix(&self, i: usize) -> String {
        match self.cfg.arch {
            Arch::Gpt2 => format!("h.{i}"),
            _ => format!("model.layers.{i}"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn attention_block(
        &mut self,
        x: NodeId,
        i: usize,
        rope: Option<(NodeId, NodeId)>,
        positions: NodeId,
        write_pos: NodeId,
        cache_len: usize,
    ) -> RtResult<NodeId> {
        let c = self.cfg;
        let p = self.layer_prefix(i);
        let (hq, hkv, d, h) = (c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size);
        let (qn, kvn) = (hq * d, hkv * d);
        let ln = self.norm(
            x,
            &format!(
                "{p}.{}",
                if c.arch == Arch::Gpt2 {
                    "ln_1"
                } else {
                    "input_layernorm"
                }
            ),
        )?;
        let (q, k, v) = match c.arch {
            Arch::Phi3 | Arch::Gpt2 => {
                let (name, bias) = if c.arch == Arch::Phi3 {
                    (format!("{p}.self_attn.qkv_proj"), false)
                } else {
                    (format!("{p}.attn.c_attn"), true)
                };
                let qkv = self.linear(ln, &name, qn + 2 * kvn, h, bias)?;
                (
                    self.b.slice(qkv, 2, 0, qn)?,
                    self.b.slice(qkv, 2, qn, kvn)?,
                    self.b.slice(qkv, 2, qn + kvn, kvn)?,
                )
            }
            _ => (
                self.linear(ln, &format!("{p}.self_attn.q_proj"), qn, h, c.qkv_bias)?,
                self.linear(ln, &format!("{p}.self_attn.k_proj"), kvn, h, c.qkv_bias)?,
                self.linear(ln, &format!("{p}.self_attn.v_proj"), kvn, h, c.qkv_bias)?,
            ),
        };
        // Heads first for rotary embedding and attention; the cache stores positions first
        // (`[1, cache_len, kv_heads, head_dim]`), so one position's keys are contiguous and
        // attention kernels can read the cache in place.
        let mut q = self.split_heads(q, hq)?;
        let mut k = self.split_heads(k, hkv)?;
        if c.qk_norm {
            q = self.head_norm(q, &format!("{p}.self_attn.q_norm"))?;
            k = self.head_norm(k, &format!("{p}.self_attn.k_norm"))?;
        }
        let mut q = self.swap_seq_heads(q)?;
        let v = self.split_heads(v, hkv)?;
        if let Some((cos, sin)) = rope {
            q = self.b.rope(q, cos, sin, false)?;
            let kh = self.swap_seq_heads(k)?;
            let kh = self.b.rope(kh, cos, sin, false)?;
            k = self.swap_seq_heads(kh)?;
        }
        let slots = self.pool.map_or(1, |(_, n)| n);
        let cache_spec = TensorSpec::new(self.dt, [slots, cache_len, hkv, d]);
        let (kname, vname) = (kv_state_name(i, 'k'), kv_state_name(i, 'v'));
        let kc = self.b.state(&kname, cache_spec.clone())?;
        let vc = self.b.state(&vname, cache_spec)?;
        let (kw, vw) = match self.pool {
            Some((slot_ids, _)) => (
                self.b.kv_scatter(kc, k, slot_ids, positions)?,
                self.b.kv_scatter(vc, v, slot_ids, positions)?,
            ),
            None => (
                self.b.kv_write(kc, k, write_pos, 1)?,
                self.b.kv_write(vc, v, write_pos, 1)?,
            ),
        };
        self.b.update_state(&kname, kw)?;
        self.b.update_state(&vname, vw)?;
        let kv_len = Dim::sym("kv_len", cache_len);
        let ks = self.b.slice(kw, 1, 0, kv_len.clone())?;
        let vs = self.b.slice(vw, 1, 0, kv_len)?;
        let attrs = AttentionAttrs {
            scale: c.attn_scale,
            causal: true,
            window: c.layer_windows[i],
            softcap: c.attn_softcap,
        };
        let a = match self.pool {
            // The pool is read positions-first, in place, each query in its own slot.
            Some((slot_ids, _)) => self
                .b
                .slot_attention(q, ks, vs, positions, slot_ids, attrs)?,
            None => {
                let ks = self.swap_seq_heads(ks)?;
                let vs = self.swap_seq_heads(vs)?;
                self.b.attention(q, ks, vs, positions, attrs)?
            }
        };
        let a = self.b.transpose(a, &[0, 2, 1, 3])?;
        let a = self
            .b
            .reshape(a, vec![Dim::Fixed(1), self.t.clone(), Dim::Fixed(qn)])?;
        let o_name = if c.arch == Arch::Gpt2 {
            format!("{p}.attn.c_proj")
        } else {
            format!("{p}.self_attn.o_proj")
        };
        let mut o = self.linear(a, &o_name, h, qn, c.o_bias)?;
        if c.arch.has_post_norms() {
            o = self.norm(o, &format!("{p}.post_attention_layernorm"))?;
        }
        self.b.add(x, o)
    }

    fn mlp_block(&mut self, x: NodeId, i: usize) -> RtResult<NodeId> {
        let c = self.cfg;
        let p = self.layer_prefix(i);
        let (h, n) = (c.hidden_size, c.intermediate_size);
        let norm_name = match c.arch {
            Arch::Gpt2 => "ln_2",
            a if a.has_post_norms() => "pre_feedforward_layernorm",
            _ => "post_attention_layernorm",
        };
        let ln = self.norm(x, &format!("{p}.{norm_name}"))?;
        let mut m = match c.arch {
            Arch::Gpt2 => {
                let up = self.linear(ln, &format!("{p}.mlp.c_fc"), n, h, true)?;
                let up = self.act(up)?;
                self.linear(up, &format!("{p}.mlp.c_proj"), h, n, true)?
            }
            _ => {
                let (gate, up) = if c.arch == Arch::Phi3 {
                    let gu = self.linear(ln, &format!("{p}.mlp.gate_up_proj"), 2 * n, h, false)?;
                    (self.b.slice(gu, 2, 0, n)?, self.b.slice(gu, 2, n, n)?)
                } else {
                    (
                        self.linear(ln, &format!("{p}.mlp.gate_proj"), n, h, c.mlp_bias)?,
                        self.linear(ln, &format!("{p}.mlp.up_proj"), n, h, c.mlp_bias)?,
                    )
                };
                let g = self.act(gate)?;
                let gu = self.b.mul(g, up)?;
                self.linear(gu, &format!("{p}.mlp.down_proj"), h, n, c.mlp_bias)?
            }
        };
        if c.arch.has_post_norms() {
            m = self.norm(m, &format!("{p}.post_feedforward_layernorm"))?;
        }
        self.b.add(x, m)
    }
}

/// `cos` and `sin` `[t, rotary_dim / 2]` of `rope` at `positions`.
fn rope_tables(
    s: &mut Builder<'_>,
    rope: &crate::rope::Rope,
    positions: NodeId,
    t: &Dim,
    compute: DType,
) -> RtResult<(NodeId, NodeId)> {
    let inv = rope.inv_freq();
    let inv = s.b.constant(HostTensor::from_f32(&[1, inv.len()], &inv)?)?;
    let p = s.b.cast(positions, DType::F32)?;
    let p = s.b.reshape(p, vec![t.clone(), Dim::Fixed(1)])?;
    let angles = s.b.mul(p, inv)?;
    let mut cos = s.b.unary(UnaryOp::Cos, angles)?;
    let mut sin = s.b.unary(UnaryOp::Sin, angles)?;
    if compute != DType::F32 {
        cos = s.b.cast(cos, compute)?;
        sin = s.b.cast(sin, compute)?;
    }
    Ok((cos, sin))
}

/// Name of the token embedding weight.
pub fn embedding_name(arch: Arch) -> &'static str {
    match arch {
        Arch::Gpt2 => "wte.weight",
        _ => "model.embed_tokens.weight",
    }
}

/// The smallest graph declaring every weight the model's graphs read (the decode entry in f32
/// with a one-position cache and no quantized weights): what weight listings and checks walk.
pub fn weight_graph(cfg: &ModelConfig) -> Result<Graph> {
    build_graph(
        cfg,
        &GraphOptions {
            entry: Entry::Decode,
            compute: DType::F32,
            cache_len: 1,
            quantized: Default::default(),
        },
    )
}

/// Builds the graph of `entry` for `cfg`.
pub fn build_graph(cfg: &ModelConfig, opts: &GraphOptions) -> Result<Graph> {
    if opts.cache_len == 0 {
        return Err(ModelError::InvalidOption {
            option: "--max-context",
            message: "the KV cache needs at least one position".into(),
        });
    }
    if !opts.compute.is_float() {
        return Err(ModelError::InvalidOption {
            option: "--dtype",
            message: format!("{} is not a compute dtype (f32, f16 or bf16)", opts.compute),
        });
    }
    build(cfg, opts).map_err(ModelError::from)
}

fn build(cfg: &ModelConfig, opts: &GraphOptions) -> RtResult<Graph> {
    let (t, name) = match opts.entry {
        Entry::Prefill { max_tokens } => (Dim::sym("t", max_tokens.max(1)), "prefill"),
        Entry::Decode => (Dim::Fixed(1), "decode"),
        Entry::Pool { max_tokens, .. } => (Dim::sym("t", max_tokens.max(1)), "pool"),
    };
    let mut s = Builder {
        b: GraphBuilder::new(format!("{}.{name}", cfg.arch)),
        cfg,
        dt: opts.compute,
        t: t.clone(),
        quantized: &opts.quantized,
        pool: None,
    };
    let (h, v) = (cfg.hidden_size, cfg.vocab_size);
    let tokens = s.b.input(
        "tokens",
        TensorSpec::new(DType::U32, vec![Dim::Fixed(1), t.clone()]),
    )?;
    let positions =
        s.b.input("positions", TensorSpec::new(DType::I32, vec![t.clone()]))?;
    let last_index = match opts.entry {
        Entry::Prefill { .. } => Some(s.b.input("last_index", TensorSpec::new(DType::U32, [1]))?),
        Entry::Pool { max_tokens, slots } => {
            let ids =
                s.b.input("slots", TensorSpec::new(DType::I32, vec![t.clone()]))?;
            s.pool = Some((ids, slots));
            let r = Dim::sym("r", max_tokens.max(1));
            Some(s.b.input("rows", TensorSpec::new(DType::U32, vec![r]))?)
        }
        Entry::Decode => None,
    };
    let embed = s.weight(embedding_name(cfg.arch), &[v, h])?;
    let mut x = s.b.gather(embed, tokens)?;
    match cfg.arch {
        a if a.is_gemma() => x = s.b.affine(x, (h as f32).sqrt(), 0.0)?,
        Arch::Gpt2 => {
            let wpe = s.weight("wpe.weight", &[cfg.max_position_embeddings, h])?;
            let p = s.b.gather(wpe, positions)?;
            x = s.b.add(x, p)?;
        }
        _ => {}
    }
    // Rotary tables from the positions, in f32 like the reference implementation: one for the
    // global layers and, where it differs, one for the sliding-window layers.
    let rope = cfg
        .rope
        .as_ref()
        .map(|r| rope_tables(&mut s, r, positions, &t, opts.compute))
        .transpose()?;
    let rope_local = cfg
        .rope_local
        .as_ref()
        .map(|r| rope_tables(&mut s, r, positions, &t, opts.compute))
        .transpose()?;
    let write_pos = s.b.slice(positions, 0, 0, 1)?;
    for i in 0..cfg.num_layers {
        let tables = match (cfg.layer_windows[i], rope_local) {
            (Some(_), Some(local)) => Some(local),
            _ => rope,
        };
        x = s.attention_block(x, i, tables, positions, write_pos, opts.cache_len)?;
        x = s.mlp_block(x, i)?;
    }
    x = s.norm(
        x,
        if cfg.arch == Arch::Gpt2 {
            "ln_f"
        } else {
            "model.norm"
        },
    )?;
    let last = match last_index {
        Some(idx) => {
            let rows = s.b.reshape(x, vec![t, Dim::Fixed(h)])?;
            s.b.gather(rows, idx)?
        }
        None => s.b.reshape(x, [1, h])?,
    };
    let head = if cfg.tie_word_embeddings {
        embed
    } else {
        s.weight("lm_head.weight", &[v, h])?
    };
    let mut logits = s.b.matmul_t(last, head)?;
    if let Some(cap) = cfg.final_softcap {
        logits = s.b.softcap(logits, cap)?;
    }
    if opts.compute != DType::F32 {
        logits = s.b.cast(logits, DType::F32)?;
    }
    s.b.output("logits", logits)?;
    let next = s.b.argmax(logits)?;
    s.b.output("next_token", next)?;
    s.b.finish()
}
