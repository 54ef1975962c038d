//! The KServe v2 client against a small HTTP server started by the test on 127.0.0.1: a model served over HTTP is
//! attacked like a file, a rejected key and an unreachable server are clear errors.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code: a failure is the test's verdict"
)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rampart_eval::data::Dataset;
use rampart_eval::kserve::{Access, KeyHeader, RemoteModel};
use rampart_eval::square::{square_attack, SquareConfig};
use rampart_eval::target::{accuracy, InferScorer, Scorer};
use rampart_eval::whitebox::{Bounds, Norm};
use rampart_infer::{Model, OnnxModel, Tensor, TensorData};

const KEY: &str = "s3cret-key";

/// Serves `model` in the KServe v2 JSON protocol, one request per connection, for at most `max` requests.
fn serve(model: Arc<OnnxModel>, max: usize) -> String {
    serve_throttled(model, max, 0)
}

/// As [`serve`], answering the first `throttled` requests 429 with `Retry-After: 0`.
fn serve_throttled(model: Arc<OnnxModel>, max: usize, throttled: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().take(max).enumerate() {
            let Ok(mut stream) = stream else { continue };
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let mut length = 0;
            let mut authorized = false;
            loop {
                let mut h = String::new();
                reader.read_line(&mut h).unwrap();
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap();
                }
                if h.trim() == format!("Authorization: Bearer {KEY}")
                    || lower.trim() == format!("authorization: bearer {KEY}")
                {
                    authorized = true;
                }
                if h.trim().is_empty() {
                    break;
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            if n < throttled {
                let _ = write!(stream, "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 0\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let (status, answer) = if !authorized {
                ("401 Unauthorized", r#"{"error":"unauthorized"}"#.to_owned())
            } else if line.starts_with("GET") {
                ("200 OK", r#"{"name":"digits","versions":[],"platform":"onnx","inputs":[{"name":"input","datatype":"FP32","shape":[-1,64]}],"outputs":[{"name":"logits","datatype":"FP32","shape":[-1,10]}]}"#.to_owned())
            } else {
                let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
                let input = &req["inputs"][0];
                let shape: Vec<usize> = input["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_u64().unwrap() as usize)
                    .collect();
                let data: Vec<f32> = input["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect();
                let out = model
                    .infer(&[Tensor::new("input", shape, TensorData::Fp32(data)).unwrap()])
                    .unwrap();
                let TensorData::Fp32(values) = &out[0].data else {
                    panic!()
                };
                ("200 OK", serde_json::json!({"model_name":"digits","outputs":[{"name":"logits","datatype":"FP32","shape":out[0].shape,"data":values}]}).to_string())
            };
            let _ = write!(stream, "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}", answer.len());
        }
    });
    format!("http://{addr}/v2/models/digits")
}

fn mlp() -> Arc<OnnxModel> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx");
    Arc::new(OnnxModel::from_path("digits", &path).unwrap())
}

#[test]
fn a_live_model_is_attacked_through_its_url() {
    let url = serve(mlp(), 10_000);
    let access = Access {
        key: Some((KeyHeader::Bearer, KEY.into())),
        timeout: Duration::from_secs(10),
        ca_cert: None,
    };
    let remote = RemoteModel::connect(&url, &access).unwrap();
    let scorer = InferScorer::new(remote, 64).unwrap();
    let mut data = Dataset::from_path(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/test.csv"),
        "label",
    )
    .unwrap();
    data.truncate(16);
    let clean = accuracy(&scorer.scores(&data.x).unwrap(), 10, &data.labels);
    let cfg = SquareConfig {
        norm: Norm::Linf,
        eps: 0.15,
        queries: 60,
        p_init: 0.8,
        image: [1, 8, 8],
        bounds: Bounds { min: 0.0, max: 1.0 },
        seed: 0,
    };
    let out = square_attack(&scorer, &data.x, &data.labels, &cfg).unwrap();
    let acc = accuracy(&scorer.scores(&out.x).unwrap(), 10, &data.labels);
    assert!(acc < clean, "{acc} vs {clean}");
    assert!(scorer.queries() > 16);
}

#[test]
fn a_rejected_key_is_a_clear_error() {
    let url = serve(mlp(), 2);
    let access = Access {
        key: Some((KeyHeader::Bearer, "wrong".into())),
        ..Access::default()
    };
    let err = RemoteModel::connect(&url, &access).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 401") && msg.contains("--api-key"),
        "{msg}"
    );
    assert!(
        !msg.contains("wrong"),
        "the key must not appear in messages: {msg}"
    );
}

#[test]
fn an_unreachable_server_is_a_clear_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RemoteModel::connect(
        &format!("http://127.0.0.1:{port}/v2/models/x"),
        &Access::default(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("cannot reach"), "{err}");
    assert!(RemoteModel::connect("ftp://x", &Access::default()).is_err());
}

#[test]
fn rate_limits_are_waited_out_within_bounds() {
    let access = Access {
        key: Some((KeyHeader::Bearer, KEY.into())),
        ..Access::default()
    };
    let url = serve_throttled(mlp(), 10, 3);
    let remote = RemoteModel::connect(&url, &access).unwrap();
    assert_eq!(remote.metadata().name, "digits");
    // A server that never stops limiting: the client gives up with the status, not forever.
    let url = serve_throttled(mlp(), 100, 100);
    let err = RemoteModel::connect(&url, &access).unwrap_err().to_string();
    assert!(err.contains("HTTP 429"), "{err}");
    // A certificate file that holds none is refused before any request.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("ca.pem");
    std::fs::write(&empty, "not a certificate").unwrap();
    let err = RemoteModel::connect(
        "https://127.0.0.1:1/v2/models/x",
        &Access {
            ca_cert: Some(empty),
            ..Access::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("--ca-cert") && err.contains("no PEM certificate"),
        "{err}"
    );
}
