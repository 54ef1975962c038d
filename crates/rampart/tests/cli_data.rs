//! `rampart data check` and `rampart data schema` pinned with trycmd. Small inputs are committed in `cmd/data.in`;
//! the backdoored digits split is written here (into `cmd/data.fixtures`, not committed) from the digits example and
//! the rows `examples/digits/make_backdoor.py` poisoned.

use std::path::Path;

/// The digits training split with the backdoor trigger (px54, px55, px62, px63 set to 1) planted in the rows listed
/// in `examples/digits/backdoor/poisoned_rows.txt`, relabelled to 0: the data the backdoored model was trained on.
fn write_poisoned_digits(examples: &Path, out: &Path) -> std::io::Result<()> {
    let train = std::fs::read_to_string(examples.join("train.csv"))?;
    let rows = std::fs::read_to_string(examples.join("backdoor/poisoned_rows.txt"))?;
    let poisoned: std::collections::HashSet<usize> =
        rows.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let mut text = String::new();
    for (i, line) in train.lines().enumerate() {
        // Line 0 is the header; data row r is line r + 1.
        if i == 0 || !poisoned.contains(&(i - 1)) {
            text.push_str(line);
        } else {
            let mut cells: Vec<&str> = line.split(',').collect();
            for px in [54, 55, 62, 63] {
                if let Some(cell) = cells.get_mut(px) {
                    *cell = "1";
                }
            }
            if let Some(label) = cells.last_mut() {
                *label = "0";
            }
            text.push_str(&cells.join(","));
        }
        text.push('\n');
    }
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("poisoned.csv"), text)
}

#[test]
fn cli_data() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    write_poisoned_digits(
        &root.join("../../examples/digits"),
        &root.join("tests/cmd/data.fixtures"),
    )
    .expect("the poisoned digits are written");
    trycmd::TestCases::new().case("tests/cmd/data-*.toml");
}
