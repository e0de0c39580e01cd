//! Weights from a source to a device: which stay block-quantized, and each one read, checked
//! against the graph's declaration and converted to the compute dtype on its way up.

use crate::config::{Arch, ModelConfig};
use crate::error::{ModelError, Result};
use crate::graph::weight_graph;
use crate::weights::WeightSource;
use switchyard_runtime::{DType, Device, Graph, HostTensor, ParamKind, TensorSpec, WeightPlan};

/// Reads weight `name` from `source`, checks its shape against `spec` and converts it to the
/// spec's dtype.
pub(crate) fn load_weight(
    source: &dyn WeightSource,
    arch: Arch,
    name: &str,
    spec: &switchyard_runtime::TensorSpec,
) -> Result<HostTensor> {
    read_weight(
        source,
        &crate::weights::checkpoint_name(source, name, arch),
        spec,
    )
}

/// Reads the tensor `source` holds as `name`, checks its shape against `spec` and converts it
/// to the spec's dtype.
pub(crate) fn read_weight(
    source: &dyn WeightSource,
    name: &str,
    spec: &switchyard_runtime::TensorSpec,
) -> Result<HostTensor> {
    let host = source.tensor(name)?;
    let file = std::path::PathBuf::from(source.origin(name));
    let expected = spec.shape.fixed_dims().expect("weights have fixed shapes");
    if host.dims() != expected.as_slice() {
        return Err(ModelError::TensorShape {
            name: name.to_string(),
            file,
            expected,
            got: host.dims().to_vec(),
        });
    }
    if host.dtype() == spec.dtype {
        Ok(host)
    } else if host.dtype().is_float() {
        let converted = host.to_dtype(spec.dtype)?;
        // The converted copy is what the device takes; the file's pages need not stay resident.
        host.release_pages();
        Ok(converted)
    } else {
        Err(ModelError::TensorDType {
            name: name.to_string(),
            file,
            dtype: host.dtype().to_string(),
        })
    }
}

/// The weights `source` stores block-quantized (by graph name, with their types): the engine
/// keeps them so on the device.
pub fn stored_quantized(
    config: &ModelConfig,
    source: &dyn WeightSource,
) -> Result<std::collections::BTreeMap<String, DType>> {
    let probe = weight_graph(config)?;
    let mut out = std::collections::BTreeMap::new();
    for p in probe.signature().params {
        if p.kind != ParamKind::Weight {
            continue;
        }
        let stored = source.stored_dtype(&crate::weights::checkpoint_name(
            source,
            &p.name,
            config.arch,
        ));
        if let Some(q) = stored.filter(|d| d.is_quantized()) {
            out.insert(p.name, q);
        }
    }
    Ok(out)
}

/// Checks that a device computing with the facts `quantized_types` (its block-quantized weight
/// types) and named `device` can take every weight in `quantized`.
pub fn check_quantized_support(
    quantized: &std::collections::BTreeMap<String, DType>,
    quantized_types: &[DType],
    device: &str,
) -> Result<()> {
    if let Some((name, q)) = quantized.iter().find(|(_, q)| !quantized_types.contains(q)) {
        return Err(ModelError::InvalidOption {
            option: "--model",
            message: format!(
                "weight '{name}' is {q}, which {device} cannot compute with (it takes {})",
                if quantized_types.is_empty() {
                    "no block-quantized weights: use an f32/f16/bf16 model".to_string()
                } else {
                    quantized_types
                        .iter()
                        .map(|d| d.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        });
    }
    Ok(())
}

/// The weights `source` stores block-quantized, kept so on the device (which must support their
/// types).
pub(crate) fn quantized_weights(
    config: &ModelConfig,
    source: &dyn WeightSource,
    info: &switchyard_runtime::DeviceInfo,
) -> Result<std::collections::BTreeMap<String, DType>> {
    let out = stored_quantized(config, source)?;
    check_quantized_support(&out, &info.quantized, &info.display_name())?;
    Ok(out)
}

/// Uploads every weight `graph` declares to `device`, each read by `read(name, spec)` one at a
/// time; returns the buffers and names in declaration order and the bytes read. A reader's own
/// error (a missing tensor, a wrong shape) is returned as it is.
pub(crate) fn upload_declared<D: Device>(
    device: &D,
    graph: &Graph,
    mut read: impl FnMut(&str, &TensorSpec) -> Result<HostTensor>,
) -> Result<(Vec<D::Buffer>, Vec<String>, usize)> {
    let plans: Vec<WeightPlan> = graph
        .signature()
        .params
        .into_iter()
        .filter(|p| p.kind == ParamKind::Weight)
        .map(|p| WeightPlan {
            uses: graph.uses_of(graph.param(&p.name).expect("declared")),
            name: p.name,
            spec: p.spec,
        })
        .collect();
    let mut bytes = 0;
    let mut read_error: Option<ModelError> = None;
    let mut fetch = |i: usize| -> switchyard_runtime::Result<HostTensor> {
        let p = &plans[i];
        match read(&p.name, &p.spec) {
            Ok(host) => {
                bytes += host.as_bytes().len();
                Ok(host)
            }
            Err(e) => {
                let message = e.to_string();
                read_error = Some(e);
                Err(switchyard_runtime::Error::exec("load", message))
            }
        }
    };
    let buffers = match device.upload_weights(&plans, &mut fetch) {
        Ok(buffers) => buffers,
        Err(e) => return Err(read_error.unwrap_or(ModelError::Runtime(e))),
    };
    Ok((buffers, plans.into_iter().map(|p| p.name).collect(), bytes))
}
