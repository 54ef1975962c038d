//! Encoded images from clients: decoding must refuse or succeed, never panic or allocate past the limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rampart_defend::image_input::{decode_one, ImageLimits};
use rampart_defend::sanitise::ImageShape;

fuzz_target!(|data: &[u8]| {
    let limits = ImageLimits { max_decoded_bytes: 1 << 20, max_side: 256, ..ImageLimits::default() };
    for shape in [ImageShape { height: 8, width: 8, channels: 1 }, ImageShape { height: 8, width: 8, channels: 3 }] {
        let _ = decode_one(data, shape, &limits);
    }
});
