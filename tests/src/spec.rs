//! The published InsightVM API v3 Swagger excerpt (`../shared/insightvm-v3/`, beside the
//! workspace) read at test time, and a small checker of answers against it: the operation's
//! status codes and media type, and a body's required fields, types and enums (recursively,
//! through `$ref`s). Properties the spec does not name are allowed: they are the console's
//! extensions.

use std::path::PathBuf;

use serde_json::Value;

/// The spec file, relative to the workspace root.
pub const SPEC_PATH: &str = "../shared/insightvm-v3/scan-engines-sites-scans.json";

/// The loaded spec.
pub struct Spec {
    doc: Value,
}

impl Spec {
    /// Reads the spec; panics with the path when it cannot.
    pub fn load() -> Spec {
        let path: PathBuf = crate::workspace_root().join(SPEC_PATH);
        let bytes = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("cannot read the v3 spec at {}: {e}", path.display()));
        let doc = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        Spec { doc }
    }

    fn operation(&self, method: &str, path: &str) -> &Value {
        let op = &self.doc["paths"][path][method.to_ascii_lowercase()];
        assert!(op.is_object(), "the spec has no {method} {path}");
        op
    }

    /// Problems of an answer to `method path` (the spec's path template, such as
    /// `/api/3/scans/{id}`): a status code the spec does not list, another media type, or a body
    /// that does not fit the status's schema. Empty when the answer conforms.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        status: u16,
        content_type: &str,
        body: &Value,
    ) -> Vec<String> {
        let op = self.operation(method, path);
        let mut problems = Vec::new();
        let Some(response) = op["responses"].get(status.to_string()) else {
            let listed: Vec<_> = op["responses"]
                .as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            return vec![format!(
                "{method} {path}: status {status} is not one the spec lists ({listed:?})"
            )];
        };
        let media = content_type.split(';').next().unwrap_or_default().trim();
        let produces: Vec<&str> = op["produces"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let fits = produces
            .iter()
            .any(|p| p.split(';').next().unwrap_or_default().trim() == media);
        // Errors are JSON whatever the operation produces.
        if !fits && status < 400 {
            problems.push(format!(
                "{method} {path}: media type {content_type:?}, the spec says {produces:?}"
            ));
        }
        if let Some(schema) = response.get("schema") {
            self.fit(schema, body, "body", &mut problems);
        }
        problems
    }

    /// Problems of `value` against definition `name`.
    pub fn check_definition(&self, name: &str, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        let schema = serde_json::json!({"$ref": format!("#/definitions/{name}")});
        self.fit(&schema, value, name, &mut problems);
        problems
    }

    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.trim_start_matches("#/definitions/");
                let def = &self.doc["definitions"][name];
                assert!(def.is_object(), "the spec has no definition {name}");
                def
            }
            None => schema,
        }
    }

    fn fit(&self, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
        let schema = self.resolve(schema);
        let ty = schema["type"].as_str().unwrap_or("object");
        let type_ok = match ty {
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "array" => value.is_array(),
            _ => value.is_object(),
        };
        if !type_ok {
            problems.push(format!("{at}: {value} is not of type {ty}"));
            return;
        }
        if let Some(allowed) = schema["enum"].as_array()
            && !allowed.contains(value)
        {
            problems.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
        match ty {
            "array" => {
                if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
                    for (i, v) in values.iter().enumerate() {
                        self.fit(items, v, &format!("{at}[{i}]"), problems);
                    }
                }
            }
            "object" => {
                for field in schema["required"].as_array().into_iter().flatten() {
                    if let Some(f) = field.as_str()
                        && value.get(f).is_none()
                    {
                        problems.push(format!("{at}: required field {f} is missing"));
                    }
                }
                if let Some(props) = schema["properties"].as_object() {
                    for (name, prop) in props {
                        if let Some(v) = value.get(name) {
                            self.fit(prop, v, &format!("{at}.{name}"), problems);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_checker_finds_what_does_not_fit() {
        let spec = Spec::load();
        assert!(
            spec.check_definition(
                "EnginePool",
                &json!({"id": 1, "name": "p", "engines": [2], "extension": true})
            )
            .is_empty()
        );
        let problems = spec.check_definition("EnginePool", &json!({"name": 3, "engines": ["x"]}));
        assert_eq!(problems.len(), 3, "{problems:?}");
        let problems = spec.check_definition("NotFoundError", &json!({"status": 404}));
        assert_eq!(problems.len(), 1, "an integer status: {problems:?}");
        let problems = spec.check_definition(
            "ScanEngine",
            &json!({"id": 1, "name": "e", "address": "a", "port": 1, "status": "incompatible"}),
        );
        assert_eq!(problems.len(), 1, "an old status spelling: {problems:?}");
        let problems = spec.check(
            "GET",
            "/api/3/scan_engines/shared_secret",
            200,
            "application/json",
            &json!("secret"),
        );
        assert_eq!(
            problems.len(),
            1,
            "JSON where text/plain is due: {problems:?}"
        );
        let problems = spec.check(
            "POST",
            "/api/3/sites/{id}/scans",
            201,
            "application/json",
            &json!({}),
        );
        assert_eq!(
            problems.len(),
            1,
            "201 where the spec says 200: {problems:?}"
        );
    }
}
