//! `rampart data` behaviour pinned by trycmd cases (tests/cmd/data-*.toml).

#[test]
fn cli_data() {
    trycmd::TestCases::new().case("tests/cmd/data-*.toml");
}
