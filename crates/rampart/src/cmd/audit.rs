//! `rampart audit`: create, append to, verify, show and prove the tamper-evident log (`rampart-log`).
//!
//! Other commands record what they do through [`record`] when `RAMPART_AUDIT_LOG` names a log.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rampart_log::{Checkpoint, Log, LogView, Options, Record};

use crate::Outcome;

/// The environment variable naming the audit log that CLI actions record into.
pub const LOG_ENV: &str = "RAMPART_AUDIT_LOG";

/// Subcommands of `rampart audit`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a new log (and its Ed25519 checkpoint key) in a directory
    Init(InitArgs),
    /// Append a JSON record to a log (prints its index once durable)
    Append(AppendArgs),
    /// Recompute a log: checkpoint signature, every entry, every tile, consistency with checkpoints seen before
    Verify(VerifyArgs),
    /// Print a log's checkpoint and entries
    Show(ShowArgs),
    /// Print the inclusion proof of an entry, and optionally a consistency proof
    Prove(ProveArgs),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// For machines.
    Json,
}

/// Arguments of `rampart audit init`.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The log directory (created if missing; must not hold a log)
    pub dir: PathBuf,
    /// The log's origin, also its key's name: a schema-less URL such as `example.com/audit` (default: a random one)
    #[arg(long)]
    pub origin: Option<String>,
}

/// Arguments of `rampart audit append`.
#[derive(Debug, clap::Args)]
pub struct AppendArgs {
    /// The log directory
    pub dir: PathBuf,
    /// The record: one JSON object (digests, not secrets); `-` reads it from stdin
    pub record: String,
}

/// Arguments of `rampart audit verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The log directory
    pub dir: PathBuf,
    /// The trusted verifier key (`name+id+key`) or a file holding it (default: the log's own `log.vkey`, which
    /// only proves the log is self-consistent: pin the key for real assurance)
    #[arg(long)]
    pub key: Option<String>,
    /// File remembering the last checkpoint this verifier saw; the log must stay consistent with it, and it is
    /// updated after a successful verification
    #[arg(long, conflicts_with = "no_state")]
    pub state: Option<PathBuf>,
    /// Do not read or update a state file
    #[arg(long)]
    pub no_state: bool,
    /// A signed checkpoint obtained elsewhere (another client, a witness) that the log must be consistent with;
    /// repeatable
    #[arg(long = "checkpoint", value_name = "FILE")]
    pub checkpoints: Vec<PathBuf>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `rampart audit show`.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// The log directory
    pub dir: PathBuf,
    /// The trusted verifier key or a file holding it (default: the log's `log.vkey`)
    #[arg(long)]
    pub key: Option<String>,
    /// First entry to print
    #[arg(long, default_value_t = 0)]
    pub from: u64,
    /// How many entries to print at most
    #[arg(long, default_value_t = 100)]
    pub count: u64,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Arguments of `rampart audit prove`.
#[derive(Debug, clap::Args)]
pub struct ProveArgs {
    /// The log directory
    pub dir: PathBuf,
    /// The entry to prove
    pub index: u64,
    /// Also prove that the tree of this many entries (an older checkpoint) is a prefix of the current one
    #[arg(long, value_name = "SIZE")]
    pub from: Option<u64>,
    /// The trusted verifier key or a file holding it (default: the log's `log.vkey`)
    #[arg(long)]
    pub key: Option<String>,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Init(args) => init(&args),
        Command::Append(args) => append(&args),
        Command::Verify(args) => verify(&args),
        Command::Show(args) => show(&args),
        Command::Prove(args) => prove(&args),
    }
}

fn init(args: &InitArgs) -> anyhow::Result<Outcome> {
    let origin = match &args.origin {
        Some(o) => o.clone(),
        None => rampart_log::random_origin()?,
    };
    let log = Log::create(&args.dir, &origin, Options::default())
        .with_context(|| format!("cannot create a log in `{}`", args.dir.display()))?;
    let vkey = log.verifier().to_text();
    log.close()?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "created log `{}` with origin `{origin}`",
        args.dir.display()
    )?;
    writeln!(out, "verifier key: {vkey}")?;
    writeln!(
        out,
        "keep `log.key` secret and pin the verifier key in `rampart audit verify --key`"
    )?;
    Ok(Outcome::Clean)
}

fn append(args: &AppendArgs) -> anyhow::Result<Outcome> {
    let text = if args.record == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin().lock().take(1 << 16), &mut s)?;
        s
    } else {
        args.record.clone()
    };
    let value: serde_json::Value = serde_json::from_str(&text).context("the record is not JSON")?;
    anyhow::ensure!(value.is_object(), "the record must be a JSON object");
    let log = Log::open(&args.dir, Options::default())
        .with_context(|| format!("cannot open log `{}`", args.dir.display()))?;
    let index = log.append_json(&value)?;
    log.close()?;
    writeln!(std::io::stdout().lock(), "{index}")?;
    Ok(Outcome::Clean)
}

use std::io::Read as _;

fn load_checkpoint(path: &Path, key: &rampart_log::VerifierKey) -> anyhow::Result<Checkpoint> {
    let text = rampart_log::read_note(path)?;
    Checkpoint::open(&text, key, path).with_context(|| format!("checkpoint `{}`", path.display()))
}

fn default_state(origin_key: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    let name: String = origin_key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    Some(
        base.join("rampart")
            .join("audit")
            .join(format!("{name}.checkpoint")),
    )
}

fn verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let key = rampart_log::read_verifier(&args.dir, args.key.as_deref())
        .with_context(|| format!("cannot read the verifier key of `{}`", args.dir.display()))?;
    if args.key.is_none() {
        tracing::warn!("trusting the log's own verifier key; pin it with --key");
    }
    let mut seen = Vec::new();
    let mut problems = Vec::new();
    for path in &args.checkpoints {
        seen.push(load_checkpoint(path, &key)?);
    }
    let state = if args.no_state {
        None
    } else {
        args.state.clone().or_else(|| default_state(&key.to_text()))
    };
    if let Some(path) = &state {
        if path.exists() {
            match load_checkpoint(path, &key) {
                Ok(c) => seen.push(c),
                Err(e) => problems.push(format!(
                    "the checkpoint remembered in `{}` does not verify with this key ({e:#}): the log's key changed",
                    path.display()
                )),
            }
        }
    }
    let result = rampart_log::verify(&args.dir, key, &seen)?;
    let problem = result
        .problem
        .as_ref()
        .map(|p| match p.index {
            Some(i) => format!("entry {i}: {}", p.reason),
            None => p.reason.clone(),
        })
        .or_else(|| problems.first().cloned());
    if problem.is_none() {
        if let Some(path) = &state {
            let view = LogView::open(
                &args.dir,
                rampart_log::read_verifier(&args.dir, args.key.as_deref())?,
            )?;
            if view.checkpoint() == result.checkpoint.as_ref().unwrap_or(view.checkpoint()) {
                write_state(path, view.signed_checkpoint())?;
            }
        }
    }
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let json = serde_json::json!({
                "verified": problem.is_none(),
                "checkpoint": result.checkpoint,
                "entries_checked": result.entries_checked,
                "first_bad_entry": result.problem.as_ref().and_then(|p| p.index),
                "problem": problem,
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Format::Text => match (&problem, &result.checkpoint) {
            (None, Some(c)) => writeln!(
                out,
                "ok: {} entries verified against checkpoint of `{}` (root {})",
                c.size,
                c.origin,
                B64.encode(c.root)
            )?,
            (Some(p), _) => writeln!(out, "FAILED: {p}")?,
            (None, None) => writeln!(out, "FAILED: no checkpoint")?,
        },
    }
    Ok(if problem.is_none() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn write_state(path: &Path, signed: &str) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    tmp.write_all(signed.as_bytes())?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write `{}`", path.display()))?;
    Ok(())
}

fn open_view(dir: &Path, key: Option<&str>) -> anyhow::Result<LogView> {
    let key = rampart_log::read_verifier(dir, key)
        .with_context(|| format!("cannot read the verifier key of `{}`", dir.display()))?;
    LogView::open(dir, key).with_context(|| format!("cannot open log `{}`", dir.display()))
}

fn show(args: &ShowArgs) -> anyhow::Result<Outcome> {
    let view = open_view(&args.dir, args.key.as_deref())?;
    let size = view.checkpoint().size;
    let end = args.from.saturating_add(args.count).min(size);
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Text => {
            write!(out, "{}", view.signed_checkpoint())?;
            writeln!(out)?;
            for index in args.from..end {
                let entry = view.entry(index)?;
                let shown = match std::str::from_utf8(&entry) {
                    Ok(s) if !s.contains('\n') => s.to_owned(),
                    _ => format!("base64:{}", B64.encode(&entry)),
                };
                writeln!(out, "{index}\t{shown}")?;
            }
        }
        Format::Json => {
            let mut entries = Vec::new();
            for index in args.from..end {
                let entry = view.entry(index)?;
                let value =
                    serde_json::from_slice::<serde_json::Value>(&entry).unwrap_or_else(|_| {
                        serde_json::Value::String(format!("base64:{}", B64.encode(&entry)))
                    });
                entries.push(serde_json::json!({
                    "index": index,
                    "leaf_hash": B64.encode(rampart_log::merkle::leaf_hash(&entry)),
                    "entry": value,
                }));
            }
            let json = serde_json::json!({ "checkpoint": view.checkpoint(), "entries": entries });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
    }
    Ok(Outcome::Clean)
}

fn prove(args: &ProveArgs) -> anyhow::Result<Outcome> {
    let view = open_view(&args.dir, args.key.as_deref())?;
    let size = view.checkpoint().size;
    let entry = view.entry(args.index)?;
    let leaf = rampart_log::merkle::leaf_hash(&entry);
    let inclusion = view.inclusion(args.index, size)?;
    rampart_log::merkle::verify_inclusion(
        &leaf,
        args.index,
        size,
        &inclusion,
        &view.checkpoint().root,
    )?;
    let hashes = |v: &[rampart_log::Hash]| v.iter().map(|h| B64.encode(h)).collect::<Vec<_>>();
    let consistency = match args.from {
        Some(from) => {
            let old_root = view.root_at(from)?;
            let proof = view.consistency(from, size)?;
            rampart_log::merkle::verify_consistency(
                from,
                &old_root,
                size,
                &view.checkpoint().root,
                &proof,
            )?;
            Some((from, old_root, proof))
        }
        None => None,
    };
    let mut out = std::io::stdout().lock();
    match args.format {
        Format::Json => {
            let json = serde_json::json!({
                "index": args.index,
                "tree_size": size,
                "leaf_hash": B64.encode(leaf),
                "inclusion": hashes(&inclusion),
                "root": B64.encode(view.checkpoint().root),
                "checkpoint": view.signed_checkpoint(),
                "consistency": consistency.as_ref().map(|(from, old_root, proof)| serde_json::json!({
                    "from": from, "old_root": B64.encode(old_root), "proof": hashes(proof),
                })),
            });
            writeln!(out, "{}", serde_json::to_string_pretty(&json)?)?;
        }
        Format::Text => {
            writeln!(
                out,
                "entry {} of {size}, leaf hash {}",
                args.index,
                B64.encode(leaf)
            )?;
            writeln!(out, "root {}", B64.encode(view.checkpoint().root))?;
            writeln!(out, "inclusion proof ({} hashes):", inclusion.len())?;
            for h in &inclusion {
                writeln!(out, "  {}", B64.encode(h))?;
            }
            if let Some((from, old_root, proof)) = &consistency {
                writeln!(
                    out,
                    "consistency proof from size {from} (root {}) ({} hashes):",
                    B64.encode(old_root),
                    proof.len()
                )?;
                for h in proof {
                    writeln!(out, "  {}", B64.encode(h))?;
                }
            }
        }
    }
    Ok(Outcome::Clean)
}

/// The actor named in records made by the command line: `$USER@host`.
pub fn actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

/// Whether CLI actions record into a log (`RAMPART_AUDIT_LOG` is set).
pub fn enabled() -> bool {
    std::env::var_os(LOG_ENV).is_some()
}

/// Records a CLI action in the log named by `RAMPART_AUDIT_LOG`, if set. Fails closed: when a log is named
/// and the record cannot be made durable, the caller must not complete the action.
pub fn record(record: &Record) -> anyhow::Result<Option<u64>> {
    let Some(dir) = std::env::var_os(LOG_ENV) else {
        return Ok(None);
    };
    let dir = PathBuf::from(dir);
    let log = Log::open(&dir, Options::default()).with_context(|| {
        format!(
            "cannot open the audit log `{}` named by {LOG_ENV}",
            dir.display()
        )
    })?;
    let index = log
        .append_json(record)
        .context("cannot record the action in the audit log")?;
    log.close()?;
    Ok(Some(index))
}
