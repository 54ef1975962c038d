//! `rampart keys`: add, list and revoke the gateway's API keys.
//!
//! Keys live in the state directory that `rampart serve` reads (`--state-dir`, else `$RAMPART_STATE_DIR`, else
//! `./.rampart`); the gateway picks up changes without a restart.
//!
//! Adding and revoking are recorded in the tamper-evident log: the one `RAMPART_AUDIT_LOG` names, else the state
//! directory's `audit` log when it exists. While a gateway holds that log open, the gateway records the change
//! itself when it picks it up (`keys.reload`).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rampart_auth::{ApiKeyStore, KeyInfo, Revoked, KEY_STORE_FILE};

use crate::Outcome;

/// Subcommands of `rampart keys`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create an API key for a principal and print it (once: only its hash is stored)
    Add(AddArgs),
    /// List the API keys: id, principal, roles, creation time, status (never a secret)
    List(ListArgs),
    /// Revoke an API key by its id; it stays listed but never authenticates again
    Revoke(RevokeArgs),
}

/// Where the keys are stored.
#[derive(Debug, clap::Args)]
pub struct StateDir {
    /// State directory shared with `rampart serve` [default: ./.rampart]
    #[arg(long, visible_alias = "store", value_name = "DIR", env = rampart_auth::STATE_DIR_ENV)]
    state_dir: Option<PathBuf>,
}

impl StateDir {
    fn path(&self) -> PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(rampart_auth::default_state_dir)
    }
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people
    Text,
    /// For machines
    Json,
}

/// Arguments of `rampart keys add`.
#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The principal the key authenticates as (e.g. a service or user name)
    #[arg(long, value_name = "NAME")]
    principal: String,
    /// A role of the principal; repeat or separate with commas (`--role user --role analyst`)
    #[arg(
        long = "role",
        value_name = "ROLE",
        required = true,
        value_delimiter = ','
    )]
    roles: Vec<String>,
    #[command(flatten)]
    state: StateDir,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Arguments of `rampart keys list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    state: StateDir,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
}

/// Arguments of `rampart keys revoke`.
#[derive(Debug, clap::Args)]
pub struct RevokeArgs {
    /// The key's id, as `rampart keys list` shows it (the 12 hex digits after `rmp_`)
    #[arg(value_name = "ID")]
    id: String,
    #[command(flatten)]
    state: StateDir,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Add(args) => add(args),
        Command::List(args) => list(args),
        Command::Revoke(args) => revoke(args),
    }
}

fn add(args: AddArgs) -> anyhow::Result<Outcome> {
    let dir = args.state.path();
    let store = ApiKeyStore::open(&dir).context("cannot open the key store")?;
    let new = store
        .add(&args.principal, &args.roles)
        .context("cannot add the key")?;
    let record = rampart_log::Record::new("keys.add", crate::cmd::audit::actor())
        .subject("key_id", new.info.id.clone())
        .subject("principal", new.info.principal.clone())
        .subject("roles", new.info.roles.join(","));
    if let Err(err) = audit(&dir, &record) {
        // Fail closed: a key whose creation is not on record does not stay usable.
        let _ = ApiKeyStore::open_admin(&dir).and_then(|s| s.revoke(&new.info.id));
        return Err(err.context("the key was revoked again"));
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            writeln!(out, "{}", new.key)?;
            eprintln!(
                "created API key `{}` for principal `{}` with roles {} in `{}`",
                new.info.id,
                new.info.principal,
                new.info.roles.join(", "),
                dir.join(KEY_STORE_FILE).display()
            );
            eprintln!("this is the only time the key is shown: hand it to the client now");
        }
        Format::Json => {
            let json = serde_json::json!({
                "id": new.info.id,
                "principal": new.info.principal,
                "roles": new.info.roles,
                "created": new.info.created,
                "key": new.key,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
    }
    Ok(Outcome::Clean)
}

fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let dir = args.state.path();
    let store = ApiKeyStore::open_admin(&dir).context("cannot open the key store")?;
    let keys = store.list();
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => writeln!(out, "{}", serde_json::to_string_pretty(&keys)?)?,
        Format::Text if keys.is_empty() => {
            eprintln!(
                "no API keys in `{}`; create one with `rampart keys add --principal NAME --role user`",
                dir.display()
            );
        }
        Format::Text => write_table(&mut out, &keys)?,
    }
    Ok(Outcome::Clean)
}

fn write_table(out: &mut impl Write, keys: &[KeyInfo]) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = keys
        .iter()
        .map(|k| {
            let status = match &k.revoked_at {
                Some(at) if k.revoked => format!("revoked {at}"),
                _ if k.revoked => "revoked".to_string(),
                _ => "active".to_string(),
            };
            [
                k.id.clone(),
                k.principal.clone(),
                k.roles.join(","),
                k.created.clone(),
                status,
            ]
        })
        .collect();
    let header = ["ID", "PRINCIPAL", "ROLES", "CREATED", "STATUS"];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.len());
        }
    }
    let line = |out: &mut dyn Write, cells: [&str; 5]| -> std::io::Result<()> {
        let mut text = String::new();
        for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                text.push_str(&format!("{cell:<width$}  "));
            }
        }
        writeln!(out, "{}", text.trim_end())
    };
    line(out, header)?;
    for row in &rows {
        line(out, row.each_ref().map(String::as_str))?;
    }
    Ok(())
}

fn revoke(args: RevokeArgs) -> anyhow::Result<Outcome> {
    let dir = args.state.path();
    let store = ApiKeyStore::open_admin(&dir).context("cannot open the key store")?;
    let revoked = store.revoke(&args.id).context("cannot revoke the key")?;
    if revoked == Revoked::Now {
        // The revocation stands even if it cannot be recorded (the safe direction); the error says so.
        audit(
            &dir,
            &rampart_log::Record::new("keys.revoke", crate::cmd::audit::actor())
                .subject("key_id", args.id.clone()),
        )
        .context("the key is revoked, but the revocation is not in the audit log")?;
    }
    match revoked {
        Revoked::Now => println!("revoked API key `{}`", args.id),
        Revoked::Already => println!("API key `{}` was already revoked", args.id),
    }
    Ok(Outcome::Clean)
}

/// Records a key change: in `RAMPART_AUDIT_LOG` when set, else in the state directory's log if there is one.
fn audit(state_dir: &Path, record: &rampart_log::Record) -> anyhow::Result<()> {
    if crate::cmd::audit::enabled() {
        crate::cmd::audit::record(record)?;
        return Ok(());
    }
    let dir = state_dir.join("audit");
    if !dir.join("checkpoint").exists() {
        return Ok(());
    }
    match rampart_log::Log::open(&dir, rampart_log::Options::default()) {
        Ok(log) => {
            log.append_json(record)
                .context("cannot record the change in the audit log")?;
            log.close()?;
        }
        Err(rampart_log::Error::Locked { .. }) => eprintln!(
            "note: a running gateway holds the audit log `{}`; it records the change when it picks it up",
            dir.display()
        ),
        Err(err) => {
            return Err(err)
                .with_context(|| format!("cannot open the audit log `{}`", dir.display()))
        }
    }
    Ok(())
}
