//! The CRDs in `crds/` must be exactly what the types generate.

use std::path::Path;

#[test]
fn crds_directory_is_fresh() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut stale = Vec::new();
    for (file, crd) in scan_engine_operator::crd::all() {
        let rendered = match scan_engine_operator::crd::render_yaml(&crd) {
            Ok(y) => y,
            Err(e) => panic!("cannot render {file}: {e}"),
        };
        let on_disk = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if on_disk != rendered {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "crds/ is stale ({}): regenerate with `cargo xtask crds` and commit the result",
        stale.join(", ")
    );
}

#[test]
fn crd_reference_is_fresh() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/crd-reference.md");
    let crds: Vec<_> = scan_engine_operator::crd::all()
        .into_iter()
        .map(|(_, crd)| crd)
        .collect();
    let rendered = scan_engine_operator::crd::reference::render_markdown(&crds);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        on_disk == rendered,
        "docs/crd-reference.md is stale: regenerate with `cargo xtask crds` and commit the result"
    );
}

#[test]
fn crds_have_the_documented_shape() {
    use kube::CustomResourceExt;
    use scan_engine_operator::crd::{Console, ScanEngine};

    let se = ScanEngine::crd();
    assert_eq!(se.spec.group, "scanengine.dev");
    assert_eq!(
        se.spec.names.short_names.as_deref(),
        Some(&["se".to_string()][..])
    );
    assert_eq!(
        se.spec.names.categories.as_deref(),
        Some(&["scanning".to_string()][..])
    );
    let version = &se.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        [
            "Console",
            "Direction",
            "Status",
            "Version",
            "Ready",
            "Reason",
            "Message",
            "Age"
        ]
    );

    let con = Console::crd();
    assert_eq!(
        con.spec.names.short_names.as_deref(),
        Some(&["con".to_string()][..])
    );
    assert_eq!(
        con.spec.names.categories.as_deref(),
        Some(&["scanning".to_string()][..])
    );
}
