//! Graphs as XLA HLO modules: the input `neuronx-cc compile --framework XLA` takes.
//!
//! [`lower`] turns a graph whose dimensions are all fixed (one bucket) into an `HloModuleProto`
//! ([`proto`]); [`HloModule::to_bytes`] serializes it and [`HloModule::to_text`] prints a readable
//! HLO listing for debugging. `scripts/verify_hlo.py` executes exported modules with XLA itself and
//! compares them with Switchyard's CPU device.

mod lower;
pub mod proto;
mod text;

pub use lower::{lower, HloModule};

impl HloModule {
    /// The serialized `HloModuleProto`.
    pub fn to_bytes(&self) -> Vec<u8> {
        prost::Message::encode_to_vec(&self.proto)
    }

    /// A readable HLO listing (computations, instructions with shapes and attributes, aliases).
    pub fn to_text(&self) -> String {
        text::render(&self.proto)
    }
}

#[cfg(test)]
mod tests {
    use super::proto::HloModuleProto;
    use super::*;
    use prost::Message;
    use switchyard_runtime::conformance::all_cases;
    use switchyard_runtime::{
        bind_args, DType, Dim, ExecuteArgs, GraphBuilder, HostTensor, TensorSpec,
    };

    /// Every conformance case without block-quantized weights lowers to a module that decodes
    /// back identically, with one entry parameter per graph parameter in signature order, a root
    /// tuple of outputs then state updates, and an alias per updated state.
    #[test]
    fn conformance_graphs_lower_to_well_formed_modules() {
        let mut lowered = 0;
        for case in all_cases() {
            if case.inputs.iter().any(|(_, t)| t.dtype().is_quantized()) {
                continue;
            }
            let mut state = case.state.clone();
            let mut args = ExecuteArgs::<HostTensor>::new()
                .inputs_from(case.inputs.iter().map(|(n, t)| (n.as_str(), t)))
                .states_from(state.iter_mut().map(|(n, t)| (n.as_str(), t)));
            for (n, v) in case.dims.iter() {
                args = args.dim(n, v);
            }
            let bound = bind_args(&case.graph.signature(), &args).unwrap();
            let graph = case.graph.bind(&bound.dims).unwrap();
            let m = lower(&graph).unwrap_or_else(|e| panic!("{}: {e}", case.name));
            let back = HloModuleProto::decode(m.to_bytes().as_slice()).unwrap();
            assert_eq!(back, m.proto, "{}", case.name);
            let sig = graph.signature();
            let entry = back.computations.last().unwrap();
            assert_eq!(entry.id, back.entry_computation_id);
            let params: Vec<_> = entry
                .instructions
                .iter()
                .filter(|i| i.opcode == "parameter")
                .collect();
            assert_eq!(params.len(), sig.params.len(), "{}", case.name);
            for (k, p) in params.iter().enumerate() {
                assert_eq!(p.parameter_number, k as i64);
                assert_eq!(p.name, format!("input{k}"));
            }
            let root = entry
                .instructions
                .iter()
                .find(|i| i.id == entry.root_id)
                .unwrap();
            assert_eq!(root.opcode, "tuple");
            assert_eq!(
                root.operand_ids.len(),
                sig.outputs.len() + sig.updated_states.len()
            );
            let aliases = &back.input_output_alias.as_ref().unwrap().entries;
            assert_eq!(aliases.len(), sig.updated_states.len(), "{}", case.name);
            for (a, s) in aliases.iter().zip(&sig.updated_states) {
                let p = sig.params.iter().position(|p| &p.name == s).unwrap();
                assert_eq!(a.parameter_number, p as i64);
            }
            lowered += 1;
        }
        assert!(lowered > 100, "only {lowered} cases lowered");
    }

    fn spec(dtype: DType, dims: &[usize]) -> TensorSpec {
        TensorSpec::new(dtype, switchyard_runtime::Shape::fixed(dims))
    }

    #[test]
    fn quantized_weights_and_symbolic_shapes_are_refused_by_name() {
        let mut b = GraphBuilder::new("q");
        let x = b.input("x", spec(DType::F32, &[1, 32])).unwrap();
        let w = b
            .weight("proj.weight", spec(DType::Q8_0, &[4, 32]))
            .unwrap();
        let y = b.matmul_t(x, w).unwrap();
        b.output("y", y).unwrap();
        let e = lower(&b.finish().unwrap()).unwrap_err().to_string();
        assert!(
            e.contains("weight 'proj.weight'") && e.contains("q8_0") && e.contains("matmul"),
            "{e}"
        );

        let mut b = GraphBuilder::new("sym");
        let x = b
            .input(
                "x",
                TensorSpec::new(DType::F32, vec![Dim::sym("t", 8), Dim::Fixed(4)]),
            )
            .unwrap();
        let y = b.add(x, x).unwrap();
        b.output("y", y).unwrap();
        let e = lower(&b.finish().unwrap()).unwrap_err().to_string();
        assert!(e.contains("parameter 'x'") && e.contains("bind"), "{e}");
    }

    #[test]
    fn text_dump_shows_the_entry_signature_and_aliases() {
        let mut b = GraphBuilder::new("kv");
        let c = b.state("cache", spec(DType::F32, &[1, 8, 2])).unwrap();
        let n = b.input("new", spec(DType::F32, &[1, 1, 2])).unwrap();
        let p = b.input("pos", spec(DType::I32, &[1])).unwrap();
        let w = b.kv_write(c, n, p, 1).unwrap();
        b.update_state("cache", w).unwrap();
        let s = b.reduce(switchyard_runtime::ReduceOp::Sum, w, 1).unwrap();
        b.output("sum", s).unwrap();
        let m = lower(&b.finish().unwrap()).unwrap();
        let text = m.to_text();
        assert!(text.contains("ENTRY %main (input0: f32[1,8,2]"), "{text}");
        assert!(text.contains("dynamic-update-slice"), "{text}");
        assert!(text.contains("output {1} aliases parameter 0"), "{text}");
        assert_eq!(
            m.proto.computations.len(),
            2,
            "the entry and one add reducer"
        );
    }
}
