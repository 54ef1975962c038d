//! Format detection by content: magic numbers and structure, never the file name.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    Zip,
    Tar,
    Hdf5,
    Gguf,
    Npy,
    Safetensors,
    /// `strong`: starts with PROTO, so a failure to parse is itself a finding.
    Pickle {
        strong: bool,
    },
    Gzip,
    Zlib,
    Bzip2,
    Xz,
    Lz4,
    Zstd,
    Protobuf,
    Json,
    Unknown,
}

impl Format {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Zip => "zip",
            Format::Tar => "tar",
            Format::Hdf5 => "hdf5",
            Format::Gguf => "gguf",
            Format::Npy => "npy",
            Format::Safetensors => "safetensors",
            Format::Pickle { .. } => "pickle",
            Format::Gzip => "gzip",
            Format::Zlib => "zlib",
            Format::Bzip2 => "bzip2",
            Format::Xz => "xz",
            Format::Lz4 => "lz4",
            Format::Zstd => "zstd",
            Format::Protobuf => "protobuf",
            Format::Json => "json",
            Format::Unknown => "unknown",
        }
    }
}

/// Opcodes a protocol 0 or 1 pickle can start with.
const PICKLE_FIRST: &[u8] = b"(}])cNIJKLMSTUVXFGPdlti";

/// Detects the format from the first bytes (at least 512 when the input has them) and the total length.
pub(crate) fn detect(head: &[u8], len: u64) -> Format {
    let starts = |magic: &[u8]| head.starts_with(magic);
    if starts(b"PK\x03\x04") || starts(b"PK\x05\x06") || starts(b"PK\x07\x08") {
        return Format::Zip;
    }
    if starts(b"\x89HDF\r\n\x1a\n") {
        return Format::Hdf5;
    }
    if starts(b"GGUF") {
        return Format::Gguf;
    }
    if starts(b"\x93NUMPY") {
        return Format::Npy;
    }
    if starts(b"\x1f\x8b") {
        return Format::Gzip;
    }
    if starts(b"BZh") {
        return Format::Bzip2;
    }
    if starts(b"\xfd7zXZ\x00") {
        return Format::Xz;
    }
    if starts(b"\x04\x22\x4d\x18") {
        return Format::Lz4;
    }
    if starts(b"\x28\xb5\x2f\xfd") {
        return Format::Zstd;
    }
    if head.get(257..262) == Some(b"ustar") {
        return Format::Tar;
    }
    if let (Some(n), Some(b'{')) = (head.get(..8), head.get(8)) {
        let mut le = [0u8; 8];
        le.copy_from_slice(n);
        if u64::from_le_bytes(le) <= len.saturating_sub(8) {
            return Format::Safetensors;
        }
    }
    match (head.first(), head.get(1)) {
        (Some(0x80), Some(p)) if *p <= 5 => return Format::Pickle { strong: true },
        (Some(0x78), Some(&b)) if (0x78u16 * 256 + u16::from(b)) % 31 == 0 => return Format::Zlib,
        _ => {}
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Format::Json;
    }
    if matches!(head.first(), Some(0x08 | 0x0a)) {
        return Format::Protobuf;
    }
    if head.first().is_some_and(|b| PICKLE_FIRST.contains(b)) {
        return Format::Pickle { strong: false };
    }
    Format::Unknown
}
