//! `cargo xtask kube-score`: the chart's rendering and every object the operator builds (its
//! builders' golden files, `operator/tests/golden/`) scored by kube-score, the manifest
//! linter, pinned and built from Go modules beside the control-plane binaries.
//!
//! Every finding fails the command except those [`SKIPPED`] lists, each with its reason (also
//! in docs/manifests.md; a unit test keeps the two in step). A finding is matched by its check
//! and the start of its summary, so skipping one finding of a check keeps its others.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

/// Findings left on purpose: (check id, start of the summary, reason).
pub const SKIPPED: &[(&str, &str, &str)] = &[
    (
        "container-image-pull-policy",
        "ImagePullPolicy is not set to Always",
        "images are pinned to a version tag and imported into nodes without a registry; \
         `Always` would make every pod start depend on a registry",
    ),
    (
        "pod-networkpolicy",
        "The pod does not have a matching egress NetworkPolicy",
        "engines scan arbitrary targets and consoles dial engines wherever they are, so \
         their egress is open by design; ingress is fenced",
    ),
    (
        "deployment-replicas",
        "Deployment few replicas",
        "one replica reconciles at a time (leader election); `replicaCount: 2` adds a standby",
    ),
    (
        "deployment-strategy",
        "Deployment update strategy",
        "one replica is replaced with `Recreate`, so an old and a new pod never reconcile side \
         by side; with more replicas the chart uses `RollingUpdate`",
    ),
    (
        "statefulset-has-servicename",
        "StatefulSet does not have a valid serviceName",
        "not done yet: the StatefulSets name a governing Service the operator does not create \
         headless; a known gap",
    ),
];

/// The kube-score flags the command always passes: CPU limits only throttle scans.
pub const FLAGS: &[&str] = &["--ignore-container-cpu-limit"];

/// A finding: object, check, summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub object: String,
    pub check: String,
    pub summary: String,
    pub critical: bool,
}

/// The findings of kube-score's JSON output (`--output-format json`) graded below OK.
pub fn findings(json: &str) -> Result<Vec<Finding>> {
    let objects: Vec<Value> = serde_json::from_str(json).context("kube-score's JSON output")?;
    let mut out = Vec::new();
    for object in &objects {
        // kube-score names objects `Kind/group/version/namespace/name`.
        let name = object
            .get("object_name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        for check in object
            .get("checks")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let grade = check.get("grade").and_then(Value::as_i64).unwrap_or(10);
            let skipped = check
                .get("skipped")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            // kube-score's grades: 1 critical, 5 warning, 7 almost OK, 10 OK.
            if skipped || grade >= 7 {
                continue;
            }
            let id = check
                .pointer("/check/id")
                .and_then(Value::as_str)
                .unwrap_or("?")
                .to_owned();
            for comment in check
                .get("comments")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let path = comment.get("path").and_then(Value::as_str).unwrap_or("");
                let summary = comment.get("summary").and_then(Value::as_str).unwrap_or("");
                out.push(Finding {
                    object: if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{name} ({path})")
                    },
                    check: id.clone(),
                    summary: summary.to_owned(),
                    critical: grade < 5,
                });
            }
        }
    }
    Ok(out)
}

/// Why `finding` is skipped, if it is.
pub fn skip_reason(finding: &Finding) -> Option<&'static str> {
    SKIPPED
        .iter()
        .find(|(check, summary, _)| finding.check == *check && finding.summary.starts_with(summary))
        .map(|(_, _, reason)| *reason)
}

/// YAML documents of a golden file: a list becomes one document per item.
fn golden_documents(text: &str) -> Result<Vec<String>> {
    let value: serde_yaml::Value = serde_yaml::from_str(text)?;
    let items = match value {
        serde_yaml::Value::Sequence(items) => items,
        other => vec![other],
    };
    items
        .iter()
        .map(|item| serde_yaml::to_string(item).map_err(Into::into))
        .collect()
}

/// `cargo xtask kube-score`.
pub fn kube_score(root: &Path) -> Result<()> {
    let bins = crate::k8s_bins()?;
    let kube_score = bins.join("kube-score");
    if !kube_score.is_file() {
        bail!(
            "{} is missing: `bash xtask/scripts/k8s-bins.sh kube-score` builds it",
            kube_score.display()
        );
    }
    let dir = root.join("target/kube-score");
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut files: Vec<PathBuf> = Vec::new();

    let chart =
        crate::chart::helm_template(root, "scan-engine-operator", "scan-engine-operator", &[])?;
    let path = dir.join("chart.yaml");
    fs::write(&path, chart).with_context(|| format!("writing {}", path.display()))?;
    files.push(path);

    let golden = root.join("operator/tests/golden");
    let mut names: Vec<PathBuf> = fs::read_dir(&golden)
        .with_context(|| format!("reading {}", golden.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    names.sort();
    for name in names
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text =
            fs::read_to_string(name).with_context(|| format!("reading {}", name.display()))?;
        let docs = golden_documents(&text).with_context(|| format!("{}", name.display()))?;
        let path = dir.join(name.file_name().unwrap_or_default());
        fs::write(&path, docs.join("---\n"))
            .with_context(|| format!("writing {}", path.display()))?;
        files.push(path);
    }

    let out = Command::new(&kube_score)
        .args(["score", "--output-format", "json"])
        .args(FLAGS)
        .args(&files)
        .output()
        .with_context(|| format!("running {}", kube_score.display()))?;
    // kube-score exits 1 when it has findings; only its output decides here.
    let json = String::from_utf8_lossy(&out.stdout);
    if json.trim().is_empty() {
        bail!(
            "kube-score printed nothing: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let findings = findings(&json)?;
    let mut failed = 0;
    for finding in &findings {
        let level = if finding.critical {
            "CRITICAL"
        } else {
            "WARNING"
        };
        match skip_reason(finding) {
            Some(reason) => println!(
                "skipped  {level:8} {} [{}] {}: {reason}",
                finding.object, finding.check, finding.summary
            ),
            None => {
                failed += 1;
                println!(
                    "FAILED   {level:8} {} [{}] {}",
                    finding.object, finding.check, finding.summary
                );
            }
        }
    }
    println!(
        "kube-score: {} files, {} findings, {} skipped with a reason, {failed} failing",
        files.len(),
        findings.len(),
        findings.len() - failed
    );
    if failed > 0 {
        bail!("kube-score: {failed} findings (list above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn findings_below_ok_are_read_and_matched_to_their_skip() {
        let json = r#"[{"object_name":"StatefulSet/apps/v1/ns/e","type_meta":{"kind":"StatefulSet"},
            "object_meta":{"namespace":"ns"},"checks":[
            {"check":{"id":"container-image-pull-policy"},"grade":1,"skipped":false,
             "comments":[{"path":"scan-engine","summary":"ImagePullPolicy is not set to Always"}]},
            {"check":{"id":"container-ephemeral-storage-request-and-limit"},"grade":1,
             "skipped":false,"comments":[{"path":"scan-engine","summary":"Ephemeral Storage limit is not set"}]},
            {"check":{"id":"stable-version"},"grade":10,"skipped":false,"comments":null},
            {"check":{"id":"pod-probes"},"grade":5,"skipped":true,"comments":[{"summary":"x"}]}]}]"#;
        let found = findings(json).unwrap_or_default();
        assert_eq!(found.len(), 2, "{found:?}");
        assert_eq!(found[0].object, "StatefulSet/apps/v1/ns/e (scan-engine)");
        assert!(skip_reason(&found[0]).is_some());
        assert!(
            skip_reason(&found[1]).is_none(),
            "ephemeral storage is not skipped"
        );
    }

    #[test]
    fn golden_lists_become_documents() {
        let docs = golden_documents("- kind: Service\n  a: 1\n- kind: Service\n  a: 2\n")
            .unwrap_or_default();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            golden_documents("kind: Service\n")
                .unwrap_or_default()
                .len(),
            1
        );
    }

    /// docs/manifests.md lists every skipped finding and flag with its reason.
    #[test]
    fn the_docs_list_every_skip() {
        let docs = fs::read_to_string(crate::workspace_root().join("docs/manifests.md"))
            .unwrap_or_default();
        for (check, summary, _) in SKIPPED {
            assert!(
                docs.contains(&format!("`{check}`")) && docs.contains(summary),
                "docs/manifests.md does not list {check}: {summary}"
            );
        }
        for flag in FLAGS {
            assert!(
                docs.contains(flag),
                "docs/manifests.md does not list {flag}"
            );
        }
    }
}
