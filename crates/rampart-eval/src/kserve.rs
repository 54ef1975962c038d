//! A blocking client for a live model that speaks the KServe v2 Open Inference Protocol (REST, JSON), such as
//! `rampart serve` or Triton, implementing `rampart_infer::Model` so that black-box attacks can target it.
//!
//! TLS is rustls with the Mozilla roots (no system library). The API key goes in `Authorization: Bearer` or
//! `X-API-Key`; it is never logged. A server that cannot be reached, refuses the key, or answers something that is
//! not a v2 response is an error naming the cause.

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
    pub fn connect(
        url: &str,
        key: Option<(KeyHeader, String)>,
        timeout: Duration,
    ) -> Result<RemoteModel, InferError> {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(InferError::Upstream(format!(
                "`{url}` is not an http:// or https:// URL"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .build()
            .into();
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
        let sent = match body {
            None => {
                let mut req = self.agent.get(&url);
                if let Some((header, key)) = &self.key {
                    req = match header {
                        KeyHeader::Bearer => req.header("Authorization", &format!("Bearer {key}")),
                        KeyHeader::XApiKey => req.header("X-API-Key", key),
                    };
                }
                req.call()
            }
            Some(body) => {
                let mut req = self.agent.post(&url);
                if let Some((header, key)) = &self.key {
                    req = match header {
                        KeyHeader::Bearer => req.header("Authorization", &format!("Bearer {key}")),
                        KeyHeader::XApiKey => req.header("X-API-Key", key),
                    };
                }
                req.send_json(body)
            }
        };
        let mut response = sent.map_err(|err| {
            InferError::Upstream(format!(
                "cannot reach `{url}`: {err}; check the URL and that the server is running"
            ))
        })?;
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
}

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
                let values: Vec<f64> = o
                    .data
                    .iter()
                    .filter_map(serde_json::Value::as_f64)
                    .collect();
                if values.len() != o.data.len() {
                    return Err(InferError::Upstream(format!(
                        "output `{}` holds values that are not numbers",
                        o.name
                    )));
                }
                let data = match o.datatype.as_str() {
                    "FP64" => TensorData::Fp64(values),
                    _ => TensorData::Fp32(values.into_iter().map(|v| v as f32).collect()),
                };
                Tensor::new(o.name, o.shape, data)
                    .map_err(|err| InferError::Upstream(err.to_string()))
            })
            .collect()
    }
}
