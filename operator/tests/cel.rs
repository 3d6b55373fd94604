//! Every CEL rule of the CRDs, exercised by accepted and rejected objects from
//! `tests/cel_cases.json` and evaluated client-side (kube's `cel` feature, which has the
//! Kubernetes quantity, IP/CIDR and URL libraries). The same table can be submitted to a real
//! apiserver by the control-plane tests.
//!
//! `cases` are objects named by the test; `nameCases` also carry the object's `metadata.name`
//! (`objectName`), for the rules on the names the operator derives child names from.

use std::collections::BTreeSet;
use std::path::Path;

use kube::CustomResourceExt;
use scan_engine_operator::crd::{Console, ScanEngine};
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Case {
    name: String,
    kind: String,
    spec: Value,
    old_spec: Option<Value>,
    accepted: bool,
    message: Option<String>,
    /// `metadata.name` of the object; `x` when unset.
    object_name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Table {
    cases: Vec<Case>,
    #[serde(default)]
    name_cases: Vec<Case>,
}

/// Every case, the `nameCases` (which must name their object) after the `cases`.
fn table() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cel_cases.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let table =
        serde_json::from_str::<Table>(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    for case in &table.name_cases {
        assert!(
            case.object_name.is_some(),
            "name case {} has no objectName",
            case.name
        );
    }
    for case in &table.cases {
        assert!(
            case.object_name.is_none(),
            "case {} names its object: move it to nameCases (the apiserver test names the objects of `cases` itself)",
            case.name
        );
    }
    table.cases.into_iter().chain(table.name_cases).collect()
}

fn schema(kind: &str) -> Value {
    let crd = match kind {
        "Console" => Console::crd(),
        "ScanEngine" => ScanEngine::crd(),
        other => panic!("unknown kind {other}"),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .cloned();
    serde_json::to_value(schema).unwrap_or_default()
}

fn object(kind: &str, name: Option<&str>, spec: &Value) -> Value {
    json!({
        "apiVersion": "scanengine.dev/v1alpha1",
        "kind": kind,
        "metadata": {"name": name.unwrap_or("x"), "namespace": "ns"},
        "spec": spec,
    })
}

/// Every rule text in a schema.
fn rules(v: &Value, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Array(list)) = map.get("x-kubernetes-validations") {
                for r in list {
                    out.insert((
                        r.get("rule")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                        r.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string(),
                    ));
                }
            }
            map.values().for_each(|c| rules(c, out));
        }
        Value::Array(list) => list.iter().for_each(|c| rules(c, out)),
        _ => {}
    }
}

#[test]
fn cel_cases() {
    let validator = kube::core::cel::Validator::new();
    let mut failures = Vec::new();
    for case in table() {
        let schema = schema(&case.kind);
        let name = case.object_name.as_deref();
        let obj = object(&case.kind, name, &case.spec);
        let old = case.old_spec.as_ref().map(|o| object(&case.kind, name, o));
        let result = validator.validate(&schema, &obj, old.as_ref());
        match (case.accepted, result) {
            (true, Ok(())) => {}
            (true, Err(e)) => failures.push(format!("{}: expected accepted, got: {e}", case.name)),
            (false, Ok(())) => {
                failures.push(format!("{}: expected rejected, was accepted", case.name))
            }
            (false, Err(e)) => {
                let text = e.to_string();
                let wanted = case.message.unwrap_or_default();
                if !text.contains(&wanted) {
                    failures.push(format!(
                        "{}: expected message containing {wanted:?}, got {text:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "CEL cases failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn every_rule_has_a_message_naming_a_field_and_cases_on_both_sides() {
    let cases = table();
    for kind in ["Console", "ScanEngine"] {
        let mut found = BTreeSet::new();
        rules(&schema(kind), &mut found);
        assert!(!found.is_empty());
        for (rule, message) in found {
            assert!(
                message.contains("spec.") || message.starts_with("metadata.name "),
                "rule {rule:?} has a message that names no field: {message:?}"
            );
            let rejected = cases.iter().any(|c| {
                c.kind == kind
                    && !c.accepted
                    && c.message
                        .as_deref()
                        .is_some_and(|m| message.starts_with(m) || message.contains(m))
            });
            assert!(
                rejected,
                "rule {rule:?} ({message}) has no rejected case in cel_cases.json"
            );
        }
        assert!(cases.iter().any(|c| c.kind == kind && c.accepted));
    }
}
