//! The model registry over the KServe v2 API: versions stored signed and sealed under the state directory
//! (`rampart-deploy`'s [`Registry`]), uploaded, listed and served by version.
//!
//! - `PUT /v2/models/{name}/versions/{v}`: upload a version (Cedar action `push` on the model; the default policy
//!   grants it to the `publisher` role only). The body is the model directory as a tar stream, its `model.sig`
//!   included (`rampart_deploy::upload`), at most `registry.max_push_bytes`. It is streamed to a staging
//!   directory in the state directory, unpacked there with every hostile construct refused, and the deployment
//!   gate (signature against `deploy.trusted_keys`, scan, policy) runs on it **before** it is sealed and renamed
//!   into the registry. 201 with the version's record; 422 with a short reason when the upload or the gate
//!   refuses it; 409 when the version exists (versions are immutable). Nothing is left behind on a refusal, and
//!   every push that reaches this point is appended to the audit log with the SHA-256 of the bytes received.
//! - `GET /v2/models/{name}/versions`: the stored versions, JSON (Cedar `read_metadata`).
//! - `GET /v2/models/{name}/versions/{v}` (KServe metadata), `.../ready`, `POST .../infer`: the version, loaded on
//!   first use by unsealing it in memory (plaintext never touches the disk) and gating the plaintext again; a
//!   version the gate refuses is logged, answered 409 and never served. At most `registry.max_loaded` versions
//!   stay loaded, the least recently used is unloaded first (an unloaded version loads again on its next request).
//!
//! - `GET /v2/models/{name}`, `.../ready`, `POST .../infer` of a model that is **not configured** but has versions in
//!   the registry: its latest version ([`latest`]), as if the route named it. The route is resolved once the
//!   caller is authenticated and before Cedar, so it runs exactly as the versioned route does (action, defences,
//!   limits, logging; the audit records the versioned route and the version served, and the metadata's `versions`
//!   names it). A configured model keeps its unversioned routes; a model with neither is 404.
//!
//! Every route runs the same pipeline as a configured model's (ban, per-IP rate, authentication, Cedar, per-principal
//! rate, quota and concurrency, audit). Cedar's resource is the model: the version is **not** an attribute of the
//! request, so every version of a model shares the model's permissions (what a principal may do with `digits`, it
//! may do with `digits` version 3), and the decision cache stays one entry per principal, action and model. The
//! version is recorded in the audit record of each request. A configured model's `[models.defend]` stages apply to
//! its registry versions too (same name, shared per-client state), so a version route is no way around them.
//! `deploy.verify = false` does not apply here: a registry version is always verified.

mod upload;
mod versions;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::body::Body;
use hyper::{Method, Request, StatusCode};
use rampart_auth::Action;
use rampart_deploy::Error as DeployError;
use serde::Deserialize;

use crate::config::{Config, ConfigError};
use crate::pipeline::{json_reply, Refusal, Reply, Trace};
use crate::ConnInfo;
use crate::Gate;
use versions::Unservable;
pub use versions::{LoadedVersion, Versions};

/// `[registry]`: the versions pushed into the state directory's registry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Versions kept loaded in memory (with their inference threads); past this the least recently used is
    /// unloaded.
    pub max_loaded: usize,
    /// Largest upload (`PUT /v2/models/{name}/versions/{v}`), in bytes.
    pub max_push_bytes: u64,
    /// Time allowed to receive an upload, in seconds.
    pub push_timeout_secs: u64,
    /// Inference threads of each loaded version.
    pub workers: usize,
    /// Requests waiting for a loaded version's threads; when full, new requests get 503.
    pub queue: usize,
    /// The most rows of concurrent requests one run of a version gathers (0: each request alone), as a model's
    /// `max_batch`: only when every version pushed has independent rows, batch first.
    pub max_batch: usize,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            max_loaded: 4,
            max_push_bytes: 2 << 30,
            push_timeout_secs: 600,
            workers: 2,
            queue: 256,
            max_batch: 0,
        }
    }
}

impl RegistryConfig {
    /// The checks made at load.
    pub fn validate(&self, config: &Config) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: &str| ConfigError::Invalid {
            path: config.source.clone(),
            key: format!("registry.{key}"),
            message: message.into(),
        };
        if self.max_loaded == 0 {
            return Err(invalid("max_loaded", "keep at least 1 version loaded"));
        }
        if self.max_push_bytes == 0 || self.push_timeout_secs == 0 {
            return Err(invalid(
                if self.max_push_bytes == 0 {
                    "max_push_bytes"
                } else {
                    "push_timeout_secs"
                },
                "must be above 0",
            ));
        }
        if self.workers == 0 || self.queue == 0 {
            return Err(invalid(
                if self.workers == 0 {
                    "workers"
                } else {
                    "queue"
                },
                "must be above 0",
            ));
        }
        if let Some(message) = crate::config::max_batch_error(self.max_batch) {
            return Err(invalid("max_batch", &message));
        }
        Ok(())
    }
}

/// The registry's routes: `/v2/models/{name}/versions[/{v}[/ready|/infer]]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionRoute {
    /// `GET /v2/models/{name}/versions`
    List(String),
    /// `GET /v2/models/{name}/versions/{v}`
    Metadata(String, String),
    /// `GET /v2/models/{name}/versions/{v}/ready`
    Ready(String, String),
    /// `POST /v2/models/{name}/versions/{v}/infer`
    Infer(String, String),
    /// `PUT /v2/models/{name}/versions/{v}`
    Push(String, String),
}

impl VersionRoute {
    /// The route and the method it takes, from the path's segments after `/v2/models/`.
    pub(crate) fn parse(method: &Method, segments: &[&str]) -> Option<(VersionRoute, Method)> {
        let pair = |m: &str, v: &str| (m.to_owned(), v.to_owned());
        Some(match segments {
            [m, "versions"] => (VersionRoute::List((*m).to_owned()), Method::GET),
            [m, "versions", v] if *method == Method::PUT => {
                let (m, v) = pair(m, v);
                (VersionRoute::Push(m, v), Method::PUT)
            }
            [m, "versions", v] => {
                let (m, v) = pair(m, v);
                (VersionRoute::Metadata(m, v), Method::GET)
            }
            [m, "versions", v, "ready"] => {
                let (m, v) = pair(m, v);
                (VersionRoute::Ready(m, v), Method::GET)
            }
            [m, "versions", v, "infer"] => {
                let (m, v) = pair(m, v);
                (VersionRoute::Infer(m, v), Method::POST)
            }
            _ => return None,
        })
    }

    /// The route template, for metrics and audit.
    pub fn template(&self) -> &'static str {
        match self {
            VersionRoute::List(_) => "/v2/models/{name}/versions",
            VersionRoute::Metadata(..) => "/v2/models/{name}/versions/{version}",
            VersionRoute::Ready(..) => "/v2/models/{name}/versions/{version}/ready",
            VersionRoute::Infer(..) => "/v2/models/{name}/versions/{version}/infer",
            VersionRoute::Push(..) => "PUT /v2/models/{name}/versions/{version}",
        }
    }

    /// The model: Cedar's resource.
    pub fn model(&self) -> &str {
        match self {
            VersionRoute::List(m)
            | VersionRoute::Metadata(m, _)
            | VersionRoute::Ready(m, _)
            | VersionRoute::Infer(m, _)
            | VersionRoute::Push(m, _) => m,
        }
    }

    /// The version, when the route names one (recorded in the audit, not part of the Cedar request).
    pub fn version(&self) -> Option<&str> {
        match self {
            VersionRoute::List(_) => None,
            VersionRoute::Metadata(_, v)
            | VersionRoute::Ready(_, v)
            | VersionRoute::Infer(_, v)
            | VersionRoute::Push(_, v) => Some(v),
        }
    }

    /// The Cedar action.
    pub fn action(&self) -> Action {
        match self {
            VersionRoute::Infer(..) => Action::Infer,
            VersionRoute::Push(..) => Action::Push,
            _ => Action::ReadMetadata,
        }
    }
}

/// The version an unversioned route resolves to: when every stored version is a version number (`3`, `1.2`,
/// `v1.2.3`, `2.0.0-rc.1`: semantic versions, missing parts 0, a leading `v` ignored), the highest by semantic
/// version precedence; otherwise the most recently pushed (`pushed_at`). Ties go to the most recently pushed,
/// then to the greatest name.
pub fn latest(
    stored: &[rampart_deploy::registry::VersionInfo],
) -> Option<&rampart_deploy::registry::VersionInfo> {
    let numbers: Option<Vec<semver::Version>> =
        stored.iter().map(|v| version_number(&v.version)).collect();
    let by_push =
        |v: &&rampart_deploy::registry::VersionInfo| (v.pushed_at.clone(), v.version.clone());
    match numbers {
        Some(numbers) => stored
            .iter()
            .zip(numbers)
            .max_by(|(a, na), (b, nb)| {
                na.cmp_precedence(nb)
                    .then_with(|| by_push(a).cmp(&by_push(b)))
            })
            .map(|(v, _)| v),
        None => stored.iter().max_by_key(by_push),
    }
}

/// A version name as a semantic version: `1` and `1.2` are `1.0.0` and `1.2.0`; a leading `v` is ignored.
fn version_number(name: &str) -> Option<semver::Version> {
    let name = name.strip_prefix(['v', 'V']).unwrap_or(name);
    let (core, rest) = name.split_at(name.find(['-', '+']).unwrap_or(name.len()));
    let padded = match core.split('.').count() {
        1 => format!("{core}.0.0{rest}"),
        2 => format!("{core}.0{rest}"),
        3 => name.to_owned(),
        _ => return None,
    };
    semver::Version::parse(&padded).ok()
}

fn refusal(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new("registry", status, reason, message)
}

fn unknown_version() -> Refusal {
    refusal(
        StatusCode::NOT_FOUND,
        "unknown_version",
        "no such model version",
    )
    .strike()
}

fn json_value(status: StatusCode, value: &serde_json::Value) -> Reply {
    json_reply(status, value.to_string().into_bytes())
}

impl Gate {
    fn versions(&self) -> Result<&Arc<Versions>, Refusal> {
        self.registry
            .as_ref()
            .ok_or_else(|| refusal(StatusCode::NOT_FOUND, "no_registry", "no registry"))
    }

    /// Before Cedar: the route's model and version are valid names, and (except for a push) exist.
    pub(crate) fn registry_target(&self, route: &VersionRoute) -> Result<(), Refusal> {
        let versions = self.versions()?;
        let (model, version) = (route.model(), route.version());
        match (route, version) {
            (VersionRoute::Push(..), Some(version)) => {
                for (what, name) in [("model name", model), ("version", version)] {
                    rampart_deploy::check_name(what, name).map_err(|err| {
                        refusal(StatusCode::BAD_REQUEST, "bad_name", err.to_string())
                    })?;
                }
                Ok(())
            }
            (_, Some(version)) => {
                let key = (model.to_owned(), version.to_owned());
                if versions.cached(&key).is_some() || versions.registry.exists(model, version) {
                    Ok(())
                } else {
                    Err(unknown_version())
                }
            }
            (_, None) => {
                let stored = rampart_deploy::check_name("model name", model).is_ok()
                    && versions
                        .registry
                        .dir()
                        .join("registry")
                        .join(model)
                        .is_dir();
                if stored || self.models.contains_key(model) {
                    Ok(())
                } else {
                    Err(crate::pipeline::unknown_model())
                }
            }
        }
    }

    /// An unversioned model route of a model that is not configured but is in the registry, as the route of its
    /// [`latest`] version; any other route as it is.
    pub(crate) async fn resolve_unversioned(
        &self,
        route: crate::pipeline::Route,
    ) -> Result<crate::pipeline::Route, Refusal> {
        use crate::pipeline::Route;
        let (Route::ModelMetadata(name) | Route::ModelReady(name) | Route::Infer(name)) = &route
        else {
            return Ok(route);
        };
        // A configured model keeps its routes: decided before the registry's directory is looked at, so that
        // the hot path (inference on a configured model) costs no file-system call.
        if self.models.contains_key(name) {
            return Ok(route);
        }
        let Some(versions) = self.registry.as_ref() else {
            return Ok(route);
        };
        let stored_model = rampart_deploy::check_name("model name", name).is_ok()
            && versions.registry.dir().join("registry").join(name).is_dir();
        if !stored_model {
            return Ok(route);
        }
        let versions = Arc::clone(versions);
        let model = name.clone();
        let listed =
            tokio::task::spawn_blocking(move || versions.registry.list(Some(&model))).await;
        let stored = match listed {
            Ok(Ok(stored)) => stored,
            Ok(Err(DeployError::Name { .. })) => return Ok(route),
            _ => {
                return Err(refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "registry_failed",
                    "cannot read the registry",
                ))
            }
        };
        let Some(version) = latest(&stored).map(|v| v.version.clone()) else {
            return Ok(route);
        };
        Ok(Route::Version(match route {
            Route::ModelMetadata(m) => VersionRoute::Metadata(m, version),
            Route::ModelReady(m) => VersionRoute::Ready(m, version),
            Route::Infer(m) => VersionRoute::Infer(m, version),
            other => return Ok(other),
        }))
    }

    /// A registry version, loaded through the deployment gate if it is not yet.
    pub(crate) async fn registry_version(
        &self,
        model: &str,
        version: &str,
    ) -> Result<Arc<LoadedVersion>, Refusal> {
        let versions = self.versions()?;
        let deadline = Instant::now() + self.limits.request_timeout;
        match versions
            .get((model.to_owned(), version.to_owned()), deadline)
            .await
        {
            Ok(loaded) => Ok(loaded),
            Err(Unservable::NotFound) => Err(unknown_version()),
            Err(Unservable::Refused) => Err(refusal(
                StatusCode::CONFLICT,
                "version_refused",
                "the stored version fails the deployment gate and is not served",
            )),
            Err(Unservable::Busy) => Err(refusal(
                StatusCode::SERVICE_UNAVAILABLE,
                "loading",
                "the version is loading, retry later",
            )
            .retry_after(Duration::from_secs(1))),
            Err(Unservable::Failed) => Err(refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "load_failed",
                "cannot load the version",
            )),
        }
    }

    /// The registry's routes; a version's inference runs the pipeline's (`Gate::infer_on`) on the loaded version.
    pub(crate) async fn registry_route<B>(
        &self,
        conn: &ConnInfo,
        route: VersionRoute,
        request: Request<B>,
        started: Instant,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        match route {
            VersionRoute::List(model) => self.list_versions(&model).await,
            VersionRoute::Metadata(model, version) => {
                let loaded = self.registry_version(&model, &version).await?;
                let mut metadata = loaded.pool.model().metadata().clone();
                metadata.versions = vec![version];
                Ok(json_reply(
                    StatusCode::OK,
                    serde_json::to_vec(&metadata).unwrap_or_default(),
                ))
            }
            VersionRoute::Ready(model, version) => {
                self.registry_version(&model, &version).await?;
                let ready = self.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_value(
                    status,
                    &serde_json::json!({ "name": model, "version": version, "ready": ready }),
                ))
            }
            VersionRoute::Push(model, version) => self.push(&model, &version, request, trace).await,
            VersionRoute::Infer(model, version) => {
                let loaded = self.registry_version(&model, &version).await?;
                self.infer_on(conn, &model, &loaded.pool, request, started, trace)
                    .await
            }
        }
    }

    async fn list_versions(&self, model: &str) -> Result<Reply, Refusal> {
        let versions = Arc::clone(self.versions()?);
        let name = model.to_owned();
        let listed = tokio::task::spawn_blocking(move || versions.registry.list(Some(&name))).await;
        let stored = match listed {
            Ok(Ok(stored)) => stored,
            Ok(Err(DeployError::Name { .. })) => return Err(crate::pipeline::unknown_model()),
            _ => {
                return Err(refusal(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "registry_failed",
                    "cannot read the registry",
                ))
            }
        };
        let loaded = self.versions()?.loaded();
        let list: Vec<serde_json::Value> = stored
            .iter()
            .map(|info| {
                let mut value = serde_json::to_value(info).unwrap_or_default();
                let is_loaded = loaded
                    .iter()
                    .any(|(m, v)| *m == info.model && *v == info.version);
                if let Some(object) = value.as_object_mut() {
                    object.insert("loaded".into(), is_loaded.into());
                }
                value
            })
            .collect();
        Ok(json_value(
            StatusCode::OK,
            &serde_json::json!({ "name": model, "versions": list }),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(version: &str, pushed_at: &str) -> rampart_deploy::registry::VersionInfo {
        rampart_deploy::registry::VersionInfo {
            model: "m".into(),
            version: version.into(),
            pushed_by: "ci".into(),
            pushed_at: pushed_at.into(),
            root_digest: String::new(),
            signer: String::new(),
            sealed_bytes: 0,
        }
    }

    fn latest_of(stored: &[(&str, &str)]) -> Option<String> {
        let stored: Vec<_> = stored.iter().map(|(v, t)| info(v, t)).collect();
        latest(&stored).map(|v| v.version.clone())
    }

    #[test]
    fn latest_is_the_highest_version_number_else_the_last_pushed() {
        let (t1, t2, t3) = (
            "2026-01-01T00:00:01Z",
            "2026-01-01T00:00:02Z",
            "2026-01-01T00:00:03Z",
        );
        assert_eq!(latest_of(&[]), None);
        // Numbers compare as numbers, not text, whatever the push order.
        assert_eq!(
            latest_of(&[("10", t1), ("9", t2), ("2", t3)]).as_deref(),
            Some("10")
        );
        assert_eq!(
            latest_of(&[("v1.2.3", t3), ("1.10", t1)]).as_deref(),
            Some("1.10")
        );
        // A release outranks its pre-release.
        assert_eq!(
            latest_of(&[("2.0.0", t1), ("2.0.0-rc.1", t2)]).as_deref(),
            Some("2.0.0")
        );
        // `1` and `1.0.0` are equal: the later push wins.
        assert_eq!(latest_of(&[("1", t2), ("1.0.0", t1)]).as_deref(), Some("1"));
        // One name that is not a number: the most recently pushed.
        assert_eq!(
            latest_of(&[("10", t1), ("beta", t2), ("2", t3)]).as_deref(),
            Some("2")
        );
        assert_eq!(
            latest_of(&[("a", t3), ("b", t3), ("c", t1)]).as_deref(),
            Some("b")
        );
    }

    #[test]
    fn versioned_routes_parse() {
        let parse = |m: Method, p: &str| crate::pipeline::Route::parse(&m, p).unwrap();
        let version = |r: VersionRoute| crate::pipeline::Route::Version(r);
        assert_eq!(
            parse(Method::PUT, "/v2/models/d/versions/2"),
            version(VersionRoute::Push("d".into(), "2".into()))
        );
        assert_eq!(
            parse(Method::GET, "/v2/models/d/versions/2"),
            version(VersionRoute::Metadata("d".into(), "2".into()))
        );
        assert_eq!(
            parse(Method::POST, "/v2/models/d/versions/2/infer"),
            version(VersionRoute::Infer("d".into(), "2".into()))
        );
        assert_eq!(
            parse(Method::GET, "/v2/models/d/versions"),
            version(VersionRoute::List("d".into()))
        );
        assert!(crate::pipeline::Route::parse(&Method::POST, "/v2/models/d/versions/2").is_err());
    }
}
