//! safetensors: an 8-byte header length, a JSON header, then tensor data. The header must be well formed and every
//! tensor's offsets in bounds, consistent with its dtype and shape, and disjoint from the others.

use serde_json::Value;

use crate::finding::Severity;
use crate::input::{read_upto, Input};
use crate::scanner::Ctx;

/// The reference implementation refuses larger headers.
const MAX_HEADER: u64 = 100_000_000;

/// Bits per element of each dtype.
fn dtype_bits(dtype: &str) -> Option<u64> {
    Some(match dtype {
        "BOOL" | "U8" | "I8" | "F8_E5M2" | "F8_E4M3" | "F8_E8M0" => 8,
        "I16" | "U16" | "F16" | "BF16" => 16,
        "I32" | "U32" | "F32" => 32,
        "I64" | "U64" | "F64" | "C64" => 64,
        "F6_E2M3" | "F6_E3M2" => 6,
        "F4" => 4,
        _ => return None,
    })
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let bad = |ctx: &mut Ctx<'_>, why: String| {
        ctx.report(Severity::Medium, "safetensors.malformed", None, why)
    };
    let len = input.len();
    let Ok(n) = read_upto(input, 0, 8) else {
        return;
    };
    let Ok(n) = <[u8; 8]>::try_from(n.as_slice()).map(u64::from_le_bytes) else {
        return bad(ctx, "file is shorter than the 8-byte header length".into());
    };
    if n > MAX_HEADER || n > len.saturating_sub(8) {
        return bad(
            ctx,
            format!("header length {n} exceeds the file or the {MAX_HEADER}-byte limit"),
        );
    }
    let Ok(header) = read_upto(input, 8, n) else {
        return;
    };
    let Entries(map) = match serde_json::from_slice(&header) {
        Ok(v) => v,
        Err(e) => return bad(ctx, format!("header is not a valid JSON object: {e}")),
    };
    let mut names = std::collections::HashSet::new();
    for (name, _) in &map {
        if !names.insert(name.as_str()) {
            let msg = format!(
                "key `{}` appears twice in the header; parsers disagree on which entry wins",
                clip(name)
            );
            bad(ctx, msg);
        }
    }
    let data_len = len - 8 - n;
    let mut spans = Vec::new();
    for (name, entry) in &map {
        if name == "__metadata__" {
            let ok = entry
                .as_object()
                .is_some_and(|m| m.values().all(Value::is_string));
            if !ok {
                bad(ctx, "`__metadata__` is not a map of strings".into());
            }
            continue;
        }
        match tensor(entry) {
            Ok((dtype_bits, count, start, end)) => {
                let expected = count.checked_mul(dtype_bits).map(|b| b.div_ceil(8));
                if expected != end.checked_sub(start) {
                    bad(ctx, format!("tensor `{}` spans {start}..{end}, which does not match its dtype and shape", clip(name)));
                } else if end > data_len {
                    bad(
                        ctx,
                        format!(
                            "tensor `{}` ends at {end}, past the {data_len} bytes of data",
                            clip(name)
                        ),
                    );
                }
                spans.push((start, end, name.as_str()));
            }
            Err(why) => bad(ctx, format!("tensor `{}`: {why}", clip(name))),
        }
    }
    spans.sort_unstable();
    let mut covered = 0u64;
    for (start, end, name) in &spans {
        if *start < covered {
            bad(
                ctx,
                format!("tensor `{}` overlaps the tensor before it", clip(name)),
            );
        } else if *start > covered {
            let msg = format!(
                "{} bytes before tensor `{}` belong to no tensor (hidden data)",
                start - covered,
                clip(name)
            );
            ctx.report(Severity::Low, "safetensors.malformed", None, msg);
        }
        covered = covered.max(*end);
    }
    if covered < data_len {
        let msg = format!(
            "{} bytes after the last tensor belong to no tensor (hidden data)",
            data_len - covered
        );
        ctx.report(Severity::Low, "safetensors.malformed", None, msg);
    }
}

/// (bits per element, element count, start, end) of one header entry.
fn tensor(entry: &Value) -> Result<(u64, u64, u64, u64), String> {
    let dtype = entry
        .get("dtype")
        .and_then(Value::as_str)
        .ok_or("no dtype")?;
    let bits = dtype_bits(dtype).ok_or_else(|| format!("unknown dtype `{}`", clip(dtype)))?;
    let shape = entry
        .get("shape")
        .and_then(Value::as_array)
        .ok_or("no shape")?;
    let mut count: u64 = 1;
    for d in shape {
        let d = d
            .as_u64()
            .ok_or("shape is not a list of non-negative integers")?;
        count = count.checked_mul(d).ok_or("shape overflows")?;
    }
    let offsets = entry
        .get("data_offsets")
        .and_then(Value::as_array)
        .ok_or("no data_offsets")?;
    let (Some(start), Some(end), 2) = (
        offsets.first().and_then(Value::as_u64),
        offsets.get(1).and_then(Value::as_u64),
        offsets.len(),
    ) else {
        return Err("data_offsets is not two non-negative integers".into());
    };
    if start > end {
        return Err(format!("data_offsets {start}..{end} run backwards"));
    }
    Ok((bits, count, start, end))
}

fn clip(s: &str) -> String {
    s.chars().take(120).filter(|c| !c.is_control()).collect()
}

/// A JSON object's entries in order, duplicates kept (a map would silently keep one).
struct Entries(Vec<(String, Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_map(V)
    }
}
