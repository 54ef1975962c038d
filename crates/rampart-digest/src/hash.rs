//! Hashing a listing in parallel: one file per core, largest first.

use std::fs::File;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::{hash_reader, Digest, Error, HashAlgorithm, Listing, Manifest};

/// Below this much data a progress bar would only flicker.
const PROGRESS_MIN_BYTES: u64 = 256 * 1024 * 1024;

/// Hashes every file of `listing` (symlinks in the listing are not hashed: the caller decides about them).
///
/// Files are handed out largest first to one worker per core (rayon's pool), so that a big file does not end up
/// alone at the end. SHA-256 of one file is sequential by nature; BLAKE3 additionally spreads each large read
/// over the pool.
pub fn hash_listing(
    listing: &Listing,
    algorithm: HashAlgorithm,
    progress: bool,
) -> Result<Manifest, Error> {
    let files = &listing.files;
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(files.get(i).map_or(0, |f| f.size)));

    let bar = progress_bar(progress, listing.total_bytes());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Digest>>> = Mutex::new(vec![None; files.len()]);
    let first_error: Mutex<Option<Error>> = Mutex::new(None);

    let workers = rayon::current_num_threads().min(files.len()).max(1);
    rayon::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|_| loop {
                if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                    return;
                }
                let Some(&index) = order.get(next.fetch_add(1, Ordering::Relaxed)) else {
                    return;
                };
                let Some(entry) = files.get(index) else {
                    return;
                };
                let outcome = hash_entry(&entry.source, entry.size, algorithm, |n| {
                    if let Some(bar) = &bar {
                        bar.inc(n);
                    }
                });
                match outcome {
                    Ok(digest) => {
                        if let Ok(mut results) = results.lock() {
                            if let Some(slot) = results.get_mut(index) {
                                *slot = Some(digest);
                            }
                        }
                    }
                    Err(source) => {
                        if let Ok(mut first) = first_error.lock() {
                            first.get_or_insert(Error::Io {
                                path: entry.source.clone(),
                                source,
                            });
                        }
                        return;
                    }
                }
            });
        }
    });
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if let Some(err) = first_error.into_inner().ok().flatten() {
        return Err(err);
    }
    let digests = results.into_inner().unwrap_or_default();
    let mut manifest = Manifest::new(algorithm);
    for (entry, digest) in files.iter().zip(digests) {
        let Some(digest) = digest else {
            // Only reachable if a worker thread panicked inside the hash: report rather than sign a partial list.
            return Err(Error::Io {
                path: entry.source.clone(),
                source: std::io::Error::other("the file was not hashed"),
            });
        };
        manifest.insert(entry.path.clone(), digest);
    }
    Ok(manifest)
}

/// Files at least this large are memory-mapped rather than copied through a buffer.
const MMAP_MIN: u64 = 4 * 1024 * 1024;

/// How much of a mapped file SHA-256 takes at a time (progress granularity).
const SHA256_MAPPED_CHUNK: usize = 8 * 1024 * 1024;

/// Hashes one file. Large files are memory-mapped, so the bytes go from the page cache to the hash without a copy:
/// BLAKE3 through `blake3`'s own map spread over the pool (all cores on one file), SHA-256 through `filebuffer`.
/// The `unsafe` of the mapping stays inside those crates. A file truncated by another process while mapped makes
/// the process die of SIGBUS: it fails closed, with no signature and no verdict written. Everything else streams
/// through [`hash_reader`].
fn hash_entry(
    path: &std::path::Path,
    size: u64,
    algorithm: HashAlgorithm,
    mut progress: impl FnMut(u64),
) -> std::io::Result<Digest> {
    if size < MMAP_MIN {
        return hash_reader(File::open(path)?, algorithm, progress);
    }
    match algorithm {
        HashAlgorithm::Blake3 => {
            let mut hasher = blake3::Hasher::new();
            hasher.update_mmap_rayon(path)?;
            progress(size);
            Ok(Digest(*hasher.finalize().as_bytes()))
        }
        HashAlgorithm::Sha256 => {
            use sha2::Digest as _;
            let mapped = filebuffer::FileBuffer::open(path)?;
            mapped.prefetch(0, mapped.len());
            let mut hasher = sha2::Sha256::new();
            for chunk in mapped.chunks(SHA256_MAPPED_CHUNK) {
                hasher.update(chunk);
                progress(chunk.len() as u64);
            }
            Ok(Digest(hasher.finalize().into()))
        }
    }
}

fn progress_bar(wanted: bool, total: u64) -> Option<ProgressBar> {
    if !wanted || total < PROGRESS_MIN_BYTES || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "hashing {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style);
    }
    Some(bar)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{hash_dir, hash_file, Options};
    use std::fs;

    #[test]
    fn parallel_hashes_equal_sequential_ones() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..20u8 {
            let data: Vec<u8> = (0..(i as usize * 300_000)).map(|j| (j as u8) ^ i).collect();
            fs::write(dir.path().join(format!("f{i}")), data).unwrap();
        }
        for algorithm in [HashAlgorithm::Sha256, HashAlgorithm::Blake3] {
            let options = Options {
                algorithm,
                ..Options::default()
            };
            let manifest = hash_dir(dir.path(), &options).unwrap();
            assert_eq!(manifest.len(), 20);
            for (path, digest) in manifest.iter() {
                let expected = hash_file(&dir.path().join(path.as_str()), algorithm).unwrap();
                assert_eq!(*digest, expected, "{path}");
            }
        }
    }

    #[test]
    fn unreadable_file_is_an_error() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("secret");
        fs::write(&f, "x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&f).is_ok() {
            return; // running as root: permissions do not apply
        }
        let err = hash_dir(dir.path(), &Options::default()).unwrap_err();
        assert!(err.to_string().contains("secret"), "{err}");
    }
}
