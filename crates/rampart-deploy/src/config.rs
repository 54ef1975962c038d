//! The gate's configuration, a TOML file:
//!
//! ```toml
//! # Public keys (PEM) whose signature is accepted; any one suffices. Relative to this file.
//! trusted_keys = ["keys/release.pub"]
//! # The signature inside the model directory (OpenSSF model-signing bundle).
//! signature = "model.sig"
//! # Scan findings at or above this severity refuse the model: info, low, medium, high, critical.
//! fail_on = "medium"
//!
//! [policy]
//! max_bytes = 10737418240          # total size of the model's files
//! max_files = 10000
//! allowed_extensions = ["onnx", "json", "txt"]   # empty or absent: any
//! ```

use std::path::{Path, PathBuf};

use rampart_scan::Severity;
use rampart_sign::VerifyingKey;

use crate::error::{Error, Result};

/// Largest configuration or key file read.
const MAX_CONFIG: u64 = 1 << 20;

/// What a model must satisfy besides its signature and the scan. Defaults are permissive on format and bounded
/// on size.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Total bytes of the model's files.
    pub max_bytes: u64,
    /// Number of files.
    pub max_files: u64,
    /// File extensions allowed (lowercase, without the dot; `model.sig` is always allowed). Empty: any.
    pub allowed_extensions: Vec<String>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            max_bytes: 16 << 30,
            max_files: 100_000,
            allowed_extensions: Vec::new(),
        }
    }
}

/// A trusted signer: its key and a name for reports (the key file's name).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Shown in reports and audit records.
    pub name: String,
    /// The public key.
    pub key: VerifyingKey,
}

/// Everything the gate needs.
#[derive(Debug, Clone)]
pub struct GateConfig {
    /// Accepted signers; at least one.
    pub trusted_keys: Vec<TrustedKey>,
    /// The signature file's path inside the model directory.
    pub signature: String,
    /// Scan findings at or above this severity refuse the model.
    pub fail_on: Severity,
    /// Size and format policy.
    pub policy: Policy,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    trusted_keys: Vec<PathBuf>,
    #[serde(default = "default_signature")]
    signature: String,
    #[serde(default = "default_fail_on")]
    fail_on: String,
    #[serde(default)]
    policy: Policy,
}

fn default_signature() -> String {
    "model.sig".into()
}

fn default_fail_on() -> String {
    "medium".into()
}

/// Parses `info`, `low`, `medium`, `high` or `critical`.
pub fn parse_severity(text: &str) -> Option<Severity> {
    Some(match text.to_ascii_lowercase().as_str() {
        "info" => Severity::Info,
        "low" => Severity::Low,
        "medium" => Severity::Medium,
        "high" => Severity::High,
        "critical" => Severity::Critical,
        _ => return None,
    })
}

impl GateConfig {
    /// A configuration trusting `keys`, with the default signature name, `fail_on = medium` and default policy.
    pub fn new(trusted_keys: Vec<TrustedKey>) -> GateConfig {
        GateConfig {
            trusted_keys,
            signature: default_signature(),
            fail_on: Severity::Medium,
            policy: Policy::default(),
        }
    }

    /// Reads a TOML configuration; key paths are relative to the file.
    pub fn load(path: &Path) -> Result<GateConfig> {
        let bad = |reason: String| Error::Config {
            path: path.to_owned(),
            reason,
        };
        let bytes = crate::state::read_limited(path, MAX_CONFIG)?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not UTF-8 text".into()))?;
        let file: ConfigFile = toml::from_str(&text).map_err(|e| bad(e.message().to_owned()))?;
        let fail_on = parse_severity(&file.fail_on).ok_or_else(|| {
            bad(format!(
                "`fail_on = {:?}` is not one of info, low, medium, high, critical",
                file.fail_on
            ))
        })?;
        if file.trusted_keys.is_empty() {
            return Err(bad(
                "`trusted_keys` is empty: name at least one public key".into()
            ));
        }
        rampart_digest::ManifestPath::new(&file.signature)
            .map_err(|e| bad(format!("`signature`: {e}")))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut trusted_keys = Vec::new();
        for key_path in &file.trusted_keys {
            let full = base.join(key_path);
            let bytes = crate::state::read_limited(&full, MAX_CONFIG)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| bad(format!("key `{}` is not PEM text", full.display())))?;
            let key = VerifyingKey::from_pem(&text)
                .map_err(|e| bad(format!("key `{}`: {e}", full.display())))?;
            trusted_keys.push(TrustedKey {
                name: key_path.display().to_string(),
                key,
            });
        }
        Ok(GateConfig {
            trusted_keys,
            signature: file.signature,
            fail_on,
            policy: file.policy,
        })
    }
}
