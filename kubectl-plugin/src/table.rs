//! The Scan Engines table as the Security Console shows it: the communication method by an
//! arrow (toward `Engine` for a standard pairing, toward `Console` for a reverse one) and the
//! state by colour *and* in words (green Active, orange Unknown, red Pending Authorization,
//! Incompatible and Down).
//!
//! Everything here is pure: a [`Row`] is built from a ScanEngine (and, for `-o wide`, what was
//! looked up beside it), and [`render`] turns rows into text for a given time and colour choice.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::jiff::Timestamp;
use scan_engine_operator::controller::scan_engine::pairing;
use scan_engine_operator::crd::{Communication, EngineState, ScanEngine};
use serde::Serialize;

/// Shown for a value that is not known (kubectl's spelling).
pub const NONE: &str = "<none>";
/// Longest MESSAGE shown without `-o wide`, in characters (including the ellipsis).
pub const MESSAGE_WIDTH: usize = 48;

/// The colour of a state, as the console's Communication Status column gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tone {
    Green,
    Orange,
    Red,
    /// No colour: a state the console's table has no colour for (Pairing), or no state yet.
    Plain,
}

impl Tone {
    /// The ANSI escape that starts the colour (none for [`Tone::Plain`]). Orange is the
    /// terminal's yellow, the nearest of the basic colours every terminal has.
    pub fn ansi(self) -> Option<&'static str> {
        match self {
            Tone::Green => Some("\x1b[32m"),
            Tone::Orange => Some("\x1b[33m"),
            Tone::Red => Some("\x1b[31m"),
            Tone::Plain => None,
        }
    }
}

const RESET: &str = "\x1b[0m";

/// The state in words, spelled as the console's table spells it.
pub fn state_words(state: EngineState) -> &'static str {
    match state {
        EngineState::Pairing => "Pairing",
        EngineState::Active => "Active",
        EngineState::Unknown => "Unknown",
        EngineState::PendingAuthorization => "Pending Authorization",
        EngineState::Incompatible => "Incompatible",
        EngineState::Down => "Down",
    }
}

/// The colour of a state.
pub fn tone(state: EngineState) -> Tone {
    match state {
        EngineState::Active => Tone::Green,
        EngineState::Unknown => Tone::Orange,
        EngineState::PendingAuthorization | EngineState::Incompatible | EngineState::Down => {
            Tone::Red
        }
        EngineState::Pairing => Tone::Plain,
    }
}

/// The arrow of a communication method: toward the Engine for ConsoleToEngine, toward the
/// Console for EngineToConsole (the operator's own `kubectl get` column text).
pub fn arrow(communication: Communication) -> &'static str {
    communication.display()
}

/// Whether to colour: only on a terminal, and never when `NO_COLOR` is set to anything but the
/// empty string (no-color.org).
pub fn use_color(stdout_is_terminal: bool, no_color: Option<&OsStr>) -> bool {
    stdout_is_terminal && no_color.is_none_or(OsStr::is_empty)
}

/// A duration in kubectl's short form (`45s`, `3m20s`, `17m`, `5h2m`, `30h`, `3d4h`, `120d`,
/// `2y30d`), from whole seconds. A time slightly in the future (clock skew) is `0s`.
pub fn age(seconds: i64) -> String {
    if seconds < -1 {
        return "<invalid>".into();
    }
    let seconds = seconds.max(0);
    let minutes = seconds / 60;
    let hours = seconds / 3600;
    let with = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    if seconds < 120 {
        format!("{seconds}s")
    } else if minutes < 10 {
        with(minutes, "m", seconds % 60, "s")
    } else if minutes < 180 {
        format!("{minutes}m")
    } else if hours < 8 {
        with(hours, "h", minutes % 60, "m")
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        with(hours / 24, "d", hours % 24, "h")
    } else if hours < 24 * 365 * 2 {
        format!("{}d", hours / 24)
    } else if hours < 24 * 365 * 8 {
        with(hours / 24 / 365, "y", (hours / 24) % 365, "d")
    } else {
        format!("{}y", hours / 24 / 365)
    }
}

/// `text` cut to at most `max` characters, the last of them `…` when anything was cut. Line
/// breaks become spaces, so one engine stays one line.
pub fn truncate(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let mut cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// What `-o wide` shows beside an engine, looked up from other objects.
#[derive(Clone, Debug, Default)]
pub struct Extra<'a> {
    /// The engine's Service (`<name>-scan-engine`), for a NodePort or LoadBalancer address.
    pub service: Option<&'a Service>,
    /// The Console's `status.engineListenerAddress` (where an EngineToConsole engine dials).
    pub console_listener: Option<&'a str>,
    /// Names of the engine's pods.
    pub pods: Vec<String>,
}

/// One engine, as the table shows it. Serialised for `-o json`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub console: String,
    /// The method the console has the engine paired in (the spec's until a status says).
    pub communication: Communication,
    /// The method the spec asks for, when it differs (a switch under way).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switching_to: Option<Communication>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<EngineState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_refresh: Option<Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_id: Option<i64>,
    /// Where the connection goes: the engine's `host:port` (ConsoleToEngine) or the console's
    /// engine listener (EngineToConsole).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    pub pods: Vec<String>,
}

impl Row {
    /// The row of `engine`; `extra` fills the wide columns.
    pub fn new(engine: &ScanEngine, extra: &Extra<'_>) -> Row {
        let name = engine.metadata.name.clone().unwrap_or_default();
        let namespace = engine.metadata.namespace.clone().unwrap_or_default();
        let status = engine.status.clone().unwrap_or_default();
        let wanted = engine.spec.communication;
        let communication = status
            .communication
            .as_ref()
            .map_or(wanted, |c| c.direction);
        let address = match communication {
            Communication::ConsoleToEngine => {
                pairing::dial_address(engine, &name, &namespace, extra.service)
                    .ok()
                    .map(|(host, port)| format!("{host}:{port}"))
            }
            Communication::EngineToConsole => extra.console_listener.map(str::to_owned),
        };
        Row {
            console: engine.spec.console_ref.name.clone(),
            communication,
            switching_to: (wanted != communication).then_some(wanted),
            state: status.communication.as_ref().map(|c| c.state),
            version: status.version,
            last_refresh: status.last_refresh_time.map(|t| t.0),
            message: status.message,
            engine_id: status.engine_id,
            address,
            pods: extra.pods.clone(),
            namespace,
            name,
        }
    }

    /// The COMMUNICATION cell: the arrow, and the method being switched to.
    pub fn communication_text(&self) -> String {
        match self.switching_to {
            Some(to) => format!("{} (switching to {})", arrow(self.communication), arrow(to)),
            None => arrow(self.communication).to_owned(),
        }
    }

    /// The STATE cell, in words.
    pub fn state_text(&self) -> &'static str {
        self.state.map_or(NONE, state_words)
    }

    fn tone(&self) -> Tone {
        self.state.map_or(Tone::Plain, tone)
    }
}

/// How to render.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Style {
    /// Engine id, address and pod columns; the whole message.
    pub wide: bool,
    /// A NAMESPACE column first (`-A`).
    pub namespaces: bool,
    /// ANSI colours on the arrow and the state (the words are there either way).
    pub color: bool,
}

/// The table of `rows` at time `now`, with a header, one line per row, columns separated by
/// three spaces as kubectl does. An empty list is a sentence, not an empty table.
pub fn render(rows: &[Row], style: Style, now: Timestamp) -> String {
    if rows.is_empty() {
        return "No ScanEngines found.\n".into();
    }
    let mut header: Vec<&str> = Vec::new();
    if style.namespaces {
        header.push("NAMESPACE");
    }
    header.extend([
        "NAME",
        "CONSOLE",
        "COMMUNICATION",
        "STATE",
        "VERSION",
        "LAST REFRESH",
    ]);
    if style.wide {
        header.extend(["ENGINE ID", "ADDRESS", "POD"]);
    }
    header.push("MESSAGE");
    // The columns the state's colour applies to.
    let coloured = if style.namespaces { [3, 4] } else { [2, 3] };

    let cells: Vec<(Vec<String>, Tone)> = rows
        .iter()
        .map(|row| {
            let mut line = Vec::new();
            if style.namespaces {
                line.push(row.namespace.clone());
            }
            line.push(row.name.clone());
            line.push(row.console.clone());
            line.push(row.communication_text());
            line.push(row.state_text().to_owned());
            line.push(row.version.clone().unwrap_or_else(|| NONE.into()));
            line.push(
                row.last_refresh
                    .map_or_else(|| NONE.into(), |t| age(now.as_second() - t.as_second())),
            );
            if style.wide {
                line.push(
                    row.engine_id
                        .map_or_else(|| NONE.into(), |id| id.to_string()),
                );
                line.push(row.address.clone().unwrap_or_else(|| NONE.into()));
                line.push(if row.pods.is_empty() {
                    NONE.into()
                } else {
                    row.pods.join(",")
                });
            }
            let message = row.message.as_deref().unwrap_or("");
            line.push(if style.wide {
                truncate(message, usize::MAX)
            } else {
                truncate(message, MESSAGE_WIDTH)
            });
            (line, row.tone())
        })
        .collect();

    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for (line, _) in &cells {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut write_line = |cells: &[String], tone: Tone| {
        let last = cells.len() - 1;
        let mut line = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let pad = if i == last {
                0
            } else {
                widths[i] - cell.chars().count() + 3
            };
            match tone.ansi().filter(|_| style.color && coloured.contains(&i)) {
                Some(start) => {
                    let _ = write!(line, "{start}{cell}{RESET}");
                }
                None => line.push_str(cell),
            }
            line.extend(std::iter::repeat_n(' ', pad));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    };
    let header: Vec<String> = header.into_iter().map(str::to_owned).collect();
    write_line(&header, Tone::Plain);
    for (line, tone) in &cells {
        write_line(line, *tone);
    }
    out
}

/// Rows in kubectl's order: by namespace, then name.
pub fn sorted(rows: impl IntoIterator<Item = Row>) -> Vec<Row> {
    let by_key: BTreeMap<(String, String), Row> = rows
        .into_iter()
        .map(|r| ((r.namespace.clone(), r.name.clone()), r))
        .collect();
    by_key.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use scan_engine_operator::crd::ScanEngineSpec;
    use scan_engine_operator::crd::ScanEngineStatus;
    use scan_engine_operator::crd::scan_engine::{CommunicationStatus, ConsoleRef};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn engine(
        name: &str,
        wanted: Communication,
        status: Option<(Communication, EngineState)>,
    ) -> ScanEngine {
        let mut e = ScanEngine::new(
            name,
            ScanEngineSpec {
                console_ref: ConsoleRef {
                    name: "console".into(),
                },
                communication: wanted,
                port: 40814,
                image: None,
                version: None,
                resources: None,
                storage: None,
                node_selector: None,
                tolerations: None,
                affinity: None,
                authorization: Default::default(),
                advertised_address: None,
                service_type: None,
                image_pull_secrets: None,
                priority_class_name: None,
                pod_labels: None,
                pod_annotations: None,
                env: None,
            },
        );
        e.metadata.namespace = Some("scanning".into());
        e.status = status.map(|(direction, state)| ScanEngineStatus {
            communication: Some(CommunicationStatus {
                direction,
                direction_display: direction.display().into(),
                state,
            }),
            engine_id: Some(7),
            version: Some("0.1.0".into()),
            last_refresh_time: Some(Time(at("2026-01-01T00:00:00Z"))),
            message: Some("the console exchanged with the engine 10s ago".into()),
            ..ScanEngineStatus::default()
        });
        e
    }

    fn row(e: &ScanEngine) -> Row {
        Row::new(e, &Extra::default())
    }

    #[test]
    fn arrows_point_at_whoever_is_dialled() {
        assert_eq!(arrow(Communication::ConsoleToEngine), "Console → Engine");
        assert_eq!(arrow(Communication::EngineToConsole), "Engine → Console");
    }

    #[test]
    fn every_state_has_words_and_the_consoles_colour() {
        let table = [
            (EngineState::Active, "Active", Tone::Green),
            (EngineState::Unknown, "Unknown", Tone::Orange),
            (
                EngineState::PendingAuthorization,
                "Pending Authorization",
                Tone::Red,
            ),
            (EngineState::Incompatible, "Incompatible", Tone::Red),
            (EngineState::Down, "Down", Tone::Red),
            (EngineState::Pairing, "Pairing", Tone::Plain),
        ];
        assert_eq!(table.len(), EngineState::ALL.len());
        for (state, words, colour) in table {
            assert_eq!(state_words(state), words);
            assert_eq!(tone(state), colour, "{state}");
        }
        assert_eq!(Tone::Green.ansi(), Some("\x1b[32m"));
        assert_eq!(Tone::Red.ansi(), Some("\x1b[31m"));
        assert_eq!(Tone::Plain.ansi(), None);
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_color(true, None));
        assert!(use_color(true, Some(OsStr::new(""))));
        assert!(!use_color(true, Some(OsStr::new("1"))));
        assert!(!use_color(false, None));
    }

    #[test]
    fn ages_read_like_kubectl() {
        for (seconds, text) in [
            (-5, "<invalid>"),
            (-1, "0s"),
            (0, "0s"),
            (45, "45s"),
            (119, "119s"),
            (120, "2m"),
            (200, "3m20s"),
            (17 * 60, "17m"),
            (5 * 3600 + 2 * 60, "5h2m"),
            (5 * 3600, "5h"),
            (30 * 3600, "30h"),
            (3 * 86400 + 4 * 3600, "3d4h"),
            (120 * 86400, "120d"),
            (2 * 365 * 86400 + 30 * 86400, "2y30d"),
            (9 * 365 * 86400, "9y"),
        ] {
            assert_eq!(age(seconds), text, "{seconds}s");
        }
    }

    #[test]
    fn long_messages_are_cut_with_an_ellipsis_on_one_line() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("a message that is too long", 10), "a message…");
        assert_eq!(truncate("line one\nline two", 100), "line one line two");
        // Characters, not bytes: no panic in the middle of a multi-byte character.
        assert_eq!(truncate("→→→→→→", 4), "→→→…");
    }

    #[test]
    fn the_table_shows_arrow_state_version_age_and_message() {
        let rows = [
            row(&engine(
                "standard",
                Communication::ConsoleToEngine,
                Some((Communication::ConsoleToEngine, EngineState::Active)),
            )),
            row(&engine(
                "reverse",
                Communication::EngineToConsole,
                Some((
                    Communication::EngineToConsole,
                    EngineState::PendingAuthorization,
                )),
            )),
        ];
        let text = render(&rows, Style::default(), at("2026-01-01T00:05:00Z"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                "NAME       CONSOLE   COMMUNICATION      STATE                   VERSION   LAST REFRESH   MESSAGE",
                "standard   console   Console → Engine   Active                  0.1.0     5m             the console exchanged with the engine 10s ago",
                "reverse    console   Engine → Console   Pending Authorization   0.1.0     5m             the console exchanged with the engine 10s ago",
            ]
        );
        assert!(!text.contains('\x1b'), "no colour was asked for");
    }

    #[test]
    fn colour_wraps_the_arrow_and_the_words_without_shifting_columns() {
        let rows = [row(&engine(
            "down",
            Communication::ConsoleToEngine,
            Some((Communication::ConsoleToEngine, EngineState::Down)),
        ))];
        let now = at("2026-01-01T00:00:30Z");
        let plain = render(&rows, Style::default(), now);
        let colour = render(
            &rows,
            Style {
                color: true,
                ..Style::default()
            },
            now,
        );
        assert!(
            colour.contains("\x1b[31mConsole → Engine\x1b[0m"),
            "{colour}"
        );
        assert!(colour.contains("\x1b[31mDown\x1b[0m"), "{colour}");
        let stripped = colour.replace("\x1b[31m", "").replace("\x1b[0m", "");
        assert_eq!(stripped, plain);
    }

    #[test]
    fn an_engine_without_status_shows_the_spec_direction_and_no_state() {
        let r = row(&engine("new", Communication::EngineToConsole, None));
        assert_eq!(r.communication_text(), "Engine → Console");
        assert_eq!(r.state_text(), NONE);
        let text = render(&[r], Style::default(), at("2026-01-01T00:00:00Z"));
        assert!(
            text.lines()
                .nth(1)
                .unwrap()
                .starts_with("new    console   Engine → Console   <none>   <none>    <none>"),
            "{text}"
        );
    }

    #[test]
    fn a_switch_under_way_shows_both_arrows() {
        let r = row(&engine(
            "moving",
            Communication::EngineToConsole,
            Some((Communication::ConsoleToEngine, EngineState::Active)),
        ));
        assert_eq!(
            r.communication_text(),
            "Console → Engine (switching to Engine → Console)"
        );
    }

    #[test]
    fn wide_adds_id_address_and_pod_and_keeps_the_whole_message() {
        let mut e = engine(
            "standard",
            Communication::ConsoleToEngine,
            Some((Communication::ConsoleToEngine, EngineState::Unknown)),
        );
        let long = "no exchange for 20 minutes although no error was recorded; refresh the engine to try again";
        e.status.as_mut().unwrap().message = Some(long.into());
        let extra = Extra {
            pods: vec!["standard-scan-engine-0".into()],
            ..Extra::default()
        };
        let rows = [Row::new(&e, &extra)];
        let now = at("2026-01-01T00:00:10Z");
        let narrow = render(&rows, Style::default(), now);
        assert!(!narrow.contains(long), "{narrow}");
        assert!(narrow.contains(&truncate(long, MESSAGE_WIDTH)));
        let wide = render(
            &rows,
            Style {
                wide: true,
                ..Style::default()
            },
            now,
        );
        let header = wide.lines().next().unwrap();
        assert!(header.contains("ENGINE ID   ADDRESS"), "{header}");
        let line = wide.lines().nth(1).unwrap();
        assert!(line.contains(long), "{line}");
        let cells: Vec<&str> = line
            .split("   ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect();
        assert_eq!(
            cells[6..9],
            [
                "7",
                "standard-scan-engine.scanning.svc:40814",
                "standard-scan-engine-0"
            ],
            "{line}"
        );
    }

    #[test]
    fn all_namespaces_puts_the_namespace_first_and_sorts() {
        let mut a = engine("b", Communication::ConsoleToEngine, None);
        a.metadata.namespace = Some("zeta".into());
        let b = engine("a", Communication::ConsoleToEngine, None);
        let rows = sorted([row(&a), row(&b)]);
        let text = render(
            &rows,
            Style {
                namespaces: true,
                color: true,
                ..Style::default()
            },
            at("2026-01-01T00:00:00Z"),
        );
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAMESPACE   NAME"), "{text}");
        assert!(lines[1].starts_with("scanning    a "), "{text}");
        assert!(lines[2].starts_with("zeta        b "), "{text}");
    }

    #[test]
    fn no_engines_is_said_in_words() {
        assert_eq!(
            render(&[], Style::default(), Timestamp::UNIX_EPOCH),
            "No ScanEngines found.\n"
        );
    }
}
