//! `rampart verify`: check a directory against its OpenSSF model-signing signature (made by Rampart or by
//! `model_signing sign key`). Exit 0 verified, 1 verification failed, 2 usage or I/O error.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rampart_sign::bundle::MAX_BUNDLE_BYTES;
use rampart_sign::{
    check_dir, verify_bundle, Bundle, CheckOptions, Finding, SignedManifest, VerifyingKey,
};

use crate::cmd::sign::{ignore_paths_inside, manifest_json, read_limited, read_text, Format};
use crate::Outcome;

/// Arguments of `rampart verify`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The directory to verify
    pub path: PathBuf,
    /// Public key, PEM (SubjectPublicKeyInfo), ECDSA P-256, P-384 or P-521
    #[arg(long, value_name = "PUB.pem")]
    pub key: PathBuf,
    /// The signature to verify against
    #[arg(long, value_name = "FILE", default_value = "model.sig")]
    pub signature: PathBuf,
    /// Do not fail on files the signature does not list (every signed file must still match)
    #[arg(long)]
    pub ignore_unsigned_files: bool,
    /// More paths to skip, relative to the current directory (repeatable); the signed ignore paths always apply
    #[arg(long = "ignore-paths", value_name = "P")]
    pub ignore_paths: Vec<PathBuf>,
    /// Check `.git`, `.gitattributes`, `.github` and `.gitignore` too (skipped by default)
    #[arg(long)]
    pub no_ignore_git_paths: bool,
    /// Output format on stdout: text, or JSON with the verdict and the signed manifest
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let bundle = read_bundle(&args.signature)?;
    let key = read_public_key(&args.key)?;
    if !args.path.is_dir() {
        anyhow::bail!(
            "`{}` is not a directory; give the signed model or data directory",
            args.path.display()
        );
    }
    let signed = match verify_bundle(&bundle, &key) {
        Ok(signed) => signed,
        Err(err) if err.is_rejection() => {
            return report(&args, &bundle, None, &[], Some(err.to_string()))
        }
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot verify `{}`", args.signature.display()))
        }
    };
    let options = CheckOptions {
        ignore_unsigned_files: args.ignore_unsigned_files,
        ignore_git_paths: !args.no_ignore_git_paths,
        ignore_paths: ignore_paths_inside(
            &args.path,
            args.ignore_paths.iter().chain([&args.signature]),
        )?,
        progress: true,
    };
    let verdict = check_dir(&args.path, &signed, &options)
        .with_context(|| format!("cannot check `{}`", args.path.display()))?;
    report(&args, &bundle, Some(&signed), &verdict.findings, None)
}

/// Reads and parses a signature file.
pub(crate) fn read_bundle(path: &Path) -> anyhow::Result<Bundle> {
    let bytes = read_limited(path, MAX_BUNDLE_BYTES as u64, "signature")?;
    Bundle::parse(&bytes).with_context(|| format!("cannot read the signature `{}`", path.display()))
}

/// Reads a public key file.
pub(crate) fn read_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let text = read_text(path, 64 * 1024, "public key")?;
    VerifyingKey::from_pem(&text)
        .with_context(|| format!("cannot use the public key `{}`", path.display()))
}

fn report(
    args: &Args,
    bundle: &Bundle,
    signed: Option<&SignedManifest>,
    findings: &[Finding],
    rejection: Option<String>,
) -> anyhow::Result<Outcome> {
    let verified = rejection.is_none() && findings.is_empty();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let mut report = serde_json::json!({
                "verified": verified,
                "path": args.path,
                "signature": args.signature,
                "key_hint": bundle.hint,
                "signature_error": rejection,
                "findings": findings,
                "manifest": signed.map(manifest_json),
            });
            // Sorted keys whatever serde_json's features (cedar-policy turns on `preserve_order`).
            report.sort_all_objects();
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
        Format::Text => match (&rejection, signed) {
            (Some(reason), _) => writeln!(
                out,
                "verification failed: `{}` does not verify with `{}`: {reason}",
                args.signature.display(),
                args.key.display()
            )?,
            (None, Some(signed)) if verified => writeln!(
                out,
                "verified: `{}` matches `{}` ({} files, {}, root digest sha256:{})",
                args.path.display(),
                args.signature.display(),
                signed.manifest.len(),
                signed.serialization.hash,
                signed.manifest.root_digest()
            )?,
            _ => {
                writeln!(
                    out,
                    "verification failed: `{}` does not match `{}` ({} problem{})",
                    args.path.display(),
                    args.signature.display(),
                    findings.len(),
                    if findings.len() == 1 { "" } else { "s" }
                )?;
                for finding in findings {
                    writeln!(out, "  {finding}")?;
                }
            }
        },
    }
    Ok(if verified {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
