//! Hostile inputs end as verdicts, in bounded time and memory: bombs, deep nesting, huge indices and lengths.

use rampart_scan::{Options, Severity};

use crate::build::*;
use crate::{assert_finding, scan};

#[test]
fn zip_bomb_is_bounded() {
    let opts = Options {
        max_in_memory: 1 << 20,
        max_inflated: 4 << 20,
        ..Options::default()
    };
    let bomb = zip(
        &[],
        &[ZipEntry::deflated("archive/data.pkl", vec![b'N'; 64 << 20])],
    );
    assert!(bomb.len() < 1 << 20);
    let r = rampart_scan::scan_bytes("bomb", &bomb, &opts);
    assert!(
        r.findings.iter().any(|f| f.rule == "archive.limit"),
        "{:#?}",
        r.findings
    );
}

#[test]
fn overlapping_members_are_reported() {
    let mut data = zip(
        &[],
        &[
            ZipEntry::stored("a.bin", vec![7u8; 64]),
            ZipEntry::stored("b.bin", vec![7u8; 64]),
        ],
    );
    // Point the second central entry at the first member's local header.
    let cd = data.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
    data[cd + 42..cd + 46].copy_from_slice(&0u32.to_le_bytes());
    let r = scan(&data);
    assert!(
        r.findings.iter().any(|f| f.rule == "zip.anomaly"),
        "{:#?}",
        r.findings
    );
}

#[test]
fn deep_zip_nesting_stops_at_the_bound() {
    let mut data = payload("os", "system");
    for i in 0..12 {
        data = zip(&[], &[ZipEntry::stored(&format!("level{i}.zip"), data)]);
    }
    assert_finding(&data, "archive.limit", Severity::Medium);
}

#[test]
fn deeply_nested_values_and_marks() {
    let mut p = P::new().proto(2);
    for _ in 0..200_000 {
        p = p.empty_list().tuple1();
    }
    let r = scan(&p.stop().done());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
    let mut marks = P::new().proto(2);
    for _ in 0..200_000 {
        marks = marks.mark();
    }
    assert_finding(&marks.done(), "pickle.malformed", Severity::Medium);
}

#[test]
fn memo_blowup_is_shared_not_copied() {
    // Each step stores a list holding the previous one twice: copying would need 2^n items.
    let mut p = P::new().proto(2).empty_list().long_put(0);
    for i in 0..5_000u32 {
        p = p
            .pop()
            .empty_list()
            .long_get(i)
            .long_get(i)
            .op(b'a')
            .op(b'a')
            .long_put(i + 1);
    }
    let r = scan(&p.stop().done());
    assert!(r.findings.is_empty(), "{:#?}", r.findings);
}

#[test]
fn enormous_declared_lengths() {
    for op in [0x8d_u8, 0x8e, 0x96] {
        let p = P::new()
            .proto(4)
            .op(op)
            .raw(&u64::MAX.to_le_bytes())
            .stop()
            .done();
        assert_finding(&p, "pickle.malformed", Severity::Medium);
    }
    let p = P::new()
        .proto(4)
        .op(0x95)
        .raw(&(1u64 << 62).to_le_bytes())
        .stop()
        .done();
    assert_finding(&p, "pickle.malformed", Severity::Medium);
    let p = P::new().proto(2).op(b'h').raw(&[200]).stop().done();
    assert_finding(&p, "pickle.malformed", Severity::Medium);
}

#[test]
fn truncated_everything_never_panics() {
    let samples = [
        torch_zip(torch_state_dict(&[("w", 4)]), &[floats(4)]),
        tar(&[("a", payload("os", "system"))]),
        gguf(&[("tokenizer.chat_template", "{{ x }}")], &[("t", 16)]),
        safetensors(
            r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#,
            &[0; 4],
        ),
        npy("'|O'", "(1,)", &numpy_object_pickle(P::new().int(1))),
        crate::benign::joblib_array(4),
    ];
    for s in &samples {
        for cut in (0..s.len()).step_by(7) {
            let _ = scan(&s[..cut]);
            let mut flipped = s.clone();
            flipped[cut] ^= 0x5a;
            let _ = scan(&flipped);
        }
    }
}

#[test]
fn fuzz_corpus_runs_through_every_parser() {
    use rampart_scan::fuzzing::{fuzz_entry, FuzzParser};
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/scan/corpus");
    let mut n = 0;
    for (dir, parser) in [
        ("pickle", FuzzParser::Pickle),
        ("zip", FuzzParser::Zip),
        ("gguf", FuzzParser::Gguf),
        ("safetensors", FuzzParser::Safetensors),
        ("protobuf", FuzzParser::Protobuf),
    ] {
        for entry in std::fs::read_dir(root.join(dir)).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            let _ = fuzz_entry(parser, &data);
            n += 1;
        }
    }
    assert!(n >= 10, "corpus has only {n} files");
}

#[test]
fn pickles_written_by_cpython_in_every_protocol_are_clean() {
    // The corpus holds dicts, OrderedDicts, sets, bytes and strings pickled by CPython with protocols 0 to 5.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/scan/corpus/pickle");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let r = crate::assert_clean(&std::fs::read(&path).unwrap());
        assert_eq!(
            r.files[0].formats,
            vec!["pickle".to_string()],
            "{}",
            path.display()
        );
    }
}

#[test]
fn many_candidate_keras_configs_are_bounded() {
    let mut h5 = b"\x89HDF\r\n\x1a\n".to_vec();
    for _ in 0..10_000 {
        h5.extend(b"{\"class_name\": [");
    }
    assert_finding(&h5, "archive.limit", Severity::Medium);
}
