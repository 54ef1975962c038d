//! CLI behaviour of `rampart keygen`, `sign`, `verify` and `diff`, pinned by trycmd cases in `tests/cmd/`.
//! The fixtures (`tests/cmd/signing.in`) hold a test-only key pair; never use it for anything else.

// Helpers outside `#[test]` functions may unwrap too (clippy.toml allows it in test code).
#![cfg(test)]

#[test]
fn cli_signing() {
    let cases = trycmd::TestCases::new();
    for glob in [
        "keygen-*.toml",
        "sign-*.toml",
        "verify-*.toml",
        "diff-*.toml",
    ] {
        cases.case(format!("tests/cmd/{glob}"));
    }
}

mod bad_input {
    //! Bad input that fixtures in git cannot hold (symlinks, loops, unreadable files): a one-line error, exit 2, and
    //! no signature file (complete or partial) left behind.

    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;
    use std::process::{Command, Output};

    const RAMPART: &str = env!("CARGO_BIN_EXE_rampart");
    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/cmd/signing.in");

    fn sign(model: &Path, sig: &Path, extra: &[&str]) -> Output {
        Command::new(RAMPART)
            .arg("sign")
            .arg(model)
            .arg("--key")
            .arg(format!("{FIXTURES}/test-private.pem"))
            .arg("--signature")
            .arg(sig)
            .args(extra)
            .output()
            .unwrap()
    }

    fn assert_refused(out: &Output, sig: &Path, needle: &str) {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(!sig.exists(), "a signature was written");
        let leftovers: Vec<_> = fs::read_dir(sig.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".rampart-tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    }

    #[test]
    fn a_symlink_is_refused_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        fs::create_dir(&model).unwrap();
        fs::write(model.join("w.bin"), b"w").unwrap();
        symlink("w.bin", model.join("link.bin")).unwrap();
        let sig = dir.path().join("model.sig");
        assert_refused(&sign(&model, &sig, &[]), &sig, "`link.bin` is a symlink");
        let out = sign(&model, &sig, &["--allow-symlinks"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(sig.exists());
    }

    #[test]
    fn a_symlink_loop_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        fs::create_dir_all(model.join("sub")).unwrap();
        fs::write(model.join("w.bin"), b"w").unwrap();
        symlink("..", model.join("sub/up")).unwrap();
        let sig = dir.path().join("model.sig");
        assert_refused(
            &sign(&model, &sig, &["--allow-symlinks"]),
            &sig,
            "symlink loop",
        );
    }

    #[test]
    fn an_unreadable_file_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let model = dir.path().join("model");
        fs::create_dir(&model).unwrap();
        let secret = model.join("secret.bin");
        fs::write(&secret, b"s").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o000)).unwrap();
        if fs::File::open(&secret).is_ok() {
            return; // running as root: permissions do not apply
        }
        let sig = dir.path().join("model.sig");
        assert_refused(&sign(&model, &sig, &[]), &sig, "secret.bin");
    }

    #[test]
    fn a_wrong_key_type_leaves_no_signature() {
        let dir = tempfile::tempdir().unwrap();
        let sig = dir.path().join("model.sig");
        let out = Command::new(RAMPART)
            .args([
                "sign",
                &format!("{FIXTURES}/model"),
                "--key",
                &format!("{FIXTURES}/rsa.pem"),
                "--signature",
            ])
            .arg(&sig)
            .output()
            .unwrap();
        assert_refused(&out, &sig, "RSA");
    }

    #[test]
    fn keygen_writes_the_private_key_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(RAMPART)
            .arg("keygen")
            .arg("--out")
            .arg(dir.path().join("k"))
            .output()
            .unwrap();
        assert!(out.status.success());
        let mode = fs::metadata(dir.path().join("k/private.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // The pair signs and verifies.
        let sig = dir.path().join("m.sig");
        let signed = Command::new(RAMPART)
            .args(["sign", &format!("{FIXTURES}/model"), "--key"])
            .arg(dir.path().join("k/private.pem"))
            .arg("--signature")
            .arg(&sig)
            .output()
            .unwrap();
        assert!(signed.status.success());
        let verified = Command::new(RAMPART)
            .args(["verify", &format!("{FIXTURES}/model"), "--key"])
            .arg(dir.path().join("k/public.pem"))
            .arg("--signature")
            .arg(&sig)
            .output()
            .unwrap();
        assert!(verified.status.success());
    }
}
