//! Interoperability with the real OpenSSF `model_signing` CLI (PyPI `model-signing` 1.1.x), both ways: whatever one
//! tool signs, the other verifies, and both reach the same verdict after every kind of tampering.
//!
//! The peer is found on PATH (`scripts/setup-test-env.sh` installs it). When it is missing the test fails if
//! `RAMPART_REQUIRE_PEERS=1`, and otherwise says why and returns.

// Helpers outside `#[test]` functions may unwrap too (clippy.toml allows it in test code).
#![cfg(test)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

const RAMPART: &str = env!("CARGO_BIN_EXE_rampart");

fn peer_available() -> bool {
    let found = Command::new("model_signing")
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var("RAMPART_REQUIRE_PEERS").as_deref() != Ok("1"),
            "model_signing is not on PATH and RAMPART_REQUIRE_PEERS=1: run scripts/setup-test-env.sh"
        );
        eprintln!("skipping: model_signing is not on PATH (run scripts/setup-test-env.sh)");
    }
    found
}

/// The Python beside `model_signing` (its virtualenv has `cryptography`), to write keys in both PEM encodings.
fn peer_python() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "command -v model_signing"])
        .output()
        .unwrap();
    let path = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    path.parent().unwrap().join("python")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Tool {
    Rampart,
    Peer,
}

struct Keys {
    private: PathBuf,
    public: PathBuf,
}

/// Writes a key pair with `cryptography`: `curve` is `SECP256R1` etc., `format` `TraditionalOpenSSL` (SEC1) or
/// `PKCS8`.
fn make_keys(dir: &Path, name: &str, curve: &str, format: &str) -> Keys {
    let private = dir.join(format!("{name}.pem"));
    let public = dir.join(format!("{name}.pub.pem"));
    let script = format!(
        "from cryptography.hazmat.primitives.asymmetric import ec\n\
         from cryptography.hazmat.primitives import serialization as s\n\
         k = ec.generate_private_key(ec.{curve}())\n\
         open({priv:?}, 'wb').write(k.private_bytes(s.Encoding.PEM, s.PrivateFormat.{format}, s.NoEncryption()))\n\
         open({publ:?}, 'wb').write(k.public_key().public_bytes(s.Encoding.PEM, s.PublicFormat.SubjectPublicKeyInfo))\n",
        priv = private.to_str().unwrap(),
        publ = public.to_str().unwrap(),
    );
    let status = Command::new(peer_python())
        .args(["-c", &script])
        .status()
        .unwrap();
    assert!(status.success());
    Keys { private, public }
}

fn sign(tool: Tool, model: &Path, key: &Path, sig: &Path) {
    let out = match tool {
        Tool::Rampart => Command::new(RAMPART)
            .arg("sign")
            .arg(model)
            .arg("--key")
            .arg(key)
            .arg("--signature")
            .arg(sig)
            .output(),
        Tool::Peer => Command::new("model_signing")
            .args(["sign", "key"])
            .arg(model)
            .arg("--private_key")
            .arg(key)
            .arg("--signature")
            .arg(sig)
            .output(),
    }
    .unwrap();
    assert!(
        out.status.success(),
        "{tool:?} sign failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `tool` verifies `model` against `sig`; any other exit than "verified" / "failed" is a test failure.
fn verifies(tool: Tool, model: &Path, key: &Path, sig: &Path, ignore_unsigned: bool) -> bool {
    let mut cmd = match tool {
        Tool::Rampart => {
            let mut c = Command::new(RAMPART);
            c.arg("verify")
                .arg(model)
                .arg("--key")
                .arg(key)
                .arg("--signature")
                .arg(sig);
            if ignore_unsigned {
                c.arg("--ignore-unsigned-files");
            }
            c
        }
        Tool::Peer => {
            let mut c = Command::new("model_signing");
            c.args(["verify", "key"])
                .arg(model)
                .arg("--public_key")
                .arg(key)
                .arg("--signature")
                .arg(sig);
            if ignore_unsigned {
                c.arg("--ignore_unsigned_files");
            }
            c
        }
    };
    let out = cmd.output().unwrap();
    let code = out.status.code();
    match tool {
        Tool::Rampart => assert!(
            matches!(code, Some(0 | 1)),
            "rampart verify exited {code:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Tool::Peer => assert!(matches!(code, Some(0 | 1))),
    }
    code == Some(0)
}

fn make_model(root: &Path) -> PathBuf {
    let model = root.join("model");
    fs::create_dir_all(model.join("weights")).unwrap();
    fs::write(model.join("config.json"), br#"{"layers": 3}"#).unwrap();
    fs::write(model.join("weights/layer-0.bin"), vec![7u8; 70_000]).unwrap();
    fs::write(model.join("weights/layer-1.bin"), vec![9u8; 5_000]).unwrap();
    fs::write(model.join("weights-readme"), b"weights").unwrap();
    model
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Flips one character of the statement inside the bundle (a digest's hex digit), keeping the JSON valid.
fn tamper_payload(sig: &Path) {
    let python = format!(
        "import json, base64\n\
         b = json.load(open({sig:?}))\n\
         p = base64.b64decode(b['dsseEnvelope']['payload']).decode()\n\
         i = p.index('\"digest\": \"') + 11\n\
         p = p[:i] + ('0' if p[i] != '0' else '1') + p[i+1:]\n\
         b['dsseEnvelope']['payload'] = base64.b64encode(p.encode()).decode()\n\
         open({sig:?}, 'w').write(json.dumps(b))\n",
        sig = sig.to_str().unwrap()
    );
    assert!(Command::new(peer_python())
        .args(["-c", &python])
        .status()
        .unwrap()
        .success());
}

/// One kind of change after signing, and whether verification must still pass.
struct Case {
    name: &'static str,
    change: fn(&Path, &Path) -> PathBuf,
    passes: bool,
    ignore_unsigned: bool,
}

fn same(_: &Path, model: &Path) -> PathBuf {
    model.to_path_buf()
}

const CASES: &[Case] = &[
    Case {
        name: "unchanged",
        change: same,
        passes: true,
        ignore_unsigned: false,
    },
    Case {
        name: "one byte changed",
        change: |_, m| {
            let mut data = fs::read(m.join("weights/layer-0.bin")).unwrap();
            data[1234] ^= 1;
            fs::write(m.join("weights/layer-0.bin"), data).unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "file added",
        change: |_, m| {
            fs::write(m.join("weights/extra.bin"), b"x").unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "file added, unsigned files ignored",
        change: |_, m| {
            fs::write(m.join("weights/extra.bin"), b"x").unwrap();
            m.to_path_buf()
        },
        passes: true,
        ignore_unsigned: true,
    },
    Case {
        name: "file removed",
        change: |_, m| {
            fs::remove_file(m.join("config.json")).unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "file renamed",
        change: |_, m| {
            fs::rename(m.join("config.json"), m.join("config2.json")).unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "empty file added",
        change: |_, m| {
            fs::write(m.join("empty"), b"").unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "symlink added",
        change: |_, m| {
            symlink("config.json", m.join("link.json")).unwrap();
            m.to_path_buf()
        },
        passes: false,
        ignore_unsigned: false,
    },
    Case {
        name: "directory renamed",
        change: |root, m| {
            let moved = root.join("renamed-model");
            fs::rename(m, &moved).unwrap();
            moved
        },
        passes: true,
        ignore_unsigned: false,
    },
    Case {
        name: ".git paths added",
        change: |_, m| {
            fs::create_dir_all(m.join(".git/objects")).unwrap();
            fs::write(m.join(".git/objects/ab"), b"blob").unwrap();
            fs::write(m.join(".gitignore"), b"*.tmp").unwrap();
            fs::write(m.join(".gitattributes"), b"*.bin lfs").unwrap();
            m.to_path_buf()
        },
        passes: true,
        ignore_unsigned: false,
    },
    Case {
        name: "empty directory added",
        change: |_, m| {
            fs::create_dir_all(m.join("weights/empty")).unwrap();
            m.to_path_buf()
        },
        passes: true,
        ignore_unsigned: false,
    },
];

#[test]
fn both_tools_reach_the_same_verdict_on_every_change() {
    if !peer_available() {
        return;
    }
    let keys_dir = tempfile::tempdir().unwrap();
    let keys = make_keys(keys_dir.path(), "p256", "SECP256R1", "PKCS8");
    let other = make_keys(keys_dir.path(), "other", "SECP256R1", "PKCS8");
    for signer in [Tool::Rampart, Tool::Peer] {
        // Sign once, then give each case its own copy of the signed model (the peer is slow to start).
        let pristine = tempfile::tempdir().unwrap();
        let model = make_model(pristine.path());
        let sig = pristine.path().join("model.sig");
        sign(signer, &model, &keys.private, &sig);
        // Two cases at a time: each runs two verifiers, mostly Python start-up.
        for pair in CASES.chunks(2) {
            std::thread::scope(|scope| {
                for case in pair {
                    let (model, sig, keys) = (&model, &sig, &keys);
                    scope.spawn(move || {
                        let dir = tempfile::tempdir().unwrap();
                        let copy = dir.path().join("model");
                        copy_dir(model, &copy);
                        let copy = (case.change)(dir.path(), &copy);
                        for verifier in [Tool::Rampart, Tool::Peer] {
                            let ok =
                                verifies(verifier, &copy, &keys.public, sig, case.ignore_unsigned);
                            assert_eq!(
                                ok, case.passes,
                                "{}: signed by {signer:?}, verified by {verifier:?}",
                                case.name
                            );
                        }
                    });
                }
            });
        }
        // A wrong key and a tampered payload fail for both verifiers.
        for verifier in [Tool::Rampart, Tool::Peer] {
            assert!(
                !verifies(verifier, &model, &other.public, &sig, false),
                "wrong key, {signer:?}/{verifier:?}"
            );
        }
        tamper_payload(&sig);
        for verifier in [Tool::Rampart, Tool::Peer] {
            assert!(
                !verifies(verifier, &model, &keys.public, &sig, false),
                "tampered, {signer:?}/{verifier:?}"
            );
        }
    }
}

#[test]
fn every_curve_and_key_encoding_interoperates() {
    if !peer_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let model = make_model(dir.path());
    for (curve, format) in [
        ("SECP256R1", "TraditionalOpenSSL"),
        ("SECP384R1", "PKCS8"),
        ("SECP521R1", "TraditionalOpenSSL"),
        ("SECP521R1", "PKCS8"),
    ] {
        let keys = make_keys(dir.path(), &format!("{curve}-{format}"), curve, format);
        for (signer, verifier) in [(Tool::Rampart, Tool::Peer), (Tool::Peer, Tool::Rampart)] {
            let sig = dir.path().join(format!("{curve}-{format}-{signer:?}.sig"));
            sign(signer, &model, &keys.private, &sig);
            assert!(
                verifies(verifier, &model, &keys.public, &sig, false),
                "{curve} {format} {signer:?}->{verifier:?}"
            );
        }
    }
}

#[test]
fn signed_ignore_paths_are_honoured_both_ways() {
    if !peer_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let keys = make_keys(dir.path(), "k", "SECP256R1", "PKCS8");
    for signer in [Tool::Rampart, Tool::Peer] {
        let work = tempfile::tempdir().unwrap();
        let model = make_model(work.path());
        fs::create_dir_all(model.join("cache")).unwrap();
        fs::write(model.join("cache/x"), b"1").unwrap();
        // The signature inside the model directory is ignored automatically; `cache` explicitly.
        let sig = model.join("model.sig");
        let status = match signer {
            Tool::Rampart => Command::new(RAMPART)
                .arg("sign")
                .arg(&model)
                .arg("--key")
                .arg(&keys.private)
                .arg("--signature")
                .arg(&sig)
                .arg("--ignore-paths")
                .arg(model.join("cache"))
                .output(),
            Tool::Peer => Command::new("model_signing")
                .args(["sign", "key"])
                .arg(&model)
                .arg("--private_key")
                .arg(&keys.private)
                .arg("--signature")
                .arg(&sig)
                .arg("--ignore-paths")
                .arg(model.join("cache"))
                .output(),
        }
        .unwrap();
        assert!(
            status.status.success(),
            "{}",
            String::from_utf8_lossy(&status.stderr)
        );
        fs::write(model.join("cache/x"), b"2").unwrap();
        fs::write(model.join("cache/y"), b"new").unwrap();
        for verifier in [Tool::Rampart, Tool::Peer] {
            assert!(
                verifies(verifier, &model, &keys.public, &sig, false),
                "{signer:?}->{verifier:?}"
            );
        }
    }
}
