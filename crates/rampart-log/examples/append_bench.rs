//! Durable appends per second: `cargo run --release -p rampart-log --example append_bench -- DIR ENTRIES THREADS [single]`.
//!
//! Each thread keeps a window of entries in flight (as a gateway with many concurrent requests does) and
//! waits for each to be durable. With `single`, every append waits for its own fsync before the next one
//! is submitted from one thread: the baseline without group commit.

use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = std::path::PathBuf::from(
        args.get(1)
            .ok_or("usage: append_bench DIR ENTRIES THREADS [single]")?,
    );
    let entries: u64 = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(200_000);
    let threads: u64 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(8);
    let single = args.get(4).is_some_and(|s| s == "single");
    let log = Arc::new(rampart_log::Log::create(
        &dir,
        "bench.invalid/log",
        rampart_log::Options::default(),
    )?);
    // A record like the gateway's: digests, not contents (~200 bytes).
    let record = |i: u64| {
        format!(
            r#"{{"time":"2026-11-25T22:00:00Z","action":"gate.request","actor":"client-{}","outcome":"ok","subject":{{"model":"digits","request":"sha256:{:064x}"}}}}"#,
            i % 97,
            i
        )
        .into_bytes()
    };
    let start = Instant::now();
    if single {
        for i in 0..entries {
            log.append(&record(i))?;
        }
    } else {
        let per = entries / threads;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let log = Arc::clone(&log);
                std::thread::spawn(move || -> Result<(), rampart_log::Error> {
                    let mut window = std::collections::VecDeque::new();
                    for i in 0..per {
                        window.push_back(log.submit(record(t * per + i))?);
                        if window.len() >= 256 {
                            if let Some(r) = window.pop_front() {
                                r.wait()?;
                            }
                        }
                    }
                    for r in window {
                        r.wait()?;
                    }
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| "a thread panicked")??;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let log = Arc::try_unwrap(log).map_err(|_| "log still shared")?;
    let checkpoint = log.close()?;
    let done = checkpoint.size;
    println!("{:.0}", done as f64 / elapsed);
    eprintln!("{done} durable appends in {elapsed:.2} s");
    Ok(())
}
