//! `config.json` with arbitrary bytes: either a `ModelConfig` that passes its own checks (and
//! yields a parameter count) or an error naming the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_models::ModelConfig;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("config.json");
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(cfg) = ModelConfig::from_json(path, &json) {
            let _ = cfg.parameter_count();
        }
    }
});
