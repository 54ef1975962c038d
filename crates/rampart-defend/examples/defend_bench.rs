//! The measuring harness of `bench/defend.sh`: runs the defences of this crate on the digits example as the gateway
//! would (one stage after another, per request) and prints what the targets ask for. Not a test: a tool.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "a benchmark harness over trusted, generated files"
)]

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use rampart_defend::anomaly::{AnomalyConfig, AnomalyMonitor};
use rampart_defend::detect::{Detector, DetectorConfig};
use rampart_defend::extraction::{Action, ExtractionConfig, ExtractionMonitor};
use rampart_defend::harden::OutputPolicy;
use rampart_defend::profile::Profile;
use rampart_defend::sanitise::{ImageShape, Sanitiser};
use rampart_defend::watermark::{WatermarkKey, Watermarker};
use rampart_defend::{argmax, predict};
use rampart_infer::{OnnxModel, Tensor, TensorData};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

const SHAPE: ImageShape = ImageShape {
    height: 8,
    width: 8,
    channels: 1,
};

fn read_csv(path: &str) -> Res<(Vec<f32>, Vec<i64>)> {
    let text = std::fs::read_to_string(path)?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().ok_or("empty csv")?.split(',').collect();
    let label_at = header.iter().position(|h| *h == "label");
    let (mut rows, mut labels) = (Vec::new(), Vec::new());
    for line in lines {
        for (i, f) in line.split(',').enumerate() {
            if Some(i) == label_at {
                labels.push(f.parse()?);
            } else {
                rows.push(f.parse::<f32>()?);
            }
        }
    }
    Ok((rows, labels))
}

fn labels_of(model: &OnnxModel, values: &[f32]) -> Res<Vec<usize>> {
    let out = predict(model, "input", values.len() / 64, 64, values.to_vec())?;
    Ok(out.iter().map(|r| argmax(r).unwrap()).collect())
}

fn accuracy(model: &OnnxModel, values: &[f32], labels: &[i64]) -> Res<f64> {
    let got = labels_of(model, values)?;
    Ok(got
        .iter()
        .zip(labels)
        .filter(|(g, l)| **g as i64 == **l)
        .count() as f64
        / labels.len() as f64)
}

/// A deterministic shuffle (xorshift), so every run splits the same way.
fn shuffle<T>(v: &mut [T], mut seed: u64) {
    for i in (1..v.len()).rev() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        v.swap(i, (seed % (i as u64 + 1)) as usize);
    }
}

fn rows(values: &[f32], idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| values[i * 64..(i + 1) * 64].to_vec())
        .collect()
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "attacks" => attacks(&arg(2), &arg(3), &arg(4), &arg(5)),
        "detect" => detect(&arg(2), &arg(3), &arg(4), &arg(5)),
        "sanitise" => sanitise(&arg(2), &arg(3), &arg(4)),
        "extraction" => extraction(&arg(2), &arg(3), &arg(4), &arg(5)),
        "serve-hardened" => serve_hardened(&arg(2), &arg(3), &arg(4)),
        "cost" => cost(&arg(2), &arg(3), &arg(4)),
        "sanitise-time" => sanitise_time(&arg(2), &arg(3)),
        _ => Err(
            "usage: defend_bench attacks|detect|sanitise|extraction|serve-hardened|cost|sanitise-time ..."
                .into(),
        ),
    }
}

/// The attacks, at eps 0.1 against the true labels, from the evaluator (`rampart-eval`), written as CSV files
/// `<name>.csv` (test rows in order, true labels):
/// - `fgsm`: one signed-gradient step;
/// - `pgd`: PGD-40, step 0.01, no random start, every step taken (as ART does: the examples end well inside the
///   wrong class);
/// - `pgd-early`: the evaluator's PGD, which keeps the first iterate that fools the model (just across the boundary);
/// - `square`: the Square Attack, 1,000 queries, p_init 0.8;
/// - `pgd-lattice`: an adaptive attack on the off-support score: `pgd` with each pixel's perturbation rounded toward
///   zero onto the training data's lattice (multiples of the profile's step), still within eps.
fn attacks(profile: &str, model: &str, test: &str, out: &str) -> Res<()> {
    use rampart_eval::square::{square_attack, SquareConfig};
    use rampart_eval::whitebox::{fgsm, pgd, project, Bounds, Norm, PgdConfig};
    let profile = Profile::from_json(&std::fs::read_to_string(profile)?)?;
    let engine = rampart_eval::Engine::from_onnx(&std::fs::read(model)?)?;
    let (x, y) = read_csv(test)?;
    let labels: Vec<usize> = y.iter().map(|&l| l as usize).collect();
    let bounds = Bounds { min: 0.0, max: 1.0 };
    let eps = 0.1;
    let config = PgdConfig {
        norm: Norm::Linf,
        eps,
        step: 0.01,
        steps: 40,
        restarts: 1,
        bounds,
        seed: 0,
    };
    std::fs::create_dir_all(out)?;
    let write = |name: &str, adv: &[f32], seconds: f64| -> Res<()> {
        let header: Vec<String> = (0..64).map(|i| format!("px{i}")).collect();
        let mut text = format!("{},label\n", header.join(","));
        for (row, label) in adv.chunks_exact(64).zip(&y) {
            let fields: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            text += &format!("{},{label}\n", fields.join(","));
        }
        let path = format!("{out}/{name}.csv");
        std::fs::write(format!("{path}.tmp"), text)?;
        std::fs::rename(format!("{path}.tmp"), &path)?;
        let logits = engine.logits(adv)?;
        let acc = rampart_eval::target::accuracy(&logits, 10, &labels);
        println!(
            "attack: {name:<12} robust accuracy {acc:.4}  ({seconds:.2} s for {} rows)",
            y.len()
        );
        Ok(())
    };
    let t = Instant::now();
    let adv = fgsm(&engine, &x, &labels, Norm::Linf, eps, bounds)?;
    write("fgsm", &adv.x, t.elapsed().as_secs_f64())?;
    let t = Instant::now();
    let early = pgd(&engine, &x, &labels, &config)?;
    write("pgd-early", &early.x, t.elapsed().as_secs_f64())?;
    // Every step taken, as ART's ProjectedGradientDescent does.
    let t = Instant::now();
    let mut adv = x.clone();
    for _ in 0..config.steps {
        let (_, grad) = engine.loss_gradient(&adv, &labels)?;
        for (a, &g) in adv.iter_mut().zip(&grad) {
            if g > 0.0 {
                *a += config.step;
            } else if g < 0.0 {
                *a -= config.step;
            }
        }
        project(&mut adv, &x, 64, &config);
    }
    write("pgd", &adv, t.elapsed().as_secs_f64())?;
    let steps: Vec<f32> = profile
        .features
        .iter()
        .map(|f| f.step.unwrap_or(0.0) as f32)
        .collect();
    let lattice: Vec<f32> = adv
        .iter()
        .zip(&x)
        .enumerate()
        .map(|(i, (&a, &o))| {
            let step = steps[i % 64];
            if step > 0.0 {
                o + ((a - o) / step).trunc() * step
            } else {
                o
            }
        })
        .collect();
    write("pgd-lattice", &lattice, 0.0)?;
    let t = Instant::now();
    let square = square_attack(
        &engine,
        &x,
        &labels,
        &SquareConfig {
            norm: Norm::Linf,
            eps,
            queries: 1000,
            p_init: 0.8,
            image: [1, 8, 8],
            bounds,
            seed: 0,
        },
    )?;
    write("square", &square.x, t.elapsed().as_secs_f64())?;
    Ok(())
}

/// The attacks `detect` scores.
const ATTACKS: [&str; 5] = ["fgsm", "pgd", "pgd-early", "square", "pgd-lattice"];

/// Detection rate on successful attacks and false-positive rate on clean rows, cross-fitted: the test rows are
/// split in two halves; the detector is calibrated on one and scored on the other, then the other way round, so every
/// row is scored by a detector that never saw it. Rampart's full detector, without its off-support component, and
/// its squeezing component alone (the classic detector).
fn detect(profile: &str, model: &str, test: &str, attacks: &str) -> Res<()> {
    use rampart_defend::detect::Component;
    let profile = Profile::from_json(&std::fs::read_to_string(profile)?)?;
    let model = OnnxModel::from_path("digits", Path::new(model))?;
    let (x, y) = read_csv(test)?;
    let n = y.len();
    let mut order: Vec<usize> = (0..n).collect();
    shuffle(&mut order, 0x9e37_79b9_7f4a_7c15);
    let (a, b) = order.split_at(n / 2);
    let attacked: Vec<(&str, Vec<f32>, Vec<usize>)> = ATTACKS
        .iter()
        .map(|name| {
            let (adv, _) = read_csv(&format!("{attacks}/{name}.csv"))?;
            let predicted = labels_of(&model, &adv)?;
            Ok((*name, adv, predicted))
        })
        .collect::<Res<_>>()?;
    let variants: [(&str, Vec<Component>); 4] = [
        ("all components", Component::ALL.to_vec()),
        (
            "without off-support",
            Component::ALL
                .iter()
                .copied()
                .filter(|c| *c != Component::OffSupport)
                .collect(),
        ),
        ("squeezing alone", vec![Component::Squeeze]),
        (
            "without class distance",
            Component::ALL
                .iter()
                .copied()
                .filter(|c| *c != Component::ClassDistance)
                .collect(),
        ),
    ];
    for (variant, components) in variants {
        let mut config = DetectorConfig::for_shape(SHAPE);
        config.components = components;
        let (mut false_pos, mut caught, mut successful) =
            (0, vec![0; ATTACKS.len()], vec![0; ATTACKS.len()]);
        for (cal, held) in [(a, b), (b, a)] {
            let mut detector = Detector::new(config.clone(), &profile, "input")?;
            detector.calibrate(&model, &rows(&x, cal))?;
            false_pos += detector
                .assess(&model, &rows(&x, held))?
                .iter()
                .filter(|v| v.adversarial)
                .count();
            for (j, (_, adv, predicted)) in attacked.iter().enumerate() {
                let won: Vec<usize> = held
                    .iter()
                    .copied()
                    .filter(|&i| predicted[i] as i64 != y[i])
                    .collect();
                successful[j] += won.len();
                if !won.is_empty() {
                    caught[j] += detector
                        .assess(&model, &rows(adv, &won))?
                        .iter()
                        .filter(|v| v.adversarial)
                        .count();
                }
            }
        }
        let mut line = format!(
            "detector: {variant:<22} target FPR 0.02, measured FPR {:.4} ({false_pos}/{n})",
            false_pos as f64 / n as f64
        );
        for (j, name) in ATTACKS.iter().enumerate() {
            line += &format!(
                "  {name} {:.4} ({}/{})",
                caught[j] as f64 / successful[j].max(1) as f64,
                caught[j],
                successful[j]
            );
        }
        println!("{line}");
    }
    Ok(())
}

fn sanitisers() -> Vec<(&'static str, Sanitiser)> {
    vec![
        ("bit-depth 2", Sanitiser::BitDepth { bits: 2 }),
        ("bit-depth 3", Sanitiser::BitDepth { bits: 3 }),
        ("median 2x2", Sanitiser::Median { size: 2 }),
        ("median 3x3", Sanitiser::Median { size: 3 }),
        ("gaussian 0.5", Sanitiser::Gaussian { sigma: 0.5 }),
        ("low-pass 0.3", Sanitiser::LowPass { cutoff: 0.3 }),
        ("jpeg q75", Sanitiser::Jpeg { quality: 75 }),
    ]
}

/// Clean and robust accuracy behind each sanitiser.
fn sanitise(model: &str, test: &str, attacks: &str) -> Res<()> {
    let model = OnnxModel::from_path("digits", Path::new(model))?;
    let (x, y) = read_csv(test)?;
    let attacked: Vec<(&str, Vec<f32>)> = ["fgsm", "pgd", "square"]
        .iter()
        .map(|a| Ok((*a, read_csv(&format!("{attacks}/{a}.csv"))?.0)))
        .collect::<Res<_>>()?;
    let mut line = format!(
        "sanitiser: {:<14} clean {:.4}",
        "none",
        accuracy(&model, &x, &y)?
    );
    for (name, adv) in &attacked {
        line += &format!("  {name} {:.4}", accuracy(&model, adv, &y)?);
    }
    println!("{line}");
    for (label, s) in sanitisers() {
        let mut clean = x.clone();
        s.apply_batch(&mut clean, SHAPE)?;
        let mut line = format!(
            "sanitiser: {label:<14} clean {:.4}",
            accuracy(&model, &clean, &y)?
        );
        for (name, adv) in &attacked {
            let mut a = adv.clone();
            s.apply_batch(&mut a, SHAPE)?;
            line += &format!("  {name} {:.4}", accuracy(&model, &a, &y)?);
        }
        println!("{line}");
    }
    Ok(())
}

/// Queries before extraction is flagged, per client kind, and false alarms on benign clients.
fn extraction(profile: &str, model: &str, test: &str, jbda: &str) -> Res<()> {
    let profile = Profile::from_json(&std::fs::read_to_string(profile)?)?;
    let model = OnnxModel::from_path("digits", Path::new(model))?;
    let monitor = ExtractionMonitor::new(ExtractionConfig::default(), &profile)?;
    let (x, _) = read_csv(test)?;
    let n = x.len() / 64;
    let predicted = labels_of(&model, &x)?;
    let mut alarms = 0;
    for client in 0..20_u64 {
        let mut order: Vec<usize> = (0..1000).map(|i| i % n).collect();
        shuffle(&mut order, client + 1);
        let mut alarmed = false;
        for &i in &order {
            let d = monitor.observe(
                &format!("benign-{client}"),
                &x[i * 64..(i + 1) * 64],
                predicted[i],
            )?;
            if d.action != Action::Allow && !alarmed {
                alarmed = true;
                println!(
                    "extraction: benign client {client} alarmed at {} ({:?})",
                    d.queries, d.signals
                );
            }
        }
        alarms += usize::from(alarmed);
    }
    println!("extraction: benign clients (20 x 1000 test-row replays): {alarms} false alarms");
    let report = |name: &str, queries: &[f32], monitor: &ExtractionMonitor| -> Res<()> {
        let labels = labels_of(&model, queries)?;
        for (i, row) in queries.chunks_exact(64).enumerate() {
            let d = monitor.observe(name, row, labels[i])?;
            if d.action != Action::Allow {
                println!(
                    "extraction: {name}: flagged after {} queries ({:?}, PRADA W {:?})",
                    i + 1,
                    d.signals,
                    d.prada_w.map(|w| (w * 1000.0).round() / 1000.0)
                );
                return Ok(());
            }
        }
        println!(
            "extraction: {name}: not flagged in {} queries",
            queries.len() / 64
        );
        Ok(())
    };
    let mut seed = 42_u64;
    let noise: Vec<f32> = (0..64 * 1000)
        .map(|_| {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 40) as f32 / (1u64 << 24) as f32
        })
        .collect();
    report("random-noise client", &noise, &monitor)?;
    let (jbda_rows, _) = read_csv(jbda)?;
    report("JBDA client", &jbda_rows, &monitor)?;
    // PRADA alone (the other signals never tested) for comparison with the anchor.
    let prada_only = ExtractionConfig {
        min_queries: usize::MAX,
        ..ExtractionConfig::default()
    };
    let prada = ExtractionMonitor::new(prada_only, &profile)?;
    report("random-noise client, PRADA alone", &noise, &prada)?;
    report("JBDA client, PRADA alone", &jbda_rows, &prada)?;
    let (train, _) = read_csv("examples/digits/train.csv")?;
    let mut natural: Vec<usize> = (0..train.len() / 64).collect();
    shuffle(&mut natural, 7);
    report(
        "natural-data client (train rows)",
        &rows(&train, &natural),
        &monitor,
    )?;
    Ok(())
}

/// Natural-data extraction against output hardening: answers `queries` as the gateway would under each policy and
/// writes what a thief receives, one CSV per policy in `out_dir`: `full.csv` and `top_k.csv` with the probabilities
/// returned (`p0`..`p9`, zero where withheld) and the label, `label_only.csv` with the label alone.
fn serve_hardened(model: &str, queries: &str, out_dir: &str) -> Res<()> {
    let model = OnnxModel::from_path("digits", Path::new(model))?;
    let (x, _) = read_csv(queries)?;
    let n = x.len() / 64;
    let scores = predict(&model, "input", n, 64, x.clone())?;
    let flat: Vec<f32> = scores.iter().flatten().copied().collect();
    let classes = flat.len() / n;
    let tensor = Tensor::new("logits", vec![n, classes], TensorData::Fp32(flat))?;
    let pixels = (0..64)
        .map(|i| format!("px{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let policies = [
        ("full", OutputPolicy::Full { decimals: None }),
        (
            "top_k",
            OutputPolicy::TopK {
                k: 3,
                decimals: Some(2),
            },
        ),
        ("label_only", OutputPolicy::LabelOnly),
    ];
    for (name, policy) in policies {
        let out = policy.apply(&tensor)?;
        let get = |name: &str| out.iter().find(|t| t.name == name);
        let ints = |t: Option<&Tensor>| match t.map(|t| &t.data) {
            Some(TensorData::Int64(v)) => v.clone(),
            _ => Vec::new(),
        };
        let floats = |t: Option<&Tensor>| match t.map(|t| &t.data) {
            Some(TensorData::Fp32(v)) => v.clone(),
            _ => Vec::new(),
        };
        let labels = ints(get("label"));
        // What the thief sees of the probabilities, as a dense row per query.
        let mut probs = vec![0.0_f32; n * classes];
        match policy {
            OutputPolicy::Full { .. } => probs = floats(get("probabilities")),
            OutputPolicy::TopK { k, .. } => {
                let (at, p) = (
                    ints(get("top_k_labels")),
                    floats(get("top_k_probabilities")),
                );
                for (i, (l, v)) in at.iter().zip(&p).enumerate() {
                    probs[(i / k) * classes + *l as usize] = *v;
                }
            }
            OutputPolicy::LabelOnly => {}
        }
        let header = match policy {
            OutputPolicy::LabelOnly => format!("{pixels},label\n"),
            _ => {
                let p = (0..classes)
                    .map(|c| format!("p{c}"))
                    .collect::<Vec<_>>()
                    .join(",");
                format!("{pixels},{p},label\n")
            }
        };
        let mut text = header;
        for (i, row) in x.chunks_exact(64).enumerate() {
            let mut cells: Vec<String> = row.iter().map(|v| v.to_string()).collect();
            if !matches!(policy, OutputPolicy::LabelOnly) {
                cells.extend(
                    probs[i * classes..(i + 1) * classes]
                        .iter()
                        .map(|v| v.to_string()),
                );
            }
            cells.push(labels[i].to_string());
            text += &cells.join(",");
            text.push('\n');
        }
        std::fs::write(Path::new(out_dir).join(format!("{name}.csv")), text)?;
    }
    println!(
        "hardening: served {n} natural queries under full, top_k (k 3, 2 decimals) and label_only"
    );
    Ok(())
}

/// Per-request cost of each stage (one row per request, as clients send), next to the model's own inference.
fn cost(profile: &str, model: &str, test: &str) -> Res<()> {
    let profile = Profile::from_json(&std::fs::read_to_string(profile)?)?;
    let model = OnnxModel::from_path("digits", Path::new(model))?;
    let (x, y) = read_csv(test)?;
    let n = y.len().min(300);
    let mut detector = Detector::new(DetectorConfig::for_shape(SHAPE), &profile, "input")?;
    detector.calibrate(&model, &x[..200 * 64])?;
    let monitor = ExtractionMonitor::new(ExtractionConfig::default(), &profile)?;
    let mut anomaly = AnomalyMonitor::new(AnomalyConfig::default())?;
    let marker = Watermarker::new(WatermarkKey::from_bytes([7; 32]), 0.05)?;
    let schema = rampart_defend::schema::SchemaCheck::new(&profile, 0.0)?;
    let mut times: HashMap<&str, f64> = HashMap::new();
    let mut time = |name: &'static str, f: &mut dyn FnMut() -> Res<()>| -> Res<()> {
        let t = Instant::now();
        f()?;
        *times.entry(name).or_default() += t.elapsed().as_secs_f64();
        Ok(())
    };
    for i in 0..n {
        let row = x[i * 64..(i + 1) * 64].to_vec();
        let tensor = Tensor::new("input", vec![1, 64], TensorData::Fp32(row.clone()))?;
        time("model inference", &mut || {
            rampart_infer::Model::infer(&model, std::slice::from_ref(&tensor))?;
            Ok(())
        })?;
        // Timed whatever the verdict: some test rows do fall outside the training range.
        time("schema check", &mut || {
            let _in_range = schema.check(&tensor).is_ok();
            Ok(())
        })?;
        time("sanitise bit-depth 2", &mut || {
            Ok(Sanitiser::BitDepth { bits: 2 }.apply(&mut row.clone(), SHAPE)?)
        })?;
        time("sanitise median 2x2", &mut || {
            Ok(Sanitiser::Median { size: 2 }.apply(&mut row.clone(), SHAPE)?)
        })?;
        time("sanitise gaussian", &mut || {
            Ok(Sanitiser::Gaussian { sigma: 0.5 }.apply(&mut row.clone(), SHAPE)?)
        })?;
        time("sanitise low-pass", &mut || {
            Ok(Sanitiser::LowPass { cutoff: 0.3 }.apply(&mut row.clone(), SHAPE)?)
        })?;
        time("sanitise jpeg", &mut || {
            Ok(Sanitiser::Jpeg { quality: 75 }.apply(&mut row.clone(), SHAPE)?)
        })?;
        time("adversarial detector", &mut || {
            detector.assess(&model, &row)?;
            Ok(())
        })?;
        time("extraction monitor", &mut || {
            monitor.observe(&format!("client-{}", i % 20), &row, (y[i]) as usize)?;
            Ok(())
        })?;
        let scores = Tensor::new(
            "logits",
            vec![1, 10],
            TensorData::Fp32((0..10).map(|c| c as f32 * 0.1).collect()),
        )?;
        time("output hardening top-3", &mut || {
            OutputPolicy::TopK {
                k: 3,
                decimals: Some(2),
            }
            .apply(&scores)?;
            Ok(())
        })?;
        time("watermark", &mut || {
            let mut s: Vec<f32> = (0..10).map(|c| c as f32).collect();
            marker.apply(&row, &mut s);
            Ok(())
        })?;
        time("anomaly monitor", &mut || {
            anomaly.record(i as u64, "client", "digits", 1, false, "10.0.0.1");
            Ok(())
        })?;
    }
    // One long-lived principal: 5,000 distinct queries (test rows, each with one pixel moved to a level of its own),
    // timed over the last 1,000, when its history and PRADA's distances are full.
    let long = ExtractionMonitor::new(ExtractionConfig::default(), &profile)?;
    let mut late = 0.0;
    for q in 0..5000 {
        let i = q % n;
        let mut row = x[i * 64..(i + 1) * 64].to_vec();
        row[(q * 7) % 64] = ((q / n) % 17) as f32 / 16.0;
        let t = Instant::now();
        long.observe("long-lived", &row, y[i] as usize)?;
        if q >= 4000 {
            late += t.elapsed().as_secs_f64();
        }
    }
    println!(
        "cost: extraction monitor, one principal's queries 4,001-5,000: {:.1} us/request",
        late / 1000.0 * 1e6
    );
    let model_us = times["model inference"] / n as f64 * 1e6;
    let mut names: Vec<_> = times.keys().copied().collect();
    names.sort_unstable();
    for name in names {
        let us = times[name] / n as f64 * 1e6;
        println!(
            "cost: {name:<24} {us:>9.1} us/request  ({:.2}x the model's inference)",
            us / model_us
        );
    }
    Ok(())
}

/// The sanitisers on one `HxWxC` image (`shape`, e.g. `224x224x3`) whose values are `((i * 7919) % 1000) / 1000`:
/// prints `name milliseconds` (the best of 7 runs) and writes each output to `<out>/<name>.f32` (little-endian), for
/// `bench/defend_attacks.py sanitise-time` to time scipy on the same image and compare the values.
fn sanitise_time(shape: &str, out: &str) -> Res<()> {
    let dims: Vec<usize> = shape.split('x').map(str::parse).collect::<Result<_, _>>()?;
    let [height, width, channels] = dims[..] else {
        return Err("the shape is HxWxC".into());
    };
    let shape = ImageShape {
        height,
        width,
        channels,
    };
    let image: Vec<f32> = (0..shape.len())
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    std::fs::create_dir_all(out)?;
    for (name, sanitiser) in [
        ("bit_depth_4", Sanitiser::BitDepth { bits: 4 }),
        ("median_2", Sanitiser::Median { size: 2 }),
        ("median_3", Sanitiser::Median { size: 3 }),
        ("median_5", Sanitiser::Median { size: 5 }),
        ("gaussian_1", Sanitiser::Gaussian { sigma: 1.0 }),
        ("low_pass_0.25", Sanitiser::LowPass { cutoff: 0.25 }),
    ] {
        let mut best = f64::MAX;
        let mut row = image.clone();
        for _ in 0..7 {
            row.copy_from_slice(&image);
            let started = Instant::now();
            sanitiser.apply(&mut row, shape)?;
            best = best.min(started.elapsed().as_secs_f64() * 1e3);
        }
        let bytes: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
        std::fs::write(Path::new(out).join(format!("{name}.f32")), bytes)?;
        println!("{name} {best:.3}");
    }
    Ok(())
}
