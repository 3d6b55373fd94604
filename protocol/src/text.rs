//! Bounds on the strings a peer names itself with, and a safe way to show any other string a
//! peer sent.
//!
//! A peer's `Hello` carries a name and a product version that the console stores, shows in its
//! API and web pages and writes to its logs, and that the operator copies into a ScanEngine's
//! status. Both are therefore bounded in length and limited to characters that need no escaping
//! in JSON, HTML, XML or a log line; a message that breaks the bounds is refused by the codec
//! (see [`crate::Message::check`]), so it is never stored, shown or answered.
//!
//! Anything else a peer sends that ends up in a log line goes through [`printable`], which cuts
//! it and escapes what is not plain ASCII. No crate does exactly this (cut at a character
//! boundary, escape controls and non-ASCII, say how much was cut), and it is a dozen lines.

/// Longest engine or console name, in bytes: a Kubernetes object name (253) and namespace (63)
/// joined by a dot, which is what the operator names its engines, fits.
pub const MAX_NAME_LEN: usize = 320;

/// Longest product version, in bytes (`1.2.3-rc.1+build.5` is 18).
pub const MAX_VERSION_LEN: usize = 64;

/// Longest free-text reason in a `Rejected` answer, in bytes.
pub const MAX_REASON_LEN: usize = 1024;

/// What is wrong with a name or version (never the value itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    #[error("is empty")]
    Empty,
    #[error("is longer than {0} bytes")]
    TooLong(usize),
    #[error("holds a character outside the allowed set")]
    Character,
    #[error("starts or ends with a space")]
    Padded,
}

/// Checks an engine or console name: 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits,
/// spaces (not at either end) and `. - _ : @ + / ( )`.
pub fn check_name(name: &str) -> Result<(), Invalid> {
    check(name, MAX_NAME_LEN, |c| {
        c.is_ascii_alphanumeric() || " .-_:@+/()".contains(c)
    })?;
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err(Invalid::Padded);
    }
    Ok(())
}

/// Checks a product version: 1 to [`MAX_VERSION_LEN`] bytes of ASCII letters, digits and
/// `. - _ +` (semantic versions with pre-release and build parts).
pub fn check_version(version: &str) -> Result<(), Invalid> {
    check(version, MAX_VERSION_LEN, |c| {
        c.is_ascii_alphanumeric() || ".-_+".contains(c)
    })
}

fn check(s: &str, max: usize, allowed: impl Fn(char) -> bool) -> Result<(), Invalid> {
    if s.is_empty() {
        return Err(Invalid::Empty);
    }
    if s.len() > max {
        return Err(Invalid::TooLong(max));
    }
    if !s.chars().all(allowed) {
        return Err(Invalid::Character);
    }
    Ok(())
}

/// `s` cut to at most `max` characters, with controls, quotes, backslashes and non-ASCII
/// escaped (`\n`, `\"`, `\u{…}`), and a note of how many bytes were left out. For logging or
/// showing a string a peer chose.
pub fn printable(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(max.min(s.len()) + 24);
    let mut used = 0;
    for c in s.chars().take(max) {
        if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
            out.push(c);
        } else {
            out.extend(c.escape_default());
        }
        used += c.len_utf8();
    }
    if used < s.len() {
        out.push_str(&format!("...({} more bytes)", s.len() - used));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn names_real_engines_use_are_valid() {
        for name in [
            "e1",
            "edge.scanning",
            "standard-a",
            "security-console",
            "Lab engine (rack 2)",
            "engine_01@site:b",
            &"a".repeat(MAX_NAME_LEN),
        ] {
            assert_eq!(check_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        assert_eq!(check_name(""), Err(Invalid::Empty));
        assert_eq!(
            check_name(&"a".repeat(MAX_NAME_LEN + 1)),
            Err(Invalid::TooLong(MAX_NAME_LEN))
        );
        for name in ["<script>", "a\nb", "a\"b", "ä", "a\u{202e}b", "x&y", "a\0"] {
            assert_eq!(check_name(name), Err(Invalid::Character), "{name:?}");
        }
        assert_eq!(check_name(" e1"), Err(Invalid::Padded));
        assert_eq!(check_name("e1 "), Err(Invalid::Padded));
    }

    #[test]
    fn versions() {
        for v in ["0.1.0", "9.9.9", "1.2.3-rc.1+build.5", "2026_01"] {
            assert_eq!(check_version(v), Ok(()), "{v}");
        }
        assert_eq!(check_version(""), Err(Invalid::Empty));
        assert_eq!(check_version("1.0 beta"), Err(Invalid::Character));
        assert_eq!(
            check_version(&"9".repeat(20 * 1024)),
            Err(Invalid::TooLong(MAX_VERSION_LEN))
        );
    }

    #[test]
    fn printable_cuts_and_escapes() {
        assert_eq!(printable("plain text", 64), "plain text");
        assert_eq!(printable("a\nb\"c", 64), "a\\nb\\\"c");
        assert_eq!(printable("é", 64), "\\u{e9}");
        let long = "x".repeat(900 * 1024);
        let shown = printable(&long, 100);
        assert!(shown.starts_with(&"x".repeat(100)));
        assert!(shown.ends_with(&format!("...({} more bytes)", 900 * 1024 - 100)));
        assert!(shown.len() < 200);
    }

    proptest! {
        /// Whatever a peer sends, the shown form is short and one line of plain ASCII.
        #[test]
        fn printable_is_bounded_ascii(s in ".{0,300}", max in 0usize..80) {
            let shown = printable(&s, max);
            // At most 10 bytes per escaped character, plus the note.
            prop_assert!(shown.len() <= max * 10 + 40);
            prop_assert!(!shown.contains('\n'));
            prop_assert!(shown.is_ascii());
        }
    }
}
