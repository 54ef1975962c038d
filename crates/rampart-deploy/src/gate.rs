//! The deployment gate: signature by a trusted key, a clean scan, and policy. Every check runs and is reported,
//! so that one refusal names every reason; the model passes only if all three pass (fail closed: an error in a
//! check is a failure of that check).
//!
//! [`check`] reads a directory from disk (for CI); [`check_files`] checks files already in memory (the gateway
//! and the registry, which then load exactly the bytes that were checked).

use std::path::Path;

use rampart_digest::{hash_reader, IgnoreRules, Manifest, ManifestPath, WalkOptions};
use rampart_seal::MemoryFile;
use rampart_sign::bundle::MAX_BUNDLE_BYTES;
use rampart_sign::{check_dir, verify_bundle, Bundle, CheckOptions, SignedManifest};

use crate::config::{GateConfig, Policy};
use crate::error::{Error, Result};

/// The result of one check.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// `signature`, `scan` or `policy`.
    pub name: &'static str,
    /// Whether it passed.
    pub passed: bool,
    /// Why not (empty when it passed).
    pub problems: Vec<String>,
}

/// What the gate concluded about one model.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GateReport {
    /// The model directory or name.
    pub model: String,
    /// True only if every check passed.
    pub passed: bool,
    /// The trusted key that signed it, if any.
    pub signer: Option<String>,
    /// `sha256:` root digest of the signed manifest, when the signature verified.
    pub root_digest: Option<String>,
    /// Files and bytes checked.
    pub files: u64,
    pub bytes: u64,
    /// Each check, in order: signature, scan, policy.
    pub checks: Vec<Check>,
}

impl GateReport {
    /// One line: `passed` or the first problems.
    pub fn summary(&self) -> String {
        if self.passed {
            return format!("`{}` passed", self.model);
        }
        let problems: Vec<String> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| format!("{}: {}", c.name, c.problems.join("; ")))
            .collect();
        format!("`{}`: {}", self.model, problems.join(" | "))
    }

    /// An audit record of this decision (digests and names only).
    pub fn record(&self, actor: &str) -> rampart_log::Record {
        let mut record = rampart_log::Record::new("deploy.gate", actor)
            .subject("model", self.model.clone())
            .outcome(if self.passed { "pass" } else { "refused" });
        if let Some(root) = &self.root_digest {
            record = record.subject("root_digest", root.clone());
        }
        if let Some(signer) = &self.signer {
            record = record.subject("signer", signer.clone());
        }
        let failed: Vec<serde_json::Value> = self
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| serde_json::json!({"check": c.name, "problems": c.problems}))
            .collect();
        if !failed.is_empty() {
            record.details.insert("failed".into(), failed.into());
        }
        record
    }

    fn new(
        model: String,
        signature: Check,
        scan: Check,
        policy: Check,
        signed: Option<(String, &SignedManifest)>,
    ) -> GateReport {
        let passed = signature.passed && scan.passed && policy.passed;
        let (signer, root_digest) = match signed {
            Some((name, s)) => (
                Some(name),
                Some(format!("sha256:{}", s.manifest.root_digest())),
            ),
            None => (None, None),
        };
        GateReport {
            model,
            passed,
            signer,
            root_digest,
            files: 0,
            bytes: 0,
            checks: vec![signature, scan, policy],
        }
    }
}

fn check_result(name: &'static str, problems: Vec<String>) -> Check {
    Check {
        name,
        passed: problems.is_empty(),
        problems,
    }
}

/// The first trusted key whose signature verifies, with the verified manifest.
fn verify_signature(
    bundle_bytes: &[u8],
    config: &GateConfig,
) -> std::result::Result<(String, SignedManifest), String> {
    let bundle = Bundle::parse(bundle_bytes).map_err(|e| format!("unreadable signature: {e}"))?;
    let mut last = String::from("no trusted key is configured");
    for trusted in &config.trusted_keys {
        match verify_bundle(&bundle, &trusted.key) {
            Ok(signed) => return Ok((trusted.name.clone(), signed)),
            Err(e) => last = e.to_string(),
        }
    }
    Err(format!("not signed by any trusted key ({last})"))
}

/// Runs the gate on a model directory on disk.
pub fn check(model_dir: &Path, config: &GateConfig) -> GateReport {
    let model = model_dir.display().to_string();
    let sig_path = model_dir.join(&config.signature);
    let mut sig_problems = Vec::new();
    let mut signed = None;
    match crate::state::read_limited(&sig_path, MAX_BUNDLE_BYTES as u64) {
        Err(_) if !sig_path.exists() => {
            sig_problems.push(format!("unsigned: no `{}` in the model", config.signature))
        }
        Err(e) => sig_problems.push(e.to_string()),
        Ok(bytes) => match verify_signature(&bytes, config) {
            Err(e) => sig_problems.push(e),
            Ok((signer, manifest)) => {
                let options = CheckOptions {
                    ignore_paths: ManifestPath::new(&config.signature).into_iter().collect(),
                    ..CheckOptions::default()
                };
                match check_dir(model_dir, &manifest, &options) {
                    Ok(verdict) => sig_problems
                        .extend(verdict.findings.iter().map(|f| format!("tampered: {f}"))),
                    Err(e) => sig_problems.push(format!("cannot check the files: {e}")),
                }
                signed = Some((signer, manifest));
            }
        },
    }
    let scan = match rampart_scan::scan_path(model_dir, &rampart_scan::Options::default()) {
        Ok(report) => scan_problems(&report, config),
        Err(e) => vec![format!("cannot scan: {e}")],
    };
    let (policy, files, bytes) = match rampart_digest::walk(
        model_dir,
        &WalkOptions {
            ignore: IgnoreRules::git(),
            follow_symlinks: false,
        },
    ) {
        Ok(listing) => {
            let list: Vec<(String, u64)> = listing
                .files
                .iter()
                .map(|f| (f.path.to_string(), f.size))
                .collect();
            let mut problems = policy_problems(&list, &config.policy, &config.signature);
            problems.extend(
                listing
                    .symlinks
                    .iter()
                    .map(|p| format!("symlink `{p}` is not allowed")),
            );
            (problems, list.len() as u64, listing.total_bytes())
        }
        Err(e) => (vec![format!("cannot list the files: {e}")], 0, 0),
    };
    let mut report = GateReport::new(
        model,
        check_result("signature", sig_problems),
        check_result("scan", scan),
        check_result("policy", policy),
        signed.as_ref().map(|(n, s)| (n.clone(), s)),
    );
    report.files = files;
    report.bytes = bytes;
    tracing::info!(model = %report.model, passed = report.passed, "deployment gate");
    report
}

/// Runs the gate on files held in memory (paths relative to the model's root).
pub fn check_files(model: &str, files: &[MemoryFile], config: &GateConfig) -> GateReport {
    let mut sig_problems = Vec::new();
    let mut signed = None;
    let sig = files
        .iter()
        .find(|f| f.path == Path::new(&config.signature));
    match sig {
        None => sig_problems.push(format!("unsigned: no `{}` in the model", config.signature)),
        Some(sig) => match verify_signature(&sig.data, config) {
            Err(e) => sig_problems.push(e),
            Ok((signer, manifest)) => {
                sig_problems.extend(compare_memory(files, &manifest, &config.signature));
                signed = Some((signer, manifest));
            }
        },
    }
    let mut scan = Vec::new();
    for file in files {
        let name = file.path.display().to_string();
        let report = rampart_scan::scan_bytes(&name, &file.data, &rampart_scan::Options::default());
        scan.extend(scan_problems(&report, config));
    }
    let list: Vec<(String, u64)> = files
        .iter()
        .map(|f| (f.path.display().to_string(), f.data.len() as u64))
        .collect();
    let policy = policy_problems(&list, &config.policy, &config.signature);
    let mut report = GateReport::new(
        model.to_owned(),
        check_result("signature", sig_problems),
        check_result("scan", scan),
        check_result("policy", policy),
        signed.as_ref().map(|(n, s)| (n.clone(), s)),
    );
    report.files = list.len() as u64;
    report.bytes = list.iter().map(|(_, n)| n).sum();
    tracing::info!(model = %report.model, passed = report.passed, "deployment gate");
    report
}

fn scan_problems(report: &rampart_scan::Report, config: &GateConfig) -> Vec<String> {
    report
        .findings()
        .iter()
        .filter(|f| f.severity >= config.fail_on)
        .map(|f| format!("malicious or unsafe content: {f}"))
        .collect()
}

fn policy_problems(files: &[(String, u64)], policy: &Policy, signature: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let total: u64 = files.iter().map(|(_, n)| n).sum();
    if total > policy.max_bytes {
        problems.push(format!(
            "{total} bytes exceed the policy's max_bytes = {}",
            policy.max_bytes
        ));
    }
    if files.len() as u64 > policy.max_files {
        problems.push(format!(
            "{} files exceed the policy's max_files = {}",
            files.len(),
            policy.max_files
        ));
    }
    if !policy.allowed_extensions.is_empty() {
        for (path, _) in files.iter().filter(|(p, _)| p != signature) {
            let ext = Path::new(path)
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !policy
                .allowed_extensions
                .iter()
                .any(|a| a.eq_ignore_ascii_case(&ext))
            {
                problems.push(format!(
                    "`{path}`: extension `{ext}` is not in allowed_extensions"
                ));
            }
        }
    }
    problems
}

/// Hashes the in-memory files the way the signature says and names every difference.
fn compare_memory(files: &[MemoryFile], signed: &SignedManifest, signature: &str) -> Vec<String> {
    let mut ignore = IgnoreRules::git();
    for path in &signed.serialization.ignore_paths {
        ignore.add(path.clone());
    }
    let mut actual = Manifest::new(signed.serialization.hash);
    let mut problems = Vec::new();
    for file in files {
        let text = file.path.to_string_lossy();
        let path = match ManifestPath::new(&text) {
            Ok(p) => p,
            Err(e) => {
                problems.push(format!("bad path `{text}`: {e}"));
                continue;
            }
        };
        if text == signature || ignore.is_ignored(&path) {
            continue;
        }
        match hash_reader(file.data.as_slice(), signed.serialization.hash, |_| ()) {
            Ok(digest) => {
                actual.insert(path, digest);
            }
            Err(e) => problems.push(format!("cannot hash `{text}`: {e}")),
        }
    }
    for (path, expected) in signed.manifest.iter() {
        match actual.get(path) {
            None => problems.push(format!(
                "tampered: missing: `{path}` is signed but not present"
            )),
            Some(d) if d != expected => problems.push(format!(
                "tampered: changed: `{path}` (signed {expected}, now {d})"
            )),
            Some(_) => {}
        }
    }
    for (path, _) in actual.iter() {
        if signed.manifest.get(path).is_none() {
            problems.push(format!("tampered: extra: `{path}` is not in the signature"));
        }
    }
    problems
}

/// Reads a model directory into memory (no symlinks, `.git` paths skipped), refusing more than `max_bytes`.
pub fn read_dir(model_dir: &Path, max_bytes: u64) -> Result<Vec<MemoryFile>> {
    let listing = rampart_digest::walk(
        model_dir,
        &WalkOptions {
            ignore: IgnoreRules::git(),
            follow_symlinks: false,
        },
    )
    .map_err(|e| {
        Error::NotFound(format!(
            "cannot read the model `{}`: {e}",
            model_dir.display()
        ))
    })?;
    if listing.total_bytes() > max_bytes {
        return Err(Error::Denied(format!(
            "`{}` holds {} bytes, more than the policy's max_bytes = {max_bytes}",
            model_dir.display(),
            listing.total_bytes()
        )));
    }
    let mut files = Vec::with_capacity(listing.files.len());
    for entry in &listing.files {
        let data = crate::state::read_limited(&entry.source, max_bytes)?;
        files.push(MemoryFile {
            path: entry.path.as_str().into(),
            data,
        });
    }
    Ok(files)
}
