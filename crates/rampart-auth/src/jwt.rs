//! JWT bearer tokens: ES256, RS256 and EdDSA signatures checked against a cached JWKS, then issuer, audience, expiry
//! and not-before with a leeway for clock skew.
//!
//! Refused before any signature work: tokens over the size limit, `alg: none`, HMAC algorithms (a public key is never
//! an HMAC secret), algorithms not in the configuration, a header algorithm that differs from the key's, a `crit`
//! header, and a token without `kid` when the set holds several keys. Keys embedded in a token (`jwk`, `jku`, `x5u`,
//! `x5c`) are ignored: keys come only from the configured JWKS.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::Validation;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwks::{JwtAlgorithm, KeySet, VerifyKey, MAX_JWKS_BYTES};
use crate::principal::{valid_name, Principal, Source};

const MAX_ROLES: usize = 64;

/// How JWTs are checked. Deserializes from TOML/JSON with unknown keys refused; `issuer` and `audiences` are required.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The only accepted `iss`.
    pub issuer: String,
    /// Accepted `aud` values: a token must name at least one of them.
    pub audiences: Vec<String>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 60).
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// The claim holding the roles (default `roles`): an array of strings or a space-separated string. A dotted path
    /// (`realm_access.roles`) reaches into nested objects.
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Accepted algorithms (default all three: ES256, RS256, EdDSA).
    #[serde(default = "default_algorithms")]
    pub algorithms: Vec<JwtAlgorithm>,
    /// Longest token accepted, in bytes (default 8192).
    #[serde(default = "default_max_token_bytes")]
    pub max_token_bytes: usize,
    /// Least time between two JWKS fetches triggered by an unknown `kid`, in seconds (default 30).
    #[serde(default = "default_refresh_secs")]
    pub refresh_min_interval_secs: u64,
    /// Age after which the cached JWKS is fetched again on the next request, in seconds (default 3600). A failed fetch
    /// keeps the cached keys.
    #[serde(default = "default_cache_ttl")]
    pub cache_ttl_secs: u64,
}

fn default_leeway() -> u64 {
    60
}
fn default_roles_claim() -> String {
    "roles".to_string()
}
fn default_algorithms() -> Vec<JwtAlgorithm> {
    JwtAlgorithm::ALL.to_vec()
}
fn default_max_token_bytes() -> usize {
    8192
}
fn default_refresh_secs() -> u64 {
    30
}
fn default_cache_ttl() -> u64 {
    3600
}

impl JwtConfig {
    /// A configuration with the defaults for everything but issuer and audiences.
    pub fn new(
        issuer: impl Into<String>,
        audiences: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: audiences.into_iter().map(Into::into).collect(),
            leeway_secs: default_leeway(),
            roles_claim: default_roles_claim(),
            algorithms: default_algorithms(),
            max_token_bytes: default_max_token_bytes(),
            refresh_min_interval_secs: default_refresh_secs(),
            cache_ttl_secs: default_cache_ttl(),
        }
    }

    fn check(&self) -> Result<(), JwtError> {
        let bad = |reason: &str| Err(JwtError::Config(reason.to_string()));
        if self.issuer.is_empty() {
            return bad("`issuer` must not be empty");
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return bad("`audiences` must list at least one non-empty audience");
        }
        if self.algorithms.is_empty() {
            return bad("`algorithms` must list at least one of ES256, RS256, EdDSA");
        }
        if self.roles_claim.is_empty() || self.roles_claim.split('.').any(str::is_empty) {
            return bad("`roles_claim` must be a claim name or a dotted path");
        }
        if !(64..=65536).contains(&self.max_token_bytes) {
            return bad("`max_token_bytes` must be between 64 and 65536");
        }
        if self.leeway_secs > 600 {
            return bad("`leeway_secs` must be at most 600");
        }
        Ok(())
    }
}

/// Why a token was refused. The gateway answers every one with the same 401; the variant is for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The configuration is invalid.
    #[error("invalid JWT configuration: {0}")]
    Config(String),
    /// The token is longer than `max_token_bytes`.
    #[error("token longer than {max} bytes")]
    Oversized {
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts, or an unreadable header.
    #[error("malformed token")]
    Malformed,
    /// `alg: none`.
    #[error("unsigned token (`alg: none`)")]
    Unsigned,
    /// An algorithm that is not accepted (HMAC, or not configured).
    #[error("algorithm `{0}` is not accepted")]
    Algorithm(String),
    /// The header names another algorithm than the key's.
    #[error("algorithm `{header}` does not match the key's `{key}`")]
    AlgorithmMismatch {
        /// The token's `alg`.
        header: String,
        /// The key's algorithm.
        key: JwtAlgorithm,
    },
    /// The header has a `crit` member (no extension is understood).
    #[error("critical header extensions are not supported")]
    Critical,
    /// No `kid` while the key set holds several keys.
    #[error("token has no key id and the key set holds several keys")]
    MissingKid,
    /// No key with this `kid` (even after a refresh, when one was allowed).
    #[error("unknown key id `{0}`")]
    UnknownKid(String),
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not valid yet")]
    NotYetValid,
    /// `iss` is not the configured issuer.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` names none of the configured audiences.
    #[error("wrong audience")]
    Audience,
    /// A required claim (`exp`, `iss`, `aud`, `sub`) is missing or mistyped.
    #[error("claim `{0}` is missing or malformed")]
    Claim(String),
    /// The JWKS could not be fetched or parsed.
    #[error("JWKS: {0}")]
    Jwks(String),
}

/// A boxed future, so that [`JwksFetcher`] stays object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where JWKS documents come from. The gateway implements it with its HTTP client (with a timeout and a size limit);
/// [`JwksFile`] reads a file.
pub trait JwksFetcher: Send + Sync + fmt::Debug {
    /// Fetch the current JWKS document (at most 1 MiB is accepted).
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<u8>, String>>;
}

/// A JWKS read from a file on every fetch (so that a rotated file is picked up on refresh).
#[derive(Debug, Clone)]
pub struct JwksFile {
    path: PathBuf,
}

impl JwksFile {
    /// A source reading `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }
}

impl JwksFetcher for JwksFile {
    fn fetch(&self) -> BoxFuture<'_, Result<Vec<u8>, String>> {
        Box::pin(async move {
            crate::files::read_bounded(&self.path, MAX_JWKS_BYTES as u64)
                .map_err(|e| format!("cannot read `{}`: {e}", self.path.display()))
        })
    }
}

#[derive(Debug)]
struct Cached {
    keys: KeySet,
    fetched: Instant,
}

/// Verifies JWT bearer tokens against a cached JWKS. Share it (`Arc<JwtVerifier>`); verification takes a read lock.
#[derive(Debug)]
pub struct JwtVerifier {
    config: JwtConfig,
    fetcher: Arc<dyn JwksFetcher>,
    cache: RwLock<Arc<Cached>>,
    /// When a fetch was last started: fetches are at most one per `refresh_min_interval_secs`.
    last_fetch: Mutex<Instant>,
    /// One prepared validation per accepted algorithm.
    validations: Vec<(JwtAlgorithm, Validation)>,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    crit: Option<Value>,
}

impl JwtVerifier {
    /// Check the configuration and fetch the JWKS once; a start without usable keys is an error.
    pub async fn new(config: JwtConfig, fetcher: Arc<dyn JwksFetcher>) -> Result<Self, JwtError> {
        config.check()?;
        let bytes = fetcher.fetch().await.map_err(JwtError::Jwks)?;
        Self::with_jwks(config, &bytes, fetcher)
    }

    /// Start from a JWKS document already in hand (no fetch, no `.await`); `fetcher` serves later refreshes.
    pub fn with_jwks(
        config: JwtConfig,
        jwks: &[u8],
        fetcher: Arc<dyn JwksFetcher>,
    ) -> Result<Self, JwtError> {
        config.check()?;
        let keys = KeySet::parse(jwks).map_err(JwtError::Jwks)?;
        let validations = config
            .algorithms
            .iter()
            .map(|alg| (*alg, validation(&config, *alg)))
            .collect();
        Ok(Self {
            config,
            fetcher,
            cache: RwLock::new(Arc::new(Cached {
                keys,
                fetched: Instant::now(),
            })),
            last_fetch: Mutex::new(Instant::now()),
            validations,
        })
    }

    /// The configuration in force.
    pub fn config(&self) -> &JwtConfig {
        &self.config
    }

    /// Verify a token (without the `Bearer ` prefix). On an unknown `kid`, or when the cache is older than its TTL,
    /// the JWKS is fetched again, at most once per `refresh_min_interval_secs`.
    pub async fn verify(&self, token: &str) -> Result<Principal, JwtError> {
        let stale =
            self.cached().fetched.elapsed() > Duration::from_secs(self.config.cache_ttl_secs);
        if stale {
            let _ = self.refresh_rate_limited().await;
        }
        match self.verify_cached(token) {
            Err(JwtError::UnknownKid(kid)) => {
                if self.refresh_rate_limited().await? {
                    self.verify_cached(token)
                } else {
                    Err(JwtError::UnknownKid(kid))
                }
            }
            other => other,
        }
    }

    /// Verify a token against the keys in cache only, never fetching (no `.await`).
    pub fn verify_cached(&self, token: &str) -> Result<Principal, JwtError> {
        if token.len() > self.config.max_token_bytes {
            return Err(JwtError::Oversized {
                max: self.config.max_token_bytes,
            });
        }
        let header = parse_header(token)?;
        if header.alg.eq_ignore_ascii_case("none") {
            return Err(JwtError::Unsigned);
        }
        if header.crit.is_some() {
            return Err(JwtError::Critical);
        }
        let alg = JwtAlgorithm::from_name(&header.alg)
            .filter(|alg| self.config.algorithms.contains(alg))
            .ok_or_else(|| JwtError::Algorithm(printable(&header.alg)))?;
        let cached = self.cached();
        let key: &VerifyKey = match &header.kid {
            Some(kid) => cached
                .keys
                .by_kid
                .get(kid)
                .ok_or_else(|| JwtError::UnknownKid(printable(kid)))?,
            None => cached.keys.single().ok_or(JwtError::MissingKid)?,
        };
        if key.alg != alg {
            return Err(JwtError::AlgorithmMismatch {
                header: header.alg,
                key: key.alg,
            });
        }
        let validation = self
            .validations
            .iter()
            .find(|(a, _)| *a == alg)
            .map(|(_, v)| v)
            .ok_or_else(|| JwtError::Algorithm(alg.to_string()))?;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| map_error(e.kind()))?;
        self.principal(&data.claims)
    }

    /// Fetch the JWKS now unless a fetch started less than `refresh_min_interval_secs` ago. Returns whether new keys
    /// were loaded; a failed fetch or an unusable document keeps the cached keys and is returned as an error.
    pub async fn refresh_rate_limited(&self) -> Result<bool, JwtError> {
        {
            let mut last = match self.last_fetch.lock() {
                Ok(guard) => guard,
                Err(poisoned) => poisoned.into_inner(),
            };
            if last.elapsed() < Duration::from_secs(self.config.refresh_min_interval_secs) {
                return Ok(false);
            }
            *last = Instant::now();
        }
        let fetched = self
            .fetcher
            .fetch()
            .await
            .and_then(|bytes| KeySet::parse(&bytes));
        match fetched {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "refreshed the JWKS");
                let fresh = Arc::new(Cached {
                    keys,
                    fetched: Instant::now(),
                });
                match self.cache.write() {
                    Ok(mut guard) => *guard = fresh,
                    Err(poisoned) => *poisoned.into_inner() = fresh,
                }
                Ok(true)
            }
            Err(reason) => {
                tracing::warn!(%reason, "JWKS refresh failed; keeping the cached keys");
                Err(JwtError::Jwks(reason))
            }
        }
    }

    fn cached(&self) -> Arc<Cached> {
        match self.cache.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, JwtError> {
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| valid_name(s))
            .ok_or_else(|| JwtError::Claim("sub".to_string()))?;
        let mut node = None;
        for (i, part) in self.config.roles_claim.split('.').enumerate() {
            node = if i == 0 {
                claims.get(part)
            } else {
                node.and_then(|n: &Value| n.get(part))
            };
        }
        let roles: Vec<String> = match node {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        // A role Rampart cannot represent is dropped: fewer roles only ever mean fewer permissions.
        let roles = roles.into_iter().filter(|r| valid_name(r)).take(MAX_ROLES);
        Ok(Principal::new(sub, roles, Source::Jwt))
    }
}

fn validation(config: &JwtConfig, alg: JwtAlgorithm) -> Validation {
    let mut v = Validation::new(alg.to_jsonwebtoken());
    v.set_issuer(&[&config.issuer]);
    v.set_audience(config.audiences.as_slice());
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = config.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    v.validate_aud = true;
    v
}

fn parse_header(token: &str) -> Result<Header, JwtError> {
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed)
}

/// Attacker-chosen text shown in errors: at most 64 printable ASCII characters.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => JwtError::Signature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::Issuer,
        ErrorKind::InvalidAudience => JwtError::Audience,
        ErrorKind::MissingRequiredClaim(claim) | ErrorKind::InvalidClaimFormat(claim) => {
            JwtError::Claim(printable(claim))
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => JwtError::Algorithm("?".to_string()),
        _ => JwtError::Malformed,
    }
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
