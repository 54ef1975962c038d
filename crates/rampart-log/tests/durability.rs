//! Appends from many threads, reopening, and crash safety: a child process appending is killed with
//! SIGKILL mid-append, again and again; every entry it was told is written must be there afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

use std::io::{BufRead as _, BufReader, Write as _};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_log::{verify, Log};

#[test]
fn concurrent_appends_get_distinct_indexes_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    let log = Arc::new(common::make_log(&dir, 0));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                (0..300)
                    .map(|i| log.append(format!("t{t}-{i}").as_bytes()).unwrap())
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..2400).collect::<Vec<_>>());
    Arc::try_unwrap(log).unwrap().close().unwrap();
    let key = rampart_log::read_verifier(&dir, None).unwrap();
    let v = verify(&dir, key, &[]).unwrap();
    assert_eq!(v.problem, None);
    assert_eq!(v.entries_checked, 2400);
    // Reopen and continue.
    let log = Log::open(&dir, common::options()).unwrap();
    assert_eq!(log.append(b"after reopen").unwrap(), 2400);
    assert!(
        Log::open(&dir, common::options()).is_err(),
        "a second writer must be refused"
    );
    log.close().unwrap();
    assert_eq!(common::view(&dir).entry(2400).unwrap(), b"after reopen");
}

#[test]
fn oversized_entries_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let log = common::make_log(&tmp.path().join("log"), 0);
    assert!(log.append(&vec![b'x'; 70_000]).is_err());
    assert_eq!(log.append(b"fine").unwrap(), 0);
}

/// The child: appends from 4 threads forever, printing `ACK index content` once each append returns.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var("RAMPART_LOG_CRASH_DIR") else {
        return;
    };
    let log = Arc::new(Log::open(std::path::Path::new(&dir), common::options()).unwrap());
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (log, out) = (Arc::clone(&log), Arc::clone(&out));
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let content = format!("pid{}-t{t}-{i}", std::process::id());
                    let index = log.append(content.as_bytes()).unwrap();
                    let mut out = out.lock().unwrap();
                    writeln!(out, "ACK {index} {content}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

#[test]
fn acknowledged_entries_survive_kill_9() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("log");
    common::make_log(&dir, 0).close().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<(u64, String)> = Vec::new();
    for round in 0..6u64 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("RAMPART_LOG_CRASH_DIR", &dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let Some(rest) = line.strip_prefix("ACK ") else {
                    continue;
                };
                let mut parts = rest.splitn(2, ' ');
                if let (Some(i), Some(c)) = (
                    parts.next().and_then(|i| i.parse::<u64>().ok()),
                    parts.next(),
                ) {
                    if tx.send((i, c.to_owned())).is_err() {
                        break;
                    }
                }
            }
        });
        // Wait until the child is appending (however slow the machine), let it run a varying while, then
        // kill it mid-append.
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while got.len() < 20 && Instant::now() < deadline {
            if let Ok(ack) = rx.recv_timeout(Duration::from_millis(100)) {
                got.push(ack);
            }
        }
        assert!(
            !got.is_empty(),
            "round {round}: the child acknowledged nothing in 60 s"
        );
        std::thread::sleep(Duration::from_millis(20 + 30 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        reader.join().unwrap();
        got.extend(rx.try_iter());
        acked.extend(got);
        if round % 2 == 1 {
            // Simulate a write torn by power loss: garbage at the end of the write-ahead file.
            let mut wal = std::fs::OpenOptions::new()
                .append(true)
                .open(dir.join("wal"))
                .unwrap();
            wal.write_all(&[0x00, 0x30, b'{', b'"', 0xff]).unwrap();
        }
        if round % 3 == 2 {
            // Simulate a power loss that kept the rename of a never-fsynced full tile but not its data.
            let size = common::view(&dir).checkpoint().size;
            if size % 256 != 0 {
                std::fs::write(
                    rampart_log::tiles::path(
                        &dir,
                        rampart_log::tiles::Kind::Entries,
                        size / 256,
                        256,
                    ),
                    b"",
                )
                .unwrap();
                std::fs::write(
                    rampart_log::tiles::path(
                        &dir,
                        rampart_log::tiles::Kind::Hashes(0),
                        size / 256,
                        256,
                    ),
                    b"",
                )
                .unwrap();
            }
        }
        // Recovery on open keeps every acknowledged entry.
        let log = Log::open(&dir, common::options()).unwrap();
        log.close().unwrap();
        let view = common::view(&dir);
        for (index, content) in &acked {
            assert!(
                *index < view.checkpoint().size,
                "round {round}: acknowledged entry {index} was lost"
            );
            assert_eq!(
                view.entry(*index).unwrap(),
                content.as_bytes(),
                "round {round}: entry {index} changed"
            );
        }
        let key = rampart_log::read_verifier(&dir, None).unwrap();
        assert_eq!(
            verify(&dir, key, &[]).unwrap().problem,
            None,
            "round {round}"
        );
    }
    assert!(
        acked.len() > 100,
        "too few appends to mean anything: {}",
        acked.len()
    );
}
