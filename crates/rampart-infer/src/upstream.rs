//! A model served by an upstream KServe v2 HTTP server (Triton, KServe, MLServer, another Rampart).
//!
//! Calls are synchronous, like every [`Model`]: the gateway runs them on its inference threads. Responses are bounded
//! in size and time, and parsed with the same bounded codec as client requests: the upstream is trusted no more than
//! a client.

use std::time::Duration;

use serde::Deserialize;

use crate::kserve::{self, Bounds};
use crate::{DataType, InferError, Model, ModelMetadata, Tensor, TensorSpec};

/// The largest upstream answer read, in bytes.
const MAX_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// A model behind a KServe v2 HTTP endpoint.
#[derive(Debug)]
pub struct UpstreamModel {
    metadata: ModelMetadata,
    agent: ureq::Agent,
    infer_url: String,
    bounds: Bounds,
}

#[derive(Deserialize)]
struct RawMetadata {
    #[serde(default)]
    versions: Vec<String>,
    #[serde(default)]
    platform: String,
    inputs: Vec<RawSpec>,
    outputs: Vec<RawSpec>,
}

#[derive(Deserialize)]
struct RawSpec {
    name: String,
    datatype: String,
    shape: Vec<i64>,
}

impl UpstreamModel {
    /// Connects to `base_url` (such as `http://127.0.0.1:8000`), reads the metadata of `upstream_name` and serves it
    /// to clients as `name`.
    pub fn connect(
        name: &str,
        base_url: &str,
        upstream_name: &str,
        timeout: Duration,
    ) -> Result<UpstreamModel, InferError> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        let base = base_url.trim_end_matches('/');
        let meta_url = format!("{base}/v2/models/{upstream_name}");
        let load = |reason: String| InferError::Load {
            name: name.to_owned(),
            reason,
        };
        let body =
            fetch(agent.get(&meta_url).call(), &meta_url).map_err(|e| load(e.to_string()))?;
        let raw: RawMetadata = serde_json::from_slice(&body).map_err(|err| {
            load(format!(
                "`{meta_url}` answered with invalid metadata: {err}"
            ))
        })?;
        let specs = |raw: Vec<RawSpec>| -> Result<Vec<TensorSpec>, InferError> {
            raw.into_iter()
                .map(|s| {
                    let datatype = DataType::parse(&s.datatype).ok_or_else(|| {
                        load(format!(
                            "tensor `{}` has the unknown datatype `{}`",
                            s.name, s.datatype
                        ))
                    })?;
                    Ok(TensorSpec {
                        name: s.name,
                        datatype,
                        shape: s.shape,
                    })
                })
                .collect()
        };
        let metadata = ModelMetadata {
            name: name.to_owned(),
            versions: raw.versions,
            platform: if raw.platform.is_empty() {
                "kserve-v2".to_owned()
            } else {
                raw.platform
            },
            inputs: specs(raw.inputs)?,
            outputs: specs(raw.outputs)?,
        };
        Ok(UpstreamModel {
            metadata,
            agent,
            infer_url: format!("{base}/v2/models/{upstream_name}/infer"),
            bounds: Bounds {
                max_depth: 64,
                max_elements: 1 << 26,
            },
        })
    }
}

fn fetch(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    url: &str,
) -> Result<Vec<u8>, InferError> {
    let mut response = result.map_err(|err| InferError::Upstream(format!("`{url}`: {err}")))?;
    let status = response.status();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_RESPONSE_BYTES)
        .read_to_vec()
        .map_err(|err| InferError::Upstream(format!("`{url}`: {err}")))?;
    if !status.is_success() {
        let detail: String = String::from_utf8_lossy(&body).chars().take(200).collect();
        return Err(InferError::Upstream(format!(
            "`{url}` answered {status}: {detail}"
        )));
    }
    Ok(body)
}

impl Model for UpstreamModel {
    fn metadata(&self) -> &ModelMetadata {
        &self.metadata
    }

    fn infer(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, InferError> {
        for spec in &self.metadata.inputs {
            let tensor = inputs.iter().find(|t| t.name == spec.name).ok_or_else(|| {
                InferError::InvalidInput(format!("missing input `{}`", spec.name))
            })?;
            spec.check(tensor)?;
        }
        let body = serde_json::json!({ "inputs": kserve::tensors_json(inputs) }).to_string();
        let response = self
            .agent
            .post(&self.infer_url)
            .header("content-type", "application/json")
            .send(body.as_bytes());
        let bytes = fetch(response, &self.infer_url)?;
        kserve::parse_response(&bytes, self.bounds)
            .map_err(|err| InferError::Upstream(err.to_string()))
    }
}
