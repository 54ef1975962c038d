//! The registry over real sockets: `rampart push --url`'s client uploads a signed model over HTTPS (the gateway's
//! self-signed certificate trusted by file or pinned by fingerprint), then the version is listed, described, ready
//! and answers inference by version; an unsigned, a tampered or a malicious model, a garbage upload and a principal
//! without the `publisher` role are refused with nothing stored; a second push of a version is 409; with one
//! version loaded at a time, a version unloaded by another comes back on its next request; a fingerprint that does
//! not match makes the client refuse the gateway; every push is in the audit log with its digest. An upload is
//! unpacked as it arrives (staging never holds the archive beside its unpacked copy). A model that is only in the
//! registry answers its unversioned routes with its latest version.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::path::Path;

use common::{
    api_key, files_under, https, log_entries, model_dir, sign, start, workspace, Gateway,
};
use rampart_gate::push::{push, PushError, PushOptions};

/// One registry version loaded at a time, and a configured model (`base`, signed) beside the registry's.
const REGISTRY: &str = "[registry]\nmax_loaded = 1\nworkers = 1\n[[models]]\nname = \"base\"\nonnx = \"base/model.onnx\"\nworkers = 1";

/// Starts the gateway of these tests in `dir`, with the configured model signed by `key`.
async fn gateway(dir: &Path, key: &rampart_sign::SigningKey) -> Gateway {
    model_dir(dir, "base", Some(key));
    start(dir, REGISTRY).await
}

fn options(gateway: &Gateway, key: &str, version: &str) -> PushOptions {
    PushOptions {
        url: format!("https://localhost:{}", gateway.addr.port()),
        model: "digits".into(),
        version: version.into(),
        credential: key.into(),
        ca_cert: gateway.cert.clone(),
        fingerprint: None,
        progress: None,
    }
}

/// `POST /v2/models/digits/versions/{version}/infer` of one row.
async fn infer(gateway: &Gateway, key: &str, version: &str) -> (u16, String) {
    let path = format!("/v2/models/digits/versions/{version}/infer");
    https(gateway, key, "POST", &path, &infer_body()).await
}

fn infer_body() -> Vec<u8> {
    serde_json::json!({
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0.5f32; 64]}]
    })
    .to_string()
    .into_bytes()
}

/// Nothing of a refused push is left: no version, no staging directory, no plaintext.
fn assert_nothing_stored(state: &Path) {
    let left: Vec<String> = files_under(&state.join("registry"));
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_version_is_listed_and_served_by_version() {
    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let publisher = api_key(&state, "ci", &["publisher"]);
    let user = api_key(&state, "alice", &["user"]);
    let one = model_dir(dir.path(), "one", Some(&key));
    let gateway = gateway(dir.path(), &key).await;

    // Trusting the certificate's file.
    let info = push(&one, &options(&gateway, &publisher, "1"))
        .await
        .unwrap();
    assert_eq!(info["model"], "digits");
    assert_eq!(info["version"], "1");
    assert_eq!(info["pushed_by"], "ci");
    assert_eq!(info["signer"], "release.pub");
    // Pinning the fingerprint instead.
    let mut pinned = options(&gateway, &publisher, "2");
    pinned.ca_cert = None;
    pinned.fingerprint = gateway.fingerprint.clone();
    push(&one, &pinned).await.unwrap();
    // Stored sealed: no plaintext model file under the state directory.
    let stored = files_under(&state.join("registry"));
    assert!(
        stored.contains(&"digits/1/model.age".to_owned()),
        "{stored:?}"
    );
    assert!(!stored.iter().any(|f| f.ends_with(".onnx")), "{stored:?}");

    let (status, body) = https(&gateway, &user, "GET", "/v2/models/digits/versions", b"").await;
    assert_eq!(status, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let versions: Vec<&str> = listed["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["1", "2"]);

    let (status, body) = infer(&gateway, &user, "1").await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["outputs"][0]["shape"], serde_json::json!([1, 10]));
    let (status, body) = https(&gateway, &user, "GET", "/v2/models/digits/versions/1", b"").await;
    assert_eq!(status, 200, "{body}");
    let metadata: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["versions"], serde_json::json!(["1"]));
    assert_eq!(metadata["inputs"][0]["name"], "input");
    let (status, _) = https(
        &gateway,
        &user,
        "GET",
        "/v2/models/digits/versions/1/ready",
        b"",
    )
    .await;
    assert_eq!(status, 200);

    // One version loaded at a time: 2 unloads 1, and 1 loads again when asked.
    let (status, _) = infer(&gateway, &user, "2").await;
    assert_eq!(status, 200);
    let (_, body) = https(&gateway, &user, "GET", "/v2/models/digits/versions", b"").await;
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed["versions"][0]["loaded"], false, "{body}");
    assert_eq!(listed["versions"][1]["loaded"], true, "{body}");
    let (status, body) = infer(&gateway, &user, "1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        answer
    );

    // Unknown versions and models: 404 with a short JSON error.
    for path in [
        "/v2/models/digits/versions/9/infer",
        "/v2/models/digits/versions/9",
        "/v2/models/nope/versions",
    ] {
        let method = if path.ends_with("infer") {
            "POST"
        } else {
            "GET"
        };
        let (status, body) = https(&gateway, &user, method, path, &infer_body()).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["error"].is_string());
    }
    // A user may infer, not push; versions are immutable.
    let (status, _) = https(&gateway, &user, "PUT", "/v2/models/digits/versions/3", b"x").await;
    assert_eq!(status, 403);
    match push(&one, &options(&gateway, &publisher, "1")).await {
        Err(PushError::Status {
            status: 409,
            message,
        }) => assert!(message.contains("immutable"), "{message}"),
        other => panic!("{other:?}"),
    }
    gateway.stop().await;

    let entries = log_entries(&state.join("audit"));
    let pushes: Vec<&serde_json::Value> = entries
        .iter()
        .filter(|e| e["action"] == "registry.push")
        .collect();
    let outcomes: Vec<&str> = pushes
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["ok", "ok", "exists"], "{pushes:?}");
    // The 409 comes before the body is read: no digest, said explicitly, with the size the client declared.
    assert!(pushes[2]["subject"].get("upload_sha256").is_none());
    assert!(pushes[2]["details"]["upload_sha256"].is_null());
    assert_eq!(pushes[2]["details"]["reason"], "exists_before_upload");
    // `rampart push` streams its body (chunked), so it declares no size.
    assert!(pushes[2]["details"].get("declared_bytes").is_some());
    assert!(
        pushes[0]["subject"]["upload_sha256"]
            .as_str()
            .unwrap()
            .len()
            == 64,
        "{:?}",
        pushes[0]
    );
    let loads = entries
        .iter()
        .filter(|e| e["action"] == "registry.load" && e["outcome"] == "pass")
        .count();
    assert_eq!(loads, 3, "1, 2, then 1 again after its unload");
    let requests = entries
        .iter()
        .filter(|e| e["version"] == "2" && e["route"] == "PUT /v2/models/{name}/versions/{version}")
        .count();
    assert_eq!(requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pushes_store_nothing() {
    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let publisher = api_key(&state, "ci", &["publisher"]);
    let admin = api_key(&state, "root", &["admin"]);
    let user = api_key(&state, "alice", &["user"]);
    let gateway = gateway(dir.path(), &key).await;

    let unsigned = model_dir(dir.path(), "unsigned", None);
    let tampered = model_dir(dir.path(), "tampered", Some(&key));
    let mut bytes = std::fs::read(tampered.join("model.onnx")).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(tampered.join("model.onnx"), bytes).unwrap();
    let malicious = model_dir(dir.path(), "malicious", None);
    std::fs::write(malicious.join("extra.pkl"), common::MALICIOUS_PICKLE).unwrap();
    sign(&malicious, &key);
    let cases = [
        (&unsigned, "unsigned"),
        (&tampered, "tampered"),
        (&malicious, "malicious"),
    ];
    for (model, why) in cases {
        match push(model, &options(&gateway, &publisher, "1")).await {
            Err(PushError::Refused {
                status: 422,
                message,
            }) => {
                assert!(message.contains(why), "{why}: {message}")
            }
            other => panic!("{why}: {other:?}"),
        }
        assert_nothing_stored(&state);
    }
    // Bytes that are not a tar stream of a model.
    let (status, body) = https(
        &gateway,
        &publisher,
        "PUT",
        "/v2/models/digits/versions/1",
        &[0x41; 3000],
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("bad upload"), "{body}");
    assert_nothing_stored(&state);
    // Without the `publisher` role, even an admin may not push.
    let good = model_dir(dir.path(), "good", Some(&key));
    for who in [&user, &admin] {
        match push(&good, &options(&gateway, who, "1")).await {
            Err(PushError::Refused { status: 403, .. }) => {}
            other => panic!("{other:?}"),
        }
        assert_nothing_stored(&state);
    }
    match push(&good, &options(&gateway, "rmp_000000000000_nope", "1")).await {
        Err(PushError::Status { status: 401, .. }) => {}
        other => panic!("{other:?}"),
    }
    assert_nothing_stored(&state);
    gateway.stop().await;

    let refused: Vec<serde_json::Value> = log_entries(&state.join("audit"))
        .into_iter()
        .filter(|e| e["action"] == "registry.push")
        .collect();
    assert_eq!(
        refused.len(),
        4,
        "three gate refusals and the bad upload: {refused:?}"
    );
    assert!(refused
        .iter()
        .all(|e| e["outcome"] == "refused" && e["subject"]["upload_sha256"].is_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_refuses_a_gateway_it_cannot_verify() {
    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let publisher = api_key(&state, "ci", &["publisher"]);
    let model = model_dir(dir.path(), "model", Some(&key));
    // An upload cut short by a crash left its staging directory (plaintext): the next start removes it.
    let crashed = state.join("registry/.upload-crashed");
    std::fs::create_dir_all(&crashed).unwrap();
    std::fs::write(crashed.join("upload.tar"), b"plaintext").unwrap();
    let gateway = gateway(dir.path(), &key).await;

    let mut wrong_pin = options(&gateway, &publisher, "1");
    wrong_pin.ca_cert = None;
    wrong_pin.fingerprint = Some(vec!["AB"; 32].join(":"));
    match push(&model, &wrong_pin).await {
        Err(err @ PushError::Connect { .. }) => {
            assert!(err.to_string().contains("fingerprint"), "{err}")
        }
        other => panic!("{other:?}"),
    }
    // The right certificate file but a wrong pin: both must hold.
    let mut both = options(&gateway, &publisher, "1");
    both.fingerprint = Some(vec!["AB"; 32].join(":"));
    assert!(matches!(
        push(&model, &both).await,
        Err(PushError::Connect { .. })
    ));
    // Another certificate than the gateway's.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(dir.path().join("other.pem"), other.cert.pem()).unwrap();
    let mut wrong_ca = options(&gateway, &publisher, "1");
    wrong_ca.ca_cert = Some(dir.path().join("other.pem"));
    assert!(matches!(
        push(&model, &wrong_ca).await,
        Err(PushError::Connect { .. })
    ));
    assert_nothing_stored(&state);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_version_that_fails_the_gate_is_never_served() {
    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let user = api_key(&state, "alice", &["user"]);
    // Stored while `key` was trusted; the gateway now trusts another key only.
    let old = model_dir(dir.path(), "old", Some(&key));
    let trusted = rampart_deploy::TrustedKey {
        name: "old.pub".into(),
        key: key.verifying_key(),
    };
    rampart_deploy::Registry::open(&state)
        .push(
            &old,
            "digits",
            "1",
            "ci",
            &rampart_deploy::GateConfig::new(vec![trusted]),
        )
        .unwrap();
    let (_, other) = workspace();
    std::fs::write(
        dir.path().join("release.pub"),
        other.verifying_key().to_pem().unwrap(),
    )
    .unwrap();
    let gateway = gateway(dir.path(), &other).await;
    for _ in 0..2 {
        let (status, body) = infer(&gateway, &user, "1").await;
        assert_eq!(status, 409, "{body}");
        assert!(body.contains("fails the deployment gate"), "{body}");
    }
    gateway.stop().await;
    let loads: Vec<String> = log_entries(&state.join("audit"))
        .iter()
        .filter(|e| e["action"] == "registry.load")
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(loads, ["refused"], "refused once, then remembered");
}

/// The upload's bytes on disk while it arrives: every file under the staging directories, and their total size.
fn staging(state: &Path) -> (Vec<String>, u64) {
    let root = state.join("registry");
    let mut files = Vec::new();
    let mut total = 0;
    // Files come and go while the upload is unpacked: what cannot be read now is not counted.
    for entry in std::fs::read_dir(&root).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(".upload-") {
            for file in files_under(&entry.path()) {
                total += std::fs::metadata(entry.path().join(&file)).map_or(0, |m| m.len());
                files.push(file);
            }
        }
    }
    (files, total)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_is_unpacked_as_it_arrives() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let publisher = api_key(&state, "ci", &["publisher"]);
    let model = model_dir(dir.path(), "big", None);
    std::fs::write(
        model.join("notes.txt"),
        "weights and notes\n".repeat(200_000),
    )
    .unwrap();
    sign(&model, &key);
    let mut tar = Vec::new();
    rampart_deploy::upload::pack(&model, &mut tar).unwrap();
    let gateway = gateway(dir.path(), &key).await;

    let mut stream = common::tls(&gateway, b"http/1.1").await;
    let head = format!(
        "PUT /v2/models/digits/versions/1 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {publisher}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        tar.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let half = tar.len() / 2;
    stream.write_all(&tar[..half]).await.unwrap();
    stream.flush().await.unwrap();
    // Half sent: what is staged is the unpacked model only, no archive, and no more than was sent.
    let mut staged = (Vec::new(), 0);
    for _ in 0..200 {
        staged = staging(&state);
        if staged.1 > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (files, bytes) = staged;
    assert!(bytes > 0, "nothing unpacked while the upload arrives");
    assert!(files.iter().all(|f| f.starts_with("model/")), "{files:?}");
    assert!(bytes <= half as u64, "{bytes} bytes staged of {half} sent");
    stream.write_all(&tar[half..]).await.unwrap();
    stream.flush().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(staging(&state).0.is_empty());
    gateway.stop().await;
    let pushes: Vec<serde_json::Value> = log_entries(&state.join("audit"))
        .into_iter()
        .filter(|e| e["action"] == "registry.push")
        .collect();
    assert_eq!(pushes.len(), 1);
    assert_eq!(
        pushes[0]["subject"]["upload_sha256"].as_str().unwrap(),
        rampart_digest_hex(&tar)
    );
}

fn rampart_digest_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(data))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_only_model_answers_its_unversioned_routes_with_its_latest_version() {
    let (dir, key) = workspace();
    let state = dir.path().join("state");
    let publisher = api_key(&state, "ci", &["publisher"]);
    let user = api_key(&state, "alice", &["user"]);
    let one = model_dir(dir.path(), "one", Some(&key));
    let gateway = gateway(dir.path(), &key).await;

    // Before any push: an unknown model.
    let (status, _) = https(&gateway, &user, "GET", "/v2/models/digits", b"").await;
    assert_eq!(status, 404);
    // `10` is pushed before `9`: the latest is the highest number, not the last push.
    for version in ["10", "9"] {
        push(&one, &options(&gateway, &publisher, version))
            .await
            .unwrap();
    }
    let (status, body) = https(&gateway, &user, "GET", "/v2/models/digits", b"").await;
    assert_eq!(status, 200, "{body}");
    let metadata: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(metadata["versions"], serde_json::json!(["10"]));
    assert_eq!(metadata["inputs"][0]["name"], "input");
    let (status, body) = https(&gateway, &user, "GET", "/v2/models/digits/ready", b"").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"version\":\"10\""), "{body}");
    let (status, body) = https(
        &gateway,
        &user,
        "POST",
        "/v2/models/digits/infer",
        &infer_body(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, by_version) = infer(&gateway, &user, "10").await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap(),
        serde_json::from_str::<serde_json::Value>(&by_version).unwrap()
    );
    // The same gate as the versioned route: no credential, no inference; a publisher may not infer.
    let (status, _) = https(
        &gateway,
        "rmp_000000000000_nope",
        "POST",
        "/v2/models/digits/infer",
        &infer_body(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = https(
        &gateway,
        &publisher,
        "POST",
        "/v2/models/digits/infer",
        &infer_body(),
    )
    .await;
    let (versioned, _) = https(
        &gateway,
        &publisher,
        "POST",
        "/v2/models/digits/versions/10/infer",
        &infer_body(),
    )
    .await;
    assert_eq!(status, versioned);
    // A configured model keeps its own unversioned routes.
    let (status, body) = https(&gateway, &user, "GET", "/v2/models/base", b"").await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["versions"],
        serde_json::json!(["10"])
    );
    let (status, _) = https(&gateway, &user, "GET", "/v2/models/nope/ready", b"").await;
    assert_eq!(status, 404);
    gateway.stop().await;

    // Logged as the versioned route it resolved to, with the version served.
    let entries = log_entries(&state.join("audit"));
    let unversioned = entries
        .iter()
        .filter(|e| {
            e["principal"] == "alice"
                && e["version"] == "10"
                && e["route"] == "/v2/models/{name}/versions/{version}/infer"
        })
        .count();
    assert_eq!(
        unversioned, 2,
        "the unversioned and the versioned inference"
    );
}
