//! A blocking client for a live model that speaks the KServe v2 Open Inference Protocol (REST, JSON), such as
//! `rampart serve` or Triton, implementing `rampart_infer::Model` so that black-box attacks can target it.
//!
//! TLS is rustls with the Mozilla roots (no system library), or only the certificates of a PEM file (a gateway's
//! self-signed `tls/cert.pem`, a private CA). The API key goes in `Authorization: Bearer` or `X-API-Key`; it is
//! never logged. A server that cannot be reached, refuses the key, or answers something that is not a v2 response
//! is an error naming the cause. A rate limit's 429 (or a 503 with `Retry-After`) is waited out, within bounds.

use std::path::PathBuf;
use std::time::Duration;

use rampart_infer::{DataType, InferError, Model, ModelMetadata, Tensor, TensorData, TensorSpec};
use serde::{Deserialize, Serialize};

/// The largest response body read (a batch of scores is far smaller).
const MAX_BODY: u64 = 64 * 1024 * 1024;

/// How the API key is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyHeader {
    /// `Authorization: Bearer KEY`.
    Bearer,
    /// `X-API-Key: KEY`.
    XApiKey,
}

/// How to reach a remote model.
#[derive(Clone)]
pub struct Access {
    /// The API key and how it is sent.
    pub key: Option<(KeyHeader, String)>,
    /// The longest wait for one answer.
    pub timeout: Duration,
    /// A PEM file of the certificates to trust instead of the Mozilla roots.
    pub ca_cert: Option<PathBuf>,
}

impl Default for Access {
    fn default() -> Access {
        Access {
            key: None,
            timeout: Duration::from_secs(30),
            ca_cert: None,
        }
    }
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("Access")
            .field("key", &self.key.as_ref().map(|(header, _)| header))
            .field("timeout", &self.timeout)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// Rate-limit answers waited out in a row before giving up.
const MAX_RETRIES: u32 = 10;
/// The longest `Retry-After` waited for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// A remote KServe v2 model.
pub struct RemoteModel {
    agent: ureq::Agent,
    base: String,
    key: Option<(KeyHeader, String)>,
    metadata: ModelMetadata,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret: never printed.
        f.debug_struct("RemoteModel")
            .field("base", &self.base)
            .field("metadata", &self.metadata)
            .finish()
    }
}

#[derive(Deserialize)]
struct WireSpec {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

#[derive(Deserialize)]
struct WireMetadata {
    name: String,
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    platform: String,
    inputs: Vec<WireSpec>,
    outputs: Vec<WireSpec>,
}

#[derive(Serialize)]
struct WireInput<'a> {
    name: &'a str,
    shape: &'a [usize],
    datatype: &'static str,
    data: &'a [f32],
}

#[derive(Serialize)]
struct WireRequest<'a> {
    inputs: Vec<WireInput<'a>>,
}

#[derive(Deserialize)]
struct WireOutput {
    name: String,
    shape: Vec<usize>,
    datatype: String,
    data: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct WireResponse {
    outputs: Vec<WireOutput>,
}

fn spec(w: WireSpec) -> Result<TensorSpec, InferError> {
    let datatype = DataType::parse(&w.datatype).ok_or_else(|| {
        InferError::Upstream(format!(
            "tensor `{}` has the unknown type `{}`",
            w.name, w.datatype
        ))
    })?;
    Ok(TensorSpec {
        name: w.name,
        datatype,
        shape: w.shape,
    })
}

impl RemoteModel {
    /// Connects to `url` (the model's v2 address, such as `https://host/v2/models/digits`) and reads its metadata.
    pub fn connect(url: &str, access: &Access) -> Result<RemoteModel, InferError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InferError::Upstream(format!(
                "`{url}` is not an http:// or https:// URL"
            )));
        }
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(access.timeout))
            .http_status_as_error(false);
        if let Some(file) = &access.ca_cert {
            config = config.tls_config(
                ureq::tls::TlsConfig::builder()
                    .root_certs(ureq::tls::RootCerts::new_with_certs(&trusted(file)?))
                    .build(),
            );
        }
        let agent: ureq::Agent = config.build().into();
        let key = access.key.clone();
        let mut model = RemoteModel {
            agent,
            base: url.trim_end_matches('/').to_owned(),
            key,
            metadata: ModelMetadata {
                name: String::new(),
                versions: Vec::new(),
                platform: String::new(),
                inputs: Vec::new(),
                outputs: Vec::new(),
            },
        };
        let meta: WireMetadata = model.call(None)?;
        model.metadata = ModelMetadata {
            name: meta.name,
            versions: meta.versions,
            platform: if meta.platform.is_empty() {
                "kserve-v2".into()
            } else {
                meta.platform
            },
            inputs: meta
                .inputs
                .into_iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
            outputs: meta
                .outputs
                .into_iter()
                .map(spec)
                .collect::<Result<_, _>>()?,
        };
        Ok(model)
    }

    /// GET the metadata (no body) or POST an inference request.
    fn call<T: serde::de::DeserializeOwned>(
        &self,
        body: Option<&WireRequest<'_>>,
    ) -> Result<T, InferError> {
        let url = match body {
            None => self.base.clone(),
            Some(_) => format!("{}/infer", self.base),
        };
        let mut retries = 0;
        let mut response = loop {
            let response = self.send(&url, body).map_err(|err| {
                InferError::Upstream(format!(
                    "cannot reach `{url}`: {err}; check the URL and that the server is running"
                ))
            })?;
            match retry_after(&response) {
                Some(wait) if retries < MAX_RETRIES => {
                    retries += 1;
                    std::thread::sleep(wait);
                }
                _ => break response,
            }
        };
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(InferError::Upstream(format!(
                "`{url}` refused the request (HTTP {status}): the API key is missing or rejected; pass it with --api-key or RAMPART_API_KEY"
            )));
        }
        let text = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|err| {
                InferError::Upstream(format!("`{url}`: cannot read the answer: {err}"))
            })?;
        if !(200..300).contains(&status) {
            let detail: String = text.chars().take(200).collect();
            return Err(InferError::Upstream(format!(
                "`{url}` answered HTTP {status}: {detail}"
            )));
        }
        serde_json::from_str(&text).map_err(|err| {
            InferError::Upstream(format!(
                "`{url}` did not answer in the KServe v2 format: {err}"
            ))
        })
    }

    /// One request, with the API key.
    fn send(
        &self,
        url: &str,
        body: Option<&WireRequest<'_>>,
    ) -> Result<ureq::http::Response<ureq::Body>, ureq::Error> {
        match body {
            None => self.authorised(self.agent.get(url)).call(),
            Some(body) => self.authorised(self.agent.post(url)).send_json(body),
        }
    }

    /// The request with the API key.
    fn authorised<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match &self.key {
            Some((KeyHeader::Bearer, key)) => {
                request.header("Authorization", &format!("Bearer {key}"))
            }
            Some((KeyHeader::XApiKey, key)) => request.header("X-API-Key", key),
            None => request,
        }
    }
}

/// How long to wait before asking again: a 429, or a 503 that says when to come back (`Retry-After` in seconds,
/// at most a minute; a 429 without one waits a second).
fn retry_after(response: &ureq::http::Response<ureq::Body>) -> Option<Duration> {
    let status = response.status().as_u16();
    let after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    match (status, after) {
        (429, None) => Some(Duration::from_secs(1)),
        (429 | 503, Some(after)) if after <= MAX_RETRY_AFTER => {
            Some(after.max(Duration::from_millis(100)))
        }
        _ => None,
    }
}

/// The certificates of a PEM file, to trust instead of the Mozilla roots.
fn trusted(file: &std::path::Path) -> Result<Vec<ureq::tls::Certificate<'static>>, InferError> {
    let bad = |why: String| InferError::Upstream(format!("--ca-cert `{}`: {why}", file.display()));
    let mut pem = Vec::new();
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            std::fs::File::open(file).map_err(|e| bad(e.to_string()))?,
            MAX_PEM_BYTES + 1,
        ),
        &mut pem,
    )
    .map_err(|e| bad(e.to_string()))?;
    if pem.len() as u64 > MAX_PEM_BYTES {
        return Err(bad(format!("larger than {MAX_PEM_BYTES} bytes")));
    }
    let mut certs = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let ureq::tls::PemItem::Certificate(cert) = item.map_err(|e| bad(e.to_string()))? {
            certs.push(cert);
        }
    }
    if certs.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// The largest certificate file read.
const MAX_PEM_BYTES: u64 = 1 << 20;

impl Model for RemoteModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
        let mut wire = Vec::new();
        for t in inputs {
            let TensorData::Fp32(data) = &t.data else {
                return Err(InferError::InvalidInput(format!(
                    "tensor `{}`: only FP32 inputs are sent",
                    t.name
                )));
            };
            wire.push(WireInput {
                name: &t.name,
                shape: &t.shape,
                datatype: "FP32",
                data,
            });
        }
        let response: WireResponse = self.call(Some(&WireRequest { inputs: wire }))?;
        response
            .outputs
            .into_iter()
            .map(|o| {
                let not = |what: &str| {
                    InferError::Upstream(format!(
                        "output `{}` holds values that are not {what}",
                        o.name
                    ))
                };
                let data = match o.datatype.as_str() {
                    // Labels (a hardened answer) stay integers: they are not scores.
                    "INT8" | "INT16" | "INT32" | "INT64" | "UINT8" | "UINT16" | "UINT32"
                    | "UINT64" => TensorData::Int64(
                        o.data
                            .iter()
                            .map(serde_json::Value::as_i64)
                            .collect::<Option<_>>()
                            .ok_or_else(|| not("integers"))?,
                    ),
                    datatype => {
                        let values: Vec<f64> = o
                            .data
                            .iter()
                            .map(serde_json::Value::as_f64)
                            .collect::<Option<_>>()
                            .ok_or_else(|| not("numbers"))?;
                        if datatype == "FP64" {
                            TensorData::Fp64(values)
                        } else {
                            TensorData::Fp32(values.into_iter().map(|v| v as f32).collect())
                        }
                    }
                };
                Tensor::new(o.name, o.shape, data)
                    .map_err(|err| InferError::Upstream(err.to_string()))
            })
            .collect()
    }
}
