//! Containers: zip (as lenient as PyTorch's reader), tar, and whole-file compression. Members are scanned in place
//! or decompressed in memory within the scan's bounds; nothing is ever extracted to disk.

pub(crate) mod compressed;
pub(crate) mod tar;
pub(crate) mod zip;
