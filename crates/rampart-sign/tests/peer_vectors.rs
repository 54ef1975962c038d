//! Signatures written by model_signing 1.1.1 itself, committed as test vectors.

use rampart_sign::{verify_bundle, Bundle, Error, SigningKey, VerifyingKey};

const SIG: &[u8] = include_bytes!("data/peer-p256.sig");
const PUBLIC: &str = include_str!("data/peer-p256.pub.pem");

#[test]
fn verifies_a_model_signing_signature() {
    let key = VerifyingKey::from_pem(PUBLIC).unwrap();
    let bundle = Bundle::parse(SIG).unwrap();
    assert_eq!(bundle.hint.as_deref(), Some(key.hint().unwrap().as_str()));
    let signed = verify_bundle(&bundle, &key).unwrap();
    let names: Vec<&str> = signed.manifest.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(names, ["a/b", "a-b", "a.txt"]);
}

#[test]
fn our_bundle_has_the_peers_shape() {
    // Re-serialising the peer's bundle gives the same bytes: same field order, compact, no final newline.
    let bundle = Bundle::parse(SIG).unwrap();
    assert_eq!(bundle.to_json().unwrap(), SIG);
}

#[test]
fn a_flipped_payload_byte_is_a_bad_signature() {
    let key = VerifyingKey::from_pem(PUBLIC).unwrap();
    let mut bundle = Bundle::parse(SIG).unwrap();
    if let Some(byte) = bundle.payload.get_mut(100) {
        *byte ^= 1;
    }
    assert!(matches!(
        verify_bundle(&bundle, &key),
        Err(Error::BadSignature)
    ));
}

#[test]
fn another_key_is_a_key_mismatch() {
    let other = SigningKey::generate(rampart_sign::Curve::P384).verifying_key();
    let bundle = Bundle::parse(SIG).unwrap();
    let err = verify_bundle(&bundle, &other).unwrap_err();
    assert!(err.is_rejection());
    assert!(err.to_string().starts_with("key mismatch"), "{err}");
}
