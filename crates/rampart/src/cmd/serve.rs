//! `rampart serve`: runs the secure inference gateway until SIGTERM or Ctrl-C, then drains and exits.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use rampart_gate::config::Config;

use crate::Outcome;

/// Arguments of `rampart serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A model directory (`model/model.onnx` inside, served under the directory's name), or a directory holding a
    /// `rampart.toml`. Without it, `--config` is required.
    #[arg(value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The configuration file (TOML); unknown keys are refused.
    #[arg(long, value_name = "FILE", conflicts_with = "dir")]
    config: Option<PathBuf>,
    /// Override `server.listen` (such as `127.0.0.1:8443`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Override `server.state_dir`: certificates, API keys and the audit trail (default: `$RAMPART_STATE_DIR`,
    /// else `./.rampart`).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Load and check the configuration and the models, print the result and exit without serving.
    #[arg(long)]
    check: bool,
}

fn load(args: &Args) -> anyhow::Result<Config> {
    let mut config = match (&args.config, &args.dir) {
        (Some(file), _) => Config::load(file)?,
        (None, Some(dir)) => {
            let file = dir.join("rampart.toml");
            if file.is_file() {
                Config::load(&file)?
            } else {
                anyhow::ensure!(
                    dir.join("model/model.onnx").is_file(),
                    "`{}` has neither a `rampart.toml` nor a `model/model.onnx`; point at a model directory or pass --config",
                    dir.display()
                );
                Config::for_model_dir(dir)?
            }
        }
        (None, None) => anyhow::bail!(
            "name a model directory or pass --config FILE (see `rampart serve --help`)"
        ),
    };
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(dir) = &args.state_dir {
        config.server.state_dir = Some(
            std::env::current_dir()
                .context("cannot read the current directory")?
                .join(dir),
        );
    }
    config.validate()?;
    Ok(config)
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = load(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("rampart-gate")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(serve(config, args.check))
}

async fn serve(config: Config, check: bool) -> anyhow::Result<Outcome> {
    let prepared = rampart_gate::prepare(&config, rampart_gate::Parts::default())
        .await
        .context("cannot start the gateway")?;
    let scheme = if prepared.fingerprint.is_some() {
        "https"
    } else {
        "http"
    };
    println!(
        "rampart serve: listening on {scheme}://{}",
        prepared.address
    );
    for model in &prepared.models {
        println!(
            "  model      {model}: {scheme}://{}/v2/models/{model}/infer",
            prepared.address
        );
    }
    if let Some(fingerprint) = &prepared.fingerprint {
        let kind = if prepared.self_signed {
            " (self-signed)"
        } else {
            ""
        };
        println!("  cert       SHA-256 {fingerprint}{kind}");
    }
    if let Some(admin) = prepared.admin_address {
        println!("  metrics    http://{admin}/metrics");
    }
    for model in &prepared.watched {
        println!("  gate       {}", model.summary);
    }
    if let Some(path) = &prepared.audit_path {
        println!("  audit      {}", path.display());
    }
    if let Some((dir, key)) = &prepared.audit_log {
        println!(
            "  audit      {} (tamper-evident; `rampart audit verify {} --key '{key}'`)",
            dir.display(),
            dir.display()
        );
    }
    match (&prepared.new_api_key, &prepared.key_store) {
        (Some(key), _) => println!("  API key    {key}  (new, role admin; shown once: keep it)"),
        (None, Some(store)) => println!(
            "  API keys   {} (`rampart keys add --principal NAME --role user` makes one)",
            store.display()
        ),
        (None, None) => {}
    }
    if let (Some(model), Some(_)) = (prepared.models.first(), &prepared.key_store) {
        let ca = match (&prepared.cert_path, prepared.self_signed) {
            (Some(cert), true) => format!("--cacert {} ", cert.display()),
            _ => String::new(),
        };
        println!(
            "  try        curl {ca}-H \"Authorization: Bearer $KEY\" {scheme}://{}/v2/models/{model}",
            prepared.address
        );
    }
    if check {
        return Ok(Outcome::Clean);
    }
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!("rampart serve: shutting down, draining in-flight requests");
        let _ = stop.send(true);
    });
    prepared.serve(shutdown).await;
    Ok(Outcome::Clean)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
