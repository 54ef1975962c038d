//! The KServe v2 request parser, the gateway's first parser of hostile JSON: it must never panic, and never allocate
//! beyond its bounds. The first byte picks whether the rest is read with a binary-extension header length.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rampart_infer::kserve::{parse_request, parse_response, Bounds};

fuzz_target!(|data: &[u8]| {
    let bounds = Bounds { max_depth: 16, max_elements: 1 << 16 };
    let Some((&first, rest)) = data.split_first() else { return };
    let json_len = (first & 1 == 1).then(|| usize::from(first >> 1).min(rest.len()));
    let _ = parse_request(rest, json_len, bounds);
    let _ = parse_response(rest, bounds);
});
