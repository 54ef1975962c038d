//! Start-up helpers shared by the gateway's socket tests: a signed example model, a gateway started from TOML text
//! in a temporary directory, an HTTPS client that trusts the gateway's self-signed certificate, and the audit log's
//! entries. Each test binary uses the part it needs.

#![allow(dead_code, reason = "each test binary uses a different part")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rampart_gate::config::Config;
use rampart_gate::Parts;
use rampart_sign::{sign_dir, Curve, SignOptions, SigningKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A pickle that runs `os.system` when loaded (built here, never committed).
pub const MALICIOUS_PICKLE: &[u8] = b"cos\nsystem\n(S'echo pwned'\ntR.";

/// A file of the bundled digits example.
pub fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/digits")
        .join(path)
}

/// Signs `dir` into `dir/model.sig`.
pub fn sign(dir: &Path, key: &SigningKey) {
    let _ = std::fs::remove_file(dir.join("model.sig"));
    let mut options = SignOptions::default();
    options
        .ignore
        .add(rampart_digest::ManifestPath::new("model.sig").unwrap());
    let (_, bundle) = sign_dir(dir, key, &options).unwrap();
    std::fs::write(dir.join("model.sig"), bundle.to_json().unwrap()).unwrap();
}

/// A copy of the digits model in `dir/name`, signed with `key` unless `key` is `None`.
pub fn model_dir(dir: &Path, name: &str, key: Option<&SigningKey>) -> PathBuf {
    let model = dir.join(name);
    std::fs::create_dir_all(&model).unwrap();
    std::fs::copy(example("model/model.onnx"), model.join("model.onnx")).unwrap();
    if let Some(key) = key {
        sign(&model, key);
    }
    model
}

/// A work directory with a signing key whose public half is `release.pub`.
pub fn workspace() -> (tempfile::TempDir, SigningKey) {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::generate(Curve::P256);
    std::fs::write(
        dir.path().join("release.pub"),
        key.verifying_key().to_pem().unwrap(),
    )
    .unwrap();
    (dir, key)
}

/// Adds an API key for `principal` with `roles` to the store in `state`; returns the key.
pub fn api_key(state: &Path, principal: &str, roles: &[&str]) -> String {
    let store = rampart_auth::ApiKeyStore::open(state).unwrap();
    let roles: Vec<String> = roles.iter().map(|r| (*r).to_owned()).collect();
    store.add(principal, &roles).unwrap().key
}

/// A running gateway.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate (TLS), to trust.
    pub cert: Option<PathBuf>,
    /// Its certificate's fingerprint (TLS).
    pub fingerprint: Option<String>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Gateway {
    /// Stops it and waits for the drain (the audit log's last checkpoint is signed by then).
    pub async fn stop(self) {
        self.stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .unwrap()
            .unwrap();
    }
}

/// Starts a gateway in `dir` (state in `dir/state`, keys made beforehand, no first key created, the deployment gate
/// trusting `dir/release.pub`) with `extra` TOML appended; TLS with a self-signed certificate unless `extra` turns
/// on `plain_http` itself.
pub async fn start(dir: &Path, extra: &str) -> Gateway {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"state\"\nshutdown_grace_secs = 2\n\
         [auth]\ncreate_first_key = false\n[deploy]\ntrusted_keys = [\"release.pub\"]\n{extra}\n"
    );
    let config = Config::parse(&text, &dir.join("rampart.toml"), dir).unwrap();
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let (stop, shutdown) = watch::channel(false);
    Gateway {
        addr: prepared.address,
        cert: prepared.cert_path.clone(),
        fingerprint: prepared.fingerprint.clone(),
        stop,
        task: tokio::spawn(prepared.serve(shutdown)),
    }
}

/// A TLS 1.3 connection to `gateway` that trusts its certificate and offers `alpn`.
pub async fn tls(
    gateway: &Gateway,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(gateway.cert.as_ref().unwrap()).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// One HTTPS/1.1 request to `gateway` (trusting its certificate), `Connection: close`; the status and the body.
pub async fn https(
    gateway: &Gateway,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, String) {
    let mut stream = tls(gateway, b"http/1.1").await;
    let (status, body) = exchange(&mut stream, key, method, path, body).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// One plain HTTP/1.1 request to a gateway on `addr` (`plain_http`), `Connection: close`; the status and the body.
pub async fn http(
    addr: SocketAddr,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(&mut stream, key, method, path, body).await
}

/// Writes one JSON request with `key` as its bearer token and reads the answer to the end.
async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    key: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> (u16, Vec<u8>) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(body).await.unwrap();
    stream.flush().await.unwrap();
    let mut out = Vec::new();
    // The gateway may close without a TLS close_notify after `Connection: close`: what was read is the answer.
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut out)).await;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8_lossy(&out[..split]).into_owned();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, out[split + 4..].to_vec())
}

/// The entries of the log in `dir` that its checkpoint covers.
pub fn log_entries(dir: &Path) -> Vec<serde_json::Value> {
    let key = rampart_log::read_verifier(dir, None).unwrap();
    let view = rampart_log::LogView::open(dir, key).unwrap();
    (0..view.checkpoint().size)
        .map(|i| serde_json::from_slice(&view.entry(i).unwrap()).unwrap())
        .collect()
}

/// Every file under `dir`, relative paths.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}
