//! Who is calling: the result of every authentication method.

use std::fmt;

use serde::{Deserialize, Serialize};

/// An authenticated caller.
///
/// `id` is the principal's stable name: the principal an API key was issued to, a JWT's `sub` claim, or an mTLS client
/// certificate's SPIFFE ID. `roles` feed authorization (each becomes a `Rampart::Role` parent of the principal in Cedar).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Principal {
    /// The principal's name (never a secret).
    pub id: String,
    /// Roles, sorted and without duplicates.
    pub roles: Vec<String>,
    /// How the principal proved who it is.
    pub source: Source,
}

impl Principal {
    /// A principal with its roles sorted and deduplicated.
    pub fn new(
        id: impl Into<String>,
        roles: impl IntoIterator<Item = String>,
        source: Source,
    ) -> Self {
        let mut roles: Vec<String> = roles.into_iter().collect();
        roles.sort_unstable();
        roles.dedup();
        Self {
            id: id.into(),
            roles,
            source,
        }
    }

    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles
            .binary_search_by(|r| r.as_str().cmp(role))
            .is_ok()
    }
}

/// The authentication method that produced a [`Principal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An API key (`rmp_<id>_<secret>`).
    ApiKey,
    /// A JWT bearer token.
    Jwt,
    /// An mTLS client certificate's SPIFFE ID.
    Mtls,
}

impl Source {
    /// The name used in Cedar contexts, logs and audit records: `api_key`, `jwt` or `mtls`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::ApiKey => "api_key",
            Source::Jwt => "jwt",
            Source::Mtls => "mtls",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` is acceptable as a principal id or role name: 1 to 256 printable ASCII characters, no whitespace,
/// no quote or backslash (so it can be shown and embedded anywhere without escaping surprises).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_sorted_and_deduplicated() {
        let p = Principal::new(
            "alice",
            ["user".to_string(), "admin".to_string(), "user".to_string()],
            Source::ApiKey,
        );
        assert_eq!(p.roles, ["admin", "user"]);
        assert!(p.has_role("user"));
        assert!(!p.has_role("export"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("spiffe://example.org/ns/a"));
        assert!(valid_name("alice@example.org"));
        assert!(!valid_name(""));
        assert!(!valid_name("a b"));
        assert!(!valid_name("a\"b"));
        assert!(!valid_name("é"));
        assert!(!valid_name(&"a".repeat(257)));
    }
}
