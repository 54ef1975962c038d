//! `rampart eval`'s command-line behaviour, pinned with trycmd (`tests/cmd/eval-*.toml`).

#[test]
fn cli_eval() {
    trycmd::TestCases::new().case("tests/cmd/eval-*.toml");
}
