//! An idle log's committer sleeps until it is called: it does not poll.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::expect_used,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

/// The committer thread's context switches so far (Linux), found by its name; this test binary opens one log.
#[cfg(target_os = "linux")]
fn committer_switches() -> u64 {
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if name.trim() != "rampart-log-com" {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap();
        let switches: u64 = status
            .lines()
            .filter(|l| {
                l.starts_with("voluntary_ctxt_switches")
                    || l.starts_with("nonvoluntary_ctxt_switches")
            })
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(found.is_none(), "two committer threads");
        found = Some(switches);
    }
    found.expect("no committer thread")
}

#[cfg(target_os = "linux")]
#[test]
fn an_idle_log_does_not_poll() {
    let dir = tempfile::tempdir().unwrap();
    // Entries, then a checkpoint of them all: nothing is left to commit or to sign.
    let log = common::make_log(dir.path(), 3);
    let checkpoint = log.checkpoint().unwrap();
    assert_eq!(checkpoint.size, 3);
    // Past several checkpoint intervals (20 ms) with nothing to do, the committer has slept through. Before, it woke
    // every millisecond once an interval had passed: some hundreds of switches in this time.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let before = committer_switches();
    std::thread::sleep(std::time::Duration::from_millis(400));
    let idle = committer_switches() - before;
    assert!(idle <= 5, "the idle committer woke {idle} times in 400 ms");
    // And it still answers when called.
    assert_eq!(log.append(b"{\"n\":3}").unwrap(), 3);
    assert_eq!(log.checkpoint().unwrap().size, 4);
    log.close().unwrap();
}
