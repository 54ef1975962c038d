//! The admin listener's routes: `/metrics` (Prometheus text) and `/healthz`. Plain HTTP, on loopback by default.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use crate::Gate;

/// Answers one admin request.
pub fn handle<B>(gate: &Gate, request: &Request<B>) -> Response<Full<Bytes>> {
    if !matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD) {
        let mut response = Response::new(Full::new(Bytes::from_static(b"method not allowed\n")));
        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        let headers = response.headers_mut();
        headers.insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return response;
    }
    let (status, content_type, body) = match request.uri().path() {
        "/metrics" => {
            gate.metrics
                .bans_active
                .set(i64::try_from(gate.bans.active()).unwrap_or(i64::MAX));
            (
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                gate.metrics.encode(),
            )
        }
        "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
        _ => (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found\n".to_owned(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
