//! Findings, their severities and the report a scan returns.

use std::fmt;

use serde::Serialize;

/// How bad a finding is. Ordered: `Info < Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; never fails a gate.
    Info,
    /// Unusual but not dangerous by itself.
    Low,
    /// Could hide or carry code: fails the default gate.
    Medium,
    /// Very likely unsafe to load.
    High,
    /// Runs code or touches the system when loaded.
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One thing the scanner found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Stable rule id, one of [`RULES`].
    pub rule: &'static str,
    /// The file on disk.
    pub path: String,
    /// Where inside the file: archive members joined by `!`, then `@offset` where it helps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// What was found and why it matters.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path)?;
        match &self.member {
            Some(m) if m.starts_with('@') => write!(f, "{m}")?,
            Some(m) => write!(f, "!{m}")?,
            None => {}
        }
        write!(
            f,
            ": {} [{}] {}",
            self.severity.as_str().to_uppercase(),
            self.rule,
            self.message
        )
    }
}

/// A file the scan read, with the formats it recognised (outermost first, nested members included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ScannedFile {
    pub path: String,
    pub formats: Vec<String>,
    pub bytes: u64,
}

/// Whether a report passes a gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
}

/// The result of a scan: every file read and every finding, in a stable order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub files: Vec<ScannedFile>,
    pub findings: Vec<Finding>,
}

impl Report {
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// The most severe finding, if any.
    pub fn max_severity(&self) -> Option<Severity> {
        self.findings.iter().map(|f| f.severity).max()
    }

    /// `Fail` when any finding is at or above `threshold`.
    pub fn verdict(&self, threshold: Severity) -> Verdict {
        if self.findings.iter().any(|f| f.severity >= threshold) {
            Verdict::Fail
        } else {
            Verdict::Pass
        }
    }

    pub(crate) fn merge(&mut self, other: Report) {
        self.files.extend(other.files);
        self.findings.extend(other.findings);
    }
}

/// Every rule: id, short description, why it matters. SARIF output lists them.
pub const RULES: &[(&str, &str, &str)] = &[
    ("pickle.dangerous-import", "Pickle imports a code-execution primitive", "Unpickling imports and calls it: loading the file runs code chosen by its author."),
    ("pickle.attribute-escape", "Pickle reaches past an allowed module through a dunder attribute", "Attribute walks such as `numpy.__builtins__` turn an allowed import into any builtin."),
    ("pickle.unknown-import", "Pickle imports a name outside the allow list", "Loading imports that module and may call the name; ordinary checkpoints never need it."),
    ("pickle.unresolved-import", "Pickle computes the module or name it imports", "The import is decided only while loading, a known way to hide `os.system` from scanners."),
    ("pickle.extension-import", "Pickle imports through the copyreg extension registry", "EXT opcodes import whatever the loading process registered: the target cannot be checked."),
    ("pickle.build-on-global", "Pickle rewrites attributes of an imported object", "BUILD on a module-level object changes code the process will later run."),
    ("pickle.nested", "Pickle hands bytes to another loader", "The nested payload is unpickled in turn; its findings are reported with it."),
    ("pickle.malformed", "Pickle stream stops parsing before its end", "Loaders act on the part they read before failing; a partial parse is never proof of safety."),
    ("zip.anomaly", "Zip archive with structures ordinary writers never produce", "Lenient loaders such as PyTorch accept them while other scanners fail or skip: a known evasion."),
    ("zip.malformed", "Zip archive that cannot be read", "The archive cannot be checked; loaders may still read parts of it."),
    ("archive.limit", "Archive exceeds a scan bound", "Content past the bound (size, entries, nesting) is not checked: treat the file as unverified."),
    ("tar.malformed", "Tar archive that cannot be read", "The archive cannot be checked."),
    ("numpy.object-array", "NumPy array with object dtype", "Object arrays are pickles: loading them with allow_pickle=True runs the pickle."),
    ("numpy.malformed", "NumPy file whose header cannot be read", "The file cannot be checked."),
    ("keras.lambda", "Keras model with a Lambda layer", "Lambda layers carry Python bytecode that runs when the model is loaded or called."),
    ("keras.custom-module", "Keras model names a module outside Keras", "Deserialising imports that module and instantiates objects from it."),
    ("keras.unreadable-config", "Keras model whose configuration cannot be read", "The layers cannot be checked."),
    ("tensorflow.dangerous-op", "TensorFlow graph with an op that runs code or touches files", "PyFunc runs Python; ReadFile, WriteFile and similar reach the file system when the graph runs."),
    ("tensorflow.malformed", "TensorFlow graph that cannot be decoded", "The graph cannot be checked."),
    ("onnx.external-data-escape", "ONNX external data path leaves the model directory", "Loading reads (or, with some tools, writes) files outside the model: a path traversal."),
    ("onnx.custom-domain", "ONNX node from an unknown operator domain", "Running it needs a custom operator library, which is native code."),
    ("onnx.malformed", "ONNX model that cannot be decoded", "The model cannot be checked."),
    ("gguf.template-injection", "GGUF chat template with template-injection patterns", "Jinja chat templates are rendered on every request; sandbox escapes in them run code."),
    ("gguf.malformed", "GGUF file whose header or metadata is malformed", "Parsers disagree on malformed files; several GGUF parser bugs were memory-safety flaws."),
    ("safetensors.malformed", "Safetensors header or offsets invalid", "Out-of-bounds or overlapping tensors make loaders disagree or fail."),
    ("format.polyglot", "File readable as two different formats", "Different loaders see different content: a scanner that checks one view misses the other."),
    ("format.unsupported-compression", "Compressed content that cannot be inspected", "Content that cannot be read cannot be checked: treat it as unverified."),
];
