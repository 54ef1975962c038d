//! Builders for every sample the tests need: pickles opcode by opcode, zips (lenient and hostile), tars, NumPy,
//! protobuf messages, GGUF and safetensors. No Python, no live payload: "malicious" samples import real primitives
//! but with harmless arguments, and nothing here is ever loaded.

#![allow(dead_code, reason = "each test uses some builders")]
#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "test builders: a failure is a bug in the test"
)]

/// A pickle written opcode by opcode.
#[derive(Default, Clone)]
pub struct P(pub Vec<u8>);

impl P {
    pub fn new() -> Self {
        P(Vec::new())
    }
    pub fn proto(mut self, v: u8) -> Self {
        self.0.extend([0x80, v]);
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// GLOBAL (protocol 0): `c module\n name\n`.
    pub fn global(mut self, m: &str, n: &str) -> Self {
        self.0.push(b'c');
        self.0.extend(format!("{m}\n{n}\n").bytes());
        self
    }
    /// INST: `i module\n name\n` over the items since MARK.
    pub fn inst(mut self, m: &str, n: &str) -> Self {
        self.0.push(b'i');
        self.0.extend(format!("{m}\n{n}\n").bytes());
        self
    }
    pub fn str(mut self, s: &str) -> Self {
        if s.len() < 256 {
            self.0.push(0x8c);
            self.0.push(s.len() as u8);
        } else {
            self.0.push(b'X');
            self.0.extend((s.len() as u32).to_le_bytes());
        }
        self.0.extend(s.bytes());
        self
    }
    /// BINUNICODE (protocol 1+).
    pub fn binunicode(mut self, s: &str) -> Self {
        self.0.push(b'X');
        self.0.extend((s.len() as u32).to_le_bytes());
        self.0.extend(s.bytes());
        self
    }
    /// STRING (protocol 0): a quoted literal.
    pub fn string0(mut self, s: &str) -> Self {
        self.0.extend(format!("S'{s}'\n").bytes());
        self
    }
    pub fn bytes(mut self, b: &[u8]) -> Self {
        if b.len() < 256 {
            self.0.push(b'C');
            self.0.push(b.len() as u8);
        } else {
            self.0.push(b'B');
            self.0.extend((b.len() as u32).to_le_bytes());
        }
        self.0.extend_from_slice(b);
        self
    }
    pub fn int(mut self, v: i32) -> Self {
        if (0..256).contains(&v) {
            self.0.extend([b'K', v as u8]);
        } else {
            self.0.push(b'J');
            self.0.extend(v.to_le_bytes());
        }
        self
    }
    pub fn float(mut self, v: f64) -> Self {
        self.0.push(b'G');
        self.0.extend(v.to_be_bytes());
        self
    }
    pub fn op(mut self, op: u8) -> Self {
        self.0.push(op);
        self
    }
    pub fn mark(self) -> Self {
        self.op(b'(')
    }
    pub fn tuple(self) -> Self {
        self.op(b't')
    }
    pub fn tuple1(self) -> Self {
        self.op(0x85)
    }
    pub fn tuple2(self) -> Self {
        self.op(0x86)
    }
    pub fn tuple3(self) -> Self {
        self.op(0x87)
    }
    pub fn empty_tuple(self) -> Self {
        self.op(b')')
    }
    pub fn empty_dict(self) -> Self {
        self.op(b'}')
    }
    pub fn empty_list(self) -> Self {
        self.op(b']')
    }
    pub fn reduce(self) -> Self {
        self.op(b'R')
    }
    pub fn build(self) -> Self {
        self.op(b'b')
    }
    pub fn setitem(self) -> Self {
        self.op(b's')
    }
    pub fn setitems(self) -> Self {
        self.op(b'u')
    }
    pub fn appends(self) -> Self {
        self.op(b'e')
    }
    pub fn newobj(self) -> Self {
        self.op(0x81)
    }
    pub fn stack_global(self) -> Self {
        self.op(0x93)
    }
    pub fn memoize(self) -> Self {
        self.op(0x94)
    }
    pub fn pop(self) -> Self {
        self.op(b'0')
    }
    pub fn none(self) -> Self {
        self.op(b'N')
    }
    pub fn newtrue(self) -> Self {
        self.op(0x88)
    }
    pub fn newfalse(self) -> Self {
        self.op(0x89)
    }
    pub fn binpersid(self) -> Self {
        self.op(b'Q')
    }
    pub fn put(mut self, i: u8) -> Self {
        self.0.extend([b'q', i]);
        self
    }
    pub fn get(mut self, i: u8) -> Self {
        self.0.extend([b'h', i]);
        self
    }
    pub fn long_put(mut self, i: u32) -> Self {
        self.0.push(b'r');
        self.0.extend(i.to_le_bytes());
        self
    }
    pub fn long_get(mut self, i: u32) -> Self {
        self.0.push(b'j');
        self.0.extend(i.to_le_bytes());
        self
    }
    pub fn stop(self) -> Self {
        self.op(b'.')
    }
    /// `module.name(arg)` via protocol-0 GLOBAL and REDUCE, the classic payload shape.
    pub fn call1(self, m: &str, n: &str, arg: &str) -> Self {
        self.global(m, n).str(arg).tuple1().reduce()
    }
    /// `module.name(arg)` via STACK_GLOBAL.
    pub fn call1_stack(self, m: &str, n: &str, arg: &str) -> Self {
        self.str(m).str(n).stack_global().str(arg).tuple1().reduce()
    }
    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// A harmless "malicious" pickle: `module.name("true")` at protocol 2.
pub fn payload(m: &str, n: &str) -> Vec<u8> {
    P::new().proto(2).call1(m, n, "true").stop().done()
}

/// The pickle `torch.save` writes for a state dict of float tensors, with persistent ids for storages.
pub fn torch_state_dict(names: &[(&str, usize)]) -> Vec<u8> {
    let mut p = P::new()
        .proto(2)
        .global("collections", "OrderedDict")
        .put(0)
        .empty_tuple()
        .reduce()
        .put(1)
        .mark();
    for (i, (name, numel)) in names.iter().enumerate() {
        p = p
            .binunicode(name)
            .global("torch._utils", "_rebuild_tensor_v2")
            .mark()
            .mark()
            .binunicode("storage")
            .global("torch", "FloatStorage")
            .binunicode(&i.to_string())
            .binunicode("cpu")
            .int(*numel as i32)
            .tuple()
            .binpersid()
            .int(0)
            .int(*numel as i32)
            .tuple1()
            .int(1)
            .tuple1()
            .newfalse()
            .global("collections", "OrderedDict")
            .empty_tuple()
            .reduce()
            .tuple()
            .reduce();
    }
    p.setitems().stop().done()
}

/// An optimizer state dict as `torch.save(opt.state_dict())` writes it: nested dicts, ints, floats, tensors.
pub fn torch_optimizer_state() -> Vec<u8> {
    let tensor = |p: P, key: &str| {
        p.global("torch._utils", "_rebuild_tensor_v2")
            .mark()
            .mark()
            .binunicode("storage")
            .global("torch", "FloatStorage")
            .binunicode(key)
            .binunicode("cpu")
            .int(4)
            .tuple()
            .binpersid()
            .int(0)
            .int(4)
            .tuple1()
            .int(1)
            .tuple1()
            .newfalse()
            .global("collections", "OrderedDict")
            .empty_tuple()
            .reduce()
            .tuple()
            .reduce()
    };
    let mut p = P::new()
        .proto(2)
        .empty_dict()
        .put(0)
        .mark()
        .binunicode("state")
        .empty_dict()
        .mark()
        .int(0)
        .empty_dict()
        .mark();
    p = p.binunicode("step").int(10);
    p = tensor(p.binunicode("exp_avg"), "1");
    p = tensor(p.binunicode("exp_avg_sq"), "2");
    p = p.setitems().setitems();
    p = p
        .binunicode("param_groups")
        .empty_list()
        .mark()
        .empty_dict()
        .mark();
    p = p
        .binunicode("lr")
        .float(0.001)
        .binunicode("betas")
        .float(0.9)
        .float(0.999)
        .tuple2();
    p = p
        .binunicode("amsgrad")
        .newfalse()
        .binunicode("params")
        .empty_list()
        .int(0)
        .op(b'a');
    p.setitems().appends().setitems().stop().done()
}

pub struct ZipEntry {
    pub name: String,
    pub data: Vec<u8>,
    pub deflate: bool,
    pub flags: u16,
    pub bad_crc: bool,
    pub local_name: Option<String>,
}

impl ZipEntry {
    pub fn stored(name: &str, data: Vec<u8>) -> Self {
        ZipEntry {
            name: name.into(),
            data,
            deflate: false,
            flags: 0,
            bad_crc: false,
            local_name: None,
        }
    }
    pub fn deflated(name: &str, data: Vec<u8>) -> Self {
        ZipEntry {
            deflate: true,
            ..ZipEntry::stored(name, data)
        }
    }
}

/// Writes a zip archive after `prefix`, offsets relative to the archive start as a concatenating attacker would.
pub fn zip(prefix: &[u8], entries: &[ZipEntry]) -> Vec<u8> {
    use std::io::Write;
    let mut out = prefix.to_vec();
    let mut central = Vec::new();
    for e in entries {
        let offset = (out.len() - prefix.len()) as u32;
        let body = if e.deflate {
            let mut enc =
                flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            enc.write_all(&e.data).unwrap();
            enc.finish().unwrap()
        } else {
            e.data.clone()
        };
        let mut crc = crc32fast::hash(&e.data);
        if e.bad_crc {
            crc ^= 0xdead_beef;
        }
        let method: u16 = if e.deflate { 8 } else { 0 };
        let local_name = e.local_name.clone().unwrap_or_else(|| e.name.clone());
        out.extend(b"PK\x03\x04");
        out.extend(20u16.to_le_bytes());
        out.extend(e.flags.to_le_bytes());
        out.extend(method.to_le_bytes());
        out.extend([0u8; 4]);
        out.extend(crc.to_le_bytes());
        out.extend((body.len() as u32).to_le_bytes());
        out.extend((e.data.len() as u32).to_le_bytes());
        out.extend((local_name.len() as u16).to_le_bytes());
        out.extend(0u16.to_le_bytes());
        out.extend(local_name.bytes());
        out.extend(&body);
        central.extend(b"PK\x01\x02");
        central.extend(20u16.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(e.flags.to_le_bytes());
        central.extend(method.to_le_bytes());
        central.extend([0u8; 4]);
        central.extend(crc.to_le_bytes());
        central.extend((body.len() as u32).to_le_bytes());
        central.extend((e.data.len() as u32).to_le_bytes());
        central.extend((e.name.len() as u16).to_le_bytes());
        central.extend([0u8; 12]);
        central.extend(offset.to_le_bytes());
        central.extend(e.name.bytes());
    }
    let cd_offset = (out.len() - prefix.len()) as u32;
    out.extend(&central);
    out.extend(b"PK\x05\x06");
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_offset.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

/// A PyTorch checkpoint as `torch.save` (zip format) lays it out, with `data.pkl` and raw storages.
pub fn torch_zip(pickle: Vec<u8>, storages: &[Vec<u8>]) -> Vec<u8> {
    let mut entries = vec![
        ZipEntry::stored("archive/data.pkl", pickle),
        ZipEntry::stored("archive/byteorder", b"little".to_vec()),
    ];
    for (i, s) in storages.iter().enumerate() {
        entries.push(ZipEntry::stored(&format!("archive/data/{i}"), s.clone()));
    }
    entries.push(ZipEntry::stored("archive/version", b"3\n".to_vec()));
    entries.push(ZipEntry::stored(
        "archive/.data/serialization_id",
        b"1234567890".to_vec(),
    ));
    zip(&[], &entries)
}

/// float32 bytes of `n` values.
pub fn floats(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (i as f32 * 0.37 - 1.0).to_le_bytes())
        .collect()
}

/// A tar archive (ustar) of regular files.
pub fn tar(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend(h);
        out.extend(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend([0u8; 1024]);
    out
}

/// An `.npy` file (version 1) with the given header dict and data.
pub fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
    let mut header = format!("{{'descr': {descr}, 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend((header.len() as u16).to_le_bytes());
    out.extend(header.bytes());
    out.extend(data);
    out
}

/// The pickle NumPy writes for an object array: `_reconstruct`, dtype `O8`, and a list of items.
pub fn numpy_object_pickle(items: P) -> Vec<u8> {
    P::new()
        .proto(3)
        .global("numpy.core.multiarray", "_reconstruct")
        .global("numpy", "ndarray")
        .int(0)
        .tuple1()
        .bytes(b"b")
        .tuple3()
        .reduce()
        .mark()
        .int(1)
        .int(2)
        .tuple1()
        .global("numpy", "dtype")
        .str("O8")
        .newfalse()
        .newtrue()
        .tuple3()
        .reduce()
        .mark()
        .int(3)
        .str("|")
        .none()
        .none()
        .none()
        .int(-1)
        .int(-1)
        .int(63)
        .tuple()
        .build()
        .newfalse()
        .empty_list()
        .mark()
        .raw(&items.0)
        .appends()
        .tuple()
        .build()
        .stop()
        .done()
}

/// Protobuf writer.
#[derive(Default)]
pub struct Pb(pub Vec<u8>);

impl Pb {
    pub fn new() -> Self {
        Pb(Vec::new())
    }
    fn varint_raw(&mut self, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                self.0.push(b);
                return;
            }
            self.0.push(b | 0x80);
        }
    }
    pub fn varint(mut self, field: u32, v: u64) -> Self {
        self.varint_raw(u64::from(field) << 3);
        self.varint_raw(v);
        self
    }
    pub fn bytes(mut self, field: u32, b: &[u8]) -> Self {
        self.varint_raw((u64::from(field) << 3) | 2);
        self.varint_raw(b.len() as u64);
        self.0.extend_from_slice(b);
        self
    }
    pub fn str(self, field: u32, s: &str) -> Self {
        self.bytes(field, s.as_bytes())
    }
    pub fn msg(self, field: u32, m: Pb) -> Self {
        self.bytes(field, &m.0)
    }
}

/// A GGUF v3 file: metadata (string values) and f32 tensors.
pub fn gguf(meta: &[(&str, &str)], tensors: &[(&str, u64)]) -> Vec<u8> {
    let s = |out: &mut Vec<u8>, v: &str| {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.bytes());
    };
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((meta.len() as u64 + 1).to_le_bytes());
    s(&mut out, "general.alignment");
    out.extend(4u32.to_le_bytes());
    out.extend(32u32.to_le_bytes());
    for (k, v) in meta {
        s(&mut out, k);
        out.extend(8u32.to_le_bytes());
        s(&mut out, v);
    }
    let mut offset = 0u64;
    for (name, n) in tensors {
        s(&mut out, name);
        out.extend(1u32.to_le_bytes());
        out.extend(n.to_le_bytes());
        out.extend(0u32.to_le_bytes());
        out.extend(offset.to_le_bytes());
        offset += (n * 4).div_ceil(32) * 32;
    }
    out.resize(out.len().div_ceil(32) * 32, 0);
    out.resize(out.len() + offset as usize, 0);
    out
}

/// A safetensors file from a JSON header and data.
pub fn safetensors(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend(header.bytes());
    out.extend(data);
    out
}
