//! JWTs and JWKS documents: any bytes must be refused (or accepted) without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    rampart_auth::fuzz_jwt(data);
});
