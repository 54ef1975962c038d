//! `PUT /v2/models/{name}/versions/{v}`: an upload unpacked into a staging directory as it is received, gated,
//! sealed and stored, or refused with nothing left behind (see the module above).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Body;
use hyper::{Request, StatusCode};
use rampart_deploy::Error as DeployError;
use sha2::{Digest, Sha256};

use super::{json_value, refusal};
use crate::pipeline::{Refusal, Reply, Trace};
use crate::Gate;

impl Gate {
    /// `PUT /v2/models/{name}/versions/{v}`: receive, unpack, gate, seal, store.
    pub(crate) async fn push<B>(
        &self,
        model: &str,
        version: &str,
        request: Request<B>,
        trace: &mut Trace,
    ) -> Result<Reply, Refusal>
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let versions = Arc::clone(self.versions()?);
        let Some(pusher) = trace.principal.as_ref().map(|p| p.id.clone()) else {
            return Err(refusal(
                StatusCode::FORBIDDEN,
                "unauthenticated_push",
                "pushing a model needs an authenticated principal",
            ));
        };
        let limit = versions.config.max_push_bytes;
        crate::pipeline::check_body_headers(request.headers(), limit).map_err(|refusal| {
            if refusal.status == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(limit)
            } else {
                refusal
            }
        })?;
        if versions.registry.exists(model, version) {
            // Refused before the body is read, so there is no upload digest to record: the entry says so
            // explicitly (`upload_sha256: null`, `reason: exists_before_upload`) with the size the client
            // declared. Reading and hashing a body that is refused anyway would let any publisher make the
            // gateway receive up to `max_push_bytes` per request for nothing.
            let mut record = rampart_log::Record::new("registry.push", &pusher)
                .subject("model", model)
                .subject("version", version)
                .outcome("exists");
            record
                .details
                .insert("upload_sha256".into(), serde_json::Value::Null);
            record
                .details
                .insert("reason".into(), "exists_before_upload".into());
            let declared = request
                .headers()
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            record
                .details
                .insert("declared_bytes".into(), declared.into());
            if let Err(err) = versions.registry.audit(&record) {
                tracing::error!(error = %err, "cannot record a refused push in the audit log");
            }
            return Err(exists(model, version));
        }
        let staging = staging_dir(versions.registry.dir())?;
        let unpacked = staging.path().join("model");
        let deadline = Instant::now() + Duration::from_secs(versions.config.push_timeout_secs);
        // The body is unpacked as it arrives (never stored as an archive), so staging holds about the upload's
        // size once, not the archive and its unpacked copy. The unpacking task owns the staging directory until
        // it ends, so the directory outlives every write into it even if this request is dropped.
        let (frames, body_reader) = tokio::sync::mpsc::channel(FRAMES_IN_FLIGHT);
        let unpacking = {
            let versions = Arc::clone(&versions);
            let unpacked = unpacked.clone();
            tokio::task::spawn_blocking(move || {
                let result = std::fs::create_dir(&unpacked)
                    .map_err(|e| DeployError::BadUpload(format!("cannot stage the upload: {e}")))
                    .and_then(|()| {
                        rampart_deploy::upload::unpack(
                            std::io::BufReader::with_capacity(64 * 1024, Frames::new(body_reader)),
                            &unpacked,
                            &versions.gate.policy,
                        )
                    });
                (staging, result)
            })
        };
        let received = receive(request.into_body(), frames, limit, deadline).await;
        let (staging, unpack_result) = unpacking.await.map_err(|err| {
            tracing::error!(error = %err, "the upload's unpacking failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "the push failed; nothing was stored",
            )
        })?;
        let (digest, bytes) = received?;
        trace.input_sha256 = Some(digest.clone());
        tracing::info!(model, version, bytes, principal = %pusher, "upload received; running the deployment gate");
        let (model, version) = (model.to_owned(), version.to_owned());
        // The gate (hashing, scanning) and sealing are blocking work.
        let pushed = tokio::task::spawn_blocking(move || {
            let result = unpack_result.and_then(|_| {
                versions.registry.push_upload(
                    &unpacked,
                    &model,
                    &version,
                    &pusher,
                    &versions.gate,
                    Some(&digest),
                )
            });
            if let Err(DeployError::BadUpload(reason)) = &result {
                let mut record = rampart_log::Record::new("registry.push", &pusher)
                    .subject("model", model.as_str())
                    .subject("version", version.as_str())
                    .subject("upload_sha256", digest.as_str())
                    .outcome("refused");
                record
                    .details
                    .insert("reason".into(), reason.clone().into());
                versions.registry.audit(&record)?;
            }
            // The staging directory (upload and plaintext) goes whatever the outcome.
            drop(staging);
            result
        })
        .await
        .map_err(|err| {
            tracing::error!(error = %err, "the push's blocking work failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "the push failed; nothing was stored",
            )
        })?;
        match pushed {
            Ok(info) => Ok(json_value(
                StatusCode::CREATED,
                &serde_json::to_value(&info).unwrap_or_default(),
            )),
            Err(err) => Err(push_refusal(&err)),
        }
    }
}

fn too_large(limit: u64) -> Refusal {
    refusal(
        StatusCode::PAYLOAD_TOO_LARGE,
        "upload_too_large",
        format!("the upload is larger than the gateway's registry.max_push_bytes = {limit}"),
    )
}

fn exists(model: &str, version: &str) -> Refusal {
    refusal(
        StatusCode::CONFLICT,
        "version_exists",
        format!("`{model}` version `{version}` already exists; versions are immutable, push a new version"),
    )
}

/// A private (0700) staging directory inside the registry, removed when dropped.
fn staging_dir(state_dir: &Path) -> Result<tempfile::TempDir, Refusal> {
    let parent: PathBuf = state_dir.join("registry");
    std::fs::create_dir_all(&parent)
        .and_then(|()| {
            tempfile::Builder::new()
                .prefix(".upload-")
                .tempdir_in(&parent)
        })
        .map_err(|err| {
            tracing::error!(error = %err, dir = %parent.display(), "cannot stage an upload");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "cannot stage the upload",
            )
        })
}

/// Upload frames queued between the receiving task and the unpacker.
const FRAMES_IN_FLIGHT: usize = 16;

/// The upload's frames as a blocking reader, for the unpacker; it ends when the receiving side stops.
struct Frames {
    frames: tokio::sync::mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl Frames {
    fn new(frames: tokio::sync::mpsc::Receiver<Bytes>) -> Frames {
        Frames {
            frames,
            current: Bytes::new(),
        }
    }
}

impl std::io::Read for Frames {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.frames.blocking_recv() {
                Some(frame) => self.current = frame,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        let data = self.current.split_to(n);
        if let Some(to) = buf.get_mut(..n) {
            to.copy_from_slice(&data);
        }
        Ok(n)
    }
}

/// Receives the body, at most `limit` bytes, by `deadline`, handing each frame to the unpacker; returns its hex
/// SHA-256 and size. Once the unpacker stops (the archive ended, or it refused it), the rest of the body is
/// still read and hashed (not kept), so that the audit's digest is always of the whole upload.
async fn receive<B>(
    body: B,
    frames: tokio::sync::mpsc::Sender<Bytes>,
    limit: u64,
    deadline: Instant,
) -> Result<(String, u64), Refusal>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let timeout = || {
        refusal(
            StatusCode::REQUEST_TIMEOUT,
            "upload_timeout",
            "the upload came too slowly (registry.push_timeout_secs)",
        )
    };
    let mut frames = Some(frames);
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut body = std::pin::pin!(body);
    loop {
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => return Err(timeout()),
            Ok(None) => break,
            Ok(Some(Err(_))) => {
                return Err(refusal(
                    StatusCode::BAD_REQUEST,
                    "body_error",
                    "the upload was cut off",
                ))
            }
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        size = size.saturating_add(data.len() as u64);
        if size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&data);
        if let Some(to) = &frames {
            match tokio::time::timeout_at(deadline.into(), to.send(data)).await {
                Err(_) => return Err(timeout()),
                Ok(Ok(())) => {}
                // The unpacker has stopped: keep hashing what is left.
                Ok(Err(_)) => frames = None,
            }
        }
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// A refused push as an answer: 422 with the first reasons, 409 for an existing version, 400 for a bad name.
fn push_refusal(err: &DeployError) -> Refusal {
    match err {
        DeployError::BadUpload(reason) => refusal(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_upload",
            short(&format!("bad upload: {reason}")),
        ),
        DeployError::Refused(report) => {
            let reasons: Vec<String> = report
                .checks
                .iter()
                .filter(|c| !c.passed)
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.name,
                        c.problems.first().map_or("", |p| p.as_str())
                    )
                })
                .collect();
            refusal(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refused_by_gate",
                short(&format!(
                    "refused by the deployment gate: {}",
                    reasons.join(" | ")
                )),
            )
        }
        DeployError::Exists(message) => {
            refusal(StatusCode::CONFLICT, "version_exists", message.clone())
        }
        DeployError::Name { .. } => refusal(StatusCode::BAD_REQUEST, "bad_name", err.to_string()),
        other => {
            tracing::error!(error = %other, "push failed");
            refusal(
                StatusCode::INTERNAL_SERVER_ERROR,
                "push_failed",
                "the push failed; nothing was stored",
            )
        }
    }
}

/// At most 400 characters.
fn short(text: &str) -> String {
    let mut out: String = text.chars().take(400).collect();
    if out.len() < text.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_reasons_stay_short() {
        assert_eq!(short("abc"), "abc");
        assert_eq!(short(&"x".repeat(1000)).chars().count(), 401);
    }
}
