//! Pickle streams: one or several pickles back to back (legacy PyTorch, joblib), executed symbolically.

mod joblib;
mod machine;
mod policy;
mod value;

use std::collections::BTreeMap;

use crate::finding::Severity;
use crate::input::Mem;
use crate::scanner::{scan_input, Ctx, Hint};
use machine::{Event, Machine, Trace};
use policy::Class;

/// Pickles after the first: legacy PyTorch writes five, joblib one; more than this is not a model.
const MAX_PICKLES: usize = 64;

/// Whether content that only starts like a protocol 0/1 pickle fails to parse early, with no import: plain data.
/// Looks at a prefix only, so tensor bytes in a large checkpoint cost one small read.
pub(crate) fn clearly_not_pickle(input: &dyn crate::input::Input) -> bool {
    const PREFIX: u64 = 64 << 10;
    let Ok(head) = crate::input::read_upto(input, 0, PREFIX) else {
        return false;
    };
    let trace = Machine::run(&head, 0);
    match (trace.end, &trace.error) {
        (None, Some((offset, _))) => {
            !trace.imports.iter().any(dangerous) && offset + 16 < head.len()
        }
        _ => false,
    }
}

/// Whether an import is a code-execution primitive. Content that only starts like a protocol 0/1 pickle and then
/// fails to parse (text beginning with `c`, the GLOBAL opcode, reads its first two lines as a module and a name) counts
/// as a pickle only when it imports one of those: the import itself is what a loader would act on.
fn dangerous(u: &machine::ImportUse) -> bool {
    matches!(
        policy::classify(&u.import.module, &u.import.name),
        Class::Dangerous(_) | Class::AttributeEscape
    )
}

/// Scans `data` as pickles back to back. `strong`: the data is known to be a pickle (PROTO header, or the
/// container loads it as one), so a stream that stops parsing is a finding.
pub(crate) fn scan_stream(ctx: &mut Ctx<'_>, data: &[u8], strong: bool) {
    let mut pos = 0;
    for index in 0..MAX_PICKLES {
        let Some(&first) = data.get(pos) else { return };
        // After the first pickle, data may follow (legacy PyTorch storages start with their element count, and 128
        // is `80 00`, like PROTO): a later stream counts when it parses or imports a code-execution primitive.
        let this_strong = index == 0 && strong;
        if index > 0 && !(first == 0x80 || b"(}]c".contains(&first)) {
            // Not a pickle: legacy PyTorch storages or trailing data follow the last pickle.
            return;
        }
        let mut trace = Machine::run(data, pos);
        if !this_strong && trace.end.is_none() {
            trace.imports.retain(dangerous);
            trace.events.clear();
        }
        let is_pickle = this_strong || trace.end.is_some() || !trace.imports.is_empty();
        if !is_pickle {
            return;
        }
        report_trace(ctx, &trace);
        match (trace.end, &trace.error) {
            (Some(end), _) => pos = end,
            (None, Some((offset, why))) => {
                let msg = format!("pickle stream stops parsing at offset {offset} ({why}) after {} opcodes; loaders act on the part before the error, so it is not proof of safety", trace.opcodes);
                let severity = if this_strong || !trace.imports.is_empty() {
                    Severity::Medium
                } else {
                    Severity::Low
                };
                ctx.report(severity, "pickle.malformed", Some(*offset as u64), msg);
                return;
            }
            (None, None) => return,
        }
    }
}

fn report_trace(ctx: &mut Ctx<'_>, trace: &Trace) {
    // One finding per imported name, however often the stream repeats it.
    let mut seen: BTreeMap<(String, String), (usize, bool, usize)> = BTreeMap::new();
    for u in &trace.imports {
        let e = seen
            .entry((u.import.module.clone(), u.import.name.clone()))
            .or_insert((u.offset, false, 0));
        e.1 |= u.called;
        e.2 += 1;
    }
    for ((module, name), (offset, called, count)) in seen {
        let what = format!("`{}.{}`", clip(&module), clip(&name));
        let times = if count > 1 {
            format!(" ({count} times)")
        } else {
            String::new()
        };
        let calls = if called {
            "imports and calls"
        } else {
            "imports"
        };
        let (severity, rule, msg) = match policy::classify(&module, &name) {
            Class::Allowed | Class::NestedLoader => continue,
            Class::Dangerous(why) => (
                Severity::Critical,
                "pickle.dangerous-import",
                format!("pickle {calls} {what}{times}, which {why}: loading this file runs code"),
            ),
            Class::AttributeEscape => (
                Severity::Critical,
                "pickle.attribute-escape",
                format!("pickle {calls} {what}{times}: a dunder attribute walk from an allowed module reaches arbitrary objects"),
            ),
            Class::Unknown => (
                if called { Severity::High } else { Severity::Medium },
                "pickle.unknown-import",
                format!("pickle {calls} {what}{times}, which is outside the allow list of ordinary model content; loading imports that module"),
            ),
        };
        ctx.report(severity, rule, Some(offset as u64), msg);
    }
    for event in &trace.events {
        match event {
            Event::UnresolvedImport { offset, why } => {
                let msg = format!("STACK_GLOBAL imports from values known only at load time ({why}): the import cannot be checked");
                ctx.report(
                    Severity::High,
                    "pickle.unresolved-import",
                    Some(*offset as u64),
                    msg,
                );
            }
            Event::ExtensionImport { offset, code } => {
                let msg = format!("EXT opcode imports extension code {code} from the loading process's copyreg registry: the target cannot be checked");
                ctx.report(
                    Severity::High,
                    "pickle.extension-import",
                    Some(*offset as u64),
                    msg,
                );
            }
            Event::BuildOnGlobal { offset, target } => {
                let msg = format!("BUILD sets attributes on the imported object `{}` itself, changing code the process runs later", clip(target));
                ctx.report(
                    Severity::High,
                    "pickle.build-on-global",
                    Some(*offset as u64),
                    msg,
                );
            }
            Event::Joblib { offset, why } => {
                let msg = format!("joblib array data cannot be located ({why}); the rest of the stream was not scanned");
                ctx.report(
                    Severity::Medium,
                    "pickle.malformed",
                    Some(*offset as u64),
                    msg,
                );
            }
            Event::Nested {
                offset,
                loader,
                payload,
            } => {
                let member = format!("{}@{offset}", clip(loader));
                ctx.report(
                    Severity::Info,
                    "pickle.nested",
                    Some(*offset as u64),
                    format!(
                        "{} bytes handed to `{}` were scanned as a nested file",
                        payload.len(),
                        clip(loader)
                    ),
                );
                ctx.nested(&member, |c| {
                    scan_input(
                        c,
                        &Mem(payload),
                        Hint {
                            name: None,
                            pickle: true,
                        },
                    )
                });
            }
        }
    }
}

fn clip(s: &str) -> String {
    let mut out: String = s.chars().take(120).filter(|c| !c.is_control()).collect();
    if s.chars().count() > 120 {
        out.push('…');
    }
    out
}

/// Why `module.name` is a code-execution primitive, when it is one (for other formats that name Python objects).
pub(crate) fn classify_module(module: &str, name: &str) -> Option<&'static str> {
    match policy::classify(module, name) {
        Class::Dangerous(why) => Some(why),
        Class::AttributeEscape => Some("reaches arbitrary objects through a dunder attribute"),
        _ => None,
    }
}
