//! `rampart`: the command line. Thin by design: parse, dispatch to a library crate, render, map exit codes.
//!
//! Exit codes are a contract shared by every command:
//! 0 clean, 1 a finding or a denial (failed verification, malicious file, attack past its threshold), 2 an error.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc: the gateway allocates and frees small buffers on every request from two threads at once, where glibc's
/// allocator spends several percent of the time in `malloc_consolidate` and lock contention.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Rampart secures AI systems across their lifecycle: training data, model development, inference and deployment.
#[derive(Debug, Parser)]
#[command(name = "rampart", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Each command lives in its own module under `cmd/`; this enum only names them.
#[derive(Debug, Subcommand)]
enum Command {
    /// Generate a P-256 key pair for signing (PEM)
    Keygen(cmd::keygen::Args),
    /// Sign a model or data directory (OpenSSF model-signing v1.0 bundle)
    Sign(cmd::sign::Args),
    /// Verify a directory against its signature
    Verify(cmd::verify::Args),
    /// Show which files changed between two signatures, or between a signature and a directory
    Diff(cmd::diff::Args),
    /// Scan model files for malicious content without loading them
    Scan(cmd::scan::Args),
    /// Attack a model (white-box and black-box adversarial examples, membership inference, extraction); fail when it is too weak
    Eval(cmd::eval::Args),
    /// Validate a training data set: schema, leaks, duplicates, labels, outliers, poisoning
    #[command(subcommand)]
    Data(cmd::data::Command),
    /// The tamper-evident audit log: init, append, verify, show, prove
    #[command(subcommand)]
    Audit(cmd::audit::Command),
    /// Encrypt a file or directory at rest in the age format
    Seal(cmd::seal::Args),
    /// Decrypt a file sealed with `rampart seal` or `age`
    Unseal(cmd::unseal::Args),
    /// The deployment gate (check a model before it serves) and the registry's versions
    #[command(subcommand)]
    Deploy(cmd::deploy::Command),
    /// Store a signed model version in the registry, sealed, after the deployment gate
    Push(cmd::push::Args),
    /// Enrol an approver's TOTP authenticator
    #[command(subcommand)]
    Mfa(cmd::mfa::Command),
    /// Export control: request, approve (with TOTP) and fetch one export of a model version
    #[command(subcommand)]
    Export(cmd::export::Command),
    /// Serve a model behind the secure inference gateway (TLS 1.3, auth, policy, limits, KServe v2)
    Serve(cmd::serve::Args),
    /// The gateway's API keys: add, list, revoke
    #[command(subcommand)]
    Keys(cmd::keys::Command),
    /// Profile training data for the gateway's range checks and detectors
    Profile(cmd::profile::Args),
    /// Output watermarking: create keys, verify a suspect model
    #[command(subcommand)]
    Watermark(cmd::watermark::Command),
}

/// What a command concluded, before it becomes an exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report: exit 0.
    Clean,
    /// A finding, a failed verification or a denial: exit 1.
    Findings,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = match cli.command {
        Command::Keygen(args) => cmd::keygen::run(args),
        Command::Sign(args) => cmd::sign::run(args),
        Command::Verify(args) => cmd::verify::run(args),
        Command::Diff(args) => cmd::diff::run(args),
        Command::Scan(args) => cmd::scan::run(args),
        Command::Eval(args) => cmd::eval::run(args),
        Command::Data(command) => cmd::data::run(command),
        Command::Audit(command) => cmd::audit::run(command),
        Command::Seal(args) => cmd::seal::run(args),
        Command::Unseal(args) => cmd::unseal::run(args),
        Command::Deploy(command) => cmd::deploy::run(command),
        Command::Push(args) => cmd::push::run(args),
        Command::Mfa(command) => cmd::mfa::run(command),
        Command::Export(command) => cmd::export::run(command),
        Command::Serve(args) => cmd::serve::run(args),
        Command::Keys(command) => cmd::keys::run(command),
        Command::Profile(args) => cmd::profile::run(args),
        Command::Watermark(command) => cmd::watermark::run(command),
    };
    match result {
        Ok(Outcome::Clean) => ExitCode::SUCCESS,
        Ok(Outcome::Findings) => ExitCode::from(1),
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(std::io::stderr(), "error: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// Logs go to stderr; `RAMPART_LOG` sets the filter (default `warn,rustls=error`), `RAMPART_LOG_FORMAT=json` gives
/// JSON lines. rustls warns about what a client sends (an IP address as SNI, as wrk and many scanners send): at `warn`
/// any client could write a line per connection into the gateway's log, so its default level is `error`. Colours
/// only on a terminal (and not with `NO_COLOR` set): a log file or a journal gets plain text.
fn init_tracing() {
    use std::io::IsTerminal as _;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RAMPART_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,rustls=error"));
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    if std::env::var("RAMPART_LOG_FORMAT").is_ok_and(|v| v == "json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A closed stdout (`rampart scan ... | head`) is not an error.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
