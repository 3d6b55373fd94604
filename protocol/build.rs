//! Bakes the advertised product version into the crate. `SCAN_ENGINE_PRODUCT_VERSION` at build
//! time overrides the workspace version, so a deliberately mismatched engine can be built.
fn main() {
    println!("cargo:rerun-if-env-changed=SCAN_ENGINE_PRODUCT_VERSION");
    let version = std::env::var("SCAN_ENGINE_PRODUCT_VERSION")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| std::env::var("CARGO_PKG_VERSION").unwrap_or_default());
    println!("cargo:rustc-env=SCAN_ENGINE_BUILT_PRODUCT_VERSION={version}");
}
