//! Chat templates are Jinja2, rendered on every request: patterns of sandbox escapes and server-side template
//! injection are findings; ordinary templates (loops, `namespace`, `raise_exception`, `tojson`) are not.

use crate::finding::Severity;
use crate::scanner::Ctx;

const PATTERNS: &[(&str, Severity, &str)] = &[
    (
        "__globals__",
        Severity::Critical,
        "reaches a function's module globals",
    ),
    ("__builtins__", Severity::Critical, "reaches every builtin"),
    (
        "__subclasses__",
        Severity::Critical,
        "enumerates classes to find one that runs code",
    ),
    ("__import__", Severity::Critical, "imports modules"),
    (
        "__mro__",
        Severity::Critical,
        "walks the class hierarchy (sandbox escape)",
    ),
    (
        "__base__",
        Severity::Critical,
        "walks the class hierarchy (sandbox escape)",
    ),
    (
        "__class__",
        Severity::Critical,
        "reaches an object's class (sandbox escape)",
    ),
    (
        "__init__",
        Severity::Critical,
        "reaches a constructor's globals (sandbox escape)",
    ),
    (
        "__getattribute__",
        Severity::Critical,
        "reaches any attribute",
    ),
    (
        "__dict__",
        Severity::Critical,
        "reaches an object's namespace",
    ),
    ("__code__", Severity::Critical, "reaches code objects"),
    ("__reduce", Severity::Critical, "reaches pickling hooks"),
    ("popen", Severity::Critical, "runs commands"),
    ("subprocess", Severity::Critical, "runs commands"),
    ("os.system", Severity::Critical, "runs commands"),
    ("eval(", Severity::Critical, "evaluates Python source"),
    ("exec(", Severity::Critical, "runs Python source"),
    ("import_module", Severity::Critical, "imports modules"),
    (
        "_templatereference__context",
        Severity::Critical,
        "reaches the template's context internals",
    ),
    (
        "|attr(",
        Severity::High,
        "reads attributes by computed names, the usual way around filters",
    ),
    (
        "\\x5f",
        Severity::High,
        "spells underscores as escapes to hide dunder names",
    ),
    (
        "\\u005f",
        Severity::High,
        "spells underscores as escapes to hide dunder names",
    ),
    (
        "\\137",
        Severity::High,
        "spells underscores as escapes to hide dunder names",
    ),
    (
        "lipsum",
        Severity::High,
        "uses a Jinja global whose attributes lead to module globals",
    ),
    (
        "cycler",
        Severity::High,
        "uses a Jinja global whose attributes lead to module globals",
    ),
    (
        "joiner",
        Severity::High,
        "uses a Jinja global whose attributes lead to module globals",
    ),
    (
        "self._",
        Severity::High,
        "reaches the template object's internals",
    ),
    ("{% include", Severity::Medium, "loads another template"),
    ("{% import", Severity::Medium, "loads another template"),
    ("{% extends", Severity::Medium, "loads another template"),
    ("{% from", Severity::Medium, "loads another template"),
];

/// Checks one chat template; `key` names where it was found.
pub(crate) fn check(ctx: &mut Ctx<'_>, key: &str, template: &str) {
    // Compare without whitespace or Jinja's whitespace-control marks, which change nothing for the renderer.
    let squeeze = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .replace("{%-", "{%")
            .replace("{%+", "{%")
    };
    let text = squeeze(template);
    for &(pattern, severity, why) in PATTERNS {
        if text.contains(&squeeze(pattern)) {
            let msg = format!("chat template `{key}` contains `{pattern}`, which {why}: rendering it may run code");
            ctx.report(severity, "gguf.template-injection", None, msg);
        }
    }
}
