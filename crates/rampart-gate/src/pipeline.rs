//! The order of the stages, in one place.
//!
//! A request passes, cheapest first: **ban** → **route** → **rate (per IP)** → **authn** → **policy** →
//! **rate (per principal), quota, concurrency** → **body** (encoding, size, time) → **validate** (JSON, tensors against
//! the model's metadata) → **infer** (queue, deadline) → **respond**. Each stage returns `Ok` to continue or a
//! [`Refusal`]; the refusal, like every answer, becomes a metric, an audit record and possibly a ban strike here, in
//! [`Gate::handle`], not in the stages. Later stages (input filters, extraction detection, watermarking, fleet-wide
//! limits) join this sequence as one more call each.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use hyper::header::{
    HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER,
};
use hyper::{Method, Request, Response, StatusCode, Version};
use rampart_infer::kserve::{self, Bounds};
use rustls::pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use crate::audit::{rfc3339, AuditRecord};
use crate::metrics::{RefusalLabels, RequestLabels};
use crate::registry::VersionRoute;
use crate::stages::ban::Strike;
use crate::stages::infer::JobError;
use crate::stages::rate::{RateDecision, Slot};
use crate::Gate;
use rampart_auth::{Action, Principal};

/// What the listener knows about the connection a request came on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The client's address.
    pub ip: IpAddr,
    /// The verified client certificate chain (mTLS), leaf first; empty without one.
    pub client_certs: Arc<Vec<CertificateDer<'static>>>,
}

/// A stage's refusal: the status, a machine-readable reason, a short message safe for the client.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The stage that refused.
    pub stage: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable reason (`rate_limited`, `malformed_json`).
    pub reason: &'static str,
    /// What the client is told; no internals.
    pub message: String,
    /// Extra headers (`Retry-After`, `RateLimit-*`).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Whether the refusal counts towards a ban.
    pub strike: bool,
}

impl Refusal {
    /// A refusal that does not count towards a ban, with no extra headers.
    pub(crate) fn new(
        stage: &'static str,
        status: StatusCode,
        reason: &'static str,
        message: impl Into<String>,
    ) -> Refusal {
        Refusal {
            stage,
            status,
            reason,
            message: message.into(),
            headers: Vec::new(),
            strike: false,
        }
    }

    pub(crate) fn strike(mut self) -> Refusal {
        self.strike = true;
        self
    }

    pub(crate) fn retry_after(mut self, wait: std::time::Duration) -> Refusal {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        self.headers
            .push((RETRY_AFTER, HeaderValue::from(secs.max(1))));
        self
    }
}

/// The route a request names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `GET /v2/health/live`
    Live,
    /// `GET /v2/health/ready`
    Ready,
    /// `GET /v2`
    ServerMetadata,
    /// `GET /v2/models/{name}`
    ModelMetadata(String),
    /// `GET /v2/models/{name}/ready`
    ModelReady(String),
    /// `POST /v2/models/{name}/infer`
    Infer(String),
    /// `/v2/models/{name}/versions/...`: the registry's versions (`crate::registry`)
    Version(VersionRoute),
    /// Export control (`crate::exports`): its own routes, Cedar checks and audit, behind the same limits.
    Export {
        /// The route template.
        template: &'static str,
        /// The model named, when the path names one.
        model: Option<String>,
    },
}

impl Route {
    /// The route template, for metrics and audit.
    pub fn template(&self) -> &'static str {
        match self {
            Route::Live => "/v2/health/live",
            Route::Ready => "/v2/health/ready",
            Route::ServerMetadata => "/v2",
            Route::ModelMetadata(_) => "/v2/models/{name}",
            Route::ModelReady(_) => "/v2/models/{name}/ready",
            Route::Infer(_) => "/v2/models/{name}/infer",
            Route::Version(v) => v.template(),
            Route::Export { template, .. } => template,
        }
    }

    /// The model the route names: Cedar's resource.
    pub(crate) fn model(&self) -> Option<&str> {
        match self {
            Route::ModelMetadata(m) | Route::ModelReady(m) | Route::Infer(m) => Some(m),
            Route::Version(v) => Some(v.model()),
            Route::Export { model, .. } => model.as_deref(),
            Route::Live | Route::Ready | Route::ServerMetadata => None,
        }
    }

    /// The registry version the route names.
    fn version(&self) -> Option<&str> {
        match self {
            Route::Version(v) => v.version(),
            _ => None,
        }
    }

    fn action(&self) -> Action {
        match self {
            Route::Infer(_) => Action::Infer,
            Route::Version(v) => v.action(),
            Route::Export { .. } => Action::Export,
            _ => Action::ReadMetadata,
        }
    }

    /// Parses a method and path. Versioned paths (`/v2/models/{name}/versions/{v}/...`) address the registry's
    /// versions of the model.
    pub fn parse(method: &Method, path: &str) -> Result<Route, Refusal> {
        let not_found =
            || Refusal::new("route", StatusCode::NOT_FOUND, "not_found", "no such route").strike();
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
        let (route, wanted) = match segments.as_slice() {
            ["v2"] => (Route::ServerMetadata, Method::GET),
            ["v2", "health", "live"] => (Route::Live, Method::GET),
            ["v2", "health", "ready"] => (Route::Ready, Method::GET),
            ["v2", "models", name] => (Route::ModelMetadata((*name).to_owned()), Method::GET),
            ["v2", "models", name, "ready"] => (Route::ModelReady((*name).to_owned()), Method::GET),
            ["v2", "models", name, "infer"] => (Route::Infer((*name).to_owned()), Method::POST),
            ["v2", "models", rest @ ..] => match VersionRoute::parse(method, rest) {
                Some((route, wanted)) => (Route::Version(route), wanted),
                None => return Err(not_found()),
            },
            _ => return Err(not_found()),
        };
        if *method != wanted && !(wanted == Method::GET && *method == Method::HEAD) {
            return Err(Refusal::new(
                "route",
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed",
            )
            .strike());
        }
        Ok(route)
    }
}

/// What a request carried through the stages, for the record.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    route: Option<Route>,
    pub(crate) principal: Option<Principal>,
    pub(crate) input_sha256: Option<String>,
    rate_headers: Vec<(HeaderName, HeaderValue)>,
    defend: Option<crate::stages::defend::DefendAudit>,
}

/// The response body type.
pub type Reply = Response<Full<Bytes>>;

pub(crate) fn json_reply(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The reason and message of hyper's own answers to a request it cannot parse: 400 (a malformed request line or
/// header), 414 and 431 (too long for its buffer).
fn unparsed_reason(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::URI_TOO_LONG => ("uri_too_long", "request URI too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => {
            ("headers_too_large", "request headers too large")
        }
        _ => ("malformed_http", "malformed HTTP request"),
    }
}

/// hyper's own answer to an HTTP/1 request it could not parse, with the JSON error body every other refusal has,
/// or `None` when `head` is not such an answer. hyper writes that answer (400, 414 or 431) by itself, as a bare
/// head (`connection: close`, `content-length: 0` and a date, nothing else), before the service ever sees a
/// request; every answer of the gateway's own has a `content-type`, so no answer of ours is taken for one.
pub(crate) fn unparsed_answer(head: &[u8]) -> Option<(StatusCode, Vec<u8>)> {
    const MAX: usize = 256;
    // Every answer is looked at: what is not one is told at its first bytes.
    let status = match head.get(..13)? {
        b"HTTP/1.1 400 " => StatusCode::BAD_REQUEST,
        b"HTTP/1.1 414 " => StatusCode::URI_TOO_LONG,
        b"HTTP/1.1 431 " => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => return None,
    };
    if head.len() > MAX || !head.ends_with(b"\r\n\r\n") {
        return None;
    }
    let text = std::str::from_utf8(head).ok()?;
    let lines = text.strip_suffix("\r\n\r\n")?.split("\r\n").skip(1);
    let mut date = None;
    for line in lines {
        let (name, value) = line.split_once(": ")?;
        let expected = (name.eq_ignore_ascii_case("content-length") && value == "0")
            || (name.eq_ignore_ascii_case("connection") && value == "close")
            || (name.eq_ignore_ascii_case("date") && date.replace(value).is_none());
        if !expected {
            return None;
        }
    }
    let body = error_body(unparsed_reason(status).1);
    let date = date.map(|d| format!("date: {d}\r\n")).unwrap_or_default();
    let mut answer = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{date}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    Some((status, answer))
}

pub(crate) fn error_body(message: &str) -> Vec<u8> {
    serde_json::json!({ "error": message })
        .to_string()
        .into_bytes()
}

fn rate_headers(decision: RateDecision) -> Vec<(HeaderName, HeaderValue)> {
    let (limit, remaining, reset) = match decision {
        RateDecision::Allow {
            limit,
            remaining,
            reset,
        } => (limit, remaining, reset),
        RateDecision::Deny { limit, retry_after } => (limit, 0, retry_after),
    };
    let reset = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
    vec![
        (
            HeaderName::from_static("ratelimit-limit"),
            HeaderValue::from(limit),
        ),
        (
            HeaderName::from_static("ratelimit-remaining"),
            HeaderValue::from(remaining),
        ),
        (
            HeaderName::from_static("ratelimit-reset"),
            HeaderValue::from(reset),
        ),
    ]
}

impl Gate {
    /// Answers one request: runs the stages, then records the outcome (metrics, audit, ban strikes).
    pub async fn handle<B>(&self, conn: &ConnInfo, request: Request<B>) -> Reply
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let started = Instant::now();
        let mut trace = Trace::default();
        let result = if let Err(refusal) = self.stage_h2_headers(&request) {
            Err(refusal)
        } else if crate::exports::claims(request.method(), request.uri().path()) {
            self.export_stages(conn, request, &mut trace).await
        } else {
            self.stages(conn, request, started, &mut trace).await
        };
        let (response, refusal) = match result {
            Ok(response) => (response, None),
            Err(refusal) => {
                let mut response = json_reply(refusal.status, error_body(&refusal.message));
                for (name, value) in &refusal.headers {
                    response.headers_mut().insert(name.clone(), value.clone());
                }
                (response, Some(refusal))
            }
        };
        let mut response = response;
        for (name, value) in trace.rate_headers.drain(..) {
            response.headers_mut().entry(name).or_insert(value);
        }
        self.record(conn, &trace, refusal.as_ref(), response.status(), started)
            .await;
        response
    }

    async fn record(
        &self,
        conn: &ConnInfo,
        trace: &Trace,
        refusal: Option<&Refusal>,
        status: StatusCode,
        started: Instant,
    ) {
        let elapsed = started.elapsed();
        let route = trace.route.as_ref();
        self.stage_anomaly(conn, trace, status).await;
        let labels = RequestLabels {
            model: route
                .and_then(Route::model)
                .filter(|m| self.models.contains_key(*m))
                .unwrap_or("")
                .to_owned(),
            route: route.map_or("other", Route::template).to_owned(),
            status: status.as_u16(),
        };
        self.metrics.requests.get_or_create(&labels).inc();
        self.metrics
            .latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        if let Some(refusal) = refusal {
            self.metrics
                .refusals
                .get_or_create(&RefusalLabels {
                    stage: refusal.stage.to_owned(),
                    reason: refusal.reason.to_owned(),
                })
                .inc();
            if refusal.strike {
                let principal = trace.principal.as_ref().map(|p| p.id.clone());
                let route = route.map_or("other", Route::template);
                self.strike(conn, principal, route, refusal.reason, status)
                    .await;
            }
        }
        let outcome = match (refusal, status.is_success()) {
            (Some(_), _) => "refused",
            (None, true) => "allowed",
            (None, false) => "failed",
        };
        tracing::debug!(client_ip = %conn.ip, status = status.as_u16(), outcome, route = labels.route, "request");
        self.audit
            .record(AuditRecord {
                time: rfc3339(SystemTime::now()),
                client_ip: conn.ip.to_string(),
                principal: trace.principal.as_ref().map(|p| p.id.clone()),
                action: route.map_or("unknown", |r| r.action().as_str()),
                model: route
                    .and_then(Route::model)
                    .map(|m| m.chars().take(128).collect()),
                version: route
                    .and_then(Route::version)
                    .map(|v| v.chars().take(128).collect()),
                route: route.map_or("other", Route::template),
                outcome,
                stage: refusal.map(|r| r.stage),
                reason: refusal.map(|r| r.reason),
                status: status.as_u16(),
                latency_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                input_sha256: trace.input_sha256.clone(),
                defend: trace.defend.clone().map(Box::new),
            })
            .await;
    }

    /// A ban strike against the client for `reason`; when it earns a ban, the ban's metrics, log line and audit
    /// record.
    async fn strike(
        &self,
        conn: &ConnInfo,
        principal: Option<String>,
        route: &'static str,
        reason: &'static str,
        status: StatusCode,
    ) {
        let Strike::Banned(length) = self.bans.strike(conn.ip) else {
            return;
        };
        self.metrics.bans.inc();
        self.metrics
            .bans_active
            .set(i64::try_from(self.bans.active()).unwrap_or(i64::MAX));
        tracing::warn!(client_ip = %conn.ip, seconds = length.as_secs(), reason, "client banned");
        self.audit
            .record(AuditRecord {
                time: rfc3339(SystemTime::now()),
                client_ip: conn.ip.to_string(),
                principal,
                action: "ban",
                model: None,
                version: None,
                route,
                outcome: "banned",
                stage: Some("ban"),
                reason: Some(reason),
                status: status.as_u16(),
                latency_us: length.as_secs().saturating_mul(1_000_000),
                input_sha256: None,
                defend: None,
            })
            .await;
    }

    /// Records an HTTP/2 connection the gateway closed for the client's protocol violation (`reason`, such as
    /// `h2_enhance_your_calm` for a rapid-reset burst): a refused connection in the metrics and a ban strike, as
    /// for a malformed request.
    pub(crate) async fn record_h2_violation(&self, conn: &ConnInfo, reason: &'static str) {
        self.metrics.connection_refused(reason);
        self.strike(conn, None, "other", reason, StatusCode::BAD_REQUEST)
            .await;
    }

    /// Records a request whose handling panicked, which the listener answered with 500: its metrics and its audit
    /// record (outcome `refused`, stage and reason `panic`), as for any other refusal. What the request was is not
    /// known any more: the record has its client and time.
    pub async fn record_panic(&self, conn: &ConnInfo, started: Instant) {
        let refusal = Refusal::new(
            "panic",
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic",
            "internal error",
        );
        self.record(
            conn,
            &Trace::default(),
            Some(&refusal),
            refusal.status,
            started,
        )
        .await;
    }

    /// The header limits of an HTTP/2 request, which hyper leaves to the service: `limits.max_headers` fields, and
    /// `limits.max_header_bytes` of header list as HTTP/2 sizes it (each field's name and value plus 32 octets,
    /// pseudo-headers included). The h2 library refuses lists past twice that size by itself, with a bare 431 and
    /// before any stage; the ones between get the JSON error body and the strike of HTTP/1's 431.
    fn stage_h2_headers<B>(&self, request: &Request<B>) -> Result<(), Refusal> {
        if request.version() != Version::HTTP_2 {
            return Ok(());
        }
        let field = |name: usize, value: usize| name + value + 32;
        let uri = request.uri();
        let pseudo = field(":method".len(), request.method().as_str().len())
            + field(
                ":path".len(),
                uri.path_and_query().map_or(0, |p| p.as_str().len()),
            )
            + uri
                .scheme_str()
                .map_or(0, |s| field(":scheme".len(), s.len()))
            + uri
                .authority()
                .map_or(0, |a| field(":authority".len(), a.as_str().len()));
        let size = request
            .headers()
            .iter()
            .fold(pseudo, |size, (name, value)| {
                size.saturating_add(field(name.as_str().len(), value.len()))
            });
        if request.headers().len() > self.limits.max_headers || size > self.limits.max_header_bytes
        {
            let (reason, message) = unparsed_reason(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
            return Err(Refusal::new(
                "http",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                reason,
                message,
            )
            .strike());
        }
        Ok(())
    }

    /// Records a request that hyper could not parse and answered itself (the listener gave that answer its JSON
    /// body, [`unparsed_answer`]): its metrics, its audit record (stage `http`) and a ban strike, as for a malformed
    /// request that did parse.
    pub(crate) async fn record_unparsed(&self, conn: &ConnInfo, status: StatusCode) {
        let (reason, message) = unparsed_reason(status);
        let refusal = Refusal::new("http", status, reason, message).strike();
        self.record(
            conn,
            &Trace::default(),
            Some(&refusal),
            status,
            Instant::now(),
        )
        .await;
    }

    /// The stages, in order.
    async fn stages<B>(
        &self,
        conn: &ConnInfo,
        request: Request<B>,
        started: Instant,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.stage_ban(conn)?;
        let route = Route::parse(request.method(), request.uri().path())?;
        trace.route = Some(route.clone());
        if !matches!(route, Route::Live | Route::Ready) {
            self.stage_audit_open()?;
        }
        let public = self.public_routes.contains(request.uri().path());
        if self.security {
            // Public routes too: the per-IP limit is what keeps an unauthenticated flood cheap.
            self.stage_rate_ip(conn, trace)?;
        }
        let principal = if self.security && !public {
            let principal = self.stage_authn(conn, request.headers()).await?;
            trace.principal = Some(principal.clone());
            Some(principal)
        } else {
            None
        };
        // A registry-only model's unversioned route becomes its latest version's, once the caller is known (the
        // registry is not read for unauthenticated requests) and before Cedar, so both routes run alike.
        let route = self.resolve_unversioned(route).await?;
        trace.route = Some(route.clone());
        let _slot: Option<Slot> = if let Some(principal) = principal {
            self.stage_policy(&principal, &route)?;
            self.stage_rate_principal(&principal, trace)?;
            Some(self.stage_concurrency(&principal)?)
        } else {
            None
        };
        match route {
            Route::Infer(name) => {
                let pool = self.models.get(&name).ok_or_else(unknown_model)?;
                self.infer_on(conn, &name, pool, request, started, trace)
                    .await
            }
            Route::Version(route) => {
                self.registry_route(conn, route, request, started, trace)
                    .await
            }
            // Answered by `export_stages`; never parsed here.
            Route::Export { .. } => Err(Refusal::new(
                "route",
                StatusCode::NOT_FOUND,
                "no_route",
                "no such route",
            )),
            Route::Live => Ok(json_reply(StatusCode::OK, br#"{"live":true}"#.to_vec())),
            Route::Ready => {
                let ready = self.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_reply(
                    status,
                    serde_json::json!({ "ready": ready })
                        .to_string()
                        .into_bytes(),
                ))
            }
            Route::ServerMetadata => Ok(json_reply(
                StatusCode::OK,
                serde_json::json!({
                    "name": "rampart",
                    "version": env!("CARGO_PKG_VERSION"),
                    "extensions": ["binary_tensor_data"],
                })
                .to_string()
                .into_bytes(),
            )),
            Route::ModelMetadata(name) => {
                let pool = self.models.get(&name).ok_or_else(unknown_model)?;
                let body = serde_json::to_vec(pool.model().metadata()).unwrap_or_default();
                Ok(json_reply(StatusCode::OK, body))
            }
            Route::ModelReady(name) => {
                self.models.get(&name).ok_or_else(unknown_model)?;
                let ready = self.is_ready();
                let status = if ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_reply(
                    status,
                    serde_json::json!({ "name": name, "ready": ready })
                        .to_string()
                        .into_bytes(),
                ))
            }
        }
    }

    /// The body, validation, defences, the model and the answer of an inference on `pool` (a configured model or a
    /// registry version of `name`; the defences configured for `name` apply to both).
    pub(crate) async fn infer_on<B>(
        &self,
        conn: &ConnInfo,
        name: &str,
        pool: &crate::stages::infer::ModelPool,
        request: Request<B>,
        started: Instant,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let deadline = started + self.limits.request_timeout;
        let json_len = self.stage_encoding(request.headers())?;
        let body = self.stage_body(request.into_body(), deadline).await?;
        trace.input_sha256 = Some(hex::encode(Sha256::digest(&body)));
        // One version for the whole request: its model, its defences, its queue (a reload may swap meanwhile). A
        // registry version has no defences of its own: the configured model's apply, so versions are no way around them.
        let serving = pool.serving();
        let configured = self.models.get(name).and_then(|p| p.defences());
        let defences = serving.defences().or(configured.as_deref());
        // A large body is parsed and defended (decoding, neighbour searches, extraction evidence per row) without
        // holding up the other connections of this runtime thread.
        let heavy = body.len() > crate::stages::infer::HEAVY_BODY_BYTES;
        let (id, wanted, inputs, pending) = crate::stages::infer::off_runtime_if(heavy, || {
            let kserve::InferRequest {
                id,
                inputs,
                outputs,
            } = self.stage_validate(serving.model(), &body, json_len, defences, trace)?;
            let (inputs, pending) = self.stage_defend_inputs(conn, defences, inputs, trace)?;
            Ok::<_, Refusal>((id, outputs, inputs, pending))
        })?;
        let outputs = stage_infer(&serving, inputs, deadline).await?;
        let (outputs, keep_wanted) = self
            .stage_defend_outputs(pending, outputs, heavy, trace)
            .await?;
        let wanted = if keep_wanted { &wanted[..] } else { &[] };
        Ok(respond_infer(name, id.as_deref(), &outputs, wanted))
    }

    /// The gateway does not act unaudited (`[audit] on_failure`).
    fn stage_audit_open(&self) -> Result<(), Refusal> {
        if self.audit_blocked() {
            return Err(Refusal::new(
                "audit",
                StatusCode::SERVICE_UNAVAILABLE,
                "audit_unavailable",
                "unavailable, retry later",
            )
            .retry_after(std::time::Duration::from_secs(5)));
        }
        Ok(())
    }

    /// The export routes, behind the stages every route passes (ban, audit, per-address rate, authentication,
    /// per-principal rate and concurrency), then export control, whose Cedar checks are its own (per action).
    async fn export_stages<B>(
        &self,
        conn: &ConnInfo,
        request: Request<B>,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        self.stage_ban(conn)?;
        let route =
            crate::exports::parse(request.method(), request.uri().path()).ok_or_else(|| {
                Refusal::new("route", StatusCode::NOT_FOUND, "no_route", "no such route")
            })?;
        trace.route = Some(route.route());
        self.stage_audit_open()?;
        if self.security {
            self.stage_rate_ip(conn, trace)?;
        }
        // Export control needs to know who asks, whether or not the other security stages are on.
        let principal = self.stage_authn(conn, request.headers()).await?;
        trace.principal = Some(principal.clone());
        let _slot = if self.security {
            self.stage_rate_principal(&principal, trace)?;
            Some(self.stage_concurrency(&principal)?)
        } else {
            None
        };
        self.handle_export(conn, route, principal, request).await
    }

    fn stage_ban(&self, conn: &ConnInfo) -> Result<(), Refusal> {
        match self.bans.banned_for(conn.ip) {
            Some(wait) => {
                Err(
                    Refusal::new("ban", StatusCode::FORBIDDEN, "banned", "temporarily banned")
                        .retry_after(wait),
                )
            }
            None => Ok(()),
        }
    }

    fn stage_rate_ip(&self, conn: &ConnInfo, trace: &mut Trace) -> Result<(), Refusal> {
        let Some(limiter) = &self.limits.per_ip else {
            return Ok(());
        };
        match limiter.check(&crate::stages::ban::client(
            conn.ip,
            self.limits.ipv6_client_prefix,
        )) {
            RateDecision::Allow { .. } => Ok(()),
            deny @ RateDecision::Deny { retry_after, .. } => {
                let _ = trace;
                let mut refusal = Refusal::new(
                    "rate",
                    StatusCode::TOO_MANY_REQUESTS,
                    "ip_rate_limited",
                    "too many requests",
                )
                .strike()
                .retry_after(retry_after);
                refusal.headers.extend(rate_headers(deny));
                Err(refusal)
            }
        }
    }

    async fn stage_authn(
        &self,
        conn: &ConnInfo,
        headers: &hyper::HeaderMap,
    ) -> Result<Principal, Refusal> {
        self.authn
            .authenticate(headers, &conn.client_certs)
            .await
            .map_err(|err| {
                tracing::info!(client_ip = %conn.ip, reason = %err, "authentication failed");
                let mut refusal = Refusal::new(
                    "authn",
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    "unauthorized",
                )
                .strike();
                refusal.headers.push((
                    hyper::header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer"),
                ));
                refusal
            })
    }

    /// Cedar decides on model routes. An unknown model is answered 404 before the policy runs (the caller is
    /// authenticated by then), so that only served models reach Cedar's caches. Server-level routes (`/v2`) need
    /// authentication only: they name no model and reveal nothing about one.
    fn stage_policy(&self, principal: &Principal, route: &Route) -> Result<(), Refusal> {
        let Some(model) = route.model() else {
            return Ok(());
        };
        if let Route::Version(route) = route {
            self.registry_target(route)?;
        } else if !self.models.contains_key(model) {
            return Err(unknown_model());
        }
        if crate::stages::policy::allows(&self.authorizer, principal, route.action(), model) {
            Ok(())
        } else {
            Err(Refusal::new(
                "policy",
                StatusCode::FORBIDDEN,
                "forbidden",
                "forbidden",
            ))
        }
    }

    fn stage_rate_principal(
        &self,
        principal: &Principal,
        trace: &mut Trace,
    ) -> Result<(), Refusal> {
        if let Some(limiter) = &self.limits.per_principal {
            let decision = limiter.check(&principal.id);
            trace.rate_headers = rate_headers(decision);
            if let RateDecision::Deny { retry_after, .. } = decision {
                return Err(Refusal::new(
                    "rate",
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "too many requests",
                )
                .strike()
                .retry_after(retry_after));
            }
        }
        if let Some(quota) = &self.limits.daily_quota {
            if let Err(wait) = quota.take(&principal.id) {
                return Err(Refusal::new(
                    "rate",
                    StatusCode::TOO_MANY_REQUESTS,
                    "quota_exhausted",
                    "daily quota exhausted",
                )
                .retry_after(wait));
            }
        }
        Ok(())
    }

    fn stage_concurrency(&self, principal: &Principal) -> Result<Slot, Refusal> {
        self.limits
            .concurrency
            .acquire(&principal.id)
            .ok_or_else(|| {
                Refusal::new(
                    "rate",
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_in_flight",
                    "too many requests in flight",
                )
                .retry_after(std::time::Duration::from_secs(1))
            })
    }

    /// Refuses compressed bodies and reads the binary-extension header.
    fn stage_encoding(&self, headers: &hyper::HeaderMap) -> Result<Option<usize>, Refusal> {
        check_body_headers(headers, self.limits.max_body_bytes as u64)?;
        match headers.get("inference-header-content-length") {
            None => Ok(None),
            Some(v) => v
                .to_str()
                .ok()
                .and_then(|s| s.parse::<usize>().ok())
                .map(Some)
                .ok_or_else(|| {
                    Refusal::new(
                        "body",
                        StatusCode::BAD_REQUEST,
                        "bad_length",
                        "invalid Inference-Header-Content-Length",
                    )
                    .strike()
                }),
        }
    }

    /// Reads the body, counting bytes as they come (chunked bodies too) and bounded in time.
    async fn stage_body<B>(&self, body: B, deadline: Instant) -> Result<Bytes, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let body_deadline = (Instant::now() + self.limits.body_timeout).min(deadline);
        let read = Limited::new(body, self.limits.max_body_bytes).collect();
        match tokio::time::timeout_at(body_deadline.into(), read).await {
            Ok(Ok(collected)) => Ok(collected.to_bytes()),
            Ok(Err(err))
                if err
                    .downcast_ref::<http_body_util::LengthLimitError>()
                    .is_some() =>
            {
                Err(too_large())
            }
            Ok(Err(_)) => Err(Refusal::new(
                "body",
                StatusCode::BAD_REQUEST,
                "body_error",
                "cannot read the body",
            )
            .strike()),
            Err(_) => Err(Refusal::new(
                "body",
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body came too slowly",
            )
            .strike()),
        }
    }

    /// Parses the JSON and checks every tensor against the model's declared inputs.
    fn stage_validate(
        &self,
        model: &dyn rampart_infer::Model,
        body: &[u8],
        json_len: Option<usize>,
        defences: Option<&crate::stages::defend::Defences>,
        trace: &mut Trace,
    ) -> Result<kserve::InferRequest, Refusal> {
        let bad = |reason: &'static str, message: String| {
            Refusal::new("validate", StatusCode::BAD_REQUEST, reason, message).strike()
        };
        let bounds = Bounds {
            max_depth: self.limits.max_json_depth,
            max_elements: self.limits.max_tensor_elements,
        };
        let mut parsed = kserve::parse_request(body, json_len, bounds).map_err(|err| {
            let reason = match err {
                kserve::CodecError::TooDeep(_) => "json_too_deep",
                kserve::CodecError::TooLarge { .. } => "tensor_too_large",
                kserve::CodecError::Tensor { .. } => "bad_tensor",
                _ => "malformed_json",
            };
            bad(reason, err.to_string())
        })?;
        if let Some(defences) = defences {
            defences.decode_images(&mut parsed.inputs, &mut trace.defend, &self.metrics)?;
        }
        let meta = model.metadata();
        for spec in &meta.inputs {
            let tensor = parsed
                .inputs
                .iter()
                .find(|t| t.name == spec.name)
                .ok_or_else(|| bad("bad_tensor", format!("missing input `{}`", spec.name)))?;
            spec.check(tensor)
                .map_err(|err| bad("bad_tensor", err.to_string()))?;
        }
        if let Some(extra) = parsed
            .inputs
            .iter()
            .find(|t| !meta.inputs.iter().any(|s| s.name == t.name))
        {
            return Err(bad(
                "bad_tensor",
                format!("unknown input `{}`", rampart_infer::clip(&extra.name)),
            ));
        }
        if let Some(extra) = parsed
            .outputs
            .iter()
            .find(|o| !meta.outputs.iter().any(|s| &s.name == *o))
        {
            return Err(bad(
                "bad_tensor",
                format!("unknown output `{}`", rampart_infer::clip(extra)),
            ));
        }
        Ok(parsed)
    }
}

impl Gate {
    /// The defences before the model (see `stages::defend`): extraction penalties, schema, sanitisers, squeezes.
    fn stage_defend_inputs<'a>(
        &self,
        conn: &ConnInfo,
        defences: Option<&'a crate::stages::defend::Defences>,
        inputs: Vec<rampart_infer::Tensor>,
        trace: &mut Trace,
    ) -> Result<
        (
            Vec<rampart_infer::Tensor>,
            Option<crate::stages::defend::Pending<'a>>,
        ),
        Refusal,
    > {
        let Some(defences) = defences else {
            return Ok((inputs, None));
        };
        let (inputs, pending) = defences.before_infer(
            inputs,
            trace.principal.as_ref(),
            crate::stages::ban::client(conn.ip, self.limits.ipv6_client_prefix),
            &mut trace.defend,
            &self.metrics,
        )?;
        Ok((inputs, Some(pending)))
    }

    /// The defences after the model: detector, extraction, watermark, hardening. The flag is whether the client's
    /// list of wanted outputs still applies. A `heavy` request's stages run without holding up the other connections
    /// of this runtime thread. One principal's requests take turns at the extraction monitor, and only there: waiting
    /// for the turn yields the thread, and the other stages of the principal's requests go on meanwhile.
    async fn stage_defend_outputs(
        &self,
        pending: Option<crate::stages::defend::Pending<'_>>,
        outputs: Vec<rampart_infer::Tensor>,
        heavy: bool,
        trace: &mut Trace,
    ) -> Result<(Vec<rampart_infer::Tensor>, bool), Refusal> {
        use crate::stages::defend::Assessed;
        use crate::stages::infer::off_runtime_if;
        let Some(pending) = pending else {
            return Ok((outputs, true));
        };
        let assessed = off_runtime_if(heavy, || {
            pending.assess(
                outputs,
                &mut trace.defend,
                &mut trace.rate_headers,
                &self.metrics,
            )
        })?;
        let mut weighed = match assessed {
            Assessed::Answered(outputs, keep_wanted) => return Ok((outputs, keep_wanted)),
            Assessed::Weighed(weighed) => weighed,
        };
        {
            let _turn = weighed.extraction_turn().await;
            off_runtime_if(heavy, || weighed.observe(&mut trace.defend, &self.metrics))?;
        }
        off_runtime_if(heavy, || weighed.finish(&mut trace.defend, &self.metrics))
    }

    /// The anomaly stage, as the answer is recorded: alerts become audit records of their own.
    async fn stage_anomaly(&self, conn: &ConnInfo, trace: &Trace, status: StatusCode) {
        let (Some(Route::Infer(name)) | Some(Route::Version(VersionRoute::Infer(name, _)))) =
            &trace.route
        else {
            return;
        };
        let Some(defences) = self.models.get(name).and_then(|pool| pool.defences()) else {
            return;
        };
        let rows = trace.defend.as_ref().map_or(0, |d| d.rows);
        let failed = !status.is_success();
        for alert in defences.record_access(
            trace.principal.as_ref(),
            conn.ip,
            crate::stages::ban::client(conn.ip, self.limits.ipv6_client_prefix),
            rows,
            failed,
            &self.metrics,
        ) {
            self.audit
                .record(AuditRecord {
                    time: rfc3339(SystemTime::now()),
                    client_ip: conn.ip.to_string(),
                    principal: trace.principal.as_ref().map(|p| p.id.clone()),
                    action: "anomaly",
                    model: Some(name.chars().take(128).collect()),
                    version: None,
                    route: Route::Infer(String::new()).template(),
                    outcome: "alert",
                    stage: Some("anomaly"),
                    reason: Some(alert.metric.as_str()),
                    status: status.as_u16(),
                    latency_us: 0,
                    input_sha256: None,
                    defend: None,
                })
                .await;
        }
    }
}

pub(crate) fn unknown_model() -> Refusal {
    Refusal::new(
        "route",
        StatusCode::NOT_FOUND,
        "unknown_model",
        "no such model",
    )
    .strike()
}

/// Refuses a compressed body, an invalid `Content-Length` or one above `limit`.
pub(crate) fn check_body_headers(headers: &hyper::HeaderMap, limit: u64) -> Result<(), Refusal> {
    if let Some(encoding) = headers.get(CONTENT_ENCODING) {
        if !encoding.as_bytes().eq_ignore_ascii_case(b"identity") {
            return Err(Refusal::new(
                "body",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "compressed_body",
                "compressed request bodies are not accepted",
            )
            .strike());
        }
    }
    let declared = headers
        .get(CONTENT_LENGTH)
        .map(|v| v.to_str().ok().and_then(|s| s.parse::<u64>().ok()));
    match declared {
        Some(None) => Err(Refusal::new(
            "body",
            StatusCode::BAD_REQUEST,
            "bad_length",
            "invalid Content-Length",
        )
        .strike()),
        Some(Some(n)) if n > limit => Err(too_large()),
        _ => Ok(()),
    }
}

pub(crate) fn too_large() -> Refusal {
    Refusal::new(
        "body",
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        "the body is too large",
    )
    .strike()
}

async fn stage_infer(
    serving: &crate::stages::infer::Serving,
    inputs: Vec<rampart_infer::Tensor>,
    deadline: Instant,
) -> Result<Vec<rampart_infer::Tensor>, Refusal> {
    serving
        .run(inputs, deadline)
        .await
        .map_err(|err| match err {
            JobError::QueueFull => Refusal::new(
                "infer",
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "overloaded, retry later",
            )
            .retry_after(std::time::Duration::from_secs(1)),
            JobError::Deadline => Refusal::new(
                "infer",
                StatusCode::SERVICE_UNAVAILABLE,
                "deadline",
                "the request's deadline passed",
            )
            .retry_after(std::time::Duration::from_secs(1)),
            JobError::Closed => Refusal::new(
                "infer",
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "shutting down",
            ),
            JobError::Model(rampart_infer::InferError::InvalidInput(message)) => {
                Refusal::new("infer", StatusCode::BAD_REQUEST, "bad_tensor", message).strike()
            }
            JobError::Model(err @ rampart_infer::InferError::Upstream(_)) => {
                // The details (the upstream's address and answer) go to the operator's log, not to the client.
                tracing::error!(error = %err, "the upstream model server failed");
                Refusal::new(
                    "infer",
                    StatusCode::BAD_GATEWAY,
                    "upstream_failed",
                    "the model server behind the gateway failed",
                )
            }
            JobError::Model(err) => {
                tracing::error!(error = %err, "inference failed");
                Refusal::new(
                    "infer",
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "inference_failed",
                    "inference failed",
                )
            }
        })
}

/// The respond stage: the outputs asked for (all when none were named), as KServe v2 JSON.
fn respond_infer(
    model: &str,
    id: Option<&str>,
    outputs: &[rampart_infer::Tensor],
    wanted: &[String],
) -> Reply {
    let body = if wanted.is_empty() {
        kserve::encode_response(model, id, outputs)
    } else {
        let chosen: Vec<_> = outputs
            .iter()
            .filter(|t| wanted.contains(&t.name))
            .cloned()
            .collect();
        kserve::encode_response(model, id, &chosen)
    };
    json_reply(StatusCode::OK, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_own_bare_answers_are_taken_for_unparsed_requests() {
        let date = "date: Fri, 27 Nov 2026 12:00:00 GMT\r\n";
        let hyper = format!("HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\n{date}\r\n");
        let (status, answer) = unparsed_answer(hyper.as_bytes()).unwrap();
        assert_eq!(status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        let answer = String::from_utf8(answer).unwrap();
        let body = r#"{"error":"request headers too large"}"#;
        assert_eq!(
            answer,
            format!("HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{date}\r\n{body}", body.len())
        );
        for ours in [
            // Any answer of the gateway's own: a content type, a body.
            format!("HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 0\r\n{date}\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n{date}\r\n"),
            // Other statuses, a head not whole, a body after it, a second date.
            format!("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n{date}\r\n"),
            format!("HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n{date}\r\n"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}"),
            format!("HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n{date}\r\n{{}}"),
            format!("HTTP/1.1 400 Bad Request\r\n{date}{date}\r\n"),
            "HTTP/1.0 400 Bad Request\r\ncontent-length: 0\r\n\r\n".to_owned(),
            format!("HTTP/1.1 400 Bad Request\r\nx: {}\r\n\r\n", "a".repeat(300)),
        ] {
            assert!(unparsed_answer(ours.as_bytes()).is_none(), "{ours}");
        }
        assert!(unparsed_answer(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_some());
    }

    #[test]
    fn routes_parse_with_their_methods() {
        assert_eq!(
            Route::parse(&Method::GET, "/v2/health/live").unwrap(),
            Route::Live
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v2/models/d/infer").unwrap(),
            Route::Infer("d".into())
        );
        assert_eq!(
            Route::parse(&Method::POST, "/v2/models/d/versions/1/infer").unwrap(),
            Route::Version(VersionRoute::Infer("d".into(), "1".into()))
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v2/models/d/").unwrap(),
            Route::ModelMetadata("d".into())
        );
        assert_eq!(
            Route::parse(&Method::GET, "/v2/models/d/infer")
                .unwrap_err()
                .status,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            Route::parse(&Method::GET, "/etc/passwd")
                .unwrap_err()
                .status,
            StatusCode::NOT_FOUND
        );
    }
}
