//! `rampart seal`: encrypt a file or directory at rest in the age format (`rampart-seal`).

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rampart_seal::{SealTo, SecretString};

use crate::Outcome;

/// The environment variable holding a passphrase, read instead of prompting.
pub const PASSPHRASE_ENV: &str = "RAMPART_PASSPHRASE";

/// Arguments of `rampart seal`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file or directory to seal (a directory is sealed as a tar stream)
    pub path: PathBuf,
    /// An X25519 recipient (`age1…`); repeatable
    #[arg(short = 'r', long = "recipient", value_name = "RECIPIENT")]
    pub recipients: Vec<String>,
    /// A file of recipients, one `age1…` a line; repeatable
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipients_files: Vec<PathBuf>,
    /// Seal with a passphrase instead, from RAMPART_PASSPHRASE or asked on the terminal
    #[arg(short = 'p', long, conflicts_with_all = ["recipients", "recipients_files"])]
    pub passphrase: bool,
    /// The sealed file to write (replaced atomically when complete)
    #[arg(short = 'o', long, value_name = "OUT")]
    pub output: PathBuf,
}

/// Reads a passphrase from RAMPART_PASSPHRASE, or from the terminal (twice when `confirm`).
pub fn passphrase(confirm: bool) -> anyhow::Result<SecretString> {
    if let Ok(p) = std::env::var(PASSPHRASE_ENV) {
        anyhow::ensure!(!p.is_empty(), "{PASSPHRASE_ENV} is empty");
        return Ok(SecretString::from(p));
    }
    let first = rpassword::prompt_password("passphrase: ").with_context(|| {
        format!("cannot read a passphrase from the terminal; set {PASSPHRASE_ENV}")
    })?;
    anyhow::ensure!(!first.is_empty(), "the passphrase is empty");
    if confirm {
        let second = rpassword::prompt_password("passphrase (again): ")
            .context("cannot read the passphrase")?;
        anyhow::ensure!(first == second, "the passphrases differ");
    }
    Ok(SecretString::from(first))
}

/// `sha256:<hex>` of a file, streamed (for audit records).
pub fn file_digest(path: &Path) -> anyhow::Result<String> {
    use sha2::Digest as _;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read `{}`", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let to = if args.passphrase {
        SealTo::Passphrase(passphrase(true)?)
    } else {
        let mut recipients = rampart_seal::Recipients::new();
        for r in &args.recipients {
            recipients.push(rampart_seal::parse_recipient(r)?);
        }
        for f in &args.recipients_files {
            rampart_seal::read_recipients_file(f, &mut recipients)?;
        }
        anyhow::ensure!(
            !recipients.is_empty(),
            "no recipient: give `-r age1…`, `-R FILE` or `-p`"
        );
        SealTo::Recipients(recipients)
    };
    let sealed = rampart_seal::seal(&args.path, &to, &args.output)
        .with_context(|| format!("cannot seal `{}`", args.path.display()))?;
    if crate::cmd::audit::enabled() {
        let recorded = file_digest(&args.output).and_then(|digest| {
            let record = rampart_log::Record::new("seal", crate::cmd::audit::actor())
                .subject("input", args.path.display().to_string())
                .subject("sealed", digest);
            crate::cmd::audit::record(&record)
        });
        if let Err(e) = recorded {
            let _ = std::fs::remove_file(&args.output);
            return Err(e);
        }
    }
    eprintln!(
        "sealed {} ({} {}, {} bytes) to `{}`",
        args.path.display(),
        sealed.files,
        if sealed.files == 1 { "file" } else { "files" },
        sealed.plaintext_bytes,
        args.output.display()
    );
    Ok(Outcome::Clean)
}
