//! Lowering of a Switchyard graph to an XLA HLO module, op by op.
//!
//! Conventions (those of a NEFF compiled from it): entry parameter `i` is the graph's parameter
//! `i` in signature order (NEFF input `input{i}`), the root is a tuple of the graph's outputs
//! followed by its state updates (NEFF outputs `output{j}`), and each state update aliases its
//! parameter (`input_output_alias`) so the KV cache is updated in place.
//!
//! Ops that take several HLO instructions in a 16-bit dtype (norms, softmax, rope, activations)
//! compute in f32 and round once at the end, as the reference interpreter does; single
//! instructions and matmuls run in the graph's dtype.
//!
//! Where HLO and the reference interpreter define edge cases differently, HLO's definition holds
//! on the device: out-of-range gather ids and KV writes past the cache end are clamped rather
//! than reported, and integer division by zero does not fail.

use super::proto::*;
use std::collections::HashMap;
use switchyard_runtime::{
    graph::{decompose_attention, decompose_slot_attention},
    BinaryOp, CompareOp, DType, Error, Graph, GraphBuilder, HostTensor, Node, Op, ParamKind,
    ReduceOp, Result, Shape, TensorSpec, UnaryOp,
};

/// A value of the computation being built: an instruction's id, element type and dimensions.
#[derive(Clone, Debug)]
struct Val {
    id: i64,
    ty: PrimitiveType,
    dims: Vec<i64>,
}

/// The reducers a `reduce` calls.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Reducer {
    Add,
    Max,
    /// (value, index) pairs: the larger value, the smaller index on ties.
    ArgMax,
}

/// An array shape in row-major layout.
fn array_shape(ty: PrimitiveType, dims: &[i64]) -> ShapeProto {
    ShapeProto {
        element_type: ty as i32,
        dimensions: dims.to_vec(),
        tuple_shapes: vec![],
        layout: Some(LayoutProto {
            minor_to_major: (0..dims.len() as i64).rev().collect(),
        }),
    }
}

fn tuple_shape(elements: Vec<ShapeProto>) -> ShapeProto {
    ShapeProto {
        element_type: PrimitiveType::Tuple as i32,
        dimensions: vec![],
        tuple_shapes: elements,
        layout: None,
    }
}

/// The HLO element type of a plain dtype; block-quantized types have none.
pub(crate) fn primitive(dtype: DType) -> Option<PrimitiveType> {
    Some(match dtype {
        DType::F32 => PrimitiveType::F32,
        DType::F16 => PrimitiveType::F16,
        DType::BF16 => PrimitiveType::Bf16,
        DType::I32 => PrimitiveType::S32,
        DType::I64 => PrimitiveType::S64,
        DType::U32 => PrimitiveType::U32,
        DType::U8 => PrimitiveType::U8,
        _ => return None,
    })
}

fn export_error(message: String) -> Error {
    Error::graph("hlo export", message)
}

/// Builds one module: computations are finished onto `done`, the one being built is on top of
/// `open`.
struct Lowering {
    next_id: i64,
    done: Vec<HloComputationProto>,
    open: Vec<Vec<HloInstructionProto>>,
    reducers: HashMap<(Reducer, PrimitiveType), i64>,
}

impl Lowering {
    fn emit(
        &mut self,
        opcode: &str,
        shape: ShapeProto,
        operands: &[&Val],
        fill: impl FnOnce(&mut HloInstructionProto),
    ) -> i64 {
        self.next_id += 1;
        let id = self.next_id;
        let mut inst = HloInstructionProto {
            name: format!("{}.{id}", opcode.replace('-', "_")),
            opcode: opcode.to_string(),
            shape: Some(shape),
            id,
            operand_ids: operands.iter().map(|v| v.id).collect(),
            ..Default::default()
        };
        fill(&mut inst);
        self.open
            .last_mut()
            .expect("a computation is open")
            .push(inst);
        id
    }

    fn array(
        &mut self,
        opcode: &str,
        ty: PrimitiveType,
        dims: &[i64],
        operands: &[&Val],
        fill: impl FnOnce(&mut HloInstructionProto),
    ) -> Val {
        let id = self.emit(opcode, array_shape(ty, dims), operands, fill);
        Val {
            id,
            ty,
            dims: dims.to_vec(),
        }
    }

    /// Closes the open computation with `root` as its root.
    fn close(
        &mut self,
        name: String,
        root: i64,
        params: Vec<ShapeProto>,
        result: ShapeProto,
    ) -> i64 {
        let instructions = self.open.pop().expect("a computation is open");
        self.next_id += 1;
        let id = self.next_id;
        self.done.push(HloComputationProto {
            name,
            instructions,
            program_shape: Some(ProgramShapeProto {
                parameter_names: (0..params.len()).map(|i| format!("p{i}")).collect(),
                parameters: params,
                result: Some(result),
            }),
            id,
            root_id: root,
        });
        id
    }

    fn parameter(&mut self, number: usize, ty: PrimitiveType, dims: &[i64]) -> Val {
        self.array("parameter", ty, dims, &[], |i| {
            i.parameter_number = number as i64;
            i.name = format!("p{number}.{}", i.id);
        })
    }

    fn scalar(&mut self, ty: PrimitiveType, v: f64) -> Val {
        let mut lit = LiteralProto {
            shape: Some(array_shape(ty, &[])),
            ..Default::default()
        };
        match ty {
            PrimitiveType::F32 => lit.f32s = vec![v as f32],
            PrimitiveType::F16 => lit.f16s = half::f16::from_f64(v).to_le_bytes().to_vec(),
            PrimitiveType::Bf16 => lit.bf16s = half::bf16::from_f64(v).to_le_bytes().to_vec(),
            PrimitiveType::S32 => lit.s32s = vec![v as i32],
            PrimitiveType::S64 => lit.s64s = vec![v as i64],
            PrimitiveType::U32 => lit.u32s = vec![v as u32],
            PrimitiveType::U8 => lit.u8s = vec![v as u8],
            PrimitiveType::Pred => lit.preds = vec![v != 0.0],
            other => unreachable!("no scalar constants of {other:?} are made"),
        }
        self.array("constant", ty, &[], &[], |i| i.literal = Some(lit))
    }

    fn constant(&mut self, t: &HostTensor) -> Result<Val> {
        let ty = primitive(t.dtype()).ok_or_else(|| {
            export_error(format!("a {} constant has no HLO element type", t.dtype()))
        })?;
        let dims: Vec<i64> = t.dims().iter().map(|&d| d as i64).collect();
        let mut lit = LiteralProto {
            shape: Some(array_shape(ty, &dims)),
            ..Default::default()
        };
        let bytes = t.as_bytes();
        match ty {
            PrimitiveType::F32 => lit.f32s = t.to_f32_vec()?,
            PrimitiveType::F16 => lit.f16s = bytes.to_vec(),
            PrimitiveType::Bf16 => lit.bf16s = bytes.to_vec(),
            PrimitiveType::S32 => lit.s32s = t.to_i64_vec()?.iter().map(|&x| x as i32).collect(),
            PrimitiveType::S64 => lit.s64s = t.to_i64_vec()?,
            PrimitiveType::U32 => lit.u32s = t.to_i64_vec()?.iter().map(|&x| x as u32).collect(),
            PrimitiveType::U8 => lit.u8s = bytes.to_vec(),
            other => unreachable!("primitive() gives no {other:?}"),
        }
        Ok(self.array("constant", ty, &dims, &[], |i| i.literal = Some(lit)))
    }

    fn convert(&mut self, v: &Val, ty: PrimitiveType) -> Val {
        if v.ty == ty {
            return v.clone();
        }
        self.array("convert", ty, &v.dims.clone(), &[v], |_| {})
    }

    fn reshape(&mut self, v: &Val, dims: &[i64]) -> Val {
        if v.dims == dims {
            return v.clone();
        }
        self.array("reshape", v.ty, dims, &[v], |_| {})
    }

    /// `broadcast`: operand dimension `k` becomes output dimension `map[k]`.
    fn broadcast_in_dim(&mut self, v: &Val, dims: &[i64], map: &[i64]) -> Val {
        if v.dims == dims {
            return v.clone();
        }
        self.array("broadcast", v.ty, dims, &[v], |i| {
            i.dimensions = map.to_vec()
        })
    }

    /// NumPy-style broadcasting of `v` to `dims` (trailing alignment, size-1 dimensions stretch).
    fn broadcast_to(&mut self, v: &Val, dims: &[i64]) -> Val {
        if v.dims == dims {
            return v.clone();
        }
        let offset = dims.len() - v.dims.len();
        let kept: Vec<usize> = (0..v.dims.len())
            .filter(|&k| v.dims[k] == dims[k + offset])
            .collect();
        let squeezed: Vec<i64> = kept.iter().map(|&k| v.dims[k]).collect();
        let v = self.reshape(v, &squeezed);
        let map: Vec<i64> = kept.iter().map(|&k| (k + offset) as i64).collect();
        self.broadcast_in_dim(&v, dims, &map)
    }

    /// Elementwise binary op on operands of the same dimensions.
    fn binary(&mut self, opcode: &str, a: &Val, b: &Val) -> Val {
        debug_assert_eq!(a.dims, b.dims);
        self.array(opcode, a.ty, &a.dims.clone(), &[a, b], |_| {})
    }

    /// `a op c` for a scalar `c` broadcast to `a`.
    fn with_scalar(&mut self, opcode: &str, a: &Val, c: f64) -> Val {
        let s = self.scalar(a.ty, c);
        let s = self.broadcast_in_dim(&s, &a.dims.clone(), &[]);
        self.binary(opcode, a, &s)
    }

    fn unary(&mut self, opcode: &str, a: &Val) -> Val {
        self.array(opcode, a.ty, &a.dims.clone(), &[a], |_| {})
    }

    fn compare(&mut self, direction: &str, a: &Val, b: &Val) -> Val {
        let kind = if a.ty.is_float() {
            "FLOAT"
        } else if a.ty.is_unsigned() {
            "UNSIGNED"
        } else {
            "SIGNED"
        };
        self.array(
            "compare",
            PrimitiveType::Pred,
            &a.dims.clone(),
            &[a, b],
            |i| {
                i.comparison_direction = direction.into();
                i.comparison_type = kind.into();
            },
        )
    }

    fn select(&mut self, p: &Val, a: &Val, b: &Val) -> Val {
        self.array("select", a.ty, &a.dims.clone(), &[p, a, b], |_| {})
    }

    fn slice(&mut self, v: &Val, axis: usize, start: i64, len: i64) -> Val {
        let mut dims = v.dims.clone();
        dims[axis] = len;
        let ranges = v
            .dims
            .iter()
            .enumerate()
            .map(|(k, &d)| SliceDimensions {
                start: if k == axis { start } else { 0 },
                limit: if k == axis { start + len } else { d },
                stride: 1,
            })
            .collect();
        self.array("slice", v.ty, &dims, &[v], |i| i.slice_dimensions = ranges)
    }

    fn concat(&mut self, parts: &[Val], axis: usize) -> Val {
        if parts.len() == 1 {
            return parts[0].clone();
        }
        let mut dims = parts[0].dims.clone();
        dims[axis] = parts.iter().map(|p| p.dims[axis]).sum();
        let refs: Vec<&Val> = parts.iter().collect();
        self.array("concatenate", parts[0].ty, &dims, &refs, |i| {
            i.dimensions = vec![axis as i64]
        })
    }

    /// The computation a `reduce` with `kind` over `ty` calls (made once per module).
    fn reducer(&mut self, kind: Reducer, ty: PrimitiveType) -> i64 {
        if let Some(&id) = self.reducers.get(&(kind, ty)) {
            return id;
        }
        self.open.push(Vec::new());
        let (root, params, result) = match kind {
            Reducer::Add | Reducer::Max => {
                let a = self.parameter(0, ty, &[]);
                let b = self.parameter(1, ty, &[]);
                let op = if kind == Reducer::Add {
                    "add"
                } else {
                    "maximum"
                };
                let r = self.binary(op, &a, &b);
                let s = array_shape(ty, &[]);
                (r.id, vec![s.clone(), s.clone()], s)
            }
            Reducer::ArgMax => {
                let idx = PrimitiveType::S32;
                let (av, ai) = (self.parameter(0, ty, &[]), self.parameter(1, idx, &[]));
                let (bv, bi) = (self.parameter(2, ty, &[]), self.parameter(3, idx, &[]));
                let greater = self.compare("GT", &av, &bv);
                let equal = self.compare("EQ", &av, &bv);
                let earlier = self.compare("LT", &ai, &bi);
                let tie = self.binary("and", &equal, &earlier);
                let take_a = self.binary("or", &greater, &tie);
                let v = self.select(&take_a, &av, &bv);
                let i = self.select(&take_a, &ai, &bi);
                let (sv, si) = (array_shape(ty, &[]), array_shape(idx, &[]));
                let result = tuple_shape(vec![sv.clone(), si.clone()]);
                let root = self.emit("tuple", result.clone(), &[&v, &i], |_| {});
                (root, vec![sv.clone(), si.clone(), sv, si], result)
            }
        };
        let name = match kind {
            Reducer::Add => format!("add_{}", ty.hlo_name()),
            Reducer::Max => format!("max_{}", ty.hlo_name()),
            Reducer::ArgMax => format!("argmax_{}", ty.hlo_name()),
        };
        let id = self.close(name, root, params, result);
        self.reducers.insert((kind, ty), id);
        id
    }

    /// Reduction of `v` over `axis` (the axis is dropped).
    fn reduce(&mut self, v: &Val, axis: usize, kind: Reducer) -> Val {
        let init = self.scalar(
            v.ty,
            if kind == Reducer::Max {
                f64::NEG_INFINITY
            } else {
                0.0
            },
        );
        let comp = self.reducer(kind, v.ty);
        let mut dims = v.dims.clone();
        dims.remove(axis);
        self.array("reduce", v.ty, &dims, &[v, &init], |i| {
            i.dimensions = vec![axis as i64];
            i.called_computation_ids = vec![comp];
        })
    }

    /// `v` reduced over its last axis, broadcast back to `v`'s dimensions.
    fn reduce_last_keep(&mut self, v: &Val, kind: Reducer) -> Val {
        let last = v.dims.len() - 1;
        let r = self.reduce(v, last, kind);
        let map: Vec<i64> = (0..last as i64).collect();
        self.broadcast_in_dim(&r, &v.dims.clone(), &map)
    }

    fn dot(&mut self, a: &Val, b: &Val, dn: DotDimensionNumbers, dims: &[i64]) -> Val {
        self.array("dot", a.ty, dims, &[a, b], |i| {
            i.dot_dimension_numbers = Some(dn)
        })
    }

    fn matmul(&mut self, a: &Val, b: &Val, transpose_rhs: bool, out: &[i64]) -> Val {
        let (ra, rb) = (a.dims.len(), b.dims.len());
        if rb == 2 {
            // A weight: contract the activations' last axis directly, no batch dimensions.
            let dn = DotDimensionNumbers {
                lhs_contracting_dimensions: vec![ra as i64 - 1],
                rhs_contracting_dimensions: vec![if transpose_rhs { 1 } else { 0 }],
                ..Default::default()
            };
            return self.dot(a, b, dn, out);
        }
        let nb = out.len() - 2;
        let batch = &out[..nb];
        let a_dims: Vec<i64> = batch.iter().chain(&a.dims[ra - 2..]).copied().collect();
        let b_dims: Vec<i64> = batch.iter().chain(&b.dims[rb - 2..]).copied().collect();
        let a = self.broadcast_to(a, &a_dims);
        let b = self.broadcast_to(b, &b_dims);
        let batch_dims: Vec<i64> = (0..nb as i64).collect();
        let dn = DotDimensionNumbers {
            lhs_contracting_dimensions: vec![nb as i64 + 1],
            rhs_contracting_dimensions: vec![nb as i64 + if transpose_rhs { 1 } else { 0 }],
            lhs_batch_dimensions: batch_dims.clone(),
            rhs_batch_dimensions: batch_dims,
        };
        self.dot(&a, &b, dn, out)
    }

    fn unary_op(&mut self, op: UnaryOp, x: &Val) -> Val {
        let simple = match op {
            UnaryOp::Neg => Some("negate"),
            UnaryOp::Abs => Some("abs"),
            UnaryOp::Exp => Some("exponential"),
            UnaryOp::Log => Some("log"),
            UnaryOp::Sqrt => Some("sqrt"),
            UnaryOp::Rsqrt => Some("rsqrt"),
            UnaryOp::Tanh => Some("tanh"),
            UnaryOp::Sin => Some("sine"),
            UnaryOp::Cos => Some("cosine"),
            UnaryOp::Sigmoid => Some("logistic"),
            _ => None,
        };
        if let Some(opcode) = simple {
            return self.unary(opcode, x);
        }
        let ty = x.ty;
        let f = self.convert(x, PrimitiveType::F32);
        let r = match op {
            UnaryOp::Recip => {
                let one = self.scalar(PrimitiveType::F32, 1.0);
                let one = self.broadcast_in_dim(&one, &f.dims.clone(), &[]);
                self.binary("divide", &one, &f)
            }
            UnaryOp::Sqr => self.binary("multiply", &f, &f),
            UnaryOp::Relu => self.with_scalar("maximum", &f, 0.0),
            UnaryOp::Silu => {
                let s = self.unary("logistic", &f);
                self.binary("multiply", &f, &s)
            }
            UnaryOp::GeluErf => {
                // x/2 · (1 + erf(x/√2))
                let scaled = self.with_scalar("multiply", &f, std::f64::consts::FRAC_1_SQRT_2);
                let e = self.unary("erf", &scaled);
                let e1 = self.with_scalar("add", &e, 1.0);
                let half = self.with_scalar("multiply", &f, 0.5);
                self.binary("multiply", &half, &e1)
            }
            UnaryOp::GeluTanh => {
                // x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))
                let x2 = self.binary("multiply", &f, &f);
                let x3 = self.binary("multiply", &x2, &f);
                let c3 = self.with_scalar("multiply", &x3, 0.044715);
                let inner = self.binary("add", &f, &c3);
                let k = (2.0 / std::f64::consts::PI).sqrt();
                let inner = self.with_scalar("multiply", &inner, k);
                let t = self.unary("tanh", &inner);
                let t1 = self.with_scalar("add", &t, 1.0);
                let half = self.with_scalar("multiply", &f, 0.5);
                self.binary("multiply", &half, &t1)
            }
            _ => unreachable!("handled above"),
        };
        self.convert(&r, ty)
    }

    fn rope(&mut self, x: &Val, cos: &Val, sin: &Val, interleaved: bool) -> Val {
        let ty = x.ty;
        let xf = self.convert(x, PrimitiveType::F32);
        let (b, h, t, d) = (xf.dims[0], xf.dims[1], xf.dims[2], xf.dims[3]);
        let half = cos.dims[1];
        let r = 2 * half;
        let quarter = [b, h, t, half];
        let c = self.convert(cos, PrimitiveType::F32);
        let c = self.broadcast_in_dim(&c, &quarter, &[2, 3]);
        let s = self.convert(sin, PrimitiveType::F32);
        let s = self.broadcast_in_dim(&s, &quarter, &[2, 3]);
        let (x1, x2) = if interleaved {
            let rotated = self.slice(&xf, 3, 0, r);
            let pairs = self.reshape(&rotated, &[b, h, t, half, 2]);
            let even = self.slice(&pairs, 4, 0, 1);
            let odd = self.slice(&pairs, 4, 1, 1);
            (self.reshape(&even, &quarter), self.reshape(&odd, &quarter))
        } else {
            (self.slice(&xf, 3, 0, half), self.slice(&xf, 3, half, half))
        };
        let x1c = self.binary("multiply", &x1, &c);
        let x2s = self.binary("multiply", &x2, &s);
        let o1 = self.binary("subtract", &x1c, &x2s);
        let x2c = self.binary("multiply", &x2, &c);
        let x1s = self.binary("multiply", &x1, &s);
        let o2 = self.binary("add", &x2c, &x1s);
        let rotated = if interleaved {
            let o1 = self.reshape(&o1, &[b, h, t, half, 1]);
            let o2 = self.reshape(&o2, &[b, h, t, half, 1]);
            let pairs = self.concat(&[o1, o2], 4);
            self.reshape(&pairs, &[b, h, t, r])
        } else {
            self.concat(&[o1, o2], 3)
        };
        let out = if d > r {
            let rest = self.slice(&xf, 3, r, d - r);
            self.concat(&[rotated, rest], 3)
        } else {
            rotated
        };
        self.convert(&out, ty)
    }

    fn softmax(&mut self, x: &Val) -> Val {
        let ty = x.ty;
        let f = self.convert(x, PrimitiveType::F32);
        let m = self.reduce_last_keep(&f, Reducer::Max);
        let shifted = self.binary("subtract", &f, &m);
        let e = self.unary("exponential", &shifted);
        let s = self.reduce_last_keep(&e, Reducer::Add);
        let p = self.binary("divide", &e, &s);
        self.convert(&p, ty)
    }

    /// `1/√(mean of squares of the last axis + eps)`, broadcast to `f`'s dimensions.
    fn inv_rms(&mut self, f: &Val, eps: f32) -> Val {
        let n = *f.dims.last().expect("rank >= 1") as f64;
        let sq = self.binary("multiply", f, f);
        let last = f.dims.len() - 1;
        let ss = self.reduce(&sq, last, Reducer::Add);
        let ms = self.with_scalar("multiply", &ss, 1.0 / n);
        let ms = self.with_scalar("add", &ms, eps as f64);
        let inv = self.unary("rsqrt", &ms);
        let map: Vec<i64> = (0..last as i64).collect();
        self.broadcast_in_dim(&inv, &f.dims.clone(), &map)
    }

    /// A `[H]` vector in f32, broadcast along the last axis of `dims`.
    fn along_last(&mut self, w: &Val, dims: &[i64]) -> Val {
        let w = self.convert(w, PrimitiveType::F32);
        self.broadcast_in_dim(&w, dims, &[dims.len() as i64 - 1])
    }

    fn rms_norm(&mut self, x: &Val, w: &Val, eps: f32) -> Val {
        let ty = x.ty;
        let f = self.convert(x, PrimitiveType::F32);
        let inv = self.inv_rms(&f, eps);
        let normed = self.binary("multiply", &f, &inv);
        let w = self.along_last(w, &f.dims.clone());
        let out = self.binary("multiply", &normed, &w);
        self.convert(&out, ty)
    }

    fn layer_norm(&mut self, x: &Val, w: &Val, b: &Val, eps: f32) -> Val {
        let ty = x.ty;
        let f = self.convert(x, PrimitiveType::F32);
        let n = *f.dims.last().expect("rank >= 1") as f64;
        let sum = self.reduce_last_keep(&f, Reducer::Add);
        let mean = self.with_scalar("multiply", &sum, 1.0 / n);
        let centered = self.binary("subtract", &f, &mean);
        let inv = self.inv_rms(&centered, eps);
        let normed = self.binary("multiply", &centered, &inv);
        let dims = f.dims.clone();
        let w = self.along_last(w, &dims);
        let b = self.along_last(b, &dims);
        let scaled = self.binary("multiply", &normed, &w);
        let out = self.binary("add", &scaled, &b);
        self.convert(&out, ty)
    }

    fn argmax(&mut self, x: &Val) -> Val {
        let f = self.convert(x, PrimitiveType::F32);
        let last = f.dims.len() - 1;
        let idx_ty = PrimitiveType::S32;
        let iota = self.array("iota", idx_ty, &f.dims.clone(), &[], |i| {
            i.dimensions = vec![last as i64]
        });
        let init_v = self.scalar(PrimitiveType::F32, f64::NEG_INFINITY);
        let init_i = self.scalar(idx_ty, 0.0);
        let comp = self.reducer(Reducer::ArgMax, PrimitiveType::F32);
        let mut dims = f.dims.clone();
        dims.remove(last);
        let shape = tuple_shape(vec![
            array_shape(PrimitiveType::F32, &dims),
            array_shape(idx_ty, &dims),
        ]);
        let pair = self.emit("reduce", shape, &[&f, &iota, &init_v, &init_i], |i| {
            i.dimensions = vec![last as i64];
            i.called_computation_ids = vec![comp];
        });
        let pair = Val {
            id: pair,
            ty: PrimitiveType::Tuple,
            dims: vec![],
        };
        let idx = self.array("get-tuple-element", idx_ty, &dims, &[&pair], |i| {
            i.tuple_index = 1
        });
        self.convert(&idx, PrimitiveType::U32)
    }

    fn kv_write(&mut self, cache: &Val, new: &Val, pos: &Val, axis: usize) -> Val {
        let p = self.reshape(pos, &[]);
        let p = self.convert(&p, PrimitiveType::S32);
        let zero = self.scalar(PrimitiveType::S32, 0.0);
        let starts: Vec<Val> = (0..cache.dims.len())
            .map(|k| if k == axis { p.clone() } else { zero.clone() })
            .collect();
        let mut operands: Vec<&Val> = vec![cache, new];
        operands.extend(starts.iter());
        self.array(
            "dynamic-update-slice",
            cache.ty,
            &cache.dims.clone(),
            &operands,
            |_| {},
        )
    }

    /// Row `t` of `new [1, T, ...]` into `cache [S, C, ...]` at `[slots[t], pos[t]]`: one
    /// dynamic-update-slice per row, in row order, so a later row wins as the op defines (XLA's
    /// `scatter` leaves the order of overlapping updates unspecified).
    fn kv_scatter(&mut self, cache: &Val, new: &Val, slots: &Val, pos: &Val) -> Val {
        let zero = self.scalar(PrimitiveType::S32, 0.0);
        let mut row_dims = new.dims.clone();
        row_dims[1] = 1;
        let mut acc = cache.clone();
        for t in 0..new.dims[1] {
            let row = self.slice(new, 1, t, 1);
            let index = |lw: &mut Self, v: &Val| {
                let one = lw.slice(v, 0, t, 1);
                let one = lw.reshape(&one, &[]);
                lw.convert(&one, PrimitiveType::S32)
            };
            let (s, p) = (index(self, slots), index(self, pos));
            let mut operands: Vec<&Val> = vec![&acc, &row, &s, &p];
            let zeros = vec![zero.clone(); cache.dims.len() - 2];
            operands.extend(zeros.iter());
            acc = self.array(
                "dynamic-update-slice",
                cache.ty,
                &cache.dims.clone(),
                &operands,
                |_| {},
            );
        }
        acc
    }

    fn gather(&mut self, table: &Val, ids: &Val, out: &[i64]) -> Val {
        let r = ids.dims.len() as i64;
        let dn = GatherDimensionNumbers {
            offset_dims: vec![r],
            collapsed_slice_dims: vec![0],
            start_index_map: vec![0],
            index_vector_dim: r,
        };
        let sizes = vec![1, table.dims[1]];
        self.array("gather", table.ty, out, &[table, ids], |i| {
            i.gather_dimension_numbers = Some(dn);
            i.gather_slice_sizes = sizes;
        })
    }

    /// Lowers the nodes of `graph` into the open computation; `params[i]` is the value of the
    /// graph's parameter `i`. Returns the value of every node.
    fn nodes(&mut self, graph: &Graph, params: &[Val]) -> Result<Vec<Val>> {
        let mut vals: Vec<Option<Val>> = vec![None; graph.nodes().len()];
        for (pid, v) in graph.params().iter().zip(params) {
            vals[pid.index()] = Some(v.clone());
        }
        for (i, node) in graph.nodes().iter().enumerate() {
            if matches!(node.op, Op::Parameter { .. }) {
                continue;
            }
            let x: Vec<&Val> = node
                .inputs
                .iter()
                .map(|id| vals[id.index()].as_ref().expect("operands precede users"))
                .collect();
            let v = self.node(graph, i, node, &x)?;
            vals[i] = Some(v);
        }
        Ok(vals
            .into_iter()
            .map(|v| v.expect("every node is lowered"))
            .collect())
    }

    fn node(&mut self, graph: &Graph, index: usize, node: &Node, x: &[&Val]) -> Result<Val> {
        let (op, spec) = (&node.op, &node.spec);
        let name = op.name();
        let id = format!("%{index}");
        let out: Vec<i64> = spec
            .shape
            .fixed_dims()
            .ok_or_else(|| {
                export_error(format!(
                    "{name} {id} of '{}' has symbolic dimensions {}: bind them to bucket sizes first",
                    graph.name(),
                    spec.shape
                ))
            })?
            .iter()
            .map(|&d| d as i64)
            .collect();
        let Some(ty) = primitive(spec.dtype) else {
            return Err(export_error(format!(
                "op '{name}' ({id} of '{}') produces {}, which has no HLO element type",
                graph.name(),
                spec.dtype
            )));
        };
        Ok(match op {
            Op::Parameter { .. } => unreachable!("parameters are bound by the caller"),
            Op::Constant { value } => self.constant(value)?,
            Op::Iota { .. } => self.array("iota", ty, &out, &[], |i| i.dimensions = vec![0]),
            Op::Gather => self.gather(x[0], x[1], &out),
            Op::MatMul { transpose_rhs } => self.matmul(x[0], x[1], *transpose_rhs, &out),
            Op::Binary(b) => {
                let a = self.broadcast_to(x[0], &out);
                let c = self.broadcast_to(x[1], &out);
                let opcode = match b {
                    BinaryOp::Add => "add",
                    BinaryOp::Sub => "subtract",
                    BinaryOp::Mul => "multiply",
                    BinaryOp::Div => "divide",
                    BinaryOp::Maximum => "maximum",
                    BinaryOp::Minimum => "minimum",
                };
                self.binary(opcode, &a, &c)
            }
            Op::Compare(c) => {
                let a = self.broadcast_to(x[0], &out);
                let b = self.broadcast_to(x[1], &out);
                let direction = match c {
                    CompareOp::Eq => "EQ",
                    CompareOp::Ne => "NE",
                    CompareOp::Lt => "LT",
                    CompareOp::Le => "LE",
                    CompareOp::Gt => "GT",
                    CompareOp::Ge => "GE",
                };
                let p = self.compare(direction, &a, &b);
                self.convert(&p, PrimitiveType::U8)
            }
            Op::Unary(u) => self.unary_op(*u, x[0]),
            Op::Affine { mul, add } => {
                let f = self.convert(x[0], PrimitiveType::F32);
                let m = self.with_scalar("multiply", &f, *mul as f64);
                let a = self.with_scalar("add", &m, *add as f64);
                self.convert(&a, ty)
            }
            Op::SoftCap { cap } => {
                let f = self.convert(x[0], PrimitiveType::F32);
                let d = self.with_scalar("multiply", &f, 1.0 / *cap as f64);
                let t = self.unary("tanh", &d);
                let c = self.with_scalar("multiply", &t, *cap as f64);
                self.convert(&c, ty)
            }
            Op::RmsNorm { eps } => self.rms_norm(x[0], x[1], *eps),
            Op::LayerNorm { eps } => self.layer_norm(x[0], x[1], x[2], *eps),
            Op::Rope { interleaved } => self.rope(x[0], x[1], x[2], *interleaved),
            Op::Softmax => self.softmax(x[0]),
            Op::Reduce { op: r, axis } => {
                let f = self.convert(x[0], PrimitiveType::F32);
                let kind = if *r == ReduceOp::Max {
                    Reducer::Max
                } else {
                    Reducer::Add
                };
                let mut v = self.reduce(&f, *axis, kind);
                if *r == ReduceOp::Mean {
                    v = self.with_scalar("multiply", &v, 1.0 / f.dims[*axis] as f64);
                }
                let v = self.reshape(&v, &out);
                self.convert(&v, ty)
            }
            Op::Reshape { .. } => self.reshape(x[0], &out),
            Op::Transpose { perm } => {
                let perm: Vec<i64> = perm.iter().map(|&p| p as i64).collect();
                self.array("transpose", ty, &out, &[x[0]], |i| i.dimensions = perm)
            }
            Op::Slice { axis, start, .. } => self.slice(x[0], *axis, *start as i64, out[*axis]),
            Op::Concat { axis } => {
                let parts: Vec<Val> = x.iter().map(|v| (*v).clone()).collect();
                self.concat(&parts, *axis)
            }
            Op::Cast { .. } => self.convert(x[0], ty),
            Op::Where => {
                let zero = self.scalar(PrimitiveType::U8, 0.0);
                let cond = self.broadcast_to(x[0], &out);
                let zero = self.broadcast_in_dim(&zero, &out, &[]);
                let p = self.compare("NE", &cond, &zero);
                let a = self.broadcast_to(x[1], &out);
                let b = self.broadcast_to(x[2], &out);
                self.select(&p, &a, &b)
            }
            Op::KvWrite { axis } => self.kv_write(x[0], x[1], x[2], *axis),
            Op::KvScatter => self.kv_scatter(x[0], x[1], x[2], x[3]),
            Op::Argmax => self.argmax(x[0]),
            Op::Attention(attrs) | Op::SlotAttention(attrs) => {
                // Inline the decomposition that defines the op.
                let spec_of = |v: &Val, dtype: DType| {
                    TensorSpec::new(
                        dtype,
                        Shape::fixed(&v.dims.iter().map(|&d| d as usize).collect::<Vec<_>>()),
                    )
                };
                let operand_dtypes: Vec<DType> = node
                    .inputs
                    .iter()
                    .map(|i| graph.node(*i).spec.dtype)
                    .collect();
                let mut b = GraphBuilder::new(name);
                let names = ["q", "k", "v", "q_pos", "slots"];
                let mut ids = Vec::new();
                for (k, n) in names.iter().enumerate().take(x.len()) {
                    ids.push(b.input(n, spec_of(x[k], operand_dtypes[k]))?);
                }
                let o = match op {
                    Op::SlotAttention(_) => decompose_slot_attention(
                        &mut b, ids[0], ids[1], ids[2], ids[3], ids[4], *attrs,
                    )?,
                    _ => decompose_attention(&mut b, ids[0], ids[1], ids[2], ids[3], *attrs)?,
                };
                b.output("out", o)?;
                let sub = b.finish()?;
                let params: Vec<Val> = x.iter().map(|v| (*v).clone()).collect();
                let vals = self.nodes(&sub, &params)?;
                vals[sub.outputs()[0].1.index()].clone()
            }
        })
    }
}

/// A graph lowered to HLO.
#[derive(Debug, Clone)]
pub struct HloModule {
    /// The module.
    pub proto: HloModuleProto,
}

/// Lowers `graph` (every dimension fixed) to an HLO module. Fails before producing anything
/// when an op cannot be lowered, naming it.
pub fn lower(graph: &Graph) -> Result<HloModule> {
    let sig = graph.signature();
    let mut lw = Lowering {
        next_id: 0,
        done: Vec::new(),
        open: vec![Vec::new()],
        reducers: HashMap::new(),
    };
    let mut params = Vec::with_capacity(sig.params.len());
    let mut param_shapes = Vec::with_capacity(sig.params.len());
    for (i, p) in sig.params.iter().enumerate() {
        let dims: Vec<i64> = p
            .spec
            .shape
            .fixed_dims()
            .ok_or_else(|| {
                export_error(format!(
                    "parameter '{}' of '{}' has symbolic shape {}: bind the graph to bucket sizes first",
                    p.name,
                    graph.name(),
                    p.spec.shape
                ))
            })?
            .iter()
            .map(|&d| d as i64)
            .collect();
        let Some(ty) = primitive(p.spec.dtype) else {
            let readers: std::collections::BTreeSet<&str> = graph
                .nodes()
                .iter()
                .filter(|n| n.inputs.contains(&graph.params()[i]))
                .map(|n| n.op.name())
                .collect();
            return Err(export_error(format!(
                "{} '{}' of '{}' is {} (read by {}): HLO has no block-quantized types, so graphs for Neuron take f32/f16/bf16 weights",
                match p.kind {
                    ParamKind::Weight => "weight",
                    ParamKind::State => "state",
                    ParamKind::Input => "input",
                },
                p.name,
                graph.name(),
                p.spec.dtype,
                readers.into_iter().collect::<Vec<_>>().join(", ")
            )));
        };
        let v = lw.parameter(i, ty, &dims);
        if let Some(inst) = lw.open.last_mut().and_then(|c| c.last_mut()) {
            inst.name = format!("input{i}");
        }
        param_shapes.push(array_shape(ty, &dims));
        params.push(v);
    }
    let vals = lw.nodes(graph, &params)?;
    let mut results: Vec<&Val> = graph
        .outputs()
        .iter()
        .map(|(_, id)| &vals[id.index()])
        .collect();
    let mut aliases = Vec::new();
    for (name, id) in graph.state_updates() {
        let number = sig
            .params
            .iter()
            .position(|p| &p.name == name)
            .expect("state updates name parameters");
        aliases.push(AliasEntryProto {
            output_shape_index: vec![results.len() as i64],
            parameter_number: number as i64,
            parameter_shape_index: vec![],
            kind: MAY_ALIAS,
        });
        results.push(&vals[id.index()]);
    }
    let result_shape = tuple_shape(results.iter().map(|v| array_shape(v.ty, &v.dims)).collect());
    let results: Vec<Val> = results.into_iter().cloned().collect();
    let refs: Vec<&Val> = results.iter().collect();
    let root = lw.emit("tuple", result_shape.clone(), &refs, |_| {});
    let entry_name = "main".to_string();
    let entry = lw.close(
        entry_name.clone(),
        root,
        param_shapes.clone(),
        result_shape.clone(),
    );
    let names = (0..param_shapes.len())
        .map(|i| format!("input{i}"))
        .collect::<Vec<_>>();
    let mut computations = lw.done;
    if let Some(e) = computations.last_mut() {
        if let Some(ps) = e.program_shape.as_mut() {
            ps.parameter_names = names.clone();
        }
    }
    Ok(HloModule {
        proto: HloModuleProto {
            name: graph.name().replace(['/', ' '], "_"),
            entry_computation_name: entry_name,
            computations,
            host_program_shape: Some(ProgramShapeProto {
                parameters: param_shapes,
                result: Some(result_shape),
                parameter_names: names,
            }),
            id: 0,
            entry_computation_id: entry,
            input_output_alias: Some(HloInputOutputAliasProto { entries: aliases }),
        },
    })
}
