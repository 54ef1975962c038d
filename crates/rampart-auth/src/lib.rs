//! Authentication and authorization for Rampart's gateway.
//!
//! Every authentication method ends in the same [`Principal`] (`id`, `roles`, [`Source`]); authorization then asks
//! Cedar whether that principal may perform an [`Action`] on a model. All types here are cheap to share behind an
//! `Arc` and are safe to call from many threads; the request path takes read locks only. Every refusal is an error
//! value for logs and metrics; the gateway answers all authentication refusals with the same bare 401 and every
//! denial with 403.
//!
//! | need | type | request path | reload |
//! | --- | --- | --- | --- |
//! | API keys `rmp_<id>_<secret>` | [`ApiKeyStore`] | [`ApiKeyStore::verify`] | [`ApiKeyStore::reload_if_changed`] |
//! | JWT bearer tokens (ES256, RS256, EdDSA) | [`JwtVerifier`] with a [`JwksFetcher`] | [`JwtVerifier::verify`] | automatic: unknown `kid` (rate-limited) and cache TTL |
//! | mTLS client certificates (SPIFFE IDs) | — | [`principal_from_client_cert`] | — |
//! | Cedar authorization | [`Authorizer`] | [`Authorizer::authorize`] | [`Authorizer::reload_if_changed`] |
//!
//! # The state directory
//!
//! The gateway and `rampart keys` share one directory, [`default_state_dir`]: `$RAMPART_STATE_DIR` when set and not
//! empty, else `./.rampart`; a `--state-dir` option wins over both. It holds [`KEY_STORE_FILE`] and
//! [`SERVER_SECRET_FILE`], both mode 0600 and always replaced atomically.
//!
//! # API keys
//!
//! ```
//! # let dir = tempfile::tempdir().unwrap();
//! use rampart_auth::{ApiKeyStore, Source};
//! let store = ApiKeyStore::open(dir.path())?;
//! let new = store.add("ci-bot", &["user".to_string()])?; // new.key is shown to the user once
//! let principal = store.verify(&new.key).expect("a fresh key verifies");
//! assert_eq!((principal.id.as_str(), principal.source), ("ci-bot", Source::ApiKey));
//! store.revoke(&new.info.id)?;
//! assert!(store.verify(&new.key).is_none());
//! # Ok::<(), rampart_auth::KeyStoreError>(())
//! ```
//!
//! # JWT
//!
//! [`JwtConfig`] (deserializable, unknown keys refused) names the issuer, the audiences, the leeway and the roles
//! claim; the JWKS comes from a [`JwksFetcher`]: [`JwksFile`] for a file, or the gateway's own HTTP fetcher for a
//! URL. `JwtVerifier::new(config, fetcher).await` fetches once at start; [`JwtVerifier::verify`] refetches on an
//! unknown `kid` at most once per `refresh_min_interval_secs`. `alg: none`, HMAC algorithms, a header algorithm that
//! differs from its key's, a missing `kid` with several keys, `crit` headers and oversized tokens are refused.
//!
//! # Authorization
//!
//! ```
//! use rampart_auth::{Action, Authorizer, Principal, Source};
//! let authz = Authorizer::embedded()?;
//! let alice = Principal::new("alice", ["user".to_string()], Source::Jwt);
//! assert!(authz.authorize(&alice, Action::Infer, "digits").allowed);
//! assert!(!authz.authorize(&alice, Action::Export, "digits").allowed);
//! # Ok::<(), rampart_auth::PolicyError>(())
//! ```
//!
//! The embedded schema ([`DEFAULT_SCHEMA`], `src/default.cedarschema`) declares `Rampart::Principal` (parents: its
//! `Rampart::Role`s), `Rampart::Role`, `Rampart::Model` (optional `tags`), the actions `infer`, `read_metadata`,
//! `admin`, `export`, `approve`, and a context `{ source: "api_key" | "jwt" | "mtls" }`. The embedded policy
//! ([`DEFAULT_POLICY`], `src/default.cedar`): role `admin` may do everything, role `user` may `infer` and
//! `read_metadata` on any model, nobody may `export`. [`PolicyFiles`] replaces any of them with files; an entities
//! file (Cedar JSON) can give principals (e.g. SPIFFE IDs) roles, nest roles, and tag models.

mod api_key;
mod files;
mod fuzzing;
mod jwks;
mod jwt;
mod mtls;
mod policy;
mod principal;

pub use api_key::{
    ApiKeyStore, KeyInfo, KeyStoreError, NewKey, Revoked, KEY_STORE_FILE, SERVER_SECRET_FILE,
};
pub use files::{default_state_dir, ensure_private_dir, write_private_atomic, STATE_DIR_ENV};
#[doc(hidden)]
pub use fuzzing::fuzz_jwt;
pub use jwks::{JwtAlgorithm, MAX_JWKS_BYTES};
pub use jwt::{BoxFuture, JwksFetcher, JwksFile, JwtConfig, JwtError, JwtVerifier};
pub use mtls::{
    principal_from_client_cert, spiffe_id_from_der, MtlsError, SpiffeId, MAX_CERT_BYTES,
};
pub use policy::{
    Action, Authorizer, Decision, PolicyError, PolicyFiles, DEFAULT_POLICY, DEFAULT_SCHEMA,
};
pub use principal::{Principal, Source};
