//! Interoperability: the Python `tritonclient[http]` client, unmodified, against the gateway over TLS 1.3 with batching
//! on (`max_batch`), one request at a time and several at once. (Whether requests meet in a run depends on timing:
//! this Python client sends them too slowly to overlap here; the gateway's own tests force batches.)
//! Needs `python3` with `tritonclient[http]` and `numpy` on PATH (scripts/setup-test-env.sh); skipped otherwise unless
//! `RAMPART_REQUIRE_PEERS=1`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rampart_gate::config::Config;
use rampart_gate::Parts;

const CLIENT: &str = r#"
import sys, numpy as np, tritonclient.http as http
url, key, model = sys.argv[1], sys.argv[2], sys.argv[3]
auth = {"Authorization": "Bearer " + key}
# The certificate is verified: the gateway's self-signed one is the only trusted root.
client = http.InferenceServerClient(url=url, ssl=True, ssl_options={"ca_certs": sys.argv[5]})
assert client.is_server_live(headers=auth)
assert client.is_model_ready(model, headers=auth)
meta = client.get_model_metadata(model, headers=auth)
assert meta["inputs"][0]["name"] == "input", meta
rows = np.loadtxt(sys.argv[4], delimiter=",", skiprows=1, dtype=np.float32, max_rows=50)
x, labels = rows[:, :64], rows[:, 64].astype(int)
for binary in (True, False):
    inp = http.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x, binary_data=binary)
    out = http.InferRequestedOutput("logits", binary_data=False)
    # A fresh dict each call: tritonclient writes Inference-Header-Content-Length into the one it is given.
    result = client.infer(model, [inp], outputs=[out], headers=dict(auth))
    logits = result.as_numpy("logits")
    assert logits.shape == (50, 10), logits.shape
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy > 0.9, accuracy
# One row a request, 8 at a time, to a gateway that batches what arrives together: each answer is its own row's.
many = http.InferenceServerClient(url=url, ssl=True, ssl_options={"ca_certs": sys.argv[5]}, concurrency=8)
pending = []
for i in range(len(x)):
    one = http.InferInput("input", [1, 64], "FP32")
    one.set_data_from_numpy(x[i:i + 1], binary_data=bool(i % 2))
    out = http.InferRequestedOutput("logits", binary_data=False)
    pending.append(many.async_infer(model, [one], outputs=[out], headers=dict(auth)))
for i, request in enumerate(pending):
    answer = request.get_result().as_numpy("logits")
    assert answer.shape == (1, 10), answer.shape
    assert np.allclose(answer[0], logits[i], rtol=1e-4, atol=1e-4), (i, answer, logits[i])
try:
    client.infer(model, [inp], headers={"Authorization": "Bearer rmp_000000000000_wrong"})
    print("unauthenticated call succeeded"); sys.exit(1)
except Exception as err:
    assert "401" in str(err) or "unauthorized" in str(err).lower(), err
print("ok")
"#;

fn python_with_tritonclient() -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import tritonclient.http, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some("python3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_works_unmodified() {
    let Some(python) = python_with_tritonclient() else {
        assert!(
            std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
            "tritonclient[http] is required (RAMPART_REQUIRE_PEERS=1): run scripts/setup-test-env.sh and put its bin on PATH"
        );
        eprintln!("skipping: python3 with tritonclient[http] and numpy is not on PATH");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[deploy]\ntrusted_keys = [\"{}\"]\n[[models]]\nname = \"digits\"\nonnx = \"{}\"\nexecution = \"inline\"\nmax_batch = 16\n",
        dir.path().display(),
        root.join("release.pub").display(),
        root.join("model/model.onnx").display()
    );
    let config = Config::parse(&text, Path::new("test.toml"), Path::new(".")).unwrap();
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let url = format!("localhost:{}", prepared.address.port());
    let key = prepared.new_api_key.clone().unwrap();
    let prepared_cert = prepared.cert_path.clone().unwrap();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(prepared.serve(shutdown));
    let test_csv = root.join("test.csv");
    let cert = prepared_cert;
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args([
                "-c",
                CLIENT,
                &url,
                &key,
                "digits",
                &test_csv.to_string_lossy(),
                &cert.to_string_lossy(),
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server)
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("ok"),
        "stdout: {stdout}\nstderr: {stderr}"
    );
}
