//! A readable listing of an HLO module, close to XLA's text format, for debugging exports.

use super::proto::*;
use std::collections::HashMap;
use std::fmt::Write;

fn shape(s: &ShapeProto) -> String {
    let ty = PrimitiveType::try_from(s.element_type).unwrap_or(PrimitiveType::Invalid);
    if ty == PrimitiveType::Tuple {
        let parts: Vec<String> = s.tuple_shapes.iter().map(shape).collect();
        return format!("({})", parts.join(", "));
    }
    let dims: Vec<String> = s.dimensions.iter().map(|d| d.to_string()).collect();
    let layout = s
        .layout
        .as_ref()
        .map(|l| {
            let m: Vec<String> = l.minor_to_major.iter().map(|d| d.to_string()).collect();
            format!("{{{}}}", m.join(","))
        })
        .unwrap_or_default();
    format!("{}[{}]{layout}", ty.hlo_name(), dims.join(","))
}

fn list(v: &[i64]) -> String {
    v.iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn literal(l: &LiteralProto) -> String {
    let n = l
        .f32s
        .len()
        .max(l.s32s.len())
        .max(l.s64s.len())
        .max(l.u32s.len());
    let first: Option<String> = l
        .f32s
        .first()
        .map(|v| v.to_string())
        .or_else(|| l.s32s.first().map(|v| v.to_string()))
        .or_else(|| l.s64s.first().map(|v| v.to_string()))
        .or_else(|| l.u32s.first().map(|v| v.to_string()))
        .or_else(|| l.u8s.first().map(|v| v.to_string()))
        .or_else(|| l.preds.first().map(|v| v.to_string()));
    match (
        first,
        n.max(l.u8s.len())
            .max(l.f16s.len() / 2)
            .max(l.bf16s.len() / 2),
    ) {
        (Some(v), 1) => v,
        (_, 0) => "{...}".into(),
        (_, n) => format!("{{...{n} values}}"),
    }
}

/// The module as text.
pub(crate) fn render(m: &HloModuleProto) -> String {
    let mut out = String::new();
    let names: HashMap<i64, &str> = m
        .computations
        .iter()
        .flat_map(|c| c.instructions.iter().map(|i| (i.id, i.name.as_str())))
        .collect();
    let comp_names: HashMap<i64, &str> = m
        .computations
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let _ = writeln!(out, "HloModule {}", m.name);
    if let Some(a) = &m.input_output_alias {
        for e in &a.entries {
            let _ = writeln!(
                out,
                "// output {{{}}} aliases parameter {} (state updated in place)",
                list(&e.output_shape_index),
                e.parameter_number
            );
        }
    }
    for c in &m.computations {
        let entry = c.id == m.entry_computation_id;
        let sig = c.program_shape.as_ref();
        let params: Vec<String> = sig
            .map(|p| {
                p.parameters
                    .iter()
                    .zip(&p.parameter_names)
                    .map(|(s, n)| format!("{n}: {}", shape(s)))
                    .collect()
            })
            .unwrap_or_default();
        let result = sig
            .and_then(|p| p.result.as_ref())
            .map(shape)
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{}%{} ({}) -> {result} {{",
            if entry { "ENTRY " } else { "" },
            c.name,
            params.join(", ")
        );
        for i in &c.instructions {
            let operands: Vec<String> = i
                .operand_ids
                .iter()
                .map(|o| format!("%{}", names.get(o).copied().unwrap_or("?")))
                .collect();
            let mut args = operands.join(", ");
            if i.opcode == "parameter" {
                args = i.parameter_number.to_string();
            }
            if i.opcode == "constant" {
                args = i.literal.as_ref().map(literal).unwrap_or_default();
            }
            let mut attrs = Vec::new();
            if !i.dimensions.is_empty() || matches!(i.opcode.as_str(), "broadcast" | "reduce") {
                attrs.push(format!("dimensions={{{}}}", list(&i.dimensions)));
            }
            if !i.slice_dimensions.is_empty() {
                let r: Vec<String> = i
                    .slice_dimensions
                    .iter()
                    .map(|s| format!("[{}:{}]", s.start, s.limit))
                    .collect();
                attrs.push(format!("slice={{{}}}", r.join(", ")));
            }
            if let Some(d) = &i.dot_dimension_numbers {
                if !d.lhs_batch_dimensions.is_empty() {
                    attrs.push(format!(
                        "lhs_batch_dims={{{}}}",
                        list(&d.lhs_batch_dimensions)
                    ));
                    attrs.push(format!(
                        "rhs_batch_dims={{{}}}",
                        list(&d.rhs_batch_dimensions)
                    ));
                }
                attrs.push(format!(
                    "lhs_contracting_dims={{{}}}",
                    list(&d.lhs_contracting_dimensions)
                ));
                attrs.push(format!(
                    "rhs_contracting_dims={{{}}}",
                    list(&d.rhs_contracting_dimensions)
                ));
            }
            if let Some(g) = &i.gather_dimension_numbers {
                attrs.push(format!(
                    "offset_dims={{{}}}, collapsed_slice_dims={{{}}}, start_index_map={{{}}}, index_vector_dim={}, slice_sizes={{{}}}",
                    list(&g.offset_dims),
                    list(&g.collapsed_slice_dims),
                    list(&g.start_index_map),
                    g.index_vector_dim,
                    list(&i.gather_slice_sizes)
                ));
            }
            if i.opcode == "get-tuple-element" {
                attrs.push(format!("index={}", i.tuple_index));
            }
            if !i.comparison_direction.is_empty() {
                attrs.push(format!("direction={}", i.comparison_direction));
            }
            for c in &i.called_computation_ids {
                attrs.push(format!(
                    "to_apply=%{}",
                    comp_names.get(c).copied().unwrap_or("?")
                ));
            }
            let attrs = if attrs.is_empty() {
                String::new()
            } else {
                format!(", {}", attrs.join(", "))
            };
            let root = if i.id == c.root_id { "ROOT " } else { "" };
            let _ = writeln!(
                out,
                "  {root}%{} = {} {}({args}){attrs}",
                i.name,
                i.shape.as_ref().map(shape).unwrap_or_default(),
                i.opcode
            );
        }
        let _ = writeln!(out, "}}");
    }
    out
}
