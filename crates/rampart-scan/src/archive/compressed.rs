//! Whole-file compression (joblib's `compress=` with zlib or gzip): decompressed in memory within the bounds.

use crate::detect::Format;
use crate::finding::Severity;
use crate::input::{Input, Mem};
use crate::scanner::{read_bounded, scan_input, Ctx, Hint};

pub(crate) fn scan(ctx: &mut Ctx<'_>, input: &dyn Input, format: Format) {
    let Some(raw) = ctx.load(input, format.name()) else {
        return;
    };
    let budget = ctx
        .opts
        .max_in_memory
        .min(ctx.opts.max_inflated.saturating_sub(ctx.inflated));
    let result = if format == Format::Gzip {
        read_bounded(flate2::read::MultiGzDecoder::new(&raw[..]), budget)
    } else {
        read_bounded(flate2::read::ZlibDecoder::new(&raw[..]), budget)
    };
    match result {
        Ok((bytes, over)) => {
            ctx.inflated += bytes.len() as u64;
            if over {
                let msg = format!("{} stream decompresses past the {budget}-byte bound: only the first part was scanned", format.name());
                ctx.report(Severity::Medium, "archive.limit", None, msg);
            }
            ctx.nested(format.name(), |c| {
                scan_input(c, &Mem(&bytes), Hint::default())
            });
        }
        Err(e) => {
            let msg = format!(
                "{} stream cannot be decompressed ({e}); its content was not scanned",
                format.name()
            );
            ctx.report(
                Severity::Medium,
                "format.unsupported-compression",
                None,
                msg,
            );
        }
    }
}
