//! Keras models: the JSON configuration of a `.keras` zip (`config.json`), of Keras 2 HDF5 files (the
//! `model_config` attribute, found by a bounded scan of the file) and of SavedModel metadata. Lambda layers carry
//! Python bytecode; objects that name modules outside Keras make the loader import them.

use serde_json::Value;

use crate::finding::Severity;
use crate::input::{read_upto, Input};
use crate::pickle::classify_module;
use crate::scanner::Ctx;

/// Configurations larger than this are not parsed.
const MAX_CONFIG: u64 = 64 << 20;
/// HDF5 files are searched for their configuration in chunks of this size.
const CHUNK: u64 = 8 << 20;
const CONFIG_START: &[u8] = b"{\"class_name\"";
/// Candidate configurations parsed per file: each costs a read of up to `MAX_CONFIG` bytes.
const MAX_ATTEMPTS: usize = 32;

/// Modules a Keras configuration names in ordinary models.
fn keras_module(module: &str) -> bool {
    [
        "keras",
        "tf_keras",
        "tensorflow.keras",
        "tensorflow.python.keras",
        "keras_nlp",
        "keras_hub",
        "keras_cv",
    ]
    .iter()
    .any(|m| module == *m || module.strip_prefix(m).is_some_and(|r| r.starts_with('.')))
}

/// Scans JSON that may be a Keras configuration. Other JSON (tokenizers, metadata) passes untouched.
pub(crate) fn scan_json(ctx: &mut Ctx<'_>, data: &[u8]) {
    let mut stream = serde_json::Deserializer::from_slice(data).into_iter::<Value>();
    match stream.next() {
        Some(Ok(value)) => {
            ctx.format("json");
            check(ctx, &value, 0);
        }
        Some(Err(e)) if data.windows(CONFIG_START.len()).any(|w| w == CONFIG_START) => {
            let msg =
                format!("Keras configuration cannot be parsed ({e}); its layers were not checked");
            ctx.report(Severity::Medium, "keras.unreadable-config", None, msg);
        }
        _ => {}
    }
}

fn check(ctx: &mut Ctx<'_>, value: &Value, depth: usize) {
    if depth > 200 {
        return;
    }
    match value {
        Value::Object(map) => {
            let class = map.get("class_name").and_then(Value::as_str);
            let layer = map
                .get("config")
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("?");
            if let Some(class @ ("Lambda" | "__lambda__")) = class {
                let msg = format!("`{class}` layer `{}` carries Python bytecode that runs when the model is loaded or called", clip(layer));
                ctx.report(Severity::Critical, "keras.lambda", None, msg);
            }
            if let (Some(module), Some(_)) = (map.get("module").and_then(Value::as_str), class) {
                let name = class.unwrap_or("");
                let target = map.get("config").and_then(Value::as_str).unwrap_or(name);
                if let Some(why) = classify_module(module, target) {
                    let msg = format!(
                        "configuration names `{}.{}`, which {why}",
                        clip(module),
                        clip(target)
                    );
                    ctx.report(Severity::Critical, "keras.custom-module", None, msg);
                } else if !keras_module(module) && !module.is_empty() {
                    let msg = format!(
                        "object `{}` comes from module `{}`, which loading imports",
                        clip(name),
                        clip(module)
                    );
                    ctx.report(Severity::High, "keras.custom-module", None, msg);
                }
            }
            for v in map.values() {
                check(ctx, v, depth + 1);
            }
        }
        Value::Array(items) => {
            for v in items {
                check(ctx, v, depth + 1);
            }
        }
        _ => {}
    }
}

/// Keras 2 HDF5: finds each JSON object that starts like a Keras configuration and checks it.
pub(crate) fn scan_hdf5(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let len = input.len();
    let limit = len.min(ctx.opts.max_in_memory);
    let mut pos = 0u64;
    let mut found = false;
    let mut mentions_config = false;
    let mut attempts = 0;
    while pos < limit {
        let Ok(chunk) = read_upto(input, pos, CHUNK + CONFIG_START.len() as u64) else {
            break;
        };
        mentions_config |= chunk.windows(12).any(|w| w == b"model_config");
        let mut next = pos + CHUNK;
        if let Some(i) = chunk
            .windows(CONFIG_START.len())
            .position(|w| w == CONFIG_START)
        {
            attempts += 1;
            if attempts > MAX_ATTEMPTS {
                let msg = format!("more than {MAX_ATTEMPTS} candidate configurations; the rest of the file was not searched");
                ctx.report(Severity::Medium, "archive.limit", None, msg);
                break;
            }
            let at = pos + i as u64;
            let Ok(text) = read_upto(input, at, MAX_CONFIG.min(limit.saturating_sub(at).max(1)))
            else {
                break;
            };
            let mut stream = serde_json::Deserializer::from_slice(&text).into_iter::<Value>();
            if let Some(Ok(value)) = stream.next() {
                found = true;
                check(ctx, &value, 0);
                next = at + stream.byte_offset().max(1) as u64;
            } else {
                next = at + 1;
            }
        }
        pos = next;
    }
    if found {
        ctx.format("keras-hdf5");
    } else if mentions_config {
        ctx.report(Severity::Medium, "keras.unreadable-config", None, "the file has a `model_config` attribute that could not be read; its layers were not checked".into());
    }
    if len > limit {
        let msg = format!(
            "only the first {limit} of {len} bytes were searched for a Keras configuration"
        );
        ctx.report(Severity::Low, "archive.limit", None, msg);
    }
}

fn clip(s: &str) -> String {
    s.chars().take(120).filter(|c| !c.is_control()).collect()
}
