//! `rampart watermark`: keys for DAWN output watermarking, and the verification of a suspect model.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rampart_defend::watermark::{read_query_log, verify, Verification, WatermarkKey};
use rampart_defend::DefendError;
use rampart_infer::{Model, OnnxModel, Tensor, TensorData};

use crate::Outcome;

/// The subcommands of `rampart watermark`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Create a watermark key (64 hex digits, file mode 0600; never overwrites)
    Keygen(KeygenArgs),
    /// Decide whether a suspect model was trained on watermarked answers (exit 1 when it was)
    Verify(Box<VerifyArgs>),
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
#[command(group(clap::ArgGroup::new("suspect").required(true).args(["model", "url"])))]
pub struct VerifyArgs {
    /// The suspect model as an ONNX file (its first input takes the logged rows)
    #[arg(long, value_name = "SUSPECT.onnx")]
    pub model: Option<PathBuf>,
    /// The suspect behind a KServe v2 URL, such as https://host/v2/models/digits (its answer's integer output is
    /// taken as labels, else its first output as scores)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// How --url is reached
    #[command(flatten)]
    pub remote: crate::cmd::eval::RemoteArgs,
    /// The watermark key file
    #[arg(long)]
    pub key: PathBuf,
    /// The query log: CSV of the inputs served and the model's own label for each, such as the gateway's record
    /// `<state_dir>/watermark/<model>.csv` (its `time` and `principal` columns are not inputs)
    #[arg(long)]
    pub queries: PathBuf,
    /// The label column of the query log
    #[arg(long, default_value = "label")]
    pub label_column: String,
    /// Only the rows answered to this principal (the suspected thief), by the query log's `principal` column
    #[arg(long)]
    pub principal: Option<String>,
    /// The protected model's number of classes [default: the number of scores the suspect gives]; needed when the
    /// suspect answers labels only
    #[arg(long, value_name = "N")]
    pub classes: Option<usize>,
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
    let key = WatermarkKey::create_file(&args.output)
        .with_context(|| format!("cannot create `{}`", args.output.display()))?
        .with_context(|| {
            format!(
                "`{}` exists: an existing key is never overwritten",
                args.output.display()
            )
        })?;
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
    let log = read_query_log(
        std::io::BufReader::new(log_file),
        &args.label_column,
        args.principal.as_deref(),
    )
    .with_context(|| format!("in `{}`", args.queries.display()))?;
    if !(args.significance > 0.0 && args.significance < 1.0) {
        anyhow::bail!("--significance must be between 0 and 1");
    }
    let suspect = match (&args.model, &args.url) {
        (Some(path), _) => Suspect::open(path)?,
        (None, Some(url)) => Suspect::connect(url, &args.remote.access())?,
        (None, None) => anyhow::bail!("give --model or --url"),
    };
    let first = log.first().map(|q| q.input.clone()).unwrap_or_default();
    let (_, scored) = suspect.labels(std::slice::from_ref(&first))?;
    let classes = match (args.classes, scored) {
        (Some(given), Some(scored)) if given != scored => anyhow::bail!(
            "the suspect scores {scored} classes, --classes says {given}: give the protected model's number of classes"
        ),
        (Some(classes), _) | (None, Some(classes)) => classes,
        (None, None) => anyhow::bail!(
            "the suspect answers labels only: give the protected model's number of classes with --classes"
        ),
    };
    if classes < 2 {
        anyhow::bail!(
            "the suspect gives {classes} classes; watermark verification needs a classifier"
        );
    }
    let total = log.len();
    let mut asked = 0;
    let mut labels = |inputs: &[Vec<f32>]| -> Result<Vec<usize>, DefendError> {
        let mut out = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(BATCH) {
            let (labels, _) = suspect
                .labels(chunk)
                .map_err(|e| DefendError::Model(format!("{e:#}")))?;
            if let Some(bad) = labels.iter().find(|&&l| l >= classes) {
                return Err(DefendError::Model(format!(
                    "the suspect answered label {bad}, not one of {classes} classes"
                )));
            }
            out.extend(labels);
            asked += chunk.len();
            if total > 8 * BATCH {
                eprintln!("asked the suspect {asked} of {total} logged queries");
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
                "key {}: {} of {} distinct logged queries were watermarked",
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

/// Rows asked of the suspect at once.
const BATCH: usize = 256;

/// A suspect model: a file or a URL, asked for labels.
struct Suspect {
    model: Box<dyn Model>,
    input: String,
    /// The input's dimensions after the batch's, when the model fixes them all.
    dims: Option<Vec<usize>>,
}

impl Suspect {
    fn open(path: &Path) -> anyhow::Result<Suspect> {
        let name = path
            .file_stem()
            .map_or("suspect".into(), |s| s.to_string_lossy().into_owned());
        let model = OnnxModel::from_path(&name, path)
            .with_context(|| format!("cannot load `{}`", path.display()))?;
        Suspect::new(Box::new(model))
    }

    fn connect(url: &str, access: &rampart_eval::kserve::Access) -> anyhow::Result<Suspect> {
        let model = rampart_eval::kserve::RemoteModel::connect(url, access)?;
        Suspect::new(Box::new(model))
    }

    fn new(model: Box<dyn Model>) -> anyhow::Result<Suspect> {
        let input = model
            .metadata()
            .inputs
            .first()
            .context("the suspect declares no input")?;
        let rest = input.shape.get(1..).unwrap_or_default();
        let dims = (!rest.is_empty() && rest.iter().all(|&d| d > 0))
            .then(|| rest.iter().map(|&d| d as usize).collect());
        Ok(Suspect {
            input: input.name.clone(),
            dims,
            model,
        })
    }

    /// The suspect's labels of `rows`, and the number of classes it scores (None when it answers labels only).
    fn labels(&self, rows: &[Vec<f32>]) -> anyhow::Result<(Vec<usize>, Option<usize>)> {
        let width = rows.first().map_or(0, Vec::len);
        let mut shape = vec![rows.len()];
        match &self.dims {
            Some(dims) if dims.iter().product::<usize>() == width => shape.extend(dims),
            _ => shape.push(width),
        }
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let tensor = Tensor::new(self.input.clone(), shape, TensorData::Fp32(flat))?;
        let outputs = self.model.infer(std::slice::from_ref(&tensor))?;
        // An answer of labels (a hardened gateway's `label`): integers, one per row.
        if let Some(TensorData::Int64(labels)) = outputs
            .iter()
            .map(|t| &t.data)
            .find(|d| matches!(d, TensorData::Int64(v) if v.len() == rows.len()))
        {
            let labels = labels
                .iter()
                .map(|&l| usize::try_from(l))
                .collect::<Result<_, _>>()
                .map_err(|_| anyhow::anyhow!("the suspect answered a negative label"))?;
            return Ok((labels, None));
        }
        let first = outputs.first().context("the suspect answered no output")?;
        let (n, classes, values) = rampart_defend::rows_of(first)?;
        if n != rows.len() || classes == 0 {
            anyhow::bail!("the suspect answered {n} rows for {}", rows.len());
        }
        let labels = values
            .chunks(classes)
            .map(|row| rampart_defend::argmax(row).context("the suspect answered NaN"))
            .collect::<anyhow::Result<_>>()?;
        Ok((labels, Some(classes)))
    }
}
