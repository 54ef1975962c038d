//! NumPy `.npy`: the header is a Python dict literal; arrays of object dtype are followed by a pickle.

use crate::finding::Severity;
use crate::input::{read_upto, Input, Window};
use crate::pickle;
use crate::scanner::Ctx;

/// The value after `'key':` in the header dict, as source text.
fn field<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header
        .get(start..)?
        .trim_start()
        .strip_prefix(':')?
        .trim_start();
    let end = match rest.chars().next()? {
        '\'' => rest.get(1..)?.find('\'')? + 2,
        '(' => rest.find(')')? + 1,
        '[' => {
            // Structured dtypes nest lists and tuples: take up to the matching bracket.
            let mut depth = 0i32;
            let mut end = None;
            for (i, c) in rest.char_indices() {
                match c {
                    '[' | '(' => depth += 1,
                    ']' | ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i + 1);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            end?
        }
        _ => rest.find([',', '}']).unwrap_or(rest.len()),
    };
    rest.get(..end)
}

fn has_objects(descr: &str) -> bool {
    descr.split(['\'', '"']).any(|tok| {
        matches!(
            tok.trim_start_matches(['|', '<', '>', '=']),
            "O" | "O8" | "O4"
        )
    })
}

pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input) {
    let Ok(fixed) = read_upto(input, 0, 12) else {
        return;
    };
    let major = fixed.get(6).copied().unwrap_or(0);
    let (len_bytes, header_len) = match major {
        1 => (
            2u64,
            u64::from(u16::from_le_bytes([
                fixed.get(8).copied().unwrap_or(0),
                fixed.get(9).copied().unwrap_or(0),
            ])),
        ),
        2 | 3 => {
            let mut le = [0u8; 4];
            le.copy_from_slice(fixed.get(8..12).unwrap_or(&[0; 4]));
            (4, u64::from(u32::from_le_bytes(le)))
        }
        v => {
            ctx.report(
                Severity::Medium,
                "numpy.malformed",
                None,
                format!("unknown .npy format version {v}"),
            );
            return;
        }
    };
    let start = 8 + len_bytes;
    if header_len > 1 << 20 || start + header_len > input.len() {
        ctx.report(
            Severity::Medium,
            "numpy.malformed",
            None,
            format!("header of {header_len} bytes does not fit in the file"),
        );
        return;
    }
    let header = read_upto(input, start, header_len).unwrap_or_default();
    let header = String::from_utf8_lossy(&header);
    let Some(descr) = field(&header, "descr") else {
        ctx.report(
            Severity::Medium,
            "numpy.malformed",
            None,
            "header has no readable `descr`".into(),
        );
        return;
    };
    let data = start + header_len;
    if has_objects(descr) {
        let msg = format!("array of object dtype {}: its data is a pickle, run by `numpy.load(allow_pickle=True)`", clip(descr));
        ctx.report(Severity::Low, "numpy.object-array", None, msg);
        let window = Window {
            inner: input,
            offset: data,
            len: input.len() - data,
        };
        if let Some(bytes) = ctx.load(&window, "object array") {
            pickle::scan_stream(ctx, &bytes, true);
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}
