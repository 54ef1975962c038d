//! The stages before the model: images (inside validate), extraction penalties, schema, sanitisers, and the
//! squeezed copies the detector needs, appended to the model's batch.

use std::net::IpAddr;

use hyper::StatusCode;
use rampart_auth::Principal;
use rampart_defend::image_input;
use rampart_infer::{Tensor, TensorData};

use super::{Defences, DefendAudit, Pending};
use crate::metrics::Metrics;
use crate::pipeline::Refusal;

impl Defences {
    /// The images stage (run inside validate): every `BYTES` tensor named as the defended input becomes `FP32` rows.
    pub fn decode_images(
        &self,
        inputs: &mut [Tensor],
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(), Refusal> {
        let Some(limits) = &self.images else {
            return Ok(());
        };
        for tensor in inputs.iter_mut() {
            if tensor.name != self.input || !matches!(tensor.data, TensorData::Bytes(_)) {
                continue;
            }
            let decoded = image_input::decode_images(tensor, self.shape, limits, &self.input)
                .map_err(|e| {
                    self.count(metrics, "images", "refused");
                    Refusal::new(
                        "images",
                        StatusCode::BAD_REQUEST,
                        "bad_image",
                        e.to_string(),
                    )
                })?;
            audit.get_or_insert_with(DefendAudit::default).images = decoded.shape.first().copied();
            self.count(metrics, "images", "decoded");
            *tensor = decoded;
        }
        Ok(())
    }

    /// The input stages: extraction penalties, schema, sanitisers, then the squeezed copies the detector needs
    /// appended to the batch. Returns the inputs for the model. `client` is the address an unauthenticated client
    /// is known by ([`crate::stages::ban::client`]).
    pub fn before_infer<'a>(
        &'a self,
        mut inputs: Vec<Tensor>,
        principal: Option<&Principal>,
        client: IpAddr,
        audit: &mut Option<DefendAudit>,
        metrics: &Metrics,
    ) -> Result<(Vec<Tensor>, Pending<'a>), Refusal> {
        let (key, roles) = match principal {
            Some(p) => (p.id.clone(), p.roles.clone()),
            None => (format!("ip:{client}"), Vec::new()),
        };
        let audit = audit.get_or_insert_with(DefendAudit::default);
        self.stage_penalties(&key, metrics)?;
        let tensor = inputs
            .iter_mut()
            .find(|t| t.name == self.input)
            .ok_or_else(|| {
                Refusal::new(
                    "validate",
                    StatusCode::BAD_REQUEST,
                    "bad_tensor",
                    format!("missing input `{}`", self.input),
                )
            })?;
        if let Some(schema) = &self.schema {
            if let Err(e) = schema.check(tensor) {
                self.count(metrics, "schema", "refused");
                // Not answered, but evidence all the same: noise probing looks like this.
                self.observe_refused(&key, audit, metrics)?;
                return Err(Refusal::new(
                    "schema",
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "outside_profile",
                    e.to_string(),
                ));
            }
        }
        let TensorData::Fp32(values) = &mut tensor.data else {
            return Err(Refusal::new(
                "validate",
                StatusCode::BAD_REQUEST,
                "bad_tensor",
                format!("input `{}` must be FP32", self.input),
            ));
        };
        if values.is_empty() || values.len() % self.width != 0 {
            return Err(Refusal::new(
                "validate",
                StatusCode::BAD_REQUEST,
                "bad_tensor",
                format!(
                    "input `{}` must be rows of {} values",
                    self.input, self.width
                ),
            ));
        }
        let rows = values.len() / self.width;
        audit.rows = rows;
        // The query as the client sent it: what extraction evidence and the watermark's keyed choice are about
        // (sanitised values would all leave a quantised profile's lattice, and the suspect's queries are the raw ones).
        let sent = (!self.sanitisers.is_empty()
            && (self.extraction.is_some() || self.watermark.is_some()))
        .then(|| values.clone());
        for step in &self.sanitisers {
            if let Err(err) = step.apply_batch(values, self.shape) {
                self.undecided("sanitise", &err, audit, metrics)?;
            }
        }
        audit.sanitised = !self.sanitisers.is_empty();
        let kept = values.clone();
        if let Some(detector) = &self.detector {
            match detector.squeezed(&kept) {
                Ok(squeezed) => {
                    values.extend_from_slice(&squeezed);
                    // The batch grows; the per-row dimensions ([N, 64] or [N, 1, 8, 8]) stay.
                    if let Some(batch) = tensor.shape.first_mut() {
                        *batch = values.len() / self.width;
                    }
                }
                Err(err) => self.undecided("detector", &err, audit, metrics)?,
            }
        }
        Ok((
            inputs,
            Pending {
                defences: self,
                principal: key,
                roles,
                rows,
                values: kept,
                sent,
            },
        ))
    }
}
