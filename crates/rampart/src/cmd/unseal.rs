//! `rampart unseal`: decrypt a file sealed with `rampart seal` or the `age` CLI.

use std::path::PathBuf;

use anyhow::Context as _;

use crate::Outcome;

/// The environment variable that may hold an identity (`AGE-SECRET-KEY-1…`) instead of a file.
pub const IDENTITY_ENV: &str = "RAMPART_AGE_IDENTITY";

/// Arguments of `rampart unseal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sealed file
    pub file: PathBuf,
    /// An identity file (`AGE-SECRET-KEY-1…` lines, mode 0600); repeatable. RAMPART_AGE_IDENTITY may hold one instead
    #[arg(short = 'i', long = "identity", value_name = "IDENTITY")]
    pub identities: Vec<PathBuf>,
    /// The file is sealed with a passphrase: read it from RAMPART_PASSPHRASE or the terminal
    #[arg(short = 'p', long)]
    pub passphrase: bool,
    /// Where to write the plaintext: a file, or a directory if a directory was sealed (must not exist)
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut keys = rampart_seal::Identities::new();
    for path in &args.identities {
        keys.extend(rampart_seal::load_identities(path)?);
    }
    if let Ok(text) = std::env::var(IDENTITY_ENV) {
        keys.extend(rampart_seal::identities_from_text(
            &text,
            std::path::Path::new(IDENTITY_ENV),
        )?);
    }
    if args.passphrase {
        keys.set_passphrase(crate::cmd::seal::passphrase(false)?);
    }
    anyhow::ensure!(
        !keys.is_empty() || args.passphrase,
        "no identity: give `-i FILE`, set {IDENTITY_ENV}, or use `-p` for a passphrase"
    );
    let sealed_digest = if crate::cmd::audit::enabled() {
        crate::cmd::seal::file_digest(&args.file)?
    } else {
        String::new()
    };
    let unsealed = rampart_seal::unseal(&args.file, &keys, &args.output)
        .with_context(|| format!("cannot unseal `{}`", args.file.display()))?;
    let record = rampart_log::Record::new("unseal", crate::cmd::audit::actor())
        .subject("sealed", sealed_digest)
        .subject("output", args.output.display().to_string());
    if let Err(e) = crate::cmd::audit::record(&record) {
        let _ = if unsealed.directory {
            std::fs::remove_dir_all(&args.output)
        } else {
            std::fs::remove_file(&args.output)
        };
        return Err(e);
    }
    eprintln!(
        "unsealed `{}` to `{}` ({} bytes{})",
        args.file.display(),
        args.output.display(),
        unsealed.bytes,
        if unsealed.directory {
            format!(", {} files", unsealed.files)
        } else {
            String::new()
        }
    );
    Ok(Outcome::Clean)
}
