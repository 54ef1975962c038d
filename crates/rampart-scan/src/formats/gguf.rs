//! GGUF (llama.cpp): header, metadata and tensor directory checked for well-formedness and bounds; chat templates
//! checked for template injection. Only the metadata and directory are read, never the tensor data.

use std::collections::HashSet;

use crate::finding::Severity;
use crate::formats::template;
use crate::input::{read_upto, Input};
use crate::scanner::Ctx;

/// Metadata is read from a prefix of this size, growing up to the scan's in-memory bound.
const FIRST_READ: u64 = 16 << 20;
const MAX_DIMS: u32 = 4;
const MAX_ARRAY_NESTING: usize = 4;

/// (block size, bytes per block) of GGML tensor types, by type id.
fn type_size(t: u32) -> Option<(u64, u64)> {
    Some(match t {
        0 => (1, 4),
        1 => (1, 2),
        2 => (32, 18),
        3 => (32, 20),
        6 => (32, 22),
        7 => (32, 24),
        8 => (32, 34),
        9 => (32, 36),
        10 => (256, 84),
        11 => (256, 110),
        12 => (256, 144),
        13 => (256, 176),
        14 => (256, 210),
        15 => (256, 292),
        16 => (256, 66),
        17 => (256, 74),
        18 => (256, 98),
        19 => (256, 50),
        20 => (32, 18),
        21 => (256, 110),
        22 => (256, 82),
        23 => (256, 136),
        24 => (1, 1),
        25 => (1, 2),
        26 => (1, 4),
        27 => (1, 8),
        28 => (1, 8),
        29 => (256, 56),
        30 => (1, 2),
        34 => (256, 54),
        35 => (256, 66),
        39 => (32, 17),
        _ => return None,
    })
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    /// The prefix ended before the file did: running out means "read more", not "malformed".
    partial: bool,
}

#[derive(Debug)]
enum Stop {
    NeedMore,
    Bad(String),
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], Stop> {
        let end = usize::try_from(n)
            .ok()
            .and_then(|n| self.pos.checked_add(n));
        match end.and_then(|e| self.data.get(self.pos..e)) {
            Some(s) => {
                self.pos += s.len();
                Ok(s)
            }
            None if self.partial => Err(Stop::NeedMore),
            None => Err(Stop::Bad(format!(
                "a field of {n} bytes at offset {} runs past the end of the file",
                self.pos
            ))),
        }
    }

    fn u32(&mut self) -> Result<u32, Stop> {
        let b = self.take(4)?;
        Ok(<[u8; 4]>::try_from(b).map(u32::from_le_bytes).unwrap_or(0))
    }

    fn u64(&mut self) -> Result<u64, Stop> {
        let b = self.take(8)?;
        let mut le = [0u8; 8];
        le.copy_from_slice(b);
        Ok(u64::from_le_bytes(le))
    }

    fn string(&mut self) -> Result<String, Stop> {
        let n = self.u64()?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| Stop::Bad(format!("string at offset {} is not UTF-8", self.pos)))
    }

    /// Reads one value of `ty`; returns the string when it is one.
    fn value(&mut self, ty: u32, nesting: usize) -> Result<Option<String>, Stop> {
        match ty {
            0 | 1 | 7 => drop(self.take(1)?),
            2 | 3 => drop(self.take(2)?),
            4..=6 => drop(self.take(4)?),
            10..=12 => drop(self.take(8)?),
            8 => return self.string().map(Some),
            9 => {
                if nesting >= MAX_ARRAY_NESTING {
                    return Err(Stop::Bad("arrays nested too deep".into()));
                }
                let elem = self.u32()?;
                let count = self.u64()?;
                let fixed = match elem {
                    0 | 1 | 7 => Some(1),
                    2 | 3 => Some(2),
                    4..=6 => Some(4),
                    10..=12 => Some(8),
                    _ => None,
                };
                if let Some(size) = fixed {
                    let total = count
                        .checked_mul(size)
                        .ok_or_else(|| Stop::Bad(format!("array of {count} items overflows")))?;
                    self.take(total)?;
                } else {
                    // Every string or array item takes at least 8 bytes: a count past that is a lie.
                    let left = (self.data.len() - self.pos) as u64;
                    if count > left / 8 && !self.partial {
                        return Err(Stop::Bad(format!(
                            "array declares {count} items, more than the file holds"
                        )));
                    }
                    for _ in 0..count {
                        self.value(elem, nesting + 1)?;
                    }
                }
            }
            t => return Err(Stop::Bad(format!("unknown metadata value type {t}"))),
        }
        Ok(None)
    }
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let len = input.len();
    let mut want = FIRST_READ;
    loop {
        let Ok(data) = read_upto(input, 0, want) else {
            return;
        };
        let partial = (data.len() as u64) < len;
        match parse(ctx, &data, partial, len) {
            Err(Stop::NeedMore) if want < ctx.opts.max_in_memory => {
                want = (want * 4).min(ctx.opts.max_in_memory)
            }
            Err(Stop::NeedMore) => {
                let msg = format!(
                    "metadata is larger than the {want}-byte bound and was not fully checked"
                );
                ctx.report(Severity::Medium, "archive.limit", None, msg);
                return;
            }
            Err(Stop::Bad(why)) => {
                ctx.report(Severity::Medium, "gguf.malformed", None, why);
                return;
            }
            Ok(()) => return,
        }
    }
}

/// Parses header, metadata and tensor directory; findings other than malformation are reported only once the whole
/// directory has been read, so a retry with a larger prefix does not repeat them.
fn parse(ctx: &mut Ctx<'_>, data: &[u8], partial: bool, file_len: u64) -> Result<(), Stop> {
    let mut r = Reader {
        data,
        pos: 4,
        partial,
    };
    let version = r.u32()?;
    if !(2..=3).contains(&version) {
        return Err(Stop::Bad(format!(
            "unsupported GGUF version {version} (expected 2 or 3)"
        )));
    }
    let tensors = r.u64()?;
    let kvs = r.u64()?;
    if kvs > file_len / 13 || tensors > file_len / 24 {
        return Err(Stop::Bad(format!("header declares {kvs} metadata entries and {tensors} tensors, more than the file can hold")));
    }
    let mut keys = HashSet::new();
    let mut templates = Vec::new();
    let mut problems = Vec::new();
    let mut alignment: u64 = 32;
    for _ in 0..kvs {
        let key = r.string()?;
        if key.is_empty() || key.len() > 65_535 {
            return Err(Stop::Bad(
                "metadata key is empty or longer than 65535 bytes".into(),
            ));
        }
        let ty = r.u32()?;
        let at = r.pos;
        let value = r.value(ty, 0)?;
        if key == "general.alignment" {
            let raw = data
                .get(at..at + 4)
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes);
            alignment = raw.map_or(0, u64::from);
            if ty != 4 || alignment == 0 || !alignment.is_power_of_two() {
                problems.push("`general.alignment` is not a power-of-two u32".to_string());
                alignment = 32;
            }
        }
        if key.starts_with("tokenizer.chat_template") {
            if let Some(t) = value {
                templates.push((key.clone(), t));
            }
        }
        if !keys.insert(key.clone()) {
            problems.push(format!(
                "metadata key `{}` appears twice; readers disagree on which value wins",
                clip(&key)
            ));
        }
    }
    let mut spans = Vec::new();
    for _ in 0..tensors {
        let name = r.string()?;
        let dims = r.u32()?;
        if dims > MAX_DIMS {
            return Err(Stop::Bad(format!(
                "tensor `{}` has {dims} dimensions (at most {MAX_DIMS})",
                clip(&name)
            )));
        }
        let mut count: u64 = 1;
        for _ in 0..dims {
            let d = r.u64()?;
            count = count
                .checked_mul(d)
                .ok_or_else(|| Stop::Bad(format!("tensor `{}` size overflows", clip(&name))))?;
        }
        let ty = r.u32()?;
        let offset = r.u64()?;
        if offset % alignment != 0 {
            problems.push(format!(
                "tensor `{}` offset {offset} is not aligned to {alignment}",
                clip(&name)
            ));
        }
        match type_size(ty) {
            Some((block, size)) => {
                if count % block != 0 {
                    problems.push(format!(
                        "tensor `{}` has {count} elements, not a multiple of its block of {block}",
                        clip(&name)
                    ));
                }
                let bytes = (count / block)
                    .checked_mul(size)
                    .ok_or_else(|| Stop::Bad("tensor size overflows".into()))?;
                spans.push((offset, offset.saturating_add(bytes), name));
            }
            None => problems.push(format!(
                "tensor `{}` has unknown type {ty}; its bounds were not checked",
                clip(&name)
            )),
        }
    }
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;
    let data_len = file_len.saturating_sub(data_start);
    spans.sort();
    for (_, end, name) in &spans {
        if *end > data_len {
            problems.push(format!(
                "tensor `{}` ends at {end}, past the {data_len} bytes of tensor data",
                clip(name)
            ));
        }
    }
    for pair in spans.windows(2) {
        if let [(_, end_a, a), (start_b, _, b)] = pair {
            if start_b < end_a {
                problems.push(format!("tensors `{}` and `{}` overlap", clip(a), clip(b)));
            }
        }
    }
    for p in problems.into_iter().take(100) {
        ctx.report(Severity::Medium, "gguf.malformed", None, p);
    }
    for (key, t) in templates {
        template::check(ctx, &key, &t);
    }
    Ok(())
}

fn clip(s: &str) -> String {
    s.chars().take(120).filter(|c| !c.is_control()).collect()
}
