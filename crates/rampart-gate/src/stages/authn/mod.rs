//! Authentication: who is calling. Each method is an [`Authenticator`]; the stage asks them in order and the first
//! that recognises a credential decides. A credential that is presented but wrong is a failure, never a fall-through
//! to the next method, and every failure is answered with the same bare 401.

pub mod api_key;

use std::fmt::Debug;

use hyper::HeaderMap;
use rustls::pki_types::CertificateDer;

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The identity: a key's principal name, a token's subject, a SPIFFE ID.
    pub id: String,
    /// Roles the policy may use.
    pub roles: Vec<String>,
    /// How the caller proved it.
    pub method: &'static str,
}

/// What a request offers as proof.
#[derive(Debug, Clone, Copy)]
pub struct Credentials<'a> {
    /// The request's headers (`Authorization`, `X-API-Key`).
    pub headers: &'a HeaderMap,
    /// The client certificate chain, already verified against `tls.client_ca` by the TLS layer (leaf first).
    pub client_certs: &'a [CertificateDer<'static>],
}

/// Why authentication failed. The detail is logged, never sent to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct AuthnError(pub String);

/// One way of proving identity.
pub trait Authenticator: Send + Sync + Debug {
    /// `Ok(None)`: this method's credential is absent; `Ok(Some)`: valid; `Err`: presented and invalid.
    fn authenticate(&self, credentials: &Credentials<'_>) -> Result<Option<Principal>, AuthnError>;
}

/// Asks each method in turn.
pub fn authenticate(
    methods: &[Box<dyn Authenticator>],
    credentials: &Credentials<'_>,
) -> Result<Principal, AuthnError> {
    for method in methods {
        if let Some(principal) = method.authenticate(credentials)? {
            return Ok(principal);
        }
    }
    Err(AuthnError("no credential presented".into()))
}

/// The bearer token of an `Authorization` header, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}
