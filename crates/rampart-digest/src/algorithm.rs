//! Hash algorithms and digests.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::Digest as _;

use crate::Error;

/// Read size for SHA-256: large enough to amortise the system call, small enough to stay in the L2 cache.
const SHA256_READ: usize = 256 * 1024;
/// Read size for BLAKE3: large chunks let `update_rayon` spread one file over several cores.
const BLAKE3_READ: usize = 4 * 1024 * 1024;

/// The hash of each file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum HashAlgorithm {
    /// SHA-256 (model_signing's default; hardware-accelerated with SHA-NI where present).
    #[default]
    Sha256,
    /// BLAKE3, several times faster, multi-threaded within a file.
    Blake3,
}

impl HashAlgorithm {
    /// The name model_signing writes (`sha256`, `blake3`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "sha256",
            Self::Blake3 => "blake3",
        }
    }

    /// Parses a name as model_signing writes it.
    pub fn from_name(name: &str) -> Result<Self, Error> {
        match name {
            "sha256" => Ok(Self::Sha256),
            "blake3" => Ok(Self::Blake3),
            _ => Err(Error::UnknownAlgorithm {
                name: name.to_string(),
            }),
        }
    }
}

impl fmt::Display for HashAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A 32-byte digest (both supported algorithms give 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// Lowercase hex, as in the manifest.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Parses 64 hex digits.
    pub fn from_hex(text: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(Self(bytes))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

/// Hashes one file, streaming.
pub fn hash_file(path: &Path, algorithm: HashAlgorithm) -> Result<Digest, Error> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    hash_reader(file, algorithm, |_| ()).map_err(io)
}

/// Hashes everything `reader` yields, calling `progress` with the size of each chunk read.
pub fn hash_reader(
    mut reader: impl Read,
    algorithm: HashAlgorithm,
    mut progress: impl FnMut(u64),
) -> std::io::Result<Digest> {
    match algorithm {
        HashAlgorithm::Sha256 => {
            let mut hasher = sha2::Sha256::new();
            let mut buf = vec![0u8; SHA256_READ];
            loop {
                let n = read_full(&mut reader, &mut buf)?;
                let Some(chunk) = buf.get(..n) else { break };
                if chunk.is_empty() {
                    break;
                }
                hasher.update(chunk);
                progress(n as u64);
            }
            Ok(Digest(hasher.finalize().into()))
        }
        HashAlgorithm::Blake3 => {
            let mut hasher = blake3::Hasher::new();
            let mut buf = vec![0u8; BLAKE3_READ];
            loop {
                let n = read_full(&mut reader, &mut buf)?;
                let Some(chunk) = buf.get(..n) else { break };
                if chunk.is_empty() {
                    break;
                }
                if chunk.len() >= 256 * 1024 {
                    hasher.update_rayon(chunk);
                } else {
                    hasher.update(chunk);
                }
                progress(n as u64);
            }
            Ok(Digest(*hasher.finalize().as_bytes()))
        }
    }
}

/// Fills `buf` unless the input ends first; returns how many bytes were read (0 at the end).
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_answers() {
        let sha = hash_reader(&b"abc"[..], HashAlgorithm::Sha256, |_| ()).unwrap();
        assert_eq!(
            sha.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let b3 = hash_reader(&b""[..], HashAlgorithm::Blake3, |_| ()).unwrap();
        assert_eq!(
            b3.to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
    }

    #[test]
    fn large_inputs_match_one_shot_hashes() {
        let data: Vec<u8> = (0..9_000_000u32).map(|i| (i % 251) as u8).collect();
        let sha = hash_reader(&data[..], HashAlgorithm::Sha256, |_| ()).unwrap();
        assert_eq!(sha.0, <[u8; 32]>::from(sha2::Sha256::digest(&data)));
        let b3 = hash_reader(&data[..], HashAlgorithm::Blake3, |_| ()).unwrap();
        assert_eq!(&b3.0, blake3::hash(&data).as_bytes());
    }

    #[test]
    fn names_round_trip() {
        for alg in [HashAlgorithm::Sha256, HashAlgorithm::Blake3] {
            assert_eq!(HashAlgorithm::from_name(alg.name()).unwrap(), alg);
        }
        assert!(HashAlgorithm::from_name("md5").is_err());
    }
}
