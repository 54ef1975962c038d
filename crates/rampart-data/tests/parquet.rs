//! Parquet: files written by the `parquet` crate here and by pyarrow (the peer most Parquet comes from) read back
//! cell for cell, stream through the checks with findings that name the record, and malformed files give an error.
//! The pyarrow test needs `python3` with `pyarrow` on PATH; without it, it fails when `RAMPART_REQUIRE_PEERS=1` and
//! skips otherwise.
#![cfg(feature = "parquet")]
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use rampart_data::load::{self, Row};
use rampart_data::{Check, Options};

/// A record's line (record number) and its cells.
type Cells = (u64, Vec<Option<String>>);

/// Every row of a file as cells.
fn cells(path: &Path) -> (Vec<String>, Vec<Cells>) {
    let mut source = load::open(path, None).unwrap();
    let mut rows = Vec::new();
    let mut row = Row::default();
    while source.next_row(&mut row).unwrap() {
        rows.push((
            row.line(),
            row.cells().map(|c| c.map(str::to_string)).collect(),
        ));
    }
    (source.columns().to_vec(), rows)
}

/// Columns `id` (int64), `x` (optional double), `note` (optional UTF-8), `ok` (bool), `label` (UTF-8); `groups` row
/// groups of `per_group` rows. Row `i` has `x = i / 4`, no `x` when `i % 5 == 3`, a note with an e-mail address in
/// row 7.
fn write_with_parquet_crate(path: &Path, groups: usize, per_group: usize, codec: Compression) {
    let schema = Arc::new(
        parquet::schema::parser::parse_message_type(
            "message digits {
                required int64 id;
                optional double x;
                optional binary note (UTF8);
                required boolean ok;
                required binary label (UTF8);
            }",
        )
        .unwrap(),
    );
    let props = Arc::new(WriterProperties::builder().set_compression(codec).build());
    let mut writer =
        SerializedFileWriter::new(std::fs::File::create(path).unwrap(), schema, props).unwrap();
    for g in 0..groups {
        let ids: Vec<i64> = (0..per_group).map(|i| (g * per_group + i) as i64).collect();
        let mut group = writer.next_row_group().unwrap();
        let mut column = 0;
        while let Some(mut col) = group.next_column().unwrap() {
            match column {
                0 => {
                    col.typed::<Int64Type>()
                        .write_batch(&ids, None, None)
                        .unwrap();
                }
                1 => {
                    let def: Vec<i16> = ids.iter().map(|i| i16::from(i % 5 != 3)).collect();
                    let values: Vec<f64> = ids
                        .iter()
                        .filter(|i| *i % 5 != 3)
                        .map(|&i| i as f64 / 4.0)
                        .collect();
                    col.typed::<DoubleType>()
                        .write_batch(&values, Some(&def), None)
                        .unwrap();
                }
                2 => {
                    let values: Vec<ByteArray> = ids
                        .iter()
                        .map(|&i| {
                            let text = if i == 7 {
                                "write to jane.doe@example.com".to_string()
                            } else {
                                format!("note {i}")
                            };
                            ByteArray::from(text.as_str())
                        })
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, Some(&vec![1; ids.len()]), None)
                        .unwrap();
                }
                3 => {
                    let values: Vec<bool> = ids.iter().map(|i| i % 2 == 0).collect();
                    col.typed::<BoolType>()
                        .write_batch(&values, None, None)
                        .unwrap();
                }
                _ => {
                    let values: Vec<ByteArray> = ids
                        .iter()
                        .map(|i| ByteArray::from(if i % 3 == 0 { "cat" } else { "dog" }))
                        .collect();
                    col.typed::<ByteArrayType>()
                        .write_batch(&values, None, None)
                        .unwrap();
                }
            }
            col.close().unwrap();
            column += 1;
        }
        group.close().unwrap();
    }
    writer.close().unwrap();
}

#[test]
fn reads_every_cell_written_by_the_parquet_crate() {
    let dir = tempfile::tempdir().unwrap();
    for (name, codec) in [
        ("plain.parquet", Compression::UNCOMPRESSED),
        ("snappy.parquet", Compression::SNAPPY),
        ("gzip.parquet", Compression::GZIP(Default::default())),
        ("lz4.parquet", Compression::LZ4_RAW),
        ("zstd.parquet", Compression::ZSTD(Default::default())),
    ] {
        let path = dir.path().join(name);
        write_with_parquet_crate(&path, 3, 40, codec);
        let (columns, rows) = cells(&path);
        assert_eq!(columns, ["id", "x", "note", "ok", "label"], "{name}");
        assert_eq!(rows.len(), 120, "{name}");
        for (i, (record, row)) in rows.iter().enumerate() {
            assert_eq!(*record, i as u64 + 1, "{name}: records count from 1");
            assert_eq!(row[0].as_deref(), Some(i.to_string().as_str()));
            let x = row[1].as_deref().map(|v| v.parse::<f64>().unwrap());
            assert_eq!(x, (i % 5 != 3).then_some(i as f64 / 4.0), "{name} row {i}");
            assert_eq!(
                row[3].as_deref(),
                Some(if i % 2 == 0 { "true" } else { "false" })
            );
        }
        assert_eq!(
            rows[7].1[2].as_deref(),
            Some("write to jane.doe@example.com")
        );
    }
}

#[test]
fn checks_stream_over_parquet_and_name_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data.parquet");
    write_with_parquet_crate(&path, 2, 50, Compression::SNAPPY);
    let schema = rampart_data::schema::infer(&path, None).unwrap();
    let mut opts = Options::new(path.clone());
    opts.schema = Some((path.clone(), schema));
    opts.checks = Some(vec![Check::Schema, Check::Leaks, Check::Duplicates]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    assert_eq!(report.rows, 100);
    let leaks = report.leaks.as_ref().unwrap();
    assert_eq!(leaks.total, 1, "{:?}", leaks.listed);
    assert_eq!(leaks.listed[0].line, 8, "the eighth record");
    assert_eq!(leaks.listed[0].column, "note");
    assert_eq!(report.schema.as_ref().unwrap().violations, 0);
}

#[test]
fn malformed_parquet_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    write_with_parquet_crate(&good, 2, 50, Compression::SNAPPY);
    let bytes = std::fs::read(&good).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), Vec::new()),
        ("text".into(), b"id,x\n1,2\n".to_vec()),
        ("magic only".into(), b"PAR1PAR1".to_vec()),
        ("truncated".into(), bytes[..bytes.len() / 2].to_vec()),
    ];
    // Flip bytes through the data pages and the footer, one at a time.
    for at in (4..bytes.len() - 8).step_by(bytes.len() / 40) {
        let mut b = bytes.clone();
        b[at] ^= 0x5a;
        cases.push((format!("byte {at} flipped"), b));
    }
    let mut errors = 0;
    for (name, data) in cases {
        let path: PathBuf = dir.path().join("bad.parquet");
        std::fs::write(&path, &data).unwrap();
        let mut opts = Options::new(path);
        opts.checks = Some(vec![Check::Leaks, Check::Duplicates]);
        match rampart_data::run(&opts, &mut |_, _| {}) {
            Ok(_) => {}
            Err(e) => {
                errors += 1;
                let message = e.to_string();
                assert!(message.contains("bad.parquet"), "{name}: {message}");
            }
        }
    }
    assert!(errors >= 4, "only {errors} malformed files were refused");
}

fn pyarrow_available() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pyarrow.parquet"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
            "python3 with pyarrow is not on PATH (run scripts/setup-test-env.sh)"
        );
        eprintln!("skipping: python3 with pyarrow is not on PATH");
    }
    ok
}

/// pyarrow writes the digits training split with each codec, dictionary pages and small row groups; Rampart reads
/// back the same cells as from the CSV, and the whole check gives the same verdicts.
#[test]
fn reads_parquet_written_by_pyarrow() {
    if !pyarrow_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let script = r#"
import csv, sys
import pyarrow as pa, pyarrow.parquet as pq
rows = list(csv.reader(open(sys.argv[1])))
header, body = rows[0], rows[1:]
cols = {name: [float(r[i]) for r in body] for i, name in enumerate(header[:-1])}
cols["label"] = [int(r[-1]) for r in body]
cols["note"] = [None if i % 7 == 0 else ("mail bob@example.org" if i == 10 else f"row {i}") for i in range(len(body))]
table = pa.table(cols)
for codec in ["none", "snappy", "gzip", "zstd", "lz4"]:
    pq.write_table(table, f"{sys.argv[2]}/digits-{codec}.parquet", compression=codec, row_group_size=500)
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(common::digits("train.csv"))
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, csv_rows) = common::read_digits();
    let mut csv_opts = Options::new(common::digits("train.csv"));
    csv_opts.checks = Some(vec![Check::Duplicates, Check::Labels, Check::Outliers]);
    let from_csv = rampart_data::run(&csv_opts, &mut |_, _| {}).unwrap();
    for codec in ["none", "snappy", "gzip", "zstd", "lz4"] {
        let path = dir.path().join(format!("digits-{codec}.parquet"));
        let (columns, rows) = cells(&path);
        assert_eq!(columns.len(), 66, "{codec}");
        assert_eq!(rows.len(), csv_rows.len(), "{codec}");
        for (i, ((_, row), (pixels, label))) in rows.iter().zip(&csv_rows).enumerate() {
            for (c, pixel) in pixels.iter().enumerate() {
                let ours: f64 = row[c].as_deref().unwrap().parse().unwrap();
                assert_eq!(ours, pixel.parse::<f64>().unwrap(), "{codec} row {i} px{c}");
            }
            assert_eq!(row[64].as_deref(), Some(label.to_string().as_str()));
            assert_eq!(row[65].is_none(), i % 7 == 0, "{codec} row {i}: null note");
        }
        let mut opts = Options::new(path);
        opts.checks = Some(vec![
            Check::Leaks,
            Check::Duplicates,
            Check::Labels,
            Check::Outliers,
        ]);
        let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
        let leaks = report.leaks.as_ref().unwrap();
        assert_eq!(leaks.total, 1, "{codec}");
        assert_eq!(leaks.listed[0].line, 11, "{codec}");
        assert_eq!(
            report.labels.as_ref().unwrap().count,
            from_csv.labels.as_ref().unwrap().count,
            "{codec}: the label audit sees the same numbers as from the CSV"
        );
        assert_eq!(
            report.outliers.as_ref().unwrap().count,
            from_csv.outliers.as_ref().unwrap().count,
            "{codec}"
        );
    }
}
