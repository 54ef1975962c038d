//! CLI behaviour of `rampart profile` and `rampart watermark`, pinned with trycmd.

#[test]
fn cli_defend() {
    let cases = trycmd::TestCases::new();
    cases
        .case("tests/cmd/profile-*.toml")
        .case("tests/cmd/watermark-*.toml");
}
