//! `rampart eval`: attack a model before attackers do, and fail CI when it is too weak.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::ValueEnum;
use rampart_eval::data::{write_csv, Dataset};
use rampart_eval::kserve::{Access, KeyHeader, RemoteModel};
use rampart_eval::plan::{evaluate, Attack, Plan, Target};
use rampart_eval::target::InferScorer;
use rampart_eval::whitebox::{Bounds, Norm};
use rampart_eval::Engine;

use crate::Outcome;

/// Arguments of `rampart eval` (boxed: they are many, and `Command` should stay small).
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    options: Box<Options>,
}

/// The options of `rampart eval`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["model", "url"])))]
pub struct Options {
    /// The ONNX model file to attack (white-box and black-box attacks)
    #[arg(long, value_name = "MODEL.onnx")]
    model: Option<PathBuf>,
    /// A live model speaking KServe v2, such as https://host/v2/models/digits (black-box attacks only)
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// How --url is reached
    #[command(flatten)]
    remote: RemoteArgs,
    /// Labelled test examples (CSV with a header: numeric feature columns and the label column)
    #[arg(long, value_name = "TEST.csv")]
    data: PathBuf,
    /// The name of the label column
    #[arg(long, default_value = "label", value_name = "C")]
    label_column: String,
    /// Evaluate only the first N examples
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    /// Attacks to run, in order [default: fgsm,pgd with --model; square with --url]
    #[arg(long, value_enum, value_delimiter = ',')]
    attacks: Vec<AttackArg>,
    /// The norm that bounds perturbations
    #[arg(long, value_enum, default_value_t = NormArg::Linf)]
    norm: NormArg,
    /// The perturbation budget (thresholds apply at this budget)
    #[arg(long, default_value_t = 0.1)]
    eps: f32,
    /// More budgets for the robust-accuracy curve, such as 0.02,0.05,0.2
    #[arg(long, value_delimiter = ',', value_name = "EPS,...")]
    eps_sweep: Vec<f32>,
    /// PGD's step size at --eps [default: eps/10]; scaled in proportion along --eps-sweep
    #[arg(long)]
    step: Option<f32>,
    /// PGD's number of steps
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// PGD's restarts (the first from the example itself, the others from random points in the ball)
    #[arg(long, default_value_t = 1)]
    restarts: usize,
    /// Black-box query budget per example (Square Attack, HopSkipJump)
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// How the Square Attack lays out an example: C,H,W (default: the model's input shape, or 1,1,features)
    #[arg(long, value_delimiter = ',', value_name = "C,H,W")]
    image_shape: Vec<usize>,
    /// The smallest valid input value (adversarial examples are clipped to the valid range)
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    clip_min: f32,
    /// The largest valid input value
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    clip_max: f32,
    /// Seed of every random choice
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Training rows (members) for membership inference
    #[arg(long, value_name = "TRAIN.csv", requires = "non_members")]
    members: Option<PathBuf>,
    /// Rows never used in training (non-members) for membership inference
    #[arg(long, value_name = "HOLDOUT.csv", requires = "members")]
    non_members: Option<PathBuf>,
    /// Run the extraction study with surrogates trained on 10 ... N queries (half of --data is the query pool, half judges)
    #[arg(long, value_name = "N")]
    extraction_queries: Option<usize>,
    /// Write the first attack's adversarial examples at --eps, with their true labels, as CSV
    #[arg(long, value_name = "FILE")]
    emit_adversarial: Option<PathBuf>,
    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Fail (exit 1) when any attack's robust accuracy at --eps is below this
    #[arg(long, value_name = "FRACTION")]
    min_robust_accuracy: Option<f64>,
    /// Fail (exit 1) when the clean accuracy is below this
    #[arg(long, value_name = "FRACTION")]
    min_clean_accuracy: Option<f64>,
    /// Fail (exit 1) when a membership attack's AUC is above this (needs --members and --non-members)
    #[arg(long, value_name = "AUC")]
    max_membership_auc: Option<f64>,
    /// Fail (exit 1) when a membership attack's TPR at 1% FPR is above this
    #[arg(long, value_name = "FRACTION")]
    max_membership_tpr: Option<f64>,
    /// Fail (exit 1) when the surrogate at the largest budget agrees with the model more than this (needs --extraction-queries)
    #[arg(long, value_name = "FRACTION")]
    max_extraction_agreement: Option<f64>,
}

/// How a model behind a URL is reached: `rampart eval --url` and `rampart watermark verify --url`.
#[derive(Debug, clap::Args)]
pub struct RemoteArgs {
    /// The API key for --url (sent as `Authorization: Bearer`, or `X-API-Key` with --api-key-header x-api-key)
    #[arg(
        long,
        env = "RAMPART_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    api_key: Option<String>,
    /// How the API key is sent
    #[arg(long, value_enum, default_value_t = KeyHeaderArg::Bearer)]
    api_key_header: KeyHeaderArg,
    /// Seconds to wait for each request to --url
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    timeout: u64,
    /// With --url: PEM file of the certificate(s) to trust (a gateway's self-signed `tls/cert.pem`, or the CA
    /// that issued its certificate) instead of the Mozilla roots
    #[arg(long, value_name = "FILE", requires = "url")]
    ca_cert: Option<PathBuf>,
}

impl RemoteArgs {
    /// The client's settings.
    pub fn access(&self) -> Access {
        let header = match self.api_key_header {
            KeyHeaderArg::Bearer => KeyHeader::Bearer,
            KeyHeaderArg::XApiKey => KeyHeader::XApiKey,
        };
        Access {
            key: self
                .api_key
                .clone()
                .filter(|k| !k.is_empty())
                .map(|k| (header, k)),
            timeout: Duration::from_secs(self.timeout.clamp(1, 3600)),
            ca_cert: self.ca_cert.clone(),
        }
    }
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyHeaderArg {
    Bearer,
    XApiKey,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
enum AttackArg {
    Fgsm,
    Pgd,
    Square,
    Hsj,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum NormArg {
    Linf,
    L2,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
    Junit,
    Html,
}

fn fraction(name: &str, v: Option<f64>) -> anyhow::Result<()> {
    if let Some(v) = v {
        if !(0.0..=1.0).contains(&v) {
            bail!("--{name} must be between 0 and 1, not {v}");
        }
    }
    Ok(())
}

pub fn run(args: Args) -> anyhow::Result<Outcome> {
    let args = *args.options;
    for (name, v) in [
        ("min-robust-accuracy", args.min_robust_accuracy),
        ("min-clean-accuracy", args.min_clean_accuracy),
        ("max-membership-auc", args.max_membership_auc),
        ("max-membership-tpr", args.max_membership_tpr),
        ("max-extraction-agreement", args.max_extraction_agreement),
    ] {
        fraction(name, v)?;
    }
    if (args.max_membership_auc.is_some() || args.max_membership_tpr.is_some())
        && args.members.is_none()
    {
        bail!("--max-membership-auc and --max-membership-tpr need --members and --non-members");
    }
    if args.max_extraction_agreement.is_some() && args.extraction_queries.is_none() {
        bail!("--max-extraction-agreement needs --extraction-queries");
    }
    if !(args.eps.is_finite() && args.eps > 0.0)
        || args.eps_sweep.iter().any(|e| !(e.is_finite() && *e > 0.0))
    {
        bail!("--eps and --eps-sweep take positive numbers");
    }
    let bounds = Bounds {
        min: args.clip_min,
        max: args.clip_max,
    };
    if bounds.min.partial_cmp(&bounds.max) != Some(std::cmp::Ordering::Less) {
        bail!("--clip-min must be below --clip-max");
    }
    let mut data =
        Dataset::from_path(&args.data, &args.label_column).context("cannot load --data")?;
    if let Some(n) = args.limit {
        data.truncate(n.max(1));
    }
    data.check_range(bounds.min, bounds.max)?;
    let privacy = match (&args.members, &args.non_members) {
        (Some(m), Some(o)) => {
            let m = Dataset::from_path(m, &args.label_column).context("cannot load --members")?;
            let o =
                Dataset::from_path(o, &args.label_column).context("cannot load --non-members")?;
            Some((m, o))
        }
        _ => None,
    };
    let attacks: Vec<Attack> = if args.attacks.is_empty() {
        if args.model.is_some() {
            vec![Attack::Fgsm, Attack::Pgd]
        } else {
            vec![Attack::Square]
        }
    } else {
        args.attacks
            .iter()
            .map(|a| match a {
                AttackArg::Fgsm => Attack::Fgsm,
                AttackArg::Pgd => Attack::Pgd,
                AttackArg::Square => Attack::Square,
                AttackArg::Hsj => Attack::Hsj,
            })
            .collect()
    };
    if args.url.is_some() {
        if let Some(a) = attacks.iter().find(|a| a.white_box()) {
            bail!("`{}` is a white-box attack and needs the model file: use --model, or --attacks square,hsj with --url", a.as_str());
        }
    }
    let progress = |line: &str| {
        let _ = writeln!(std::io::stderr(), "rampart eval: {line}");
    };
    let features = data.features();
    let (outcome, target_name) = if let Some(path) = &args.model {
        let bytes = read_model(path)?;
        let oracle = rampart_infer::OnnxModel::from_bytes(&path.display().to_string(), &bytes)
            .with_context(|| format!("cannot load `{}`", path.display()))?;
        let oracle = InferScorer::new(oracle, features).with_context(|| {
            format!(
                "`{}` does not fit `{}`",
                path.display(),
                args.data.display()
            )
        })?;
        let needs_gradients = attacks.iter().any(|a| a.white_box());
        let engine =
            if needs_gradients {
                Some(Engine::from_onnx(&bytes).with_context(|| {
                    format!("cannot run white-box attacks on `{}`", path.display())
                })?)
            } else {
                None
            };
        let image = image_shape(&args.image_shape, oracle.input_shape(), features)?;
        let plan = plan(&args, attacks, image, bounds);
        let target = Target {
            oracle: &oracle,
            engine: engine.as_ref(),
            name: path.display().to_string(),
        };
        let out = evaluate(
            &plan,
            &target,
            &data,
            privacy.as_ref().map(|(m, o)| (m, o)),
            &progress,
        )?;
        (out, path.display().to_string())
    } else if let Some(url) = &args.url {
        let remote = RemoteModel::connect(url, &args.remote.access())?;
        let oracle = InferScorer::new(remote, features)
            .with_context(|| format!("`{url}` does not fit `{}`", args.data.display()))?;
        let image = image_shape(&args.image_shape, oracle.input_shape(), features)?;
        let plan = plan(&args, attacks, image, bounds);
        let target = Target {
            oracle: &oracle,
            engine: None,
            name: url.clone(),
        };
        let out = evaluate(
            &plan,
            &target,
            &data,
            privacy.as_ref().map(|(m, o)| (m, o)),
            &progress,
        )?;
        progress(&format!("{} queries sent to {url}", oracle.queries()));
        (out, url.clone())
    } else {
        bail!("give --model or --url");
    };
    let mut report = outcome.report;
    report.target = target_name;
    report.data = args.data.display().to_string();
    if let (Some(file), Some(adv)) = (&args.emit_adversarial, &outcome.adversarial) {
        write_csv(file, &data.columns, &data.label_column, adv, &data.labels)?;
        progress(&format!(
            "wrote {} adversarial examples to {}",
            data.len(),
            file.display()
        ));
    }
    let rendered = match args.format {
        Format::Text => report.text(),
        Format::Json => format!("{}\n", serde_json::to_string_pretty(&report)?),
        Format::Junit => report.junit(),
        Format::Html => report.html(),
    };
    std::io::stdout().write_all(rendered.as_bytes())?;
    Ok(if report.passed() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

fn read_model(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?
        .len();
    if size > rampart_eval::graph::MAX_MODEL_BYTES as u64 {
        bail!(
            "`{}` is larger than {} bytes",
            path.display(),
            rampart_eval::graph::MAX_MODEL_BYTES
        );
    }
    std::fs::read(path).with_context(|| format!("cannot read `{}`", path.display()))
}

fn image_shape(given: &[usize], input: &[usize], features: usize) -> anyhow::Result<[usize; 3]> {
    let shape = match given {
        [] => match input {
            [c, h, w] => [*c, *h, *w],
            [h, w] => [1, *h, *w],
            _ => [1, 1, features],
        },
        [c, h, w] => [*c, *h, *w],
        _ => bail!("--image-shape takes three numbers: C,H,W"),
    };
    if shape.iter().product::<usize>() != features {
        bail!("--image-shape {shape:?} does not hold the {features} features of an example");
    }
    Ok(shape)
}

fn plan(args: &Options, attacks: Vec<Attack>, image: [usize; 3], bounds: Bounds) -> Plan {
    Plan {
        attacks,
        norm: match args.norm {
            NormArg::Linf => Norm::Linf,
            NormArg::L2 => Norm::L2,
        },
        eps: args.eps,
        sweep: args.eps_sweep.clone(),
        step: args.step.unwrap_or(args.eps / 10.0),
        steps: args.steps,
        restarts: args.restarts,
        queries: args.queries,
        image,
        bounds,
        seed: args.seed,
        extraction_queries: args.extraction_queries,
        min_robust_accuracy: args.min_robust_accuracy,
        min_clean_accuracy: args.min_clean_accuracy,
        max_membership_auc: args.max_membership_auc,
        max_membership_tpr: args.max_membership_tpr,
        max_extraction_agreement: args.max_extraction_agreement,
    }
}
