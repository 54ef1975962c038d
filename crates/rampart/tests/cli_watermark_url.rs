//! `rampart watermark verify --url` end to end: a gateway started in this process over HTTPS (its watermark key made
//! in its state directory) watermarks a thief's queries and records them (the watermarked rows and as many controls) in its state directory; verification reads
//! that record, asks a suspect behind a URL, and identifies a suspect that answers with the watermark (here the
//! watermarking model itself) but not the same model served without it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn digits(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/digits")
        .join(file)
}

async fn rampart(args: Vec<String>, api_key: String) -> Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(args)
            .env("RAMPART_API_KEY", api_key)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspect_behind_a_url_is_asked_the_recorded_queries() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = rampart_auth::ApiKeyStore::open(&state).unwrap();
    let thief = store.add("thief", &["user".to_owned()]).unwrap().key;
    let onnx = digits("model/model.onnx");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\n\
         shutdown_grace_secs = 1\n[auth]\ncreate_first_key = false\n[deploy]\nverify = false\n\
         [[models]]\nname = \"protected\"\nonnx = \"{onnx}\"\nworkers = 1\n\
         [models.defend.harden]\ndefault = {{ mode = \"label_only\" }}\n\
         [models.defend.watermark]\nfraction = 0.2\n\
         [[models]]\nname = \"plain\"\nonnx = \"{onnx}\"\nworkers = 1\n",
        onnx = onnx.display()
    );
    let config =
        rampart_gate::config::Config::parse(&text, &dir.path().join("rampart.toml"), dir.path())
            .unwrap();
    let prepared = rampart_gate::prepare(&config, rampart_gate::Parts::default())
        .await
        .unwrap();
    let base = format!("https://localhost:{}/v2/models", prepared.address.port());
    let cert = prepared.cert_path.clone().unwrap();
    // No key configured: the gateway made one in its state directory, readable by its owner only.
    let key = state.join("watermark/protected.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(prepared.serve(shutdown));

    // The thief's queries: 300 test rows through `rampart eval`'s client, as any KServe v2 client sends them.
    let test = std::fs::read_to_string(digits("test.csv")).unwrap();
    let rows: Vec<Vec<f32>> = test
        .lines()
        .skip(1)
        .take(300)
        .map(|l| {
            let fields: Vec<&str> = l.split(',').collect();
            fields[..fields.len() - 1]
                .iter()
                .map(|v| v.parse().unwrap())
                .collect()
        })
        .collect();
    let access = rampart_eval::kserve::Access {
        key: Some((rampart_eval::kserve::KeyHeader::Bearer, thief.clone())),
        ca_cert: Some(cert.clone()),
        ..Default::default()
    };
    let url = format!("{base}/protected");
    tokio::task::spawn_blocking(move || {
        use rampart_infer::{Model, Tensor, TensorData};
        let remote = rampart_eval::kserve::RemoteModel::connect(&url, &access).unwrap();
        for chunk in rows.chunks(50) {
            let flat: Vec<f32> = chunk.iter().flatten().copied().collect();
            let tensor =
                Tensor::new("input", vec![chunk.len(), 64], TensorData::Fp32(flat)).unwrap();
            remote.infer(&[tensor]).unwrap();
        }
    })
    .await
    .unwrap();

    // The record: the writer thread appends in the background.
    let record = state.join("watermark/protected.csv");
    let mut recorded = 0;
    for _ in 0..100 {
        recorded = std::fs::read_to_string(&record)
            .map(|t| t.lines().count().saturating_sub(1))
            .unwrap_or(0);
        if recorded >= 60 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // About 20% watermarked and 20% controls of 300 rows.
    assert!((60..=200).contains(&recorded), "{recorded} rows recorded");
    assert!(!state.join("watermark/plain.csv").exists());

    let verify = |model: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "watermark",
            "verify",
            "--url",
            &format!("{base}/{model}"),
            "--ca-cert",
            cert.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--queries",
            record.to_str().unwrap(),
            "--fraction",
            "0.2",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    // The watermarking model answers the watermark: identified (exit 1).
    let out = rampart(
        verify("protected", &["--principal", "thief", "--classes", "10"]),
        thief.clone(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("IDENTIFIED"), "{stdout}");
    // The same model without the watermark (scores; the classes come from them): not identified (exit 0).
    let out = rampart(verify("plain", &["--principal", "thief"]), thief.clone()).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("not identified"), "{stdout}");
    // A label-only suspect needs the protected model's classes; an unknown principal has no rows; a wrong key is
    // the gateway's 401 as a one-line error.
    for (extra, key, message) in [
        (vec!["--principal", "thief"], thief.as_str(), "--classes"),
        (
            vec!["--principal", "nobody"],
            thief.as_str(),
            "no rows of principal `nobody`",
        ),
        (vec!["--classes", "10"], "rmp_wrong", "401"),
    ] {
        let out = rampart(verify("protected", &extra), key.to_owned()).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains(message) && stderr.trim().lines().count() == 1,
            "{stderr}"
        );
    }

    stop.send(true).unwrap();
    server.await.unwrap();
}
