//! Every example manifest parses, and every Console/ScanEngine in it deserialises into the CRD
//! types and passes the CRD's CEL rules.

use std::path::Path;

use scan_engine_operator::crd::{Console, ScanEngine};
use serde::Deserialize;

fn documents(file: &str) -> Vec<serde_json::Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(file);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    };
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| match serde_json::Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => panic!("{file}: invalid YAML: {e}"),
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn check(file: &str) -> (usize, usize) {
    let (mut consoles, mut engines) = (0, 0);
    for doc in documents(file) {
        match doc.get("kind").and_then(|k| k.as_str()) {
            Some("Console") => {
                let c: Console = serde_json::from_value(doc.clone())
                    .unwrap_or_else(|e| panic!("{file}: Console: {e}"));
                if let Err(e) = kube::core::cel::validate_cel(&c) {
                    panic!("{file}: Console {:?} rejected by CEL: {e}", c.metadata.name);
                }
                consoles += 1;
            }
            Some("ScanEngine") => {
                let s: ScanEngine = serde_json::from_value(doc.clone())
                    .unwrap_or_else(|e| panic!("{file}: ScanEngine: {e}"));
                if let Err(e) = kube::core::cel::validate_cel(&s) {
                    panic!(
                        "{file}: ScanEngine {:?} rejected by CEL: {e}",
                        s.metadata.name
                    );
                }
                engines += 1;
            }
            _ => {}
        }
    }
    (consoles, engines)
}

#[test]
fn managed_console_example() {
    assert_eq!(check("managed-console.yaml"), (1, 2));
}

#[test]
fn external_console_example() {
    assert_eq!(check("external-console.yaml"), (1, 2));
}

#[test]
fn manual_authorization_example() {
    assert_eq!(check("manual-authorization.yaml"), (0, 1));
}

#[test]
fn kustomization_lists_existing_files() {
    for doc in documents("kustomization.yaml") {
        let resources = doc
            .get("resources")
            .and_then(|r| r.as_array())
            .cloned()
            .unwrap_or_default();
        assert!(!resources.is_empty());
        for r in resources {
            let r = r.as_str().unwrap_or_default();
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../examples")
                .join(r);
            assert!(path.exists(), "kustomization.yaml names missing {r}");
        }
    }
}
