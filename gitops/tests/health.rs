//! The shipped health checks agree with the operator's conditions: Argo CD's scripts pass their
//! own `health_test.yaml`, and Flux's expressions give the same verdict as Argo CD's script on
//! every one of those objects.

use std::path::{Path, PathBuf};

use gitops_health::{ArgoTests, FluxStatus, argocd_health, flux_exprs, flux_health, read_yaml};
use serde_json::Value;

fn gitops() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

/// Every directory of Argo CD's layout that holds a health script.
fn script_dirs() -> Vec<PathBuf> {
    let root = gitops().join("argocd/resource_customizations");
    let mut dirs = Vec::new();
    for group in std::fs::read_dir(&root).expect("resource_customizations") {
        let group = group.expect("entry").path();
        for kind in std::fs::read_dir(&group).expect("group") {
            let kind = kind.expect("entry").path();
            if kind.join("health.lua").is_file() {
                dirs.push(kind);
            }
        }
    }
    dirs.sort();
    dirs
}

#[test]
fn argocd_scripts_pass_their_health_tests() {
    let dirs = script_dirs();
    assert!(!dirs.is_empty(), "no health.lua found");
    for dir in dirs {
        let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
        let tests: ArgoTests = read_yaml(&dir.join("health_test.yaml")).expect("health_test.yaml");
        assert!(tests.tests.len() >= 5, "{}: too few cases", dir.display());
        for case in tests.tests {
            let object: Value = read_yaml(&dir.join(&case.input_path)).expect("testdata");
            let health = argocd_health(&script, &object)
                .unwrap_or_else(|e| panic!("{}: {e}", case.input_path.display()));
            assert_eq!(health, case.health_status, "{}", case.input_path.display());
        }
    }
}

/// Argo CD's verdict in Flux's words.
fn as_flux(argo: &str) -> FluxStatus {
    match argo {
        "Healthy" => FluxStatus::Current,
        "Degraded" => FluxStatus::Failed,
        _ => FluxStatus::InProgress,
    }
}

#[test]
fn flux_expressions_agree_with_the_argocd_script() {
    let kustomization: Value =
        read_yaml(&gitops().join("flux/health-check-exprs.yaml")).expect("flux file");
    let checks = flux_exprs(&kustomization);
    let kinds: Vec<&str> = checks.iter().map(|c| c.kind.as_str()).collect();
    assert_eq!(kinds, ["ScanEngine", "Console"]);
    let mut seen = std::collections::BTreeSet::new();
    for dir in script_dirs() {
        let script = std::fs::read_to_string(dir.join("health.lua")).expect("health.lua");
        let tests: ArgoTests = read_yaml(&dir.join("health_test.yaml")).expect("health_test.yaml");
        for case in tests.tests {
            let object: Value = read_yaml(&dir.join(&case.input_path)).expect("testdata");
            if object.get("status").is_none() {
                // Flux waits on an object without status until its timeout: in progress.
                continue;
            }
            if object.pointer("/metadata/deletionTimestamp").is_some() {
                // Flux does not health-check objects it is deleting.
                continue;
            }
            let kind = object["kind"].as_str().unwrap_or_default();
            let check = checks
                .iter()
                .find(|c| c.kind == kind)
                .unwrap_or_else(|| panic!("no healthCheckExprs for {kind}"));
            let argo = argocd_health(&script, &object).expect("argo");
            let flux = flux_health(check, &object)
                .unwrap_or_else(|e| panic!("{}: {e}", case.input_path.display()));
            assert_eq!(flux, as_flux(&argo.status), "{}", case.input_path.display());
            seen.insert(format!("{flux:?}"));
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["Current", "Failed", "InProgress"],
        "the cases cover every verdict"
    );
}
