//! Schemas: inference from data, checks of every rule, and clear errors for schemas that do not parse.
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use rampart_data::schema::Schema;
use rampart_data::{Check, Options};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn inferred_schema_accepts_its_own_data() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "d.csv",
        "id,age,country,score\n1,34,DE,0.5\n2,51,FR,\n3,28,DE,0.25\n4,40,FR,0.75\n",
    );
    let schema = rampart_data::schema::infer(&data, None).unwrap();
    let text = schema.to_toml().unwrap();
    assert!(
        text.contains("name = \"age\"") && text.contains("type = \"int\""),
        "{text}"
    );
    let schema_path = write(dir.path(), "s.toml", &text);
    let parsed = Schema::load(&schema_path).unwrap();
    let mut opts = Options::new(data);
    opts.schema = Some((schema_path, parsed));
    opts.checks = Some(vec![Check::Schema]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    assert!(!report.has_findings(), "{}", report.to_text(10));
}

#[test]
fn every_rule_is_checked_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(
        dir.path(),
        "d.csv",
        "id,age,country,extra\n1,34,DE,x\n1,200,XX,x\n3,abc,de,x\n4,,FR,x\n",
    );
    let schema_text = r#"
min_rows = 10
[[column]]
name = "id"
type = "int"
unique = true
[[column]]
name = "age"
type = "int"
min = 0
max = 130
[[column]]
name = "country"
type = "string"
categories = ["DE", "FR"]
pattern = "[A-Z]{2}"
[[column]]
name = "email"
type = "string"
"#;
    let schema_path = write(dir.path(), "s.toml", schema_text);
    let schema = Schema::load(&schema_path).unwrap();
    let mut opts = Options::new(data);
    opts.schema = Some((schema_path, schema));
    opts.checks = Some(vec![Check::Schema]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let s = report.schema.as_ref().unwrap();
    let has = |line: u64, column: &str, words: &str| {
        s.listed.iter().any(|v| {
            v.line == line && v.column.as_deref() == Some(column) && v.message.contains(words)
        })
    };
    assert!(has(0, "email", "required column is missing"));
    assert!(has(0, "extra", "not in the schema"));
    assert!(has(3, "id", "repeats"));
    assert!(has(3, "age", "outside"));
    assert!(has(3, "country", "categories"));
    assert!(has(4, "age", "not an integer"));
    assert!(has(4, "country", "pattern"));
    assert!(has(0, "age", "empty"));
    assert!(s.listed.iter().any(|v| v.message.contains("at least 10")));
    assert!(report.has_findings());
}

#[test]
fn bad_schemas_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[[column]]\nname = \"a\"\ntype = \"integer\"\n",
            "unknown variant",
        ),
        (
            "[[column]]\nname = \"a\"\ntype = \"int\"\nmaximum = 3\n",
            "unknown field",
        ),
        (
            "[[column]]\nname = \"a\"\ntype = \"int\"\nmin = 5\nmax = 1\n",
            "above max",
        ),
        (
            "[[column]]\nname = \"a\"\ntype = \"string\"\npattern = \"(\"\n",
            "bad pattern",
        ),
        (
            "[[column]]\nname = \"a\"\ntype = \"int\"\n[[column]]\nname = \"a\"\ntype = \"int\"\n",
            "declared twice",
        ),
        ("not toml at all [", "schema"),
    ];
    for (text, want) in cases {
        let path = write(dir.path(), "s.toml", text);
        let err = Schema::load(&path).unwrap_err().to_string();
        assert!(
            err.contains(want) && err.contains("s.toml"),
            "{text:?} gave {err}"
        );
    }
}
