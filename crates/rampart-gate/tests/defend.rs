//! The inference-time defences in the gateway, over real sockets on the digits example: a PGD example refused with
//! 422, a PNG accepted, a decompression bomb refused, an extraction client banned while a benign one keeps being
//! served, hardened outputs per role, the watermark applied deterministically, the config's unknown keys refused.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rampart_defend::profile::Profile;
use rampart_defend::watermark::{WatermarkKey, Watermarker};
use rampart_gate::config::Config;
use rampart_gate::Parts;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

fn digits(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/digits")
        .join(file)
}

fn read_rows(file: &str) -> (Vec<Vec<f32>>, Vec<usize>) {
    let text = std::fs::read_to_string(digits(file)).unwrap();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for line in text.lines().skip(1) {
        let fields: Vec<&str> = line.split(',').collect();
        let (label, pixels) = fields.split_last().unwrap();
        rows.push(pixels.iter().map(|p| p.parse::<f32>().unwrap()).collect());
        labels.push(label.parse().unwrap());
    }
    (rows, labels)
}

const WATERMARK: [u8; 32] = [7; 32];

struct Server {
    addr: SocketAddr,
    keys: std::collections::HashMap<&'static str, String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    dir: tempfile::TempDir,
}

/// Writes the profile, the calibration rows (the first 250 test rows), the watermark key and the config; adds the
/// API keys; starts the gateway on plain HTTP (loopback).
async fn start(detector_extra: &str) -> Server {
    start_with(detector_extra, false).await
}

/// As [`start`]; with `reload`, the model is a copy in the temporary directory, unsigned (`deploy.verify = false`:
/// the scan and the policy still run), polled for new versions every second.
async fn start_with(detector_extra: &str, reload: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let (model, deploy) = if reload {
        let model = dir.path().join("model/model.onnx");
        std::fs::create_dir_all(model.parent().unwrap()).unwrap();
        std::fs::copy(digits("model/model.onnx"), &model).unwrap();
        (model, "verify = false\nreload_secs = 1".to_owned())
    } else {
        let release = digits("release.pub");
        (
            digits("model/model.onnx"),
            format!("trusted_keys = [\"{}\"]", release.display()),
        )
    };
    let state = dir.path().join("state");
    let train = std::fs::File::open(digits("train.csv")).unwrap();
    let profile = Profile::from_csv(train, "label", 5000).unwrap();
    std::fs::write(dir.path().join("profile.json"), profile.to_json()).unwrap();
    let test = std::fs::read_to_string(digits("test.csv")).unwrap();
    let calibration: Vec<&str> = test.lines().take(251).collect();
    std::fs::write(dir.path().join("clean.csv"), calibration.join("\n")).unwrap();
    std::fs::write(
        dir.path().join("wm.key"),
        WatermarkKey::from_bytes(WATERMARK).to_hex(),
    )
    .unwrap();
    let store = rampart_auth::ApiKeyStore::open(&state).unwrap();
    let mut keys = std::collections::HashMap::new();
    for (name, roles) in [
        ("admin", vec!["admin"]),
        ("attacker", vec!["admin"]),
        ("benign", vec!["user"]),
        ("thief", vec!["user"]),
        ("analyst", vec!["user", "analyst"]),
    ] {
        let roles: Vec<String> = roles.into_iter().map(String::from).collect();
        keys.insert(name, store.add(name, &roles).unwrap().key);
    }
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
plain_http = true
state_dir = "{state}"
shutdown_grace_secs = 1
[audit]
sink = "jsonl"
flush_ms = 20
[deploy]
{deploy}
[[models]]
name = "digits"
onnx = "{model}"
workers = 1
queue = 64
[models.defend]
profile = "profile.json"
[models.defend.images]
max_side = 64
[models.defend.schema]
tolerance = 1.0
[models.defend.detector]
calibration_data = "clean.csv"
{detector_extra}
[models.defend.extraction]
throttle = {{ per_second = 1000.0, burst = 1000 }}
[models.defend.extraction.monitor]
ban_after = 10
[models.defend.harden]
default = {{ mode = "label_only" }}
[models.defend.harden.roles]
admin = {{ mode = "full", decimals = 3 }}
analyst = {{ mode = "top_k", k = 3, decimals = 2 }}
[models.defend.watermark]
key = "wm.key"
fraction = 0.2
[models.defend.anomaly]
"#,
        state = state.display(),
        model = model.display(),
    );
    let config = Config::parse(&text, &dir.path().join("gate.toml"), dir.path()).unwrap();
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    let addr = prepared.address;
    let task = tokio::spawn(prepared.serve(shutdown));
    Server {
        addr,
        keys,
        stop,
        task,
        dir,
    }
}

async fn stop(server: Server) -> tempfile::TempDir {
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server.task)
        .await
        .unwrap()
        .unwrap();
    server.dir
}

/// One request on its own connection: status, headers (lowercased) and the JSON body.
async fn post(
    server: &Server,
    who: &str,
    body: &[u8],
    extra_headers: &str,
) -> (u16, String, Value) {
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: localhost\r\nauthorization: Bearer {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra_headers}\r\n",
        server.keys[who],
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (
        status,
        head.to_ascii_lowercase(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn json_rows(rows: &[&[f32]]) -> Vec<u8> {
    let data: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
    serde_json::json!({"inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": data}]})
        .to_string()
        .into_bytes()
}

fn output<'a>(body: &'a Value, name: &str) -> &'a Value {
    body["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("no output `{name}` in {body}"))
}

/// Whether the answer is an extraction ban (a 403 that says so).
fn banned(status: u16, body: &Value) -> bool {
    if status != 403 {
        return false;
    }
    assert!(
        body["error"].as_str().unwrap().contains("extraction"),
        "{body}"
    );
    true
}

fn label_of(body: &Value) -> i64 {
    output(body, "label")["data"][0].as_i64().unwrap()
}

/// PGD-40 (eps 0.1, step 0.01, every step taken) with the evaluator's gradients, kept inside the training data's
/// range per pixel (an attacker who knows the schema check stays within it).
fn pgd(rows: &[Vec<f32>], labels: &[usize]) -> Vec<Vec<f32>> {
    let train = std::fs::File::open(digits("train.csv")).unwrap();
    let profile = Profile::from_csv(train, "label", 10).unwrap();
    let engine =
        rampart_eval::Engine::from_onnx(&std::fs::read(digits("model/model.onnx")).unwrap())
            .unwrap();
    let x: Vec<f32> = rows.iter().flatten().copied().collect();
    let mut adv = x.clone();
    for _ in 0..40 {
        let (_, grad) = engine.loss_gradient(&adv, labels).unwrap();
        for (i, ((a, &g), &o)) in adv.iter_mut().zip(&grad).zip(&x).enumerate() {
            let f = &profile.features[i % 64];
            *a = (*a + 0.01 * g.signum() * f32::from(u8::from(g != 0.0)))
                .clamp(o - 0.1, o + 0.1)
                .clamp(f.min as f32, f.max as f32);
        }
    }
    adv.chunks(64).map(<[f32]>::to_vec).collect()
}

fn png(row: &[f32], side: u32) -> Vec<u8> {
    let pixels: Vec<u8> = row.iter().map(|v| (v * 255.0).round() as u8).collect();
    let img = image::GrayImage::from_raw(side, side, pixels).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// A KServe v2 binary-extension body with one BYTES element.
fn bytes_body(element: &[u8]) -> (Vec<u8>, String) {
    let mut binary = (element.len() as u32).to_le_bytes().to_vec();
    binary.extend_from_slice(element);
    let json = serde_json::json!({"inputs": [{"name": "input", "shape": [1], "datatype": "BYTES", "parameters": {"binary_data_size": binary.len()}}]}).to_string();
    let mut body = json.clone().into_bytes();
    body.extend_from_slice(&binary);
    (
        body,
        format!("inference-header-content-length: {}\r\n", json.len()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_defences_decide_over_real_sockets() {
    let server = start("").await;
    let (test, labels) = read_rows("test.csv");
    let held: Vec<usize> = (260..test.len()).collect();

    // Hardened outputs per role: label only by default, rounded probabilities for admin, top-3 for analyst.
    let row = &test[held[0]];
    let (status, _, body) = post(&server, "benign", &json_rows(&[row]), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outputs"].as_array().unwrap().len(), 1, "{body}");
    let (status, _, body) = post(&server, "admin", &json_rows(&[row]), "").await;
    assert_eq!(status, 200, "{body}");
    let probs = output(&body, "probabilities")["data"].as_array().unwrap();
    assert_eq!(probs.len(), 10);
    assert!(probs.iter().all(|p| (p.as_f64().unwrap() * 1000.0
        - (p.as_f64().unwrap() * 1000.0).round())
    .abs()
        < 1e-3));
    let (status, _, body) = post(&server, "analyst", &json_rows(&[row]), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        output(&body, "top_k_labels")["shape"],
        serde_json::json!([1, 3])
    );

    // PGD examples that fool the model are refused (at least 95% of them): with 422 as adversarial, and once the
    // stream of off-lattice queries has raised the extraction monitor's off-support signal for long enough, with 403.
    let victims: Vec<usize> = held.iter().copied().take(40).collect();
    let originals: Vec<Vec<f32>> = victims.iter().map(|&i| test[i].clone()).collect();
    let truth: Vec<usize> = victims.iter().map(|&i| labels[i]).collect();
    let adversarial = pgd(&originals, &truth);
    let (mut fooled, mut refused) = (0, 0);
    for (adv, &label) in adversarial.iter().zip(&truth) {
        let (status, head, body) = post(&server, "attacker", &json_rows(&[adv]), "").await;
        if status == 422 || status == 403 {
            refused += 1;
            let reason = if status == 422 {
                "adversarial"
            } else {
                "extraction"
            };
            assert!(body["error"].as_str().unwrap().contains(reason), "{body}");
            fooled += 1;
        } else {
            assert_eq!(status, 200, "{head}{body}");
            fooled += usize::from(label_of(&body) != label as i64);
        }
    }
    assert!(fooled >= 20, "PGD fooled only {fooled} of 40");
    assert!(
        refused * 100 >= fooled * 95,
        "{refused} of {fooled} refused"
    );

    // A PNG of a test row is decoded and answered; a bomb (a huge, highly compressible image) is refused.
    let (body, header) = bytes_body(&png(row, 8));
    let (status, _, answer) = post(&server, "benign", &body, &header).await;
    assert_eq!(status, 200, "{answer}");
    let mut bomb = std::io::Cursor::new(Vec::new());
    image::GrayImage::new(3000, 3000)
        .write_to(&mut bomb, image::ImageFormat::Png)
        .unwrap();
    let bomb = bomb.into_inner();
    assert!(bomb.len() < 1 << 20, "the bomb is {} bytes", bomb.len());
    let (body, header) = bytes_body(&bomb);
    let (status, _, answer) = post(&server, "benign", &body, &header).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("limit"),
        "{answer}"
    );

    // Values far outside the training data's range: refused by the schema check.
    let wild = vec![5.0_f32; 64];
    let (status, _, answer) = post(&server, "benign", &json_rows(&[&wild]), "").await;
    assert_eq!(status, 422, "{answer}");

    // The watermark: a row the key selects is answered with the same keyed wrong label every time.
    let marker = Watermarker::new(WatermarkKey::from_bytes(WATERMARK), 0.2).unwrap();
    let engine =
        rampart_eval::Engine::from_onnx(&std::fs::read(digits("model/model.onnx")).unwrap())
            .unwrap();
    // Rows the key selects, in order; the first the detector lets through is answered with the keyed wrong label,
    // the same one every time.
    let candidates: Vec<(usize, usize)> = held
        .iter()
        .filter_map(|&i| {
            let logits = engine.logits(&test[i]).unwrap();
            let own = rampart_defend::argmax(&logits).unwrap();
            marker.wrong_label(&test[i], own, 10).map(|w| (i, w))
        })
        .collect();
    let mut checked = false;
    for (chosen, wrong) in candidates.into_iter().take(5) {
        let (status, _, body) = post(&server, "admin", &json_rows(&[&test[chosen]]), "").await;
        if status == 422 {
            continue;
        }
        assert_eq!(status, 200, "{body}");
        assert_eq!(label_of(&body), wrong as i64);
        let (_, _, again) = post(&server, "admin", &json_rows(&[&test[chosen]]), "").await;
        assert_eq!(again, body);
        checked = true;
        break;
    }
    assert!(checked, "no watermarked row got through");

    // Extraction: uniform noise from `thief` (inside the profile's range per pixel, as a thief who knows the schema
    // check sends it) is banned (403) within 200 queries, while `benign`, on the same address, replaying test rows,
    // is never banned or throttled.
    let train = std::fs::File::open(digits("train.csv")).unwrap();
    let profile = Profile::from_csv(train, "label", 10).unwrap();
    let mut seed = 99_u64;
    let mut banned_at = None;
    for i in 0..200 {
        let noise: Vec<f32> = (0..64)
            .map(|j| {
                seed = seed
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let u = (seed >> 40) as f32 / (1u64 << 24) as f32;
                let f = &profile.features[j];
                f.min as f32 + u * (f.max - f.min) as f32
            })
            .collect();
        let (status, _, body) = post(&server, "thief", &json_rows(&[&noise]), "").await;
        assert_ne!(status, 500, "{body}");
        if banned(status, &body) {
            banned_at = Some(i + 1);
            break;
        }
        let (status, _, body) = post(
            &server,
            "benign",
            &json_rows(&[&test[held[i % held.len()]]]),
            "",
        )
        .await;
        assert!(
            status == 200 || status == 422,
            "benign answered {status}: {body}"
        );
    }
    let at = banned_at.expect("the noise client was never banned");
    let (status, _, _) = post(&server, "thief", &json_rows(&[&test[held[1]]]), "").await;
    assert_eq!(status, 403, "the ban holds for natural rows too");
    let (status, _, body) = post(&server, "benign", &json_rows(&[&test[held[1]]]), "").await;
    assert_eq!(status, 200, "{body}");
    eprintln!("noise banned after {at} queries");

    // The audit trail carries the defences' decisions.
    let dir = stop(server).await;
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
    let key_id = WatermarkKey::from_bytes(WATERMARK).id();
    assert!(
        audit.contains(&format!("\"watermark_key\":\"{key_id}\"")),
        "no key id"
    );
    assert!(audit.contains("\"reason\":\"adversarial_input\""));
    assert!(audit.contains("\"reason\":\"extraction_banned\""));
    assert!(audit.contains("\"detector_threshold\""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flag_mode_answers_with_a_header() {
    let server = start("action = \"flag\"").await;
    let (test, labels) = read_rows("test.csv");
    let rows: Vec<Vec<f32>> = test[300..310].to_vec();
    let adversarial = pgd(&rows, &labels[300..310]);
    let mut flagged = 0;
    for adv in &adversarial {
        let (status, head, body) = post(&server, "admin", &json_rows(&[adv]), "").await;
        assert_eq!(status, 200, "{body}");
        flagged += usize::from(head.contains("x-rampart-flag: adversarial"));
    }
    assert!(flagged >= 5, "only {flagged} of 10 flagged");
    stop(server).await;
}

#[tokio::test]
async fn missing_or_out_of_range_defences_stop_the_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let train = std::fs::File::open(digits("train.csv")).unwrap();
    let profile = Profile::from_csv(train, "label", 5000).unwrap();
    std::fs::write(dir.path().join("profile.json"), profile.to_json()).unwrap();
    for (case, (table, key)) in [
        // A detector cannot decide without calibration.
        (
            "[models.defend.detector]\n",
            "models[0].defend.detector.calibration_data",
        ),
        // A ban past an `Instant`'s range panicked on the first ban, answering 500 from then on.
        (
            "[models.defend.extraction]\nban_secs = 9223372036854775807\n",
            "models[0].defend.extraction",
        ),
        // A shape whose product wraps round to the model's 64 values once passed, then ran out of memory.
        (
            "shape = { height = 4611686018427387920, width = 4, channels = 1 }\n",
            "models[0].defend.shape",
        ),
        // A sanitiser that cannot work on the shape (JPEG on two channels) answered every request 503.
        (
            "shape = { height = 4, width = 8, channels = 2 }\n[models.defend.sanitise]\nsteps = [{ kind = \"jpeg\", quality = 75 }]\n",
            "models[0].defend.sanitise.steps",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        // A state directory each: a start that failed may still be letting go of its own.
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplain_http = true\nstate_dir = \"{}\"\n[deploy]\ntrusted_keys = [\"{}\"]\n[[models]]\nname = \"digits\"\nonnx = \"{}\"\n[models.defend]\nprofile = \"profile.json\"\n{table}",
            dir.path().join(format!("state{case}")).display(),
            digits("release.pub").display(),
            digits("model/model.onnx").display()
        );
        let config = Config::parse(&text, &dir.path().join("gate.toml"), dir.path()).unwrap();
        let err = rampart_gate::prepare(&config, Parts::default())
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(key), "{table}: {err}");
    }
}

#[test]
fn the_defend_table_refuses_unknown_keys_and_missing_calibration() {
    let model = digits("model/model.onnx");
    let base = format!(
        "[[models]]\nname = \"digits\"\nonnx = \"{}\"\n[models.defend]\n",
        model.display()
    );
    let err = Config::parse(
        &format!("{base}profil = \"p.json\"\n"),
        Path::new("gate.toml"),
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("profil"), "{err}");
    let err = Config::parse(
        &format!("{base}[models.defend.detector]\nthreshold = 3\n"),
        Path::new("gate.toml"),
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("threshold"), "{err}");
    let err = Config::parse(
        &format!("{base}[models.defend.harden]\nenabled = \"yes\"\n"),
        Path::new("gate.toml"),
        Path::new("."),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("enabled"), "{err}");
}

/// Noise outside the training data's range, as a prober sends it: every request refused by the schema stage (422).
fn wild_noise(seed: &mut u64) -> Vec<f32> {
    (0..64)
        .map(|_| {
            *seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            2.0 + (*seed >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_refusals_are_extraction_evidence_but_not_a_ban_for_a_slip() {
    let server = start("").await;
    let (test, _) = read_rows("test.csv");
    let mut seed = 7_u64;
    // A benign client with one malformed request (a batch of 8 rows outside the profile) in every 25.
    for i in 0..120 {
        let slip = i % 25 == 24;
        let (status, _, body) = if slip {
            let rows: Vec<Vec<f32>> = (0..8).map(|_| wild_noise(&mut seed)).collect();
            let refs: Vec<&[f32]> = rows.iter().map(Vec::as_slice).collect();
            post(&server, "benign", &json_rows(&refs), "").await
        } else {
            post(&server, "benign", &json_rows(&[&test[260 + i]]), "").await
        };
        let expected = if slip { 422 } else { 200 };
        if status != expected {
            // The detector refuses a few clean rows (its false positives); never a ban.
            assert_eq!((status, slip), (422, false), "request {i}: {body}");
        }
    }
    // A prober whose every request the schema refuses: throttled once the off-manifold evidence is significant
    // (here `throttle` lets requests through), then banned `ban_after` (10) flagged requests later.
    let mut banned_at = None;
    for i in 0..60 {
        let (status, _, body) =
            post(&server, "thief", &json_rows(&[&wild_noise(&mut seed)]), "").await;
        if banned(status, &body) {
            banned_at = Some(i + 1);
            break;
        }
        assert_eq!(status, 422, "request {i}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains("outside"),
            "{body}"
        );
    }
    let at = banned_at.expect("the prober was never banned");
    assert!(
        (20..=40).contains(&at),
        "banned after {at} refused requests"
    );
    let (status, _, body) = post(&server, "benign", &json_rows(&[&test[300]]), "").await;
    assert_eq!(status, 200, "{body}");
    let dir = stop(server).await;
    let audit = std::fs::read_to_string(dir.path().join("state/audit.jsonl")).unwrap();
    assert!(
        audit.contains("\"extraction_signals\":[\"off_manifold\"]"),
        "no evidence recorded"
    );
}

/// The audit records so far, one JSON value per line.
fn audit_records(server: &Server) -> Vec<Value> {
    std::fs::read_to_string(server.dir.path().join("state/audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The detector threshold in the latest answered request's audit record (waits for the audit writer).
async fn latest_threshold(server: &Server, answered: usize) -> f64 {
    for _ in 0..100 {
        let thresholds: Vec<f64> = audit_records(server)
            .iter()
            .filter_map(|r| r["defend"]["detector_threshold"].as_f64())
            .collect();
        if thresholds.len() >= answered {
            return thresholds[answered - 1];
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no audit record for request {answered}");
}

/// Replaces the served model file in one step (a rename), as a deployment would.
fn replace_model(server: &Server, with: &Path) {
    let model = server.dir.path().join("model/model.onnx");
    let staged = server.dir.path().join("model.onnx.new");
    std::fs::copy(with, &staged).unwrap();
    std::fs::rename(&staged, &model).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_recalibrates_the_detector_or_is_refused() {
    let server = start_with("", true).await;
    let (test, _) = read_rows("test.csv");
    let row = json_rows(&[&test[300]]);
    let (status, _, first) = post(&server, "admin", &row, "").await;
    assert_eq!(status, 200, "{first}");
    let mut answered = 1;
    let mlp = latest_threshold(&server, answered).await;

    // A new version (the CNN): its detector is calibrated on its own answers before it serves, and both are
    // swapped in together, so a request answered with another threshold was answered by the new version.
    replace_model(&server, &digits("model_cnn/model.onnx"));
    let mut cnn = mlp;
    for _ in 0..100 {
        let (status, _, body) = post(&server, "admin", &row, "").await;
        assert_eq!(status, 200, "{body}");
        answered += 1;
        cnn = latest_threshold(&server, answered).await;
        if cnn != mlp {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_ne!(
        cnn, mlp,
        "the new version is not serving, or its detector was not recalibrated"
    );
    let reloads = audit_records(&server)
        .iter()
        .filter(|r| r["action"] == "deploy.load" && r["outcome"] != "error")
        .count();
    assert_eq!(reloads, 2, "start and one reload");

    // A version the defences cannot be built for (4 inputs, not the profile's 64): refused, recorded, and the CNN
    // keeps serving with its detector.
    replace_model(
        &server,
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../rampart/tests/eval-fixtures/sigmoid.onnx"),
    );
    let mut refused = None;
    for _ in 0..100 {
        refused = audit_records(&server)
            .into_iter()
            .find(|r| r["action"] == "defend.recalibrate");
        if refused.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = refused.expect("the refused reload was not recorded");
    assert_eq!(refused["outcome"], "error", "{refused}");
    assert!(refused.to_string().contains("64"), "{refused}");
    let (status, _, third) = post(&server, "admin", &row, "").await;
    assert_eq!(status, 200, "{third}");
    answered += 1;
    assert_eq!(
        latest_threshold(&server, answered).await,
        cnn,
        "the CNN and its detector stopped serving"
    );
    stop(server).await;
}
