//! An engine step never reads a value back from the device mid-graph: token ids and positions
//! come from the host with their values, so gathers and KV writes find what they need without a
//! device-to-host copy (on a GPU each would stall the stream). Its own test binary, so no other
//! test moves the process-wide counter.

use std::path::PathBuf;
use switchyard_candle::{profile, CandleDevice};
use switchyard_models::{Engine, EngineOptions, Model};

#[test]
fn prefill_and_decode_read_nothing_back_mid_graph() {
    let devices: [fn() -> CandleDevice; 2] = [CandleDevice::cpu_portable, CandleDevice::cpu];
    for device in devices {
        for arch in ["llama", "gpt2", "gemma2"] {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures")
                .join(arch);
            let model = Model::load_dir(&dir).unwrap();
            let engine = Engine::new(
                device(),
                &model.config,
                model.weights.as_ref(),
                &EngineOptions::default(),
            )
            .unwrap();
            let mut s = engine.new_session().unwrap();
            let before = profile::host_reads();
            let mut token = engine.prefill_greedy(&mut s, &[1, 2, 3, 4, 5]).unwrap();
            for _ in 0..10 {
                token = engine.decode_greedy(&mut s, token).unwrap();
            }
            engine.decode(&mut s, token).unwrap();
            assert_eq!(
                profile::host_reads(),
                before,
                "{arch}: values read back mid-graph"
            );
        }
    }
}
