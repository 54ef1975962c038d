//! File I/O overlapped with the cipher: one thread reads ahead, one writes behind, so that encryption and
//! decryption on the calling thread do not wait for system calls. Memory stays bounded: at most
//! `DEPTH` blocks of `BLOCK` bytes are in flight in each direction.

use std::fs::File;
use std::io::{self, BufRead, Read, Write};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Bytes per block handed between threads.
const BLOCK: usize = 1024 * 1024;
/// Blocks in flight per direction.
const DEPTH: usize = 4;

/// Reads a file on its own thread, up to `DEPTH` blocks ahead of the consumer.
pub(crate) struct ReadAhead {
    blocks: Receiver<io::Result<Vec<u8>>>,
    /// Consumed blocks go back to the reader thread, so that it neither allocates nor zeroes new ones.
    spare: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
    ended: bool,
}

impl ReadAhead {
    pub(crate) fn new(mut file: File) -> io::Result<ReadAhead> {
        let (tx, rx) = sync_channel(DEPTH);
        let (spare, spares) = sync_channel::<Vec<u8>>(DEPTH + 1);
        std::thread::Builder::new()
            .name("rampart-read".into())
            .spawn(move || loop {
                let mut block = spares.try_recv().unwrap_or_default();
                block.resize(BLOCK, 0);
                match read_full(&mut file, &mut block) {
                    // Dropping the sender ends the stream.
                    Ok(0) => return,
                    Ok(n) => {
                        block.truncate(n);
                        if tx.send(Ok(block)).is_err() {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            })?;
        Ok(ReadAhead {
            blocks: rx,
            spare,
            current: Vec::new(),
            pos: 0,
            ended: false,
        })
    }
}

impl BufRead for ReadAhead {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        while self.pos >= self.current.len() && !self.ended {
            match self.blocks.recv() {
                Ok(Ok(block)) => {
                    let done = std::mem::replace(&mut self.current, block);
                    let _ = self.spare.try_send(done);
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                Err(_) => self.ended = true,
            }
        }
        Ok(self.current.get(self.pos..).unwrap_or(&[]))
    }

    fn consume(&mut self, amount: usize) {
        self.pos = self.pos.saturating_add(amount).min(self.current.len());
    }
}

impl Read for ReadAhead {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let available = self.fill_buf()?;
        let n = available.len().min(buf.len());
        if let (Some(to), Some(from)) = (buf.get_mut(..n), available.get(..n)) {
            to.copy_from_slice(from);
        }
        self.consume(n);
        Ok(n)
    }
}

/// Fills `buf` unless the input ends first; returns how many bytes were read (0 at the end).
pub(crate) fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Writes to a file on its own thread, up to `DEPTH` blocks behind the producer. [`WriteBehind::finish`]
/// waits until every byte has been written and reports the writer's first error; dropping it without
/// `finish` stops the writer (the caller is abandoning the file).
pub(crate) struct WriteBehind {
    blocks: Option<SyncSender<Vec<u8>>>,
    /// Written blocks come back from the writer thread to be filled again.
    spares: Receiver<Vec<u8>>,
    buf: Vec<u8>,
    writer: Option<JoinHandle<io::Result<()>>>,
}

impl WriteBehind {
    pub(crate) fn new(mut file: File) -> io::Result<WriteBehind> {
        let (tx, rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (spare, spares) = sync_channel::<Vec<u8>>(DEPTH + 1);
        let writer = std::thread::Builder::new()
            .name("rampart-write".into())
            .spawn(move || {
                for mut block in rx {
                    file.write_all(&block)?;
                    block.clear();
                    let _ = spare.try_send(block);
                }
                file.flush()
            })?;
        Ok(WriteBehind {
            blocks: Some(tx),
            spares,
            buf: Vec::with_capacity(BLOCK),
            writer: Some(writer),
        })
    }

    /// Hands the buffered bytes to the writer thread.
    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let next = self
            .spares
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
        let block = std::mem::replace(&mut self.buf, next);
        let sent = self
            .blocks
            .as_ref()
            .is_some_and(|blocks| blocks.send(block).is_ok());
        if sent {
            Ok(())
        } else {
            // The writer stopped early: its error says why.
            Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the file writer stopped before the end")))
        }
    }

    /// Closes the channel and waits for the writer thread.
    fn join(&mut self) -> io::Result<()> {
        self.blocks = None;
        join_writer(self.writer.take())
    }

    /// Writes everything buffered and waits until it is in the file.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        self.send()?;
        self.join()
    }
}

impl Write for WriteBehind {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = BLOCK.saturating_sub(self.buf.len());
        let n = room.min(data.len());
        self.buf.extend_from_slice(data.get(..n).unwrap_or(&[]));
        if self.buf.len() >= BLOCK {
            self.send()?;
        }
        Ok(n)
    }

    /// Hands buffered bytes to the writer thread; [`WriteBehind::finish`] is what waits for them.
    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for WriteBehind {
    fn drop(&mut self) {
        self.blocks = None;
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// Waits for a file-writer thread (its channel already closed): its own result, or why there is none.
pub(crate) fn join_writer(writer: Option<JoinHandle<io::Result<()>>>) -> io::Result<()> {
    match writer.map(JoinHandle::join) {
        Some(Ok(result)) => result,
        Some(Err(_)) => Err(io::Error::other("the file writer failed")),
        None => Err(io::Error::other("the file writer has already stopped")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_through_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..(3 * BLOCK + 12_345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let input = dir.path().join("in");
        std::fs::write(&input, &data).unwrap();
        let mut reader = ReadAhead::new(File::open(&input).unwrap()).unwrap();
        let output = dir.path().join("out");
        let mut writer = WriteBehind::new(File::create(&output).unwrap()).unwrap();
        // Odd-sized reads and writes cross every block boundary.
        let mut buf = vec![0u8; 70_001];
        loop {
            let n = reader.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            writer.write_all(&buf[..n]).unwrap();
        }
        writer.finish().unwrap();
        assert_eq!(std::fs::read(&output).unwrap(), data);
    }

    #[test]
    fn an_empty_file_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("empty");
        std::fs::write(&input, b"").unwrap();
        let mut reader = ReadAhead::new(File::open(&input).unwrap()).unwrap();
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
    }

    #[test]
    fn a_write_error_is_reported() {
        // A read-only file descriptor: the writer thread's first write fails, and finish says so.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ro");
        std::fs::write(&path, b"x").unwrap();
        let mut writer = WriteBehind::new(File::open(&path).unwrap()).unwrap();
        let written = writer.write_all(&vec![1u8; 3 * BLOCK]);
        let result = written.and_then(|()| writer.finish());
        assert!(result.is_err());
    }
}
