//! `rampart push MODEL_DIR --name N --version V`: store a model version in the registry, sealed, after the
//! deployment gate passes it (exit 1 and nothing stored when refused).
//!
//! - locally, into a state directory: `--state-dir D --config GATE.toml`;
//! - or to a running gateway over HTTPS: `--url https://HOST:PORT` with the credential in `$RAMPART_API_KEY` (or a
//!   bearer token in `$RAMPART_TOKEN`) and the gateway's certificate trusted with `--ca-cert` and/or pinned with
//!   `--fingerprint`. The gateway runs the same gate before it seals and stores the version.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use rampart_deploy::{Error, GateConfig, Registry};
use rampart_gate::push::{PushError, PushOptions};

use crate::cmd::sign::Format;
use crate::Outcome;

/// The environment variable holding the API key sent to the gateway.
const API_KEY_ENV: &str = "RAMPART_API_KEY";
/// The environment variable holding a bearer token (a JWT) sent to the gateway.
const TOKEN_ENV: &str = "RAMPART_TOKEN";
/// Uploads below this size show no progress.
const PROGRESS_FROM: u64 = 16 << 20;

/// Arguments of `rampart push`.
#[derive(Debug, clap::Args)]
#[command(disable_version_flag = true)]
pub struct Args {
    /// The signed model directory (its `model.sig` is sent with it)
    pub model_dir: PathBuf,
    /// Model name
    #[arg(long)]
    pub name: String,
    /// Version (immutable once pushed)
    #[arg(long)]
    pub version: String,
    /// Push to a running gateway at this base URL (`https://HOST:PORT`) instead of a local state directory; the
    /// API key is read from $RAMPART_API_KEY, or a bearer token from $RAMPART_TOKEN, never from the command line
    #[arg(long, value_name = "URL", conflicts_with_all = ["config", "principal"])]
    pub url: Option<String>,
    /// With --url: PEM file of the certificate(s) to trust for the gateway (its self-signed `tls/cert.pem`, or
    /// the CA that issued its certificate); default: the Mozilla root store
    #[arg(long, value_name = "FILE", requires = "url")]
    pub ca_cert: Option<PathBuf>,
    /// With --url: the SHA-256 fingerprint the gateway's certificate must have, as `rampart serve` prints it
    /// (hex, colons optional); with --ca-cert both must hold
    #[arg(long, value_name = "SHA256", requires = "url")]
    pub fingerprint: Option<String>,
    /// The registry's state directory (local push)
    #[arg(long, value_name = "DIR", default_value = "rampart-state")]
    pub state_dir: PathBuf,
    /// Gate configuration (TOML) naming the trusted keys, scan severity and policy (local push; required
    /// without --url)
    #[arg(long, value_name = "FILE", required_unless_present = "url")]
    pub config: Option<PathBuf>,
    /// The principal pushing, recorded in the audit log (local push; default `$USER`). Over --url the gateway
    /// records the principal its credential authenticates
    #[arg(long)]
    pub principal: Option<String>,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    if let Some(url) = &args.url {
        return run_remote(&args, url);
    }
    let config_path = args
        .config
        .as_deref()
        .context("give --config GATE.toml (or --url to push to a gateway)")?;
    let config = GateConfig::load(config_path).context("cannot load the gate configuration")?;
    let principal = args.principal.clone().unwrap_or_else(principal_from_env);
    let registry = Registry::open(&args.state_dir);
    match registry.push(
        &args.model_dir,
        &args.name,
        &args.version,
        &principal,
        &config,
    ) {
        Ok(info) => {
            let mut out = std::io::stdout().lock();
            match args.format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?,
                Format::Text => writeln!(
                    out,
                    "pushed `{}@{}` ({}, signed by `{}`, {} sealed bytes)",
                    info.model, info.version, info.root_digest, info.signer, info.sealed_bytes
                )?,
            }
            Ok(Outcome::Clean)
        }
        Err(Error::Refused(report)) => {
            crate::cmd::deploy::print_report(&report, args.format)?;
            Ok(Outcome::Findings)
        }
        Err(e) => Err(e).context("cannot push"),
    }
}

/// The credential from the environment: an API key or a bearer token, exactly one.
fn credential() -> anyhow::Result<String> {
    let read = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    match (read(API_KEY_ENV), read(TOKEN_ENV)) {
        (Some(key), None) => Ok(key.trim().to_owned()),
        (None, Some(token)) => Ok(token.trim().to_owned()),
        (Some(_), Some(_)) => anyhow::bail!(
            "both ${API_KEY_ENV} and ${TOKEN_ENV} are set: unset one, so that it is clear who pushes"
        ),
        (None, None) => anyhow::bail!(
            "no credential: set ${API_KEY_ENV} to an API key with the `publisher` role (`rampart keys add \
             NAME --role publisher`), or ${TOKEN_ENV} to a bearer token"
        ),
    }
}

/// Prints `sent of total` on stderr at every tenth of a large upload.
fn progress_printer(label: String) -> rampart_gate::push::Progress {
    let last = std::sync::atomic::AtomicU64::new(0);
    Arc::new(move |sent: u64, total: u64| {
        if total < PROGRESS_FROM {
            return;
        }
        let tenth = sent.saturating_mul(10) / total.max(1);
        if tenth > last.swap(tenth, std::sync::atomic::Ordering::Relaxed) {
            let mib = |n: u64| n as f64 / f64::from(1u32 << 20);
            eprintln!(
                "push {label}: {:.1} MiB of {:.1} MiB ({}%)",
                mib(sent),
                mib(total),
                tenth * 10
            );
        }
    })
}

fn run_remote(args: &Args, url: &str) -> anyhow::Result<Outcome> {
    let options = PushOptions {
        url: url.to_owned(),
        model: args.name.clone(),
        version: args.version.clone(),
        credential: credential()?,
        ca_cert: args.ca_cert.clone(),
        fingerprint: args.fingerprint.clone(),
        progress: Some(progress_printer(format!("{}@{}", args.name, args.version))),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(rampart_gate::push::push(&args.model_dir, &options));
    let mut out = std::io::stdout().lock();
    match result {
        Ok(info) => {
            match args.format {
                Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&info)?)?,
                Format::Text => {
                    let field = |k: &str| info.get(k).and_then(|v| v.as_str()).unwrap_or("?");
                    writeln!(
                        out,
                        "pushed `{}@{}` to {url} ({}, signed by `{}`, {} sealed bytes)",
                        field("model"),
                        field("version"),
                        field("root_digest"),
                        field("signer"),
                        info.get("sealed_bytes")
                            .and_then(|v| v.as_u64())
                            .unwrap_or(0)
                    )?
                }
            }
            Ok(Outcome::Clean)
        }
        Err(PushError::Refused { status, message }) => {
            match args.format {
                Format::Json => writeln!(
                    out,
                    "{}",
                    serde_json::json!({"pushed": false, "status": status, "error": message})
                )?,
                Format::Text => {
                    writeln!(out, "refused: `{}@{}`: {message}", args.name, args.version)?
                }
            }
            Ok(Outcome::Findings)
        }
        Err(err) => Err(err).with_context(|| format!("cannot push to `{url}`")),
    }
}

/// `$USER` (a valid principal name), else `cli`.
pub fn principal_from_env() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| rampart_deploy::check_name("principal", u).is_ok())
        .unwrap_or_else(|| "cli".into())
}
