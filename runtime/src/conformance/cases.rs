//! The conformance cases.

use super::random::CaseRng;
use super::{quantized_matmul_slack, Case, Tolerance};
use crate::dtype::DType;
use crate::graph::{AttentionAttrs, BinaryOp, CompareOp, GraphBuilder, NodeId, ReduceOp, UnaryOp};
use crate::shape::{Dim, Shape, SymbolBindings};
use crate::tensor::{HostTensor, TensorSpec};

/// Builds one case: a graph plus the seeded tensors bound to its parameters.
struct Cb {
    name: String,
    dtype: DType,
    b: GraphBuilder,
    rng: CaseRng,
    inputs: Vec<(String, HostTensor)>,
    state: Vec<(String, HostTensor)>,
    dims: SymbolBindings,
    tolerance: Tolerance,
    slack: Vec<(usize, Vec<f32>)>,
}

impl Cb {
    fn new(name: impl Into<String>, dtype: DType) -> Self {
        let name = name.into();
        Cb {
            rng: CaseRng::new(&name),
            b: GraphBuilder::new(name.clone()),
            name,
            dtype,
            inputs: Vec::new(),
            state: Vec::new(),
            dims: SymbolBindings::new(),
            tolerance: Tolerance::for_dtype(dtype),
            slack: Vec::new(),
        }
    }

    /// An input with a given (possibly symbolic) shape bound to `value`.
    fn input_value(&mut self, name: &str, shape: Shape, value: HostTensor) -> NodeId {
        let id = self
            .b
            .input(name, TensorSpec::new(value.dtype(), shape))
            .expect("valid case input");
        self.inputs.push((name.to_string(), value));
        id
    }

    /// A fixed-shape input of standard-normal values in the case dtype.
    fn randn(&mut self, name: &str, dims: &[usize]) -> NodeId {
        let v = self.rng.float_tensor(self.dtype, dims, 1.0);
        self.input_value(name, Shape::fixed(dims), v)
    }

    /// An input whose shape is symbolic where `shape` says so, bound to random values of `dims`.
    fn randn_sym(&mut self, name: &str, shape: Shape, dims: &[usize]) -> NodeId {
        let v = self.rng.float_tensor(self.dtype, dims, 1.0);
        self.input_value(name, shape, v)
    }

    /// A fixed-shape input from explicit values converted to `dtype`.
    fn values(&mut self, name: &str, dtype: DType, dims: &[usize], v: &[f32]) -> NodeId {
        let t = HostTensor::from_f32_as(dtype, dims, v).expect("valid values");
        self.input_value(name, Shape::fixed(dims), t)
    }

    /// A weight of standard-normal values times `scale`.
    fn weight(&mut self, name: &str, dims: &[usize], scale: f32) -> NodeId {
        let v = self.rng.float_tensor(self.dtype, dims, scale);
        let id = self.b.weight(name, v.spec()).expect("valid case weight");
        self.inputs.push((name.to_string(), v));
        id
    }

    /// A quantized `[rows, cols]` weight of random blocks, values within about ±2·scale.
    fn qweight(
        &mut self,
        name: &str,
        dtype: DType,
        rows: usize,
        cols: usize,
        scale: f32,
    ) -> NodeId {
        let v = self.rng.quantized(dtype, rows, cols, scale);
        let id = self
            .b
            .weight(name, v.spec())
            .expect("valid quantized weight");
        self.inputs.push((name.to_string(), v));
        id
    }

    /// A state tensor of random values.
    fn state(&mut self, name: &str, dims: &[usize]) -> NodeId {
        let v = self.rng.float_tensor(self.dtype, dims, 1.0);
        let id = self.b.state(name, v.spec()).expect("valid state");
        self.state.push((name.to_string(), v));
        id
    }

    fn dim(mut self, name: &str, v: usize) -> Self {
        self.dims.set(name, v);
        self
    }

    /// `x [m, k] · Wᵀ` for a quantized weight `w` `[n, k]`, output 0, with the per-element
    /// bound of [`quantized_matmul_slack`].
    fn qmatmul(mut self, x: Vec<f32>, m: usize, k: usize, w: HostTensor) -> Case {
        let (q, n) = (w.dtype(), w.dims()[0]);
        let dense = crate::quant::dequantize(q, w.as_bytes()).expect("whole blocks");
        let xt = HostTensor::from_f32(&[m, k], &x).expect("valid dims");
        let xi = self.input_value("x", Shape::fixed(&[m, k]), xt);
        let wi = self
            .b
            .weight("w", w.spec())
            .expect("valid quantized weight");
        self.inputs.push(("w".to_string(), w));
        let y = self.b.matmul_t(xi, wi).expect("valid matmul");
        self.slack = vec![(0, quantized_matmul_slack(q, &x, &dense, m, n, k))];
        self.tolerance = Tolerance::for_dtype(DType::F32);
        self.finish(&[y])
    }

    fn tolerance(mut self, t: Tolerance) -> Self {
        self.tolerance = t;
        self
    }

    fn finish(mut self, outputs: &[NodeId]) -> Case {
        for (i, o) in outputs.iter().enumerate() {
            self.b.output(&format!("out{i}"), *o).expect("valid output");
        }
        Case {
            graph: self
                .b
                .finish()
                .unwrap_or_else(|e| panic!("case {}: {e}", self.name)),
            name: self.name,
            dtype: self.dtype,
            inputs: self.inputs,
            state: self.state,
            dims: self.dims,
            tolerance: self.tolerance,
            slack: self.slack,
        }
    }
}

const FLOATS: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

fn t(dims: &[usize]) -> Shape {
    Shape::fixed(dims)
}

/// Every conformance case, in a fixed order.
pub fn all_cases() -> Vec<Case> {
    let mut cases = Vec::new();
    elementwise(&mut cases);
    normalization(&mut cases);
    shapes(&mut cases);
    lookups_and_matmuls(&mut cases);
    attention(&mut cases);
    pool(&mut cases);
    composites(&mut cases);
    cases
}

fn elementwise(cases: &mut Vec<Case>) {
    for dtype in FLOATS {
        for op in [
            BinaryOp::Add,
            BinaryOp::Sub,
            BinaryOp::Mul,
            BinaryOp::Div,
            BinaryOp::Maximum,
            BinaryOp::Minimum,
        ] {
            let mut c = Cb::new(format!("binary/{dtype}/{op:?}-broadcast"), dtype);
            let a = c.randn("a", &[3, 1, 5]);
            let b = if op == BinaryOp::Div {
                // Keep denominators away from zero.
                let v = c.rng.uniform(20, 0.5, 2.0);
                let s: Vec<f32> = v
                    .iter()
                    .enumerate()
                    .map(|(i, x)| if i % 2 == 0 { *x } else { -x })
                    .collect();
                c.values("b", dtype, &[4, 5], &s)
            } else {
                c.randn("b", &[4, 5])
            };
            let y = c.b.binary(op, a, b).unwrap();
            cases.push(c.finish(&[y]));
        }
        for op in [
            UnaryOp::Neg,
            UnaryOp::Abs,
            UnaryOp::Exp,
            UnaryOp::Log,
            UnaryOp::Sqrt,
            UnaryOp::Rsqrt,
            UnaryOp::Recip,
            UnaryOp::Sqr,
            UnaryOp::Tanh,
            UnaryOp::Sin,
            UnaryOp::Cos,
            UnaryOp::Sigmoid,
            UnaryOp::Silu,
            UnaryOp::Relu,
            UnaryOp::GeluErf,
            UnaryOp::GeluTanh,
        ] {
            let mut c = Cb::new(format!("unary/{dtype}/{op:?}"), dtype);
            let x = match op {
                UnaryOp::Log | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => {
                    let v = c.rng.uniform(7 * 13, 0.25, 4.0);
                    c.values("x", dtype, &[7, 13], &v)
                }
                _ => c.randn("x", &[7, 13]),
            };
            let y = c.b.unary(op, x).unwrap();
            cases.push(c.finish(&[y]));
        }
        let mut c = Cb::new(format!("affine/{dtype}"), dtype);
        let x = c.randn("x", &[5, 9]);
        let y = c.b.affine(x, -1.75, 0.5).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("softcap/{dtype}"), dtype);
        let v = c.rng.normal(4 * 11, 30.0);
        let x = c.values("x", dtype, &[4, 11], &v);
        let y = c.b.softcap(x, 30.0).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("where/{dtype}/broadcast"), dtype);
        let m = c
            .rng
            .ints(6, 0, 2)
            .iter()
            .map(|&v| v as f32)
            .collect::<Vec<_>>();
        let cond = c.values("cond", DType::U8, &[6, 1], &m);
        let a = c.randn("a", &[6, 7]);
        let b = c.randn("b", &[1, 7]);
        let y = c.b.select(cond, a, b).unwrap();
        cases.push(c.finish(&[y]));
    }
    for (dtype, lo, hi) in [(DType::F32, -3.0, 3.0), (DType::I32, -5.0, 5.0)] {
        for op in [
            CompareOp::Eq,
            CompareOp::Ne,
            CompareOp::Lt,
            CompareOp::Le,
            CompareOp::Gt,
            CompareOp::Ge,
        ] {
            let mut c = Cb::new(format!("compare/{dtype}/{op:?}"), dtype);
            // Small integers (stored in either dtype) so that equality actually occurs.
            let av: Vec<f32> = c
                .rng
                .ints(24, lo as i64, hi as i64)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let bv: Vec<f32> = c
                .rng
                .ints(6, lo as i64, hi as i64)
                .iter()
                .map(|&v| v as f32)
                .collect();
            let a = c.values("a", dtype, &[4, 6], &av);
            let b = c.values("b", dtype, &[6], &bv);
            let y = c.b.compare(op, a, b).unwrap();
            cases.push(c.finish(&[y]));
        }
    }
    for dtype in [DType::I32, DType::I64, DType::U32] {
        let mut c = Cb::new(format!("binary/{dtype}/add-mul"), dtype);
        let av: Vec<f32> = c.rng.ints(12, 0, 100).iter().map(|&v| v as f32).collect();
        let a = c.values("a", dtype, &[3, 4], &av);
        let b = c.values("b", dtype, &[4], &[1.0, 2.0, 3.0, 4.0]);
        let s = c.b.add(a, b).unwrap();
        let y = c.b.binary(BinaryOp::Mul, s, b).unwrap();
        let m = c.b.binary(BinaryOp::Maximum, y, a).unwrap();
        cases.push(c.finish(&[m]));
    }
}

fn normalization(cases: &mut Vec<Case>) {
    for dtype in FLOATS {
        for dims in [vec![3, 5, 64], vec![1, 1], vec![2, 33]] {
            let mut c = Cb::new(format!("rms_norm/{dtype}/{dims:?}"), dtype);
            let x = c.randn("x", &dims);
            let w = c.weight("w", &[*dims.last().unwrap()], 1.0);
            let y = c.b.rms_norm(x, w, 1e-5).unwrap();
            cases.push(c.finish(&[y]));
        }
        let mut c = Cb::new(format!("layer_norm/{dtype}/[2, 7, 33]"), dtype);
        let x = c.randn("x", &[2, 7, 33]);
        let w = c.weight("w", &[33], 1.0);
        let b = c.weight("b", &[33], 1.0);
        let y = c.b.layer_norm(x, w, b, 1e-5).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("softmax/{dtype}/[4, 37]"), dtype);
        let v = c.rng.normal(4 * 37, 3.0);
        let x = c.values("x", dtype, &[4, 37], &v);
        let y = c.b.softmax(x).unwrap();
        cases.push(c.finish(&[y]));

        // Large enough for kernels that split rows over threads, with masked (-inf) scores as
        // an encoder's padding leaves them.
        let mut c = Cb::new(format!("softmax/{dtype}/[3, 40, 600] masked"), dtype);
        let mut v = c.rng.normal(3 * 40 * 600, 3.0);
        v.iter_mut()
            .enumerate()
            .filter(|(i, _)| i % 600 >= 450)
            .for_each(|(_, x)| *x = f32::NEG_INFINITY);
        let x = c.values("x", dtype, &[3, 40, 600], &v);
        let y = c.b.softmax(x).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("unary/{dtype}/GeluErf [300, 257]"), dtype);
        let x = c.randn("x", &[300, 257]);
        let y = c.b.unary(UnaryOp::GeluErf, x).unwrap();
        cases.push(c.finish(&[y]));

        for (interleaved, d, r) in [
            (false, 16, 16),
            (true, 16, 16),
            (false, 10, 6),
            (true, 10, 4),
        ] {
            let style = if interleaved { "interleaved" } else { "halves" };
            let mut c = Cb::new(format!("rope/{dtype}/{style}/d{d}-r{r}"), dtype);
            let x = c.randn("x", &[2, 3, 5, d]);
            let angles = c.rng.uniform(5 * r / 2, -6.0, 6.0);
            let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
            let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
            let cs = c.values("cos", dtype, &[5, r / 2], &cos);
            let sn = c.values("sin", dtype, &[5, r / 2], &sin);
            let y = c.b.rope(x, cs, sn, interleaved).unwrap();
            cases.push(c.finish(&[y]));
        }
    }
    for (op, axis) in [(ReduceOp::Sum, 0), (ReduceOp::Max, 1), (ReduceOp::Mean, 2)] {
        let mut c = Cb::new(format!("reduce/f32/{op:?}-axis{axis}"), DType::F32);
        let x = c.randn("x", &[3, 4, 5]);
        let y = c.b.reduce(op, x, axis).unwrap();
        cases.push(c.finish(&[y]));
    }
    let mut c = Cb::new("argmax/f32/[3, 11]", DType::F32);
    let x = c.randn("x", &[3, 11]);
    let y = c.b.argmax(x).unwrap();
    cases.push(c.finish(&[y]));
}

fn shapes(cases: &mut Vec<Case>) {
    for dtype in FLOATS {
        let mut c = Cb::new(format!("reshape-transpose/{dtype}"), dtype);
        let x = c.randn("x", &[2, 3, 4]);
        let r = c.b.reshape(x, t(&[6, 4])).unwrap();
        let tr = c.b.transpose(r, &[1, 0]).unwrap();
        let x3 = c.b.transpose(x, &[2, 0, 1]).unwrap();
        let e = c.b.affine(x3, 2.0, 0.0).unwrap();
        cases.push(c.finish(&[tr, e]));

        let mut c = Cb::new(format!("slice-concat/{dtype}"), dtype);
        let a = c.randn("a", &[2, 3, 5]);
        let b = c.randn("b", &[2, 1, 5]);
        let d = c.randn("d", &[2, 4, 5]);
        let cat = c.b.concat(&[a, b, d], 1).unwrap();
        let s = c.b.slice(cat, 1, 2, 5).unwrap();
        let s2 = c.b.slice(cat, 2, 1, 3).unwrap();
        cases.push(c.finish(&[cat, s, s2]));
    }
    // A symbolic length, bound from an input shape and explicitly.
    let mut c = Cb::new("slice/f32/symbolic", DType::F32);
    let tsym = Dim::sym("t", 9);
    let x = c.randn_sym(
        "x",
        Shape(vec![Dim::Fixed(2), tsym.clone(), Dim::Fixed(3)]),
        &[2, 7, 3],
    );
    let s = c.b.slice(x, 1, 0, Dim::sym("n", 9)).unwrap();
    let r =
        c.b.reshape(
            s,
            Shape(vec![
                Dim::Fixed(2),
                Dim::sym("n", 9),
                Dim::Fixed(3),
                Dim::Fixed(1),
            ]),
        )
        .unwrap();
    cases.push(c.dim("n", 4).finish(&[r]));

    for (from, to) in [
        (DType::F32, DType::F16),
        (DType::F32, DType::BF16),
        (DType::F16, DType::F32),
        (DType::BF16, DType::F32),
        (DType::F32, DType::I32),
        (DType::I32, DType::F32),
        (DType::U32, DType::I64),
        (DType::I64, DType::U32),
    ] {
        let mut c = Cb::new(format!("cast/{from}-to-{to}"), from);
        let x = if from.is_float() {
            let v = c.rng.normal(15, 20.0);
            c.values("x", from, &[3, 5], &v)
        } else {
            let v: Vec<f32> = c.rng.ints(15, 0, 1000).iter().map(|&v| v as f32).collect();
            c.values("x", from, &[3, 5], &v)
        };
        let y = c.b.cast(x, to).unwrap();
        let c = c.tolerance(if to.is_float() {
            Tolerance::for_dtype(if from.is_float() && from != DType::F32 {
                from
            } else {
                to
            })
        } else {
            Tolerance::EXACT
        });
        cases.push(c.finish(&[y]));
    }
    for dtype in [DType::I32, DType::F32] {
        let mut c = Cb::new(format!("iota/{dtype}"), dtype);
        let x = c.randn_sym("x", Shape(vec![Dim::sym("n", 16)]), &[11]);
        let i = c.b.iota(Dim::sym("n", 16), dtype).unwrap();
        let out = if dtype.is_float() {
            c.b.add(x, i).unwrap()
        } else {
            i
        };
        cases.push(c.finish(&[out]));
    }
}

fn lookups_and_matmuls(cases: &mut Vec<Case>) {
    for (dtype, ids_dtype) in [
        (DType::F32, DType::U32),
        (DType::F16, DType::I32),
        (DType::BF16, DType::I64),
    ] {
        let mut c = Cb::new(format!("gather/{dtype}/{ids_dtype}-ids"), dtype);
        let table = c.weight("table", &[50, 16], 1.0);
        let ids: Vec<f32> = c.rng.ints(6, 0, 50).iter().map(|&v| v as f32).collect();
        let i = c.values("ids", ids_dtype, &[2, 3], &ids);
        let y = c.b.gather(table, i).unwrap();
        cases.push(c.finish(&[y]));
    }
    for q in [DType::Q8_0, DType::Q4K] {
        let mut c = Cb::new(format!("gather/{q}/table"), DType::F32);
        let table = c.qweight("table", q, 10, 256, 1.0);
        let ids: Vec<f32> = c.rng.ints(3, 0, 10).iter().map(|&v| v as f32).collect();
        let i = c.values("ids", DType::U32, &[3], &ids);
        let y = c.b.gather(table, i).unwrap();
        cases.push(c.finish(&[y]));
    }
    for dtype in FLOATS {
        let mut c = Cb::new(format!("matmul/{dtype}/plain"), dtype);
        let a = c.randn("a", &[2, 3, 5, 17]);
        let b = c.randn("b", &[17, 9]);
        let y = c.b.matmul(a, b).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("matmul/{dtype}/transposed-weight"), dtype);
        let a = c.randn_sym(
            "a",
            Shape(vec![Dim::Fixed(1), Dim::sym("t", 8), Dim::Fixed(24)]),
            &[1, 5, 24],
        );
        let w = c.weight("w", &[7, 24], 0.3);
        let y = c.b.matmul_t(a, w).unwrap();
        cases.push(c.finish(&[y]));

        let mut c = Cb::new(format!("matmul/{dtype}/batch-broadcast"), dtype);
        let a = c.randn("a", &[2, 1, 4, 8]);
        let b = c.randn("b", &[3, 8, 5]);
        let y = c.b.matmul(a, b).unwrap();
        cases.push(c.finish(&[y]));

        // Attention scores of token-major tensors viewed head-major (an encoder's q·kᵀ): both
        // operands have permuted batch axes.
        let mut c = Cb::new(format!("matmul/{dtype}/head-major-views"), dtype);
        let q = c.randn("q", &[2, 6, 3, 4]);
        let k = c.randn("k", &[2, 6, 3, 4]);
        let qh = c.b.transpose(q, &[0, 2, 1, 3]).unwrap();
        let kh = c.b.transpose(k, &[0, 2, 1, 3]).unwrap();
        let scores = c.b.matmul_t(qh, kh).unwrap();
        let ctx = c.b.matmul(scores, kh).unwrap();
        cases.push(c.finish(&[scores, ctx]));
    }
    let mut c = Cb::new("matmul/f32/one-element", DType::F32);
    let a = c.randn("a", &[1, 1]);
    let b = c.randn("b", &[1, 1]);
    let y = c.b.matmul(a, b).unwrap();
    cases.push(c.finish(&[y]));

    for q in QUANTIZED {
        // Random blocks (every code and sign pattern): three blocks per row for the 32-element
        // types (not a power of two), two super-blocks for the k-quants; odd row and token
        // counts; 19 rows so kernels that take rows eight at a time also run their remainder.
        let k = if q.block_len() == 32 { 96 } else { 512 };
        for m in [1usize, 3] {
            let mut c = Cb::new(format!("qmatmul/{q}/m{m}-k{k}-n19"), DType::F32);
            let x = c.rng.normal(m * k, 1.0);
            let w = c.rng.quantized(q, 19, k, 1.0);
            cases.push(c.qmatmul(x, m, k, w));
        }
        // Weights and activations like a trained checkpoint's (heavy tails, outlier rows and
        // columns, massive activation channels), quantized by the reference encoder: one decode
        // row and prompts of 13 and 70 rows (past the skinny kernels' rows and the 64 from
        // which q8_0 without VNNI takes the dequantized f32 product), 1536 deep; and a
        // large-vocabulary output head.
        for (label, m, n, k) in [
            ("decode", 1, 67, 1536),
            ("prompt", 13, 67, 1536),
            ("prompt", 70, 67, 1536),
            ("vocab", 1, 4099, 256),
        ] {
            let mut c = Cb::new(
                format!("qmatmul-real/{q}/{label}-m{m}-n{n}-k{k}"),
                DType::F32,
            );
            let values = c.rng.checkpoint_like(n, k, 0.02);
            let bytes = crate::quant::quantize(q, &values).expect("whole blocks");
            let w = HostTensor::new(q, &[n, k], bytes).expect("whole blocks");
            let x = c.rng.activations_with_outliers(m, k);
            cases.push(c.qmatmul(x, m, k, w));
        }
    }
}

const QUANTIZED: [DType; 10] = [
    DType::Q4_0,
    DType::Q4_1,
    DType::Q5_0,
    DType::Q5_1,
    DType::Q8_0,
    DType::Q2K,
    DType::Q3K,
    DType::Q4K,
    DType::Q5K,
    DType::Q6K,
];

struct AttnCase {
    label: &'static str,
    hq: usize,
    hkv: usize,
    d: usize,
    dv: usize,
    tq: usize,
    tk: usize,
    first_pos: usize,
    attrs: AttentionAttrs,
}

fn attention(cases: &mut Vec<Case>) {
    let causal = AttentionAttrs::causal(0.35);
    let list = [
        AttnCase {
            label: "gqa-prefill",
            hq: 6,
            hkv: 2,
            d: 8,
            dv: 8,
            tq: 5,
            tk: 5,
            first_pos: 0,
            attrs: causal,
        },
        AttnCase {
            label: "mqa-decode",
            hq: 4,
            hkv: 1,
            d: 16,
            dv: 16,
            tq: 1,
            tk: 9,
            first_pos: 8,
            attrs: causal,
        },
        AttnCase {
            label: "odd-head-dims",
            hq: 3,
            hkv: 3,
            d: 5,
            dv: 7,
            tq: 4,
            tk: 6,
            first_pos: 2,
            attrs: causal,
        },
        AttnCase {
            label: "sliding-window",
            hq: 4,
            hkv: 2,
            d: 8,
            dv: 8,
            tq: 7,
            tk: 7,
            first_pos: 0,
            attrs: AttentionAttrs {
                window: Some(3),
                ..causal
            },
        },
        AttnCase {
            label: "softcap",
            hq: 2,
            hkv: 1,
            d: 8,
            dv: 8,
            tq: 3,
            tk: 6,
            first_pos: 3,
            attrs: AttentionAttrs {
                softcap: Some(2.0),
                scale: 0.7,
                ..causal
            },
        },
        AttnCase {
            label: "softcap-decode-gqa",
            hq: 4,
            hkv: 2,
            d: 16,
            dv: 16,
            tq: 1,
            tk: 9,
            first_pos: 8,
            attrs: AttentionAttrs {
                softcap: Some(3.0),
                scale: 0.2,
                ..causal
            },
        },
        AttnCase {
            label: "non-causal",
            hq: 2,
            hkv: 2,
            d: 4,
            dv: 4,
            tq: 3,
            tk: 5,
            first_pos: 0,
            attrs: AttentionAttrs {
                causal: false,
                ..causal
            },
        },
    ];
    for a in list {
        for dtype in [DType::F32, DType::F16] {
            let mut c = Cb::new(format!("attention/{dtype}/{}", a.label), dtype);
            let q = c.randn("q", &[1, a.hq, a.tq, a.d]);
            let k = c.randn("k", &[1, a.hkv, a.tk, a.d]);
            let v = c.randn("v", &[1, a.hkv, a.tk, a.dv]);
            let pos: Vec<f32> = (0..a.tq).map(|i| (a.first_pos + i) as f32).collect();
            let p = c.values("q_pos", DType::I32, &[a.tq], &pos);
            let y = c.b.attention(q, k, v, p, a.attrs).unwrap();
            cases.push(c.finish(&[y]));
        }
    }
}

/// A KV pool: one step that scatters new keys and values of several sequences into their slots
/// and attends each query over its own slot — a prefill run of three tokens with two decode rows
/// (`mixed`), and a decode step of one token per slot (`decode`).
fn pool(cases: &mut Vec<Case>) {
    let steps: [(&str, &[f32], &[f32]); 2] = [
        (
            "mixed",
            &[1.0, 1.0, 1.0, 0.0, 2.0],
            &[2.0, 3.0, 4.0, 6.0, 0.0],
        ),
        ("decode", &[2.0, 0.0, 1.0], &[6.0, 3.0, 0.0]),
    ];
    for (step, rows_slot, rows_pos) in steps {
        pool_step(cases, step, rows_slot, rows_pos);
    }
}

fn pool_step(cases: &mut Vec<Case>, step: &str, rows_slot: &[f32], rows_pos: &[f32]) {
    let (slots, cap, hq, hkv, d) = (3, 8, 4, 2, 8);
    let t = rows_slot.len();
    let variants = [
        ("causal", AttentionAttrs::causal(0.35)),
        (
            "window-softcap",
            AttentionAttrs {
                window: Some(3),
                softcap: Some(2.0),
                ..AttentionAttrs::causal(0.5)
            },
        ),
    ];
    for (label, attrs) in variants {
        for dtype in [DType::F32, DType::F16] {
            let mut c = Cb::new(format!("pool/{dtype}/{step}-{label}"), dtype);
            let kc = c.state("k", &[slots, cap, hkv, d]);
            let vc = c.state("v", &[slots, cap, hkv, d]);
            let kn = c.randn("k_new", &[1, t, hkv, d]);
            let vn = c.randn("v_new", &[1, t, hkv, d]);
            let q = c.randn("q", &[1, hq, t, d]);
            let sl = c.values("slots", DType::I32, &[t], rows_slot);
            let ps = c.values("positions", DType::I32, &[t], rows_pos);
            let kw = c.b.kv_scatter(kc, kn, sl, ps).unwrap();
            let vw = c.b.kv_scatter(vc, vn, sl, ps).unwrap();
            c.b.update_state("k", kw).unwrap();
            c.b.update_state("v", vw).unwrap();
            let ks = c.b.slice(kw, 1, 0, Dim::sym("kv_len", cap)).unwrap();
            let vs = c.b.slice(vw, 1, 0, Dim::sym("kv_len", cap)).unwrap();
            let y = c.b.slot_attention(q, ks, vs, ps, sl, attrs).unwrap();
            cases.push(c.dim("kv_len", 7).finish(&[y]));
        }
    }
}

/// Rotary tables computed in the graph from integer positions, as the model graphs do.
fn rope_tables(c: &mut Cb, pos: NodeId, t: Dim, rot: usize, theta: f32) -> (NodeId, NodeId) {
    let half = rot / 2;
    let inv: Vec<f32> = (0..half)
        .map(|i| 1.0 / theta.powf(2.0 * i as f32 / rot as f32))
        .collect();
    let inv =
        c.b.constant(HostTensor::from_f32(&[1, half], &inv).unwrap())
            .unwrap();
    let p = c.b.cast(pos, DType::F32).unwrap();
    let p = c.b.reshape(p, Shape(vec![t, Dim::Fixed(1)])).unwrap();
    let ang = c.b.mul(p, inv).unwrap();
    let cos = c.b.unary(UnaryOp::Cos, ang).unwrap();
    let sin = c.b.unary(UnaryOp::Sin, ang).unwrap();
    let (cos, sin) = if c.dtype == DType::F32 {
        (cos, sin)
    } else {
        (
            c.b.cast(cos, c.dtype).unwrap(),
            c.b.cast(sin, c.dtype).unwrap(),
        )
    };
    (cos, sin)
}

struct LayerShape {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    ffn: usize,
    max_len: usize,
}

/// One pre-norm transformer layer with a KV cache: the shape of every decoder model's step.
/// `t` tokens at positions `start..start+t` are written into the cache and attend over
/// `kv_len = start + t` cached positions.
fn layer(
    c: &mut Cb,
    s: &LayerShape,
    t: usize,
    start: usize,
    weights: Option<DType>,
    window: Option<usize>,
) -> (NodeId, NodeId) {
    let tsym = Dim::sym("t", s.max_len);
    let kv = Dim::sym("kv_len", s.max_len);
    let x = c.randn_sym(
        "x",
        Shape(vec![Dim::Fixed(1), tsym.clone(), Dim::Fixed(s.hidden)]),
        &[1, t, s.hidden],
    );
    let pos: Vec<f32> = (start..start + t).map(|p| p as f32).collect();
    let pos = c.input_value(
        "pos",
        Shape(vec![tsym.clone()]),
        HostTensor::from_f32_as(DType::I32, &[t], &pos).unwrap(),
    );
    let start_t = c.values("start", DType::I32, &[1], &[start as f32]);
    let proj = |c: &mut Cb, name: &str, out: usize, inp: usize| match weights {
        // Keep activations O(1) so attention is not a hard argmax that amplifies rounding.
        Some(q) => c.qweight(name, q, out, inp, 1.0 / (inp as f32).sqrt()),
        None => c.weight(name, &[out, inp], 1.0 / (inp as f32).sqrt()),
    };
    let wq = proj(c, "wq", s.heads * s.head_dim, s.hidden);
    let wk = proj(c, "wk", s.kv_heads * s.head_dim, s.hidden);
    let wv = proj(c, "wv", s.kv_heads * s.head_dim, s.hidden);
    let wo = proj(c, "wo", s.hidden, s.heads * s.head_dim);
    let wg = proj(c, "wg", s.ffn, s.hidden);
    let wu = proj(c, "wu", s.ffn, s.hidden);
    let wd = proj(c, "wd", s.hidden, s.ffn);
    let n1 = c.weight("norm1", &[s.hidden], 1.0);
    let n2 = c.weight("norm2", &[s.hidden], 1.0);
    let kc = c.state("k_cache", &[1, s.kv_heads, s.max_len, s.head_dim]);
    let vc = c.state("v_cache", &[1, s.kv_heads, s.max_len, s.head_dim]);

    let h = c.b.rms_norm(x, n1, 1e-5).unwrap();
    let heads = |c: &mut Cb, y: NodeId, n: usize| {
        let r =
            c.b.reshape(
                y,
                Shape(vec![
                    Dim::Fixed(1),
                    tsym.clone(),
                    Dim::Fixed(n),
                    Dim::Fixed(s.head_dim),
                ]),
            )
            .unwrap();
        c.b.transpose(r, &[0, 2, 1, 3]).unwrap()
    };
    let q = c.b.matmul_t(h, wq).unwrap();
    let q = heads(c, q, s.heads);
    let k = c.b.matmul_t(h, wk).unwrap();
    let k = heads(c, k, s.kv_heads);
    let v = c.b.matmul_t(h, wv).unwrap();
    let v = heads(c, v, s.kv_heads);
    let (cos, sin) = rope_tables(c, pos, tsym.clone(), s.head_dim, 10000.0);
    let q = c.b.rope(q, cos, sin, false).unwrap();
    let k = c.b.rope(k, cos, sin, false).unwrap();
    let kw = c.b.kv_write(kc, k, start_t, 2).unwrap();
    let vw = c.b.kv_write(vc, v, start_t, 2).unwrap();
    c.b.update_state("k_cache", kw).unwrap();
    c.b.update_state("v_cache", vw).unwrap();
    let ks = c.b.slice(kw, 2, 0, kv.clone()).unwrap();
    let vs = c.b.slice(vw, 2, 0, kv).unwrap();
    let attrs = AttentionAttrs {
        window,
        ..AttentionAttrs::causal(1.0 / (s.head_dim as f32).sqrt())
    };
    let a = c.b.attention(q, ks, vs, pos, attrs).unwrap();
    let a = c.b.transpose(a, &[0, 2, 1, 3]).unwrap();
    let a =
        c.b.reshape(
            a,
            Shape(vec![
                Dim::Fixed(1),
                tsym.clone(),
                Dim::Fixed(s.heads * s.head_dim),
            ]),
        )
        .unwrap();
    let o = c.b.matmul_t(a, wo).unwrap();
    let x2 = c.b.add(x, o).unwrap();
    let h2 = c.b.rms_norm(x2, n2, 1e-5).unwrap();
    let g = c.b.matmul_t(h2, wg).unwrap();
    let g = c.b.silu(g).unwrap();
    let u = c.b.matmul_t(h2, wu).unwrap();
    let gu = c.b.mul(g, u).unwrap();
    let d = c.b.matmul_t(gu, wd).unwrap();
    let y = c.b.add(x2, d).unwrap();
    let last = c.b.slice(y, 1, 0, 1).unwrap();
    (y, last)
}

fn composites(cases: &mut Vec<Case>) {
    // Attention block: projections with GQA, in-graph rotary tables, sliding window, output
    // projection; no cache.
    for dtype in [DType::F32, DType::BF16] {
        let mut c = Cb::new(format!("block/{dtype}/attention-gqa-window"), dtype);
        let (hidden, heads, kvh, hd, t) = (48, 6, 2, 8, 9);
        let x = c.randn("x", &[1, t, hidden]);
        let pos: Vec<f32> = (0..t).map(|p| p as f32).collect();
        let p = c.values("pos", DType::I32, &[t], &pos);
        let wq = c.weight("wq", &[heads * hd, hidden], 0.3);
        let wk = c.weight("wk", &[kvh * hd, hidden], 0.3);
        let wv = c.weight("wv", &[kvh * hd, hidden], 0.3);
        let wo = c.weight("wo", &[hidden, heads * hd], 0.3);
        let split = |c: &mut Cb, y: NodeId, n: usize| {
            let r = c.b.reshape(y, t_fixed(&[1, t, n, hd])).unwrap();
            c.b.transpose(r, &[0, 2, 1, 3]).unwrap()
        };
        let q = c.b.matmul_t(x, wq).unwrap();
        let q = split(&mut c, q, heads);
        let k = c.b.matmul_t(x, wk).unwrap();
        let k = split(&mut c, k, kvh);
        let v = c.b.matmul_t(x, wv).unwrap();
        let v = split(&mut c, v, kvh);
        let (cos, sin) = rope_tables(&mut c, p, Dim::Fixed(t), hd, 10000.0);
        let q = c.b.rope(q, cos, sin, false).unwrap();
        let k = c.b.rope(k, cos, sin, false).unwrap();
        let attrs = AttentionAttrs {
            window: Some(4),
            ..AttentionAttrs::causal(1.0 / (hd as f32).sqrt())
        };
        let a = c.b.attention(q, k, v, p, attrs).unwrap();
        let a = c.b.transpose(a, &[0, 2, 1, 3]).unwrap();
        let a = c.b.reshape(a, t_fixed(&[1, t, heads * hd])).unwrap();
        let y = c.b.matmul_t(a, wo).unwrap();
        cases.push(c.finish(&[y]));
    }

    encoder_layer(cases);

    let s = LayerShape {
        hidden: 32,
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        ffn: 40,
        max_len: 16,
    };
    // KV write then attention over state: a prefill of 5 tokens into an empty cache, and a
    // decode step at position 9 over a cache that already holds 9 positions.
    for (label, t, start) in [("prefill", 5, 0), ("decode", 1, 9)] {
        let mut c = Cb::new(format!("layer/f32/{label}"), DType::F32);
        let (y, last) = layer(&mut c, &s, t, start, None, None);
        cases.push(c.dim("kv_len", start + t).finish(&[y, last]));
    }
    let mut c = Cb::new("layer/f16/decode-window", DType::F16);
    let (y, _) = layer(&mut c, &s, 1, 9, None, Some(4));
    cases.push(c.dim("kv_len", 10).finish(&[y]));
    let s64 = LayerShape {
        hidden: 64,
        heads: 4,
        kv_heads: 1,
        head_dim: 16,
        ffn: 96,
        max_len: 16,
    };
    for q in [DType::Q8_0, DType::Q4_0] {
        let mut c = Cb::new(format!("layer/{q}/prefill"), DType::F32);
        let (y, _) = layer(&mut c, &s64, 3, 2, Some(q), None);
        cases.push(
            c.dim("kv_len", 5)
                .tolerance(Tolerance::QUANTIZED_LAYER)
                .finish(&[y]),
        );
    }
}

/// A BERT layer over a batch of two texts, the second padded (its last keys masked to `-inf`):
/// linear layers with biases, a residual after each block, GELU, and attention of head-major
/// views with the key mask. Backends may run the chains inside as one (a product with its bias,
/// residual or GELU; scores, mask, softmax and values), so this checks them against the
/// reference with ragged shapes (14 rows, 3 heads of 8, an FFN of 40).
fn encoder_layer(cases: &mut Vec<Case>) {
    let mut c = Cb::new("layer/f32/encoder-padded-batch", DType::F32);
    let (batch, t, hidden, heads, hd, ffn) = (2, 7, 24, 3, 8, 40);
    let x = c.randn("x", &[batch, t, hidden]);
    let lengths = [7, 4];
    let mask: Vec<f32> = (0..batch * t)
        .map(|i| {
            if i % t < lengths[i / t] {
                0.0
            } else {
                f32::NEG_INFINITY
            }
        })
        .collect();
    let mask = c.values("mask", DType::F32, &[batch, 1, 1, t], &mask);
    let linear = |c: &mut Cb, x: NodeId, name: &str, out: usize, inp: usize| {
        let w = c.weight(&format!("{name}.w"), &[out, inp], 0.3);
        let b = c.weight(&format!("{name}.b"), &[out], 0.5);
        let y = c.b.matmul_t(x, w).unwrap();
        c.b.add(y, b).unwrap()
    };
    let layer_norm = |c: &mut Cb, x: NodeId, name: &str| {
        let w = c.weight(&format!("{name}.w"), &[hidden], 0.2);
        let b = c.weight(&format!("{name}.b"), &[hidden], 0.2);
        c.b.layer_norm(x, w, b, 1e-12).unwrap()
    };
    let heads_of = |c: &mut Cb, y: NodeId| {
        let r = c.b.reshape(y, t_fixed(&[batch, t, heads, hd])).unwrap();
        c.b.transpose(r, &[0, 2, 1, 3]).unwrap()
    };
    let q = linear(&mut c, x, "q", hidden, hidden);
    let q = c.b.affine(q, 1.0 / (hd as f32).sqrt(), 0.0).unwrap();
    let k = linear(&mut c, x, "k", hidden, hidden);
    let v = linear(&mut c, x, "v", hidden, hidden);
    let (q, k, v) = (
        heads_of(&mut c, q),
        heads_of(&mut c, k),
        heads_of(&mut c, v),
    );
    let scores = c.b.matmul_t(q, k).unwrap();
    let scores = c.b.add(scores, mask).unwrap();
    let probs = c.b.softmax(scores).unwrap();
    let ctx = c.b.matmul(probs, v).unwrap();
    let ctx = c.b.transpose(ctx, &[0, 2, 1, 3]).unwrap();
    let ctx = c.b.reshape(ctx, t_fixed(&[batch, t, hidden])).unwrap();
    let o = linear(&mut c, ctx, "o", hidden, hidden);
    let o = c.b.add(o, x).unwrap();
    let h = layer_norm(&mut c, o, "ln1");
    let up = linear(&mut c, h, "up", ffn, hidden);
    let up = c.b.unary(UnaryOp::GeluErf, up).unwrap();
    let down = linear(&mut c, up, "down", hidden, ffn);
    let y = c.b.add(down, h).unwrap();
    let y = layer_norm(&mut c, y, "ln2");
    cases.push(c.finish(&[y]));
}

fn t_fixed(dims: &[usize]) -> Shape {
    Shape::fixed(dims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::OP_NAMES;
    use std::collections::BTreeSet;

    #[test]
    fn cases_cover_every_op_and_have_unique_names() {
        let cases = all_cases();
        let names: BTreeSet<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        let ops: BTreeSet<&str> = cases.iter().flat_map(|c| c.ops()).collect();
        let missing: Vec<&&str> = OP_NAMES.iter().filter(|o| !ops.contains(*o)).collect();
        assert!(missing.is_empty(), "ops without a case: {missing:?}");
    }

    #[test]
    fn inputs_are_seeded_and_not_zero() {
        let a = all_cases();
        let b = all_cases();
        for (x, y) in a.iter().zip(&b) {
            for ((_, t1), (_, t2)) in x.inputs.iter().zip(&y.inputs) {
                assert_eq!(t1, t2, "{} is not reproducible", x.name);
            }
            for (n, t) in x.inputs.iter().chain(&x.state) {
                if t.dtype().is_float() {
                    assert!(
                        t.to_f32_vec().unwrap().iter().any(|v| *v != 0.0),
                        "{}: {n} is zero",
                        x.name
                    );
                }
            }
        }
    }

    #[test]
    fn reference_runs_every_case() {
        for c in all_cases() {
            let mut state = c.state.clone();
            let mut args = crate::ExecuteArgs::new()
                .inputs_from(c.inputs.iter().map(|(n, t)| (n.as_str(), t)))
                .states_from(state.iter_mut().map(|(n, t)| (n.as_str(), t)));
            for (n, v) in c.dims.iter() {
                args = args.dim(n, v);
            }
            let out =
                crate::interpret(&c.graph, args).unwrap_or_else(|e| panic!("{}: {e}", c.name));
            for o in out {
                let v = o.to_f32_vec().unwrap();
                assert!(
                    v.iter().all(|x| x.is_finite()),
                    "{}: non-finite output",
                    c.name
                );
            }
        }
    }
}
