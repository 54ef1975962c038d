//! What `gateway.rs` and `h2_abuse.rs` share: a gateway with the digits model started in process on loopback ports
//! from a few lines of config, and its clients over TLS 1.3 (HTTP/1.1 as raw bytes, HTTP/2 through the `h2` crate).
//! (`common` is the other test binaries' start-up, from whole TOML text in a directory of their own.)

#![allow(
    dead_code,
    reason = "each test file uses its own part of these helpers"
)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rampart_gate::config::Config;
use rampart_gate::Parts;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;

pub fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx")
}

pub fn config(state: &Path, extra: &str, plain: bool) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nplain_http = {plain}\nstate_dir = \"{}\"\nshutdown_grace_secs = 2\n{extra}\n[deploy]\ntrusted_keys = [\"{}\"]\n[[models]]\nname = \"digits\"\nonnx = \"{}\"\nworkers = 1\nqueue = 8\n",
        state.display(),
        model_path().with_file_name("../release.pub").display(),
        model_path().display()
    );
    Config::parse(&text, Path::new("test.toml"), Path::new(".")).unwrap()
}

pub fn infer_body(rows: usize) -> String {
    let data: Vec<f32> = (0..rows * 64).map(|i| (i % 17) as f32 / 16.0).collect();
    serde_json::json!({"id": "t", "inputs": [{"name": "input", "shape": [rows, 64], "datatype": "FP32", "data": data}]})
        .to_string()
}

pub struct Server {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub key: String,
    pub cert: Option<CertificateDer<'static>>,
    pub stop: watch::Sender<bool>,
    pub task: tokio::task::JoinHandle<()>,
    pub _dir: tempfile::TempDir,
}

pub async fn start(extra: &str, plain: bool) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), extra, plain);
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let cert = (!plain).then(|| {
        let pem = std::fs::read(dir.path().join("tls/cert.pem")).unwrap();
        use rustls::pki_types::pem::PemObject;
        CertificateDer::from_pem_slice(&pem).unwrap()
    });
    let (stop, shutdown) = watch::channel(false);
    let addr = prepared.address;
    let admin = prepared.admin_address.unwrap();
    let key = prepared.new_api_key.clone().unwrap();
    let task = tokio::spawn(prepared.serve(shutdown));
    Server {
        addr,
        admin,
        key,
        cert,
        stop,
        task,
        _dir: dir,
    }
}

pub fn tls_client(
    cert: &CertificateDer<'static>,
    versions: &[&'static rustls::SupportedProtocolVersion],
    alpn: &[&[u8]],
) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

pub async fn tls_connect(server: &Server, alpn: &[u8]) -> TlsStream<TcpStream> {
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let connector = tls_client(
        server.cert.as_ref().unwrap(),
        &[&rustls::version::TLS13],
        &[alpn],
    );
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Sends raw bytes and reads until the server closes or `limit` passes; returns what came back.
pub async fn exchange<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
    limit: Duration,
) -> String {
    stream.write_all(request).await.unwrap();
    read_some(stream, limit).await
}

pub async fn read_some<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, limit: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if response_complete(&out) {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn response_complete(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        l.to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
    });
    length.is_some_and(|n| body.len() >= n)
}

pub fn infer_request(key: &str, body: &str) -> Vec<u8> {
    format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// A well-behaved client's inference over a fresh TLS connection (HTTP/1.1).
pub async fn served(server: &Server) -> u16 {
    let mut stream = tls_connect(server, b"http/1.1").await;
    status_of(
        &exchange(
            &mut stream,
            &infer_request(&server.key, &infer_body(1)),
            Duration::from_secs(10),
        )
        .await,
    )
}

/// The admin listener's metrics.
pub async fn scrape(server: &Server) -> String {
    let mut admin = TcpStream::connect(server.admin).await.unwrap();
    exchange(
        &mut admin,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await
}

pub async fn stop(server: Server) {
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap()
        .unwrap();
}

/// An HTTP/1.1 connection to the gateway over TLS 1.3.
pub async fn connect(server: &Server) -> TlsStream<TcpStream> {
    tls_connect(server, b"http/1.1").await
}

/// An HTTP/2 connection to the gateway over TLS 1.3, and the task that drives it.
pub async fn h2_connect(
    server: &Server,
) -> (
    h2::client::SendRequest<Bytes>,
    tokio::task::JoinHandle<Result<(), h2::Error>>,
) {
    let tls = tls_connect(server, b"h2").await;
    let (client, connection) = h2::client::handshake(tls).await.unwrap();
    (client, tokio::spawn(connection))
}
