//! A `model.safetensors` file with arbitrary bytes: opening it and reading every tensor it
//! declares must return data or an error, never panic or read out of bounds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_models::Checkpoint;

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.safetensors"), data).unwrap();
    if let Ok(ckpt) = Checkpoint::open_dir(dir.path()) {
        let names: Vec<String> = ckpt.names().map(str::to_string).collect();
        for n in names {
            let _ = ckpt.info(&n);
            if let Ok(t) = ckpt.tensor(&n) {
                let _ = t.to_f32_vec();
            }
        }
    }
});
