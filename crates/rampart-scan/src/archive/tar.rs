//! Tar archives (ustar, GNU and pax), read in place: each regular member is scanned as a window onto the archive.

use crate::finding::Severity;
use crate::input::{read_upto, Input, Window};
use crate::scanner::{scan_input, Ctx, Hint};

fn octal(field: &[u8]) -> Option<u64> {
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: big-endian after the marker bit.
        let mut v: u64 = u64::from(field.first()? & 0x7f);
        for &b in field.get(1..)? {
            v = v.checked_mul(256)?.checked_add(u64::from(b))?;
        }
        return Some(v);
    }
    let s: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| char::from(b))
        .collect();
    let s = s.trim();
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn text(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// The `path` of a pax extended header, if any.
fn pax_path(data: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(data);
    s.lines().find_map(|line| {
        line.split_once(' ')
            .and_then(|(_, kv)| kv.strip_prefix("path="))
            .map(str::to_owned)
    })
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let len = input.len();
    let mut pos = 0u64;
    let mut long_name: Option<String> = None;
    let mut count = 0usize;
    while pos + 512 <= len {
        let Ok(h) = read_upto(input, pos, 512) else {
            break;
        };
        if h.iter().all(|&b| b == 0) {
            return;
        }
        count += 1;
        if count > ctx.opts.max_entries {
            let msg = format!(
                "archive has more than {} entries; the rest were not scanned",
                ctx.opts.max_entries
            );
            ctx.report(Severity::Medium, "archive.limit", None, msg);
            return;
        }
        let (Some(size), Some(sum)) = (
            octal(h.get(124..136).unwrap_or_default()),
            octal(h.get(148..156).unwrap_or_default()),
        ) else {
            ctx.report(Severity::Medium, "tar.malformed", Some(pos), "header has an unreadable size or checksum; the rest of the archive was not scanned".into());
            return;
        };
        let computed: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if computed != sum {
            ctx.report(
                Severity::Medium,
                "tar.malformed",
                Some(pos),
                "header checksum mismatch; the rest of the archive was not scanned".into(),
            );
            return;
        }
        let kind = h.get(156).copied().unwrap_or(0);
        let data = pos + 512;
        if data.checked_add(size).is_none_or(|end| end > len) {
            ctx.report(
                Severity::Medium,
                "tar.malformed",
                Some(pos),
                format!("member declares {size} bytes, past the end of the archive"),
            );
            return;
        }
        let prefix = text(h.get(345..500).unwrap_or_default());
        let base = text(h.get(..100).unwrap_or_default());
        let header_name = if h.get(257..262) == Some(b"ustar") && !prefix.is_empty() {
            format!("{prefix}/{base}")
        } else {
            base
        };
        match kind {
            b'L' | b'x' => {
                let body = read_upto(input, data, size.min(64 << 10)).unwrap_or_default();
                long_name = if kind == b'L' {
                    Some(text(&body))
                } else {
                    pax_path(&body)
                };
            }
            b'0' | 0 | b'7' => {
                let name = long_name.take().unwrap_or(header_name);
                let window = Window {
                    inner: input,
                    offset: data,
                    len: size,
                };
                ctx.nested(&name, |c| {
                    scan_input(
                        c,
                        &window,
                        Hint {
                            name: Some(&name),
                            pickle: false,
                        },
                    )
                });
            }
            b'1' | b'2' => {
                let name = long_name.take().unwrap_or(header_name);
                let target = text(h.get(157..257).unwrap_or_default());
                ctx.report(Severity::Low, "tar.malformed", None, format!("member `{name}` is a link to `{target}`; extracting it writes outside the member's own path"));
            }
            _ => long_name = None,
        }
        pos = data + size.div_ceil(512) * 512;
    }
}
