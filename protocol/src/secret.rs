//! The pairing shared secret: serialised on the wire, never printed.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// A console's pairing shared secret. `Debug` and `Display` never show the value, so it cannot
/// end up in a log line, an error or a status by accident.
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SharedSecret(String);

impl SharedSecret {
    /// Wraps a secret value (surrounding whitespace, e.g. a trailing newline in a file, is dropped).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().trim().to_owned())
    }

    /// The value, for the few places that must send or store it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Compares two secrets in time independent of where they differ.
    pub fn constant_time_eq(&self, other: &SharedSecret) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }

    /// Whether the secret is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedSecret(<redacted>)")
    }
}

impl std::fmt::Display for SharedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let s = SharedSecret::new("hunter2-abcdef");
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!format!("{s}").contains("hunter2"));
        assert_eq!(s.expose(), "hunter2-abcdef");
    }

    #[test]
    fn compares_values() {
        let a = SharedSecret::new("abc\n");
        assert!(a.constant_time_eq(&SharedSecret::new("abc")));
        assert!(!a.constant_time_eq(&SharedSecret::new("abd")));
        assert!(!a.constant_time_eq(&SharedSecret::new("ab")));
    }
}
