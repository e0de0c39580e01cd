//! `tokenizer.json` and `tokenizer_config.json` with arbitrary bytes (the input split at its first
//! NUL): loading them, and encoding (whole and truncated) and decoding with a tokenizer that loads.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_models::{Tokenizer, TokenizerConfig};

fuzz_target!(|data: &[u8]| {
    let (tok, cfg) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let dir = tempfile::tempdir().unwrap();
    let tok_path = dir.path().join("tokenizer.json");
    let cfg_path = dir.path().join("tokenizer_config.json");
    std::fs::write(&tok_path, tok).unwrap();
    std::fs::write(&cfg_path, cfg).unwrap();
    if let Ok(t) = Tokenizer::from_file(&tok_path) {
        if let Ok(ids) = t.encode("Hello, world! Ünïcödé 🚂", true) {
            let _ = t.decode(&ids, false);
        }
        let _ = t.decode(&[0, 1, 2, u32::MAX], true);
        // What an encoder does with it: truncation to a model's limit (tiny ones included).
        for limit in [1, 3, 8] {
            if let Ok(cut) = t.truncating(limit) {
                let _ = cut.encode_truncated("Hello, world! Ünïcödé 🚂");
            }
        }
    }
    let _ = TokenizerConfig::from_file(&cfg_path);
});
