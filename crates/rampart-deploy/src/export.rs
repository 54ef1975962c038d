//! Export control. Taking a model's plaintext out of the registry is refused by default. It takes:
//!
//! 1. a request by the principal who wants it ([`ExportControl::request`]);
//! 2. an approval by a *different* principal holding the `approver` role, with a fresh TOTP code from their
//!    enrolled authenticator ([`ExportControl::approve`]); a code is accepted once, ever (the last step used is
//!    stored per approver before the approval is granted);
//! 3. the export itself ([`ExportControl::export`]) by the requester, within the grant's lifetime, once.
//!
//! Requests, approvals, refusals and exports are all appended to the audit log; if the log cannot take the
//! record, the action does not happen. Here principals are asserted by the caller (the local CLI trusts whoever
//! can write the state directory); the gateway exposes the same operations with authenticated principals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::state::{check_name, now, random_hex, read_json, write_json};
use crate::totp;

/// The role that may approve exports.
pub const APPROVER: &str = "approver";
/// How long a pending request stays open.
pub const REQUEST_TTL: u64 = 24 * 3600;
/// How long an approval lets the requester export, by default.
pub const GRANT_TTL: u64 = 15 * 60;

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestStatus {
    Pending,
    Approved,
    Used,
}

/// One export request and its grant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub id: String,
    pub model: String,
    pub version: String,
    pub requester: String,
    pub status: RequestStatus,
    /// Unix seconds.
    pub requested_at: u64,
    pub approver: Option<String>,
    pub approved_at: Option<u64>,
    /// The request (while pending) or the grant (once approved) is void after this.
    pub expires_at: u64,
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct MfaRecord {
    /// Base32 TOTP secret.
    secret: String,
    /// The last time step accepted: no code at or before it is accepted again.
    last_step: Option<u64>,
    enrolled_at: u64,
}

/// What `mfa enroll` hands out, once.
#[derive(Debug)]
pub struct Enrollment {
    /// Base32 secret.
    pub secret: String,
    /// `otpauth://` URI for authenticator apps.
    pub uri: String,
}

/// Export control over a registry.
#[derive(Debug)]
pub struct ExportControl<'a> {
    registry: &'a Registry,
    /// Lifetime of a grant in seconds.
    pub grant_ttl: u64,
}

impl<'a> ExportControl<'a> {
    /// Export control with the default grant lifetime.
    pub fn new(registry: &'a Registry) -> Self {
        ExportControl {
            registry,
            grant_ttl: GRANT_TTL,
        }
    }

    fn mfa_path(&self, principal: &str) -> PathBuf {
        self.registry
            .dir()
            .join("mfa")
            .join(format!("{principal}.json"))
    }

    fn roles_path(&self) -> PathBuf {
        self.registry.dir().join("roles.json")
    }

    fn request_path(&self, id: &str) -> PathBuf {
        self.registry
            .dir()
            .join("exports")
            .join(format!("{id}.json"))
    }

    /// The roles of every principal.
    pub fn roles(&self) -> Result<BTreeMap<String, Vec<String>>> {
        Ok(read_json(&self.roles_path())?.unwrap_or_default())
    }

    /// Enrols `principal` for TOTP with a fresh secret and gives it `roles` (added to any it has). Refuses to
    /// replace an existing secret unless `replace`.
    pub fn enroll(
        &self,
        principal: &str,
        roles: &[String],
        replace: bool,
        actor: &str,
    ) -> Result<Enrollment> {
        check_name("principal", principal)?;
        for role in roles {
            check_name("role", role)?;
        }
        let _lock = self.registry.lock()?;
        let path = self.mfa_path(principal);
        if path.exists() && !replace {
            return Err(Error::Exists(format!(
                "`{principal}` is already enrolled; pass --replace to issue a new secret (the old one stops working)"
            )));
        }
        let mut secret = [0u8; totp::SECRET_BYTES];
        getrandom::getrandom(&mut secret).map_err(|e| Error::Random(e.to_string()))?;
        let mut record =
            rampart_log::Record::new("mfa.enroll", actor).subject("principal", principal);
        if !roles.is_empty() {
            record.details.insert("roles".into(), roles.to_vec().into());
        }
        self.registry.audit(&record)?;
        // A replaced secret keeps the last step: old codes stay unusable.
        let last_step = read_json::<MfaRecord>(&path)
            .ok()
            .flatten()
            .and_then(|r| r.last_step);
        write_json(
            &path,
            &MfaRecord {
                secret: totp::base32_encode(&secret),
                last_step,
                enrolled_at: now(),
            },
            true,
        )?;
        if !roles.is_empty() {
            let mut all = self.roles()?;
            let entry = all.entry(principal.to_owned()).or_default();
            for role in roles {
                if !entry.contains(role) {
                    entry.push(role.clone());
                }
            }
            write_json(&self.roles_path(), &all, false)?;
        }
        Ok(Enrollment {
            secret: totp::base32_encode(&secret),
            uri: totp::otpauth_uri("Rampart", principal, &secret),
        })
    }

    /// Records a request by `requester` to export `model`/`version`.
    pub fn request(&self, model: &str, version: &str, requester: &str) -> Result<ExportRequest> {
        check_name("principal", requester)?;
        let info = self.registry.info(model, version)?;
        let _lock = self.registry.lock()?;
        let time = now();
        let request = ExportRequest {
            id: random_hex(8)?,
            model: info.model,
            version: info.version,
            requester: requester.to_owned(),
            status: RequestStatus::Pending,
            requested_at: time,
            approver: None,
            approved_at: None,
            expires_at: time + REQUEST_TTL,
        };
        self.registry.audit(
            &rampart_log::Record::new("export.request", requester)
                .subject("model", model)
                .subject("version", version)
                .subject("request", request.id.clone())
                .subject("root_digest", info.root_digest),
        )?;
        write_json(&self.request_path(&request.id), &request, false)?;
        Ok(request)
    }

    /// A request by id.
    pub fn get(&self, id: &str) -> Result<ExportRequest> {
        check_name("request id", id)?;
        read_json(&self.request_path(id))?
            .ok_or_else(|| Error::NotFound(format!("no export request `{id}`")))
    }

    fn deny(&self, action: &str, actor: &str, id: &str, reason: String) -> Result<Error> {
        let mut record = rampart_log::Record::new(action, actor)
            .subject("request", id)
            .outcome("denied");
        record
            .details
            .insert("reason".into(), reason.clone().into());
        self.registry.audit(&record)?;
        tracing::info!(action, actor, request = id, %reason, "export control denied");
        Ok(Error::Denied(reason))
    }

    /// Approves request `id` as `approver` with a TOTP code; grants one export for `grant_ttl` seconds.
    pub fn approve(&self, id: &str, approver: &str, code: &str) -> Result<ExportRequest> {
        self.approve_at(id, approver, code, now())
    }

    /// [`Self::approve`] at a given Unix time.
    pub fn approve_at(
        &self,
        id: &str,
        approver: &str,
        code: &str,
        time: u64,
    ) -> Result<ExportRequest> {
        check_name("principal", approver)?;
        let _lock = self.registry.lock()?;
        let mut request = self.get(id)?;
        let action = "export.approve";
        if request.requester == approver {
            return Err(self.deny(
                action,
                approver,
                id,
                format!("`{approver}` cannot approve its own request"),
            )?);
        }
        let roles = self.roles()?;
        if !roles
            .get(approver)
            .is_some_and(|r| r.iter().any(|r| r == APPROVER))
        {
            return Err(self.deny(
                action,
                approver,
                id,
                format!("`{approver}` does not have the `{APPROVER}` role"),
            )?);
        }
        if request.status != RequestStatus::Pending || request.expires_at <= time {
            let state = if request.status == RequestStatus::Pending {
                "expired"
            } else {
                "already approved"
            };
            return Err(self.deny(action, approver, id, format!("request `{id}` is {state}"))?);
        }
        let path = self.mfa_path(approver);
        let Some(mut mfa) = read_json::<MfaRecord>(&path)? else {
            return Err(self.deny(
                action,
                approver,
                id,
                format!("`{approver}` has no TOTP enrolled; run `rampart mfa enroll`"),
            )?);
        };
        let secret = totp::base32_decode(&mfa.secret).ok_or_else(|| Error::Corrupt {
            path: path.clone(),
            reason: "the secret is not base32".into(),
        })?;
        let step = match totp::verify(&secret, code, time, mfa.last_step) {
            Ok(step) => step,
            Err(e) => return Err(self.deny(action, approver, id, e.to_string())?),
        };
        // Burn the step first: even if what follows fails, the code is spent.
        mfa.last_step = Some(step);
        write_json(&path, &mfa, true)?;
        request.status = RequestStatus::Approved;
        request.approver = Some(approver.to_owned());
        request.approved_at = Some(time);
        request.expires_at = time + self.grant_ttl;
        self.registry.audit(
            &rampart_log::Record::new(action, approver)
                .subject("request", id)
                .subject("requester", request.requester.clone())
                .subject("model", request.model.clone())
                .subject("version", request.version.clone()),
        )?;
        write_json(&self.request_path(id), &request, false)?;
        Ok(request)
    }

    /// Exports `model`/`version` to `out` for `requester`, consuming one live grant. Denied without one.
    pub fn export(
        &self,
        model: &str,
        version: &str,
        requester: &str,
        out: &Path,
    ) -> Result<ExportRequest> {
        self.export_at(model, version, requester, out, now())
    }

    /// [`Self::export`] at a given Unix time.
    pub fn export_at(
        &self,
        model: &str,
        version: &str,
        requester: &str,
        out: &Path,
        time: u64,
    ) -> Result<ExportRequest> {
        check_name("principal", requester)?;
        check_name("model name", model)?;
        check_name("version", version)?;
        if out.exists() {
            return Err(Error::Exists(format!(
                "`{}` already exists; choose a new output path",
                out.display()
            )));
        }
        let _lock = self.registry.lock()?;
        let grant =
            self.consume_grant(model, version, requester, &out.display().to_string(), time)?;
        self.registry.unseal_to(model, version, out)?;
        Ok(grant)
    }

    /// Consumes one live grant of `model`/`version` for `requester` (recorded, with `destination`, before it is
    /// spent), for an export made by the caller: the gateway sends the model over TLS instead of writing it to
    /// disk. Denied (and recorded) without one.
    pub fn take_grant(
        &self,
        model: &str,
        version: &str,
        requester: &str,
        destination: &str,
    ) -> Result<ExportRequest> {
        check_name("principal", requester)?;
        check_name("model name", model)?;
        check_name("version", version)?;
        let _lock = self.registry.lock()?;
        self.consume_grant(model, version, requester, destination, now())
    }

    fn consume_grant(
        &self,
        model: &str,
        version: &str,
        requester: &str,
        destination: &str,
        time: u64,
    ) -> Result<ExportRequest> {
        let mut grant = None;
        for id in list_ids(&self.registry.dir().join("exports"))? {
            let request = self.get(&id)?;
            if request.status == RequestStatus::Approved
                && request.requester == requester
                && request.model == model
                && request.version == version
                && request.expires_at > time
            {
                grant = Some(request);
                break;
            }
        }
        let subject = format!("{model}@{version}");
        let Some(mut grant) = grant else {
            return Err(self.deny(
                "export",
                requester,
                "-",
                format!("no live approved export of `{subject}` for `{requester}`; request one and have an approver approve it"),
            )?);
        };
        grant.status = RequestStatus::Used;
        self.registry.audit(
            &rampart_log::Record::new("export", requester)
                .subject("request", grant.id.clone())
                .subject("model", model)
                .subject("version", version)
                .subject("output", destination),
        )?;
        write_json(&self.request_path(&grant.id), &grant, false)?;
        Ok(grant)
    }
}

fn list_ids(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir)(e)),
    };
    let mut ids = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", dir))?;
        if let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.strip_suffix(".json"))
        {
            if check_name("request id", id).is_ok() {
                ids.push(id.to_owned());
            }
        }
    }
    ids.sort();
    Ok(ids)
}
