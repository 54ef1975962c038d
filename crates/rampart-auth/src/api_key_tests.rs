use std::fs;

use super::*;

fn roles(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn add_verify_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let store = ApiKeyStore::open(&state).unwrap();
    assert!(store.list().is_empty());
    let new = store
        .add("alice", &roles(&["user", "admin", "user"]))
        .unwrap();
    assert!(new.key.starts_with("rmp_"));
    assert_eq!(new.key.len(), KEY_LEN);
    assert!(
        !format!("{new:?}").contains(&new.key),
        "Debug must not show the key"
    );

    let principal = store.verify(&new.key).unwrap();
    assert_eq!(principal.id, "alice");
    assert_eq!(principal.roles, ["admin", "user"]);
    assert_eq!(principal.source, Source::ApiKey);

    let listed = store.list();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, new.info.id);
    assert!(!listed[0].revoked);

    assert_eq!(store.revoke(&new.info.id).unwrap(), Revoked::Now);
    assert_eq!(
        store.verify(&new.key),
        None,
        "a revoked key must not verify"
    );
    assert_eq!(store.revoke(&new.info.id).unwrap(), Revoked::Already);
    let listed = store.list();
    assert!(listed[0].revoked);
    assert!(listed[0].revoked_at.is_some());
    assert!(matches!(
        store.revoke("000000000000"),
        Err(KeyStoreError::UnknownKey { .. })
    ));
}

#[test]
fn files_are_private_and_hold_no_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    let new = store.add("svc", &roles(&["user"])).unwrap();
    let stored = fs::read_to_string(dir.path().join(KEY_STORE_FILE)).unwrap();
    let (_, secret) = parse_key(&new.key).unwrap();
    assert!(
        !stored.contains(secret),
        "the key's secret must not be stored"
    );
    assert!(stored.contains(HASH_PREFIX));
    files::check_private_mode(&dir.path().join(KEY_STORE_FILE)).unwrap();
    files::check_private_mode(&dir.path().join(SERVER_SECRET_FILE)).unwrap();
}

#[test]
fn every_wrong_key_is_refused_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    let new = store.add("alice", &roles(&["user"])).unwrap();
    let other = store.add("bob", &roles(&["user"])).unwrap();
    let (id, secret) = parse_key(&new.key).unwrap();
    let (other_id, other_secret) = parse_key(&other.key).unwrap();

    // Last character of the secret flipped: the comparison runs over the whole hash.
    let mut flipped = new.key.clone();
    let last = if flipped.ends_with('0') { "1" } else { "0" };
    flipped.replace_range(KEY_LEN - 1.., last);
    // Another key's secret under this id, and this secret under another id.
    let swapped = format!("rmp_{id}_{other_secret}");
    let moved = format!("rmp_{other_id}_{secret}");
    // An id that does not exist: same hashing work, then refused.
    let unknown = format!("rmp_ffffffffffff_{secret}");
    for wrong in [&flipped, &swapped, &moved, &unknown] {
        assert_eq!(store.verify(wrong), None, "{wrong}");
    }
    // Malformed keys never reach the hash.
    for malformed in [
        "",
        "rmp_",
        &new.key.to_uppercase(),
        &format!("{}x", new.key),
        &new.key[..KEY_LEN - 1],
        &new.key.replacen("rmp_", "rmq_", 1),
        &format!("rmp_{id}-{secret}"),
        "rmp_ééééééééééé_0000000000000000000000000000000000000000000000000000000000000000",
    ] {
        assert_eq!(store.verify(malformed), None, "{malformed}");
    }
    assert!(store.verify(&new.key).is_some());
    assert!(store.verify(&other.key).is_some());

    // Not an assertion on time (never assert timing): a printout for the curious.
    let start = std::time::Instant::now();
    for _ in 0..1000 {
        let _ = store.verify(&unknown);
        let _ = store.verify(&flipped);
    }
    println!(
        "api key verify: {:.2} µs per attempt",
        start.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
}

#[test]
fn reload_if_changed_sees_other_writers() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = ApiKeyStore::open(dir.path()).unwrap();
    assert!(!gateway.reload_if_changed().unwrap());
    let cli = ApiKeyStore::open(dir.path()).unwrap();
    let new = cli.add("alice", &roles(&["user"])).unwrap();
    assert_eq!(gateway.verify(&new.key), None, "not loaded yet");
    assert!(gateway.reload_if_changed().unwrap());
    assert!(gateway.verify(&new.key).is_some());
    assert!(!gateway.reload_if_changed().unwrap(), "nothing changed");
    cli.revoke(&new.info.id).unwrap();
    assert!(gateway.reload_if_changed().unwrap());
    assert_eq!(gateway.verify(&new.key), None);
}

#[test]
fn broken_store_keeps_the_previous_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    let new = store.add("alice", &roles(&["user"])).unwrap();
    fs::write(dir.path().join(KEY_STORE_FILE), b"{ not json").unwrap();
    let err = store.reload_if_changed().unwrap_err();
    assert!(err.to_string().contains("is malformed"), "{err}");
    assert!(
        store.verify(&new.key).is_some(),
        "previous keys stay in force"
    );
    assert!(
        ApiKeyStore::open(dir.path()).is_err(),
        "a fresh open fails closed"
    );
}

#[test]
fn malformed_stores_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    store.add("alice", &roles(&["user"])).unwrap();
    let path = dir.path().join(KEY_STORE_FILE);
    let good = fs::read_to_string(&path).unwrap();
    let cases = [
        good.replace("\"version\": 1", "\"version\": 2"),
        good.replace("\"revoked\": false", "\"revoked\": false, \"extra\": 1"),
        good.replace("hmac-sha256:", "sha256:"),
        good.replace("\"alice\"", "\"al ice\""),
    ];
    for (i, bad) in cases.iter().enumerate() {
        fs::write(&path, bad).unwrap();
        assert!(
            matches!(
                ApiKeyStore::open(dir.path()),
                Err(KeyStoreError::Malformed { .. })
            ),
            "case {i}"
        );
    }
    // Keys without the server secret cannot be checked: refuse to start rather than refuse every key silently.
    fs::write(&path, &good).unwrap();
    fs::remove_file(dir.path().join(SERVER_SECRET_FILE)).unwrap();
    assert!(matches!(
        ApiKeyStore::open(dir.path()),
        Err(KeyStoreError::Secret { .. })
    ));
}

#[cfg(unix)]
#[test]
fn readable_server_secret_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    store.add("alice", &roles(&["user"])).unwrap();
    let secret = dir.path().join(SERVER_SECRET_FILE);
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o644)).unwrap();
    let err = ApiKeyStore::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("chmod 600"), "{err}");
}

#[test]
fn names_are_validated() {
    let dir = tempfile::tempdir().unwrap();
    let store = ApiKeyStore::open(dir.path()).unwrap();
    assert!(matches!(
        store.add("a b", &[]),
        Err(KeyStoreError::InvalidName {
            what: "principal",
            ..
        })
    ));
    assert!(matches!(
        store.add("alice", &roles(&["ro\"le"])),
        Err(KeyStoreError::InvalidName { what: "role", .. })
    ));
    let many: Vec<String> = (0..=MAX_ROLES).map(|i| format!("r{i}")).collect();
    assert!(matches!(
        store.add("alice", &many),
        Err(KeyStoreError::TooManyRoles { .. })
    ));
    assert!(
        !dir.path().join(KEY_STORE_FILE).exists(),
        "nothing written on a refused add"
    );
}

#[test]
fn parse_key_is_strict() {
    let key = format!("rmp_{}_{}", "a".repeat(12), "0".repeat(64));
    assert_eq!(
        parse_key(&key),
        Some(("aaaaaaaaaaaa", "0".repeat(64).as_str()))
    );
    assert_eq!(parse_key(&key.replace("rmp_a", "rmp_g")), None);
}
