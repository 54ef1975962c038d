//! Recipients and identities: X25519 keys in age's text forms, and passphrases.

use std::io::BufReader;
use std::path::Path;
use std::str::FromStr as _;

use age::secrecy::SecretString;

use crate::error::{Error, Result};

/// The recipients a file is sealed to.
#[derive(Default)]
pub struct Recipients(Vec<Box<dyn age::Recipient + Send>>);

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recipients({})", self.0.len())
    }
}

impl Recipients {
    /// No recipients yet.
    pub fn new() -> Recipients {
        Recipients::default()
    }

    /// Adds one.
    pub fn push(&mut self, recipient: Box<dyn age::Recipient + Send>) {
        self.0.push(recipient);
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.0.iter().map(|r| r.as_ref() as &dyn age::Recipient)
    }
}

/// Parses an X25519 recipient (`age1…`).
pub fn parse_recipient(text: &str) -> Result<Box<dyn age::Recipient + Send>> {
    age::x25519::Recipient::from_str(text.trim())
        .map(|r| Box::new(r) as Box<dyn age::Recipient + Send>)
        .map_err(|_| Error::BadRecipient(text.trim().chars().take(80).collect()))
}

/// Reads a recipients file: one `age1…` a line, `#` comments and blank lines ignored.
pub fn read_recipients_file(path: &Path, into: &mut Recipients) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        into.push(parse_recipient(line)?);
    }
    Ok(())
}

/// The keys that may open a sealed file: identities, and a passphrase for passphrase-sealed files.
#[derive(Default)]
pub struct Identities {
    keys: Vec<Box<dyn age::Identity>>,
    passphrase: Option<SecretString>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identities({}, passphrase: {})",
            self.keys.len(),
            self.passphrase.is_some()
        )
    }
}

impl Identities {
    /// None yet.
    pub fn new() -> Identities {
        Identities::default()
    }

    /// Adds identities.
    pub fn extend(&mut self, keys: Vec<Box<dyn age::Identity>>) {
        self.keys.extend(keys);
    }

    /// Sets the passphrase.
    pub fn set_passphrase(&mut self, passphrase: SecretString) {
        self.passphrase = Some(passphrase);
    }

    pub(crate) fn passphrase(&self) -> Option<&SecretString> {
        self.passphrase.as_ref()
    }

    /// True when there are no identities (a passphrase aside).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.as_ref() as &dyn age::Identity)
    }
}

/// Parses identities from text (an age identity file's contents: `AGE-SECRET-KEY-1…` lines, `#` comments).
pub fn identities_from_text(text: &str, source: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let bad = |reason: String| Error::BadIdentity {
        path: source.to_owned(),
        reason,
    };
    let file = age::IdentityFile::from_buffer(BufReader::new(text.as_bytes()))
        .map_err(|e| bad(e.to_string()))?;
    let keys = file.into_identities().map_err(|e| bad(e.to_string()))?;
    if keys.is_empty() {
        return Err(bad("the file holds no `AGE-SECRET-KEY-1…` line".into()));
    }
    Ok(keys)
}

/// Reads an identity file, refusing one that others can read (mode must be 0600 or stricter).
pub fn load_identities(path: &Path) -> Result<Vec<Box<dyn age::Identity>>> {
    let meta = std::fs::metadata(path).map_err(Error::io("read", path))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::IdentityPermissions {
                path: path.to_owned(),
                mode,
            });
        }
    }
    if meta.len() > 1 << 20 {
        return Err(Error::BadIdentity {
            path: path.to_owned(),
            reason: "the file is too large".into(),
        });
    }
    let text = std::fs::read_to_string(path).map_err(Error::io("read", path))?;
    identities_from_text(&text, path)
}
