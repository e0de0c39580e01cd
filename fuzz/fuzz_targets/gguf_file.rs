//! A `.gguf` file with arbitrary bytes: the reader, metadata to config, the embedded vocabulary
//! to a tokenizer, and reading every tensor must return results or errors, never panic.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_models::gguf::{load_gguf, GgufFile};

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, data).unwrap();
    if let Ok(f) = GgufFile::open(&path) {
        let _ = f.version();
        let keys: Vec<String> = f.keys().map(str::to_string).collect();
        for k in keys {
            let _ = f.get(&k);
        }
        for n in f.tensor_names().to_vec() {
            let _ = f.info(&n);
            if let Ok(t) = f.tensor(&n) {
                let _ = t.to_f32_vec();
            }
        }
    }
    let _ = load_gguf(&path);
});
