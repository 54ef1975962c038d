//! The model registry: versions stored signed and sealed under a state directory.
//!
//! ```text
//! STATE/
//!   keys/registry.agekey          the registry's age X25519 identity (0600), made on first push
//!   audit/                        the tamper-evident log (rampart-log) of every action below
//!   registry/MODEL/VERSION/
//!     model.age                   the model directory as a sealed tar stream (signature included)
//!     model.sig                   a copy of its signature, readable without the key
//!     meta.json                   who pushed it, when, the signed root digest and signer
//!   mfa/PRINCIPAL.json            TOTP secrets (0600) and the last step used   (see `export`)
//!   roles.json                    principal -> roles                            (see `export`)
//!   exports/ID.json               export requests and grants                    (see `export`)
//! ```
//!
//! A push runs the full gate, seals, then unseals the sealed copy in memory and gates it again before the version
//! appears (an atomic rename): what is stored is exactly what passed. Versions are immutable. A load unseals in
//! memory only and gates the plaintext before returning it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use age::secrecy::ExposeSecret;
use rampart_seal::{MemoryFile, Recipients, SealTo};

use crate::config::GateConfig;
use crate::error::{Error, Result};
use crate::gate::{check, check_files};
use crate::state::{check_name, read_json, write_atomic, write_json, StateLock};

/// What the registry knows about one stored version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VersionInfo {
    pub model: String,
    pub version: String,
    pub pushed_by: String,
    /// RFC 3339 UTC.
    pub pushed_at: String,
    /// `sha256:` root digest of the signed manifest.
    pub root_digest: String,
    /// The trusted key that signed it.
    pub signer: String,
    /// Size of the sealed artifact.
    pub sealed_bytes: u64,
}

/// A registry over a state directory.
#[derive(Debug)]
pub struct Registry {
    dir: PathBuf,
    log: Option<Arc<rampart_log::Log>>,
}

impl Registry {
    /// A registry in `dir` that opens (or creates) its own audit log in `dir/audit` for each action.
    pub fn open(dir: &Path) -> Registry {
        Registry {
            dir: dir.to_owned(),
            log: None,
        }
    }

    /// A registry recording into an already open log (the gateway's).
    pub fn with_log(dir: &Path, log: Arc<rampart_log::Log>) -> Registry {
        Registry {
            dir: dir.to_owned(),
            log: Some(log),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends `record` to the audit log; an error means the action must not complete.
    pub fn audit(&self, record: &rampart_log::Record) -> Result<()> {
        if let Some(log) = &self.log {
            log.append_json(record)?;
            return Ok(());
        }
        let dir = self.dir.join("audit");
        let log = if dir.join("checkpoint").exists() {
            rampart_log::Log::open(&dir, rampart_log::Options::default())?
        } else {
            rampart_log::Log::create(
                &dir,
                &rampart_log::random_origin()?,
                rampart_log::Options::default(),
            )?
        };
        log.append_json(record)?;
        log.close()?;
        Ok(())
    }

    pub(crate) fn lock(&self) -> Result<StateLock> {
        StateLock::acquire(&self.dir)
    }

    fn version_dir(&self, model: &str, version: &str) -> PathBuf {
        self.dir.join("registry").join(model).join(version)
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("keys").join("registry.agekey")
    }

    /// The registry's identity, created (0600) on first use.
    fn identity(&self) -> Result<age::x25519::Identity> {
        let path = self.key_path();
        if path.exists() {
            let bytes = crate::state::read_limited(&path, 64 * 1024)?;
            let text = String::from_utf8(bytes).map_err(|_| Error::Corrupt {
                path: path.clone(),
                reason: "not UTF-8".into(),
            })?;
            let line = text
                .lines()
                .find(|l| l.starts_with("AGE-SECRET-KEY-"))
                .unwrap_or_default();
            return line.trim().parse().map_err(|e: &str| Error::Corrupt {
                path,
                reason: e.to_owned(),
            });
        }
        let identity = age::x25519::Identity::generate();
        let text = format!(
            "# rampart registry key; public key: {}\n{}\n",
            identity.to_public(),
            identity.to_string().expose_secret()
        );
        write_atomic(&path, text.as_bytes(), true)?;
        Ok(identity)
    }

    /// Stores `model_dir` as `model`/`version` after the gate passes it. Refused: nothing is left behind.
    pub fn push(
        &self,
        model_dir: &Path,
        model: &str,
        version: &str,
        pusher: &str,
        config: &GateConfig,
    ) -> Result<VersionInfo> {
        self.push_upload(model_dir, model, version, pusher, config, None)
    }

    /// [`Registry::push`] of a staged upload; `upload_sha256` (the digest of the bytes received) is recorded with
    /// the decision.
    pub fn push_upload(
        &self,
        model_dir: &Path,
        model: &str,
        version: &str,
        pusher: &str,
        config: &GateConfig,
        upload_sha256: Option<&str>,
    ) -> Result<VersionInfo> {
        check_name("model name", model)?;
        check_name("version", version)?;
        check_name("principal", pusher)?;
        let _lock = self.lock()?;
        let dest = self.version_dir(model, version);
        let record = |outcome: &str| {
            let record = rampart_log::Record::new("registry.push", pusher)
                .subject("model", model)
                .subject("version", version)
                .outcome(outcome);
            match upload_sha256 {
                Some(digest) => record.subject("upload_sha256", digest),
                None => record,
            }
        };
        if dest.exists() {
            self.audit(&record("exists"))?;
            return Err(Error::Exists(format!(
                "`{model}` version `{version}` already exists; versions are immutable, push a new version"
            )));
        }
        let report = check(model_dir, config);
        if !report.passed {
            self.audit(&report.record(pusher).outcome("refused"))?;
            let mut r = record("refused");
            r.details.insert("reason".into(), report.summary().into());
            self.audit(&r)?;
            return Err(Error::Refused(Box::new(report)));
        }
        let identity = self.identity()?;
        let parent = self.dir.join("registry").join(model);
        std::fs::create_dir_all(&parent).map_err(Error::io("create", &parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".push-")
            .tempdir_in(&parent)
            .map_err(Error::io("create a temporary directory in", &parent))?;
        let sealed_path = tmp.path().join("model.age");
        let mut recipients = Recipients::new();
        recipients.push(Box::new(identity.to_public()));
        rampart_seal::seal(model_dir, &SealTo::Recipients(recipients), &sealed_path)?;
        // Gate what was sealed, not what the directory holds now.
        let files = self.unseal_memory(&sealed_path, &identity, model, config)?;
        let report = check_files(&format!("{model}@{version}"), &files, config);
        if !report.passed {
            self.audit(&record("refused"))?;
            return Err(Error::Refused(Box::new(report)));
        }
        let sig = files
            .iter()
            .find(|f| f.path == Path::new(&config.signature))
            .map(|f| f.data.as_slice())
            .unwrap_or_default();
        write_atomic(&tmp.path().join("model.sig"), sig, false)?;
        let sealed_bytes = std::fs::metadata(&sealed_path)
            .map_err(Error::io("read", &sealed_path))?
            .len();
        let info = VersionInfo {
            model: model.into(),
            version: version.into(),
            pushed_by: pusher.into(),
            pushed_at: rampart_log::record::rfc3339_now(),
            root_digest: report.root_digest.clone().unwrap_or_default(),
            signer: report.signer.clone().unwrap_or_default(),
            sealed_bytes,
        };
        write_json(&tmp.path().join("meta.json"), &info, false)?;
        self.audit(
            &record("ok")
                .subject("root_digest", info.root_digest.clone())
                .subject("signer", info.signer.clone()),
        )?;
        std::fs::rename(tmp.path(), &dest).map_err(Error::io("create", &dest))?;
        crate::state::sync_dir(&parent)?;
        tracing::info!(model, version, "pushed");
        Ok(info)
    }

    fn unseal_memory(
        &self,
        sealed: &Path,
        identity: &age::x25519::Identity,
        model: &str,
        config: &GateConfig,
    ) -> Result<Vec<MemoryFile>> {
        let mut ids = rampart_seal::Identities::new();
        ids.extend(vec![Box::new(identity.clone()) as Box<dyn age::Identity>]);
        let file = std::fs::File::open(sealed).map_err(Error::io("read", sealed))?;
        let files =
            rampart_seal::unseal_to_memory(file, &ids, Path::new(model), config.policy.max_bytes)?;
        Ok(files)
    }

    /// Every stored version of `model` (or of every model), sorted.
    pub fn list(&self, model: Option<&str>) -> Result<Vec<VersionInfo>> {
        let root = self.dir.join("registry");
        let models: Vec<String> = match model {
            Some(m) => {
                check_name("model name", m)?;
                vec![m.to_owned()]
            }
            None => dir_names(&root)?,
        };
        let mut out = Vec::new();
        for m in models {
            for v in dir_names(&root.join(&m))? {
                if let Some(info) =
                    read_json::<VersionInfo>(&root.join(&m).join(&v).join("meta.json"))?
                {
                    out.push(info);
                }
            }
        }
        out.sort_by(|a, b| (&a.model, &a.version).cmp(&(&b.model, &b.version)));
        Ok(out)
    }

    /// Whether `model`/`version` is stored (false for an invalid name).
    pub fn exists(&self, model: &str, version: &str) -> bool {
        check_name("model name", model).is_ok()
            && check_name("version", version).is_ok()
            && self.version_dir(model, version).join("meta.json").is_file()
    }

    /// Metadata of one version.
    pub fn info(&self, model: &str, version: &str) -> Result<VersionInfo> {
        check_name("model name", model)?;
        check_name("version", version)?;
        read_json(&self.version_dir(model, version).join("meta.json"))?.ok_or_else(|| {
            Error::NotFound(format!(
                "no version `{version}` of `{model}` in the registry; see `rampart deploy list`"
            ))
        })
    }

    /// Unseals a version into memory, gates it, and returns its files. Plaintext never touches the disk.
    pub fn load(
        &self,
        model: &str,
        version: &str,
        actor: &str,
        config: &GateConfig,
    ) -> Result<Vec<MemoryFile>> {
        self.info(model, version)?;
        let identity = self.identity()?;
        let sealed = self.version_dir(model, version).join("model.age");
        let files = self.unseal_memory(&sealed, &identity, model, config)?;
        let report = check_files(&format!("{model}@{version}"), &files, config);
        let mut record = report.record(actor);
        record.action = "registry.load".into();
        record = record.subject("version", version);
        self.audit(&record)?;
        if !report.passed {
            return Err(Error::Refused(Box::new(report)));
        }
        Ok(files)
    }

    /// Unseals a version to `out` on disk. Only export control calls this, after consuming a grant.
    pub(crate) fn unseal_to(
        &self,
        model: &str,
        version: &str,
        out: &Path,
    ) -> Result<rampart_seal::Unsealed> {
        let identity = self.identity()?;
        let mut ids = rampart_seal::Identities::new();
        ids.extend(vec![Box::new(identity) as Box<dyn age::Identity>]);
        Ok(rampart_seal::unseal(
            &self.version_dir(model, version).join("model.age"),
            &ids,
            out,
        )?)
    }
}

/// The names of the subdirectories of `dir` that are valid names (temporaries skipped); none if it is missing.
fn dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io("read", dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::io("read", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            if check_name("name", name).is_ok() && entry.path().is_dir() {
                names.push(name.to_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}
