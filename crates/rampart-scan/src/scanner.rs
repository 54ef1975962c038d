//! The scan itself: walks paths, opens files, detects each format and hands it to its scanner, with one context
//! that carries the findings, the member path inside archives and the bounds.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::detect::{detect, Format};
use crate::finding::{Finding, Report, ScannedFile, Severity};
use crate::input::{read_upto, Input, Mem};
use crate::{archive, formats, pickle};

/// Bounds of a scan. The defaults suit checkpoints of any size on a small machine.
#[derive(Debug, Clone)]
pub struct Options {
    /// Archives and nested payloads deeper than this are not opened (a finding says so).
    pub max_depth: usize,
    /// Largest single stream held in memory for parsing (a pickle, a config, a decompressed member).
    pub max_in_memory: u64,
    /// Bytes decompressed per file in total: zip bombs stop here.
    pub max_inflated: u64,
    /// Entries read from one archive directory.
    pub max_entries: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_depth: 6,
            max_in_memory: 512 << 20,
            max_inflated: 2 << 30,
            max_entries: 100_000,
        }
    }
}

/// Errors that stop a scan before a verdict: the input could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScanError {
    #[error("cannot read `{path}`; check that it exists and is readable")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{path}` is not a regular file or directory")]
    NotAFile { path: PathBuf },
}

/// Scans a file, or every file under a directory (symbolic links to files are followed, to directories not).
pub fn scan_path(path: &Path, opts: &Options) -> Result<Report, ScanError> {
    let meta = std::fs::metadata(path).map_err(|source| ScanError::Io {
        path: path.into(),
        source,
    })?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(path, &mut files)?;
        files.sort();
    } else if meta.is_file() {
        files.push(path.to_path_buf());
    } else {
        return Err(ScanError::NotAFile { path: path.into() });
    }
    let reports: Vec<Result<Report, ScanError>> =
        files.par_iter().map(|f| scan_file(f, opts)).collect();
    let mut report = Report::default();
    for r in reports {
        report.merge(r?);
    }
    Ok(report)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ScanError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ScanError::Io {
        path: dir.into(),
        source,
    })?;
    for entry in entries {
        let entry = entry.map_err(|source| ScanError::Io {
            path: dir.into(),
            source,
        })?;
        let path = entry.path();
        let kind = entry.file_type().map_err(|source| ScanError::Io {
            path: path.clone(),
            source,
        })?;
        if kind.is_dir() {
            walk(&path, out)?;
        } else if kind.is_file()
            || (kind.is_symlink() && path.metadata().is_ok_and(|m| m.is_file()))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn scan_file(path: &Path, opts: &Options) -> Result<Report, ScanError> {
    tracing::debug!(path = %path.display(), "scanning");
    let file = File::open(path).map_err(|source| ScanError::Io {
        path: path.into(),
        source,
    })?;
    let display = path.display().to_string();
    let mut ctx = Ctx::new(opts, display.clone());
    ctx.sibling_dir = path.parent().map(Path::to_path_buf);
    scan_input(&mut ctx, &file, Hint::default());
    let bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(ctx.into_report(display, bytes))
}

/// Scans bytes held in memory as if they were a file called `name`.
pub fn scan_bytes(name: &str, data: &[u8], opts: &Options) -> Report {
    let mut ctx = Ctx::new(opts, name.to_owned());
    scan_input(&mut ctx, &Mem(data), Hint::default());
    ctx.into_report(name.to_owned(), data.len() as u64)
}

/// What the container knows about a member: its name, and whether it is meant to be a pickle.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Hint<'a> {
    pub name: Option<&'a str>,
    /// The container loads this member as a pickle (a `.pkl` member of a PyTorch archive, npy object data).
    pub pickle: bool,
}

/// The state of one file's scan.
pub(crate) struct Ctx<'a> {
    pub opts: &'a Options,
    path: String,
    members: Vec<String>,
    findings: Vec<Finding>,
    formats: Vec<String>,
    pub depth: usize,
    /// Bytes decompressed so far in this file.
    pub inflated: u64,
    /// The directory of the file on disk, for checks of relative paths (ONNX external data).
    pub sibling_dir: Option<PathBuf>,
}

impl<'a> Ctx<'a> {
    fn new(opts: &'a Options, path: String) -> Self {
        Ctx {
            opts,
            path,
            members: Vec::new(),
            findings: Vec::new(),
            formats: Vec::new(),
            depth: 0,
            inflated: 0,
            sibling_dir: None,
        }
    }

    fn into_report(self, path: String, bytes: u64) -> Report {
        let mut findings = self.findings;
        findings.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then_with(|| a.member.cmp(&b.member))
        });
        Report {
            files: vec![ScannedFile {
                path,
                formats: self.formats,
                bytes,
            }],
            findings,
        }
    }

    /// Records a finding at the current member, with an optional offset inside it.
    pub(crate) fn report(
        &mut self,
        severity: Severity,
        rule: &'static str,
        offset: Option<u64>,
        message: String,
    ) {
        let mut member = self.members.join("!");
        if let Some(off) = offset {
            member.push_str(&format!("@{off}"));
        }
        let member = (!member.is_empty()).then_some(member);
        let f = Finding {
            severity,
            rule,
            path: self.path.clone(),
            member,
            message,
        };
        if !self.findings.contains(&f) && self.findings.len() < 10_000 {
            self.findings.push(f);
        }
    }

    pub(crate) fn format(&mut self, name: &str) {
        let entry = if self.members.is_empty() {
            name.to_owned()
        } else {
            format!("{}:{name}", self.members.join("!"))
        };
        if self.formats.len() < 1_000 {
            self.formats.push(entry);
        }
    }

    /// Runs `f` with `member` pushed on the member path and the depth one deeper, if the bound allows.
    pub(crate) fn nested(&mut self, member: &str, f: impl FnOnce(&mut Ctx<'a>)) {
        if self.depth >= self.opts.max_depth {
            let msg = format!(
                "`{member}` is nested deeper than {} levels and was not scanned",
                self.opts.max_depth
            );
            self.report(Severity::Medium, "archive.limit", None, msg);
            return;
        }
        self.members.push(member.to_owned());
        self.depth += 1;
        f(self);
        self.depth -= 1;
        self.members.pop();
    }

    /// Reads a whole stream for in-memory parsing; past `max_in_memory` a finding says the rest was not scanned.
    pub(crate) fn load(&mut self, input: &dyn Input, what: &str) -> Option<Vec<u8>> {
        let len = input.len();
        if len > self.opts.max_in_memory {
            let msg = format!(
                "{what} is {len} bytes; only the first {} were scanned",
                self.opts.max_in_memory
            );
            self.report(Severity::Medium, "archive.limit", None, msg);
        }
        match read_upto(input, 0, self.opts.max_in_memory) {
            Ok(data) => Some(data),
            Err(e) => {
                self.report(
                    Severity::Medium,
                    "zip.malformed",
                    None,
                    format!("{what} cannot be read: {e}"),
                );
                None
            }
        }
    }
}

/// Detects the format of `input` and scans it.
pub(crate) fn scan_input(ctx: &mut Ctx<'_>, input: &dyn Input, hint: Hint<'_>) {
    let head = match read_upto(input, 0, 1024) {
        Ok(h) => h,
        Err(e) => {
            ctx.report(
                Severity::Medium,
                "zip.malformed",
                None,
                format!("content cannot be read: {e}"),
            );
            return;
        }
    };
    let len = input.len();
    let mut format = detect(&head, len);
    if hint.pickle && format != Format::Zip {
        format = Format::Pickle { strong: true };
    } else if hint.name.is_some() && format == (Format::Pickle { strong: true }) {
        // Tensor bytes in an archive can start like PROTO (an int64 128 is `80 00 ..`): an archive member counts as
        // a pickle when its container loads it as one, or when it parses as one.
        format = Format::Pickle { strong: false };
    }
    // Content that only starts like a protocol 0/1 pickle or a protobuf message is plain data unless a prefix parses.
    let plain_data = match format {
        Format::Pickle { strong: false } => pickle::clearly_not_pickle(input),
        Format::Protobuf => crate::protobuf::clearly_not_message(
            &read_upto(input, 0, 64 << 10).unwrap_or_default(),
            len,
        ),
        _ => false,
    };
    if plain_data {
        format = Format::Unknown;
    }
    if format != Format::Unknown {
        ctx.format(format.name());
    }
    // A zip directory at the end makes any file a zip to lenient readers: check every file that is not one already.
    if format != Format::Zip && archive::zip::has_directory(input) {
        if format == Format::Unknown {
            ctx.format("zip");
        } else {
            let msg = format!("the file is a {} and also a zip archive (a directory at its end); both were scanned", format.name());
            ctx.report(Severity::Medium, "format.polyglot", None, msg);
        }
        archive::zip::scan(ctx, input);
    }
    match format {
        Format::Zip => archive::zip::scan(ctx, input),
        Format::Tar => archive::tar::scan(ctx, input),
        Format::Gzip | Format::Zlib => archive::compressed::scan(ctx, input, format),
        Format::Bzip2 | Format::Xz | Format::Lz4 | Format::Zstd => {
            let msg = format!(
                "{} compressed content cannot be inspected; decompress it and scan again",
                format.name()
            );
            ctx.report(
                Severity::Medium,
                "format.unsupported-compression",
                None,
                msg,
            );
        }
        Format::Pickle { strong } => {
            if let Some(data) = ctx.load(input, "pickle") {
                pickle::scan_stream(ctx, &data, strong);
            }
        }
        Format::Npy => formats::numpy::scan(ctx, input),
        Format::Hdf5 => formats::keras::scan_hdf5(ctx, input),
        Format::Json => {
            if let Some(data) = ctx.load(input, "json") {
                formats::keras::scan_json(ctx, &data);
            }
        }
        Format::Gguf => formats::gguf::scan(ctx, input),
        Format::Safetensors => formats::safetensors::scan(ctx, input),
        Format::Protobuf => {
            if let Some(data) = ctx.load(input, "protobuf") {
                formats::protobuf_model(ctx, &data, hint.name);
            }
        }
        Format::Unknown => {}
    }
}

/// Which parser a fuzz target drives.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum FuzzParser {
    Pickle,
    Zip,
    Gguf,
    Safetensors,
    Protobuf,
}

/// Runs one parser over arbitrary bytes; for the fuzz targets and the corpus test.
#[doc(hidden)]
pub fn fuzz_entry(parser: FuzzParser, data: &[u8]) -> Report {
    let opts = Options {
        max_in_memory: 1 << 24,
        max_inflated: 1 << 26,
        ..Options::default()
    };
    let mut ctx = Ctx::new(&opts, "fuzz".into());
    match parser {
        FuzzParser::Pickle => pickle::scan_stream(&mut ctx, data, true),
        FuzzParser::Zip => archive::zip::scan(&mut ctx, &Mem(data)),
        FuzzParser::Gguf => formats::gguf::scan(&mut ctx, &Mem(data)),
        FuzzParser::Safetensors => formats::safetensors::scan(&mut ctx, &Mem(data)),
        FuzzParser::Protobuf => {
            formats::onnx::scan(&mut ctx, data);
            formats::tensorflow::scan(&mut ctx, data);
        }
    }
    ctx.into_report("fuzz".into(), data.len() as u64)
}

/// Reads all of `r` up to `max` bytes; `Err` with the bytes read when there was more.
pub(crate) fn read_bounded(r: impl Read, max: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut out = Vec::new();
    let n = r.take(max.saturating_add(1)).read_to_end(&mut out)?;
    let over = n as u64 > max;
    out.truncate(usize::try_from(max).unwrap_or(usize::MAX));
    Ok((out, over))
}
