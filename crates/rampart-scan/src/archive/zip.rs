//! A zip reader as lenient as PyTorch's (miniz): it trusts the central directory, accepts any data before the
//! archive, ignores the encryption flag, CRCs and local headers that disagree, and reports each of those anomalies
//! because ordinary writers never produce them.

use std::collections::HashSet;
use std::io::Read;

use crate::finding::Severity;
use crate::input::{read_upto, Input, Mem, Window};
use crate::scanner::{read_bounded, scan_input, Ctx, Hint};

const EOCD: &[u8] = b"PK\x05\x06";
const EOCD64: &[u8] = b"PK\x06\x06";
const LOCATOR64: &[u8] = b"PK\x06\x07";
const CENTRAL: &[u8] = b"PK\x01\x02";
const LOCAL: &[u8] = b"PK\x03\x04";
/// The EOCD record is at most this far from the end (22 bytes + a 65,535-byte comment).
const TAIL: u64 = 22 + 65_535;
/// Central directories larger than this are not read.
const MAX_DIRECTORY: u64 = 256 << 20;
/// Members of this size or less have their CRC checked even when their content is not parsed.
const CRC_ALWAYS: u64 = 1 << 20;

struct Directory {
    /// Where the archive starts in the input: bytes before it are a prefix.
    base: u64,
    cd_start: u64,
    cd_size: u64,
    entries: u64,
}

struct Entry {
    name: String,
    flags: u16,
    method: u16,
    crc: u32,
    csize: u64,
    usize: u64,
    local: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    let mut le = [0u8; 2];
    if let Some(s) = b.get(at..at + 2) {
        le.copy_from_slice(s);
    }
    u16::from_le_bytes(le)
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut le = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        le.copy_from_slice(s);
    }
    u32::from_le_bytes(le)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        le.copy_from_slice(s);
    }
    u64::from_le_bytes(le)
}

/// Finds the central directory from the end of the input, as miniz does.
fn directory(input: &dyn Input) -> Option<Directory> {
    let len = input.len();
    let tail_start = len.saturating_sub(TAIL);
    let tail = read_upto(input, tail_start, TAIL).ok()?;
    let mut at = tail.len().checked_sub(22)?;
    loop {
        if tail.get(at..at + 4) == Some(EOCD) {
            if let Some(d) = parse_eocd(input, &tail, at, tail_start) {
                return Some(d);
            }
        }
        at = at.checked_sub(1)?;
    }
}

fn parse_eocd(input: &dyn Input, tail: &[u8], at: usize, tail_start: u64) -> Option<Directory> {
    let eocd_pos = tail_start + at as u64;
    let mut entries = u64::from(u16_at(tail, at + 10));
    let mut cd_size = u64::from(u32_at(tail, at + 12));
    let mut cd_offset = u64::from(u32_at(tail, at + 16));
    let mut end_of_cd = eocd_pos;
    if entries == 0xffff || cd_size == 0xffff_ffff || cd_offset == 0xffff_ffff {
        let loc_pos = eocd_pos.checked_sub(20)?;
        let loc = read_upto(input, loc_pos, 20).ok()?;
        if loc.get(..4) == Some(LOCATOR64) {
            let rec_offset = u64_at(&loc, 8);
            // With a prefix the recorded offset is off by the prefix; the record sits right before the locator.
            let rec_pos = loc_pos.checked_sub(56)?;
            let rec = read_upto(input, rec_pos, 56).ok()?;
            if rec.get(..4) != Some(EOCD64) {
                let rec = read_upto(input, rec_offset, 56).ok()?;
                rec.get(..4).filter(|s| *s == EOCD64)?;
            }
            entries = u64_at(&rec, 32);
            cd_size = u64_at(&rec, 40);
            cd_offset = u64_at(&rec, 48);
            end_of_cd = rec_pos;
        }
    }
    let cd_start = end_of_cd.checked_sub(cd_size)?;
    let base = cd_start.checked_sub(cd_offset)?;
    // The directory must really start where the record says (or be empty).
    if entries > 0 {
        let sig = read_upto(input, cd_start, 4).ok()?;
        if sig != CENTRAL {
            return None;
        }
    }
    Some(Directory {
        base,
        cd_start,
        cd_size,
        entries,
    })
}

/// Whether the input ends with a zip directory that a lenient reader would open.
pub(crate) fn has_directory(input: &dyn Input) -> bool {
    input.len() >= 22 && directory(input).is_some()
}

fn parse_entries(ctx: &mut Ctx<'_>, cd: &[u8], expected: u64) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while cd.get(at..at + 4) == Some(CENTRAL) {
        if out.len() >= ctx.opts.max_entries {
            let msg = format!(
                "archive has more than {} entries; the rest were not scanned",
                ctx.opts.max_entries
            );
            ctx.report(Severity::Medium, "archive.limit", None, msg);
            break;
        }
        let Some(fixed) = cd.get(at..at + 46) else {
            break;
        };
        let name_len = usize::from(u16_at(fixed, 28));
        let extra_len = usize::from(u16_at(fixed, 30));
        let comment_len = usize::from(u16_at(fixed, 32));
        let Some(name) = cd.get(at + 46..at + 46 + name_len) else {
            break;
        };
        let extra = cd
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .unwrap_or_default();
        let mut e = Entry {
            name: String::from_utf8_lossy(name).into_owned(),
            flags: u16_at(fixed, 8),
            method: u16_at(fixed, 10),
            crc: u32_at(fixed, 16),
            csize: u64::from(u32_at(fixed, 20)),
            usize: u64::from(u32_at(fixed, 24)),
            local: u64::from(u32_at(fixed, 42)),
        };
        apply_zip64(&mut e, extra);
        out.push(e);
        at += 46 + name_len + extra_len + comment_len;
    }
    if (out.len() as u64) < expected.min(ctx.opts.max_entries as u64) {
        let msg = format!(
            "the central directory declares {expected} entries but {} could be read",
            out.len()
        );
        ctx.report(Severity::Medium, "zip.anomaly", None, msg);
    }
    out
}

/// Replaces saturated 32-bit fields with their ZIP64 extra-field values.
fn apply_zip64(e: &mut Entry, extra: &[u8]) {
    let mut at = 0;
    while let (Some(id), Some(size)) = (extra.get(at..at + 2), extra.get(at + 2..at + 4)) {
        let id = u16::from_le_bytes([
            id.first().copied().unwrap_or(0),
            id.get(1).copied().unwrap_or(0),
        ]);
        let size = usize::from(u16::from_le_bytes([
            size.first().copied().unwrap_or(0),
            size.get(1).copied().unwrap_or(0),
        ]));
        let body = extra.get(at + 4..at + 4 + size).unwrap_or_default();
        if id == 1 {
            let mut p = 0;
            for field in [&mut e.usize, &mut e.csize, &mut e.local] {
                if *field == 0xffff_ffff && p + 8 <= body.len() {
                    *field = u64_at(body, p);
                    p += 8;
                }
            }
        }
        at += 4 + size;
    }
}

fn odd_name(name: &str) -> Option<&'static str> {
    if name.starts_with('/') || name.starts_with('\\') || name.get(1..2) == Some(":") {
        Some("an absolute path")
    } else if name.split(['/', '\\']).any(|p| p == "..") {
        Some("a `..` component")
    } else if name.chars().any(|c| c.is_control()) {
        Some("control characters")
    } else if name.contains('\\') {
        Some("backslashes")
    } else {
        None
    }
}

/// Scans every member of the zip in `input`.
pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let Some(dir) = directory(input) else {
        ctx.report(Severity::Medium, "zip.malformed", None, "no readable central directory: the archive cannot be checked, though some loaders may still read its members".into());
        return;
    };
    if dir.base > 0 {
        let msg = format!("{} bytes precede the archive; PyTorch's reader skips them, other tools may read them as another format", dir.base);
        ctx.report(Severity::Medium, "zip.anomaly", None, msg);
    }
    if dir.cd_size > MAX_DIRECTORY {
        let msg = format!(
            "central directory of {} bytes is larger than the {MAX_DIRECTORY}-byte bound",
            dir.cd_size
        );
        ctx.report(Severity::Medium, "archive.limit", None, msg);
        return;
    }
    let cd = match read_upto(input, dir.cd_start, dir.cd_size) {
        Ok(cd) => cd,
        Err(e) => {
            ctx.report(
                Severity::Medium,
                "zip.malformed",
                None,
                format!("central directory cannot be read: {e}"),
            );
            return;
        }
    };
    let entries = parse_entries(ctx, &cd, dir.entries);
    let mut names = HashSet::new();
    let mut ranges = Vec::new();
    for e in &entries {
        if !names.insert(e.name.as_str()) {
            let msg = format!(
                "member `{}` appears more than once; loaders disagree on which copy they read",
                clip(&e.name)
            );
            ctx.report(Severity::Medium, "zip.anomaly", None, msg);
        }
        if let Some(data) = member(ctx, input, &dir, e) {
            ranges.push((data, data.saturating_add(e.csize), e.name.as_str()));
        }
    }
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = pair {
            if start_b < end_a {
                let msg = format!(
                    "members `{}` and `{}` share bytes (a zip-bomb and evasion technique)",
                    clip(a),
                    clip(b)
                );
                ctx.report(Severity::Medium, "zip.anomaly", None, msg);
                break;
            }
        }
    }
}

/// Checks one member's headers, then scans its content. Returns where its data starts.
fn member(ctx: &mut Ctx<'_>, input: &dyn Input, dir: &Directory, e: &Entry) -> Option<u64> {
    let name = clip(&e.name);
    let anomaly = |ctx: &mut Ctx<'_>, what: String| {
        ctx.report(
            Severity::Medium,
            "zip.anomaly",
            None,
            format!("member `{name}`: {what}"),
        );
    };
    if e.flags & 0x41 != 0 {
        anomaly(ctx, "the encryption flag is set; PyTorch ignores it and reads the member as plain data, so it was scanned as such".into());
    }
    if let Some(why) = odd_name(&e.name) {
        ctx.report(
            Severity::Low,
            "zip.anomaly",
            None,
            format!("member name `{name}` has {why}"),
        );
    }
    let local_pos = dir.base.checked_add(e.local)?;
    let local = read_upto(input, local_pos, 30)
        .ok()
        .filter(|l| l.len() == 30);
    let Some(local) = local.filter(|l| l.get(..4) == Some(LOCAL)) else {
        anomaly(
            ctx,
            format!("no local header at offset {local_pos}; the member cannot be read"),
        );
        return None;
    };
    let lname_len = u64::from(u16_at(&local, 26));
    let lextra_len = u64::from(u16_at(&local, 28));
    let lname = read_upto(input, local_pos + 30, lname_len).unwrap_or_default();
    if lname != e.name.as_bytes() {
        let msg = format!(
            "the local header names it `{}` (loaders that read local headers see another member)",
            clip(&String::from_utf8_lossy(&lname))
        );
        anomaly(ctx, msg);
    }
    if u16_at(&local, 8) != e.method {
        anomaly(
            ctx,
            "local header and central directory disagree on the compression method".into(),
        );
    }
    let data = local_pos + 30 + lname_len + lextra_len;
    if data
        .checked_add(e.csize)
        .is_none_or(|end| end > input.len())
    {
        anomaly(
            ctx,
            format!("data of {} bytes runs past the end of the archive", e.csize),
        );
        return None;
    }
    let window = Window {
        inner: input,
        offset: data,
        len: e.csize,
    };
    let pickle = e.name.ends_with(".pkl") || e.name.ends_with(".pickle");
    let hint = Hint {
        name: Some(&e.name),
        pickle,
    };
    let member_name = e.name.clone();
    match e.method {
        0 => {
            if e.usize != e.csize {
                anomaly(
                    ctx,
                    format!(
                        "stored member declares {} bytes uncompressed but {} stored",
                        e.usize, e.csize
                    ),
                );
            }
            if e.csize <= CRC_ALWAYS || pickle || looks_parsed(&window) {
                check_crc(ctx, &window, e, &name);
            }
            ctx.nested(&member_name, |c| scan_input(c, &window, hint));
        }
        8 => {
            if let Some(bytes) = inflate(ctx, &window, e, &name) {
                if crc32fast::hash(&bytes) != e.crc {
                    anomaly(ctx, "CRC mismatch; PyTorch does not check it, so the content was scanned as stored".into());
                }
                ctx.nested(&member_name, |c| scan_input(c, &Mem(&bytes), hint));
            }
        }
        m => {
            let msg = format!("member `{name}` uses compression method {m}, which cannot be inspected; recompress it with deflate or store it");
            ctx.report(
                Severity::Medium,
                "format.unsupported-compression",
                None,
                msg,
            );
        }
    }
    Some(data)
}

/// Whether a stored member will be parsed (not plain tensor bytes), so checking its CRC costs no extra read.
fn looks_parsed(window: &Window<'_>) -> bool {
    let head = read_upto(window, 0, 1024).unwrap_or_default();
    !matches!(
        crate::detect::detect(&head, window.len),
        crate::detect::Format::Unknown
            | crate::detect::Format::Pickle { strong: false }
            | crate::detect::Format::Protobuf
    )
}

fn check_crc(ctx: &mut Ctx<'_>, window: &Window<'_>, e: &Entry, name: &str) {
    let mut hasher = crc32fast::Hasher::new();
    let mut off = 0;
    let mut buf = vec![0u8; 1 << 20];
    while off < window.len.min(ctx.opts.max_in_memory) {
        let n = (window.len - off).min(buf.len() as u64) as usize;
        let Some(chunk) = buf.get_mut(..n) else {
            return;
        };
        if window.read_exact_at(off, chunk).is_err() {
            return;
        }
        hasher.update(chunk);
        off += n as u64;
    }
    if off == window.len && hasher.finalize() != e.crc {
        let msg = format!("member `{name}`: CRC mismatch; PyTorch does not check it, other tools reject the archive and scan nothing");
        ctx.report(Severity::Medium, "zip.anomaly", None, msg);
    }
}

fn inflate(ctx: &mut Ctx<'_>, window: &Window<'_>, e: &Entry, name: &str) -> Option<Vec<u8>> {
    let budget = ctx
        .opts
        .max_in_memory
        .min(ctx.opts.max_inflated.saturating_sub(ctx.inflated));
    let reader = WindowReader { window, pos: 0 };
    match read_bounded(flate2::read::DeflateDecoder::new(reader), budget) {
        Ok((bytes, over)) => {
            ctx.inflated += bytes.len() as u64;
            if over {
                let msg = format!("member `{name}` inflates past the {budget}-byte bound (declared {} bytes from {}): a possible zip bomb; only the first part was scanned", e.usize, e.csize);
                ctx.report(Severity::Medium, "archive.limit", None, msg);
            } else if bytes.len() as u64 != e.usize {
                let msg = format!(
                    "member `{name}`: inflates to {} bytes, the directory declares {}",
                    bytes.len(),
                    e.usize
                );
                ctx.report(Severity::Medium, "zip.anomaly", None, msg);
            }
            Some(bytes)
        }
        Err(err) => {
            ctx.report(
                Severity::Medium,
                "zip.malformed",
                None,
                format!("member `{name}` cannot be inflated: {err}"),
            );
            None
        }
    }
}

/// `Read` over a window, for the decompressor.
struct WindowReader<'a, 'b> {
    window: &'b Window<'a>,
    pos: u64,
}

impl Read for WindowReader<'_, '_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.window.len.saturating_sub(self.pos))
            .min(buf.len() as u64)
            .min(1 << 20) as usize;
        let Some(chunk) = buf.get_mut(..n) else {
            return Ok(0);
        };
        self.window.read_exact_at(self.pos, chunk)?;
        self.pos += n as u64;
        Ok(n)
    }
}

fn clip(s: &str) -> String {
    s.chars()
        .take(200)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}
