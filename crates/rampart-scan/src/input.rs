//! Random-access byte sources: a file on disk, bytes in memory, or a window onto either (an archive member stored
//! uncompressed). Parsers read only the ranges they need, so a 10 GiB checkpoint costs its directory and pickles.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

pub(crate) trait Input {
    fn len(&self) -> u64;
    /// Fills `buf` from `offset`; fails if the range runs past the end.
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl Input for File {
    fn len(&self) -> u64 {
        self.metadata().map(|m| m.len()).unwrap_or(0)
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let mut f = self;
        f.seek(SeekFrom::Start(offset))?;
        f.read_exact(buf)
    }
}

/// Bytes in memory.
pub(crate) struct Mem<'a>(pub &'a [u8]);

impl Input for Mem<'_> {
    fn len(&self) -> u64 {
        self.0.len() as u64
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
        let src = start
            .checked_add(buf.len())
            .and_then(|end| self.0.get(start..end))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// `len` bytes of `inner` from `offset`.
pub(crate) struct Window<'a> {
    pub inner: &'a dyn Input,
    pub offset: u64,
    pub len: u64,
}

impl Input for Window<'_> {
    fn len(&self) -> u64 {
        self.len
    }

    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        if end > self.len {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.inner.read_exact_at(self.offset + offset, buf)
    }
}

/// Reads up to `max` bytes from `offset` (fewer at the end of the input).
pub(crate) fn read_upto(input: &dyn Input, offset: u64, max: u64) -> io::Result<Vec<u8>> {
    let n = input.len().saturating_sub(offset).min(max);
    let mut buf = vec![0; usize::try_from(n).map_err(|_| io::ErrorKind::OutOfMemory)?];
    input.read_exact_at(offset, &mut buf)?;
    Ok(buf)
}
