//! A `model.safetensors.index.json` with arbitrary bytes next to one valid shard: the index is
//! checked against the shards it names (paths stay inside the directory).
#![no_main]
use libfuzzer_sys::fuzz_target;
use switchyard_models::Checkpoint;

/// A valid one-tensor shard (`w`, f32 [2]).
fn shard() -> Vec<u8> {
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(&[0u8; 8]);
    out
}

fuzz_target!(|data: &[u8]| {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model-00001-of-00001.safetensors"), shard()).unwrap();
    std::fs::write(dir.path().join("model.safetensors.index.json"), data).unwrap();
    if let Ok(ckpt) = Checkpoint::open_dir(dir.path()) {
        let names: Vec<String> = ckpt.names().map(str::to_string).collect();
        for n in names {
            let _ = ckpt.tensor(&n);
        }
    }
});
