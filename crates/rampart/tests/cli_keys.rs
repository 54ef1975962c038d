//! `rampart keys`: CLI behaviour pinned with trycmd cases (`tests/cmd/keys-*.toml`).

#[test]
fn cli_keys() {
    trycmd::TestCases::new().case("tests/cmd/keys-*.toml");
}
