//! The client side of a registry upload: `rampart push MODEL_DIR --url https://HOST:PORT --name M --version V`.
//!
//! The model directory is packed as a tar stream (`rampart_deploy::upload::pack`, its `model.sig` included) on a
//! blocking thread and streamed as the chunked body of `PUT /v2/models/{M}/versions/{V}` over HTTP/1.1 on TLS 1.3;
//! nothing is written to disk and memory stays flat whatever the model's size. The gateway's certificate is
//! verified, never skipped: against `--ca-cert` (its file, for a self-signed one, or the CA that issued it), or
//! pinned by its SHA-256 fingerprint (`--fingerprint`, as `rampart serve` prints it), or both; with neither, against
//! the Mozilla root store. The credential (an API key or a bearer token) comes from the environment and is sent
//! as `Authorization: Bearer`; it never appears in an error or a log.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, EXPECT, HOST};
use hyper::{Request, StatusCode, Uri};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Bytes per chunk of the upload.
const CHUNK: usize = 256 * 1024;
/// Largest answer read from the gateway.
const MAX_ANSWER: usize = 64 * 1024;
/// Connecting and the TLS handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the upload waits for `100 Continue` before it starts anyway.
const CONTINUE_WAIT: Duration = Duration::from_secs(3);

/// Called with the bytes sent so far and the model's total file size.
pub type Progress = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// Where and how to push.
pub struct PushOptions {
    /// `https://HOST[:PORT]` of the gateway.
    pub url: String,
    /// The model's name.
    pub model: String,
    /// The new version.
    pub version: String,
    /// An API key or a bearer token (sent as `Authorization: Bearer`).
    pub credential: String,
    /// A PEM file of certificates trusted for the gateway (its self-signed certificate, or a CA).
    pub ca_cert: Option<PathBuf>,
    /// The SHA-256 fingerprint the gateway's certificate must have (hex, colons optional).
    pub fingerprint: Option<String>,
    /// Progress of the upload.
    pub progress: Option<Progress>,
}

impl std::fmt::Debug for PushOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushOptions")
            .field("url", &self.url)
            .field("model", &self.model)
            .field("version", &self.version)
            .field("credential", &"<redacted>")
            .field("ca_cert", &self.ca_cert)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Why a push did not succeed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The URL is not `https://HOST[:PORT]`.
    #[error("bad gateway URL `{url}`: {reason}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// `--ca-cert` or `--fingerprint` is unusable.
    #[error("{0}")]
    Trust(String),
    /// The gateway could not be reached, or the TLS handshake failed (a certificate that does not verify or does
    /// not match the pinned fingerprint included).
    #[error("cannot connect to `{addr}`: {reason}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The model directory could not be read or sent.
    #[error("{0}")]
    Model(String),
    /// The exchange failed.
    #[error("the upload failed: {0}")]
    Http(String),
    /// The gateway refused the model (422: bad signature, tampered file, malicious content, bad upload) or the
    /// policy denied the push (403).
    #[error("refused ({status}): {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The gateway's reason.
        message: String,
    },
    /// Any other answer (401, 409 for an existing version, 413, 5xx).
    #[error("the gateway answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The gateway's reason.
        message: String,
    },
}

impl PushError {
    /// A refusal of the model or a policy denial (exit 1), rather than an error (exit 2).
    pub fn is_denial(&self) -> bool {
        matches!(self, PushError::Refused { .. })
    }
}

/// The gateway's host, port and server name.
fn parse_url(url: &str) -> Result<(String, u16, ServerName<'static>), PushError> {
    let bad = |reason: &str| PushError::Url {
        url: url.chars().take(200).collect(),
        reason: reason.into(),
    };
    let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("https") {
        return Err(bad("use `https://HOST:PORT`: a push travels over TLS only"));
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("give the gateway's base URL, without a path"));
    }
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let name = ServerName::try_from(host.clone()).map_err(|_| bad("not a valid host name"))?;
    Ok((host, port, name))
}

/// `AB:CD:..`, `abcd..` or `sha256:abcd..` as 32 bytes.
fn parse_fingerprint(text: &str) -> Result<[u8; 32], PushError> {
    let hex_text: String = text
        .trim()
        .trim_start_matches("sha256:")
        .trim_start_matches("SHA256:")
        .chars()
        .filter(|c| *c != ':')
        .collect();
    let bytes = hex::decode(&hex_text).ok().filter(|b| b.len() == 32);
    bytes
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| {
            PushError::Trust(format!(
                "`--fingerprint {}` is not a SHA-256 fingerprint: give the 64 hex digits `rampart serve` prints \
                 (colons optional)",
                text.chars().take(120).collect::<String>()
            ))
        })
}

/// Accepts the server's certificate only if its SHA-256 is the pinned one (and, with `inner`, it also verifies
/// against the given roots). The handshake signature is always checked.
#[derive(Debug)]
struct Pinned {
    pin: [u8; 32],
    inner: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let actual: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if actual != self.pin {
            return Err(rustls::Error::General(format!(
                "the gateway's certificate has fingerprint {}, not the one given with --fingerprint",
                crate::tls::fingerprint(end_entity)
            )));
        }
        match &self.inner {
            Some(inner) => {
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            None => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// TLS 1.3, HTTP/1.1, the trust `options` ask for.
fn tls_config(options: &PushOptions) -> Result<rustls::ClientConfig, PushError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_cert {
        Some(path) => {
            let bad = |reason: String| {
                PushError::Trust(format!(
                    "cannot use `--ca-cert {}`: {reason}",
                    path.display()
                ))
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no PEM `CERTIFICATE` block in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let webpki = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::clone(&provider),
    )
    .build()
    .map_err(|e| PushError::Trust(format!("cannot build the certificate verifier: {e}")))?;
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| PushError::Trust(e.to_string()))?;
    let mut config = match &options.fingerprint {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Pinned {
                pin: parse_fingerprint(pin)?,
                inner: options.ca_cert.is_some().then_some(webpki),
                provider,
            }))
            .with_no_client_auth(),
        None => builder.with_webpki_verifier(webpki).with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The request body: chunks from the packing thread, held back until the gateway says `100 Continue` (or
/// [`CONTINUE_WAIT`] passes). A gateway that refuses before reading (401, 403, 409, 413) answers first, and the
/// answer is read instead of being lost to a connection reset in the middle of the upload.
struct ChannelBody {
    chunks: mpsc::Receiver<Result<Bytes, std::io::Error>>,
    hold: Option<(
        tokio::sync::oneshot::Receiver<()>,
        Pin<Box<tokio::time::Sleep>>,
    )>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if let Some((go, wait)) = &mut self.hold {
            if Pin::new(go).poll(cx).is_pending() && wait.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.hold = None;
        }
        self.chunks
            .poll_recv(cx)
            .map(|chunk| chunk.map(|r| r.map(Frame::data)))
    }
}

/// A `Write` that hands full chunks to the body and reports progress.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
    sent: u64,
    total: u64,
    progress: Option<Progress>,
}

impl ChannelWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        let len = chunk.len() as u64;
        self.tx.blocking_send(Ok(chunk)).map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the gateway stopped the upload",
            )
        })?;
        self.sent += len;
        if let Some(progress) = &self.progress {
            progress(self.sent.min(self.total), self.total);
        }
        Ok(())
    }
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK.saturating_sub(self.buf.len()).min(data.len());
        self.buf
            .extend_from_slice(data.get(..room).unwrap_or_default());
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(room)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The total size of the files a push sends (for progress).
fn total_size(model_dir: &Path) -> Result<u64, PushError> {
    rampart_digest::walk(
        model_dir,
        &rampart_digest::WalkOptions {
            ignore: rampart_digest::IgnoreRules::git(),
            follow_symlinks: false,
        },
    )
    .map(|listing| listing.total_bytes())
    .map_err(|e| {
        PushError::Model(format!(
            "cannot read the model `{}`: {e}",
            model_dir.display()
        ))
    })
}

/// Pushes `model_dir` to the gateway; returns the gateway's record of the new version (JSON).
pub async fn push(model_dir: &Path, options: &PushOptions) -> Result<serde_json::Value, PushError> {
    let (host, port, server_name) = parse_url(&options.url)?;
    for (what, name) in [
        ("model name", &options.model),
        ("version", &options.version),
    ] {
        rampart_deploy::check_name(what, name).map_err(|e| PushError::Model(e.to_string()))?;
    }
    let total = total_size(model_dir)?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_config(options)?));
    let addr = format!("{host}:{port}");
    let connect_error = |reason: String| PushError::Connect {
        addr: addr.clone(),
        reason,
    };
    let tls = tokio::time::timeout(CONNECT_TIMEOUT, async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        connector
            .connect(server_name, tcp)
            .await
            .map_err(|e| connect_error(format!("TLS: {e}")))
    })
    .await
    .map_err(|_| connect_error("timed out".into()))??;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| PushError::Http(e.to_string()))?;
    let driver = tokio::spawn(connection);
    let (tx, rx) = mpsc::channel(4);
    let dir = model_dir.to_owned();
    let progress = options.progress.clone();
    let packer = tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
            sent: 0,
            total,
            progress,
        };
        let packed = rampart_deploy::upload::pack(&dir, &mut writer);
        if let Err(err) = &packed {
            // Ends the body with an error: the gateway sees a cut-off upload and stores nothing.
            let _ = writer
                .tx
                .blocking_send(Err(std::io::Error::other(err.to_string())));
        }
        packed
    });
    let path = format!("/v2/models/{}/versions/{}", options.model, options.version);
    let (go, hold) = tokio::sync::oneshot::channel();
    let body = ChannelBody {
        chunks: rx,
        hold: Some((hold, Box::pin(tokio::time::sleep(CONTINUE_WAIT)))),
    };
    let authority = if port == 443 {
        host.clone()
    } else {
        addr.clone()
    };
    let mut request = Request::put(path)
        .header(HOST, authority)
        .header(AUTHORIZATION, format!("Bearer {}", options.credential))
        .header(CONTENT_TYPE, "application/x-tar")
        .header(EXPECT, "100-continue")
        .body(body)
        .map_err(|_| {
            PushError::Http("cannot build the request (check the credential's characters)".into())
        })?;
    let go = std::sync::Mutex::new(Some(go));
    hyper::ext::on_informational(&mut request, move |answer| {
        if answer.status() == StatusCode::CONTINUE {
            if let Some(go) = go.lock().unwrap_or_else(|p| p.into_inner()).take() {
                let _ = go.send(());
            }
        }
    });
    let answered = sender.send_request(request).await;
    let packed = packer.await;
    // An answer wins over the packer's error: a gateway that refuses early (403, 409, 413) stops reading, and the
    // packer then fails to send the rest.
    let response = match (answered, packed) {
        (Ok(response), _) => response,
        (Err(_), Ok(Err(err))) => {
            return Err(PushError::Model(format!("cannot send the model: {err}")))
        }
        (Err(err), _) => return Err(PushError::Http(err.to_string())),
    };
    let status = response.status();
    let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    driver.abort();
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    if status == StatusCode::CREATED {
        return Ok(value);
    }
    let message = value
        .get("error")
        .and_then(|e| e.as_str())
        .map(str::to_owned)
        .unwrap_or_else(|| String::from_utf8_lossy(&body).chars().take(200).collect());
    let status = status.as_u16();
    match status {
        403 | 422 => Err(PushError::Refused { status, message }),
        _ => Err(PushError::Status { status, message }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_base_urls() {
        let (host, port, _) = parse_url("https://127.0.0.1:8443").unwrap();
        assert_eq!((host.as_str(), port), ("127.0.0.1", 8443));
        let (host, port, _) = parse_url("https://[::1]/").unwrap();
        assert_eq!((host.as_str(), port), ("::1", 443));
        assert!(parse_url("http://127.0.0.1:8443").is_err());
        assert!(parse_url("https://gw.example/v2").is_err());
        assert!(parse_url("not a url").is_err());
    }

    #[test]
    fn fingerprints_parse_in_the_printed_form() {
        let printed = vec!["AB"; 32].join(":");
        assert_eq!(parse_fingerprint(&printed).unwrap(), [0xAB; 32]);
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", "cd".repeat(32))).unwrap(),
            [0xCD; 32]
        );
        assert!(parse_fingerprint("AB:CD").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
    }

    #[test]
    fn the_credential_is_not_in_debug_output() {
        let options = PushOptions {
            url: "https://localhost".into(),
            model: "m".into(),
            version: "1".into(),
            credential: "rmp_secret".into(),
            ca_cert: None,
            fingerprint: None,
            progress: None,
        };
        assert!(!format!("{options:?}").contains("rmp_secret"));
    }
}
