use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{encode, EncodingKey, Header as JwtHeader};
use serde_json::json;

use super::*;

/// The futures under test never wait (the fetchers answer at once), so polling once with a no-op waker drives them.
pub(crate) fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("test future waited"),
    }
}

/// A JWKS served from memory, counting fetches.
#[derive(Debug, Default)]
pub(crate) struct MemoryJwks {
    doc: Mutex<Vec<u8>>,
    fetches: AtomicUsize,
}

impl MemoryJwks {
    pub(crate) fn new(keys: Vec<Value>) -> Arc<Self> {
        let jwks = Arc::new(Self::default());
        jwks.set(keys);
        jwks
    }
    pub(crate) fn set(&self, keys: Vec<Value>) {
        *self.doc.lock().unwrap() = serde_json::to_vec(&json!({ "keys": keys })).unwrap();
    }
    fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl JwksFetcher for MemoryJwks {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let doc = self.doc.lock().unwrap().clone();
        Box::pin(async move { Ok(doc) })
    }
}

/// A signing key and its public JWK.
pub(crate) struct TestKey {
    pub(crate) alg: jsonwebtoken::Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) jwk: Value,
    /// The public key as a PEM text, for the HMAC confusion attack.
    pub(crate) public_pem: String,
}

pub(crate) fn es256(kid: &str) -> TestKey {
    use p256::ecdsa::SigningKey;
    use p256::pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding};
    let key = SigningKey::random(&mut rand::rngs::OsRng);
    let point = key.verifying_key().to_encoded_point(false);
    TestKey {
        alg: jsonwebtoken::Algorithm::ES256,
        encoding: EncodingKey::from_ec_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
            "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
            "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
        }),
        public_pem: key
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

pub(crate) fn rs256(kid: &str) -> TestKey {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{EncodePublicKey, LineEnding};
    use rsa::traits::PublicKeyParts;
    // RSA key generation is slow: one key for every test.
    static KEY: OnceLock<rsa::RsaPrivateKey> = OnceLock::new();
    let key = KEY.get_or_init(|| rsa::RsaPrivateKey::new(&mut rand::rngs::OsRng, 2048).unwrap());
    TestKey {
        alg: jsonwebtoken::Algorithm::RS256,
        encoding: EncodingKey::from_rsa_der(key.to_pkcs1_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "RSA", "kid": kid, "alg": "RS256",
            "n": URL_SAFE_NO_PAD.encode(key.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(key.e().to_bytes_be()),
        }),
        public_pem: key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap(),
    }
}

pub(crate) fn eddsa(kid: &str) -> TestKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    TestKey {
        alg: jsonwebtoken::Algorithm::EdDSA,
        encoding: EncodingKey::from_ed_der(key.to_pkcs8_der().unwrap().as_bytes()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": URL_SAFE_NO_PAD.encode(key.verifying_key().to_bytes()),
        }),
        public_pem: String::new(),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Value {
    json!({
        "iss": "https://idp.example",
        "aud": "rampart",
        "sub": "alice",
        "exp": now() + 300,
        "roles": ["user", "analyst"],
    })
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = JwtHeader::new(key.alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, &key.encoding).unwrap()
}

fn config() -> JwtConfig {
    JwtConfig::new("https://idp.example", ["rampart"])
}

fn verifier(keys: Vec<Value>) -> (JwtVerifier, Arc<MemoryJwks>) {
    let jwks = MemoryJwks::new(keys);
    let verifier = block_on(JwtVerifier::new(config(), jwks.clone())).unwrap();
    (verifier, jwks)
}

/// A token whose parts are given as JSON values and raw signature bytes.
fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(header).unwrap()),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap()),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

#[test]
fn each_algorithm_verifies() {
    let keys = [es256("ec"), rs256("rsa"), eddsa("ed")];
    let (verifier, _) = verifier(keys.iter().map(|k| k.jwk.clone()).collect());
    for (key, kid) in keys.iter().zip(["ec", "rsa", "ed"]) {
        let principal = block_on(verifier.verify(&sign(key, Some(kid), &claims()))).unwrap();
        assert_eq!(principal.id, "alice");
        assert_eq!(principal.roles, ["analyst", "user"]);
        assert_eq!(principal.source, Source::Jwt);
    }
    let start = Instant::now();
    let token = sign(&keys[0], Some("ec"), &claims());
    for _ in 0..200 {
        verifier.verify_cached(&token).unwrap();
    }
    println!(
        "jwt ES256 verify: {:.1} µs per token",
        start.elapsed().as_secs_f64() * 1e6 / 200.0
    );
}

#[test]
fn alg_none_is_refused() {
    let key = es256("ec");
    let (verifier, _) = verifier(vec![key.jwk.clone()]);
    for alg in ["none", "None", "NONE"] {
        let token = forge(&json!({"alg": alg, "kid": "ec"}), &claims(), b"");
        assert_eq!(
            verifier.verify_cached(&token),
            Err(JwtError::Unsigned),
            "{alg}"
        );
        let token = format!("{}.", &token[..token.len() - 1]);
        assert_eq!(verifier.verify_cached(&token), Err(JwtError::Unsigned));
    }
}

#[test]
fn hmac_with_the_public_key_as_secret_is_refused() {
    let key = rs256("rsa");
    let (verifier, _) = verifier(vec![key.jwk.clone()]);
    for secret in [
        key.public_pem.as_bytes(),
        key.jwk["n"].as_str().unwrap().as_bytes(),
    ] {
        let mut header = JwtHeader::new(jsonwebtoken::Algorithm::HS256);
        header.kid = Some("rsa".to_string());
        let token = encode(&header, &claims(), &EncodingKey::from_secret(secret)).unwrap();
        assert_eq!(
            verifier.verify_cached(&token),
            Err(JwtError::Algorithm("HS256".to_string()))
        );
    }
}

#[test]
fn header_alg_must_match_the_key() {
    let ec = es256("ec");
    let ed = eddsa("ed");
    let (verifier, _) = verifier(vec![ec.jwk.clone(), ed.jwk.clone()]);
    // Signed by the EdDSA key but naming the ES256 key's kid.
    let token = sign(&ed, Some("ec"), &claims());
    assert_eq!(
        verifier.verify_cached(&token),
        Err(JwtError::AlgorithmMismatch {
            header: "EdDSA".to_string(),
            key: JwtAlgorithm::ES256
        })
    );
    // A JWK that declares another algorithm than its key type is never loaded.
    let mut lying = ec.jwk.clone();
    lying["alg"] = json!("RS256");
    assert!(block_on(JwtVerifier::new(config(), MemoryJwks::new(vec![lying]))).is_err());
}

#[test]
fn algorithms_can_be_restricted() {
    let ed = eddsa("ed");
    let jwks = MemoryJwks::new(vec![ed.jwk.clone()]);
    let mut config = config();
    config.algorithms = vec![JwtAlgorithm::ES256];
    let verifier = block_on(JwtVerifier::new(config, jwks)).unwrap();
    assert_eq!(
        verifier.verify_cached(&sign(&ed, Some("ed"), &claims())),
        Err(JwtError::Algorithm("EdDSA".to_string()))
    );
}

#[test]
fn missing_kid_needs_a_single_key() {
    let ec = es256("ec");
    let (one, _) = verifier(vec![ec.jwk.clone()]);
    assert!(one.verify_cached(&sign(&ec, None, &claims())).is_ok());
    let (two, _) = verifier(vec![ec.jwk.clone(), eddsa("ed").jwk]);
    assert_eq!(
        two.verify_cached(&sign(&ec, None, &claims())),
        Err(JwtError::MissingKid)
    );
}

#[test]
fn oversized_and_malformed_tokens_are_refused() {
    let ec = es256("ec");
    let (verifier, _) = verifier(vec![ec.jwk.clone()]);
    let mut big = claims();
    big["pad"] = json!("x".repeat(9000));
    assert_eq!(
        verifier.verify_cached(&sign(&ec, Some("ec"), &big)),
        Err(JwtError::Oversized { max: 8192 })
    );
    for bad in [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "!!.e30.",
        "e30.e30.",
        "bnVsbA.e30.sig",
    ] {
        assert!(verifier.verify_cached(bad).is_err(), "{bad}");
    }
    let crit = forge(
        &json!({"alg": "ES256", "kid": "ec", "crit": ["exp"]}),
        &claims(),
        b"x",
    );
    assert_eq!(verifier.verify_cached(&crit), Err(JwtError::Critical));
}

#[test]
fn signature_and_claims_are_checked() {
    let ec = es256("ec");
    let other = es256("ec");
    let (verifier, _) = verifier(vec![ec.jwk.clone()]);
    assert_eq!(
        verifier.verify_cached(&sign(&other, Some("ec"), &claims())),
        Err(JwtError::Signature)
    );
    // The payload of a valid token swapped for another: the signature no longer matches.
    let good = sign(&ec, Some("ec"), &claims());
    let mut admin = claims();
    admin["roles"] = json!(["admin"]);
    let swapped = sign(&ec, Some("ec"), &admin);
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        swapped.split('.').nth(1).unwrap(),
        parts[2]
    );
    assert_eq!(verifier.verify_cached(&forged), Err(JwtError::Signature));

    let mut wrong = claims();
    wrong["iss"] = json!("https://evil.example");
    assert_eq!(
        verifier.verify_cached(&sign(&ec, Some("ec"), &wrong)),
        Err(JwtError::Issuer)
    );
    let mut wrong = claims();
    wrong["aud"] = json!(["other", "more"]);
    assert_eq!(
        verifier.verify_cached(&sign(&ec, Some("ec"), &wrong)),
        Err(JwtError::Audience)
    );
    let mut many = claims();
    many["aud"] = json!(["other", "rampart"]);
    assert!(verifier
        .verify_cached(&sign(&ec, Some("ec"), &many))
        .is_ok());
    for claim in ["exp", "iss", "aud", "sub"] {
        let mut missing = claims();
        missing.as_object_mut().unwrap().remove(claim);
        assert_eq!(
            verifier.verify_cached(&sign(&ec, Some("ec"), &missing)),
            Err(JwtError::Claim(claim.to_string())),
            "{claim}"
        );
    }
    let mut bad_sub = claims();
    bad_sub["sub"] = json!("has space");
    assert_eq!(
        verifier.verify_cached(&sign(&ec, Some("ec"), &bad_sub)),
        Err(JwtError::Claim("sub".to_string()))
    );
}

#[test]
fn expiry_and_not_before_honour_the_leeway() {
    let ec = es256("ec");
    let (verifier, _) = verifier(vec![ec.jwk.clone()]);
    let with = |exp: i64, nbf: Option<i64>| {
        let mut c = claims();
        c["exp"] = json!(exp);
        if let Some(nbf) = nbf {
            c["nbf"] = json!(nbf);
        }
        verifier.verify_cached(&sign(&ec, Some("ec"), &c))
    };
    // Leeway is 60 s.
    assert!(with(now() - 30, None).is_ok(), "expired within the skew");
    assert_eq!(with(now() - 120, None), Err(JwtError::Expired));
    assert!(
        with(now() + 300, Some(now() + 30)).is_ok(),
        "nbf within the skew"
    );
    assert_eq!(
        with(now() + 300, Some(now() + 120)),
        Err(JwtError::NotYetValid)
    );
    let mut c = claims();
    c["exp"] = json!("tomorrow");
    assert_eq!(
        verifier.verify_cached(&sign(&ec, Some("ec"), &c)),
        Err(JwtError::Claim("exp".to_string()))
    );
}

#[test]
fn roles_claim_is_configurable() {
    let ec = es256("ec");
    let jwks = MemoryJwks::new(vec![ec.jwk.clone()]);
    let mut config = config();
    config.roles_claim = "realm_access.roles".to_string();
    let verifier = block_on(JwtVerifier::new(config, jwks)).unwrap();
    let mut c = claims();
    c["realm_access"] = json!({"roles": ["admin", "bad role", 7]});
    let p = verifier.verify_cached(&sign(&ec, Some("ec"), &c)).unwrap();
    assert_eq!(
        p.roles,
        ["admin"],
        "roles Rampart cannot represent are dropped"
    );
    let (plain, _) = self::verifier(vec![ec.jwk.clone()]);
    let mut c = claims();
    c["roles"] = json!("user  admin");
    let p = plain.verify_cached(&sign(&ec, Some("ec"), &c)).unwrap();
    assert_eq!(p.roles, ["admin", "user"]);
}

#[test]
fn unknown_kid_refreshes_at_most_once_per_interval() {
    let old = es256("old");
    let new = es256("new");
    let jwks = MemoryJwks::new(vec![old.jwk.clone()]);
    let mut config = config();
    config.refresh_min_interval_secs = 0;
    let verifier = block_on(JwtVerifier::new(config, jwks.clone())).unwrap();
    assert_eq!(jwks.fetches(), 1);
    // The issuer rotates: the new key is fetched on first sight of its kid.
    jwks.set(vec![old.jwk.clone(), new.jwk.clone()]);
    assert!(block_on(verifier.verify(&sign(&new, Some("new"), &claims()))).is_ok());
    assert_eq!(jwks.fetches(), 2);
    assert!(block_on(verifier.verify(&sign(&new, Some("new"), &claims()))).is_ok());
    assert_eq!(jwks.fetches(), 2, "a known kid does not fetch");

    // With the default interval, a flood of unknown kids costs one fetch per interval, not one per token.
    let jwks = MemoryJwks::new(vec![old.jwk.clone()]);
    let limited = block_on(JwtVerifier::new(self::config(), jwks.clone())).unwrap();
    for i in 0..50 {
        let token = sign(&new, Some(&format!("k{i}")), &claims());
        assert!(matches!(
            block_on(limited.verify(&token)),
            Err(JwtError::UnknownKid(_))
        ));
    }
    assert_eq!(jwks.fetches(), 1);
}

#[test]
fn a_bad_refresh_keeps_the_cached_keys() {
    let ec = es256("ec");
    let jwks = MemoryJwks::new(vec![ec.jwk.clone()]);
    let mut config = config();
    config.refresh_min_interval_secs = 0;
    let verifier = block_on(JwtVerifier::new(config, jwks.clone())).unwrap();
    *jwks.doc.lock().unwrap() = b"garbage".to_vec();
    assert!(block_on(verifier.refresh_rate_limited()).is_err());
    assert!(verifier
        .verify_cached(&sign(&ec, Some("ec"), &claims()))
        .is_ok());
}

#[test]
fn jwks_file_source_and_config_checks() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwks.json");
    let ed = eddsa("ed");
    std::fs::write(
        &path,
        serde_json::to_vec(&json!({"keys": [ed.jwk]})).unwrap(),
    )
    .unwrap();
    let verifier = block_on(JwtVerifier::new(config(), Arc::new(JwksFile::new(&path)))).unwrap();
    assert!(verifier
        .verify_cached(&sign(&ed, Some("ed"), &claims()))
        .is_ok());
    let missing = JwksFile::new(dir.path().join("absent.json"));
    assert!(matches!(
        block_on(JwtVerifier::new(config(), Arc::new(missing))),
        Err(JwtError::Jwks(_))
    ));

    let parsed: JwtConfig = toml_like(r#"{"issuer": "i", "audiences": ["a"]}"#);
    assert_eq!(parsed, JwtConfig::new("i", ["a"]));
    assert!(serde_json::from_str::<JwtConfig>(
        r#"{"issuer": "i", "audiences": ["a"], "leway": 5}"#
    )
    .is_err());
    for broken in [
        JwtConfig::new("", ["a"]),
        JwtConfig::new("i", Vec::<String>::new()),
    ] {
        assert!(matches!(
            block_on(JwtVerifier::new(broken, Arc::new(JwksFile::new(&path)))),
            Err(JwtError::Config(_))
        ));
    }
}

fn toml_like(json: &str) -> JwtConfig {
    serde_json::from_str(json).unwrap()
}

#[test]
fn verifier_is_shareable_and_its_future_is_send() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    let (verifier, _) = verifier(vec![eddsa("ed").jwk]);
    send_sync(&verifier);
    send(verifier.verify("x.y.z"));
}
