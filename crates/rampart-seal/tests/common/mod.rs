//! What the seal tests share.

use std::process::Command;

/// Whether the `age` CLI is installed; without it, `without` says what the caller does instead. With
/// `RAMPART_REQUIRE_PEERS=1` (the test setup's), a missing CLI fails the test.
pub fn have_age(without: &str) -> bool {
    let ok = Command::new("age")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
            "the age CLI is missing (Debian package `age`)"
        );
        eprintln!("the age CLI is not installed: {without}");
    }
    ok
}
