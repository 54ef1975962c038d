//! `rampart watermark`: keys for DAWN output watermarking, and the verification of a suspect model.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rampart_defend::watermark::{read_query_log, verify, Verification, WatermarkKey};
use rampart_defend::DefendError;
use rampart_infer::{Model, OnnxModel};

use crate::Outcome;

/// The subcommands of `rampart watermark`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a watermark key (64 hex digits, file mode 0600; never overwrites)
    Keygen(KeygenArgs),
    /// Decide whether a suspect model was trained on watermarked answers (exit 1 when it was)
    Verify(VerifyArgs),
}

/// Arguments of `rampart watermark keygen`.
#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the key
    #[arg(short, long)]
    pub output: PathBuf,
}

/// Arguments of `rampart watermark verify`.
#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The suspect model as an ONNX file (its first input takes the logged rows, its first output gives scores)
    #[arg(long)]
    pub model: PathBuf,
    /// The watermark key file
    #[arg(long)]
    pub key: PathBuf,
    /// The query log: CSV of the inputs served and the model's own label for each
    #[arg(long)]
    pub queries: PathBuf,
    /// The label column of the query log
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// The fraction of queries the gateway watermarked
    #[arg(long, default_value_t = 0.05)]
    pub fraction: f64,
    /// The false-identification probability below which the suspect is declared a copy
    #[arg(long, default_value_t = 0.001)]
    pub significance: f64,
    /// Output format
    #[arg(long, value_enum, default_value_t = crate::cmd::profile::Format::Text)]
    pub format: crate::cmd::profile::Format,
}

pub fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Keygen(args) => keygen(&args),
        Command::Verify(args) => run_verify(&args),
    }
}

fn keygen(args: &KeygenArgs) -> anyhow::Result<Outcome> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret)
        .map_err(|e| anyhow::anyhow!("cannot gather randomness: {e}"))?;
    let key = WatermarkKey::from_bytes(secret);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&args.output).with_context(|| {
        format!(
            "cannot create `{}` (an existing key is never overwritten)",
            args.output.display()
        )
    })?;
    if let Err(e) = writeln!(file, "{}", key.to_hex()).and_then(|()| file.sync_all()) {
        // No half-written key is left behind to block the next attempt.
        let _ = std::fs::remove_file(&args.output);
        return Err(e).with_context(|| format!("cannot write `{}`", args.output.display()));
    }
    writeln!(
        std::io::stdout(),
        "wrote watermark key {} to {}",
        key.id(),
        args.output.display()
    )?;
    Ok(Outcome::Clean)
}

fn run_verify(args: &VerifyArgs) -> anyhow::Result<Outcome> {
    let key_text = rampart_defend::read_bounded(&args.key, rampart_defend::MAX_KEY_BYTES)
        .with_context(|| format!("cannot read the watermark key `{}`", args.key.display()))?;
    let key = WatermarkKey::from_hex(&key_text)
        .with_context(|| format!("in `{}`", args.key.display()))?;
    let log_file = std::fs::File::open(&args.queries)
        .with_context(|| format!("cannot open `{}`", args.queries.display()))?;
    let log = read_query_log(std::io::BufReader::new(log_file), &args.label_column)
        .with_context(|| format!("in `{}`", args.queries.display()))?;
    if !(args.significance > 0.0 && args.significance < 1.0) {
        anyhow::bail!("--significance must be between 0 and 1");
    }
    // A suspect behind a KServe v2 URL (`--url`) arrives with the gateway's upstream client (issue 4).
    let mut suspect: Box<dyn Suspect> = Box::new(LocalSuspect::open(&args.model)?);
    let first = log.first().map(|q| q.input.clone()).unwrap_or_default();
    let classes = suspect.scores(&[first])?.first().map_or(0, Vec::len);
    if classes < 2 {
        anyhow::bail!("the suspect returns {classes} scores per row; watermark verification needs a classifier");
    }
    let mut labels = |inputs: &[Vec<f32>]| -> Result<Vec<usize>, DefendError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(256) {
            let scores = suspect
                .scores(chunk)
                .map_err(|e| DefendError::Model(format!("{e:#}")))?;
            for row in scores {
                out.push(
                    rampart_defend::argmax(&row)
                        .ok_or_else(|| DefendError::Model("the suspect returned NaN".into()))?,
                );
            }
        }
        Ok(out)
    };
    let verdict = verify(
        &key,
        args.fraction,
        classes,
        &log,
        &mut labels,
        args.significance,
    )?;
    render(args, &verdict)?;
    Ok(if verdict.identified {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn render(args: &VerifyArgs, v: &Verification) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match args.format {
        crate::cmd::profile::Format::Json => writeln!(out, "{}", serde_json::to_string(v)?)?,
        crate::cmd::profile::Format::Text => {
            writeln!(
                out,
                "key {}: {} of {} logged queries were watermarked",
                v.key_id, v.watermarked, v.queries
            )?;
            writeln!(
                out,
                "the suspect gives the watermark label on {} of them (chance rate {:.4})",
                v.matches, v.null_rate
            )?;
            writeln!(out, "false-identification probability: {:.3e}", v.p_value)?;
            if v.identified {
                writeln!(
                    out,
                    "IDENTIFIED: the suspect was trained on the watermarked answers (p < {})",
                    args.significance
                )?;
            } else {
                writeln!(out, "not identified at p < {}", args.significance)?;
            }
        }
    }
    Ok(())
}

/// A suspect model: rows in, scores out.
trait Suspect {
    fn scores(&mut self, rows: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<f32>>>;
}

struct LocalSuspect {
    model: OnnxModel,
    input: String,
}

impl LocalSuspect {
    fn open(path: &Path) -> anyhow::Result<LocalSuspect> {
        let name = path
            .file_stem()
            .map_or("suspect".into(), |s| s.to_string_lossy().into_owned());
        let model = OnnxModel::from_path(&name, path)
            .with_context(|| format!("cannot load `{}`", path.display()))?;
        let input = model
            .metadata()
            .inputs
            .first()
            .map(|i| i.name.clone())
            .context("the suspect model declares no input")?;
        Ok(LocalSuspect { model, input })
    }
}

impl Suspect for LocalSuspect {
    fn scores(&mut self, rows: &[Vec<f32>]) -> anyhow::Result<Vec<Vec<f32>>> {
        let width = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        Ok(rampart_defend::predict(
            &self.model,
            &self.input,
            rows.len(),
            width,
            flat,
        )?)
    }
}
