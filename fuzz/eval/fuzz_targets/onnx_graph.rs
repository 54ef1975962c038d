//! Any bytes given as an ONNX model: the graph reader and the engine must refuse them or run them, never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(engine) = rampart_eval::Engine::from_onnx(data) {
        let x = vec![0.5f32; engine.features().min(1 << 16)];
        if x.len() == engine.features() {
            let _ = engine.loss_gradient(&x, &[0]);
        }
    }
});
