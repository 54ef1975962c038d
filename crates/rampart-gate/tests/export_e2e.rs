//! Export control over HTTP, over a real socket: refused by default (the embedded policy forbids `export`); with
//! a policy that permits it, refused until another principal with the `approver` role approves with a fresh TOTP
//! code, then allowed once; self-approval, a wrong code and a replayed code are refused; everything is logged.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::net::SocketAddr;
use std::path::Path;

use rampart_deploy::export::ExportControl;
use rampart_deploy::{totp, GateConfig, Registry, TrustedKey};
use rampart_gate::config::Config;
use rampart_gate::Parts;
use tokio::sync::watch;

const PERMISSIVE: &str = r#"
permit (principal in Rampart::Role::"admin", action, resource);
permit (
  principal in Rampart::Role::"user",
  action in [Rampart::Action::"infer", Rampart::Action::"read_metadata", Rampart::Action::"export", Rampart::Action::"approve"],
  resource
);
"#;

/// A state dir with version `1` of `digits` in the registry, approver `bob` enrolled, and API keys for `carol`
/// (requester) and `bob`; returns the work directory, the keys and bob's TOTP secret.
fn setup() -> (tempfile::TempDir, String, String, Vec<u8>) {
    let (work, key) = common::workspace();
    let dir = work.path();
    let model = common::model_dir(dir, "model", Some(&key));
    let state = dir.join("state");
    let registry = Registry::open(&state);
    let gate = GateConfig::new(vec![TrustedKey {
        name: "release.pub".into(),
        key: key.verifying_key(),
    }]);
    registry.push(&model, "digits", "1", "ci", &gate).unwrap();
    let enrollment = ExportControl::new(&registry)
        .enroll("bob", &["approver".to_owned()], false, "admin")
        .unwrap();
    let keys = rampart_auth::ApiKeyStore::open(&state).unwrap();
    let carol = keys.add("carol", &["user".to_owned()]).unwrap().key;
    let bob = keys.add("bob", &["user".to_owned()]).unwrap().key;
    (
        work,
        carol,
        bob,
        totp::base32_decode(&enrollment.secret).unwrap(),
    )
}

async fn start(
    dir: &Path,
    policy: &str,
) -> (SocketAddr, watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplain_http = true\nstate_dir = \"state\"\nshutdown_grace_secs = 2\n[auth]\ncreate_first_key = false\n[deploy]\ntrusted_keys = [\"release.pub\"]\n{policy}\n[[models]]\nname = \"digits\"\nonnx = \"model/model.onnx\"\nworkers = 1\n"
    );
    let config = Config::parse(&text, &dir.join("rampart.toml"), dir).unwrap();
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let addr = prepared.address;
    (addr, stop, tokio::spawn(prepared.serve(shutdown)))
}

async fn call(addr: SocketAddr, key: &str, method: &str, path: &str, body: &str) -> (u16, Vec<u8>) {
    common::http(addr, key, method, path, body.as_bytes()).await
}

fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_is_refused_by_default_and_allowed_once_per_approval() {
    let (dir, carol, bob, secret) = setup();
    let ask = r#"{"model": "digits", "version": "1"}"#;
    let fetch = "/v2/models/digits/versions/1/export";

    // The embedded policy forbids export to everyone.
    let (addr, stop, task) = start(dir.path(), "").await;
    assert_eq!(call(addr, &carol, "POST", "/v2/exports", ask).await.0, 403);
    assert_eq!(call(addr, &carol, "GET", fetch, "").await.0, 403);
    assert_eq!(
        call(addr, "rmp_000000000000_nope", "GET", fetch, "")
            .await
            .0,
        401
    );
    stop.send(true).unwrap();
    task.await.unwrap();

    // A policy that permits export: still refused until approved.
    std::fs::write(dir.path().join("policy.cedar"), PERMISSIVE).unwrap();
    let (addr, stop, task) = start(dir.path(), "[policy]\npolicies = \"policy.cedar\"").await;
    let (status, body) = call(addr, &carol, "GET", fetch, "").await;
    assert_eq!(status, 403, "{}", text(&body));
    assert!(
        text(&body).contains("no live approved export"),
        "{}",
        text(&body)
    );

    let (status, body) = call(addr, &carol, "POST", "/v2/exports", ask).await;
    assert_eq!(status, 201, "{}", text(&body));
    let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = request["id"].as_str().unwrap().to_owned();
    let approve = format!("/v2/exports/{id}/approve");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let code = totp::code_at(&secret, now());

    // Never by a principal without the approver role, who learns nothing of which requests exist (an unknown id is
    // refused alike); never self-approval; never a wrong code.
    for path in [approve.as_str(), "/v2/exports/0123456789abcdef/approve"] {
        let (status, body) = call(
            addr,
            &carol,
            "POST",
            path,
            &format!(r#"{{"totp": "{code}"}}"#),
        )
        .await;
        assert_eq!(status, 403, "{}", text(&body));
        assert_eq!(text(&body), r#"{"error":"forbidden"}"#);
    }
    let (_, body) = call(addr, &bob, "POST", "/v2/exports", ask).await;
    let own: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (status, body) = call(
        addr,
        &bob,
        "POST",
        &format!("/v2/exports/{}/approve", own["id"].as_str().unwrap()),
        &format!(r#"{{"totp": "{code}"}}"#),
    )
    .await;
    assert_eq!(status, 403);
    assert!(text(&body).contains("own request"), "{}", text(&body));
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, _) = call(
        addr,
        &bob,
        "POST",
        &approve,
        &format!(r#"{{"totp": "{wrong}"}}"#),
    )
    .await;
    assert_eq!(status, 403);

    // Bob approves with a fresh code: one export for carol.
    let (status, body) = call(
        addr,
        &bob,
        "POST",
        &approve,
        &format!(r#"{{"totp": "{code}"}}"#),
    )
    .await;
    assert_eq!(status, 200, "{}", text(&body));
    let (status, body) = call(addr, &carol, "GET", fetch, "").await;
    assert_eq!(status, 200, "{}", text(&body));
    let mut archive = tar::Archive::new(body.as_slice());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    assert!(names.iter().any(|n| n == "model.onnx"), "{names:?}");
    assert_eq!(
        call(addr, &carol, "GET", fetch, "").await.0,
        403,
        "used once"
    );

    // The same code again, on a new request: a replay, refused.
    let (_, body) = call(addr, &carol, "POST", "/v2/exports", ask).await;
    let second: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let again = format!("/v2/exports/{}/approve", second["id"].as_str().unwrap());
    let (status, body) = call(
        addr,
        &bob,
        "POST",
        &again,
        &format!(r#"{{"totp": "{code}"}}"#),
    )
    .await;
    assert_eq!(status, 403, "{}", text(&body));
    stop.send(true).unwrap();
    task.await.unwrap();

    // All of it is in the gateway's log, which verifies.
    let audit = dir.path().join("state/audit");
    let key = rampart_log::read_verifier(&audit, None).unwrap();
    let verified = rampart_log::verify(&audit, key, &[]).unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    let view =
        rampart_log::LogView::open(&audit, rampart_log::read_verifier(&audit, None).unwrap())
            .unwrap();
    // The gateway's own records of the export routes, as of every route: the refusals by Cedar and by
    // authentication with their stage, the answered ones.
    let routes: Vec<(String, u64, String)> = (0..view.checkpoint().size)
        .filter_map(|i| {
            let e: serde_json::Value = serde_json::from_slice(&view.entry(i).unwrap()).unwrap();
            Some((
                e["route"].as_str()?.to_owned(),
                e["status"].as_u64()?,
                e["stage"].as_str().unwrap_or_default().to_owned(),
            ))
        })
        .collect();
    let fetch_route = "/v2/models/{name}/versions/{version}/export";
    for wanted in [
        ("/v2/exports", 403, "export"),
        (fetch_route, 403, "export"),
        (fetch_route, 401, "authn"),
        ("/v2/exports", 201, ""),
        ("/v2/exports/{id}/approve", 200, ""),
        (fetch_route, 200, ""),
    ] {
        assert!(
            routes
                .iter()
                .any(|(r, s, st)| r == wanted.0 && *s == wanted.1 && st == wanted.2),
            "{wanted:?} not in {routes:?}"
        );
    }
    let actions: Vec<(String, String)> = (0..view.checkpoint().size)
        .map(|i| {
            let e: serde_json::Value = serde_json::from_slice(&view.entry(i).unwrap()).unwrap();
            (
                e["action"].as_str().unwrap_or_default().to_owned(),
                e["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for wanted in [
        ("export.request", "ok"),
        ("export.approve", "denied"),
        ("export.approve", "ok"),
        ("export", "ok"),
        ("export", "denied"),
    ] {
        assert!(
            actions.iter().any(|(a, o)| a == wanted.0 && o == wanted.1),
            "{wanted:?} not in {actions:?}"
        );
    }
}
