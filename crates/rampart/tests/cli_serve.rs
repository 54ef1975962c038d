//! `rampart serve`'s command-line behaviour, pinned by trycmd cases.

use std::path::Path;

#[test]
fn cli_serve() {
    trycmd::TestCases::new().case("tests/cmd/serve-*.toml");
}

/// The process log is plain text when stderr is not a terminal (a file, a journal): no colour codes around the level.
#[test]
fn the_log_has_no_colour_codes_off_a_terminal() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rampart.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplain_http = true\n\
             state_dir = \"state\"\ndisable_security_stages = true\n\
             [[models]]\nname = \"digits\"\nonnx = \"{}\"\n[deploy]\ntrusted_keys = [\"{}\"]\n",
            examples.join("model/model.onnx").display(),
            examples.join("release.pub").display()
        ),
    )
    .unwrap();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--config"])
        .arg(&config)
        .arg("--check")
        .current_dir(dir.path())
        .env_remove("RAMPART_LOG")
        .env_remove("RAMPART_LOG_FORMAT")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    assert!(
        stderr.contains(" WARN rampart_gate: security stages are OFF"),
        "{stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
}
