//! Projections for devices that are not in the machine: throughput, time to first token and cost
//! per token from public specifications (peak bandwidth, compute, memory, price) and the model's
//! bytes and operations per step, by the roofline model. Every figure it produces is labelled
//! `projected`; [`crate::bench`] sets projections next to measurements of the devices that are
//! present and can calibrate the efficiencies on them.
//!
//! ```
//! use switchyard::models::Model;
//! use switchyard::project::{project, ModelCost, SpecTable, Workload};
//! use switchyard::DType;
//!
//! let model = Model::load("builtin:smollm2-135m")?;
//! let cost = ModelCost::new(&model.config, model.weights.as_ref(), DType::BF16)?;
//! let specs = SpecTable::shipped();
//! let trn2 = specs.target("trn2").unwrap();
//! let workload = Workload { prompt_sizes: vec![512], gen_sizes: vec![128], batches: vec![1, 8] };
//! let p = project(trn2, specs.efficiency(trn2.class), &cost, &workload, None);
//! assert!(p.projected && p.decodes[1].aggregate_tokens_per_s > p.decodes[0].aggregate_tokens_per_s);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod model_cost;
mod roofline;
mod specs;
mod this_cpu;

pub use model_cost::{LayerCost, ModelCost};
pub use roofline::{
    peak_flops, project, Bound, DecodePoint, Projection, PromptPoint, Workload,
    USABLE_MEMORY_FRACTION,
};
pub use specs::{DeviceClass, DeviceSpec, Efficiency, SpecTable, SHIPPED_SPECS};
pub use this_cpu::{clock_mhz, f32_lanes, this_cpu};
