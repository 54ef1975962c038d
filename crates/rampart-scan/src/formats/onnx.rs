//! ONNX models, read from the wire format: external-data paths that leave the model's directory, and nodes from
//! operator domains that need a custom (native) operator library.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use crate::finding::Severity;
use crate::protobuf::{bytes_of, fields, string_of, varint_of, Field};
use crate::scanner::Ctx;

/// Domains served by ONNX Runtime and the reference implementations.
const KNOWN_DOMAINS: &[&str] = &[
    "",
    "ai.onnx",
    "ai.onnx.ml",
    "ai.onnx.training",
    "ai.onnx.preview",
    "ai.onnx.preview.training",
    "com.microsoft",
    "com.microsoft.nchwc",
    "com.microsoft.experimental",
    "com.microsoft.mlfeaturizers",
    "com.microsoft.dml",
    "com.ms.internal.nhwc",
    "org.pytorch.aten",
    "org.pytorch._caffe2",
];

/// Graphs nested in attributes (If, Loop, Scan bodies) are followed this deep.
const MAX_GRAPH_DEPTH: usize = 16;

/// A ModelProto: `ir_version` (1) and a graph (7) or opset imports (8).
pub(crate) fn looks_like(data: &[u8]) -> bool {
    varint_of(data, 1).is_some()
        && (bytes_of(data, 7).next().is_some() || bytes_of(data, 8).next().is_some())
}

#[derive(Default)]
struct Seen {
    domains: BTreeSet<String>,
    locations: BTreeSet<String>,
    nodes: usize,
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, data: &[u8]) {
    let mut local_domains: BTreeSet<String> = BTreeSet::new();
    for function in bytes_of(data, 25) {
        local_domains.insert(string_of(function, 10).unwrap_or_default());
    }
    let mut seen = Seen::default();
    for graph in bytes_of(data, 7) {
        walk_graph(graph, 0, &mut seen);
    }
    for function in bytes_of(data, 25) {
        for node in bytes_of(function, 4) {
            walk_node(node, 0, &mut seen);
        }
    }
    for training in bytes_of(data, 20) {
        for graph in bytes_of(training, 1).chain(bytes_of(training, 3)) {
            walk_graph(graph, 0, &mut seen);
        }
    }
    for domain in &seen.domains {
        if !KNOWN_DOMAINS.contains(&domain.as_str()) && !local_domains.contains(domain) {
            let msg = format!("nodes use the operator domain `{}`, which needs a custom operator library (native code) to run", clip(domain));
            ctx.report(Severity::Medium, "onnx.custom-domain", None, msg);
        }
    }
    let dir = ctx.sibling_dir.clone();
    for location in &seen.locations {
        if let Some(why) = escapes(location, dir.as_deref()) {
            let msg = format!("external data location `{}` {why}: loading reads a file outside the model's directory", clip(location));
            ctx.report(Severity::High, "onnx.external-data-escape", None, msg);
        }
    }
    let mut f = fields(data);
    f.by_ref().count();
    if let Some(e) = f.error {
        ctx.report(
            Severity::Medium,
            "onnx.malformed",
            None,
            format!("model cannot be decoded: {e}"),
        );
    }
}

fn walk_graph(graph: &[u8], depth: usize, seen: &mut Seen) {
    if depth > MAX_GRAPH_DEPTH {
        return;
    }
    for (field, value) in fields(graph) {
        let Field::Bytes(b) = value else { continue };
        match field {
            1 => walk_node(b, depth, seen),
            5 => tensor(b, seen),
            15 => {
                for t in bytes_of(b, 1).chain(bytes_of(b, 2)) {
                    tensor(t, seen);
                }
            }
            _ => {}
        }
    }
}

fn walk_node(node: &[u8], depth: usize, seen: &mut Seen) {
    seen.nodes += 1;
    if seen.nodes > 10_000_000 {
        return;
    }
    if seen.domains.len() < 1_000 {
        seen.domains.insert(string_of(node, 7).unwrap_or_default());
    }
    for attr in bytes_of(node, 5) {
        for (field, value) in fields(attr) {
            let Field::Bytes(b) = value else { continue };
            match field {
                5 | 10 => tensor(b, seen),
                6 | 11 => walk_graph(b, depth + 1, seen),
                22 | 23 => {
                    for t in bytes_of(b, 1).chain(bytes_of(b, 2)) {
                        tensor(t, seen);
                    }
                }
                _ => {}
            }
        }
    }
}

/// Records the `location` of a tensor stored as external data.
fn tensor(t: &[u8], seen: &mut Seen) {
    for entry in bytes_of(t, 13) {
        if string_of(entry, 1).as_deref() == Some("location") && seen.locations.len() < 100_000 {
            seen.locations
                .insert(string_of(entry, 2).unwrap_or_default());
        }
    }
}

/// Why a relative external-data path leaves the model's directory, if it does.
fn escapes(location: &str, dir: Option<&Path>) -> Option<String> {
    if location.contains('\0') {
        return Some("contains a NUL byte".into());
    }
    let path = Path::new(location);
    let windows_absolute = location.starts_with('\\') || location.get(1..2) == Some(":");
    if path.is_absolute() || windows_absolute {
        return Some("is an absolute path".into());
    }
    let mut depth: i64 = 0;
    for part in location.split(['/', '\\']) {
        match part {
            ".." => depth -= 1,
            "" | "." => {}
            _ => depth += 1,
        }
        if depth < 0 {
            return Some("climbs out with `..`".into());
        }
    }
    // A link inside the directory can point anywhere.
    let dir = dir?;
    let target = dir.join(path);
    let is_link = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .scan(dir.to_path_buf(), |p, c| {
            p.push(c);
            Some(
                p.symlink_metadata()
                    .is_ok_and(|m| m.file_type().is_symlink()),
            )
        });
    if is_link.into_iter().any(|l| l) {
        let (Ok(real), Ok(base)) = (target.canonicalize(), dir.canonicalize()) else {
            return Some("goes through a symbolic link that cannot be resolved".into());
        };
        if !real.starts_with(&base) {
            return Some(format!(
                "goes through a symbolic link to `{}`",
                real.display()
            ));
        }
    }
    None
}

fn clip(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
