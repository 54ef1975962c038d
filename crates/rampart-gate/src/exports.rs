//! Export control over HTTP: the registry's model versions leave the gateway only with another principal's approval
//! and a fresh TOTP code (`rampart-deploy`'s [`ExportControl`]), and only where Cedar permits `export` (the default
//! policy forbids it for everyone: export is refused by default).
//!
//! - `POST /v2/exports` `{"model": M, "version": V}`: the caller asks for one export (Cedar: `export` on M);
//! - `POST /v2/exports/{id}/approve` `{"totp": "123456"}`: another principal with the `approver` role (enrolled
//!   with `rampart mfa enroll`) approves with a code from its authenticator (Cedar: `approve` on M); its own
//!   request, a wrong code and a code already used are refused;
//! - `GET /v2/models/{M}/versions/{V}/export`: the requester takes the model once, as a tar stream, within the
//!   grant's lifetime (Cedar: `export` on M). The version is unsealed and checked by the deployment gate in memory;
//!   nothing is written to disk.
//!
//! Every request, approval, refusal and export is recorded in the audit log by `ExportControl`; a refusal is 403
//! with the reason, an unknown request or version 404, each a refusal of stage `export` in the gateway's own record.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use rampart_auth::{Action, Principal};
use rampart_deploy::{Error as DeployError, ExportControl, GateConfig, Registry};

use crate::pipeline::{ConnInfo, Refusal, Reply};
use crate::Gate;

/// Largest JSON body of a request or an approval.
const MAX_BODY: usize = 4096;

/// The export routes, parsed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ExportRoute {
    Request,
    Approve(String),
    Fetch { model: String, version: String },
}

pub(crate) fn parse(method: &Method, path: &str) -> Option<ExportRoute> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match (method, segments.as_slice()) {
        (&Method::POST, ["v2", "exports"]) => Some(ExportRoute::Request),
        (&Method::POST, ["v2", "exports", id, "approve"]) => {
            Some(ExportRoute::Approve((*id).to_owned()))
        }
        (&Method::GET, ["v2", "models", model, "versions", version, "export"]) => {
            Some(ExportRoute::Fetch {
                model: (*model).to_owned(),
                version: (*version).to_owned(),
            })
        }
        _ => None,
    }
}

impl ExportRoute {
    /// The route for metrics and the audit trail.
    pub(crate) fn route(&self) -> crate::pipeline::Route {
        let (template, model) = match self {
            ExportRoute::Request => ("/v2/exports", None),
            ExportRoute::Approve(_) => ("/v2/exports/{id}/approve", None),
            ExportRoute::Fetch { model, .. } => (
                "/v2/models/{name}/versions/{version}/export",
                Some(model.clone()),
            ),
        };
        crate::pipeline::Route::Export { template, model }
    }
}

/// Whether a request is for these routes (checked before the inference pipeline's routes).
pub fn claims(method: &Method, path: &str) -> bool {
    // Every export route starts with `/v2/exports` or ends with `/export`: other paths (every inference request)
    // are not split.
    let trimmed = path.trim_end_matches('/');
    (trimmed.starts_with("/v2/exports") || trimmed.ends_with("/export"))
        && parse(method, path).is_some()
}

/// The registry and the gate it checks exported versions with.
#[derive(Debug)]
pub struct Exports {
    registry: Registry,
    gate: GateConfig,
}

impl Exports {
    /// Export control over the registry in `state_dir`, recording into the gateway's log when it has one.
    pub fn new(
        state_dir: &std::path::Path,
        log: Option<std::sync::Arc<rampart_log::Log>>,
        gate: GateConfig,
    ) -> Exports {
        let registry = match log {
            Some(log) => Registry::with_log(state_dir, log),
            None => Registry::open(state_dir),
        };
        Exports { registry, gate }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Reply {
    reply(status, "application/json", value.to_string().into_bytes())
}

/// A refusal of export control, recorded as such by the pipeline (stage `export`).
fn refused(status: StatusCode, reason: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::new("export", status, reason, message)
}

/// Maps export control's errors to refusals: a denial 403 with its reason, a missing thing 404, bad names 400.
fn answer(err: &DeployError) -> Refusal {
    match err {
        DeployError::Denied(reason) => refused(StatusCode::FORBIDDEN, "export_refused", reason),
        DeployError::NotFound(what) => refused(StatusCode::NOT_FOUND, "not_found", what),
        DeployError::Refused(report) => {
            tracing::error!(reason = %report.summary(), "a stored version failed the deployment gate on export");
            refused(
                StatusCode::CONFLICT,
                "gate_refused",
                "the stored version fails the deployment gate",
            )
        }
        DeployError::Name { .. } => refused(StatusCode::BAD_REQUEST, "bad_name", err.to_string()),
        other => {
            tracing::error!(error = %other, "export control failed");
            refused(
                StatusCode::INTERNAL_SERVER_ERROR,
                "export_failed",
                "export control failed",
            )
        }
    }
}

impl Gate {
    /// Answers an export route for an authenticated `principal` (the pipeline's stages came first: ban, limits,
    /// authentication): Cedar, then export control.
    pub(crate) async fn handle_export<B>(
        &self,
        conn: &ConnInfo,
        route: ExportRoute,
        principal: Principal,
        request: Request<B>,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let Some(exports) = &self.exports else {
            return Err(refused(StatusCode::NOT_FOUND, "no_registry", "no registry"));
        };
        let body = match tokio::time::timeout(
            self.limits.body_timeout,
            Limited::new(request.into_body(), MAX_BODY).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            _ => {
                return Err(refused(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    "cannot read the body (at most 4096 bytes)",
                ))
            }
        };
        let exports = std::sync::Arc::clone(exports);
        let ip = conn.ip;
        let authorizer = std::sync::Arc::clone(&self.authorizer);
        // Export control reads and writes the state directory and unseals models: blocking work.
        tokio::task::spawn_blocking(move || exports.run(&route, &principal, &body, &authorizer, ip))
            .await
            .unwrap_or_else(|_| {
                Err(refused(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "export_failed",
                    "export control failed",
                ))
            })
    }
}

impl Exports {
    fn run(
        &self,
        route: &ExportRoute,
        principal: &Principal,
        body: &[u8],
        authorizer: &rampart_auth::Authorizer,
        ip: std::net::IpAddr,
    ) -> Result<Reply, Refusal> {
        let control = ExportControl::new(&self.registry);
        let allowed = |action: Action, model: &str| {
            crate::stages::policy::allows(authorizer, principal, action, model)
        };
        let forbidden = || refused(StatusCode::FORBIDDEN, "export_refused", "forbidden");
        let bad_body = |shape: &str| {
            refused(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("the body must be {shape}"),
            )
        };
        match route {
            ExportRoute::Request => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Ask {
                    model: String,
                    version: String,
                }
                let ask = serde_json::from_slice::<Ask>(body)
                    .map_err(|_| bad_body("{\"model\": NAME, \"version\": VERSION}"))?;
                if !allowed(Action::Export, &ask.model) {
                    return Err(forbidden());
                }
                let request = control
                    .request(&ask.model, &ask.version, &principal.id)
                    .map_err(|e| answer(&e))?;
                Ok(json(
                    StatusCode::CREATED,
                    &serde_json::to_value(&request).unwrap_or_default(),
                ))
            }
            ExportRoute::Approve(id) => {
                #[derive(serde::Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Approval {
                    totp: String,
                }
                let approval = serde_json::from_slice::<Approval>(body)
                    .map_err(|_| bad_body("{\"totp\": CODE}"))?;
                // Only an approver learns whether a request exists: anyone else is refused before the lookup.
                let approver = control
                    .roles()
                    .map_err(|e| answer(&e))?
                    .get(&principal.id)
                    .is_some_and(|r| r.iter().any(|r| r == rampart_deploy::export::APPROVER));
                if !approver {
                    return Err(forbidden());
                }
                let pending = control.get(id).map_err(|e| answer(&e))?;
                if !allowed(Action::Approve, &pending.model) {
                    return Err(forbidden());
                }
                let request = control
                    .approve(id, &principal.id, &approval.totp)
                    .map_err(|e| answer(&e))?;
                Ok(json(
                    StatusCode::OK,
                    &serde_json::to_value(&request).unwrap_or_default(),
                ))
            }
            ExportRoute::Fetch { model, version } => {
                if !allowed(Action::Export, model) {
                    return Err(forbidden());
                }
                control
                    .take_grant(model, version, &principal.id, &format!("https to {ip}"))
                    .map_err(|e| answer(&e))?;
                let files = self
                    .registry
                    .load(model, version, &principal.id, &self.gate)
                    .map_err(|e| answer(&e))?;
                let bytes = tar_of(&files).map_err(|err| {
                    tracing::error!(error = %err, "cannot build the export");
                    refused(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "export_failed",
                        "export failed",
                    )
                })?;
                Ok(reply(StatusCode::OK, "application/x-tar", bytes))
            }
        }
    }
}

/// The files as a tar stream, in memory.
fn tar_of(files: &[rampart_seal::MemoryFile]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for file in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(file.data.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        builder.append_data(&mut header, &file.path, file.data.as_slice())?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        assert_eq!(
            parse(&Method::POST, "/v2/exports"),
            Some(ExportRoute::Request)
        );
        assert_eq!(
            parse(&Method::POST, "/v2/exports/ab12/approve"),
            Some(ExportRoute::Approve("ab12".into()))
        );
        assert_eq!(
            parse(&Method::GET, "/v2/models/d/versions/1/export"),
            Some(ExportRoute::Fetch {
                model: "d".into(),
                version: "1".into()
            })
        );
        assert_eq!(parse(&Method::GET, "/v2/exports"), None);
        assert_eq!(parse(&Method::POST, "/v2/models/d/infer"), None);
        // `claims` passes over other paths before parsing, and agrees with `parse` on these.
        for (method, path, claimed) in [
            (Method::POST, "/v2/exports", true),
            (Method::POST, "/v2/exports/", true),
            (Method::POST, "/v2/exports/ab12/approve", true),
            (Method::POST, "/v2/exports/ab12/approve/", true),
            (Method::GET, "/v2/models/d/versions/1/export", true),
            (Method::GET, "/v2/models/d/versions/1/export/", true),
            (Method::GET, "/v2/exports", false),
            (Method::POST, "/v2/models/d/infer", false),
            (Method::GET, "/v2/models/d/export", false),
        ] {
            assert_eq!(claims(&method, path), claimed, "{method} {path}");
            assert_eq!(parse(&method, path).is_some(), claimed, "{method} {path}");
        }
    }
}
