//! `scan-engine consoles list|enable|disable`: the administrator's side of standard pairing.
//!
//! A console the engine does not know is written to `consoles.xml` with `enabled="0"` and is
//! answered "pending authorization". An administrator enables it and restarts the engine, which
//! reads its trust list at start-up. On Kubernetes, where the image has no shell or editor:
//!
//! ```text
//! kubectl exec NAME-scan-engine-0 -- /usr/local/bin/scan-engine consoles list
//! kubectl exec NAME-scan-engine-0 -- /usr/local/bin/scan-engine consoles enable sha256:…  # or its id
//! kubectl delete pod NAME-scan-engine-0
//! ```
//!
//! The file is rewritten atomically, so a running engine never reads half of it, and under the
//! same write lock the running engine takes, so a console it records meanwhile is not lost.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::consoles_xml::{self, Consoles};

/// What the command does.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum ConsolesCommand {
    /// Print every console entry: id, enabled, certificate fingerprint, last address.
    List,
    /// Set enabled="1" on a console (by id or certificate fingerprint); restart the engine
    /// afterwards.
    Enable {
        /// The entry's id, or the console's certificate fingerprint (sha256:…).
        console: String,
    },
    /// Set enabled="0" on a console (by id or certificate fingerprint); restart the engine
    /// afterwards.
    Disable {
        /// The entry's id, or the console's certificate fingerprint (sha256:…).
        console: String,
    },
}

/// Why the command failed; every message names the file or the console asked for.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    File(#[from] consoles_xml::Error),
    #[error("{path} has no console {wanted:?}; `scan-engine consoles list` shows the entries")]
    NoSuchConsole { path: PathBuf, wanted: String },
}

/// Runs `command` on `<data_dir>/consoles.xml`; returns what to print.
pub fn run(data_dir: &Path, command: &ConsolesCommand) -> Result<String, Error> {
    let path = data_dir.join(consoles_xml::FILE_NAME);
    match command {
        ConsolesCommand::List => Ok(list(&consoles_xml::load(&path)?)),
        ConsolesCommand::Enable { console } => set_enabled(&path, console, true),
        ConsolesCommand::Disable { console } => set_enabled(&path, console, false),
    }
}

fn list(consoles: &Consoles) -> String {
    let mut out = String::from("ID  ENABLED  FINGERPRINT  LAST ADDRESS\n");
    for e in &consoles.entries {
        let _ = writeln!(
            out,
            "{}  {}  {}  {}",
            e.id,
            if e.enabled { "yes" } else { "no" },
            e.fingerprint.as_str(),
            e.last_address.as_deref().unwrap_or("-")
        );
    }
    out
}

/// Flips one entry under the file's write lock, so that a console the running engine records
/// at the same moment is kept.
fn set_enabled(path: &Path, wanted: &str, enabled: bool) -> Result<String, Error> {
    let wanted_id = wanted.parse::<u64>().ok();
    consoles_xml::update(path, |consoles| {
        let Some(entry) = consoles
            .entries
            .iter_mut()
            .find(|e| Some(e.id) == wanted_id || e.fingerprint.as_str() == wanted)
        else {
            let missing = Error::NoSuchConsole {
                path: path.to_owned(),
                wanted: wanted.to_owned(),
            };
            return (Err(missing), false);
        };
        let verb = if enabled { "enabled" } else { "disabled" };
        if entry.enabled == enabled {
            let message = format!(
                "console {} ({}) was already {verb}\n",
                entry.id,
                entry.fingerprint.as_str()
            );
            return (Ok(message), false);
        }
        entry.enabled = enabled;
        let message = format!(
            "console {} ({}) {verb} in {}; restart the engine to apply it\n",
            entry.id,
            entry.fingerprint.as_str(),
            path.display()
        );
        (Ok(message), true)
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    const FP: &str = "sha256:0101010101010101010101010101010101010101010101010101010101010101";

    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(consoles_xml::FILE_NAME),
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consoles>\n  <console id=\"3\" enabled=\"0\" lastAddress=\"10.0.0.5\" fingerprint=\"{FP}\"/>\n</consoles>\n"
            ),
        )
        .expect("write consoles.xml");
        dir
    }

    fn enabled(dir: &Path) -> bool {
        consoles_xml::load(&dir.join(consoles_xml::FILE_NAME))
            .expect("load")
            .entries[0]
            .enabled
    }

    #[test]
    fn enable_by_fingerprint_then_disable_by_id() {
        let dir = data_dir();
        let out = run(dir.path(), &ConsolesCommand::Enable { console: FP.into() }).expect("enable");
        assert!(
            out.contains("console 3") && out.contains("restart"),
            "{out}"
        );
        assert!(enabled(dir.path()));
        let out = run(
            dir.path(),
            &ConsolesCommand::Enable {
                console: "3".into(),
            },
        )
        .expect("again");
        assert!(out.contains("already enabled"), "{out}");
        run(
            dir.path(),
            &ConsolesCommand::Disable {
                console: "3".into(),
            },
        )
        .expect("disable");
        assert!(!enabled(dir.path()));
    }

    #[test]
    fn list_shows_each_entry() {
        let dir = data_dir();
        let out = run(dir.path(), &ConsolesCommand::List).expect("list");
        assert!(out.contains(&format!("3  no  {FP}  10.0.0.5")), "{out}");
    }

    #[test]
    fn an_unknown_console_is_named_and_nothing_changes() {
        let dir = data_dir();
        let before =
            std::fs::read_to_string(dir.path().join(consoles_xml::FILE_NAME)).expect("read");
        let err = run(
            dir.path(),
            &ConsolesCommand::Enable {
                console: "9".into(),
            },
        )
        .expect_err("no console 9");
        assert!(err.to_string().contains("no console \"9\""), "{err}");
        let after =
            std::fs::read_to_string(dir.path().join(consoles_xml::FILE_NAME)).expect("read");
        assert_eq!(before, after);
    }

    #[test]
    fn a_broken_file_is_reported_with_its_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(consoles_xml::FILE_NAME),
            "<consoles><console",
        )
        .expect("write");
        let err = run(dir.path(), &ConsolesCommand::List).expect_err("broken");
        assert!(err.to_string().contains("consoles.xml"), "{err}");
    }
}
