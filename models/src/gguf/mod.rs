//! GGUF, the llama.cpp file format: metadata key/values, tensor infos, aligned tensor data.
//!
//! Written from the format's public specification (version 3, little-endian).

mod arch;
mod export;
mod load;
mod reader;
mod vocab;
mod writer;

pub use arch::{gguf_arch, gguf_tensor_name, GGUF_ARCHITECTURES};
pub use export::{export_gguf, permute_rotary_rows};
pub use load::{load_gguf, load_gguf_tokenizer, GgufWeights};
pub use reader::{GgufFile, GgufTensorInfo};
pub use vocab::VOCABULARY_KINDS;
pub use writer::{GgufValue, GgufWriter};

/// The WordPiece tokenizer of a `bert` file (`None` when it has no vocabulary).
pub(crate) fn vocab_wordpiece(f: &GgufFile) -> crate::error::Result<Option<tokenizers::Tokenizer>> {
    match f.get("tokenizer.ggml.model").and_then(|v| v.as_str()) {
        Some("bert") => vocab::wordpiece::tokenizer(f).map(Some),
        None | Some("none") | Some("no_vocab") => Ok(None),
        Some(other) => Err(f.key_error(
            "tokenizer.ggml.model",
            format!("vocabulary kind '{other}' is not WordPiece (bert)"),
        )),
    }
}

use switchyard_runtime::DType;

/// The GGUF magic bytes.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The format version written.
pub const VERSION: u32 = 3;
/// Default alignment of tensor data.
pub const DEFAULT_ALIGNMENT: usize = 32;

/// The ggml type id of a dtype, as GGUF tensor infos record it.
pub fn ggml_type(d: DType) -> Option<u32> {
    ALL_GGML.iter().find(|(x, _)| *x == d).map(|(_, id)| *id)
}

/// The dtype of a ggml type id.
pub fn dtype_of_ggml(t: u32) -> Option<DType> {
    ALL_GGML.iter().find(|(_, id)| *id == t).map(|(d, _)| *d)
}

const ALL_GGML: [(DType, u32); 15] = [
    (DType::F32, 0),
    (DType::F16, 1),
    (DType::Q4_0, 2),
    (DType::Q4_1, 3),
    (DType::Q5_0, 6),
    (DType::Q5_1, 7),
    (DType::Q8_0, 8),
    (DType::Q2K, 10),
    (DType::Q3K, 11),
    (DType::Q4K, 12),
    (DType::Q5K, 13),
    (DType::Q6K, 14),
    (DType::I32, 26),
    (DType::I64, 27),
    (DType::BF16, 30),
];

/// `general.file_type` for a model whose matrices are mostly `d`.
pub fn file_type(d: DType) -> u32 {
    match d {
        DType::F32 => 0,
        DType::F16 => 1,
        DType::Q4_0 => 2,
        DType::Q4_1 => 3,
        DType::Q8_0 => 7,
        DType::Q5_0 => 8,
        DType::Q5_1 => 9,
        DType::Q2K => 10,
        DType::Q3K => 12,
        DType::Q4K => 15,
        DType::Q5K => 17,
        DType::Q6K => 18,
        DType::BF16 => 32,
        _ => 0,
    }
}
