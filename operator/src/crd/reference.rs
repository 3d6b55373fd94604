//! The CRD reference in Markdown (`docs/crd-reference.md`), generated from the same schema the
//! API server validates against, so it cannot drift from the types.

use std::fmt::Write as _;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::{
    CustomResourceDefinition, JSONSchemaProps, JSONSchemaPropsOrArray,
};

/// Renders every CRD: names, printer columns, then one table row per field of spec and status.
pub fn render_markdown(crds: &[CustomResourceDefinition]) -> String {
    let mut out = String::from(
        "# CRD reference\n\n\
         Generated from the CRD schemas by `cargo xtask crds`; do not edit by hand. \
         `kubectl explain <kind>.spec --recursive` shows the same text on a cluster.\n\n\
         The rules below refuse at admission every value that would make one of the operator's \
         child objects invalid, with a message naming the field: names too long or not DNS labels \
         where a child name or label is derived from them (a ScanEngine at most 40 characters, a \
         managed Console 44, any Console 63: a StatefulSet name may have at most 52, since its \
         pods' `controller-revision-hash` label adds 11), quantities that do not parse or are \
         negative (storage sizes must be positive), requests above limits, ports outside \
         1–65535, CIDRs, label keys and values, tolerations, image references and tags, and a \
         `renewBefore` that is not shorter than the one-hour life of a shared secret. Maps and \
         lists the rules iterate carry `maxProperties`/`maxItems` so that the API server's CEL \
         cost estimate stays within its budget.\n",
    );
    for crd in crds {
        let names = &crd.spec.names;
        let _ = write!(
            out,
            "\n## {kind}\n\n`{group}` · scope `{scope}` · plural `{plural}`",
            kind = names.kind,
            group = crd.spec.group,
            scope = crd.spec.scope,
            plural = names.plural,
        );
        if let Some(short) = names.short_names.as_ref().filter(|s| !s.is_empty()) {
            let _ = write!(out, " · short names `{}`", short.join("`, `"));
        }
        if let Some(cats) = names.categories.as_ref().filter(|c| !c.is_empty()) {
            let _ = write!(out, " · categories `{}`", cats.join("`, `"));
        }
        out.push('\n');
        for version in &crd.spec.versions {
            let _ = write!(out, "\n### {}\n", version.name);
            if let Some(columns) = version.additional_printer_columns.as_ref() {
                out.push_str("\n| column | JSON path |\n|---|---|\n");
                for c in columns {
                    let _ = writeln!(out, "| {} | `{}` |", c.name, c.json_path);
                }
            }
            let Some(root) = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
            else {
                continue;
            };
            if let Some(d) = root.description.as_deref() {
                let _ = write!(out, "\n{}\n", one_paragraph(d));
            }
            if root
                .x_kubernetes_validations
                .as_ref()
                .is_some_and(|r| !r.is_empty())
            {
                out.push_str(
                    "\n#### The object\n\nRules on the whole object (`self` is the object, of \
                     whose metadata only `name` and `generateName` are visible).\n\n\
                     | field | type | description |\n|---|---|---|\n",
                );
                rules_row(&mut out, "metadata.name", root);
            }
            for section in ["spec", "status"] {
                let Some(props) = root.properties.as_ref().and_then(|p| p.get(section)) else {
                    continue;
                };
                let _ = write!(
                    out,
                    "\n#### `.{section}`\n\n| field | type | description |\n|---|---|---|\n"
                );
                rules_row(&mut out, section, props);
                fields(&mut out, section, props);
            }
        }
    }
    out
}

/// Fields whose schema is a core Kubernetes type, documented by one row, not field by field.
const EMBEDDED_KUBERNETES_TYPES: &[&str] = &[
    "affinity",
    "tolerations",
    "resources",
    "conditions",
    "imagePullSecrets",
    "securityContext",
];

fn fields(out: &mut String, path: &str, schema: &JSONSchemaProps) {
    let required = schema.required.clone().unwrap_or_default();
    for (name, prop) in schema.properties.iter().flatten() {
        let field = format!("{path}.{name}");
        let mut description = prop
            .description
            .as_deref()
            .map(one_paragraph)
            .unwrap_or_default();
        if required.contains(name) {
            description = format!("**Required.** {description}");
        }
        if let Some(default) = &prop.default {
            let _ = write!(description, " Default: `{}`.", default.0);
        }
        if let Some(values) = &prop.enum_ {
            let values: Vec<String> = values.iter().map(|v| v.0.to_string()).collect();
            let _ = write!(description, " One of: `{}`.", values.join("`, `"));
        }
        let _ = writeln!(
            out,
            "| `{field}` | {} | {} |",
            type_name(prop),
            escape(description.trim())
        );
        rules_row(out, &field, prop);
        if EMBEDDED_KUBERNETES_TYPES.contains(&name.as_str()) {
            // Core Kubernetes types: `kubectl explain` documents them; listing them here would
            // bury the operator's own fields.
            continue;
        }
        fields(out, &field, prop);
        if let Some(JSONSchemaPropsOrArray::Schema(items)) = &prop.items {
            fields(out, &format!("{field}[]"), items);
        }
    }
}

/// CEL rules are part of the contract: list each with its message.
fn rules_row(out: &mut String, path: &str, schema: &JSONSchemaProps) {
    for rule in schema.x_kubernetes_validations.iter().flatten() {
        let message = rule.message.as_deref().unwrap_or("(no message)");
        let _ = writeln!(
            out,
            "| `{path}` | rule | `{}`: {} |",
            escape(&rule.rule),
            escape(message)
        );
    }
}

fn type_name(schema: &JSONSchemaProps) -> String {
    if schema.x_kubernetes_int_or_string == Some(true) {
        return "int or string".into();
    }
    match (schema.type_.as_deref(), &schema.items) {
        (Some("array"), Some(JSONSchemaPropsOrArray::Schema(items))) => {
            format!("[]{}", type_name(items))
        }
        (Some("object"), _) if schema.properties.is_none() => match &schema.additional_properties {
            Some(_) => "map".into(),
            None => "object".into(),
        },
        (Some(t), _) => match &schema.format {
            Some(f) => format!("{t} ({f})"),
            None => t.to_owned(),
        },
        (None, _) if schema.x_kubernetes_preserve_unknown_fields == Some(true) => "any".into(),
        (None, _) => "object".into(),
    }
}

fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn escape(text: &str) -> String {
    text.replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_every_spec_field_and_rule() {
        let crds: Vec<_> = crate::crd::all().into_iter().map(|(_, c)| c).collect();
        let md = render_markdown(&crds);
        for needle in [
            "## Console",
            "## ScanEngine",
            "`spec.communication`",
            "`spec.consoleRef`",
            "| Direction |",
            "short names `se`",
            "#### The object",
            "size(self.metadata.name) <= 40",
        ] {
            assert!(md.contains(needle), "missing {needle:?}");
        }
        // Every CEL rule of the schema shows up with its message.
        let rules = md.matches("| rule |").count();
        assert!(rules >= 3, "only {rules} rules documented");
    }
}
