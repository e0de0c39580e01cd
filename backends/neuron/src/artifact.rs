//! Compiled-graph I/O naming in the Neuron convention, and the emulation artifact: a graph
//! serialized with that naming, which the project's libnrt emulator loads in place of a NEFF.
//!
//! A NEFF compiled from an XLA module names its inputs `input{i}` (entry parameter `i`) and its
//! outputs `output{j}` (element `j` of the root tuple). Switchyard orders entry parameters as the
//! graph's signature lists them and the root tuple as the graph's outputs followed by one element
//! per updated state, in parameter order; each state input is aliased to its update's output, so a
//! device tensor bound under both names is updated in place. The naming follows from a
//! [`Signature`] alone, so a NEFF compiled elsewhere can be checked against the graph it should
//! implement.

use serde::{Deserialize, Serialize};
use switchyard_runtime::{Error, Graph, GraphBuilder, ParamKind, Result, Signature, TensorSpec};

/// Magic bytes at the start of an emulation artifact (a real runtime rejects them as a NEFF).
pub const EMULATION_MAGIC: &[u8; 8] = b"SWYDEMU\0";
/// Format version of the emulation artifact.
pub const EMULATION_VERSION: u32 = 1;

/// The names under which a compiled graph's parameters and outputs are bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoNames {
    /// One per parameter, in signature order: `(parameter name, input name)`.
    pub inputs: Vec<(String, String)>,
    /// Graph outputs then state updates: `(graph output or state name, output name)`.
    pub outputs: Vec<(String, String)>,
    /// State updated in place: `(input name, output name)`.
    pub aliases: Vec<(String, String)>,
}

impl IoNames {
    /// The Neuron naming of `graph`'s I/O (see the [module documentation](self)).
    pub fn of(graph: &Graph) -> IoNames {
        Self::of_signature(&graph.signature())
    }

    /// The Neuron naming of the I/O of a graph with signature `sig`.
    pub fn of_signature(sig: &Signature) -> IoNames {
        let inputs: Vec<(String, String)> = sig
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| (p.name.clone(), format!("input{i}")))
            .collect();
        let mut outputs: Vec<(String, String)> = sig
            .outputs
            .iter()
            .enumerate()
            .map(|(j, (n, _))| (n.clone(), format!("output{j}")))
            .collect();
        let mut aliases = Vec::new();
        for state in &sig.updated_states {
            let out = format!("output{}", outputs.len());
            let input = inputs
                .iter()
                .find(|(p, _)| p == state)
                .map(|(_, i)| i.clone())
                .expect("state updates name parameters");
            aliases.push((input, out.clone()));
            outputs.push((state.clone(), out));
        }
        IoNames {
            inputs,
            outputs,
            aliases,
        }
    }

    /// The input name of parameter `param`.
    pub fn input_of(&self, param: &str) -> Option<&str> {
        self.inputs
            .iter()
            .find(|(p, _)| p == param)
            .map(|(_, n)| n.as_str())
    }
}

/// A graph packaged for the libnrt emulator: fixed shapes only, I/O named as a NEFF's would be.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmulationArtifact {
    /// The graph (every dimension fixed).
    pub graph: Graph,
    /// Its I/O names.
    pub names: IoNames,
}

impl EmulationArtifact {
    /// Packages `graph`, which must have no symbolic dimension left (bind them first).
    pub fn from_graph(graph: &Graph) -> Result<EmulationArtifact> {
        let symbolic: Vec<String> = graph
            .nodes()
            .iter()
            .flat_map(|n| {
                n.spec
                    .shape
                    .symbols()
                    .map(|(s, _)| s.to_string())
                    .collect::<Vec<_>>()
            })
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if !symbolic.is_empty() {
            return Err(Error::graph(
                "compile",
                format!(
                    "a static-shape device needs every dimension fixed, but '{}' still has symbolic dimensions {} (bind them with Graph::bind)",
                    graph.name(),
                    symbolic.join(", ")
                ),
            ));
        }
        Ok(EmulationArtifact {
            names: IoNames::of(graph),
            graph: graph.clone(),
        })
    }

    /// The artifact's bytes: magic, version (u32 little-endian), payload.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = EMULATION_MAGIC.to_vec();
        out.extend_from_slice(&EMULATION_VERSION.to_le_bytes());
        out.extend(postcard::to_stdvec(self).expect("artifacts serialize"));
        out
    }

    /// True when `bytes` start with the emulation magic.
    pub fn is_emulation_artifact(bytes: &[u8]) -> bool {
        bytes.starts_with(EMULATION_MAGIC)
    }

    /// Reads an artifact, checking magic, version, the graph (re-validated op by op) and that
    /// the names match the graph, so a corrupt or hostile file is rejected rather than trusted.
    pub fn from_bytes(bytes: &[u8]) -> Result<EmulationArtifact> {
        if !Self::is_emulation_artifact(bytes) || bytes.len() < 12 {
            return Err(Error::Serialization(
                "not a Switchyard emulation artifact (bad magic)".into(),
            ));
        }
        let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
        if version != EMULATION_VERSION {
            return Err(Error::Serialization(format!(
                "emulation artifact version {version}, this build reads version {EMULATION_VERSION}"
            )));
        }
        let a: EmulationArtifact =
            postcard::from_bytes(&bytes[12..]).map_err(|e| Error::Serialization(e.to_string()))?;
        GraphBuilder::revalidate(&a.graph)?;
        if a.names != IoNames::of(&a.graph) {
            return Err(Error::Serialization(
                "artifact I/O names do not match its graph".into(),
            ));
        }
        Ok(a)
    }

    /// Every input with its name and spec, in order.
    pub fn input_specs(&self) -> Vec<(String, TensorSpec)> {
        let sig = self.graph.signature();
        self.names
            .inputs
            .iter()
            .zip(&sig.params)
            .map(|((_, n), p)| (n.clone(), p.spec.clone()))
            .collect()
    }

    /// Every output with its name and spec, in order (graph outputs, then state updates).
    pub fn output_specs(&self) -> Vec<(String, TensorSpec)> {
        let sig = self.graph.signature();
        self.names
            .outputs
            .iter()
            .map(|(src, n)| {
                let spec = sig
                    .outputs
                    .iter()
                    .find(|(o, _)| o == src)
                    .map(|(_, s)| s.clone())
                    .or_else(|| {
                        sig.params
                            .iter()
                            .find(|p| &p.name == src && p.kind == ParamKind::State)
                            .map(|p| p.spec.clone())
                    })
                    .expect("every output name comes from the graph");
                (n.clone(), spec)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_runtime::{DType, Dim, TensorSpec};

    fn graph(t: Dim) -> Graph {
        let mut b = GraphBuilder::new("g");
        let c = b
            .state("cache", TensorSpec::new(DType::F32, [1, 4, 2]))
            .unwrap();
        let x = b
            .input(
                "x",
                TensorSpec::new(DType::F32, vec![Dim::Fixed(1), t, Dim::Fixed(2)]),
            )
            .unwrap();
        let p = b.input("pos", TensorSpec::new(DType::I32, [1])).unwrap();
        let w = b.kv_write(c, x, p, 1).unwrap();
        b.update_state("cache", w).unwrap();
        let y = b.affine(w, 2.0, 0.0).unwrap();
        b.output("y", y).unwrap();
        b.finish().unwrap()
    }

    #[test]
    fn names_follow_the_neff_convention_with_state_aliased() {
        let g = graph(Dim::Fixed(1));
        let n = IoNames::of(&g);
        assert_eq!(n.inputs[0], ("cache".to_string(), "input0".to_string()));
        assert_eq!(n.input_of("pos"), Some("input2"));
        assert_eq!(
            n.outputs,
            vec![
                ("y".into(), "output0".into()),
                ("cache".into(), "output1".into())
            ]
        );
        assert_eq!(
            n.aliases,
            vec![("input0".to_string(), "output1".to_string())]
        );
    }

    #[test]
    fn round_trip_and_rejections() {
        let a = EmulationArtifact::from_graph(&graph(Dim::Fixed(1))).unwrap();
        let bytes = a.to_bytes();
        assert_eq!(EmulationArtifact::from_bytes(&bytes).unwrap(), a);
        assert_eq!(
            a.output_specs()[1].1,
            TensorSpec::new(DType::F32, [1, 4, 2])
        );
        let err = EmulationArtifact::from_graph(&graph(Dim::sym("t", 4)))
            .unwrap_err()
            .to_string();
        assert!(err.contains("symbolic dimensions t"), "{err}");
        assert!(EmulationArtifact::from_bytes(b"\x01NEFFxxxxxxxxxxxx").is_err());
        let mut v = bytes.clone();
        v[8] = 9;
        assert!(EmulationArtifact::from_bytes(&v)
            .unwrap_err()
            .to_string()
            .contains("version 9"));
        assert!(EmulationArtifact::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    }
}
