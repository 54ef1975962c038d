//! The in-toto Statement v1 with model_signing's v1.0 predicate: writing it, and reading it back into a manifest.

use std::collections::BTreeSet;

use rampart_digest::{Digest, HashAlgorithm, Manifest, ManifestPath};
use serde::{Deserialize, Serialize};

use crate::Error;

/// The in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// model_signing's v1.0 predicate.
pub const PREDICATE_V1: &str = "https://model_signing/signature/v1.0";
/// The pre-1.0 predicate, still accepted by model_signing (files and SHA-256 only, no ignore rules).
pub const PREDICATE_V01: &str = "https://model_signing/Digests/v0.1";

/// How the directory was turned into a manifest: what a verifier must repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serialization {
    /// The hash of each file.
    pub hash: HashAlgorithm,
    /// Whether symlinks were followed.
    pub allow_symlinks: bool,
    /// Paths skipped, relative to the directory.
    pub ignore_paths: Vec<ManifestPath>,
}

/// The content of a signature: the model's name, how it was hashed, and every file's digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedManifest {
    /// The directory's base name when signed (informational only).
    pub model_name: String,
    /// How to hash the directory again.
    pub serialization: Serialization,
    /// Every file and its digest.
    pub manifest: Manifest,
}

// Field order below is the order model_signing writes (protobuf's JSON: statement fields in declaration order,
// `Struct` keys sorted).
#[derive(Serialize)]
struct StatementOut<'a> {
    #[serde(rename = "_type")]
    type_: &'a str,
    subject: [SubjectOut<'a>; 1],
    #[serde(rename = "predicateType")]
    predicate_type: &'a str,
    predicate: PredicateOut<'a>,
}

#[derive(Serialize)]
struct SubjectOut<'a> {
    name: &'a str,
    digest: DigestOut,
}

#[derive(Serialize)]
struct DigestOut {
    sha256: String,
}

#[derive(Serialize)]
struct PredicateOut<'a> {
    serialization: SerializationOut<'a>,
    resources: Vec<ResourceOut<'a>>,
}

#[derive(Serialize)]
struct SerializationOut<'a> {
    allow_symlinks: bool,
    hash_type: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignore_paths: Vec<&'a str>,
    method: &'a str,
}

#[derive(Serialize)]
struct ResourceOut<'a> {
    algorithm: &'a str,
    digest: String,
    name: &'a str,
}

/// The payload bytes of a signature over `signed`: JSON indented by two spaces, as model_signing writes it.
pub fn write_statement(signed: &SignedManifest) -> Result<Vec<u8>, Error> {
    let algorithm = signed.manifest.algorithm().name();
    let statement = StatementOut {
        type_: STATEMENT_TYPE,
        subject: [SubjectOut {
            name: &signed.model_name,
            digest: DigestOut {
                sha256: signed.manifest.root_digest().to_hex(),
            },
        }],
        predicate_type: PREDICATE_V1,
        predicate: PredicateOut {
            serialization: SerializationOut {
                allow_symlinks: signed.serialization.allow_symlinks,
                hash_type: algorithm,
                ignore_paths: signed
                    .serialization
                    .ignore_paths
                    .iter()
                    .map(ManifestPath::as_str)
                    .collect(),
                method: "files",
            },
            resources: signed
                .manifest
                .iter()
                .map(|(path, digest)| ResourceOut {
                    algorithm,
                    digest: digest.to_hex(),
                    name: path.as_str(),
                })
                .collect(),
        },
    };
    serde_json::to_vec_pretty(&statement)
        .map_err(|e| Error::Malformed(format!("cannot encode: {e}")))
}

// Reading: unknown fields are ignored (the predicate may grow), duplicate fields are errors (serde's derive).
#[derive(Deserialize)]
struct StatementIn {
    #[serde(rename = "_type")]
    type_: String,
    subject: Vec<SubjectIn>,
    #[serde(rename = "predicateType")]
    predicate_type: String,
    #[serde(default)]
    predicate: Option<PredicateIn>,
}

#[derive(Deserialize)]
struct SubjectIn {
    #[serde(default)]
    name: String,
    digest: SubjectDigestIn,
}

#[derive(Deserialize)]
struct SubjectDigestIn {
    sha256: String,
}

#[derive(Deserialize)]
struct PredicateIn {
    serialization: SerializationIn,
    resources: Vec<ResourceIn>,
}

#[derive(Deserialize)]
struct SerializationIn {
    method: String,
    hash_type: String,
    allow_symlinks: bool,
    #[serde(default)]
    ignore_paths: Vec<String>,
}

#[derive(Deserialize)]
struct ResourceIn {
    name: String,
    algorithm: String,
    digest: String,
}

/// Reads a (verified) payload back into a manifest, checking it is consistent: every path stays inside the
/// directory, no path is listed twice, and the subject's root digest matches the resources.
pub fn read_statement(payload: &[u8]) -> Result<SignedManifest, Error> {
    let statement: StatementIn = serde_json::from_slice(payload)
        .map_err(|e| Error::Malformed(format!("the payload is not an in-toto statement: {e}")))?;
    if statement.type_ != STATEMENT_TYPE {
        return Err(Error::Malformed(format!(
            "statement type `{}`, expected `{STATEMENT_TYPE}`",
            statement.type_
        )));
    }
    match statement.predicate_type.as_str() {
        PREDICATE_V1 => read_v1(statement),
        PREDICATE_V01 => read_v01(statement),
        other => Err(Error::Unsupported(format!(
            "predicate type `{other}`, expected `{PREDICATE_V1}`"
        ))),
    }
}

fn read_v1(statement: StatementIn) -> Result<SignedManifest, Error> {
    let [subject] = <[SubjectIn; 1]>::try_from(statement.subject)
        .map_err(|s| Error::Malformed(format!("expected one subject, found {}", s.len())))?;
    let predicate = statement
        .predicate
        .ok_or_else(|| Error::Malformed("the statement has no predicate".into()))?;
    let serialization = predicate.serialization;
    if serialization.method != "files" {
        return Err(Error::Unsupported(format!(
            "serialization method `{}` (only `files` is supported)",
            serialization.method
        )));
    }
    let hash = HashAlgorithm::from_name(&serialization.hash_type)
        .map_err(|e| Error::Unsupported(e.to_string()))?;
    let mut ignore_paths = BTreeSet::new();
    for path in &serialization.ignore_paths {
        ignore_paths.insert(ManifestPath::normalize(path)?);
    }
    let mut manifest = Manifest::new(hash);
    let mut root = Vec::with_capacity(predicate.resources.len() * 32);
    for resource in &predicate.resources {
        if resource.algorithm != hash.name() {
            return Err(Error::Unsupported(format!(
                "resource `{}` hashed with `{}` in a `{}` manifest",
                resource.name, resource.algorithm, hash
            )));
        }
        let path = ManifestPath::new(&resource.name)?;
        let digest = parse_digest(&resource.name, &resource.digest)?;
        root.extend_from_slice(&digest.0);
        if manifest.insert(path, digest).is_some() {
            return Err(Error::Malformed(format!(
                "`{}` is listed twice",
                resource.name
            )));
        }
    }
    let expected = subject.digest.sha256.to_ascii_lowercase();
    let actual = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(&root))
    };
    if expected != actual {
        return Err(Error::Inconsistent(format!(
            "the root digest is `{expected}` but the resources hash to `{actual}`"
        )));
    }
    Ok(SignedManifest {
        model_name: subject.name,
        serialization: Serialization {
            hash,
            allow_symlinks: serialization.allow_symlinks,
            ignore_paths: ignore_paths.into_iter().collect(),
        },
        manifest,
    })
}

/// The v0.1 predicate lists the files as subjects; model_signing reads it as files + SHA-256, no symlinks.
fn read_v01(statement: StatementIn) -> Result<SignedManifest, Error> {
    let mut manifest = Manifest::new(HashAlgorithm::Sha256);
    for subject in &statement.subject {
        let path = ManifestPath::new(&subject.name)?;
        let digest = parse_digest(&subject.name, &subject.digest.sha256)?;
        if manifest.insert(path, digest).is_some() {
            return Err(Error::Malformed(format!(
                "`{}` is listed twice",
                subject.name
            )));
        }
    }
    Ok(SignedManifest {
        model_name: String::new(),
        serialization: Serialization {
            hash: HashAlgorithm::Sha256,
            allow_symlinks: false,
            ignore_paths: Vec::new(),
        },
        manifest,
    })
}

fn parse_digest(name: &str, hex: &str) -> Result<Digest, Error> {
    Digest::from_hex(hex)
        .ok_or_else(|| Error::Malformed(format!("the digest of `{name}` is not 64 hex digits")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The payload model_signing 1.1.1 wrote for {a/b: "x\n", a-b: "y\n", a.txt: "hi\n"}.
    const PEER_PAYLOAD: &str = include_str!("../tests/data/peer-payload.json");

    #[test]
    fn reads_and_rewrites_the_peer_payload_byte_for_byte() {
        let signed = read_statement(PEER_PAYLOAD.as_bytes()).unwrap();
        assert_eq!(signed.model_name, "m");
        assert_eq!(signed.manifest.len(), 3);
        assert_eq!(signed.serialization.ignore_paths.len(), 4);
        let written = String::from_utf8(write_statement(&signed).unwrap()).unwrap();
        // Only the order of `ignore_paths` differs (model_signing writes a set in arbitrary order).
        let strip = |s: &str| {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("\".git"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert_eq!(strip(&written), strip(PEER_PAYLOAD));
    }

    #[test]
    fn escaping_or_duplicate_paths_are_refused() {
        let doctor = |from: &str, to: &str| PEER_PAYLOAD.replace(from, to);
        assert!(read_statement(doctor("\"a/b\"", "\"../b\"").as_bytes()).is_err());
        assert!(read_statement(doctor("\"a/b\"", "\"/etc/b\"").as_bytes()).is_err());
        assert!(read_statement(doctor("\"a-b\"", "\"a.txt\"").as_bytes()).is_err());
        let err = read_statement(doctor("ba418469", "00000000").as_bytes()).unwrap_err();
        assert!(matches!(err, Error::Inconsistent(_)), "{err}");
        assert!(read_statement(doctor("\"files\"", "\"shards\"").as_bytes()).is_err());
    }
}
