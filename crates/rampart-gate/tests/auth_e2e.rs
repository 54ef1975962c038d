//! Authentication and authorization end to end, over real TLS 1.3 sockets: JWT bearer tokens (and the attacks on
//! them), mTLS client certificates whose SPIFFE ID is the principal (rcgen certificates), Cedar roles from an
//! entities file, and rate limits answered with 429 and their headers. Every refusal is a bare 401 or 403.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "test code"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rampart_gate::config::Config;
use rampart_gate::Parts;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

const UNAUTHORIZED: &str = r#"{"error":"unauthorized"}"#;

fn model_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/digits/model/model.onnx")
}

struct Server {
    addr: std::net::SocketAddr,
    cert: CertificateDer<'static>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts a TLS gateway with `extra` config; `setup` writes files into the state dir first.
async fn start(extra: &str, setup: impl FnOnce(&Path)) -> Server {
    let dir = tempfile::tempdir().unwrap();
    setup(dir.path());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\nshutdown_grace_secs = 2\n{extra}\n[deploy]\ntrusted_keys = [\"{}\"]\n[[models]]\nname = \"digits\"\nonnx = \"{}\"\nworkers = 1\nqueue = 8\n",
        dir.path().display(),
        model_path().with_file_name("../release.pub").display(),
        model_path().display()
    );
    let config = Config::parse(&text, &dir.path().join("test.toml"), dir.path()).unwrap();
    let prepared = rampart_gate::prepare(&config, Parts::default())
        .await
        .unwrap();
    let cert = CertificateDer::from_pem_file(prepared.cert_path.clone().unwrap()).unwrap();
    let (stop, shutdown) = watch::channel(false);
    let addr = prepared.address;
    let task = tokio::spawn(prepared.serve(shutdown));
    Server {
        addr,
        cert,
        stop,
        task,
        _dir: dir,
    }
}

async fn stop(server: Server) {
    server.stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(15), server.task)
        .await
        .unwrap()
        .unwrap();
}

/// One request over a fresh TLS 1.3 connection, with an optional client certificate; `None` when the handshake or
/// the exchange failed (the connection was refused).
async fn request(
    server: &Server,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    head: &str,
    body: &str,
) -> Option<(u16, String, String)> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(server.cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match client {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    let text = format!(
        "{head}\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(text.as_bytes()).await.ok()?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut out))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, head.to_ascii_lowercase(), body.to_owned()))
}

fn infer_body() -> String {
    let data: Vec<f32> = (0..64).map(|i| (i % 17) as f32 / 16.0).collect();
    serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": data}]})
        .to_string()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

// ---------- JWT ----------

struct Signer {
    der: Vec<u8>,
    public_pem: String,
    jwk: serde_json::Value,
}

fn es256_signer(kid: &str) -> Signer {
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    Signer {
        der: key.to_pkcs8_der().unwrap().as_bytes().to_vec(),
        public_pem: key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
        jwk: serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
    }
}

fn token(signer: &Signer, kid: &str, claims: &serde_json::Value) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(
        &header,
        claims,
        &jsonwebtoken::EncodingKey::from_ec_der(&signer.der),
    )
    .unwrap()
}

fn claims(aud: &str, exp: u64, roles: &[&str]) -> serde_json::Value {
    serde_json::json!({"iss": "https://id.test", "aud": aud, "sub": "alice", "exp": exp, "nbf": now() - 10, "roles": roles})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_tokens_authenticate_and_the_attacks_get_a_bare_401() {
    let signer = es256_signer("k1");
    let jwks = serde_json::json!({ "keys": [signer.jwk] }).to_string();
    let server = start(
        "[auth]\njwks_file = \"jwks.json\"\n[auth.jwt]\nissuer = \"https://id.test\"\naudiences = [\"rampart\"]\nleeway_secs = 5\n",
        |dir| std::fs::write(dir.join("jwks.json"), &jwks).unwrap(),
    )
    .await;
    let infer = "POST /v2/models/digits/infer HTTP/1.1";
    let call = |token: String| {
        let server = &server;
        async move {
            request(
                server,
                None,
                &format!("{infer}\r\nAuthorization: Bearer {token}"),
                &infer_body(),
            )
            .await
            .unwrap()
        }
    };

    let good = token(&signer, "k1", &claims("rampart", now() + 300, &["user"]));
    let (status, _, body) = call(good).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("logits"), "{body}");

    // A valid token whose roles the policy does not permit: authenticated, then denied.
    let (status, _, body) = call(token(
        &signer,
        "k1",
        &claims("rampart", now() + 300, &["guest"]),
    ))
    .await;
    assert_eq!((status, body.as_str()), (403, r#"{"error":"forbidden"}"#));

    let header = |json: &str| URL_SAFE_NO_PAD.encode(json);
    let payload = URL_SAFE_NO_PAD.encode(claims("rampart", now() + 300, &["admin"]).to_string());
    // HS256 "signed" with the public key: the algorithm-confusion attack.
    let confused = {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(
            &h,
            &claims("rampart", now() + 300, &["admin"]),
            &jsonwebtoken::EncodingKey::from_secret(signer.public_pem.as_bytes()),
        )
        .unwrap()
    };
    let other = es256_signer("k1");
    let attacks = [
        (
            "expired",
            token(&signer, "k1", &claims("rampart", now() - 600, &["user"])),
        ),
        (
            "wrong audience",
            token(&signer, "k1", &claims("other", now() + 300, &["user"])),
        ),
        (
            "alg none",
            format!("{}.{payload}.", header(r#"{"alg":"none","typ":"JWT"}"#)),
        ),
        ("algorithm confusion", confused),
        (
            "another key under the same kid",
            token(&other, "k1", &claims("rampart", now() + 300, &["user"])),
        ),
        (
            "unknown kid",
            token(&other, "k9", &claims("rampart", now() + 300, &["user"])),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (what, bad) in attacks {
        let (status, head, body) = call(bad).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body, UNAUTHORIZED, "{what}: the 401 must carry no detail");
        assert!(head.contains("www-authenticate: bearer"), "{what}: {head}");
    }
    stop(server).await;
}

// ---------- mTLS ----------

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

fn client_cert(ca: &Ca, spiffe: &str) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.subject_alt_names = vec![SanType::URI(spiffe.try_into().unwrap())];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_spiffe_ids_are_principals_with_roles_from_the_entities_file() {
    let trusted = ca("clients");
    let ca_pem = trusted.cert.pem();
    let entities = r#"[
      {"uid": {"type": "Rampart::Role", "id": "user"}, "attrs": {}, "parents": []},
      {"uid": {"type": "Rampart::Principal", "id": "spiffe://example.org/ns/prod/sa/web"}, "attrs": {},
       "parents": [{"type": "Rampart::Role", "id": "user"}]}
    ]"#;
    let server = start(
        "[tls]\nclient_ca = \"ca.pem\"\n[auth]\nmtls_trust_domains = [\"example.org\"]\n[policy]\nentities = \"entities.json\"\n",
        |dir| {
            std::fs::write(dir.join("ca.pem"), &ca_pem).unwrap();
            std::fs::write(dir.join("entities.json"), entities).unwrap();
        },
    )
    .await;
    let infer = "POST /v2/models/digits/infer HTTP/1.1";
    let web = client_cert(&trusted, "spiffe://example.org/ns/prod/sa/web");
    let (status, _, body) = request(&server, Some(web), infer, &infer_body())
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    // Authenticated by its certificate, but no role: the policy denies it.
    let batch = client_cert(&trusted, "spiffe://example.org/ns/prod/sa/batch");
    let (status, _, _) = request(&server, Some(batch), infer, &infer_body())
        .await
        .unwrap();
    assert_eq!(status, 403);

    // A trust domain not configured: 401.
    let foreign = client_cert(&trusted, "spiffe://evil.example/ns/prod/sa/web");
    let (status, _, body) = request(&server, Some(foreign), infer, &infer_body())
        .await
        .unwrap();
    assert_eq!((status, body.as_str()), (401, UNAUTHORIZED));

    // No certificate and no other credential: 401.
    let (status, _, _) = request(&server, None, infer, &infer_body()).await.unwrap();
    assert_eq!(status, 401);

    // A certificate from a CA the gateway does not trust: the handshake fails.
    let rogue = client_cert(&ca("rogue"), "spiffe://example.org/ns/prod/sa/web");
    assert!(request(&server, Some(rogue), infer, &infer_body())
        .await
        .is_none());
    stop(server).await;
}

// ---------- limits over the socket ----------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_principal_gets_429_with_retry_after_over_tls() {
    let server = start(
        "[limits]\nrate_per_principal = { per_second = 0.01, burst = 2 }\n[bans]\nenabled = false\n",
        |_| {},
    )
    .await;
    let store = rampart_auth::ApiKeyStore::open(server._dir.path()).unwrap();
    let key = store.add("ci", &["user".to_owned()]).unwrap().key;
    // The gateway reads the key store as it changes; wait for this key to be picked up (bounded).
    let head = format!("POST /v2/models/digits/infer HTTP/1.1\r\nX-API-Key: {key}");
    let mut first = None;
    for _ in 0..50 {
        let answer = request(&server, None, &head, &infer_body()).await.unwrap();
        if answer.0 != 401 {
            first = Some(answer);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (status, head_text, _) = first.expect("the new key was never picked up");
    assert_eq!(status, 200);
    assert!(head_text.contains("ratelimit-limit: 2"), "{head_text}");
    let (status, _, _) = request(&server, None, &head, &infer_body()).await.unwrap();
    assert_eq!(status, 200);
    let (status, head_text, body) = request(&server, None, &head, &infer_body()).await.unwrap();
    assert_eq!(status, 429, "{body}");
    assert!(head_text.contains("retry-after: "), "{head_text}");
    assert!(head_text.contains("ratelimit-remaining: 0"), "{head_text}");
    stop(server).await;
}
