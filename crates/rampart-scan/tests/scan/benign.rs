//! Ordinary files of every format: none may raise a finding.

use crate::assert_clean;
use crate::build::*;

/// `joblib.dump(numpy.arange(n, dtype=float64))`: the array bytes sit inline after the wrapper's BUILD.
pub fn joblib_array(n: usize) -> Vec<u8> {
    let mut p = P::new()
        .proto(4)
        .str("joblib.numpy_pickle")
        .str("NumpyArrayWrapper")
        .stack_global()
        .empty_tuple()
        .newobj()
        .empty_dict()
        .mark()
        .str("subclass")
        .str("numpy")
        .str("ndarray")
        .stack_global()
        .str("shape")
        .int(n as i32)
        .tuple1()
        .str("order")
        .str("C")
        .str("dtype")
        .str("numpy")
        .str("dtype")
        .stack_global()
        .str("f8")
        .newfalse()
        .newtrue()
        .tuple3()
        .reduce()
        .mark()
        .int(3)
        .str("<")
        .none()
        .none()
        .none()
        .int(-1)
        .int(-1)
        .int(0)
        .tuple()
        .build()
        .str("allow_mmap")
        .newtrue()
        .str("numpy_array_alignment_bytes")
        .int(16)
        .setitems()
        .build()
        .done();
    let pad = 16 - ((p.len() + 1) % 16);
    p.push(pad as u8);
    p.extend(std::iter::repeat_n(0xff, pad));
    // Array bytes chosen to look like opcodes, as real data does.
    p.extend((0..n).flat_map(|i| [b'c', b'o', b's', b'\n', 0x80, 2, b'R', i as u8]));
    p.push(b'.');
    p
}

#[test]
fn pytorch_checkpoint_with_tensors() {
    let pickle = torch_state_dict(&[("fc1.weight", 16), ("fc1.bias", 4), ("fc2.weight", 8)]);
    // Storages whose first bytes look like PROTO and like protocol-0 opcodes must stay data.
    let mut s0 = floats(16);
    s0[..2].copy_from_slice(&[0x80, 0x00]);
    let mut s1 = floats(4);
    s1[0] = b'(';
    let r = assert_clean(&torch_zip(pickle, &[s0, s1, floats(8)]));
    assert!(
        r.files[0]
            .formats
            .iter()
            .any(|f| f.ends_with("data.pkl:pickle")),
        "{:?}",
        r.files
    );
}

#[test]
fn pytorch_optimizer_state() {
    assert_clean(&torch_zip(
        torch_optimizer_state(),
        &[floats(4), floats(4), floats(4)],
    ));
}

#[test]
fn ordered_dict_and_containers() {
    let p = P::new()
        .proto(2)
        .global("collections", "OrderedDict")
        .empty_tuple()
        .reduce()
        .mark()
        .str("a")
        .int(1)
        .str("b")
        .global("builtins", "set")
        .empty_list()
        .mark()
        .int(1)
        .int(2)
        .appends()
        .tuple1()
        .reduce()
        .setitems()
        .stop()
        .done();
    assert_clean(&p);
    assert_clean(b"(dp0\nS'a'\np1\nI1\nsS'b'\np2\n(lp3\nF1.5\naI01\nas.");
}

#[test]
fn numpy_arrays() {
    assert_clean(&npy("'<f8'", "(3,)", &floats(6)));
    assert_clean(&npy("'<i4'", "(2, 2)", &[0u8; 16]));
    let npz = zip(
        &[],
        &[
            ZipEntry::deflated("a.npy", npy("'<f4'", "(4,)", &floats(4))),
            ZipEntry::stored("b.npy", npy("'|u1'", "(3,)", b"abc")),
        ],
    );
    assert_clean(&npz);
}

#[test]
fn numpy_object_array_of_plain_values_is_low_only() {
    let data = npy(
        "'|O'",
        "(2,)",
        &numpy_object_pickle(P::new().int(1).str("x")),
    );
    let r = crate::scan(&data);
    assert!(
        r.findings.iter().all(|f| f.rule == "numpy.object-array"),
        "{:#?}",
        r.findings
    );
    assert_eq!(
        r.verdict(rampart_scan::Severity::Medium),
        rampart_scan::Verdict::Pass
    );
}

#[test]
fn joblib_arrays() {
    assert_clean(&joblib_array(5));
    assert_clean(&joblib_array(0));
}

#[test]
fn keras_dense_models() {
    let config = r#"{"module": "keras", "class_name": "Sequential", "config": {"name": "sequential", "layers": [
        {"module": "keras.layers", "class_name": "InputLayer", "config": {"batch_shape": [null, 64], "name": "input"}, "registered_name": null},
        {"module": "keras.layers", "class_name": "Dense", "config": {"name": "dense", "units": 10, "activation": "relu",
         "kernel_initializer": {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": null}, "registered_name": null}},
         "registered_name": null}]}, "registered_name": null}"#;
    let keras = zip(
        &[],
        &[
            ZipEntry::deflated("config.json", config.as_bytes().to_vec()),
            ZipEntry::deflated("metadata.json", b"{\"keras_version\": \"3.4.1\"}".to_vec()),
            ZipEntry::stored("model.weights.h5", b"\x89HDF\r\n\x1a\n\0\0\0\0".to_vec()),
        ],
    );
    assert_clean(&keras);
    let mut h5 = b"\x89HDF\r\n\x1a\n".to_vec();
    h5.extend(vec![0u8; 100]);
    h5.extend(br#"{"class_name": "Sequential", "config": {"name": "s", "layers": [{"class_name": "Dense", "config": {"name": "d", "units": 2}}]}}"#);
    h5.extend(vec![0u8; 100]);
    assert_clean(&h5);
}

#[test]
fn plain_saved_model_and_onnx() {
    let node = |name: &str, op: &str| Pb::new().str(1, name).str(2, op);
    let saver = Pb::new()
        .msg(1, Pb::new().str(1, "save_fn"))
        .msg(3, node("save", "SaveV2"))
        .msg(3, node("restore", "RestoreV2"))
        .msg(3, node("merge", "MergeV2Checkpoints"));
    let graph = Pb::new()
        .msg(1, node("x", "Placeholder"))
        .msg(1, node("m", "MatMul"))
        .msg(1, node("r", "Relu"))
        .msg(2, Pb::new().msg(1, saver));
    let saved = Pb::new()
        .varint(1, 1)
        .msg(2, Pb::new().msg(1, Pb::new().str(1, "serve")).msg(2, graph));
    assert_clean(&saved.0);
    let onnx = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/digits/model/model.onnx"
    ))
    .unwrap();
    let r = assert_clean(&onnx);
    assert!(
        r.files[0].formats.iter().any(|f| f == "onnx"),
        "{:?}",
        r.files
    );
}

#[test]
fn ordinary_gguf_templates() {
    let chatml = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
    let llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
    let mistral = "{%- set ns = namespace(system='') %}{%- if messages[0]['role'] == 'system' %}{%- set ns.system = messages[0]['content'] %}{%- endif %}{%- for message in messages %}{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{- raise_exception('Conversation roles must alternate') }}{%- endif %}{{- message['content'] | tojson }}{%- endfor %}";
    for t in [chatml, llama3, mistral] {
        assert_clean(&gguf(
            &[
                ("general.architecture", "llama"),
                ("tokenizer.chat_template", t),
            ],
            &[("blk.0.attn.weight", 64), ("blk.0.ffn.weight", 100)],
        ));
    }
}

#[test]
fn safetensors_file() {
    let header = r#"{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"b":{"dtype":"BF16","shape":[4],"data_offsets":[16,24]}}"#;
    let r = assert_clean(&safetensors(header, &[0u8; 24]));
    assert_eq!(r.files[0].formats, vec!["safetensors".to_string()]);
}

#[test]
fn unrelated_files_are_not_findings() {
    assert_clean(b"# Model card\nThis model classifies digits.\n");
    assert_clean(b"changelog for the model\nfixed a bug in training\n(see issue 12)\n");
    assert_clean(b"cat\ndog\nbird\n");
    assert_clean(br#"{"vocab": {"a": 1}, "merges": []}"#);
    assert_clean(b"");
    assert_clean(&[0u8; 4096]);
}

#[test]
fn legacy_pytorch_stacked_pickles_then_storages() {
    let mut legacy = P::new()
        .proto(2)
        .raw(&[0x8a, 0x0a])
        .raw(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10])
        .stop()
        .done();
    legacy.extend(P::new().proto(2).int(1001).stop().done());
    legacy.extend(
        P::new()
            .proto(2)
            .empty_dict()
            .str("protocol_version")
            .int(1001)
            .setitem()
            .stop()
            .done(),
    );
    legacy.extend(torch_state_dict(&[("w", 128)]));
    legacy.extend(P::new().proto(2).mark().str("0").op(b'l').stop().done());
    // The first storage: its element count (128, which reads as PROTO 0) and its floats.
    legacy.extend(128u64.to_le_bytes());
    legacy.extend(floats(128));
    assert_clean(&legacy);
}
