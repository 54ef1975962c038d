//! `rampart push --url` against a gateway started in this process, over HTTPS: exit 0 when stored, 1 when the
//! deployment gate refuses the model, 2 for an existing version or a certificate that does not match the pin.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::process::Output;

use rampart_sign::{sign_dir, Curve, SignOptions, SigningKey};

fn model(dir: &Path, name: &str, key: Option<&SigningKey>) -> PathBuf {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    let onnx = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx");
    std::fs::copy(onnx, model.join("model.onnx")).unwrap();
    if let Some(key) = key {
        let mut options = SignOptions::default();
        options
            .ignore
            .add(rampart_digest::ManifestPath::new("model.sig").unwrap());
        let (_, bundle) = sign_dir(&model, key, &options).unwrap();
        std::fs::write(model.join("model.sig"), bundle.to_json().unwrap()).unwrap();
    }
    model
}

async fn rampart(args: Vec<String>, api_key: String) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .env("RAMPART_API_KEY", api_key)
            .env_remove("RAMPART_TOKEN")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_to_a_gateway_with_its_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(Curve::P256);
    std::fs::write(
        dir.path().join("release.pub"),
        key.verifying_key().to_pem().unwrap(),
    )
    .unwrap();
    model(dir.path(), "base", Some(&key));
    let signed = model(dir.path(), "signed", Some(&key));
    let unsigned = model(dir.path(), "unsigned", None);
    let state = dir.path().join("state");
    let api_key = rampart_auth::ApiKeyStore::open(&state)
        .unwrap()
        .add("ci", &["publisher".to_owned()])
        .unwrap()
        .key;
    let text = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
                shutdown_grace_secs = 2\n[auth]\ncreate_first_key = false\n[deploy]\ntrusted_keys = [\"release.pub\"]\n\
                [[models]]\nname = \"base\"\nonnx = \"base/model.onnx\"\nworkers = 1\n";
    let config =
        rampart_gate::config::Config::parse(text, &dir.path().join("rampart.toml"), dir.path())
            .unwrap();
    let prepared = rampart_gate::prepare(&config, rampart_gate::Parts::default())
        .await
        .unwrap();
    let url = format!("https://localhost:{}", prepared.address.port());
    let cert = prepared.cert_path.clone().unwrap();
    let pin = prepared.fingerprint.clone().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(prepared.serve(shutdown));
    let push = |dir: &Path, version: &str, trust: [&str; 2]| -> Vec<String> {
        let mut args: Vec<String> = [
            "push",
            &dir.display().to_string(),
            "--name",
            "digits",
            "--version",
            version,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend([
            "--url".to_owned(),
            url.clone(),
            trust[0].to_owned(),
            trust[1].to_owned(),
        ]);
        args
    };
    let by_cert = ["--ca-cert", cert.to_str().unwrap()];

    let out = rampart(push(&signed, "1", by_cert), api_key.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("pushed `digits@1`"));
    let out = rampart(push(&signed, "2", ["--fingerprint", &pin]), api_key.clone()).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = rampart(push(&unsigned, "3", by_cert), api_key.clone()).await;
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("refused: `digits@3`") && stdout.contains("unsigned"),
        "{stdout}"
    );

    let out = rampart(push(&signed, "1", by_cert), api_key.clone()).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("409"));

    let wrong = vec!["00"; 32].join(":");
    let out = rampart(push(&signed, "4", ["--fingerprint", &wrong]), api_key).await;
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("fingerprint") && stderr.lines().count() == 1,
        "{stderr}"
    );

    stop.send(true).unwrap();
    server.await.unwrap();
    let stored: Vec<String> = rampart_deploy::Registry::open(&state)
        .list(Some("digits"))
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(stored, ["1", "2"]);
}
