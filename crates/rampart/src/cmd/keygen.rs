//! `rampart keygen`: an ECDSA key pair in PEM for `rampart sign` (and `model_signing sign key`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use rampart_sign::{Curve, SigningKey};

use crate::cmd::sign::write_atomically;
use crate::Outcome;

/// Arguments of `rampart keygen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for `private.pem` (PKCS#8, mode 0600) and `public.pem`; created if missing
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The curve
    #[arg(long, value_enum, default_value_t = CurveArg::P256)]
    pub curve: CurveArg,
    /// Replace existing key files
    #[arg(long)]
    pub force: bool,
}

/// Curves on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CurveArg {
    /// NIST P-256 (signatures use SHA-256)
    P256,
    /// NIST P-384 (SHA-384)
    P384,
    /// NIST P-521 (SHA-512)
    P521,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let curve = match args.curve {
        CurveArg::P256 => Curve::P256,
        CurveArg::P384 => Curve::P384,
        CurveArg::P521 => Curve::P521,
    };
    let private_path = args.out.join("private.pem");
    let public_path = args.out.join("public.pem");
    if !args.force {
        for path in [&private_path, &public_path] {
            if path.exists() {
                bail!(
                    "`{}` already exists; pass --force to replace it",
                    path.display()
                );
            }
        }
    }
    if !args.out.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.out)
            .with_context(|| format!("cannot create `{}`", args.out.display()))?;
    }
    let key = SigningKey::generate(curve);
    let public = key.verifying_key();
    write_atomically(&private_path, key.to_pkcs8_pem()?.as_bytes(), true)
        .with_context(|| format!("cannot write `{}`", private_path.display()))?;
    write_atomically(&public_path, public.to_pem()?.as_bytes(), false)
        .with_context(|| format!("cannot write `{}`", public_path.display()))?;
    writeln!(
        std::io::stdout().lock(),
        "wrote {} key pair: `{}` (private, mode 0600) and `{}`\nkey hint: {}",
        curve.name(),
        private_path.display(),
        public_path.display(),
        public.hint()?
    )?;
    Ok(Outcome::Clean)
}
