//! CLI behaviour of `rampart keygen`, `sign`, `verify` and `diff`, pinned by trycmd cases in `tests/cmd/`.
//! The fixtures (`tests/cmd/signing.in`) hold a test-only key pair; never use it for anything else.

#[test]
fn cli_signing() {
    let cases = trycmd::TestCases::new();
    for glob in ["keygen-*.toml", "sign-*.toml", "verify-*.toml", "diff-*.toml"] {
        cases.case(format!("tests/cmd/{glob}"));
    }
}
