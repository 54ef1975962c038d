//! TensorFlow SavedModel (`saved_model.pb`), frozen GraphDefs and Keras metadata (`keras_metadata.pb`), read from
//! the wire format: graph nodes and library functions are checked for ops that run Python or touch files.

use crate::finding::Severity;
use crate::formats::keras;
use crate::protobuf::{bytes_of, fields, is_message, string_of, varint_of, Field};
use crate::scanner::Ctx;

/// Ops that run code or reach the file system or network when the graph runs, with severity and why.
const DANGEROUS_OPS: &[(&str, Severity, &str)] = &[
    ("PyFunc", Severity::Critical, "runs a Python function"),
    (
        "PyFuncStateless",
        Severity::Critical,
        "runs a Python function",
    ),
    ("EagerPyFunc", Severity::Critical, "runs a Python function"),
    ("ReadFile", Severity::High, "reads any file"),
    ("WriteFile", Severity::High, "writes any file"),
    ("MatchingFiles", Severity::High, "lists files"),
    (
        "ImmutableConst",
        Severity::High,
        "maps a file named in the graph into memory",
    ),
    ("DatasetToTFRecord", Severity::High, "writes files"),
    (
        "ExperimentalDatasetToTFRecord",
        Severity::High,
        "writes files",
    ),
    ("CreateSummaryFileWriter", Severity::High, "writes files"),
    ("WriteSummary", Severity::High, "writes files"),
    ("SqlDataset", Severity::High, "opens databases"),
    ("ExperimentalSqlDataset", Severity::High, "opens databases"),
    ("RpcCall", Severity::High, "makes network calls"),
    ("RpcClient", Severity::High, "makes network calls"),
    (
        "DebugIdentity",
        Severity::Medium,
        "writes tensors to debug URLs (files or gRPC)",
    ),
    (
        "DebugIdentityV2",
        Severity::Medium,
        "writes tensors to debug files",
    ),
    (
        "DebugNumericSummary",
        Severity::Medium,
        "writes tensors to debug URLs",
    ),
    (
        "TFRecordDataset",
        Severity::Medium,
        "reads files named at run time",
    ),
    (
        "TFRecordDatasetV2",
        Severity::Medium,
        "reads files named at run time",
    ),
    (
        "TextLineDataset",
        Severity::Medium,
        "reads files named at run time",
    ),
    (
        "FixedLengthRecordDataset",
        Severity::Medium,
        "reads files named at run time",
    ),
    (
        "FixedLengthRecordDatasetV2",
        Severity::Medium,
        "reads files named at run time",
    ),
    ("MatchingFilesDataset", Severity::Medium, "lists files"),
    ("LMDBDataset", Severity::Medium, "reads databases"),
    (
        "ExperimentalLMDBDataset",
        Severity::Medium,
        "reads databases",
    ),
];

/// SavedModel (field 2 holds MetaGraphDefs with a graph), a GraphDef (field 1 holds NodeDefs with an op), or
/// Keras metadata (field 1 holds SavedObjects with JSON metadata).
pub(crate) fn looks_like(data: &[u8]) -> bool {
    let saved_model = bytes_of(data, 2)
        .next()
        .is_some_and(|m| is_message(m) && bytes_of(m, 2).next().is_some_and(is_message));
    saved_model || first_node_has_op(data) || keras_metadata(data).next().is_some()
}

fn first_node_has_op(data: &[u8]) -> bool {
    bytes_of(data, 1)
        .next()
        .is_some_and(|n| is_message(n) && string_of(n, 2).is_some_and(|op| is_op_name(&op)))
}

fn is_op_name(op: &str) -> bool {
    op.chars()
        .next()
        .is_some_and(|c| c.is_ascii_uppercase() || c == '_')
        && op.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn keras_metadata(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    bytes_of(data, 1)
        .filter_map(|node| bytes_of(node, 4).next())
        .filter(|m| m.first() == Some(&b'{'))
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, data: &[u8]) {
    let mut ops: Vec<(String, String)> = Vec::new();
    let meta_graphs: Vec<&[u8]> = bytes_of(data, 2).collect();
    for meta in &meta_graphs {
        for graph in bytes_of(meta, 2) {
            graph_ops(graph, &mut ops);
        }
    }
    if meta_graphs.is_empty() || varint_of(data, 1).is_none() {
        // A frozen GraphDef: nodes at the top.
        graph_ops(data, &mut ops);
    }
    report_ops(ctx, &ops);
    for json in keras_metadata(data).take(100_000) {
        keras::scan_json(ctx, json);
    }
    let mut f = fields(data);
    f.by_ref().count();
    if let Some(e) = f.error {
        ctx.report(
            Severity::Medium,
            "tensorflow.malformed",
            None,
            format!("graph cannot be decoded: {e}"),
        );
    }
}

/// Collects (node name, op) from a GraphDef's nodes and from every function of its library.
fn graph_ops(graph: &[u8], ops: &mut Vec<(String, String)>) {
    for (field, value) in fields(graph) {
        let Field::Bytes(b) = value else { continue };
        match field {
            1 => node_op(b, "", ops),
            2 => {
                for function in bytes_of(b, 1) {
                    let fname = bytes_of(function, 1)
                        .next()
                        .and_then(|sig| string_of(sig, 1))
                        .unwrap_or_default();
                    for node in bytes_of(function, 3) {
                        node_op(node, &fname, ops);
                    }
                }
            }
            _ => {}
        }
    }
}

fn node_op(node: &[u8], function: &str, ops: &mut Vec<(String, String)>) {
    if ops.len() >= 1_000_000 {
        return;
    }
    if let Some(op) = string_of(node, 2) {
        let name = string_of(node, 1).unwrap_or_default();
        let name = if function.is_empty() {
            name
        } else {
            format!("{function}/{name}")
        };
        ops.push((name, op));
    }
}

fn report_ops(ctx: &mut Ctx<'_>, ops: &[(String, String)]) {
    for (name, op) in ops {
        if let Some(&(_, severity, why)) = DANGEROUS_OPS.iter().find(|(o, _, _)| o == op) {
            let msg = format!(
                "graph node `{}` is a `{op}` op, which {why} when the model runs",
                clip(name)
            );
            ctx.report(severity, "tensorflow.dangerous-op", None, msg);
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(160).filter(|c| !c.is_control()).collect()
}
