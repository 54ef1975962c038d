//! Sealing and unsealing: round trips, interoperability with the `age` CLI both ways, and bad input
//! (wrong key, truncated or tampered files, loose identity files) leaving nothing behind.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::panic,
    reason = "tests fail loudly on the first surprise"
)]

mod common;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr as _;

use age::secrecy::ExposeSecret as _;
use rampart_seal::{
    load_identities, seal, unseal, unseal_to_memory, Error, Identities, Recipients, SealTo,
};

struct Keys {
    identity_file: PathBuf,
    recipient: String,
}

fn keys(dir: &Path) -> Keys {
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let identity_file = dir.join("key.txt");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options.open(&identity_file).unwrap();
    writeln!(f, "# test key\n{}", identity.to_string().expose_secret()).unwrap();
    Keys {
        identity_file,
        recipient,
    }
}

fn to(recipient: &str) -> SealTo {
    let mut r = Recipients::new();
    r.push(rampart_seal::parse_recipient(recipient).unwrap());
    SealTo::Recipients(r)
}

fn identities(k: &Keys) -> Identities {
    let mut ids = Identities::new();
    ids.extend(load_identities(&k.identity_file).unwrap());
    ids
}

fn sample(dir: &Path, len: usize) -> PathBuf {
    let path = dir.join("model.onnx");
    let data: Vec<u8> = (0..len).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn model_dir(dir: &Path) -> PathBuf {
    let root = dir.join("model");
    std::fs::create_dir_all(root.join("weights/shards")).unwrap();
    std::fs::write(root.join("config.json"), b"{\"layers\":3}").unwrap();
    std::fs::write(root.join("weights/shards/0.bin"), vec![1u8; 200_000]).unwrap();
    std::fs::write(root.join("weights/shards/1.bin"), vec![2u8; 70_000]).unwrap();
    std::fs::create_dir(root.join("empty")).unwrap();
    root
}

fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(".rampart"))
        .collect()
}

#[test]
fn file_round_trip_and_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let input = sample(tmp.path(), 300_000);
    let sealed = tmp.path().join("model.onnx.age");
    let s = seal(&input, &to(&k.recipient), &sealed).unwrap();
    assert_eq!(
        (s.plaintext_bytes, s.files, s.directory),
        (300_000, 1, false)
    );
    let out = tmp.path().join("out.onnx");
    unseal(&sealed, &identities(&k), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    let files = unseal_to_memory(
        std::fs::File::open(&sealed).unwrap(),
        &identities(&k),
        &sealed,
        1 << 30,
    )
    .unwrap();
    assert_eq!(files.len(), 1);
    assert_eq!(files[0].path, Path::new("model.onnx"));
    assert_eq!(files[0].data, std::fs::read(&input).unwrap());
    assert!(matches!(
        unseal_to_memory(
            std::fs::File::open(&sealed).unwrap(),
            &identities(&k),
            &sealed,
            1000
        ),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn directory_round_trip_and_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let input = model_dir(tmp.path());
    let sealed = tmp.path().join("model.age");
    let s = seal(&input, &to(&k.recipient), &sealed).unwrap();
    assert!(s.directory);
    assert_eq!(s.files, 3);
    let out = tmp.path().join("restored");
    let u = unseal(&sealed, &identities(&k), &out).unwrap();
    assert!(u.directory);
    for f in [
        "config.json",
        "weights/shards/0.bin",
        "weights/shards/1.bin",
    ] {
        assert_eq!(
            std::fs::read(out.join(f)).unwrap(),
            std::fs::read(input.join(f)).unwrap(),
            "{f}"
        );
    }
    assert!(out.join("empty").is_dir());
    let mem = unseal_to_memory(
        std::fs::File::open(&sealed).unwrap(),
        &identities(&k),
        &sealed,
        1 << 30,
    )
    .unwrap();
    let names: Vec<_> = mem.iter().map(|f| f.path.clone()).collect();
    assert_eq!(
        names,
        [
            PathBuf::from("config.json"),
            "weights/shards/0.bin".into(),
            "weights/shards/1.bin".into()
        ]
    );
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let tmp = tempfile::tempdir().unwrap();
    let input = sample(tmp.path(), 1000);
    let sealed = tmp.path().join("p.age");
    seal(
        &input,
        &SealTo::Passphrase("correct horse".to_owned().into()),
        &sealed,
    )
    .unwrap();
    let mut ids = Identities::new();
    ids.set_passphrase("wrong".to_owned().into());
    let out = tmp.path().join("out");
    assert!(matches!(
        unseal(&sealed, &ids, &out),
        Err(Error::WrongPassphrase { .. })
    ));
    assert!(!out.exists());
    assert!(matches!(
        unseal(&sealed, &Identities::new(), &out),
        Err(Error::NeedPassphrase { .. })
    ));
    let mut ids = Identities::new();
    ids.set_passphrase("correct horse".to_owned().into());
    unseal(&sealed, &ids, &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
}

#[test]
fn bad_input_leaves_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let input = sample(tmp.path(), 200_000);
    let sealed = tmp.path().join("m.age");
    seal(&input, &to(&k.recipient), &sealed).unwrap();
    let data = std::fs::read(&sealed).unwrap();
    let out = tmp.path().join("out");

    // Truncated: the last chunk is missing.
    let truncated = tmp.path().join("truncated.age");
    std::fs::write(&truncated, &data[..data.len() - 1000]).unwrap();
    let err = unseal(&truncated, &identities(&k), &out).unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    // Tampered: one byte of the payload flipped.
    let tampered = tmp.path().join("tampered.age");
    let mut bad = data.clone();
    let at = bad.len() - 70_000;
    bad[at] ^= 1;
    std::fs::write(&tampered, &bad).unwrap();
    assert!(matches!(
        unseal(&tampered, &identities(&k), &out),
        Err(Error::Damaged { .. })
    ));
    // A truncated sealed directory.
    let dir_sealed = tmp.path().join("dir.age");
    seal(&model_dir(tmp.path()), &to(&k.recipient), &dir_sealed).unwrap();
    let d = std::fs::read(&dir_sealed).unwrap();
    std::fs::write(&truncated, &d[..d.len() - 5]).unwrap();
    assert!(matches!(
        unseal(&truncated, &identities(&k), &out),
        Err(Error::Damaged { .. })
    ));
    // Wrong key.
    let other = keys(&tmp.path().join("other").tap_mkdir());
    assert!(matches!(
        unseal(&sealed, &identities(&other), &out),
        Err(Error::NoMatchingKey { .. })
    ));
    // Not an age file.
    assert!(matches!(
        unseal(&input, &identities(&k), &out),
        Err(Error::NotAge { .. })
    ));
    assert!(!out.exists(), "no plaintext or partial file may be left");
    assert!(
        leftovers(tmp.path()).is_empty(),
        "temporary files left: {:?}",
        leftovers(tmp.path())
    );
    // An identity file others can read is refused.
    std::fs::set_permissions(
        &k.identity_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    assert!(matches!(
        load_identities(&k.identity_file),
        Err(Error::IdentityPermissions { .. })
    ));
    // The output must not exist already.
    std::fs::write(&out, b"keep me").unwrap();
    std::fs::set_permissions(
        &k.identity_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    assert!(matches!(
        unseal(&sealed, &identities(&k), &out),
        Err(Error::OutputExists { .. })
    ));
    assert_eq!(std::fs::read(&out).unwrap(), b"keep me");
    assert!(rampart_seal::parse_recipient("age1notarecipient").is_err());
}

trait TapMkdir {
    fn tap_mkdir(self) -> Self;
}

impl TapMkdir for PathBuf {
    fn tap_mkdir(self) -> Self {
        std::fs::create_dir_all(&self).unwrap();
        self
    }
}

#[test]
fn age_cli_opens_what_rampart_seals() {
    if !common::have_age("skipping") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let input = sample(tmp.path(), 500_000);
    let sealed = tmp.path().join("m.age");
    seal(&input, &to(&k.recipient), &sealed).unwrap();
    let out = tmp.path().join("by-age");
    let status = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&k.identity_file)
        .arg("-o")
        .arg(&out)
        .arg(&sealed)
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    // A sealed directory is a tar stream that `age -d | tar` reads.
    let dir_sealed = tmp.path().join("dir.age");
    seal(&model_dir(tmp.path()), &to(&k.recipient), &dir_sealed).unwrap();
    let tar = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(&k.identity_file)
        .arg(&dir_sealed)
        .output()
        .unwrap();
    assert!(tar.status.success());
    let mut archive = tar::Archive::new(tar.stdout.as_slice());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.contains(&"weights/shards/0.bin".to_owned()),
        "{names:?}"
    );
    assert_eq!(names[0], rampart_seal::MARKER);
}

#[test]
fn rampart_opens_what_the_age_cli_seals() {
    if !common::have_age("skipping") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let k = keys(tmp.path());
    let input = sample(tmp.path(), 500_000);
    let sealed = tmp.path().join("by-age.age");
    let status = Command::new("age")
        .arg("-r")
        .arg(&k.recipient)
        .arg("-o")
        .arg(&sealed)
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let out = tmp.path().join("out");
    unseal(&sealed, &identities(&k), &out).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    // Armored files open too (through the age crate's armor reader).
    let armored = tmp.path().join("armored.age");
    let status = Command::new("age")
        .arg("-a")
        .arg("-r")
        .arg(&k.recipient)
        .arg("-o")
        .arg(&armored)
        .arg(&input)
        .status()
        .unwrap();
    assert!(status.success());
    let _ = age::x25519::Recipient::from_str(&k.recipient).unwrap();
    let out2 = tmp.path().join("out2");
    unseal(&armored, &identities(&k), &out2).unwrap();
    assert_eq!(
        std::fs::read(&out2).unwrap(),
        std::fs::read(&input).unwrap()
    );
    let files = unseal_to_memory(
        std::fs::File::open(&armored).unwrap(),
        &identities(&k),
        &armored,
        1 << 30,
    )
    .unwrap();
    assert_eq!(files[0].data, std::fs::read(&input).unwrap());
}
