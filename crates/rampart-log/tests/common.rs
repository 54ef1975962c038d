//! Helpers shared by the log's integration tests.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]
#![allow(dead_code)]

use std::path::Path;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rampart_log::{Log, LogView, Options};

pub fn options() -> Options {
    Options {
        checkpoint_interval: std::time::Duration::from_millis(20),
    }
}

/// A log of `n` entries `{"n":i}` in `dir`.
pub fn make_log(dir: &Path, n: u64) -> Log {
    let log = Log::create(dir, "example.com/test-log", options()).unwrap();
    for i in 0..n {
        assert_eq!(log.append(format!("{{\"n\":{i}}}").as_bytes()).unwrap(), i);
    }
    log
}

pub fn view(dir: &Path) -> LogView {
    LogView::open(dir, rampart_log::read_verifier(dir, None).unwrap()).unwrap()
}

/// The proof file `rampart audit prove --format json` writes.
pub fn proof_json(view: &LogView, index: u64, from: Option<u64>) -> String {
    let size = view.checkpoint().size;
    let entry = view.entry(index).unwrap();
    let hashes = |v: Vec<rampart_log::Hash>| v.iter().map(|h| B64.encode(h)).collect::<Vec<_>>();
    let mut json = serde_json::json!({
        "index": index,
        "tree_size": size,
        "leaf_hash": B64.encode(rampart_log::merkle::leaf_hash(&entry)),
        "inclusion": hashes(view.inclusion(index, size).unwrap()),
    });
    if let Some(from) = from {
        json["consistency"] = serde_json::json!({ "from": from, "proof": hashes(view.consistency(from, size).unwrap()) });
    }
    json.to_string()
}

/// Whether a peer must be present (CI) or may be skipped (a developer's machine).
pub fn require_peers() -> bool {
    std::env::var("RAMPART_REQUIRE_PEERS").is_ok_and(|v| v == "1")
}
