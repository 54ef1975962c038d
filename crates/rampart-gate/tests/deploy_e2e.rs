//! The deployment gate and the tamper-evident audit log in the running gateway, over real sockets: a model is
//! served only once it passes the gate; an unsigned, a tampered and a malicious new version are refused at reload
//! while the old one keeps serving, and a good one is swapped in; a sealed model is served from memory and a
//! wrong identity stops the start with a clear error; what the gateway logged verifies after a SIGTERM drain.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use age::secrecy::ExposeSecret;
use common::{example, sign, MALICIOUS_PICKLE};
use rampart_gate::config::Config;
use rampart_gate::Parts;
use rampart_sign::{Curve, SigningKey};
use tokio::sync::watch;

/// A work directory with a signing key, its public half in `release.pub`, and a signed model in `model/`.
fn workspace() -> (tempfile::TempDir, SigningKey) {
    let (dir, key) = common::workspace();
    common::model_dir(dir.path(), "model", Some(&key));
    (dir, key)
}

fn config(dir: &Path, deploy: &str, model: &str) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplain_http = true\nstate_dir = \"state\"\nshutdown_grace_secs = 2\n[auth]\ncreate_first_key = false\n[audit]\nflush_ms = 20\n[deploy]\ntrusted_keys = [\"release.pub\"]\nreload_secs = 1\n{deploy}\n[[models]]\nname = \"digits\"\nworkers = 1\nqueue = 8\n{model}\n"
    );
    Config::parse(&text, &dir.join("rampart.toml"), dir).unwrap()
}

struct Server {
    addr: SocketAddr,
    key: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// Starts a gateway with a fresh `admin` API key (the state dir may hold keys of an earlier start).
async fn start(config: &Config) -> Server {
    std::fs::create_dir_all(config.state_dir()).unwrap();
    let key = rampart_auth::ApiKeyStore::open(config.state_dir())
        .unwrap()
        .add("tester", &["admin".to_owned()])
        .unwrap()
        .key;
    let prepared = rampart_gate::prepare(config, Parts::default())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    Server {
        addr: prepared.address,
        key,
        stop,
        task: tokio::spawn(prepared.serve(shutdown)),
    }
}

async fn stop(server: Server) {
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap()
        .unwrap();
}

/// One plain HTTP/1.1 request with the server's key; returns the status and the body.
async fn request(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    request_as(server.addr, &server.key, method, path, body).await
}

async fn request_as(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, String) {
    let (status, body) = common::http(addr, key, method, path, body.as_bytes()).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The logits for a fixed input, as text; panics unless the answer is 200.
async fn logits(server: &Server) -> String {
    let data: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]})
        .to_string();
    let (status, answer) = request(server, "POST", "/v2/models/digits/infer", &body).await;
    assert_eq!(status, 200, "{answer}");
    let json: serde_json::Value = serde_json::from_str(&answer).unwrap();
    json["outputs"][0]["data"].to_string()
}

/// The entries of the log in `dir` that its checkpoint covers (none while the log has no checkpoint to read).
fn entries(dir: &Path) -> Vec<serde_json::Value> {
    let read = || -> Option<Vec<serde_json::Value>> {
        let view =
            rampart_log::LogView::open(dir, rampart_log::read_verifier(dir, None).ok()?).ok()?;
        (0..view.checkpoint().size)
            .map(|i| serde_json::from_slice(&view.entry(i).ok()?).ok())
            .collect()
    };
    read().unwrap_or_default()
}

fn decisions(dir: &Path) -> Vec<serde_json::Value> {
    entries(dir)
        .into_iter()
        .filter(|e| e["action"] == "deploy.load")
        .collect()
}

fn deploy_outcomes(dir: &Path) -> Vec<String> {
    decisions(dir)
        .iter()
        .map(|e| e["outcome"].as_str().unwrap().to_owned())
        .collect()
}

/// Waits (bounded) for a deployment decision after the first `seen` that satisfies `wanted`; returns how many
/// decisions there are then. (A poll may catch a version half-written and refuse it first: that is recorded too.)
async fn wait_for(dir: &Path, seen: usize, wanted: impl Fn(&serde_json::Value) -> bool) -> usize {
    for _ in 0..100 {
        let all = decisions(dir);
        if all.iter().skip(seen).any(&wanted) {
            return all.len();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway recorded {:?}", decisions(dir));
}

fn refused_by(check: &'static str) -> impl Fn(&serde_json::Value) -> bool {
    move |e| e["outcome"] == "refused" && e["details"]["failed"].to_string().contains(check)
}

fn verify_log(dir: &Path) -> u64 {
    let key = rampart_log::read_verifier(dir, None).unwrap();
    let verified = rampart_log::verify(dir, key, &[]).unwrap();
    assert!(verified.problem.is_none(), "{:?}", verified.problem);
    verified.checkpoint.unwrap().size
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_versions_leave_the_old_one_serving_and_a_good_one_is_swapped_in() {
    let (dir, key) = workspace();
    let model = dir.path().join("model");
    let audit = dir.path().join("state/audit");
    let server = start(&config(dir.path(), "", "onnx = \"model/model.onnx\"")).await;
    let first = logits(&server).await;
    let seen = wait_for(&audit, 0, |e| e["outcome"] == "pass").await;
    assert_eq!(seen, 1);

    // Tampered: one byte of the weights changed after signing.
    let mut bytes = std::fs::read(model.join("model.onnx")).unwrap();
    let at = bytes.len() - 100;
    bytes[at] ^= 0x40;
    std::fs::write(model.join("model.onnx"), &bytes).unwrap();
    let seen = wait_for(&audit, seen, |e| {
        refused_by("signature")(e) && e["details"]["failed"].to_string().contains("tampered")
    })
    .await;
    assert_eq!(
        logits(&server).await,
        first,
        "the old version keeps serving"
    );

    // Unsigned: the signature removed.
    std::fs::remove_file(model.join("model.sig")).unwrap();
    let seen = wait_for(&audit, seen, |e| {
        refused_by("signature")(e) && e["details"]["failed"].to_string().contains("unsigned")
    })
    .await;
    assert_eq!(logits(&server).await, first);

    // Malicious: a pickle that runs a command, signed by the trusted key all the same.
    std::fs::copy(example("model/model.onnx"), model.join("model.onnx")).unwrap();
    std::fs::write(model.join("extra.pkl"), MALICIOUS_PICKLE).unwrap();
    sign(&model, &key);
    let seen = wait_for(&audit, seen, refused_by("scan")).await;
    assert_eq!(logits(&server).await, first);

    // A good new version (the CNN), signed: swapped in.
    std::fs::remove_file(model.join("extra.pkl")).unwrap();
    std::fs::copy(example("model_cnn/model.onnx"), model.join("model.onnx")).unwrap();
    sign(&model, &key);
    wait_for(&audit, seen, |e| e["outcome"] == "pass").await;
    let mut swapped = false;
    for _ in 0..50 {
        if logits(&server).await != first {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new version is not serving");
    stop(server).await;
    verify_log(&audit);
}

#[tokio::test]
async fn an_unsigned_or_untrusted_model_does_not_start() {
    let (dir, _) = workspace();
    std::fs::remove_file(dir.path().join("model/model.sig")).unwrap();
    let config = config(dir.path(), "", "onnx = \"model/model.onnx\"");
    let err = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("refused model `digits`"), "{err}");
    assert!(err.contains("unsigned"), "{err}");
    // Signed by a key nobody trusts.
    sign(
        &dir.path().join("model"),
        &SigningKey::generate(Curve::P256),
    );
    let err = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("not signed by any trusted key"), "{err}");
    // The refusals are on record.
    assert_eq!(
        deploy_outcomes(&dir.path().join("state/audit")),
        ["refused", "refused"]
    );
}

/// Seals the signed model directory to a fresh identity; returns the identity's text.
fn seal(dir: &Path) -> String {
    let identity = age::x25519::Identity::generate();
    let mut recipients = rampart_seal::Recipients::new();
    recipients.push(Box::new(identity.to_public()));
    rampart_seal::seal(
        &dir.join("model"),
        &rampart_seal::SealTo::Recipients(recipients),
        &dir.join("model.age"),
    )
    .unwrap();
    identity.to_string().expose_secret().to_owned()
}

fn write_identity(path: &Path, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::write(path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Every file under `dir` whose contents hold `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sealed_model_is_served_from_memory_and_a_wrong_identity_stops_the_start() {
    let (dir, _) = workspace();
    let secret = seal(dir.path());
    let plaintext = std::fs::read(dir.path().join("model/model.onnx")).unwrap();
    std::fs::remove_dir_all(dir.path().join("model")).unwrap();
    let model = "sealed = \"model.age\"\nidentity = \"key.txt\"";

    // A wrong identity: a clear start-up error, nothing served.
    let other = age::x25519::Identity::generate();
    write_identity(
        &dir.path().join("key.txt"),
        other.to_string().expose_secret(),
        0o600,
    );
    let err = rampart_gate::prepare(&config(dir.path(), "", model), Parts::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot unseal model `digits`"), "{err}");

    // The right identity, readable by others: refused, with what to do.
    write_identity(&dir.path().join("key.txt"), &secret, 0o644);
    let err = rampart_gate::prepare(&config(dir.path(), "", model), Parts::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("chmod 600"), "{err}");

    // Mode 0600: served, and the plaintext is nowhere on disk.
    write_identity(&dir.path().join("key.txt"), &secret, 0o600);
    let server = start(&config(dir.path(), "", model)).await;
    let _ = logits(&server).await;
    stop(server).await;
    let needle = &plaintext[plaintext.len() / 2..plaintext.len() / 2 + 256];
    assert_eq!(files_holding(dir.path(), needle), Vec::<PathBuf>::new());
    assert!(deploy_outcomes(&dir.path().join("state/audit"))
        .iter()
        .any(|o| o == "pass"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_gateway_logged_verifies_after_a_sigterm_drain() {
    let (dir, _) = workspace();
    let audit = dir.path().join("state/audit");
    let server = start(&config(dir.path(), "", "onnx = \"model/model.onnx\"")).await;
    for _ in 0..20 {
        let _ = logits(&server).await;
    }
    let (status, _) = request_as(
        server.addr,
        "rmp_000000000000_wrong",
        "GET",
        "/v2/models/digits",
        "",
    )
    .await;
    assert_eq!(status, 401);
    stop(server).await;
    let size = verify_log(&audit);
    let all = entries(&audit);
    assert_eq!(size as usize, all.len());
    let infers: Vec<_> = all
        .iter()
        .filter(|e| e["action"] == "infer" && e["outcome"] == "allowed")
        .collect();
    assert_eq!(infers.len(), 20);
    // Digests, never the input.
    assert!(infers
        .iter()
        .all(|e| e["input_sha256"].as_str().unwrap().len() == 64));
    assert!(all.iter().all(|e| !e.to_string().contains("\"data\"")));
    assert!(all
        .iter()
        .any(|e| e["status"] == 401 && e["outcome"] == "refused"));
    // A second start appends to the same log, which still verifies.
    let server = start(&config(dir.path(), "", "onnx = \"model/model.onnx\"")).await;
    let _ = logits(&server).await;
    stop(server).await;
    assert!(verify_log(&audit) > size);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_reload_is_recorded() {
    let (dir, _) = workspace();
    let policy = dir.path().join("policy.cedar");
    std::fs::write(&policy, rampart_auth::DEFAULT_POLICY).unwrap();
    let config = config(
        dir.path(),
        "",
        "onnx = \"model/model.onnx\"\n[policy]\npolicies = \"policy.cedar\"\nreload_secs = 1",
    );
    let server = start(&config).await;
    let audit = dir.path().join("state/audit");
    std::fs::write(
        &policy,
        format!("{}\n// changed\n", rampart_auth::DEFAULT_POLICY),
    )
    .unwrap();
    let mut recorded = false;
    for _ in 0..60 {
        if entries(&audit)
            .iter()
            .any(|e| e["action"] == "policy.reload" && e["outcome"] == "ok")
        {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "no policy.reload entry");
    stop(server).await;
    verify_log(&audit);
}
