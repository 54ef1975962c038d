//! `rampart diff`: which files were added, removed or changed between two signed versions, or between a
//! signature and a directory as it is now.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use rampart_sign::rampart_digest::{hash_dir, IgnoreRules, Manifest, ManifestDiff, Options};
use rampart_sign::{read_statement, verify_bundle, SignedManifest};

use crate::cmd::sign::Format;
use crate::cmd::verify::{read_bundle, read_public_key};
use crate::Outcome;

/// Arguments of `rampart diff`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The older signature (`OLD.sig`)
    pub old: PathBuf,
    /// The newer signature (`NEW.sig`), or a directory to compare with OLD as it is now
    pub new: PathBuf,
    /// Public key to verify the signature(s) first; without it their content is compared unverified
    #[arg(long, value_name = "PUB.pem")]
    pub key: Option<PathBuf>,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if args.old.is_dir() {
        bail!(
            "`{}` is a directory; the first operand must be a signature file (`rampart diff OLD.sig NEW.sig|DIR`)",
            args.old.display()
        );
    }
    let key = args.key.as_deref().map(read_public_key).transpose()?;
    let open = |path: &PathBuf| -> anyhow::Result<SignedManifest> {
        let bundle = read_bundle(path)?;
        match &key {
            Some(key) => verify_bundle(&bundle, key),
            None => read_statement(&bundle.payload),
        }
        .with_context(|| format!("cannot use the signature `{}`", path.display()))
    };
    let old = open(&args.old)?;
    let new: Manifest = if args.new.is_dir() {
        hash_now(&old, &args)?
    } else {
        open(&args.new)?.manifest
    };
    let diff = old.manifest.diff(&new).context(
        "the two signatures hash files differently; compare signatures made with the same --hash",
    )?;
    if key.is_none() {
        writeln!(
            std::io::stderr(),
            "note: signatures not verified; pass --key PUB.pem to verify them first"
        )?;
    }
    render(&args, &diff, key.is_some())?;
    Ok(if diff.is_empty() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// Hashes the directory the way the old signature was made, skipping its ignore paths and the signature itself.
fn hash_now(old: &SignedManifest, args: &Args) -> anyhow::Result<Manifest> {
    let mut ignore = IgnoreRules::git();
    for path in &old.serialization.ignore_paths {
        ignore.add(path.clone());
    }
    for path in crate::cmd::sign::ignore_paths_inside(&args.new, [&args.old].into_iter())? {
        ignore.add(path);
    }
    hash_dir(
        &args.new,
        &Options {
            algorithm: old.serialization.hash,
            ignore,
            allow_symlinks: old.serialization.allow_symlinks,
            progress: true,
        },
    )
    .with_context(|| format!("cannot hash `{}`", args.new.display()))
}

fn render(args: &Args, diff: &ManifestDiff, verified: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    if args.format == Format::Json {
        let mut report = serde_json::json!({
            "old": args.old,
            "new": args.new,
            "verified": verified,
            "identical": diff.is_empty(),
            "added": diff.added,
            "removed": diff.removed,
            "changed": diff.changed,
        });
        // Sorted keys whatever serde_json's features (cedar-policy turns on `preserve_order`).
        report.sort_all_objects();
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
        return Ok(());
    }
    if diff.is_empty() {
        writeln!(
            out,
            "no differences between `{}` and `{}`",
            args.old.display(),
            args.new.display()
        )?;
        return Ok(());
    }
    for path in &diff.added {
        writeln!(out, "added    {path}")?;
    }
    for path in &diff.removed {
        writeln!(out, "removed  {path}")?;
    }
    for change in &diff.changed {
        writeln!(out, "changed  {}", change.path)?;
    }
    writeln!(
        out,
        "{} added, {} removed, {} changed",
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len()
    )?;
    Ok(())
}
