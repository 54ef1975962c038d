//! Paths inside a hashed directory, in model_signing's order.

use std::cmp::Ordering;
use std::fmt;

use crate::Error;

/// A relative POSIX path inside the hashed directory (`a/b.bin`): never empty, never absolute, no `.` or `..`
/// component, no empty component. Ordered by component, as model_signing orders its resources:
/// `a/b` < `a-b` < `a.txt`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct ManifestPath(String);

impl ManifestPath {
    /// Validates a path as written in a manifest. Rejecting `..` and absolute paths keeps every path inside the
    /// directory it describes.
    pub fn new(path: &str) -> Result<Self, Error> {
        let invalid = |reason| Error::InvalidPath {
            path: path.to_string(),
            reason,
        };
        if path.is_empty() {
            return Err(invalid("empty path"));
        }
        if path.starts_with('/') {
            return Err(invalid("absolute path"));
        }
        if path.contains('\0') {
            return Err(invalid("NUL byte in path"));
        }
        for component in path.split('/') {
            match component {
                "" => return Err(invalid("empty path component")),
                "." => return Err(invalid("`.` component")),
                ".." => return Err(invalid("path escapes the directory")),
                _ => {}
            }
        }
        Ok(Self(path.to_string()))
    }

    /// Accepts a path as a user writes it (`./a/`, `a//b`) and normalises it.
    pub fn normalize(path: &str) -> Result<Self, Error> {
        let parts: Vec<&str> = path
            .split('/')
            .filter(|part| !part.is_empty() && *part != ".")
            .collect();
        if path.starts_with('/') {
            return Err(Error::InvalidPath {
                path: path.to_string(),
                reason: "absolute path",
            });
        }
        Self::new(&parts.join("/"))
    }

    /// The path as text, with `/` separators.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }

    /// Whether this path is `base` or lies under it (component-wise, as Python's `is_relative_to`).
    pub fn starts_with(&self, base: &ManifestPath) -> bool {
        let mut mine = self.components();
        base.components().all(|part| mine.next() == Some(part))
    }

    /// A constant known to be valid.
    pub(crate) fn trusted(path: &'static str) -> Self {
        Self(path.to_string())
    }

    /// `self/name`.
    pub(crate) fn join(&self, name: &str) -> Result<Self, Error> {
        Self::new(&format!("{}/{name}", self.0))
    }
}

impl Ord for ManifestPath {
    fn cmp(&self, other: &Self) -> Ordering {
        self.components().cmp(other.components())
    }
}

impl PartialOrd for ManifestPath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for ManifestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ManifestPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl serde::Serialize for ManifestPath {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> ManifestPath {
        ManifestPath::new(s).unwrap()
    }

    #[test]
    fn orders_by_component_like_model_signing() {
        let mut paths = [p("a.txt"), p("a-b"), p("a/b"), p("B"), p("a/b/c")];
        paths.sort();
        let names: Vec<&str> = paths.iter().map(ManifestPath::as_str).collect();
        assert_eq!(names, ["B", "a/b", "a/b/c", "a-b", "a.txt"]);
    }

    #[test]
    fn rejects_escapes() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/."] {
            assert!(ManifestPath::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn normalizes_user_paths() {
        assert_eq!(ManifestPath::normalize("./a//b/").unwrap(), p("a/b"));
        assert!(ManifestPath::normalize("a/../..").is_err());
        assert!(ManifestPath::normalize("/abs").is_err());
    }

    #[test]
    fn prefix_is_by_component() {
        assert!(p(".git/config").starts_with(&p(".git")));
        assert!(p(".git").starts_with(&p(".git")));
        assert!(!p(".gitignore2").starts_with(&p(".gitignore")));
    }
}
