//! i32 ops on a GPU: candle's CUDA kernels have no i32 arithmetic, comparison, cast or copy
//! (the storage itself moves), so an op that computes with i32 values runs on candle's CPU
//! device, on operands that are mostly small index tensors whose values the host already has.

use crate::buffer::{CandleBuffer, MAX_INDICES};
use crate::cpu::kernels::Isa;
use crate::ops::EvalError;
use candle_core::{DType as CDType, Device as CDevice, Tensor};
use switchyard_runtime::{DType, DeviceBuffer, Op};

/// Whether `op` must run on candle's CPU device because it computes with i32 values, which
/// candle's CUDA kernels do not (no i32 cast, arithmetic, comparison or copy kernels; the
/// storage itself moves fine). Gathers, attention and KV writes only read their i32 operands'
/// host values, so they stay on the device.
pub(crate) fn needed(op: &Op, x: &[&CandleBuffer], dtype: DType) -> bool {
    let reads_ints_on_host = matches!(
        op,
        Op::Gather | Op::Attention(_) | Op::SlotAttention(_) | Op::KvWrite { .. } | Op::KvScatter
    );
    !reads_ints_on_host && (dtype == DType::I32 || x.iter().any(|b| b.dtype() == DType::I32))
}

/// Evaluates `op` on candle's CPU device and moves the result to `dev`. Operands with host
/// values ([`CandleBuffer::Indices`]) are rebuilt from them (no read back); others are copied.
/// A small integer result comes back as `Indices`, so ops after it find its values on the host.
pub(crate) fn eval(
    op: &Op,
    x: &[&CandleBuffer],
    out: &[usize],
    dtype: DType,
    dev: &CDevice,
) -> std::result::Result<CandleBuffer, EvalError> {
    let cpu = CDevice::Cpu;
    let mut moved = Vec::with_capacity(x.len());
    for b in x {
        moved.push(match b {
            CandleBuffer::Indices { tensor, values } => CandleBuffer::Indices {
                tensor: Tensor::from_vec(values.to_vec(), tensor.dims(), &cpu)?
                    .to_dtype(tensor.dtype())?,
                values: values.clone(),
            },
            CandleBuffer::Tensor(t) => {
                crate::profile::count_host_read();
                CandleBuffer::Tensor(t.to_device(&cpu)?)
            }
            other => (*other).clone(),
        });
    }
    let operands: Vec<&CandleBuffer> = moved.iter().collect();
    let r = crate::ops::eval(op, &operands, out, dtype, &cpu, Isa::PORTABLE)?;
    Ok(match r {
        CandleBuffer::Indices { tensor, values } => CandleBuffer::Indices {
            tensor: tensor.to_device(dev)?,
            values,
        },
        CandleBuffer::Tensor(t) if dtype.is_int() && t.elem_count() <= MAX_INDICES => {
            let values = t.flatten_all()?.to_dtype(CDType::I64)?.to_vec1::<i64>()?;
            CandleBuffer::Indices {
                tensor: t.to_device(dev)?,
                values: values.into(),
            }
        }
        CandleBuffer::Tensor(t) => CandleBuffer::Tensor(t.to_device(dev)?),
        other => other,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::{BinaryOp, CompareOp};

    fn indices(v: &[i32]) -> CandleBuffer {
        let t = Tensor::new(v, &CDevice::Cpu).unwrap();
        CandleBuffer::Indices {
            tensor: t,
            values: v.iter().map(|&x| x as i64).collect::<Vec<_>>().into(),
        }
    }

    #[test]
    fn only_ops_that_compute_with_i32_values_move() {
        let ids = indices(&[1, 2]);
        let floats = CandleBuffer::Tensor(Tensor::new(&[1f32, 2.0], &CDevice::Cpu).unwrap());
        assert!(needed(&Op::Cast { dtype: DType::F32 }, &[&ids], DType::F32));
        assert!(needed(
            &Op::Iota {
                len: switchyard_runtime::Dim::Fixed(4),
                dtype: DType::I32
            },
            &[],
            DType::I32
        ));
        assert!(needed(
            &Op::Compare(CompareOp::Lt),
            &[&ids, &ids],
            DType::U8
        ));
        assert!(!needed(&Op::Gather, &[&floats, &ids], DType::F32));
        assert!(!needed(
            &Op::Binary(BinaryOp::Add),
            &[&floats, &floats],
            DType::F32
        ));
    }

    #[test]
    fn results_match_the_values_and_small_int_results_keep_them() {
        // Negative values: the reason i32 is not stored as u32 on the GPU.
        let a = indices(&[3, -1, 7]);
        let b = CandleBuffer::Tensor(Tensor::new(&[0i32, 0, 5], &CDevice::Cpu).unwrap());
        let sum = eval(
            &Op::Binary(BinaryOp::Sub),
            &[&a, &b],
            &[3],
            DType::I32,
            &CDevice::Cpu,
        )
        .unwrap_or_else(|_| panic!("sub"));
        let CandleBuffer::Indices { tensor, values } = sum else {
            panic!("a small i32 result keeps its host values");
        };
        assert_eq!(&values[..], &[3, -1, 2]);
        assert_eq!(tensor.to_vec1::<i32>().unwrap(), vec![3, -1, 2]);
        let lt = eval(
            &Op::Compare(CompareOp::Lt),
            &[&a, &b],
            &[3],
            DType::U8,
            &CDevice::Cpu,
        )
        .unwrap_or_else(|_| panic!("lt"));
        assert_eq!(
            lt.tensor("lt").unwrap().to_vec1::<u8>().unwrap(),
            vec![0, 1, 0]
        );
        let f = eval(
            &Op::Cast { dtype: DType::F32 },
            &[&a],
            &[3],
            DType::F32,
            &CDevice::Cpu,
        )
        .unwrap_or_else(|_| panic!("cast"));
        assert_eq!(
            f.tensor("cast").unwrap().to_vec1::<f32>().unwrap(),
            vec![3.0, -1.0, 7.0]
        );
    }
}
