//! `rampart scan` pinned with trycmd. The samples are written by this test (harmless payloads), never committed.

use std::path::Path;

/// `os.system("true")` at protocol 2: imported and called, never run.
fn payload() -> Vec<u8> {
    let mut p = vec![0x80, 2];
    p.extend(b"cos\nsystem\n");
    p.extend([0x8c, 4]);
    p.extend(b"true");
    p.extend([0x85, b'R', b'.']);
    p
}

/// A plain pickle: `{"w": 1}` at protocol 2.
fn plain() -> Vec<u8> {
    vec![0x80, 2, b'}', 0x8c, 1, b'w', b'K', 1, b's', b'.']
}

fn write_fixtures(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir.join("model"))?;
    std::fs::write(dir.join("evil.bin"), payload())?;
    std::fs::write(dir.join("model/weights.pkl"), plain())?;
    std::fs::write(dir.join("model/README.md"), "a model\n")?;
    let unknown = [vec![0x80, 2], b"cmypkg.models\nNet\n.".to_vec()].concat();
    std::fs::write(dir.join("custom.pkl"), unknown)
}

#[test]
fn cli_scan() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cmd/scan.fixtures");
    write_fixtures(&dir).expect("fixtures are written");
    trycmd::TestCases::new().case("tests/cmd/scan-*.toml");
}
