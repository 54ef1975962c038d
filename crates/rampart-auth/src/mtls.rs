//! mTLS client certificates: the SPIFFE ID in the certificate's URI SAN becomes the principal.
//!
//! The TLS layer has already verified the chain against the configured client CA; this module reads the verified leaf
//! certificate (DER) and applies the X.509-SVID rules: exactly one URI SAN, and it is a valid SPIFFE ID
//! (`spiffe://trust-domain/path`: lowercase trust domain of `[a-z0-9._-]`, path segments of `[A-Za-z0-9._-]`, no empty,
//! `.` or `..` segment, no trailing slash, no port, user, query or fragment, at most 2048 bytes). A certificate with
//! `CA:true` is refused as a client identity. The principal carries no roles of its own: give SPIFFE principals roles
//! as parents in the Cedar entities file (see [`crate::Authorizer`]).

use std::fmt;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

use crate::principal::{Principal, Source};

const MAX_SPIFFE_ID_BYTES: usize = 2048;
const MAX_TRUST_DOMAIN_BYTES: usize = 255;
/// Largest client certificate accepted.
pub const MAX_CERT_BYTES: usize = 64 * 1024;

/// Why a client certificate gave no principal. The gateway answers 401 without the detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MtlsError {
    /// Not one DER certificate.
    #[error("client certificate is not valid DER X.509")]
    Malformed,
    /// No URI SAN at all.
    #[error("client certificate has no URI SAN (SPIFFE ID)")]
    NoSpiffeId,
    /// Several URI SANs: an SVID has exactly one.
    #[error("client certificate has {0} URI SANs; an X.509-SVID has exactly one")]
    SeveralUris(usize),
    /// The URI SAN is not a valid SPIFFE ID.
    #[error("invalid SPIFFE ID: {0}")]
    Invalid(String),
    /// A CA certificate presented as a client identity.
    #[error("client certificate is a CA certificate")]
    CaCertificate,
    /// The trust domain is not in the allowed list.
    #[error("trust domain `{0}` is not allowed")]
    TrustDomain(String),
}

/// A validated SPIFFE ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    path: String,
}

impl SpiffeId {
    /// Parse and validate a SPIFFE ID.
    pub fn parse(uri: &str) -> Result<Self, MtlsError> {
        let invalid = |reason: &str| MtlsError::Invalid(reason.to_string());
        if uri.len() > MAX_SPIFFE_ID_BYTES {
            return Err(invalid("longer than 2048 bytes"));
        }
        let rest = uri
            .strip_prefix("spiffe://")
            .ok_or_else(|| invalid("the scheme is not `spiffe://`"))?;
        let (trust_domain, path) = match rest.find('/') {
            Some(at) => rest.split_at(at),
            None => (rest, ""),
        };
        if trust_domain.is_empty() {
            return Err(invalid("the trust domain is empty"));
        }
        if trust_domain.len() > MAX_TRUST_DOMAIN_BYTES {
            return Err(invalid("the trust domain is longer than 255 bytes"));
        }
        if !trust_domain
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        {
            return Err(invalid(
                "the trust domain may hold only lowercase letters, digits, `.`, `-` and `_` (no port or user)",
            ));
        }
        if !path.is_empty() {
            for segment in path.split('/').skip(1) {
                if segment.is_empty() {
                    return Err(invalid("the path has an empty segment or a trailing `/`"));
                }
                if segment == "." || segment == ".." {
                    return Err(invalid("the path has a `.` or `..` segment"));
                }
                if !segment
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                {
                    return Err(invalid(
                        "path segments may hold only letters, digits, `.`, `-` and `_` (no query or fragment)",
                    ));
                }
            }
        }
        Ok(Self {
            trust_domain: trust_domain.to_string(),
            path: path.to_string(),
        })
    }

    /// The trust domain (`example.org`).
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// The path (`/ns/prod/sa/web`), empty for a trust domain's own ID.
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}{}", self.trust_domain, self.path)
    }
}

/// The SPIFFE ID of a DER client certificate.
pub fn spiffe_id_from_der(der: &[u8]) -> Result<SpiffeId, MtlsError> {
    if der.len() > MAX_CERT_BYTES {
        return Err(MtlsError::Malformed);
    }
    let (rest, cert) = X509Certificate::from_der(der).map_err(|_| MtlsError::Malformed)?;
    if !rest.is_empty() {
        return Err(MtlsError::Malformed);
    }
    if cert
        .basic_constraints()
        .map_err(|_| MtlsError::Malformed)?
        .is_some_and(|bc| bc.value.ca)
    {
        return Err(MtlsError::CaCertificate);
    }
    let san = cert
        .subject_alternative_name()
        .map_err(|_| MtlsError::Malformed)?
        .ok_or(MtlsError::NoSpiffeId)?;
    let uris: Vec<&str> = san
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect();
    match uris.as_slice() {
        [] => Err(MtlsError::NoSpiffeId),
        [uri] => SpiffeId::parse(uri),
        more => Err(MtlsError::SeveralUris(more.len())),
    }
}

/// The principal of a DER client certificate: its SPIFFE ID, if its trust domain is in `trust_domains` (an empty list
/// accepts any trust domain the client CA vouches for).
pub fn principal_from_client_cert(
    der: &[u8],
    trust_domains: &[String],
) -> Result<Principal, MtlsError> {
    let id = spiffe_id_from_der(der)?;
    if !trust_domains.is_empty() && !trust_domains.iter().any(|d| d == id.trust_domain()) {
        return Err(MtlsError::TrustDomain(id.trust_domain().to_string()));
    }
    Ok(Principal::new(id.to_string(), Vec::new(), Source::Mtls))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, IsCa, KeyPair, SanType};

    fn cert(sans: Vec<SanType>, ca: bool) -> Vec<u8> {
        let mut params = CertificateParams::default();
        params.subject_alt_names = sans;
        if ca {
            params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    fn uri(s: &str) -> SanType {
        SanType::URI(s.try_into().unwrap())
    }

    #[test]
    fn spiffe_id_from_rcgen_certificates() {
        let der = cert(
            vec![
                SanType::DnsName("web".try_into().unwrap()),
                uri("spiffe://example.org/ns/prod/sa/web"),
            ],
            false,
        );
        let p = principal_from_client_cert(&der, &[]).unwrap();
        assert_eq!(p.id, "spiffe://example.org/ns/prod/sa/web");
        assert_eq!(p.source, Source::Mtls);
        assert!(p.roles.is_empty());
        assert!(principal_from_client_cert(&der, &["example.org".to_string()]).is_ok());
        assert_eq!(
            principal_from_client_cert(&der, &["other.org".to_string()]),
            Err(MtlsError::TrustDomain("example.org".to_string()))
        );
    }

    #[test]
    fn certificates_that_are_not_svids_are_refused() {
        let none = cert(vec![SanType::DnsName("web".try_into().unwrap())], false);
        assert_eq!(spiffe_id_from_der(&none), Err(MtlsError::NoSpiffeId));
        let two = cert(
            vec![uri("spiffe://a.org/x"), uri("spiffe://b.org/y")],
            false,
        );
        assert_eq!(spiffe_id_from_der(&two), Err(MtlsError::SeveralUris(2)));
        let https = cert(vec![uri("https://example.org/x")], false);
        assert!(matches!(
            spiffe_id_from_der(&https),
            Err(MtlsError::Invalid(_))
        ));
        let ca = cert(vec![uri("spiffe://example.org/x")], true);
        assert_eq!(spiffe_id_from_der(&ca), Err(MtlsError::CaCertificate));
        let good = cert(vec![uri("spiffe://example.org/x")], false);
        assert_eq!(
            spiffe_id_from_der(&good[..good.len() - 1]),
            Err(MtlsError::Malformed)
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(spiffe_id_from_der(&trailing), Err(MtlsError::Malformed));
        assert_eq!(spiffe_id_from_der(b""), Err(MtlsError::Malformed));
    }

    #[test]
    fn spiffe_id_rules() {
        for good in [
            "spiffe://example.org",
            "spiffe://example.org/a",
            "spiffe://ex_ample-1.org/ns/Prod/sa/web.v2",
        ] {
            assert_eq!(SpiffeId::parse(good).unwrap().to_string(), good);
        }
        for bad in [
            "",
            "spiffe://",
            "spiffe:///path",
            "SPIFFE://example.org/a",
            "spiffe://Example.org/a",
            "spiffe://example.org:8443/a",
            "spiffe://user@example.org/a",
            "spiffe://example.org/",
            "spiffe://example.org/a/",
            "spiffe://example.org//a",
            "spiffe://example.org/./a",
            "spiffe://example.org/a/..",
            "spiffe://example.org/a?b",
            "spiffe://example.org/a#b",
            "spiffe://example.org/a%20b",
            "spiffe://exämple.org/a",
        ] {
            assert!(SpiffeId::parse(bad).is_err(), "{bad}");
        }
        let long = format!("spiffe://example.org/{}", "a".repeat(2048));
        assert!(SpiffeId::parse(&long).is_err());
    }
}
