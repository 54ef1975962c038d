//! The gateway end to end: the pipeline in process, then over real sockets (TLS, limits, timeouts, abuse cases).
//! Every abuse case also checks that a well-behaved client is still served.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode};
use rampart_gate::config::Config;
use rampart_gate::{ConnInfo, Parts};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod sockets;
use sockets::*;

// ---------- in process ----------

async fn in_process(extra: &str) -> (Arc<rampart_gate::Gate>, String, tempfile::TempDir) {
    in_process_with(extra, |_| {}).await
}

/// [`in_process`], with `change` made to the parsed config first.
async fn in_process_with(
    extra: &str,
    change: impl FnOnce(&mut Config),
) -> (Arc<rampart_gate::Gate>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path(), extra, true);
    change(&mut config);
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let key = prepared.new_api_key.clone().unwrap();
    (Arc::clone(prepared.gate()), key, dir)
}

async fn call(
    gate: &rampart_gate::Gate,
    request: Request<Full<Bytes>>,
) -> (StatusCode, hyper::HeaderMap, String) {
    let conn = ConnInfo {
        ip: "192.0.2.7".parse().unwrap(),
        client_certs: Arc::new(Vec::new()),
    };
    let response = gate.handle(&conn, request).await;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}

fn post(key: Option<&str>, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    let mut builder =
        Request::post("/v2/models/digits/infer").header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(Full::new(body.into())).unwrap()
}

/// An audit sink that fails (a full disk) while `failing` is set, and counts what reaches it.
#[derive(Debug, Default)]
struct FlakySink {
    failing: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicUsize,
    taken: std::sync::Mutex<Vec<u16>>,
}

impl rampart_gate::audit::AuditSink for FlakySink {
    fn append(&self, records: &[rampart_gate::audit::AuditRecord]) -> std::io::Result<()> {
        use std::sync::atomic::Ordering;
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ));
        }
        self.taken
            .lock()
            .unwrap()
            .extend(records.iter().map(|r| r.status));
        Ok(())
    }

    fn sync(&self) -> std::io::Result<()> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                "disk full",
            ));
        }
        Ok(())
    }
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::new(Bytes::new())).unwrap()
}

/// Polls `check` for up to ten seconds.
async fn eventually(mut check: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

/// The outputs of a KServe v2 answer: each output's name, shape and values.
fn outputs_of(body: &str) -> Vec<(String, Vec<u64>, Vec<f64>)> {
    let answer: serde_json::Value = serde_json::from_str(body).unwrap();
    answer["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let numbers = |v: &serde_json::Value| -> Vec<f64> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect()
            };
            (
                o["name"].as_str().unwrap().to_owned(),
                numbers(&o["shape"]).iter().map(|&d| d as u64).collect(),
                numbers(&o["data"]),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_requests_get_the_answers_they_get_alone() {
    // Requests of one to three distinct rows, through a gateway that runs each alone and one that gathers them.
    let bodies: Vec<String> = (0..24)
        .map(|i| {
            let rows = 1 + i % 3;
            let data: Vec<f32> = (0..rows * 64)
                .map(|j| ((i * 7 + j * 3) % 17) as f32 / 16.0)
                .collect();
            serde_json::json!({"inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": data}]})
                .to_string()
        })
        .collect();
    let (alone, alone_key, _alone_dir) = in_process("").await;
    let (gathered, key, _dir) = in_process_with("", |config| {
        config.models[0].max_batch = 16;
        config.models[0].queue = 64;
        config.models[0].execution = rampart_gate::stages::infer::Execution::Inline;
    })
    .await;
    let mut expected = Vec::new();
    for body in &bodies {
        let (status, _, answer) = call(&alone, post(Some(&alone_key), body.clone())).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        expected.push(outputs_of(&answer));
    }
    // All at once from one task: every request is in before the first is resumed to run them.
    let answers = futures_util::future::join_all(
        bodies
            .iter()
            .map(|body| call(&gathered, post(Some(&key), body.clone()))),
    )
    .await;
    for (i, ((status, _, answer), want)) in answers.into_iter().zip(&expected).enumerate() {
        assert_eq!(status, StatusCode::OK, "request {i}: {answer}");
        let got = outputs_of(&answer);
        assert_eq!(got.len(), want.len(), "request {i}");
        for ((name, shape, data), (want_name, want_shape, want_data)) in got.iter().zip(want) {
            assert_eq!((name, shape), (want_name, want_shape), "request {i}");
            // A batch of another size may run on another of tract's plans: equal to rounding.
            for (x, y) in data.iter().zip(want_data) {
                assert!(
                    (x - y).abs() <= 1e-4 * y.abs().max(1.0),
                    "request {i}: {x} against {y}"
                );
            }
        }
    }
    let runs = gathered
        .metrics
        .model_runs
        .get_or_create(&rampart_gate::metrics::ModelLabels {
            model: "digits".into(),
        })
        .get();
    // 48 rows in runs of at most 16.
    assert!((3..24).contains(&runs), "{runs} runs for 24 requests");
    let scraped = gathered.metrics.encode();
    assert!(
        scraped.contains(&format!(
            "rampart_model_runs_total{{model=\"digits\"}} {runs}"
        )),
        "{scraped}"
    );
}

#[tokio::test]
async fn a_gateway_whose_audit_trail_fails_refuses_until_the_trail_is_written_again() {
    use std::sync::atomic::Ordering;
    for (extra, refuses) in [("", true), ("[audit]\non_failure = \"serve\"\n", false)] {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), extra, true);
        let sink = Arc::new(FlakySink::default());
        let parts = Parts {
            audit_sink: Some(Arc::clone(&sink) as Arc<dyn rampart_gate::audit::AuditSink>),
            ..Parts::default()
        };
        let prepared = rampart_gate::prepare(&config, parts).await.unwrap();
        let key = prepared.new_api_key.clone().unwrap();
        let gate = Arc::clone(prepared.gate());
        assert_eq!(
            call(&gate, post(Some(&key), infer_body(1))).await.0,
            StatusCode::OK
        );

        // The disk fills: the next record cannot be written.
        sink.failing.store(true, Ordering::SeqCst);
        let before = sink.calls.load(Ordering::SeqCst);
        assert_eq!(
            call(&gate, post(Some(&key), infer_body(1))).await.0,
            StatusCode::OK
        );
        assert!(eventually(async || sink.calls.load(Ordering::SeqCst) > before).await);
        if refuses {
            // Once the writer has said so (just after the failed write).
            assert!(eventually(async || !gate.is_ready()).await);
        }
        let (status, headers, body) = call(&gate, post(Some(&key), infer_body(1))).await;
        let (ready, _, _) = call(&gate, get("/v2/health/ready")).await;
        if refuses {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
            assert_eq!(body, r#"{"error":"unavailable, retry later"}"#);
            assert!(headers.contains_key("retry-after"));
            assert_eq!(ready, StatusCode::SERVICE_UNAVAILABLE);
        } else {
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(ready, StatusCode::OK);
        }
        assert_eq!(call(&gate, get("/v2/health/live")).await.0, StatusCode::OK);

        // Space comes back: the refusals' own records go through, and with them the gateway.
        sink.failing.store(false, Ordering::SeqCst);
        let gate = &gate;
        let key = &key;
        assert!(
            eventually(
                async || call(gate, post(Some(key), infer_body(1))).await.0 == StatusCode::OK
            )
            .await
        );
        if refuses {
            assert!(eventually(async || sink.taken.lock().unwrap().contains(&503)).await);
        }
        assert_eq!(call(gate, get("/v2/health/ready")).await.0, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_request_whose_handling_panicked_is_audited() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), "", true);
    let sink = Arc::new(FlakySink::default());
    let parts = Parts {
        audit_sink: Some(Arc::clone(&sink) as Arc<dyn rampart_gate::audit::AuditSink>),
        ..Parts::default()
    };
    let prepared = rampart_gate::prepare(&config, parts).await.unwrap();
    let gate = Arc::clone(prepared.gate());
    let conn = ConnInfo {
        ip: "192.0.2.7".parse().unwrap(),
        client_certs: Arc::new(Vec::new()),
    };
    gate.record_panic(&conn, std::time::Instant::now()).await;
    assert!(eventually(async || sink.taken.lock().unwrap().contains(&500)).await);
    let text = gate.metrics.encode();
    assert!(
        text.lines()
            .any(|l| l.starts_with("rampart_refusals_total{") && l.contains("reason=\"panic\"")),
        "{text}"
    );
}

#[tokio::test]
async fn pipeline_answers_each_case_with_its_status() {
    let (gate, key, _dir) = in_process("").await;
    let (status, _, body) = call(&gate, post(Some(&key), infer_body(2))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["outputs"][0]["shape"], serde_json::json!([2, 10]));
    assert_eq!(json["id"], "t");

    // 401 with no detail, for a missing and for a wrong key alike.
    let (status, _, missing) = call(&gate, post(None, infer_body(1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, wrong) = call(
        &gate,
        post(Some("rmp_000000000000_deadbeef"), infer_body(1)),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(missing, wrong);

    let cases: [(&str, String, StatusCode); 6] = [
        (
            "malformed JSON",
            "{\"inputs\": [".into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "shape and data disagree",
            r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[1,2,3]}]}"#
                .into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong shape for the model",
            r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[1,2,3]}]}"#
                .into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong datatype",
            r#"{"inputs":[{"name":"input","shape":[1,1],"datatype":"INT64","data":[1]}]}"#.into(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "too deep",
            format!("{{\"inputs\":{}{}}}", "[".repeat(100), "]".repeat(100)),
            StatusCode::BAD_REQUEST,
        ),
        (
            "huge shape",
            r#"{"inputs":[{"name":"input","shape":[99999999999,64],"datatype":"FP32","data":[]}]}"#
                .into(),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (what, body, want) in cases {
        let (status, _, text) = call(&gate, post(Some(&key), body)).await;
        assert_eq!(status, want, "{what}: {text}");
        assert!(text.starts_with("{\"error\":"), "{what}: {text}");
    }

    let compressed = Request::post("/v2/models/digits/infer")
        .header("authorization", format!("Bearer {key}"))
        .header("content-encoding", "gzip")
        .body(Full::new(Bytes::from_static(b"\x1f\x8b")))
        .unwrap();
    assert_eq!(
        call(&gate, compressed).await.0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let unknown = Request::get("/v2/models/nope")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(&gate, unknown).await.0, StatusCode::NOT_FOUND);
    let live = Request::get("/v2/health/live")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(call(&gate, live).await.0, StatusCode::OK);
    let meta = Request::get("/v2/models/digits")
        .header("authorization", format!("Bearer {key}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, _, body) = call(&gate, meta).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("\"input\""), "{body}");
}

#[tokio::test]
async fn pipeline_limits_answer_429_with_headers_then_ban() {
    let extra = "[limits]\nrate_per_principal = { per_second = 0.01, burst = 2 }\n[bans]\nstrikes = 3\nbase_secs = 60\n";
    let (gate, key, _dir) = in_process(extra).await;
    for _ in 0..2 {
        let (status, headers, _) = call(&gate, post(Some(&key), infer_body(1))).await;
        assert_eq!(status, StatusCode::OK);
        assert!(headers.contains_key("ratelimit-remaining"));
    }
    let (status, headers, _) = call(&gate, post(Some(&key), infer_body(1))).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"));
    assert_eq!(headers["ratelimit-remaining"], "0");
    // Two more strikes reach the threshold: the address is banned.
    call(&gate, post(Some(&key), infer_body(1))).await;
    call(&gate, post(Some(&key), infer_body(1))).await;
    let (status, headers, _) = call(&gate, post(Some(&key), infer_body(1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(headers.contains_key("retry-after"));
    assert!(gate.metrics.encode().contains("rampart_bans_total 1"));
}

#[tokio::test]
async fn pipeline_refuses_a_body_over_the_limit_on_length_and_on_chunks() {
    let (gate, key, _dir) = in_process("[limits]\nmax_body_bytes = 1000\n").await;
    let (status, _, _) = call(&gate, post(Some(&key), infer_body(8))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn cedar_denies_what_the_policy_does_not_permit() {
    let dir = tempfile::tempdir().unwrap();
    // Keys made by `rampart keys` (the same store) are the keys the gateway accepts.
    let store = rampart_auth::ApiKeyStore::open(dir.path()).unwrap();
    let auditor = store.add("auditor", &["auditor".to_owned()]).unwrap().key;
    let user = store.add("ci", &["user".to_owned()]).unwrap().key;
    let reader = store.add("dashboard", &["reader".to_owned()]).unwrap().key;
    let policies = dir.path().join("policy.cedar");
    std::fs::write(
        &policies,
        "permit (principal in Rampart::Role::\"reader\", action == Rampart::Action::\"read_metadata\", resource);\n\
         permit (principal in Rampart::Role::\"user\", action, resource) when { resource == Rampart::Model::\"digits\" };\n\
         forbid (principal, action == Rampart::Action::\"export\", resource);\n",
    )
    .unwrap();
    let config = config(
        dir.path(),
        &format!("[policy]\npolicies = \"{}\"\n", policies.display()),
        true,
    );
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    assert!(
        prepared.new_api_key.is_none(),
        "no first key while the store has active keys"
    );
    let gate = Arc::clone(prepared.gate());
    let meta = |key: &str| {
        Request::get("/v2/models/digits")
            .header("x-api-key", key)
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    // A role no policy permits: 403 on everything; the body says no more than "forbidden".
    let (status, _, body) = call(&gate, post(Some(&auditor), infer_body(1))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body, r#"{"error":"forbidden"}"#);
    assert_eq!(call(&gate, meta(&auditor)).await.0, StatusCode::FORBIDDEN);
    // `reader` may read metadata only.
    assert_eq!(
        call(&gate, post(Some(&reader), infer_body(1))).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(call(&gate, meta(&reader)).await.0, StatusCode::OK);
    assert_eq!(
        call(&gate, post(Some(&user), infer_body(1))).await.0,
        StatusCode::OK
    );
    // A revoked key stops working at the next reload, without a restart.
    let id = store
        .list()
        .into_iter()
        .find(|k| k.principal == "ci")
        .unwrap()
        .id;
    store.revoke(&id).unwrap();
    gate.reload_auth();
    assert_eq!(
        call(&gate, post(Some(&user), infer_body(1))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

// ---------- over sockets ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls13_serves_and_tls12_is_refused() {
    let server = start("", false).await;
    assert_eq!(served(&server).await, 200);
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let old = tls_client(
        server.cert.as_ref().unwrap(),
        &[&rustls::version::TLS12],
        &[b"http/1.1"],
    );
    assert!(old
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .is_err());
    // Metrics are on the admin listener.
    let metrics = scrape(&server).await;
    assert!(metrics.contains("rampart_requests_total"), "{metrics}");
    assert!(!metrics.contains(&server.key));
    // Only read: any other method is refused, with no metrics.
    let mut admin = TcpStream::connect(server.admin).await.unwrap();
    let refused = exchange(
        &mut admin,
        b"DELETE /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 405"), "{refused}");
    assert!(!refused.contains("rampart_requests_total"));
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_slow_post_are_cut_off_while_others_are_served() {
    let server = start(
        "[limits]\nheader_timeout_ms = 400\nbody_timeout_ms = 400\nidle_timeout_ms = 3000\n",
        false,
    )
    .await;
    // Slowloris: headers that never end.
    let mut slow = connect(&server).await;
    slow.write_all(b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut trickle = tokio::spawn(async move {
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"X-A: b\r\n").await.is_err() || slow.flush().await.is_err() {
                return true;
            }
        }
        // Still writable after 4 s: check the server has closed by reading.
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(Duration::from_secs(1), slow.read(&mut buf)).await,
            Ok(Ok(_)) | Ok(Err(_))
        )
    });
    assert_eq!(served(&server).await, 200);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), &mut trickle)
            .await
            .unwrap()
            .unwrap(),
        "slowloris connection stayed open"
    );

    // The HTTP/2 preface, dripped a byte at a time: bytes from the client are no progress, so the connection has
    // no request when the header timeout passes and is closed (it was held for as long as the drip went on, one
    // byte each idle period enough). And a connection that sends nothing is closed at the header timeout too.
    for drip in [&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], &[][..]] {
        let mut dripping = connect(&server).await;
        let started = tokio::time::Instant::now();
        let mut closed = false;
        for i in 0..30 {
            if let Some(byte) = drip.get(i % drip.len().max(1)) {
                if dripping.write_all(&[*byte]).await.is_err() || dripping.flush().await.is_err() {
                    closed = true;
                    break;
                }
            }
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(100), dripping.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => {
                    closed = true;
                    break;
                }
                _ => {}
            }
        }
        assert!(closed, "a connection without a request stayed open");
        assert!(started.elapsed() < Duration::from_millis(2_900));
    }

    // Slow POST: a body that stalls.
    let mut stalled = connect(&server).await;
    let head = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 5000\r\n\r\n{{\"inp",
        server.key
    );
    let answer = exchange(&mut stalled, head.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 408, "{answer}");
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_and_bodies_are_refused() {
    let server = start("[limits]\nmax_body_bytes = 2048\nmax_headers = 20\n", false).await;
    let mut stream = connect(&server).await;
    let big = format!(
        "GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let answer = exchange(&mut stream, big.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.is_empty() || status_of(&answer) == 431, "{answer}");

    let mut stream = connect(&server).await;
    let many: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let answer = exchange(
        &mut stream,
        format!("GET /v2/health/live HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        Duration::from_secs(5),
    )
    .await;
    assert!(answer.is_empty() || status_of(&answer) == 431, "{answer}");

    let mut stream = connect(&server).await;
    let answer = exchange(
        &mut stream,
        &infer_request(&server.key, &infer_body(8)),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&answer), 413, "{answer}");

    // Chunked, no Content-Length: counted as it comes.
    let mut stream = connect(&server).await;
    let chunk = "x".repeat(1500);
    let chunked = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        server.key,
        chunk.len(),
        chunk.len()
    );
    let answer = exchange(&mut stream, chunked.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 413, "{answer}");
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

/// Requests hyper cannot parse are answered by hyper itself, before any stage: with the JSON error body of every
/// other refusal, over TLS and plain HTTP, and counted like any malformed request (metrics, audit, ban strikes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_a_json_error_and_a_strike() {
    let extra = "[limits]\nmax_headers = 20\n[bans]\nstrikes = 4\nbase_secs = 60\n[audit]\nsink = \"jsonl\"\n";
    let many: String = (0..50).map(|i| format!("X-H{i}: v\r\n")).collect();
    let cases: [(&[u8], u16, &str); 3] = [
        (
            b"GET /v2/health/live HTTP/1.1\r\nHost x\r\n\r\n",
            400,
            r#"{"error":"malformed HTTP request"}"#,
        ),
        (
            b"G\x01T / HTTP/1.1\r\nHost: x\r\n\r\n",
            400,
            r#"{"error":"malformed HTTP request"}"#,
        ),
        (
            format!("GET /v2/health/live HTTP/1.1\r\nHost: x\r\n{many}\r\n")
                .into_bytes()
                .leak(),
            431,
            r#"{"error":"request headers too large"}"#,
        ),
    ];
    for plain in [false, true] {
        let server = start(extra, plain).await;
        let send = async |request: &[u8]| {
            if plain {
                let mut stream = TcpStream::connect(server.addr).await.unwrap();
                exchange(&mut stream, request, Duration::from_secs(5)).await
            } else {
                exchange(&mut connect(&server).await, request, Duration::from_secs(5)).await
            }
        };
        for (request, status, body) in &cases {
            let answer = send(request).await;
            assert_eq!(status_of(&answer), *status, "{answer}");
            let (head, rest) = answer.split_once("\r\n\r\n").unwrap();
            assert!(head.contains("content-type: application/json"), "{answer}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{answer}"
            );
            assert!(head.contains("connection: close"), "{answer}");
            assert_eq!(rest, *body);
        }
        // A fourth strike earns a ban: a malformed request after a good one on the same connection, both sent at
        // once (the answers may then come in one write).
        let pipelined = send(
            b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost x\r\n\r\n",
        )
        .await;
        let (first, second) = pipelined.split_once(r#"{"live":true}"#).unwrap();
        assert_eq!(status_of(first), 200, "{pipelined}");
        assert_eq!(status_of(second), 400, "{pipelined}");
        assert!(
            second.ends_with(r#"{"error":"malformed HTTP request"}"#),
            "{pipelined}"
        );

        // Each audited like any other refusal, and the ban too (the trail is written in batches).
        let trail = server._dir.path().join("audit.jsonl");
        let audited = |needle: &str| {
            std::fs::read_to_string(&trail).map_or(0, |text| text.matches(needle).count())
        };
        let expected = [
            (r#""stage":"http","reason":"malformed_http""#, 3),
            (r#""stage":"http","reason":"headers_too_large""#, 1),
            (r#""outcome":"banned""#, 1),
        ];
        let mut waited = 0;
        while expected.iter().any(|(needle, n)| audited(needle) != *n) && waited < 100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            waited += 1;
        }
        for (needle, n) in expected {
            assert_eq!(audited(needle), n, "{needle}");
        }
        // The banned address's next connection is closed at accept.
        let mut banned = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(read_some(&mut banned, Duration::from_secs(5)).await, "");
        let metrics = scrape(&server).await;
        for line in [
            r#"rampart_refusals_total{stage="http",reason="malformed_http"} 3"#,
            r#"rampart_refusals_total{stage="http",reason="headers_too_large"} 1"#,
            r#"rampart_connections_refused_total{reason="banned"} 1"#,
            "rampart_bans_total 1",
        ] {
            assert!(metrics.contains(line), "{line} missing in {metrics}");
        }
        stop(server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_flood_is_capped_per_ip_while_others_are_served() {
    let server = start(
        "[limits]\nmax_connections_per_ip = 4\nhandshake_timeout_ms = 500\n",
        false,
    )
    .await;
    // Six raw connections from 127.0.0.2 that never handshake: four are held, the rest closed at once.
    let mut flood = Vec::new();
    for _ in 0..6 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        flood.push(socket.connect(server.addr).await.unwrap());
    }
    let mut closed = 0;
    for stream in &mut flood {
        let mut buf = [0u8; 1];
        if let Ok(Ok(0)) =
            tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf)).await
        {
            closed += 1;
        }
    }
    assert!(
        closed >= 2,
        "only {closed} flood connections were closed at once"
    );
    // A client from another address is served meanwhile.
    assert_eq!(served(&server).await, 200);
    stop(server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_rapid_reset_burst_closes_that_connection_only() {
    let server = start(
        "[limits]\nh2_max_pending_reset_streams = 10\n[bans]\nenabled = false\n",
        false,
    )
    .await;
    assert!(
        rapid_reset_burst(&server).await,
        "the rapid-reset connection was not closed"
    );
    assert_eq!(served(&server).await, 200);
    // Counted as the gateway's refusal of that connection.
    let metrics = scrape(&server).await;
    let line = r#"rampart_connections_refused_total{reason="h2_enhance_your_calm"} 1"#;
    assert!(metrics.contains(line), "{line} missing in {metrics}");
    stop(server).await;

    // And a ban strike: with one strike to a ban, the address's next connection is closed at accept.
    let server = start(
        "[limits]\nh2_max_pending_reset_streams = 10\n[bans]\nstrikes = 1\n",
        false,
    )
    .await;
    assert!(rapid_reset_burst(&server).await);
    // Recorded once the gateway has finished with that connection.
    let mut metrics = scrape(&server).await;
    for _ in 0..100 {
        if metrics.contains("rampart_bans_total 1") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        metrics = scrape(&server).await;
    }
    assert!(metrics.contains("rampart_bans_total 1"), "{metrics}");
    let mut banned = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(read_some(&mut banned, Duration::from_secs(5)).await, "");
    stop(server).await;
}

/// Opens streams over one HTTP/2 connection and resets each at once; whether the gateway closed the connection.
async fn rapid_reset_burst(server: &Server) -> bool {
    let (mut client, driver) = h2_connect(server).await;
    for _ in 0..2000 {
        let request = Request::get("https://localhost/v2/health/live")
            .body(())
            .unwrap();
        let ready = match tokio::time::timeout(Duration::from_secs(2), client.clone().ready()).await
        {
            Ok(Ok(ready)) => ready,
            _ => return true,
        };
        client = ready;
        match client.send_request(request, true) {
            Ok((_, mut stream)) => stream.send_reset(h2::Reason::CANCEL),
            Err(_) => return true,
        }
    }
    let ended = tokio::time::timeout(Duration::from_secs(5), driver).await;
    matches!(ended, Ok(Ok(Err(_))))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drain_finishes_in_flight_requests() {
    let server = start("", false).await;
    let mut stream = connect(&server).await;
    // In flight: the head has arrived and the gateway is reading the body when the stop comes. (A connection
    // still sending its head is idle to hyper and is closed at once, which is also a correct drain.)
    let request = infer_request(&server.key, &infer_body(1));
    let head_end = request.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let split = head_end + 5;
    stream.write_all(&request[..split]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rest = request[split..].to_vec();
    server.stop.send(true).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let answer = exchange(&mut stream, &rest, Duration::from_secs(5)).await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap()
        .unwrap();
    assert!(TcpStream::connect(server.addr).await.is_err());
}
