//! The product version console and engine advertise to each other.

/// Environment variable that overrides the built-in product version. **Test only**: it exists so
/// that tests can run a "mismatched" engine without a second build. Production manifests never
/// set it, and a binary that honours it logs a warning.
pub const TEST_ONLY_VERSION_ENV: &str = "SCAN_ENGINE_TEST_ONLY_PRODUCT_VERSION";

/// The version baked in at build time (`SCAN_ENGINE_PRODUCT_VERSION`, default: the workspace
/// version).
pub const BUILT_PRODUCT_VERSION: &str = env!("SCAN_ENGINE_BUILT_PRODUCT_VERSION");

/// The version this process advertises, and whether it came from the test-only override.
pub fn product_version() -> (String, bool) {
    match std::env::var(TEST_ONLY_VERSION_ENV) {
        Ok(v) if !v.trim().is_empty() => (v.trim().to_owned(), true),
        _ => (BUILT_PRODUCT_VERSION.to_owned(), false),
    }
}

/// Console and engine must run the same product version to talk.
pub fn compatible(console: &str, engine: &str) -> bool {
    console == engine
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_must_match_exactly() {
        assert!(compatible("0.1.0", "0.1.0"));
        assert!(!compatible("0.1.0", "0.1.1"));
        assert!(!compatible("0.1.0", ""));
    }

    #[test]
    fn built_version_is_not_empty() {
        assert!(!BUILT_PRODUCT_VERSION.is_empty());
    }
}
