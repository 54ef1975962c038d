#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]
//! The registry and export control: push refuses bad signatures leaving nothing; export is refused by default,
//! allowed once after an approval by another approver with a fresh TOTP code, then refused again.

mod common;

use rampart_deploy::export::ExportControl;
use rampart_deploy::totp;
use rampart_deploy::{Error, Registry};

fn denied(result: Result<impl std::fmt::Debug, Error>, needle: &str) {
    match result {
        Err(Error::Denied(reason)) => assert!(reason.contains(needle), "{reason}"),
        other => panic!("expected a denial containing `{needle}`, got {other:?}"),
    }
}

fn secret(enrollment: &rampart_deploy::export::Enrollment) -> Vec<u8> {
    totp::base32_decode(&enrollment.secret).unwrap()
}

#[test]
fn push_load_and_export_control() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let key = common::key();
    let config = common::config(&key);
    let registry = Registry::open(&state);

    // A bad signature is refused and leaves nothing behind.
    let tampered = tmp.path().join("tampered");
    common::good_model(&tampered, &key, "x");
    std::fs::write(tampered.join("config.json"), b"{}").unwrap();
    assert!(matches!(
        registry.push(&tampered, "digits", "1", "alice", &config),
        Err(Error::Refused(_))
    ));
    let model_dir = state.join("registry").join("digits");
    assert!(!model_dir.exists() || std::fs::read_dir(&model_dir).unwrap().next().is_none());

    let good = tmp.path().join("good");
    common::good_model(&good, &key, "1");
    let info = registry
        .push(&good, "digits", "1", "alice", &config)
        .unwrap();
    assert!(info.root_digest.starts_with("sha256:"));
    assert!(matches!(
        registry.push(&good, "digits", "1", "alice", &config),
        Err(Error::Exists(_))
    ));
    assert_eq!(registry.list(None).unwrap(), vec![info]);
    // Sealed at rest: the ONNX bytes are nowhere in plaintext.
    let sealed = std::fs::read(model_dir.join("1").join("model.age")).unwrap();
    assert!(sealed.starts_with(b"age-encryption.org/v1"));
    let files = registry.load("digits", "1", "gateway", &config).unwrap();
    let onnx = std::fs::read(common::onnx()).unwrap();
    assert!(files.iter().any(|f| f.data == onnx));

    let control = ExportControl::new(&registry);
    let bob = control
        .enroll("bob", &["approver".into()], false, "admin")
        .unwrap();
    let alice = control
        .enroll("alice", &["approver".into()], false, "admin")
        .unwrap();
    let carol = control.enroll("carol", &[], false, "admin").unwrap();
    assert!(bob.uri.starts_with("otpauth://totp/Rampart:bob?secret="));
    assert!(matches!(
        control.enroll("bob", &[], false, "admin"),
        Err(Error::Exists(_))
    ));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(state.join("mfa/bob.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Refused by default.
    let out = tmp.path().join("out");
    denied(
        control.export("digits", "1", "carol", &out),
        "no live approved export",
    );
    assert!(!out.exists());

    let request = control.request("digits", "1", "carol").unwrap();
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Self-approval, a non-approver and wrong codes are refused.
    let carol_code = totp::code_at(&secret(&carol), t);
    denied(
        control.approve_at(&request.id, "carol", &carol_code, t),
        "its own request",
    );
    let other = control.request("digits", "1", "bob").unwrap();
    denied(
        control.approve_at(&other.id, "carol", &carol_code, t),
        "approver",
    );
    let bob_code = totp::code_at(&secret(&bob), t);
    let wrong = format!("{:06}", (bob_code.parse::<u32>().unwrap() + 1) % 1_000_000);
    denied(
        control.approve_at(&request.id, "bob", &wrong, t),
        "wrong TOTP code",
    );
    denied(
        control.approve_at(&request.id, "bob", "12ab56", t),
        "6 digits",
    );
    denied(
        control.approve_at(
            &request.id,
            "bob",
            &totp::code_at(&secret(&bob), t - 300),
            t,
        ),
        "wrong TOTP code",
    );

    // Approved once by bob: carol exports once.
    let approved = control
        .approve_at(&request.id, "bob", &bob_code, t)
        .unwrap();
    assert_eq!(approved.approver.as_deref(), Some("bob"));
    denied(
        control.approve_at(&request.id, "alice", &totp::code_at(&secret(&alice), t), t),
        "already approved",
    );
    denied(
        control.export_at("digits", "1", "bob", &out, t + 10),
        "no live approved export",
    );
    control
        .export_at("digits", "1", "carol", &out, t + 10)
        .unwrap();
    assert_eq!(std::fs::read(out.join("model.onnx")).unwrap(), onnx);
    let out2 = tmp.path().join("out2");
    denied(
        control.export_at("digits", "1", "carol", &out2, t + 20),
        "no live approved export",
    );

    // The same code cannot be replayed, even for another request; a later code works.
    let again = control.request("digits", "1", "carol").unwrap();
    denied(
        control.approve_at(&again.id, "bob", &bob_code, t + 5),
        "already used",
    );
    let next = totp::code_at(&secret(&bob), t + 30);
    control.approve_at(&again.id, "bob", &next, t + 30).unwrap();
    // The grant expires.
    denied(
        control.export_at(
            "digits",
            "1",
            "carol",
            &out2,
            t + 30 + rampart_deploy::export::GRANT_TTL + 1,
        ),
        "no live approved export",
    );
    assert!(!out2.exists());

    // Everything was logged and the log verifies.
    let audit = state.join("audit");
    let verifier = rampart_log::read_verifier(&audit, None).unwrap();
    let verification = rampart_log::verify(&audit, verifier, &[]).unwrap();
    assert!(verification.problem.is_none(), "{:?}", verification.problem);
    let view =
        rampart_log::LogView::open(&audit, rampart_log::read_verifier(&audit, None).unwrap())
            .unwrap();
    let size = view.checkpoint().size;
    let mut actions = Vec::new();
    for i in 0..size {
        let record: rampart_log::Record = serde_json::from_slice(&view.entry(i).unwrap()).unwrap();
        assert!(!serde_json::to_string(&record)
            .unwrap()
            .contains(&bob.secret));
        actions.push(format!("{}:{}", record.action, record.outcome));
    }
    for expected in [
        "registry.push:refused",
        "registry.push:ok",
        "registry.load:pass",
        "mfa.enroll:ok",
        "export:denied",
        "export.request:ok",
        "export.approve:denied",
        "export.approve:ok",
        "export:ok",
    ] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} missing from {actions:?}"
        );
    }
}
