//! The subset of XLA's `HloModuleProto` schema Switchyard writes, declared with `prost` from the
//! public schema's field numbers (`xla/service/hlo.proto`, `xla/xla_data.proto`). Only the fields
//! the exporter sets are declared; protobuf readers skip nothing they need and ignore nothing we
//! write.

/// `xla.PrimitiveType`: element types of arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PrimitiveType {
    /// Unset.
    Invalid = 0,
    /// Boolean.
    Pred = 1,
    /// i8
    S8 = 2,
    /// i16
    S16 = 3,
    /// i32
    S32 = 4,
    /// i64
    S64 = 5,
    /// u8
    U8 = 6,
    /// u16
    U16 = 7,
    /// u32
    U32 = 8,
    /// u64
    U64 = 9,
    /// f16
    F16 = 10,
    /// f32
    F32 = 11,
    /// f64
    F64 = 12,
    /// A tuple shape.
    Tuple = 13,
    /// bf16
    Bf16 = 16,
}

impl PrimitiveType {
    /// The name HLO text uses (`f32`, `s32`, `pred`, ...).
    pub fn hlo_name(self) -> &'static str {
        match self {
            PrimitiveType::Invalid => "invalid",
            PrimitiveType::Pred => "pred",
            PrimitiveType::S8 => "s8",
            PrimitiveType::S16 => "s16",
            PrimitiveType::S32 => "s32",
            PrimitiveType::S64 => "s64",
            PrimitiveType::U8 => "u8",
            PrimitiveType::U16 => "u16",
            PrimitiveType::U32 => "u32",
            PrimitiveType::U64 => "u64",
            PrimitiveType::F16 => "f16",
            PrimitiveType::F32 => "f32",
            PrimitiveType::F64 => "f64",
            PrimitiveType::Tuple => "tuple",
            PrimitiveType::Bf16 => "bf16",
        }
    }

    /// Floating-point types.
    pub fn is_float(self) -> bool {
        matches!(
            self,
            PrimitiveType::F16 | PrimitiveType::F32 | PrimitiveType::F64 | PrimitiveType::Bf16
        )
    }

    /// Unsigned integer types.
    pub fn is_unsigned(self) -> bool {
        matches!(
            self,
            PrimitiveType::U8 | PrimitiveType::U16 | PrimitiveType::U32 | PrimitiveType::U64
        )
    }
}

/// `xla.LayoutProto`: dimension order in memory.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LayoutProto {
    /// Dimensions from fastest to slowest varying.
    #[prost(int64, repeated, tag = "1")]
    pub minor_to_major: Vec<i64>,
}

/// `xla.ShapeProto`: an array's element type and dimensions, or a tuple of shapes.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ShapeProto {
    /// Element type (or `Tuple`).
    #[prost(enumeration = "PrimitiveType", tag = "2")]
    pub element_type: i32,
    /// Array dimensions.
    #[prost(int64, repeated, tag = "3")]
    pub dimensions: Vec<i64>,
    /// Element shapes of a tuple.
    #[prost(message, repeated, tag = "4")]
    pub tuple_shapes: Vec<ShapeProto>,
    /// Memory layout of an array.
    #[prost(message, optional, tag = "5")]
    pub layout: Option<LayoutProto>,
}

/// `xla.ProgramShapeProto`: a computation's signature.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ProgramShapeProto {
    /// Parameter shapes in order.
    #[prost(message, repeated, tag = "1")]
    pub parameters: Vec<ShapeProto>,
    /// Result shape.
    #[prost(message, optional, tag = "2")]
    pub result: Option<ShapeProto>,
    /// Parameter names.
    #[prost(string, repeated, tag = "3")]
    pub parameter_names: Vec<String>,
}

/// `xla.LiteralProto`: a constant's value (the field matching its element type is set).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LiteralProto {
    /// Its shape.
    #[prost(message, optional, tag = "1")]
    pub shape: Option<ShapeProto>,
    /// `pred` values.
    #[prost(bool, repeated, tag = "2")]
    pub preds: Vec<bool>,
    /// `u8` values.
    #[prost(bytes = "vec", tag = "3")]
    pub u8s: Vec<u8>,
    /// `s32` values.
    #[prost(int32, repeated, tag = "4")]
    pub s32s: Vec<i32>,
    /// `s64` values.
    #[prost(int64, repeated, tag = "5")]
    pub s64s: Vec<i64>,
    /// `u32` values.
    #[prost(uint32, repeated, tag = "6")]
    pub u32s: Vec<u32>,
    /// `f32` values.
    #[prost(float, repeated, tag = "8")]
    pub f32s: Vec<f32>,
    /// `f16` values, little-endian bytes.
    #[prost(bytes = "vec", tag = "11")]
    pub f16s: Vec<u8>,
    /// `bf16` values, little-endian bytes.
    #[prost(bytes = "vec", tag = "13")]
    pub bf16s: Vec<u8>,
}

/// `xla.DotDimensionNumbers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DotDimensionNumbers {
    /// Contracted dimensions of the left operand.
    #[prost(int64, repeated, tag = "1")]
    pub lhs_contracting_dimensions: Vec<i64>,
    /// Contracted dimensions of the right operand.
    #[prost(int64, repeated, tag = "2")]
    pub rhs_contracting_dimensions: Vec<i64>,
    /// Batch dimensions of the left operand.
    #[prost(int64, repeated, tag = "3")]
    pub lhs_batch_dimensions: Vec<i64>,
    /// Batch dimensions of the right operand.
    #[prost(int64, repeated, tag = "4")]
    pub rhs_batch_dimensions: Vec<i64>,
}

/// `xla.GatherDimensionNumbers`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GatherDimensionNumbers {
    /// Output dimensions that index into a slice.
    #[prost(int64, repeated, tag = "1")]
    pub offset_dims: Vec<i64>,
    /// Operand dimensions of size 1 dropped from each slice.
    #[prost(int64, repeated, tag = "2")]
    pub collapsed_slice_dims: Vec<i64>,
    /// Which operand dimension each index component addresses.
    #[prost(int64, repeated, tag = "3")]
    pub start_index_map: Vec<i64>,
    /// The dimension of the indices holding index vectors (its rank: implicit size-1 vectors).
    #[prost(int64, tag = "4")]
    pub index_vector_dim: i64,
}

/// `xla.HloInstructionProto.SliceDimensions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SliceDimensions {
    /// First index.
    #[prost(int64, tag = "1")]
    pub start: i64,
    /// One past the last index.
    #[prost(int64, tag = "2")]
    pub limit: i64,
    /// Step.
    #[prost(int64, tag = "3")]
    pub stride: i64,
}

/// `xla.HloInstructionProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HloInstructionProto {
    /// Unique name within the module.
    #[prost(string, tag = "1")]
    pub name: String,
    /// `add`, `dot`, `parameter`, ...
    #[prost(string, tag = "2")]
    pub opcode: String,
    /// Result shape.
    #[prost(message, optional, tag = "3")]
    pub shape: Option<ShapeProto>,
    /// Value of a `constant`.
    #[prost(message, optional, tag = "8")]
    pub literal: Option<LiteralProto>,
    /// Number of a `parameter`.
    #[prost(int64, tag = "9")]
    pub parameter_number: i64,
    /// Index of a `get-tuple-element`.
    #[prost(int64, tag = "13")]
    pub tuple_index: i64,
    /// Dimensions of `broadcast`, `reduce`, `transpose`, `concatenate`, `iota`.
    #[prost(int64, repeated, tag = "14")]
    pub dimensions: Vec<i64>,
    /// Ranges of a `slice`.
    #[prost(message, repeated, tag = "17")]
    pub slice_dimensions: Vec<SliceDimensions>,
    /// Dimension numbers of a `dot`.
    #[prost(message, optional, tag = "30")]
    pub dot_dimension_numbers: Option<DotDimensionNumbers>,
    /// Dimension numbers of a `gather`.
    #[prost(message, optional, tag = "33")]
    pub gather_dimension_numbers: Option<GatherDimensionNumbers>,
    /// Slice sizes of a `gather`.
    #[prost(int64, repeated, tag = "34")]
    pub gather_slice_sizes: Vec<i64>,
    /// Unique id within the module.
    #[prost(int64, tag = "35")]
    pub id: i64,
    /// Operands, by id.
    #[prost(int64, repeated, tag = "36")]
    pub operand_ids: Vec<i64>,
    /// Computations this instruction calls (a `reduce`'s reducer), by id.
    #[prost(int64, repeated, tag = "38")]
    pub called_computation_ids: Vec<i64>,
    /// `EQ`, `NE`, `LT`, `LE`, `GT`, `GE` of a `compare`.
    #[prost(string, tag = "63")]
    pub comparison_direction: String,
    /// `FLOAT`, `SIGNED` or `UNSIGNED` of a `compare`.
    #[prost(string, tag = "72")]
    pub comparison_type: String,
}

/// `xla.HloComputationProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HloComputationProto {
    /// Its name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Instructions, operands before users.
    #[prost(message, repeated, tag = "2")]
    pub instructions: Vec<HloInstructionProto>,
    /// Its signature.
    #[prost(message, optional, tag = "4")]
    pub program_shape: Option<ProgramShapeProto>,
    /// Unique id within the module.
    #[prost(int64, tag = "5")]
    pub id: i64,
    /// The id of the root instruction.
    #[prost(int64, tag = "6")]
    pub root_id: i64,
}

/// `xla.HloInputOutputAliasProto.AliasEntryProto`: an output that shares a parameter's buffer.
#[derive(Clone, PartialEq, prost::Message)]
pub struct AliasEntryProto {
    /// Index of the output in the root tuple.
    #[prost(int64, repeated, tag = "1")]
    pub output_shape_index: Vec<i64>,
    /// The parameter.
    #[prost(int64, tag = "2")]
    pub parameter_number: i64,
    /// Index within the parameter (empty: the whole parameter).
    #[prost(int64, repeated, tag = "3")]
    pub parameter_shape_index: Vec<i64>,
    /// `MAY_ALIAS` (1) or `MUST_ALIAS` (2).
    #[prost(int32, tag = "4")]
    pub kind: i32,
}

/// `MAY_ALIAS` of `xla.Kind`.
pub const MAY_ALIAS: i32 = 1;

/// `xla.HloInputOutputAliasProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HloInputOutputAliasProto {
    /// The aliased pairs.
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<AliasEntryProto>,
}

/// `xla.HloModuleProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HloModuleProto {
    /// Module name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Name of the entry computation.
    #[prost(string, tag = "2")]
    pub entry_computation_name: String,
    /// Computations, callees before callers (the entry last).
    #[prost(message, repeated, tag = "3")]
    pub computations: Vec<HloComputationProto>,
    /// The entry computation's signature.
    #[prost(message, optional, tag = "4")]
    pub host_program_shape: Option<ProgramShapeProto>,
    /// Module id.
    #[prost(int64, tag = "5")]
    pub id: i64,
    /// Id of the entry computation.
    #[prost(int64, tag = "6")]
    pub entry_computation_id: i64,
    /// Outputs that update parameters in place.
    #[prost(message, optional, tag = "8")]
    pub input_output_alias: Option<HloInputOutputAliasProto>,
}
