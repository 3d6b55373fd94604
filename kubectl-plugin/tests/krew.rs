//! The krew manifest (`krew/scanengine.yaml`) names the binary this crate builds, the
//! workspace's version and the release archive of each platform, so that the release process
//! only has to fill in each archive's SHA-256.

use std::path::Path;

use serde_yaml::Value;

fn manifest() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("krew/scanengine.yaml");
    let text = std::fs::read_to_string(&path).expect("reading the krew manifest");
    serde_yaml::from_str(&text).expect("the krew manifest is YAML")
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is not a string: {value:?}"))
}

#[test]
fn the_krew_manifest_installs_this_binary_as_kubectl_scanengine() {
    let m = manifest();
    assert_eq!(
        text(&m, "apiVersion"),
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(text(&m, "kind"), "Plugin");
    // krew installs plugin `scanengine` as `kubectl-scanengine`, which kubectl runs for
    // `kubectl scanengine`.
    assert_eq!(text(&m["metadata"], "name"), "scanengine");
    let binary = Path::new(env!("CARGO_BIN_EXE_kubectl-scanengine"))
        .file_name()
        .and_then(|n| n.to_str())
        .expect("the binary's file name");
    let spec = &m["spec"];
    for key in ["shortDescription", "description", "homepage", "caveats"] {
        assert!(!text(spec, key).trim().is_empty(), "spec.{key} is empty");
    }
    let platforms = spec["platforms"].as_sequence().expect("spec.platforms");
    assert!(!platforms.is_empty());
    for platform in platforms {
        assert_eq!(text(platform, "bin"), binary, "{platform:?}");
    }
}

#[test]
fn the_krew_manifest_points_at_this_versions_release_archives() {
    let m = manifest();
    let version = format!("v{}", env!("CARGO_PKG_VERSION"));
    let spec = &m["spec"];
    assert_eq!(text(spec, "version"), version, "spec.version");
    let releases = format!(
        "{}/releases/download/{version}/",
        env!("CARGO_PKG_REPOSITORY")
    );
    let mut seen = Vec::new();
    for platform in spec["platforms"].as_sequence().unwrap() {
        let labels = &platform["selector"]["matchLabels"];
        let (os, arch) = (text(labels, "os"), text(labels, "arch"));
        let archive = format!("kubectl-scanengine-{version}-{os}-{arch}.tar.gz");
        assert_eq!(
            text(platform, "uri"),
            format!("{releases}{archive}"),
            "the {os}/{arch} archive"
        );
        // Either the release process has filled it in, or it is the placeholder it replaces.
        let sha = text(platform, "sha256");
        let filled = sha.len() == 64 && sha.bytes().all(|b| b.is_ascii_hexdigit());
        assert!(
            filled || sha == format!("SHA256_OF_{archive}"),
            "the {os}/{arch} sha256 is neither a SHA-256 nor the placeholder SHA256_OF_{archive}: {sha}"
        );
        seen.push(format!("{os}/{arch}"));
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), spec["platforms"].as_sequence().unwrap().len());
}
