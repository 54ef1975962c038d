//! `rampart-seal`: model artifacts encrypted at rest in the age format (through the `age` crate), so that
//! files sealed here open with the `age` CLI and the reverse.
//!
//! - [`seal`] encrypts a file, or a directory as a tar stream, to X25519 recipients or a passphrase.
//! - [`unseal`] decrypts to a file or directory; [`unseal_to_memory`] decrypts into memory only, for the
//!   gateway, so plaintext never touches the disk.
//!
//! Everything streams in 64 KiB chunks: memory stays flat on multi-GiB models. Output is written to a
//! temporary file next to the destination and renamed into place only once complete and authenticated:
//! an error (a wrong key, a truncated or tampered file) leaves no plaintext and no partial file behind.
//!
//! The age header and payload are written and read here (`header`, `payload`), so that the payload's
//! independent chunks are encrypted and decrypted on all cores; the file key is still wrapped and
//! unwrapped by the `age` crate's recipients and identities. Armored files are read through the `age` crate.

mod archive;
mod error;
mod header;
mod keys;
mod payload;
mod pipe;

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};

use pipe::{ReadAhead, WriteBehind};
use std::path::Path;

pub use age::secrecy::SecretString;
pub use archive::{MemoryFile, MARKER};
pub use error::{Error, Result};
pub use keys::{
    identities_from_text, load_identities, parse_recipient, read_recipients_file, Identities,
    Recipients,
};

/// Plaintext chunk of the age STREAM: buffers match it.
const CHUNK: usize = 64 * 1024;

/// What a file or directory is sealed to.
#[derive(Debug)]
pub enum SealTo {
    /// X25519 (or other age) recipients.
    Recipients(Recipients),
    /// A passphrase (scrypt); cannot be mixed with recipients, as in age.
    Passphrase(SecretString),
}

/// What [`seal`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Plaintext bytes (for a directory, of the tar stream).
    pub plaintext_bytes: u64,
    /// Files sealed (1 for a single file).
    pub files: u64,
    /// Whether the input was a directory.
    pub directory: bool,
}

/// What [`unseal`] produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsealed {
    /// Plaintext bytes.
    pub bytes: u64,
    /// Whether a directory was restored.
    pub directory: bool,
    /// Files written.
    pub files: u64,
}

/// A new file's header (with its nonce) and payload cipher, for the recipients or the passphrase.
fn new_file(to: &SealTo) -> Result<(Vec<u8>, chacha20poly1305::ChaCha20Poly1305)> {
    match to {
        SealTo::Passphrase(p) => {
            let recipient = age::scrypt::Recipient::new(p.clone());
            header::new_file(&[&recipient as &dyn age::Recipient])
        }
        SealTo::Recipients(r) => {
            if r.is_empty() {
                return Err(Error::NoRecipients);
            }
            let recipients: Vec<&dyn age::Recipient> = r.iter().collect();
            header::new_file(&recipients)
        }
    }
}

/// Seals `input` (a file, or a directory as a tar stream) to `output`, atomically.
pub fn seal(input: &Path, to: &SealTo, output: &Path) -> Result<Sealed> {
    let meta = std::fs::metadata(input).map_err(Error::io("read", input))?;
    let (header, cipher) = new_file(to)?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".rampart-seal-")
        .tempfile_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    let mut writer = tmp
        .as_file()
        .try_clone()
        .and_then(|mut file| {
            file.write_all(&header)?;
            payload::Sealer::new(cipher, file)
        })
        .map_err(Error::io("write", output))?;
    let sealed = if meta.is_dir() {
        let (bytes, files) = archive::write_tar(input, &mut writer)?;
        Sealed {
            plaintext_bytes: bytes,
            files,
            directory: true,
        }
    } else if meta.is_file() {
        let file = File::open(input).map_err(Error::io("read", input))?;
        let bytes = copy_buffered(
            &mut ReadAhead::new(file).map_err(Error::io("read", input))?,
            &mut writer,
            |e| Error::io("read", input)(e),
            output,
        )?;
        Sealed {
            plaintext_bytes: bytes,
            files: 1,
            directory: false,
        }
    } else {
        return Err(Error::Unsupported {
            path: input.to_owned(),
        });
    };
    writer.finish().map_err(Error::io("write", output))?;
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("sync", output))?;
    tmp.persist(output)
        .map_err(|e| Error::io("rename into", output)(e.error))?;
    Ok(sealed)
}

/// Copies from a buffered reader straight out of its buffer (no intermediate copy); `read_error` says what
/// a failed read means (an I/O error for plaintext, a decryption failure for a sealed stream).
fn copy_buffered(
    from: &mut impl std::io::BufRead,
    to: &mut impl Write,
    read_error: impl Fn(std::io::Error) -> Error,
    output: &Path,
) -> Result<u64> {
    let mut total = 0u64;
    loop {
        let data = match from.fill_buf() {
            Ok([]) => return Ok(total),
            Ok(data) => data,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(e)),
        };
        let n = data.len();
        to.write_all(data).map_err(Error::io("write", output))?;
        from.consume(n);
        total += n as u64;
    }
}

/// Opens a sealed stream with the given identities (or a passphrase, for a passphrase-sealed file).
fn open<R: std::io::BufRead>(
    input: R,
    keys: &Identities,
    path: &Path,
) -> Result<age::stream::StreamReader<R>> {
    let decryptor =
        age::Decryptor::new_buffered(input).map_err(|e| Error::from_decrypt(e, path))?;
    let scrypt;
    let identities: Vec<&dyn age::Identity> = if decryptor.is_scrypt() {
        let Some(passphrase) = keys.passphrase() else {
            return Err(Error::NeedPassphrase {
                path: path.to_owned(),
            });
        };
        scrypt = age::scrypt::Identity::new(passphrase.clone());
        vec![&scrypt as &dyn age::Identity]
    } else {
        if keys.is_empty() {
            return Err(Error::NoIdentity {
                path: path.to_owned(),
            });
        }
        keys.iter().collect()
    };
    decryptor
        .decrypt(identities.into_iter())
        .map_err(|e| Error::from_decrypt(e, path))
}

/// A sealed stream opened for reading: decrypted here in parallel (binary age files), or by the `age`
/// crate (armored files).
enum Opened<'a, S> {
    Parallel(payload::Plaintext<S>),
    Age(Box<dyn BufRead + 'a>),
}

/// Reads the header of `input` and opens its payload; `source` makes the batch reader of a binary file.
fn open_sealed<'a, R: BufRead + 'a, S: payload::Source>(
    mut input: R,
    keys: &Identities,
    path: &Path,
    source: impl FnOnce(R) -> std::io::Result<S>,
) -> Result<Opened<'a, S>> {
    match header::read(&mut input, path)? {
        header::Start::Armored => {
            let stream = open(age::armor::ArmoredReader::new(input), keys, path)?;
            Ok(Opened::Age(Box::new(BufReader::with_capacity(
                CHUNK * 4,
                stream,
            ))))
        }
        header::Start::V1(header) => {
            let cipher = header::payload_cipher(&header, &mut input, keys, path)?;
            let source = source(input).map_err(Error::io("read", path))?;
            Ok(Opened::Parallel(payload::Plaintext::new(cipher, source)))
        }
    }
}

impl<S: payload::Source> Read for Opened<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Opened::Parallel(p) => p.read(buf),
            Opened::Age(r) => r.read(buf),
        }
    }
}

impl<S: payload::Source> BufRead for Opened<'_, S> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        match self {
            Opened::Parallel(p) => p.fill_buf(),
            Opened::Age(r) => r.fill_buf(),
        }
    }

    fn consume(&mut self, amount: usize) {
        match self {
            Opened::Parallel(p) => p.consume(amount),
            Opened::Age(r) => r.consume(amount),
        }
    }
}

/// Unseals `input` to `output`: a file, or a directory if it was sealed from one. `output` must not exist.
pub fn unseal(input: &Path, keys: &Identities, output: &Path) -> Result<Unsealed> {
    if output.symlink_metadata().is_ok() {
        return Err(Error::OutputExists {
            path: output.to_owned(),
        });
    }
    let file = File::open(input).map_err(Error::io("read", input))?;
    let mut reader = open_sealed(
        BufReader::with_capacity(CHUNK, file),
        keys,
        input,
        payload::ReadAhead::spawn,
    )?;
    let dir = output
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if archive::starts_with_marker(&mut reader).map_err(|e| Error::from_stream(e, input))? {
        let (bytes, files) = archive::extract(&mut reader, input, output)?;
        return Ok(Unsealed {
            bytes,
            directory: true,
            files,
        });
    }
    let tmp = tempfile::Builder::new()
        .prefix(".rampart-unseal-")
        .tempfile_in(dir)
        .map_err(Error::io("create a temporary file in", dir))?;
    let out = tmp
        .as_file()
        .try_clone()
        .map_err(Error::io("write", output))?;
    let bytes = match reader {
        Opened::Parallel(plaintext) => plaintext.write_to(out).map_err(|e| match e {
            payload::Failure::Read(e) => Error::from_stream(e, input),
            payload::Failure::Write(e) => Error::io("write", output)(e),
        })?,
        Opened::Age(mut reader) => {
            let mut out = WriteBehind::new(out).map_err(Error::io("write", output))?;
            let bytes = copy_buffered(
                &mut reader,
                &mut out,
                |e| Error::from_stream(e, input),
                output,
            )?;
            out.finish().map_err(Error::io("write", output))?;
            bytes
        }
    };
    tmp.as_file()
        .sync_all()
        .map_err(Error::io("sync", output))?;
    tmp.persist_noclobber(output)
        .map_err(|e| Error::io("rename into", output)(e.error))?;
    Ok(Unsealed {
        bytes,
        directory: false,
        files: 1,
    })
}

/// Like [`copy`], but read errors are decryption failures (wrong key, truncation, tampering).
pub(crate) fn copy_stream(
    from: &mut (impl Read + ?Sized),
    to: &mut impl Write,
    input: &Path,
    output: &Path,
) -> Result<u64> {
    let mut buf = vec![0u8; CHUNK * 4];
    let mut total = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::from_stream(e, input)),
        };
        to.write_all(buf.get(..n).unwrap_or(&[]))
            .map_err(Error::io("write", output))?;
        total += n as u64;
    }
}

/// Unseals into memory only, for serving: the files of a sealed directory, or one file named by the
/// sealed file's name without `.age`. Refuses more than `limit` plaintext bytes. Nothing is written to disk.
pub fn unseal_to_memory(
    input: impl Read,
    keys: &Identities,
    name: &Path,
    limit: u64,
) -> Result<Vec<MemoryFile>> {
    let mut reader = open_sealed(
        BufReader::with_capacity(CHUNK, input),
        keys,
        name,
        |input| Ok(payload::Batches::new(input)),
    )?;
    if archive::starts_with_marker(&mut reader).map_err(|e| Error::from_stream(e, name))? {
        return archive::read_to_memory(&mut reader, name, limit);
    }
    let mut data = Vec::new();
    loop {
        let buf = reader.fill_buf().map_err(|e| Error::from_stream(e, name))?;
        if buf.is_empty() {
            break;
        }
        let n = buf.len();
        if (data.len() as u64).saturating_add(n as u64) > limit {
            return Err(Error::TooLarge {
                path: name.to_owned(),
                limit,
            });
        }
        data.extend_from_slice(buf);
        reader.consume(n);
    }
    let file_name = name
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".age").to_owned())
        .unwrap_or_default();
    Ok(vec![MemoryFile {
        path: file_name.into(),
        data,
    }])
}

/// Fuzzing entry point: unseals `data` into memory with a fixed identity and a passphrase. Never panics.
#[doc(hidden)]
pub fn fuzz_unseal(data: &[u8]) {
    let mut keys = Identities::new();
    if let Ok(ids) = identities_from_text(
        "AGE-SECRET-KEY-1CHMYAEM5F6Q288ENSYM4W6X9L557PUF3SZ6YHSTNEGKT3DAE9TKSG2YT99\n",
        Path::new("fuzz"),
    ) {
        keys.extend(ids);
    }
    let _ = unseal_to_memory(data, &keys, Path::new("fuzz.age"), 1 << 20);
}
