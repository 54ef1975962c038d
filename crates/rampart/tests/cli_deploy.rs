//! `rampart deploy`, `push`, `mfa` and `export` from the outside: trycmd cases pin messages and exit codes.

#[test]
fn cli_cases() {
    trycmd::TestCases::new()
        .case("tests/cmd/deploy-*.toml")
        .case("tests/cmd/push-*.toml")
        .case("tests/cmd/export-*.toml");
}
