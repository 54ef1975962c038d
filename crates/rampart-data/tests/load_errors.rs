//! Bad input gives an error that names the place, never a panic.
// Integration tests fail loudly on anything unexpected.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::path::Path;

use rampart_data::load::{self, Row};
use rampart_data::{Check, DataError, Options};

fn read(path: &Path) -> Result<usize, DataError> {
    let mut source = load::open(path, None)?;
    let mut row = Row::default();
    let mut n = 0;
    while source.next_row(&mut row)? {
        n += 1;
    }
    Ok(n)
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn ragged_csv_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.csv", b"a,b\n1,2\n3\n");
    let err = read(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 3") && err.contains("ragged row"),
        "{err}"
    );
}

#[test]
fn bad_utf8_names_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.csv", b"a,b\n1,2\n3,\xff\xfe\n");
    let err = read(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 3") && err.contains("column `b`") && err.contains("UTF-8"),
        "{err}"
    );
}

#[test]
fn bad_jsonl_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "a.jsonl", b"{\"a\": 1}\n{\"a\": 2\n");
    let err = read(&path).unwrap_err().to_string();
    assert!(
        err.contains("line 2") && err.contains("invalid JSON"),
        "{err}"
    );
    let path = write(dir.path(), "b.jsonl", b"{\"a\": 1}\n{\"zz\": 2}\n");
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("line 2") && err.contains("`zz`"), "{err}");
}

#[test]
fn empty_and_unknown_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    assert!(read(&write(dir.path(), "e.csv", b"")).is_err());
    assert!(read(&write(dir.path(), "e.jsonl", b"\n\n")).is_err());
    assert!(read(&write(dir.path(), "x.bin", b"abc"))
        .unwrap_err()
        .to_string()
        .contains("unknown data format"));
    assert!(read(&write(dir.path(), "d.csv", b"a,a\n1,2\n"))
        .unwrap_err()
        .to_string()
        .contains("duplicate column"));
    assert!(read(&write(dir.path(), "p.parquet", b"PAR1 not really")).is_err());
}

#[test]
fn probabilities_of_the_wrong_shape_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.csv", b"x,label\n1,0\n2,1\n3,0\n4,1\n");
    let probs = write(dir.path(), "p.csv", b"p0,p1\n0.9,0.1\n0.2,0.8\n");
    let mut opts = Options::new(data.clone());
    opts.checks = Some(vec![Check::Labels]);
    opts.pred_probs = Some(probs);
    let err = rampart_data::run(&opts, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("has 2 rows") && err.contains("4"), "{err}");
    let probs = write(
        dir.path(),
        "q.csv",
        b"p0,p1\n0.9,0.3\n0.2,0.8\n0.5,0.5\n0.5,0.5\n",
    );
    opts.pred_probs = Some(probs);
    let err = rampart_data::run(&opts, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("not a probability distribution"),
        "{err}"
    );
}

#[test]
fn a_requested_check_that_cannot_run_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let data = write(dir.path(), "d.csv", b"x,y\n1,2\n");
    let mut opts = Options::new(data);
    opts.checks = Some(vec![Check::Labels]);
    let err = rampart_data::run(&opts, &mut |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot run") && err.contains("label"), "{err}");
}

#[cfg(feature = "parquet")]
#[test]
fn parquet_round_trip() {
    use std::sync::Arc;

    use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.parquet");
    let schema = Arc::new(
        parse_message_type(
            "message t { required int64 id; optional double x; required binary note (UTF8); }",
        )
        .unwrap(),
    );
    let file = std::fs::File::create(&path).unwrap();
    let mut writer =
        SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build()))
            .unwrap();
    let mut group = writer.next_row_group().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<Int64Type>()
        .write_batch(&[1, 2, 3], None, None)
        .unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    col.typed::<DoubleType>()
        .write_batch(&[0.5, 1.5], Some(&[1, 0, 1]), None)
        .unwrap();
    col.close().unwrap();
    let mut col = group.next_column().unwrap().unwrap();
    let notes: Vec<ByteArray> = ["hi", "mail bob@example.com", "ok"]
        .iter()
        .map(|s| ByteArray::from(*s))
        .collect();
    col.typed::<ByteArrayType>()
        .write_batch(&notes, None, None)
        .unwrap();
    col.close().unwrap();
    group.close().unwrap();
    writer.close().unwrap();

    let mut source = load::open(&path, None).unwrap();
    assert_eq!(source.columns(), ["id", "x", "note"]);
    let mut row = Row::default();
    let mut seen = Vec::new();
    while source.next_row(&mut row).unwrap() {
        seen.push(
            row.cells()
                .map(|c| c.map(str::to_string))
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen.len(), 3);
    assert_eq!(
        seen[1],
        vec![
            Some("2".to_string()),
            None,
            Some("mail bob@example.com".to_string())
        ]
    );

    let mut opts = Options::new(path);
    opts.checks = Some(vec![Check::Leaks]);
    let report = rampart_data::run(&opts, &mut |_, _| {}).unwrap();
    let leaks = report.leaks.unwrap();
    assert_eq!(leaks.total, 1);
    assert_eq!(leaks.listed[0].line, 2);
}

#[test]
fn gzip_files_read_like_plain_ones() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let text = b"a,b\n1,x\n2,y\n3,z\n";
    let plain = write(dir.path(), "a.csv", text);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text).unwrap();
    let packed = gz.finish().unwrap();
    // By name, and by the magic bytes alone.
    for name in ["a.csv.gz", "b.csv"] {
        let path = write(dir.path(), name, &packed);
        assert_eq!(read(&path).unwrap(), read(&plain).unwrap(), "{name}");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"{\"a\": 1}\n{\"a\": 2}\n").unwrap();
    let path = write(dir.path(), "a.jsonl.gz", &gz.finish().unwrap());
    assert_eq!(read(&path).unwrap(), 2);
    // A damaged stream is an error naming the file.
    let path = write(dir.path(), "bad.csv.gz", &packed[..packed.len() / 2]);
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("bad.csv.gz"), "{err}");
}

#[test]
fn an_unclosed_quote_cannot_take_all_memory() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = b"a,b\n1,\"".to_vec();
    bytes.extend(std::iter::repeat_n(b"x\n".as_slice(), 36 << 20).flatten());
    let path = write(dir.path(), "open.csv", &bytes);
    let err = read(&path).unwrap_err().to_string();
    assert!(err.contains("longer than 64 MiB"), "{err}");
}
