//! Interoperability: the gateway in front of a real upstream KServe v2 server, Seldon's MLServer (PyPI `mlserver`),
//! reached over HTTP/1.1 and HTTP/2 through TLS 1.3. Needs `mlserver` on PATH (scripts/setup-test-env.sh); skipped
//! otherwise unless `RAMPART_REQUIRE_PEERS=1`, when it fails.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Gateway;
use serde_json::{json, Value};

/// The upstream model: y = 2x + 1 on FP32 [N, 4], in MLServer's custom-runtime API.
const MODEL_PY: &str = r#"
import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

class Affine(MLModel):
    async def load(self) -> bool:
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32)
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", x * 2.0 + 1.0)])
"#;

const MODEL_SETTINGS: &str = r#"{"name": "affine", "implementation": "model.Affine",
 "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
 "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}"#;

/// MLServer in a child process, killed when dropped.
struct Upstream {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn mlserver() -> Option<Upstream> {
    let found = Command::new("mlserver")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        if std::env::var("RAMPART_REQUIRE_PEERS").as_deref() == Ok("1") {
            panic!("mlserver is required (RAMPART_REQUIRE_PEERS=1): run scripts/setup-test-env.sh and put its bin on PATH");
        }
        eprintln!("skipping: mlserver is not on PATH");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let settings = json!({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": 0, "debug": false,
    });
    std::fs::write(dir.path().join("settings.json"), settings.to_string()).unwrap();
    std::fs::write(dir.path().join("model-settings.json"), MODEL_SETTINGS).unwrap();
    std::fs::write(dir.path().join("model.py"), MODEL_PY).unwrap();
    let log = std::fs::File::create(dir.path().join("mlserver.log")).unwrap();
    let child = Command::new("mlserver")
        .arg("start")
        .arg(dir.path())
        .current_dir(dir.path())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let upstream = Upstream {
        child,
        port,
        _dir: dir,
    };
    let ready = format!("http://127.0.0.1:{port}/v2/models/affine/ready");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(90) {
        if ureq::get(&ready).call().is_ok() {
            return Some(upstream);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log =
        std::fs::read_to_string(upstream._dir.path().join("mlserver.log")).unwrap_or_default();
    panic!("mlserver did not become ready in 90 s:\n{log}");
}

/// The gateway in front of the upstream on `upstream_port`, serving its `affine` as `scaled` (to show the mapping);
/// returns it, an admin API key, and the directory it runs in.
async fn gateway(upstream_port: u16) -> (Gateway, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        common::example("release.pub"),
        dir.path().join("release.pub"),
    )
    .unwrap();
    let key = common::api_key(&dir.path().join("state"), "ops", &["admin"]);
    let extra = format!(
        "[[models]]\nname = \"scaled\"\nupstream = \"http://127.0.0.1:{upstream_port}\"\nupstream_model = \"affine\"\nworkers = 2\nqueue = 16\n"
    );
    let gateway = common::start(dir.path(), &extra).await;
    (gateway, key, dir)
}

/// One request over HTTP/1.1; returns the status and the JSON body.
async fn http1(gateway: &Gateway, key: &str, method: &str, path: &str, body: &str) -> (u16, Value) {
    let (status, body) = common::https(gateway, key, method, path, body.as_bytes()).await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// One request over HTTP/2; returns the status and the JSON body.
async fn http2(gateway: &Gateway, key: &str, path: &str, body: &str) -> (u16, Value) {
    let stream = common::tls(gateway, b"h2").await;
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let request = hyper::Request::post(format!("https://localhost{path}"))
        .header("authorization", format!("Bearer {key}"))
        .header("content-type", "application/json")
        .body(())
        .unwrap();
    let (response, mut send) = client.send_request(request, false).unwrap();
    send.send_data(Bytes::from(body.to_owned()), true).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(30), response)
        .await
        .unwrap()
        .unwrap();
    let status = response.status().as_u16();
    let mut received = response.into_body();
    let mut data = Vec::new();
    while let Some(chunk) = received.data().await {
        let chunk = chunk.unwrap();
        let _ = received.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    (status, serde_json::from_slice(&data).unwrap_or(Value::Null))
}

fn infer_body(x: &[f32], rows: usize) -> String {
    json!({"id": "u1", "inputs": [{"name": "x", "datatype": "FP32", "shape": [rows, 4], "data": x}]}).to_string()
}

fn outputs_of(body: &Value) -> Vec<f64> {
    body["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no output data in {body}"))
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlserver_behind_the_gateway_over_http1_and_http2() {
    let Some(upstream) = tokio::task::spawn_blocking(mlserver).await.unwrap() else {
        return;
    };
    let (gateway, key, _dir) = gateway(upstream.port).await;

    // Metadata comes from the upstream, under the gateway's name for the model.
    let (status, meta) = http1(&gateway, &key, "GET", "/v2/models/scaled", "").await;
    assert_eq!(status, 200, "{meta}");
    assert_eq!(meta["name"], "scaled");
    assert_eq!(meta["inputs"][0]["name"], "x");
    assert_eq!(meta["inputs"][0]["datatype"], "FP32");

    // Inference over both protocols: MLServer computes 2x + 1, the gateway relays it.
    let x = [0.0f32, 0.5, -1.25, 3.0, 1.0, 2.0, 4.0, -8.0];
    let want: Vec<f64> = x.iter().map(|v| f64::from(*v) * 2.0 + 1.0).collect();
    let (status, body) = http1(
        &gateway,
        &key,
        "POST",
        "/v2/models/scaled/infer",
        &infer_body(&x, 2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["model_name"], "scaled");
    assert_eq!(body["id"], "u1");
    assert_eq!(body["outputs"][0]["shape"], json!([2, 4]));
    assert_eq!(outputs_of(&body), want);
    let (status, body) = http2(
        &gateway,
        &key,
        "/v2/models/scaled/infer",
        &infer_body(&x, 2),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(outputs_of(&body), want);

    // A tensor that disagrees with the upstream's metadata is refused by the gateway itself.
    let (status, body) = http1(
        &gateway,
        &key,
        "POST",
        "/v2/models/scaled/infer",
        &infer_body(&x[..7], 2),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = http2(
        &gateway,
        &key,
        "/v2/models/scaled/infer",
        &json!({"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]}).to_string(),
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // The upstream goes away: a clean 502 with a short JSON error, and the gateway itself stays up.
    drop(upstream);
    let (status, body) = http1(
        &gateway,
        &key,
        "POST",
        "/v2/models/scaled/infer",
        &infer_body(&x, 2),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        !error.contains("127.0.0.1"),
        "the error leaks the upstream's address: {error}"
    );
    let (status, _) = http1(&gateway, &key, "GET", "/v2/health/live", "").await;
    assert_eq!(status, 200);

    gateway.stop().await;
}
