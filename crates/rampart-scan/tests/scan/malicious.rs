//! One sample per published technique: each must be reported at the right severity.

use rampart_scan::Severity;

use crate::build::*;
use crate::{assert_finding, scan};

#[test]
fn classic_reduce_of_posix_system() {
    let r = assert_finding(
        &payload("posix", "system"),
        "pickle.dangerous-import",
        Severity::Critical,
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.contains("posix.system")));
}

#[test]
fn every_listed_primitive_is_critical() {
    for (m, n) in [
        ("os", "system"),
        ("nt", "system"),
        ("subprocess", "Popen"),
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("__builtin__", "eval"),
        ("builtins", "getattr"),
        ("builtins", "__import__"),
        ("runpy", "run_path"),
        ("importlib", "import_module"),
        ("pip", "main"),
        ("pip._internal.cli.main", "main"),
        ("timeit", "timeit"),
        ("pydoc", "locate"),
        ("pydoc", "pipepager"),
        ("multiprocessing.util", "spawnv_passfds"),
        ("marshal", "loads"),
        ("types", "FunctionType"),
        ("code", "InteractiveInterpreter"),
        ("pty", "spawn"),
        ("socket", "create_connection"),
        ("shutil", "rmtree"),
        ("ctypes", "CDLL"),
        ("webbrowser", "open"),
        ("numpy.testing._private.utils", "runstring"),
        ("torch.hub", "load"),
        ("operator", "attrgetter"),
        ("pickle", "loads"),
        ("dill", "loads"),
        ("asyncio.subprocess", "create_subprocess_shell"),
        ("platform", "popen"),
    ] {
        let r = scan(&payload(m, n));
        assert!(
            r.findings.iter().any(
                |f| f.severity == Severity::Critical && f.message.contains(&format!("{m}.{n}"))
            ),
            "{m}.{n} not critical: {:#?}",
            r.findings
        );
    }
}

#[test]
fn marshal_and_function_type_chain() {
    // types.FunctionType(marshal.loads(b"..."), {})()
    let p = P::new()
        .proto(2)
        .global("types", "FunctionType")
        .global("marshal", "loads")
        .bytes(b"not really code")
        .tuple1()
        .reduce()
        .empty_dict()
        .tuple2()
        .reduce()
        .empty_tuple()
        .reduce()
        .stop()
        .done();
    let r = assert_finding(&p, "pickle.dangerous-import", Severity::Critical);
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.contains("marshal.loads")));
    assert!(r
        .findings
        .iter()
        .any(|f| f.message.contains("types.FunctionType")));
}

#[test]
fn stack_global_resolved_through_the_memo() {
    // The strings are stored in the memo, popped, and read back: scanners that look at adjacent opcodes miss it.
    let p = P::new()
        .proto(4)
        .str("posix")
        .memoize()
        .pop()
        .str("system")
        .memoize()
        .pop()
        .op(b'h')
        .raw(&[0])
        .op(b'h')
        .raw(&[1])
        .stack_global()
        .str("true")
        .tuple1()
        .reduce()
        .stop()
        .done();
    let r = assert_finding(&p, "pickle.dangerous-import", Severity::Critical);
    assert!(
        r.findings
            .iter()
            .any(|f| f.message.contains("posix.system")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn stack_global_with_long_memo_indices_and_protocol0_strings() {
    let p = P::new()
        .proto(4)
        .string0("os")
        .long_put(4_000_000_000)
        .pop()
        .binunicode("system")
        .long_put(7)
        .pop()
        .long_get(4_000_000_000)
        .long_get(7)
        .stack_global()
        .str("true")
        .tuple1()
        .reduce()
        .stop()
        .done();
    let r = assert_finding(&p, "pickle.dangerous-import", Severity::Critical);
    assert!(r.findings.iter().any(|f| f.message.contains("os.system")));
}

#[test]
fn stack_global_of_computed_name_is_unresolved() {
    // The name comes from a call: it is known only when loading.
    let p = P::new()
        .proto(4)
        .str("os")
        .global("builtins", "str")
        .str("system")
        .tuple1()
        .reduce()
        .stack_global()
        .stop()
        .done();
    assert_finding(&p, "pickle.unresolved-import", Severity::High);
}

#[test]
fn inst_and_obj_are_calls() {
    let inst = P::new()
        .mark()
        .str("true")
        .inst("os", "system")
        .stop()
        .done();
    assert_finding(&inst, "pickle.dangerous-import", Severity::Critical);
    let obj = P::new()
        .proto(1)
        .mark()
        .global("subprocess", "call")
        .str("true")
        .op(b'o')
        .stop()
        .done();
    assert_finding(&obj, "pickle.dangerous-import", Severity::Critical);
    let newobj_ex = P::new()
        .proto(4)
        .str("subprocess")
        .str("Popen")
        .stack_global()
        .empty_tuple()
        .empty_dict()
        .op(0x92)
        .stop()
        .done();
    assert_finding(&newobj_ex, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn numpy_builtins_attribute_walk_escalates() {
    let p = P::new()
        .proto(4)
        .str("numpy")
        .str("__builtins__")
        .stack_global()
        .stop()
        .done();
    assert_finding(&p, "pickle.attribute-escape", Severity::Critical);
    let dotted = P::new()
        .proto(4)
        .str("torch._utils")
        .str("_rebuild_tensor.__globals__")
        .stack_global()
        .stop()
        .done();
    assert_finding(&dotted, "pickle.attribute-escape", Severity::Critical);
}

#[test]
fn unknown_import_is_a_finding_and_called_unknown_is_high() {
    let p = P::new()
        .proto(2)
        .global("mypackage.models", "Net")
        .stop()
        .done();
    assert_finding(&p, "pickle.unknown-import", Severity::Medium);
    let called = payload("mypackage.tools", "run");
    assert_finding(&called, "pickle.unknown-import", Severity::High);
}

#[test]
fn extension_registry_import() {
    let p = P::new()
        .proto(2)
        .raw(&[0x82, 7])
        .empty_tuple()
        .reduce()
        .stop()
        .done();
    assert_finding(&p, "pickle.extension-import", Severity::High);
}

#[test]
fn build_on_an_imported_object() {
    let p = P::new()
        .proto(2)
        .global("torch._utils", "_rebuild_tensor_v2")
        .empty_dict()
        .str("__code__")
        .none()
        .setitem()
        .build()
        .stop()
        .done();
    assert_finding(&p, "pickle.build-on-global", Severity::High);
}

#[test]
fn payload_after_a_benign_pickle() {
    // Two pickles back to back: the second one is what a legacy loader reads next.
    let mut data = P::new().proto(2).int(1).stop().done();
    data.extend(payload("os", "system"));
    assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn truncated_stream_is_never_clean() {
    let mut p = payload("collections", "OrderedDict");
    p.pop();
    p.extend([0xff, 0xfe]);
    assert_finding(&p, "pickle.malformed", Severity::Medium);
    // The import before the break is reported even when the stream does not parse.
    let mut q = P::new().proto(2).call1("posix", "system", "true").done();
    q.extend(b"\xff");
    let r = assert_finding(&q, "pickle.dangerous-import", Severity::Critical);
    assert!(r.findings.iter().any(|f| f.rule == "pickle.malformed"));
}

#[test]
fn protocol_0_text_pickle() {
    let p = b"cos\nsystem\n(S'true'\ntR.".to_vec();
    assert_finding(&p, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn nested_pickle_handed_to_a_loader() {
    let inner = payload("posix", "system");
    let outer = P::new()
        .proto(2)
        .global("torch.storage", "_load_from_bytes")
        .bytes(&inner)
        .tuple1()
        .reduce()
        .stop()
        .done();
    let r = assert_finding(&outer, "pickle.dangerous-import", Severity::Critical);
    let f = r
        .findings
        .iter()
        .find(|f| f.severity == Severity::Critical)
        .unwrap();
    assert!(
        f.member
            .as_deref()
            .unwrap_or("")
            .contains("torch.storage._load_from_bytes"),
        "{f:?}"
    );
    // Protocol 2 writes bytes as `_codecs.encode(str, 'latin1')`.
    let text: String = inner.iter().map(|&b| char::from(b)).collect();
    let encoded = P::new()
        .proto(2)
        .global("pickle", "loads")
        .global("_codecs", "encode")
        .binunicode(&text)
        .str("latin1")
        .tuple2()
        .reduce()
        .tuple1()
        .reduce()
        .stop()
        .done();
    let r = scan(&encoded);
    assert!(
        r.findings
            .iter()
            .any(|f| f.message.contains("posix.system")),
        "{:#?}",
        r.findings
    );
}

#[test]
fn pytorch_zip_with_malicious_data_pkl() {
    let data = torch_zip(payload("posix", "system"), &[floats(4)]);
    let r = assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
    assert!(r.findings.iter().any(|f| f
        .member
        .as_deref()
        .unwrap_or("")
        .starts_with("archive/data.pkl")));
}

#[test]
fn pickle_under_any_member_name_is_scanned() {
    let data = zip(
        &[],
        &[ZipEntry::stored(
            "weights/tensor.bin",
            payload("os", "system"),
        )],
    );
    assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn zip_with_encryption_flag_still_scanned() {
    let mut e = ZipEntry::stored("archive/data.pkl", payload("posix", "system"));
    e.flags = 1;
    let data = zip(&[], &[e]);
    let r = assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "zip.anomaly" && f.message.contains("encryption")));
}

#[test]
fn zip_with_bad_crc_still_scanned() {
    let mut e = ZipEntry::stored("archive/data.pkl", payload("posix", "system"));
    e.bad_crc = true;
    let r = assert_finding(
        &zip(&[], &[e]),
        "pickle.dangerous-import",
        Severity::Critical,
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "zip.anomaly" && f.message.contains("CRC")));
    let mut d = ZipEntry::deflated("archive/data.pkl", payload("posix", "system"));
    d.bad_crc = true;
    let r = assert_finding(
        &zip(&[], &[d]),
        "pickle.dangerous-import",
        Severity::Critical,
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "zip.anomaly" && f.message.contains("CRC")));
}

#[test]
fn zip_whose_local_header_disagrees() {
    let mut e = ZipEntry::stored("archive/data.pkl", payload("posix", "system"));
    e.local_name = Some("archive/other.txt".into());
    let r = assert_finding(
        &zip(&[], &[e]),
        "pickle.dangerous-import",
        Severity::Critical,
    );
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "zip.anomaly" && f.message.contains("local header")));
}

#[test]
fn zip_behind_a_prefix() {
    let data = zip(
        b"#!/bin/sh\necho this is not a zip\n",
        &[ZipEntry::stored(
            "archive/data.pkl",
            payload("posix", "system"),
        )],
    );
    let r = assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "zip.anomaly" && f.message.contains("precede")));
}

#[test]
fn pickle_polyglot_with_zip_tail() {
    // A valid pickle that is also a zip: `pickle.load` and `torch.load` see different content.
    let data = zip(
        &payload("collections", "OrderedDict"),
        &[ZipEntry::stored(
            "archive/data.pkl",
            payload("os", "system"),
        )],
    );
    let r = assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
    assert!(r.findings.iter().any(|f| f.rule == "format.polyglot"));
}

#[test]
fn nested_zip_in_tar_in_zip() {
    let inner = zip(
        &[],
        &[ZipEntry::deflated(
            "model/data.pkl",
            payload("posix", "system"),
        )],
    );
    let t = tar(&[("checkpoint.bin", inner)]);
    let outer = zip(&[], &[ZipEntry::stored("bundle.tar", t)]);
    let r = assert_finding(&outer, "pickle.dangerous-import", Severity::Critical);
    let f = r
        .findings
        .iter()
        .find(|f| f.severity == Severity::Critical)
        .unwrap();
    assert_eq!(
        f.member.as_deref().map(|m| m.split('@').next().unwrap()),
        Some("bundle.tar!checkpoint.bin!model/data.pkl")
    );
}

#[test]
fn legacy_pytorch_tar_and_stacked_pickles() {
    let t = tar(&[
        ("sys_info", payload("collections", "OrderedDict")),
        ("pickle", payload("posix", "system")),
    ]);
    assert_finding(&t, "pickle.dangerous-import", Severity::Critical);
    // Legacy (pre-1.6) torch.save: magic number, protocol, sys info, then the object.
    let mut legacy = P::new()
        .proto(2)
        .raw(&[0x8a, 0x0a])
        .raw(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10])
        .stop()
        .done();
    legacy.extend(P::new().proto(2).int(1001).stop().done());
    legacy.extend(P::new().proto(2).empty_dict().stop().done());
    legacy.extend(payload("os", "system"));
    assert_finding(&legacy, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn numpy_object_array_with_payload() {
    let data = npy(
        "'|O'",
        "(1,)",
        &numpy_object_pickle(P::new().call1("os", "system", "true")),
    );
    let r = assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
    assert!(r.findings.iter().any(|f| f.rule == "numpy.object-array"));
    let npz = zip(&[], &[ZipEntry::deflated("arr_0.npy", data)]);
    assert_finding(&npz, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn joblib_zlib_compressed_payload() {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(&payload("os", "system")).unwrap();
    let data = enc.finish().unwrap();
    assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn joblib_payload_after_array_data() {
    // A joblib file whose inline array bytes hide a second payload right behind them.
    let mut data = crate::benign::joblib_array(3);
    data.pop(); // STOP of the wrapper stream
    data.extend(P::new().call1("os", "system", "true").pop().stop().done());
    assert_finding(&data, "pickle.dangerous-import", Severity::Critical);
}

#[test]
fn keras_lambda_and_custom_module() {
    let config = r#"{"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "Dense", "config": {"name": "d", "units": 2}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": ["YWJj", null, null], "function_type": "lambda"}}]}}"#;
    let keras = zip(
        &[],
        &[
            ZipEntry::deflated("config.json", config.as_bytes().to_vec()),
            ZipEntry::stored("metadata.json", b"{\"keras_version\": \"3.4.1\"}".to_vec()),
        ],
    );
    assert_finding(&keras, "keras.lambda", Severity::Critical);
    let custom = r#"{"module": "evilpkg.layers", "class_name": "Backdoor", "config": {}, "registered_name": "Backdoor"}"#;
    assert_finding(custom.as_bytes(), "keras.custom-module", Severity::High);
    let func = r#"{"module": "builtins", "class_name": "function", "config": "exec", "registered_name": "function"}"#;
    assert_finding(func.as_bytes(), "keras.custom-module", Severity::Critical);
    // Keras 2 HDF5: the configuration is an attribute somewhere in the file.
    let mut h5 = b"\x89HDF\r\n\x1a\n".to_vec();
    h5.extend(vec![0u8; 3000]);
    h5.extend(b"model_config\0\0\0");
    h5.extend(config.as_bytes());
    h5.extend(vec![0u8; 3000]);
    assert_finding(&h5, "keras.lambda", Severity::Critical);
}

#[test]
fn tensorflow_saved_model_with_file_and_python_ops() {
    let node = |name: &str, op: &str| Pb::new().str(1, name).str(2, op);
    let graph = Pb::new()
        .msg(1, node("x", "Placeholder"))
        .msg(1, node("read", "ReadFile"))
        .msg(
            2,
            Pb::new().msg(
                1,
                Pb::new()
                    .msg(1, Pb::new().str(1, "f"))
                    .msg(3, node("py", "EagerPyFunc"))
                    .msg(3, node("w", "WriteFile")),
            ),
        );
    let saved = Pb::new()
        .varint(1, 1)
        .msg(2, Pb::new().msg(1, Pb::new().str(1, "serve")).msg(2, graph));
    let r = assert_finding(&saved.0, "tensorflow.dangerous-op", Severity::Critical);
    for op in ["ReadFile", "WriteFile", "EagerPyFunc"] {
        assert!(
            r.findings.iter().any(|f| f.message.contains(op)),
            "{op}: {:#?}",
            r.findings
        );
    }
}

#[test]
fn onnx_external_data_escape_and_custom_domain() {
    let tensor = |loc: &str| {
        Pb::new()
            .str(8, "w")
            .msg(13, Pb::new().str(1, "location").str(2, loc))
            .varint(14, 1)
    };
    let graph = Pb::new()
        .msg(1, Pb::new().str(1, "x").str(2, "y").str(4, "Relu"))
        .msg(
            1,
            Pb::new()
                .str(1, "y")
                .str(2, "z")
                .str(4, "Evil")
                .str(7, "com.attacker.ops"),
        )
        .msg(5, tensor("../../etc/passwd"))
        .msg(5, tensor("/etc/shadow"))
        .msg(5, tensor("weights.bin"));
    let model = Pb::new()
        .varint(1, 8)
        .str(2, "test")
        .msg(7, graph)
        .msg(8, Pb::new().str(1, "").varint(2, 17));
    let r = assert_finding(&model.0, "onnx.external-data-escape", Severity::High);
    assert!(r
        .findings
        .iter()
        .any(|f| f.rule == "onnx.custom-domain" && f.message.contains("com.attacker.ops")));
    assert_eq!(
        r.findings
            .iter()
            .filter(|f| f.rule == "onnx.external-data-escape")
            .count(),
        2,
        "{:#?}",
        r.findings
    );
}

#[test]
fn gguf_chat_template_injection() {
    let t = "{% for m in messages %}{{ m.content }}{% endfor %}{{ lipsum.__globals__['os'].popen('id').read() }}";
    let data = gguf(
        &[
            ("general.architecture", "llama"),
            ("tokenizer.chat_template", t),
        ],
        &[("tok.weight", 64)],
    );
    assert_finding(&data, "gguf.template-injection", Severity::Critical);
    let hidden = "{{ ()|attr('\\x5f\\x5fclass\\x5f\\x5f') }}";
    let data = gguf(&[("tokenizer.chat_template", hidden)], &[]);
    assert_finding(&data, "gguf.template-injection", Severity::High);
}
