//! `rampart sign`: hash a directory and write an OpenSSF model-signing v1.0 signature (Sigstore bundle), the
//! same file `model_signing sign key` writes. Also holds the file helpers `verify` and `diff` share.

use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context};
use rampart_sign::rampart_digest::{HashAlgorithm, IgnoreRules, ManifestPath};
use rampart_sign::{sign_dir, SignOptions, SignedManifest, SigningKey};

use crate::Outcome;

/// Arguments of `rampart sign`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model or data directory to sign
    pub path: PathBuf,
    /// Private key, PEM (SEC1 `EC PRIVATE KEY` or PKCS#8), ECDSA P-256, P-384 or P-521
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
    /// Where to write the signature (ignored when hashing if it lies inside PATH)
    #[arg(long, value_name = "FILE", default_value = "model.sig")]
    pub signature: PathBuf,
    /// A file or directory to leave out of the signature, relative to the current directory as in
    /// model_signing (repeatable); recorded in the signature so that verification skips it too
    #[arg(long = "ignore-paths", value_name = "P")]
    pub ignore_paths: Vec<PathBuf>,
    /// Hash of each file: `sha256` (what model_signing verifies) or `blake3` (faster; Rampart only)
    #[arg(long = "hash", value_enum, default_value_t = HashArg::Sha256)]
    pub hash: HashArg,
    /// Follow symlinks and sign their targets (refused by default)
    #[arg(long)]
    pub allow_symlinks: bool,
    /// Sign `.git`, `.gitattributes`, `.github` and `.gitignore` too (ignored by default)
    #[arg(long)]
    pub no_ignore_git_paths: bool,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Hash algorithm names on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum HashArg {
    /// SHA-256
    Sha256,
    /// BLAKE3
    Blake3,
}

impl From<HashArg> for HashAlgorithm {
    fn from(arg: HashArg) -> Self {
        match arg {
            HashArg::Sha256 => Self::Sha256,
            HashArg::Blake3 => Self::Blake3,
        }
    }
}

/// Output formats of the signing commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Text for people
    Text,
    /// JSON for machines
    Json,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if !args.path.is_dir() {
        bail!(
            "`{}` is not a directory; give the model or data directory to sign",
            args.path.display()
        );
    }
    if let Some(parent) = args.signature.parent() {
        if !parent.as_os_str().is_empty() && !parent.is_dir() {
            bail!(
                "cannot write the signature `{}`: `{}` is not a directory",
                args.signature.display(),
                parent.display()
            );
        }
    }
    let key_text = read_text(&args.key, 64 * 1024, "private key")?;
    let key = SigningKey::from_pem(&key_text)
        .with_context(|| format!("cannot use the private key `{}`", args.key.display()))?;
    let mut ignore = if args.no_ignore_git_paths {
        IgnoreRules::none()
    } else {
        IgnoreRules::git()
    };
    for path in ignore_paths_inside(
        &args.path,
        args.ignore_paths.iter().chain([&args.signature]),
    )? {
        ignore.add(path);
    }
    let options = SignOptions {
        algorithm: args.hash.into(),
        ignore,
        allow_symlinks: args.allow_symlinks,
        progress: true,
    };
    let (signed, bundle) = sign_dir(&args.path, &key, &options)
        .with_context(|| format!("cannot sign `{}`; nothing was written", args.path.display()))?;
    let json = bundle.to_json()?;
    write_atomically(&args.signature, &json, false)
        .with_context(|| format!("cannot write the signature `{}`", args.signature.display()))?;
    if crate::cmd::audit::enabled() {
        let record = rampart_log::Record::new("sign", crate::cmd::audit::actor())
            .subject("path", args.path.display().to_string())
            .subject(
                "manifest",
                format!("sha256:{}", signed.manifest.root_digest()),
            )
            .subject("signature", args.signature.display().to_string())
            .subject("key", bundle.hint.clone().unwrap_or_default());
        // Fail closed: a signature whose making was not recorded is not handed out.
        if let Err(e) = crate::cmd::audit::record(&record) {
            let _ = std::fs::remove_file(&args.signature);
            return Err(e);
        }
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => writeln!(
            out,
            "signed {} files in `{}` ({}, {}) into `{}`\nroot digest: sha256:{}",
            signed.manifest.len(),
            args.path.display(),
            signed.serialization.hash,
            key.curve().name(),
            args.signature.display(),
            signed.manifest.root_digest()
        )?,
        Format::Json => {
            let mut report = serde_json::json!({
                "signature": args.signature,
                "model_name": signed.model_name,
                "key_hint": bundle.hint,
                "manifest": manifest_json(&signed),
            });
            // Sorted keys whatever serde_json's features (cedar-policy turns on `preserve_order`).
            report.sort_all_objects();
            writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        }
    }
    Ok(Outcome::Clean)
}

/// The manifest part of the JSON reports.
pub(crate) fn manifest_json(signed: &SignedManifest) -> serde_json::Value {
    let files: Vec<_> = signed
        .manifest
        .iter()
        .map(|(path, digest)| serde_json::json!({ "name": path, "digest": digest }))
        .collect();
    serde_json::json!({
        "hash": signed.serialization.hash.name(),
        "allow_symlinks": signed.serialization.allow_symlinks,
        "ignore_paths": signed.serialization.ignore_paths,
        "root_digest": signed.manifest.root_digest(),
        "files": files,
    })
}

/// Reads a small text file (a key), refusing anything larger than `max` bytes.
pub(crate) fn read_text(path: &Path, max: u64, what: &str) -> anyhow::Result<String> {
    let bytes = read_limited(path, max, what)?;
    String::from_utf8(bytes)
        .with_context(|| format!("the {what} `{}` is not text (expected PEM)", path.display()))
}

/// Reads a file of at most `max` bytes.
pub(crate) fn read_limited(path: &Path, max: u64, what: &str) -> anyhow::Result<Vec<u8>> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the {what} `{}`", path.display()))?;
    let mut bytes = Vec::new();
    file.take(max + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read the {what} `{}`", path.display()))?;
    if bytes.len() as u64 > max {
        bail!("the {what} `{}` is larger than {max} bytes", path.display());
    }
    Ok(bytes)
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`: no half-written file is ever
/// visible. `private` keeps the mode at 0600 (tempfile's default); otherwise the file becomes 0644.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], private: bool) -> anyhow::Result<()> {
    // The rename would put a file in place of whatever is there: a device (`/dev/null`, run as root), a pipe, a
    // symbolic link. Only a regular file is replaced.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_file() {
            anyhow::bail!(
                "`{}` exists and is not a regular file (a directory, a link, a device or a pipe); give another path",
                path.display()
            );
        }
    }
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".rampart-tmp")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in `{}`", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    if !private {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Turns command-line paths (relative to the current directory, as model_signing's CLI reads them) into paths
/// inside `root`. Paths outside `root` are skipped, with a warning unless it is the signature file.
pub(crate) fn ignore_paths_inside<'a>(
    root: &Path,
    paths: impl Iterator<Item = &'a PathBuf>,
) -> anyhow::Result<Vec<ManifestPath>> {
    let root = root
        .canonicalize()
        .with_context(|| format!("cannot open `{}`", root.display()))?;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let mut inside = Vec::new();
    for path in paths {
        let absolute = resolve(&cwd.join(path));
        let Ok(relative) = absolute.strip_prefix(&root) else {
            tracing::debug!(path = %path.display(), "ignore path outside the signed directory");
            continue;
        };
        let Some(text) = relative.to_str() else {
            bail!("`{}` is not UTF-8", path.display());
        };
        if text.is_empty() {
            bail!(
                "`--ignore-paths {}` would ignore the whole directory",
                path.display()
            );
        }
        inside.push(ManifestPath::normalize(text)?);
    }
    Ok(inside)
}

/// Like Python's `Path.resolve()`: follows symlinks of the part that exists, then `..` lexically.
fn resolve(path: &Path) -> PathBuf {
    if let Ok(real) = path.canonicalize() {
        return real;
    }
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => resolve(parent).join(name),
        _ => {
            let mut out = PathBuf::new();
            for component in path.components() {
                match component {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other),
                }
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_regular_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("real.json");
        std::fs::write(&target, b"kept").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = write_atomically(&link, b"new", false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a regular file"), "{err}");
        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(std::fs::read(&target).unwrap(), b"kept");
        assert!(write_atomically(dir.path(), b"new", false).is_err());
        // A regular file is replaced; no temporary file is left.
        write_atomically(&target, b"new", false).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"new");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
