//! `switch NAME [--yes]`: the arrow icon of the console's Communication Status column. Flips
//! `spec.communication` after a confirmation that reminds the user of the firewall rules the new
//! method needs; the operator re-pairs the engine and swaps its NetworkPolicies itself.

use std::io::{BufRead, Write};

use kube::api::Patch;
use kube::{Api, Client, ResourceExt};
use scan_engine_operator::controller::connection::ENGINE_LISTENER_PORT;
use scan_engine_operator::crd::{Communication, Console, ScanEngine};
use serde_json::json;

use crate::error::{Error, Result};
use crate::table::arrow;

/// The other method.
pub fn flipped(communication: Communication) -> Communication {
    match communication {
        Communication::ConsoleToEngine => Communication::EngineToConsole,
        Communication::EngineToConsole => Communication::ConsoleToEngine,
    }
}

/// What the new method needs of a firewall between console and engine. `listener` is the
/// Console's `status.engineListenerAddress`, where a reverse engine dials, when known.
pub fn firewall_note(to: Communication, engine_port: i32, listener: Option<&str>) -> String {
    let needs = match (to, listener) {
        (Communication::ConsoleToEngine, _) => {
            format!("the console must reach the engine on TCP {engine_port}")
        }
        (Communication::EngineToConsole, Some(listener)) => {
            format!("the engine must reach the console's engine listener {listener} (TCP)")
        }
        (Communication::EngineToConsole, None) => {
            format!("the engine must reach the console on TCP {ENGINE_LISTENER_PORT}")
        }
    };
    format!(
        "Adjust your firewall rules to the new method: with {} {needs}. Inside the cluster the \
         operator swaps the engine's NetworkPolicies itself.",
        arrow(to)
    )
}

/// The question `switch` asks before it changes anything.
pub fn prompt(engine: &ScanEngine, listener: Option<&str>) -> String {
    let from = engine.spec.communication;
    let to = flipped(from);
    format!(
        "Switch ScanEngine {}/{} from {from} ({}) to {to} ({})?\n\
         The operator re-pairs the engine with its console in the new direction.\n\
         {}\n\
         Switch? [y/N] ",
        engine.namespace().unwrap_or_default(),
        engine.name_any(),
        arrow(from),
        arrow(to),
        firewall_note(to, engine.spec.port, listener),
    )
}

/// Whether an answer is a yes.
pub fn confirmed(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

pub async fn run(client: &Client, namespace: &str, name: &str, yes: bool) -> Result<()> {
    let api: Api<ScanEngine> = Api::namespaced(client.clone(), namespace);
    let engine = super::engine(&api, namespace, name).await?;
    let from = engine.spec.communication;
    let to = flipped(from);
    // The console's listener address makes the firewall reminder exact; without read access
    // to Consoles the reminder gives the default port.
    let consoles: Api<Console> = Api::namespaced(client.clone(), namespace);
    let listener = consoles
        .get_opt(&engine.spec.console_ref.name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status)
        .and_then(|s| s.engine_listener_address);
    let listener = listener.as_deref();
    if !yes {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(prompt(&engine, listener).as_bytes())?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !confirmed(&answer) {
            return Err(Error::NotConfirmed(format!(
                "spec.communication of ScanEngine {namespace}/{name}"
            )));
        }
    }
    // The resourceVersion makes the patch apply only to the object the question was about.
    let patch = json!({
        "metadata": {"resourceVersion": engine.resource_version()},
        "spec": {"communication": to},
    });
    api.patch(name, &super::patch_params(), &Patch::Merge(&patch))
        .await
        .map_err(Error::kube(format!(
            "switching ScanEngine {namespace}/{name} to {to}"
        )))?;
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "ScanEngine {namespace}/{name} switched: spec.communication is {to} ({}), was {from}.",
        arrow(to)
    )?;
    if yes {
        writeln!(stdout, "{}", firewall_note(to, engine.spec.port, listener))?;
    }
    writeln!(
        stdout,
        "`kubectl scanengine get {name} -n {namespace} --watch` shows it re-pair."
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(communication: &str) -> ScanEngine {
        serde_json::from_value(json!({
            "apiVersion": "scanengine.dev/v1alpha1",
            "kind": "ScanEngine",
            "metadata": {"name": "edge", "namespace": "scanning"},
            "spec": {"consoleRef": {"name": "c"}, "communication": communication, "port": 41000}
        }))
        .unwrap()
    }

    #[test]
    fn switching_goes_both_ways() {
        assert_eq!(
            flipped(Communication::ConsoleToEngine),
            Communication::EngineToConsole
        );
        assert_eq!(
            flipped(Communication::EngineToConsole),
            Communication::ConsoleToEngine
        );
    }

    #[test]
    fn the_question_names_both_arrows_and_the_firewall() {
        let text = prompt(&engine("ConsoleToEngine"), None);
        assert!(
            text.starts_with(
                "Switch ScanEngine scanning/edge from ConsoleToEngine (Console → Engine) to EngineToConsole (Engine → Console)?"
            ),
            "{text}"
        );
        assert!(text.contains("Adjust your firewall rules"), "{text}");
        assert!(
            text.contains("the engine must reach the console on TCP 40815"),
            "{text}"
        );
        assert!(
            text.contains("operator swaps the engine's NetworkPolicies itself"),
            "{text}"
        );
        assert!(text.ends_with("[y/N] "), "{text}");

        let back = prompt(&engine("EngineToConsole"), Some("console.example:40815"));
        assert!(
            back.contains("the console must reach the engine on TCP 41000"),
            "{back}"
        );
        let external = prompt(&engine("ConsoleToEngine"), Some("console.example:41815"));
        assert!(
            external.contains(
                "the engine must reach the console's engine listener console.example:41815"
            ),
            "{external}"
        );
    }

    #[test]
    fn only_yes_confirms() {
        for yes in ["y", "Y", "yes\n", " YES "] {
            assert!(confirmed(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "sure"] {
            assert!(!confirmed(no), "{no:?}");
        }
    }
}
