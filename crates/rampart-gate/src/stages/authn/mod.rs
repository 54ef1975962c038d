//! Authentication: who is calling. The stage asks the methods the config turns on, through `rampart-auth`:
//!
//! 1. a bearer token (`Authorization: Bearer ...`): an API key when it starts with `rmp_`, else a JWT;
//! 2. an `X-API-Key` header;
//! 3. the SPIFFE ID of a verified client certificate (mTLS).
//!
//! A credential that is presented but wrong is a failure, never a fall-through to the next method; every failure is
//! answered with the same bare 401, and the detail goes only to the log (never the credential itself).

use std::sync::Arc;

use hyper::HeaderMap;
use rampart_auth::{ApiKeyStore, JwtVerifier, Principal};
use rustls::pki_types::CertificateDer;

/// The prefix every API key starts with.
const API_KEY_PREFIX: &str = "rmp_";

/// Why authentication failed. The detail is logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthnError(pub String);

/// The authentication methods in force.
#[derive(Debug, Default)]
pub struct Authn {
    /// API keys, managed by `rampart keys`.
    pub api_keys: Option<Arc<ApiKeyStore>>,
    /// JWT bearer tokens.
    pub jwt: Option<Arc<JwtVerifier>>,
    /// mTLS: `Some(trust domains)` (empty: any the client CA vouches for) when client certificates authenticate.
    pub mtls: Option<Vec<String>>,
}

impl Authn {
    /// Whether no method is turned on (every protected request would get 401).
    pub fn is_empty(&self) -> bool {
        self.api_keys.is_none() && self.jwt.is_none() && self.mtls.is_none()
    }

    /// Authenticates one request from its headers and its connection's verified client certificates (leaf first).
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        client_certs: &[CertificateDer<'static>],
    ) -> Result<Principal, AuthnError> {
        if let Some(token) = bearer(headers)? {
            if token.starts_with(API_KEY_PREFIX) {
                return self.api_key(token);
            }
            let Some(jwt) = &self.jwt else {
                return Err(AuthnError(
                    "a bearer token, and JWTs are not accepted".into(),
                ));
            };
            return jwt
                .verify(token)
                .await
                .map_err(|err| AuthnError(format!("JWT refused: {err}")));
        }
        if let Some(value) = single(headers, "x-api-key")? {
            let key = value
                .to_str()
                .map_err(|_| AuthnError("a non-ASCII `X-API-Key`".into()))?;
            return self.api_key(key.trim());
        }
        if let (Some(trust_domains), Some(leaf)) = (&self.mtls, client_certs.first()) {
            return rampart_auth::principal_from_client_cert(leaf.as_ref(), trust_domains)
                .map_err(|err| AuthnError(format!("client certificate refused: {err}")));
        }
        Err(AuthnError("no credential presented".into()))
    }

    fn api_key(&self, key: &str) -> Result<Principal, AuthnError> {
        let store = self
            .api_keys
            .as_ref()
            .ok_or_else(|| AuthnError("an API key, and API keys are not accepted".into()))?;
        store
            .verify(key)
            .ok_or_else(|| AuthnError("an unknown, revoked or malformed API key".into()))
    }
}

/// The bearer token of an `Authorization` header: `Ok(None)` without the header, `Err` when it is there but is not
/// a bearer token (another scheme, not ASCII, empty).
/// The one value of a credential header. Two are ambiguous (which would a proxy that appends its own have meant?):
/// refused, whatever they hold.
fn single(
    headers: &HeaderMap,
    name: impl hyper::header::AsHeaderName,
) -> Result<Option<&hyper::header::HeaderValue>, AuthnError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(AuthnError(
            "more than one credential header of a kind".into(),
        ));
    }
    Ok(first)
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, AuthnError> {
    let Some(value) = single(headers, &hyper::header::AUTHORIZATION)? else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| AuthnError("a non-ASCII `Authorization` header".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| AuthnError("an `Authorization` header without a scheme".into()))?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthnError(
            "an `Authorization` header that is not `Bearer`".into(),
        ));
    }
    Ok(Some(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[tokio::test]
    async fn keys_verify_and_everything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ApiKeyStore::open(dir.path()).unwrap();
        let new = store.add("ci", &["user".to_string()]).unwrap();
        let authn = Authn {
            api_keys: Some(Arc::new(store)),
            ..Authn::default()
        };
        let bearer = format!("Bearer {}", new.key);
        let ok = authn
            .authenticate(&headers(&[("authorization", &bearer)]), &[])
            .await
            .unwrap();
        assert_eq!(ok.id, "ci");
        let ok = authn
            .authenticate(&headers(&[("x-api-key", &new.key)]), &[])
            .await
            .unwrap();
        assert_eq!(ok.id, "ci");
        for bad in [
            vec![],
            vec![("authorization", "Basic YTpi")],
            vec![("authorization", "Bearer")],
            vec![("authorization", "Bearer eyJhbGciOiJub25lIn0.e30.")],
            vec![("authorization", "Bearer rmp_000000000000_00")],
            vec![("x-api-key", "rmp_nope")],
        ] {
            assert!(
                authn.authenticate(&headers(&bad), &[]).await.is_err(),
                "{bad:?}"
            );
        }
        // Two credentials of a kind, the good one first or last: ambiguous, refused.
        for name in ["authorization", "x-api-key"] {
            let good = if name == "x-api-key" {
                new.key.clone()
            } else {
                bearer.clone()
            };
            let bad = good.replace(&new.key, "rmp_000000000000_00");
            for pair in [[&good, &bad], [&bad, &good], [&good, &good]] {
                let mut map = HeaderMap::new();
                for value in pair {
                    map.append(name, value.parse().unwrap());
                }
                assert!(authn.authenticate(&map, &[]).await.is_err(), "{name}");
            }
        }
    }
}
