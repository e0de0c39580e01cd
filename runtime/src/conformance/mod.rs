//! The device conformance suite: every op and a few composite graphs, on seeded random inputs,
//! run on a device and compared with the reference interpreter.
//!
//! Any device runs it the same way: [`run_suite`] returns a [`Report`] with one line per case
//! (max-abs and relative error against the reference, the tolerance used, pass or fail) and the
//! worst error per dtype. Cases whose dtype the device does not list are reported as skipped with
//! the reason, never silently passed.
//!
//! ```text
//! let report = switchyard_runtime::conformance::run_suite(&device);
//! println!("{report}");
//! assert!(report.failures().is_empty());
//! ```

mod cases;
mod random;

pub use cases::all_cases;

use crate::device::{Device, ExecuteArgs};
use crate::dtype::DType;
use crate::graph::Graph;
use crate::interpreter::interpret;
use crate::shape::SymbolBindings;
use crate::tensor::HostTensor;
use std::collections::BTreeSet;
use std::fmt;

/// How close a device's result must be to the reference: elementwise
/// `|device - reference| <= atol + atol_rms · rms(reference) + rtol · |reference|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute slack.
    pub atol: f32,
    /// Absolute slack as a fraction of the reference output's root mean square (for quantized
    /// matmuls, whose error scales with the output's magnitude).
    pub atol_rms: f32,
    /// Relative slack.
    pub rtol: f32,
}

impl Tolerance {
    /// Exact equality (integer outputs).
    pub const EXACT: Tolerance = Tolerance {
        atol: 0.0,
        atol_rms: 0.0,
        rtol: 0.0,
    };

    /// The tolerance for float results computed in `dtype`.
    ///
    /// - f32: 1e-4 absolute and relative: summation order and fused kernels differ, and
    ///   transcendental functions differ in the last bits between libraries.
    /// - f16: 1e-2: one rounding is 2⁻¹¹ relative, and a few ops round several times.
    /// - bf16: 4e-2: one rounding is 2⁻⁸ relative.
    pub fn for_dtype(dtype: DType) -> Tolerance {
        match dtype {
            DType::F16 => Tolerance {
                atol: 1e-2,
                atol_rms: 0.0,
                rtol: 1e-2,
            },
            DType::BF16 => Tolerance {
                atol: 4e-2,
                atol_rms: 0.0,
                rtol: 4e-2,
            },
            d if d.is_int() => Tolerance::EXACT,
            _ => Tolerance {
                atol: 1e-4,
                atol_rms: 0.0,
                rtol: 1e-4,
            },
        }
    }

    /// A whole layer with quantized weights (four matmuls in series, with norms, attention
    /// and the MLP between them). Each matmul may round its activations to 8 bits in blocks, an
    /// error of at most 1/254 of the block's largest magnitude per element (see
    /// [`quantized_matmul_slack`]); for the Gaussian activations of these cases a block's
    /// maximum is within 3× the RMS, so one matmul's output moves by at most 3/254 ≈ 1.2% of
    /// its input RMS times the weights' row norm, and four in series (norms renormalize in
    /// between) by about 4 × 1.2% ≈ 5% of the output's RMS. Single quantized matmuls get the
    /// exact per-element bound instead ([`quantized_matmul_slack`]).
    pub const QUANTIZED_LAYER: Tolerance = Tolerance {
        atol: 1e-4,
        atol_rms: 5e-2,
        rtol: 0.0,
    };
}

/// The rounding a device may add to `y = x·Wᵀ` for a block-quantized `W`, per output element
/// (`x` `[m, k]`, `w` the dequantized `[n, k]` weight), derived from what the formats allow:
///
/// - **activations rounded to 8 bits** in blocks of `act_block` values (32 for the 32-element
///   weight types, as llama.cpp's q8_0/q8_1; 256 for the k-quants, as its q8_K): element `l` of a
///   block moves by at most half a step, `amax/254`, plus `amax·2⁻¹¹` when the step itself is
///   stored as f16, so `|Δy_ij| ≤ Σ_blocks amax_b(x_i)·(1/254 + 1/2048)·Σ_{l∈b} |w_jl|`;
/// - **f32 accumulation**: the integer block sums are exact; each block adds a scale product and
///   a running sum (a few roundings of 2⁻²⁴), and offset formats subtract a term as large as the
///   block's largest weight, so `4·(k/32 + 8)·2⁻²⁴·Σ_l |x_il|·(|w_jl| + max_b |w|)`.
///
/// A kernel that saturates, drops a block or mis-scales one exceeds this by orders of magnitude.
pub fn quantized_matmul_slack(
    weight_type: DType,
    x: &[f32],
    w: &[f32],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let act_block = if weight_type.block_len() == 256 {
        256
    } else {
        32
    };
    let wb = weight_type.block_len().max(1);
    let gamma = 4.0 * (k as f64 / 32.0 + 8.0) * 2f64.powi(-24);
    let mut out = Vec::with_capacity(m * n);
    for i in 0..m {
        let xi = &x[i * k..(i + 1) * k];
        let amax: Vec<f64> = xi
            .chunks(act_block)
            .map(|b| b.iter().fold(0f64, |a, v| a.max(v.abs() as f64)))
            .collect();
        for j in 0..n {
            let wj = &w[j * k..(j + 1) * k];
            let mut act = 0f64;
            for (b, wbk) in wj.chunks(act_block).enumerate() {
                let l1: f64 = wbk.iter().map(|v| v.abs() as f64).sum();
                act += amax[b] * (1.0 / 254.0 + 1.0 / 2048.0) * l1;
            }
            let mut mag = 0f64;
            for (xb, wbk) in xi.chunks(wb).zip(wj.chunks(wb)) {
                let wmax = wbk.iter().fold(0f64, |a, v| a.max(v.abs() as f64));
                mag += xb
                    .iter()
                    .zip(wbk)
                    .map(|(a, b)| a.abs() as f64 * (b.abs() as f64 + wmax))
                    .sum::<f64>();
            }
            out.push((act + gamma * mag) as f32);
        }
    }
    out
}

/// One conformance case: a graph, its seeded inputs and the tolerance its outputs must meet.
#[derive(Debug, Clone)]
pub struct Case {
    /// A unique, descriptive name (`matmul/f32/batch-broadcast`).
    pub name: String,
    /// The dtype the case computes in (cases are skipped on devices without it).
    pub dtype: DType,
    /// The graph.
    pub graph: Graph,
    /// Inputs and weights by name.
    pub inputs: Vec<(String, HostTensor)>,
    /// Initial state by name.
    pub state: Vec<(String, HostTensor)>,
    /// Symbols no input carries.
    pub dims: SymbolBindings,
    /// Tolerance for float outputs (integer outputs must match exactly).
    pub tolerance: Tolerance,
    /// Extra absolute slack per element of some outputs (output index, one value per element),
    /// where a bound is derived per element (quantized matmuls: [`quantized_matmul_slack`]).
    pub slack: Vec<(usize, Vec<f32>)>,
}

impl Case {
    /// The distinct ops the case's graph uses.
    pub fn ops(&self) -> BTreeSet<&'static str> {
        self.graph.nodes().iter().map(|n| n.op.name()).collect()
    }
}

/// Errors of one compared tensor.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Errors {
    /// Largest absolute difference.
    pub max_abs: f32,
    /// Largest difference relative to the reference element's magnitude, or to the reference
    /// tensor's root mean square where the element is smaller than that (so values near zero do
    /// not make every rounding look large).
    pub max_rel: f32,
    /// The largest difference as a fraction of what the tolerance allowed for that element
    /// (1.0 would be exactly at the limit).
    pub of_allowed: f32,
}

/// The outcome of one case on one device.
#[derive(Debug, Clone)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Compute dtype.
    pub dtype: DType,
    /// The quantized weight type the case uses, if any.
    pub quantized: Option<DType>,
    /// Ops exercised.
    pub ops: BTreeSet<&'static str>,
    /// Worst errors over all outputs and state.
    pub errors: Errors,
    /// The tolerance applied.
    pub tolerance: Tolerance,
    /// `Ok(())` when within tolerance, else why not (or why skipped).
    pub outcome: Outcome,
}

/// Pass, fail or skip.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Within tolerance.
    Passed,
    /// Out of tolerance or an error, with the reason.
    Failed(String),
    /// Not run on this device, with the reason.
    Skipped(String),
}

/// The result of the whole suite on one device.
#[derive(Debug, Clone)]
pub struct Report {
    /// The device's display name.
    pub device: String,
    /// One entry per case.
    pub cases: Vec<CaseReport>,
}

impl Report {
    /// Cases that failed.
    pub fn failures(&self) -> Vec<&CaseReport> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .collect()
    }

    /// Cases that were skipped.
    pub fn skipped(&self) -> Vec<&CaseReport> {
        self.cases
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
            .collect()
    }

    /// Ops exercised by cases that ran.
    pub fn ops_covered(&self) -> BTreeSet<&'static str> {
        self.cases
            .iter()
            .filter(|c| !matches!(c.outcome, Outcome::Skipped(_)))
            .flat_map(|c| c.ops.iter().copied())
            .collect()
    }

    /// The worst errors seen per dtype (the weight type for quantized cases) over the cases that ran.
    pub fn worst_by_dtype(&self) -> Vec<(DType, Errors)> {
        let mut out: Vec<(DType, Errors)> = Vec::new();
        for c in self
            .cases
            .iter()
            .filter(|c| !matches!(c.outcome, Outcome::Skipped(_)))
        {
            let dtype = c.quantized.unwrap_or(c.dtype);
            match out.iter_mut().find(|(d, _)| *d == dtype) {
                Some((_, e)) => {
                    e.max_abs = e.max_abs.max(c.errors.max_abs);
                    e.max_rel = e.max_rel.max(c.errors.max_rel);
                    e.of_allowed = e.of_allowed.max(c.errors.of_allowed);
                }
                None => out.push((dtype, c.errors)),
            }
        }
        out.sort_by_key(|(d, _)| *d);
        out
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "conformance on {}: {} cases",
            self.device,
            self.cases.len()
        )?;
        writeln!(
            f,
            "| case | dtype | max abs err | max rel err | of allowed | result |"
        )?;
        writeln!(f, "|---|---|---|---|---|---|")?;
        for c in &self.cases {
            let result = match &c.outcome {
                Outcome::Passed => "ok".to_string(),
                Outcome::Failed(why) => format!("FAILED: {why}"),
                Outcome::Skipped(why) => format!("skipped: {why}"),
            };
            writeln!(
                f,
                "| {} | {} | {:.2e} | {:.2e} | {:.0}% | {} |",
                c.name,
                c.dtype,
                c.errors.max_abs,
                c.errors.max_rel,
                100.0 * c.errors.of_allowed,
                result
            )?;
        }
        writeln!(f, "worst error per dtype:")?;
        for (d, e) in self.worst_by_dtype() {
            writeln!(
                f,
                "  {d}: max abs {:.3e}, max rel {:.3e}, at most {:.0}% of the tolerance",
                e.max_abs,
                e.max_rel,
                100.0 * e.of_allowed
            )?;
        }
        let covered = self.ops_covered();
        let missing: Vec<&str> = crate::graph::OP_NAMES
            .iter()
            .copied()
            .filter(|o| !covered.contains(o))
            .collect();
        writeln!(
            f,
            "ops covered: {} of {}",
            covered.len(),
            crate::graph::OP_NAMES.len()
        )?;
        if !missing.is_empty() {
            writeln!(f, "ops not covered: {}", missing.join(", "))?;
        }
        write!(
            f,
            "passed {}, failed {}, skipped {}",
            self.cases.len() - self.failures().len() - self.skipped().len(),
            self.failures().len(),
            self.skipped().len()
        )
    }
}

/// Compares `got` with `reference` under `tol`, plus `slack[i]` for element `i` when given;
/// integers must match exactly.
pub fn compare(
    got: &HostTensor,
    reference: &HostTensor,
    tol: Tolerance,
    slack: Option<&[f32]>,
) -> Result<Errors, String> {
    if got.dims() != reference.dims() || got.dtype() != reference.dtype() {
        return Err(format!(
            "got {}{:?}, expected {}{:?}",
            got.dtype(),
            got.dims(),
            reference.dtype(),
            reference.dims()
        ));
    }
    let tol = if reference.dtype().is_int() {
        Tolerance::EXACT
    } else {
        tol
    };
    let g = got.to_f32_vec().map_err(|e| e.to_string())?;
    let r = reference.to_f32_vec().map_err(|e| e.to_string())?;
    let rms = (r
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| v * v)
        .sum::<f32>()
        / r.len().max(1) as f32)
        .sqrt();
    let atol = tol.atol + tol.atol_rms * rms;
    let mut e = Errors::default();
    let mut worst: Option<(usize, f32)> = None;
    for (i, (&a, &b)) in g.iter().zip(&r).enumerate() {
        if a == b || (a.is_nan() && b.is_nan()) {
            continue;
        }
        let d = (a - b).abs();
        if !d.is_finite() {
            return Err(format!("element {i}: got {a}, expected {b}"));
        }
        e.max_abs = e.max_abs.max(d);
        let magnitude = b.abs().max(rms);
        if magnitude > 0.0 {
            e.max_rel = e.max_rel.max(d / magnitude);
        }
        let extra = slack.map_or(0.0, |s| s[i]);
        let allowed = atol + tol.rtol * b.abs() + extra;
        if allowed > 0.0 {
            e.of_allowed = e.of_allowed.max(d / allowed);
        }
        let excess = d - allowed;
        if excess > 0.0 && worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, _)) = worst {
        let extra = slack.map_or(String::new(), |s| format!(" + {:.2e} derived", s[i]));
        return Err(format!(
            "element {i}: got {}, expected {} (max abs {:.3e}, allowed {:.1e} + {:.1e}·|x|{extra})",
            g[i], r[i], e.max_abs, atol, tol.rtol
        ));
    }
    Ok(e)
}

/// Runs one case on `device` and compares outputs and final state with the interpreter.
pub fn run_case<D: Device>(device: &D, case: &Case) -> CaseReport {
    let weight_types: BTreeSet<DType> = case
        .inputs
        .iter()
        .map(|(_, t)| t.dtype())
        .filter(|d| d.is_quantized())
        .collect();
    let mut report = CaseReport {
        name: case.name.clone(),
        dtype: case.dtype,
        quantized: weight_types.iter().next().copied(),
        ops: case.ops(),
        errors: Errors::default(),
        tolerance: case.tolerance,
        outcome: Outcome::Passed,
    };
    let info = device.info();
    if !info.dtypes.contains(&case.dtype) {
        report.outcome =
            Outcome::Skipped(format!("{} does not compute in {}", info.name, case.dtype));
        return report;
    }
    if let Some(q) = weight_types.iter().find(|q| !info.quantized.contains(q)) {
        report.outcome = Outcome::Skipped(format!("{} has no {q} matmul", info.name));
        return report;
    }
    match run_and_compare(device, case) {
        Ok(e) => report.errors = e,
        Err(why) => report.outcome = Outcome::Failed(why),
    }
    report
}

fn run_and_compare<D: Device>(device: &D, case: &Case) -> Result<Errors, String> {
    let fail = |what: &str, e: crate::Error| format!("{what}: {e}");
    // Reference.
    let mut ref_state: Vec<(String, HostTensor)> = case.state.clone();
    let ref_out = {
        let args = ExecuteArgs::new()
            .inputs_from(case.inputs.iter().map(|(n, t)| (n.as_str(), t)))
            .states_from(ref_state.iter_mut().map(|(n, t)| (n.as_str(), t)));
        let mut args = args;
        for (n, v) in case.dims.iter() {
            args = args.dim(n, v);
        }
        interpret(&case.graph, args).map_err(|e| fail("reference", e))?
    };
    // Device. A static-shape device compiles the graph with its symbols bound to this case's
    // sizes, as an engine binds them to bucket sizes.
    let graph = if device.info().shape_support == crate::ShapeSupport::Static {
        let mut state_copy = case.state.clone();
        let mut args = ExecuteArgs::new()
            .inputs_from(case.inputs.iter().map(|(n, t)| (n.as_str(), t)))
            .states_from(state_copy.iter_mut().map(|(n, t)| (n.as_str(), t)));
        for (n, v) in case.dims.iter() {
            args = args.dim(n, v);
        }
        let bound =
            crate::bind_args(&case.graph.signature(), &args).map_err(|e| fail("bind", e))?;
        case.graph.bind(&bound.dims).map_err(|e| fail("bind", e))?
    } else {
        case.graph.clone()
    };
    let exe = device
        .compile(&graph, &Default::default())
        .map_err(|e| fail("compile", e))?;
    // Weights go through `upload_weights` with their uses, as an engine uploads them, so layouts
    // a device chooses for weights (packed matmul operands) are checked too.
    let sig = case.graph.signature();
    let is_weight = |name: &str| {
        sig.param(name)
            .is_some_and(|p| p.kind == crate::ParamKind::Weight)
    };
    let weight_idx: Vec<usize> = (0..case.inputs.len())
        .filter(|&i| is_weight(&case.inputs[i].0))
        .collect();
    let plans: Vec<crate::WeightPlan> = weight_idx
        .iter()
        .map(|&i| {
            let (name, t) = &case.inputs[i];
            crate::WeightPlan {
                name: name.clone(),
                spec: t.spec(),
                uses: case
                    .graph
                    .uses_of(case.graph.param(name).expect("a parameter")),
            }
        })
        .collect();
    let mut weights = device
        .upload_weights(&plans, &mut |j| Ok(case.inputs[weight_idx[j]].1.clone()))
        .map_err(|e| fail("upload_weights", e))?
        .into_iter();
    let mut inputs: Vec<D::Buffer> = Vec::with_capacity(case.inputs.len());
    for (name, t) in &case.inputs {
        let b = if is_weight(name) {
            weights.next().expect("one buffer per plan")
        } else {
            device.upload(t).map_err(|e| fail("upload", e))?
        };
        inputs.push(b);
    }
    let mut state: Vec<D::Buffer> = case
        .state
        .iter()
        .map(|(_, t)| device.upload(t))
        .collect::<crate::Result<_>>()
        .map_err(|e| fail("upload", e))?;
    let outs = {
        let mut args = ExecuteArgs::new()
            .inputs_from(
                case.inputs
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .zip(inputs.iter()),
            )
            .states_from(
                case.state
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .zip(state.iter_mut()),
            );
        for (n, v) in case.dims.iter() {
            args = args.dim(n, v);
        }
        device.execute(&exe, args).map_err(|e| fail("execute", e))?
    };
    let mut worst = Errors::default();
    let mut check = |what: &str,
                     got: &D::Buffer,
                     reference: &HostTensor,
                     slack: Option<&[f32]>|
     -> Result<(), String> {
        let got = device.download(got).map_err(|e| fail("download", e))?;
        let e =
            compare(&got, reference, case.tolerance, slack).map_err(|m| format!("{what}: {m}"))?;
        worst.max_abs = worst.max_abs.max(e.max_abs);
        worst.max_rel = worst.max_rel.max(e.max_rel);
        worst.of_allowed = worst.of_allowed.max(e.of_allowed);
        Ok(())
    };
    for (i, ((name, _), (got, reference))) in case
        .graph
        .outputs()
        .iter()
        .zip(outs.iter().zip(&ref_out))
        .enumerate()
    {
        let slack = case
            .slack
            .iter()
            .find(|(o, _)| *o == i)
            .map(|(_, s)| s.as_slice());
        check(&format!("output '{name}'"), got, reference, slack)?;
    }
    for ((name, _), (got, (_, reference))) in case.state.iter().zip(state.iter().zip(&ref_state)) {
        check(&format!("state '{name}'"), got, reference, None)?;
    }
    Ok(worst)
}

/// Runs every case of [`all_cases`] on `device`.
pub fn run_suite<D: Device>(device: &D) -> Report {
    Report {
        device: device.info().display_name(),
        cases: all_cases().iter().map(|c| run_case(device, c)).collect(),
    }
}
