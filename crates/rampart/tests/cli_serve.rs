//! `rampart serve`'s command-line behaviour, pinned by trycmd cases.

#[test]
fn cli_serve() {
    trycmd::TestCases::new().case("tests/cmd/serve-*.toml");
}
