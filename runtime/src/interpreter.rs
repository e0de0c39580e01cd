//! The reference interpreter: executes any [`Graph`] on host tensors.
//!
//! It is the oracle every backend is checked against, so it is written to be obviously correct
//! rather than fast: plain loops over row-major `Vec<f32>` / `Vec<i64>`, f32 accumulation, results
//! rounded to the node's dtype after every op (so f16/bf16 graphs see the same rounding points a
//! device does), and attention executed through its own decomposition.

use crate::device::{bind_args, ArgSource, ExecuteArgs};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::graph::{
    decompose_attention, decompose_slot_attention, AttentionAttrs, BinaryOp, CompareOp, Graph,
    GraphBuilder, Op, ReduceOp, UnaryOp,
};
use crate::shape::SymbolBindings;
use crate::tensor::{HostTensor, TensorSpec};
use half::{bf16, f16};

#[derive(Clone)]
enum Data {
    F(Vec<f32>),
    I(Vec<i64>),
    /// Quantized weights stay packed until an op dequantizes them.
    Q(HostTensor),
}

#[derive(Clone)]
struct Value {
    dtype: DType,
    dims: Vec<usize>,
    data: Data,
}

fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1usize; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

fn round(dtype: DType, v: f32) -> f32 {
    match dtype {
        DType::F16 => f16::from_f32(v).to_f32(),
        DType::BF16 => bf16::from_f32(v).to_f32(),
        _ => v,
    }
}

fn wrap(dtype: DType, v: i64) -> i64 {
    match dtype {
        DType::I32 => v as i32 as i64,
        DType::U32 => v as u32 as i64,
        DType::U8 => v as u8 as i64,
        _ => v,
    }
}

impl Value {
    fn from_host(t: &HostTensor) -> Result<Value> {
        let data = if t.dtype().is_float() {
            Data::F(t.to_f32_vec()?)
        } else if t.dtype().is_int() {
            Data::I(t.to_i64_vec()?)
        } else {
            Data::Q(t.clone())
        };
        Ok(Value {
            dtype: t.dtype(),
            dims: t.dims().to_vec(),
            data,
        })
    }

    fn to_host(&self) -> Result<HostTensor> {
        match &self.data {
            Data::F(v) => HostTensor::from_f32_as(self.dtype, &self.dims, v),
            Data::I(v) => HostTensor::from_i64_as(self.dtype, &self.dims, v),
            Data::Q(t) => Ok(t.clone()),
        }
    }

    fn floats(dtype: DType, dims: Vec<usize>, v: Vec<f32>) -> Value {
        let v = v.into_iter().map(|x| round(dtype, x)).collect();
        Value {
            dtype,
            dims,
            data: Data::F(v),
        }
    }

    fn ints(dtype: DType, dims: Vec<usize>, v: Vec<i64>) -> Value {
        let v = v.into_iter().map(|x| wrap(dtype, x)).collect();
        Value {
            dtype,
            dims,
            data: Data::I(v),
        }
    }

    /// Float values (dequantizing or widening integers as needed).
    fn f(&self) -> Result<std::borrow::Cow<'_, [f32]>> {
        Ok(match &self.data {
            Data::F(v) => std::borrow::Cow::Borrowed(v.as_slice()),
            Data::I(v) => std::borrow::Cow::Owned(v.iter().map(|&x| x as f32).collect()),
            Data::Q(t) => std::borrow::Cow::Owned(t.to_f32_vec()?),
        })
    }

    fn i(&self, op: &'static str) -> Result<&[i64]> {
        match &self.data {
            Data::I(v) => Ok(v),
            _ => Err(Error::exec(op, "expected integer values")),
        }
    }

    /// Same data with elements rearranged: `out[i] = self[map[i]]`.
    fn gathered(&self, dims: Vec<usize>, map: &[usize]) -> Value {
        let data = match &self.data {
            Data::F(v) => Data::F(map.iter().map(|&i| v[i]).collect()),
            Data::I(v) => Data::I(map.iter().map(|&i| v[i]).collect()),
            Data::Q(_) => unreachable!("quantized values are only read by matmul and gather"),
        };
        Value {
            dtype: self.dtype,
            dims,
            data,
        }
    }
}

/// For each element of a tensor of `out` dims, the flat index of the element of a tensor of `dims`
/// that broadcasting maps to it.
fn broadcast_map(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let offset = out.len() - dims.len();
    let in_strides = strides(dims);
    let out_strides = strides(out);
    (0..numel(out))
        .map(|flat| {
            let mut src = 0;
            for (k, &d) in dims.iter().enumerate() {
                let coord = flat / out_strides[k + offset] % out[k + offset];
                if d != 1 {
                    src += coord * in_strides[k];
                }
            }
            src
        })
        .collect()
}

fn erf_gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + libm::erff(x / std::f32::consts::SQRT_2))
}

fn tanh_gelu(x: f32) -> f32 {
    let c = (2.0f32 / std::f32::consts::PI).sqrt();
    0.5 * x * (1.0 + (c * (x + 0.044715 * x * x * x)).tanh())
}

fn unary(op: UnaryOp, x: f32) -> f32 {
    match op {
        UnaryOp::Neg => -x,
        UnaryOp::Abs => x.abs(),
        UnaryOp::Exp => x.exp(),
        UnaryOp::Log => x.ln(),
        UnaryOp::Sqrt => x.sqrt(),
        UnaryOp::Rsqrt => 1.0 / x.sqrt(),
        UnaryOp::Recip => 1.0 / x,
        UnaryOp::Sqr => x * x,
        UnaryOp::Tanh => x.tanh(),
        UnaryOp::Sin => x.sin(),
        UnaryOp::Cos => x.cos(),
        UnaryOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        UnaryOp::Silu => x / (1.0 + (-x).exp()),
        UnaryOp::Relu => x.max(0.0),
        UnaryOp::GeluErf => erf_gelu(x),
        UnaryOp::GeluTanh => tanh_gelu(x),
    }
}

/// Executes `graph` with named host tensors. Outputs come back in the graph's output order and
/// state tensors are replaced by their updated values, exactly as a device's `execute` does.
///
/// ```
/// use switchyard_runtime::{interpret, DType, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec};
/// let mut b = GraphBuilder::new("double");
/// let x = b.input("x", TensorSpec::new(DType::F32, [2])).unwrap();
/// let y = b.add(x, x).unwrap();
/// b.output("y", y).unwrap();
/// let g = b.finish().unwrap();
/// let x = HostTensor::from_f32(&[2], &[1.0, 2.5]).unwrap();
/// let out = interpret(&g, ExecuteArgs::new().input("x", &x)).unwrap();
/// assert_eq!(out[0].to_f32_vec().unwrap(), vec![2.0, 5.0]);
/// ```
pub fn interpret(graph: &Graph, mut args: ExecuteArgs<'_, HostTensor>) -> Result<Vec<HostTensor>> {
    let sig = graph.signature();
    let bound = bind_args(&sig, &args)?;
    let mut values: Vec<Option<Value>> = vec![None; graph.nodes().len()];
    for (pid, src) in graph.params().iter().zip(&bound.sources) {
        let host: &HostTensor = match *src {
            ArgSource::Input(i) => args.inputs()[i].1,
            ArgSource::State(i) => &*args.state_mut()[i].1,
        };
        values[pid.index()] = Some(Value::from_host(host)?);
    }
    let last = graph.last_uses();
    for (i, node) in graph.nodes().iter().enumerate() {
        if !matches!(node.op, Op::Parameter { .. }) {
            let operands: Vec<&Value> = node
                .inputs
                .iter()
                .map(|id| {
                    values[id.index()]
                        .as_ref()
                        .expect("operands precede their users")
                })
                .collect();
            let v = eval(&node.op, &node.spec, &operands, &bound.dims)?;
            values[i] = Some(v);
        }
        for id in &node.inputs {
            if last[id.index()] == i {
                values[id.index()] = None;
            }
        }
    }
    for (name, id) in graph.state_updates() {
        let v = values[id.index()]
            .as_ref()
            .expect("state updates stay alive");
        let slot = args
            .state_mut()
            .iter_mut()
            .find(|(n, _)| n == name)
            .expect("bind_args checked every state");
        *slot.1 = v.to_host()?;
    }
    graph
        .outputs()
        .iter()
        .map(|(_, id)| {
            values[id.index()]
                .as_ref()
                .expect("outputs stay alive")
                .to_host()
        })
        .collect()
}

fn eval(op: &Op, spec: &TensorSpec, x: &[&Value], dims: &SymbolBindings) -> Result<Value> {
    let name = op.name();
    let out_dims = spec.shape.resolve(dims)?;
    let dtype = spec.dtype;
    Ok(match op {
        Op::Parameter { .. } => unreachable!("parameters are bound, not evaluated"),
        Op::Constant { value } => Value::from_host(value)?,
        Op::Iota { .. } => {
            let n = out_dims[0];
            if dtype.is_float() {
                Value::floats(dtype, out_dims, (0..n).map(|i| i as f32).collect())
            } else {
                Value::ints(dtype, out_dims, (0..n as i64).collect())
            }
        }
        Op::Gather => {
            let (table, ids) = (x[0], x[1].i(name)?);
            let (rows, h) = (table.dims[0], table.dims[1]);
            let t = table.f()?;
            let mut out = Vec::with_capacity(ids.len() * h);
            for &id in ids {
                if id < 0 || id as usize >= rows {
                    return Err(Error::exec(
                        name,
                        format!("index {id} out of range for a table of {rows} rows"),
                    ));
                }
                let r = id as usize;
                out.extend_from_slice(&t[r * h..(r + 1) * h]);
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::MatMul { transpose_rhs } => matmul(x[0], x[1], *transpose_rhs, dtype, out_dims)?,
        Op::Binary(b) => {
            let map_a = broadcast_map(&x[0].dims, &out_dims);
            let map_b = broadcast_map(&x[1].dims, &out_dims);
            match (&x[0].data, &x[1].data) {
                (Data::F(a), Data::F(c)) => {
                    let f = |p: f32, q: f32| match b {
                        BinaryOp::Add => p + q,
                        BinaryOp::Sub => p - q,
                        BinaryOp::Mul => p * q,
                        BinaryOp::Div => p / q,
                        BinaryOp::Maximum => p.max(q),
                        BinaryOp::Minimum => p.min(q),
                    };
                    let v = map_a
                        .iter()
                        .zip(&map_b)
                        .map(|(&i, &j)| f(a[i], c[j]))
                        .collect();
                    Value::floats(dtype, out_dims, v)
                }
                (Data::I(a), Data::I(c)) => {
                    let mut v = Vec::with_capacity(map_a.len());
                    for (&i, &j) in map_a.iter().zip(&map_b) {
                        let (p, q) = (a[i], c[j]);
                        v.push(match b {
                            BinaryOp::Add => p.wrapping_add(q),
                            BinaryOp::Sub => p.wrapping_sub(q),
                            BinaryOp::Mul => p.wrapping_mul(q),
                            BinaryOp::Div if q == 0 => {
                                return Err(Error::exec(name, "integer division by zero"))
                            }
                            BinaryOp::Div => p / q,
                            BinaryOp::Maximum => p.max(q),
                            BinaryOp::Minimum => p.min(q),
                        });
                    }
                    Value::ints(dtype, out_dims, v)
                }
                _ => return Err(Error::exec(name, "operands of different kinds")),
            }
        }
        Op::Compare(c) => {
            let map_a = broadcast_map(&x[0].dims, &out_dims);
            let map_b = broadcast_map(&x[1].dims, &out_dims);
            let (a, b) = (x[0].f()?, x[1].f()?);
            // Integers compare exactly: use their i64 values when both are integers.
            let ints = match (&x[0].data, &x[1].data) {
                (Data::I(p), Data::I(q)) => Some((p, q)),
                _ => None,
            };
            let v = map_a
                .iter()
                .zip(&map_b)
                .map(|(&i, &j)| {
                    let ord = match ints {
                        Some((p, q)) => p[i].partial_cmp(&q[j]),
                        None => a[i].partial_cmp(&b[j]),
                    };
                    use std::cmp::Ordering::*;
                    let t = match c {
                        CompareOp::Eq => ord == Some(Equal),
                        CompareOp::Ne => ord != Some(Equal),
                        CompareOp::Lt => ord == Some(Less),
                        CompareOp::Le => matches!(ord, Some(Less | Equal)),
                        CompareOp::Gt => ord == Some(Greater),
                        CompareOp::Ge => matches!(ord, Some(Greater | Equal)),
                    };
                    t as i64
                })
                .collect();
            Value::ints(DType::U8, out_dims, v)
        }
        Op::Unary(u) => {
            let v = x[0].f()?.iter().map(|&a| unary(*u, a)).collect();
            Value::floats(dtype, out_dims, v)
        }
        Op::Affine { mul, add } => {
            let v = x[0].f()?.iter().map(|&a| a * mul + add).collect();
            Value::floats(dtype, out_dims, v)
        }
        Op::SoftCap { cap } => {
            let v = x[0].f()?.iter().map(|&a| cap * (a / cap).tanh()).collect();
            Value::floats(dtype, out_dims, v)
        }
        Op::RmsNorm { eps } => {
            let (xs, w) = (x[0].f()?, x[1].f()?);
            let h = w.len();
            let mut out = Vec::with_capacity(xs.len());
            for row in xs.chunks(h.max(1)) {
                let ms = row.iter().map(|a| a * a).sum::<f32>() / h as f32;
                let inv = 1.0 / (ms + eps).sqrt();
                out.extend(row.iter().zip(w.iter()).map(|(a, g)| a * inv * g));
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::LayerNorm { eps } => {
            let (xs, w, b) = (x[0].f()?, x[1].f()?, x[2].f()?);
            let h = w.len();
            let mut out = Vec::with_capacity(xs.len());
            for row in xs.chunks(h.max(1)) {
                let mean = row.iter().sum::<f32>() / h as f32;
                let var = row.iter().map(|a| (a - mean) * (a - mean)).sum::<f32>() / h as f32;
                let inv = 1.0 / (var + eps).sqrt();
                out.extend(
                    row.iter()
                        .zip(w.iter().zip(b.iter()))
                        .map(|(a, (g, c))| (a - mean) * inv * g + c),
                );
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::Rope { interleaved } => {
            let (xs, cos, sin) = (x[0].f()?, x[1].f()?, x[2].f()?);
            let (t, d) = (x[0].dims[2], x[0].dims[3]);
            let half = x[1].dims[1];
            let mut out = xs.to_vec();
            for (row_index, row) in out.chunks_mut(d).enumerate() {
                let pos = row_index % t;
                for i in 0..half {
                    let (c, s) = (cos[pos * half + i], sin[pos * half + i]);
                    let (a, b) = if *interleaved {
                        (2 * i, 2 * i + 1)
                    } else {
                        (i, i + half)
                    };
                    let (xa, xb) = (row[a], row[b]);
                    row[a] = xa * c - xb * s;
                    row[b] = xb * c + xa * s;
                }
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::Softmax => {
            let xs = x[0].f()?;
            let n = *out_dims.last().expect("rank >= 1");
            let mut out = Vec::with_capacity(xs.len());
            for row in xs.chunks(n.max(1)) {
                let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = row.iter().map(|a| (a - m).exp()).collect();
                let s: f32 = e.iter().sum();
                out.extend(e.iter().map(|a| a / s));
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::Reduce { op: r, axis } => {
            let xs = x[0].f()?;
            let d = &x[0].dims;
            let (outer, n, inner) = (numel(&d[..*axis]), d[*axis], numel(&d[*axis + 1..]));
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                for i in 0..inner {
                    let vals = (0..n).map(|k| xs[(o * n + k) * inner + i]);
                    out.push(match r {
                        ReduceOp::Sum => vals.sum(),
                        ReduceOp::Max => vals.fold(f32::NEG_INFINITY, f32::max),
                        ReduceOp::Mean => vals.sum::<f32>() / n as f32,
                    });
                }
            }
            Value::floats(dtype, out_dims, out)
        }
        Op::Reshape { .. } => {
            let mut v = x[0].clone();
            if numel(&out_dims) != numel(&v.dims) {
                return Err(Error::exec(
                    name,
                    format!("cannot reshape {:?} to {out_dims:?}", v.dims),
                ));
            }
            v.dims = out_dims;
            v
        }
        Op::Transpose { perm } => {
            let d = &x[0].dims;
            let s = strides(d);
            let os = strides(&out_dims);
            let map: Vec<usize> = (0..numel(&out_dims))
                .map(|flat| {
                    perm.iter()
                        .enumerate()
                        .map(|(k, &p)| (flat / os[k] % out_dims[k]) * s[p])
                        .sum()
                })
                .collect();
            x[0].gathered(out_dims, &map)
        }
        Op::Slice { axis, start, .. } => {
            let d = &x[0].dims;
            let len = out_dims[*axis];
            if start + len > d[*axis] {
                return Err(Error::exec(
                    name,
                    format!("{start}..{} exceeds axis {axis} of {d:?}", start + len),
                ));
            }
            let s = strides(d);
            let os = strides(&out_dims);
            let map: Vec<usize> = (0..numel(&out_dims))
                .map(|flat| {
                    (0..d.len())
                        .map(|k| {
                            let c = flat / os[k] % out_dims[k];
                            (if k == *axis { c + start } else { c }) * s[k]
                        })
                        .sum()
                })
                .collect();
            x[0].gathered(out_dims, &map)
        }
        Op::Concat { axis } => {
            let outer = numel(&out_dims[..*axis]);
            let inner = numel(&out_dims[*axis + 1..]);
            let mut f = Vec::new();
            let mut iv = Vec::new();
            for o in 0..outer {
                for v in x {
                    let chunk = v.dims[*axis] * inner;
                    match &v.data {
                        Data::F(a) => f.extend_from_slice(&a[o * chunk..(o + 1) * chunk]),
                        Data::I(a) => iv.extend_from_slice(&a[o * chunk..(o + 1) * chunk]),
                        Data::Q(_) => unreachable!("builder refuses quantized concat"),
                    }
                }
            }
            if dtype.is_float() {
                Value::floats(dtype, out_dims, f)
            } else {
                Value::ints(dtype, out_dims, iv)
            }
        }
        Op::Cast { .. } => match (&x[0].data, dtype.is_float()) {
            (Data::F(a), true) => Value::floats(dtype, out_dims, a.clone()),
            (Data::F(a), false) => {
                let v = a.iter().map(|&f| f.trunc() as i64).collect();
                Value::ints(dtype, out_dims, v)
            }
            (Data::I(a), true) => {
                Value::floats(dtype, out_dims, a.iter().map(|&i| i as f32).collect())
            }
            (Data::I(a), false) => Value::ints(dtype, out_dims, a.clone()),
            (Data::Q(_), _) => unreachable!("builder refuses quantized casts"),
        },
        Op::Where => {
            let mc = broadcast_map(&x[0].dims, &out_dims);
            let ma = broadcast_map(&x[1].dims, &out_dims);
            let mb = broadcast_map(&x[2].dims, &out_dims);
            let cond = x[0].i(name)?;
            match (&x[1].data, &x[2].data) {
                (Data::F(a), Data::F(b)) => {
                    let v = (0..mc.len())
                        .map(|k| if cond[mc[k]] != 0 { a[ma[k]] } else { b[mb[k]] })
                        .collect();
                    Value::floats(dtype, out_dims, v)
                }
                (Data::I(a), Data::I(b)) => {
                    let v = (0..mc.len())
                        .map(|k| if cond[mc[k]] != 0 { a[ma[k]] } else { b[mb[k]] })
                        .collect();
                    Value::ints(dtype, out_dims, v)
                }
                _ => return Err(Error::exec(name, "branches of different kinds")),
            }
        }
        Op::KvWrite { axis } => {
            let (cache, new) = (x[0], x[1]);
            let pos = x[2].i(name)?[0];
            let (n, cap) = (new.dims[*axis], cache.dims[*axis]);
            if pos < 0 || pos as usize + n > cap {
                return Err(Error::exec(
                    name,
                    format!(
                        "writing {n} entries at position {pos} overflows the cache length {cap}"
                    ),
                ));
            }
            let pos = pos as usize;
            let cs = strides(&cache.dims);
            let ns = strides(&new.dims);
            let dst: Vec<usize> = (0..numel(&new.dims))
                .map(|flat| {
                    (0..new.dims.len())
                        .map(|k| {
                            let c = flat / ns[k] % new.dims[k];
                            (if k == *axis { c + pos } else { c }) * cs[k]
                        })
                        .sum()
                })
                .collect();
            let mut out = cache.clone();
            match (&mut out.data, &new.data) {
                (Data::F(c), Data::F(v)) => dst.iter().zip(v).for_each(|(&i, &a)| c[i] = a),
                (Data::I(c), Data::I(v)) => dst.iter().zip(v).for_each(|(&i, &a)| c[i] = a),
                _ => return Err(Error::exec(name, "cache and update of different kinds")),
            }
            out
        }
        Op::KvScatter => {
            let (cache, new) = (x[0], x[1]);
            let (slots, pos) = (x[2].i(name)?, x[3].i(name)?);
            let (s, c) = (cache.dims[0], cache.dims[1]);
            let row: usize = cache.dims[2..].iter().product();
            let mut out = cache.clone();
            for t in 0..slots.len() {
                let (slot, p) = (slots[t], pos[t]);
                if slot < 0 || slot as usize >= s || p < 0 || p as usize >= c {
                    return Err(Error::exec(
                        name,
                        format!(
                            "row {t} writes slot {slot} position {p}, outside the pool of {s} slots × {c} positions"
                        ),
                    ));
                }
                let dst = (slot as usize * c + p as usize) * row;
                match (&mut out.data, &new.data) {
                    (Data::F(o), Data::F(n)) => {
                        o[dst..dst + row].copy_from_slice(&n[t * row..(t + 1) * row])
                    }
                    (Data::I(o), Data::I(n)) => {
                        o[dst..dst + row].copy_from_slice(&n[t * row..(t + 1) * row])
                    }
                    _ => return Err(Error::exec(name, "cache and update of different kinds")),
                }
            }
            out
        }
        Op::Argmax => {
            let xs = x[0].f()?;
            let n = *x[0].dims.last().expect("rank >= 1");
            let v = xs
                .chunks(n.max(1))
                .map(|row| {
                    let mut best = 0;
                    for (k, &a) in row.iter().enumerate() {
                        if a > row[best] {
                            best = k;
                        }
                    }
                    best as i64
                })
                .collect();
            Value::ints(DType::U32, out_dims, v)
        }
        Op::Attention(attrs) => attention(x, *attrs)?,
        Op::SlotAttention(attrs) => slot_attention(x, *attrs)?,
    })
}

fn matmul(
    a: &Value,
    b: &Value,
    transpose_rhs: bool,
    dtype: DType,
    out_dims: Vec<usize>,
) -> Result<Value> {
    let (ra, rb) = (a.dims.len(), b.dims.len());
    let (m, k) = (a.dims[ra - 2], a.dims[ra - 1]);
    let n = if transpose_rhs {
        b.dims[rb - 2]
    } else {
        b.dims[rb - 1]
    };
    let (av, bv) = (a.f()?, b.f()?);
    let batch = &out_dims[..out_dims.len() - 2];
    // Map each output batch to the batch offsets of a and b (broadcasting).
    let a_batch = broadcast_map(&a.dims[..ra - 2], batch);
    let b_batch = broadcast_map(&b.dims[..rb - 2], batch);
    let mut out = vec![0f32; numel(&out_dims)];
    for (bi, (&pa, &pb)) in a_batch.iter().zip(&b_batch).enumerate() {
        let a0 = pa * m * k;
        let b0 = pb * k * n;
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0f32;
                for p in 0..k {
                    let bval = if transpose_rhs {
                        bv[b0 + j * k + p]
                    } else {
                        bv[b0 + p * n + j]
                    };
                    acc += av[a0 + i * k + p] * bval;
                }
                out[bi * m * n + i * n + j] = acc;
            }
        }
    }
    Ok(Value::floats(dtype, out_dims, out))
}

fn attention(x: &[&Value], attrs: AttentionAttrs) -> Result<Value> {
    let spec = |v: &Value| TensorSpec::new(v.dtype, crate::Shape::fixed(&v.dims));
    let mut b = GraphBuilder::new("attention.decomposition");
    let q = b.input("q", spec(x[0]))?;
    let k = b.input("k", spec(x[1]))?;
    let v = b.input("v", spec(x[2]))?;
    let p = b.input("q_pos", spec(x[3]))?;
    let o = decompose_attention(&mut b, q, k, v, p, attrs)?;
    b.output("out", o)?;
    let g = b.finish()?;
    let hosts: Vec<HostTensor> = x.iter().map(|v| v.to_host()).collect::<Result<_>>()?;
    let args = ExecuteArgs::new()
        .input("q", &hosts[0])
        .input("k", &hosts[1])
        .input("v", &hosts[2])
        .input("q_pos", &hosts[3]);
    let out = interpret(&g, args)?;
    Value::from_host(&out[0])
}

fn slot_attention(x: &[&Value], attrs: AttentionAttrs) -> Result<Value> {
    let (slots, pool) = (x[4].i("slot_attention")?, x[1].dims[0]);
    if let Some(bad) = slots.iter().find(|&&s| s < 0 || s as usize >= pool) {
        return Err(Error::exec(
            "slot_attention",
            format!("slot {bad} is outside the pool of {pool} slots"),
        ));
    }
    let spec = |v: &Value| TensorSpec::new(v.dtype, crate::Shape::fixed(&v.dims));
    let mut b = GraphBuilder::new("slot_attention.decomposition");
    let names = ["q", "k", "v", "q_pos", "slots"];
    let ids = names
        .iter()
        .zip(x)
        .map(|(n, v)| b.input(n, spec(v)))
        .collect::<Result<Vec<_>>>()?;
    let o = decompose_slot_attention(&mut b, ids[0], ids[1], ids[2], ids[3], ids[4], attrs)?;
    b.output("out", o)?;
    let g = b.finish()?;
    let hosts: Vec<HostTensor> = x.iter().map(|v| v.to_host()).collect::<Result<_>>()?;
    let mut args = ExecuteArgs::new();
    for (n, h) in names.iter().zip(&hosts) {
        args = args.input(n, h);
    }
    let out = interpret(&g, args)?;
    Value::from_host(&out[0])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Dim, Shape};

    fn spec(dtype: DType, dims: &[usize]) -> TensorSpec {
        TensorSpec::new(dtype, Shape::fixed(dims))
    }

    #[test]
    fn matmul_transpose_and_broadcast() {
        let mut b = GraphBuilder::new("mm");
        let x = b.input("x", spec(DType::F32, &[2, 1, 3])).unwrap();
        let w = b.input("w", spec(DType::F32, &[2, 3])).unwrap();
        let y = b.matmul_t(x, w).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let xv = HostTensor::from_f32(&[2, 1, 3], &[1., 2., 3., 4., 5., 6.]).unwrap();
        let wv = HostTensor::from_f32(&[2, 3], &[1., 0., 0., 1., 1., 1.]).unwrap();
        let out = interpret(&g, ExecuteArgs::new().input("x", &xv).input("w", &wv)).unwrap();
        assert_eq!(out[0].dims(), &[2, 1, 2]);
        assert_eq!(out[0].to_f32_vec().unwrap(), vec![1., 6., 4., 15.]);
    }

    #[test]
    fn kv_write_updates_state_and_checks_bounds() {
        let mut b = GraphBuilder::new("kv");
        let c = b.state("c", spec(DType::F32, &[1, 4, 2])).unwrap();
        let n = b
            .input(
                "n",
                TensorSpec::new(
                    DType::F32,
                    vec![Dim::Fixed(1), Dim::sym("t", 4), Dim::Fixed(2)],
                ),
            )
            .unwrap();
        let p = b.input("p", spec(DType::I32, &[1])).unwrap();
        let w = b.kv_write(c, n, p, 1).unwrap();
        b.update_state("c", w).unwrap();
        let s = b.slice(w, 1, 0, Dim::sym("kv", 4)).unwrap();
        b.output("seen", s).unwrap();
        let g = b.finish().unwrap();
        let mut cache = HostTensor::zeros(DType::F32, &[1, 4, 2]).unwrap();
        let new = HostTensor::from_f32(&[1, 2, 2], &[1., 2., 3., 4.]).unwrap();
        let pos = HostTensor::from_i32(&[1], &[1]).unwrap();
        let out = interpret(
            &g,
            ExecuteArgs::new()
                .input("n", &new)
                .input("p", &pos)
                .state("c", &mut cache)
                .dim("kv", 3),
        )
        .unwrap();
        assert_eq!(out[0].to_f32_vec().unwrap(), vec![0., 0., 1., 2., 3., 4.]);
        assert_eq!(
            cache.to_f32_vec().unwrap(),
            vec![0., 0., 1., 2., 3., 4., 0., 0.]
        );
        let pos = HostTensor::from_i32(&[1], &[3]).unwrap();
        let err = interpret(
            &g,
            ExecuteArgs::new()
                .input("n", &new)
                .input("p", &pos)
                .state("c", &mut cache)
                .dim("kv", 3),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("overflows the cache length 4"),
            "{err}"
        );
    }

    #[test]
    fn attention_matches_a_hand_computation() {
        // One query head, two keys; causal with the query at position 1 sees both keys.
        let mut b = GraphBuilder::new("att");
        let q = b.input("q", spec(DType::F32, &[1, 1, 1, 2])).unwrap();
        let k = b.input("k", spec(DType::F32, &[1, 1, 2, 2])).unwrap();
        let v = b.input("v", spec(DType::F32, &[1, 1, 2, 1])).unwrap();
        let p = b.input("p", spec(DType::I32, &[1])).unwrap();
        let o = b
            .attention(q, k, v, p, AttentionAttrs::causal(1.0))
            .unwrap();
        b.output("o", o).unwrap();
        let g = b.finish().unwrap();
        let qv = HostTensor::from_f32(&[1, 1, 1, 2], &[1., 0.]).unwrap();
        let kv = HostTensor::from_f32(&[1, 1, 2, 2], &[0., 0., 1., 0.]).unwrap();
        let vv = HostTensor::from_f32(&[1, 1, 2, 1], &[0., 1.]).unwrap();
        let run = |pos: i32| {
            let pv = HostTensor::from_i32(&[1], &[pos]).unwrap();
            let args = ExecuteArgs::new()
                .input("q", &qv)
                .input("k", &kv)
                .input("v", &vv)
                .input("p", &pv);
            interpret(&g, args).unwrap()[0].to_f32_vec().unwrap()[0]
        };
        // scores [0, 1] -> softmax weights [1/(1+e), e/(1+e)] -> output e/(1+e).
        let e = std::f32::consts::E;
        assert!((run(1) - e / (1.0 + e)).abs() < 1e-6);
        // At position 0 only the first key is visible.
        assert_eq!(run(0), 0.0);
    }

    #[test]
    fn f16_results_are_rounded() {
        let mut b = GraphBuilder::new("r");
        let x = b.input("x", spec(DType::F16, &[1])).unwrap();
        let y = b.affine(x, 1.0, 1e-4).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let xv = HostTensor::from_f32_as(DType::F16, &[1], &[1.0]).unwrap();
        let out = interpret(&g, ExecuteArgs::new().input("x", &xv)).unwrap();
        // 1 + 1e-4 is not representable in f16: it rounds back to 1.
        assert_eq!(out[0].to_f32_vec().unwrap(), vec![1.0]);
    }

    #[test]
    fn gather_rejects_out_of_range_ids() {
        let mut b = GraphBuilder::new("g");
        let t = b.weight("t", spec(DType::F32, &[2, 3])).unwrap();
        let i = b.input("i", spec(DType::U32, &[1])).unwrap();
        let y = b.gather(t, i).unwrap();
        b.output("y", y).unwrap();
        let g = b.finish().unwrap();
        let tv = HostTensor::zeros(DType::F32, &[2, 3]).unwrap();
        let iv = HostTensor::from_u32(&[1], &[2]).unwrap();
        let err = interpret(&g, ExecuteArgs::new().input("t", &tv).input("i", &iv)).unwrap_err();
        assert!(err.to_string().contains("index 2 out of range"), "{err}");
    }
}
