//! `consoles.xml`: the consoles this engine knows, and whether each is enabled.
//!
//! ```xml
//! <?xml version="1.0" encoding="UTF-8"?>
//! <consoles>
//!   <console id="1" enabled="0" lastAddress="10.0.0.5" port="40814" fingerprint="sha256:…">
//!     <cert>-----BEGIN CERTIFICATE-----…</cert>
//!   </console>
//! </consoles>
//! ```
//!
//! The parser is strict: anything it does not understand (bad XML, an unknown element or
//! attribute, an `enabled` other than `0`/`1`, a missing or duplicate `id`, a malformed
//! fingerprint, a certificate that does not match its fingerprint …) is an error naming the
//! line and the problem. The engine never runs on a half-read trust list. `fingerprint` may be
//! left out when a `<cert>` is present; it is then computed from the certificate.
//!
//! Writes are atomic and durable: a uniquely named temporary file in the same directory,
//! fsynced, renamed over the file, then the directory fsynced, so a crash leaves either the old
//! or the new list. Read-modify-write goes through [`update`], which holds one lock for the
//! whole step: a mutex within the process and an advisory lock on `consoles.xml.lock` across
//! processes (the running engine and `scan-engine consoles enable` both write), so no writer's
//! change is lost to another's.
//!
//! Parsing is linear in the file's size: 20,000 entries load in milliseconds.

use std::{
    cell::Cell,
    collections::HashSet,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard},
};

use quick_xml::{
    Reader,
    escape::{escape, resolve_predefined_entity},
    events::{BytesStart, Event},
};
use scan_engine_protocol::Fingerprint;

/// Name of the file in the data directory.
pub const FILE_NAME: &str = "consoles.xml";

/// One `<console>` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleEntry {
    pub id: u64,
    pub enabled: bool,
    /// The address the console last connected from (or was dialed at).
    pub last_address: Option<String>,
    pub port: Option<u16>,
    pub fingerprint: Fingerprint,
    /// The console's certificate, PEM, without surrounding whitespace.
    pub cert_pem: Option<String>,
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Consoles {
    pub entries: Vec<ConsoleEntry>,
}

impl Consoles {
    /// The entry for a fingerprint.
    pub fn find(&self, fingerprint: &Fingerprint) -> Option<&ConsoleEntry> {
        self.entries.iter().find(|e| &e.fingerprint == fingerprint)
    }

    /// The entry for a fingerprint, mutably.
    pub fn find_mut(&mut self, fingerprint: &Fingerprint) -> Option<&mut ConsoleEntry> {
        self.entries
            .iter_mut()
            .find(|e| &e.fingerprint == fingerprint)
    }

    /// The id a new entry gets: one more than the largest in use.
    pub fn next_id(&self) -> u64 {
        self.entries
            .iter()
            .map(|e| e.id)
            .max()
            .map_or(1, |m| m.saturating_add(1))
    }
}

/// A problem in the file's content, with the line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct ParseError {
    pub line: usize,
    pub problem: String,
}

/// A problem reading or writing the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: ParseError,
    },
}

/// Parses raw bytes (which must be UTF-8).
pub fn parse_bytes(bytes: &[u8]) -> Result<Consoles, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        ParseError {
            line,
            problem: format!("not valid UTF-8 ({e})"),
        }
    })?;
    parse(text)
}

/// Parses the text of a `consoles.xml`.
pub fn parse(text: &str) -> Result<Consoles, ParseError> {
    Parser::new(text).run()
}

/// Reads and parses `path`. A missing file is an empty trust list.
pub fn load(path: &Path) -> Result<Consoles, Error> {
    match fs::read(path) {
        Ok(bytes) => parse_bytes(&bytes).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Consoles::default()),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes `consoles` to `path` atomically and durably: a uniquely named temporary file in the
/// same directory (keeping the old file's permissions), fsync, rename, fsync of the directory.
///
/// A read-modify-write must use [`update`] instead, or a concurrent writer's change is lost.
pub fn save(path: &Path, consoles: &Consoles) -> Result<(), Error> {
    crate::durable::replace(path, to_xml(consoles).as_bytes()).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// Serialises writers within this process; the file lock serialises processes.
static WRITERS: Mutex<()> = Mutex::new(());

/// Held while one writer reads, changes and writes the trust list.
#[derive(Debug)]
pub struct WriteLock {
    // Field order is drop order: release the file lock, then the process mutex.
    _file: fs::File,
    _process: MutexGuard<'static, ()>,
}

/// The advisory lock file beside `path` (`consoles.xml.lock`). The lock is not taken on
/// `consoles.xml` itself because every write replaces that file.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Waits until this caller is the only writer of `path`, in this process and across processes.
pub fn lock(path: &Path) -> Result<WriteLock, Error> {
    let process = WRITERS.lock().unwrap_or_else(|p| p.into_inner());
    let lock_path = lock_path(path);
    let io = |source| Error::Io {
        path: lock_path.clone(),
        source,
    };
    let mut options = fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let file = options.open(&lock_path).map_err(io)?;
    // `flock(2)` on Unix: released when the file is closed, also if the process dies.
    file.lock().map_err(io)?;
    Ok(WriteLock {
        _file: file,
        _process: process,
    })
}

/// Reads `path` under [`lock`], lets `change` edit the list and writes it back when `change`
/// says so (the `bool` it returns). Returns what `change` returned.
pub fn update<T>(path: &Path, change: impl FnOnce(&mut Consoles) -> (T, bool)) -> Result<T, Error> {
    let _lock = lock(path)?;
    let mut consoles = load(path)?;
    let (value, write) = change(&mut consoles);
    if write {
        save(path, &consoles)?;
    }
    Ok(value)
}

/// The XML text of `consoles`.
pub fn to_xml(consoles: &Consoles) -> String {
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consoles>\n");
    for e in &consoles.entries {
        let _ = write!(
            out,
            "  <console id=\"{}\" enabled=\"{}\"",
            e.id,
            if e.enabled { 1 } else { 0 }
        );
        if let Some(a) = &e.last_address {
            let _ = write!(out, " lastAddress=\"{}\"", escape(a.as_str()));
        }
        if let Some(p) = e.port {
            let _ = write!(out, " port=\"{p}\"");
        }
        let _ = write!(out, " fingerprint=\"{}\"", e.fingerprint);
        match &e.cert_pem {
            Some(pem) => {
                let _ = writeln!(
                    out,
                    ">\n    <cert>{}</cert>\n  </console>",
                    escape(pem.trim())
                );
            }
            None => out.push_str("/>\n"),
        }
    }
    out.push_str("</consoles>\n");
    out
}

/// The fingerprint of the first certificate in a PEM text.
pub fn fingerprint_of_pem(pem: &str) -> Result<Fingerprint, String> {
    match rustls_pemfile::certs(&mut pem.as_bytes()).next() {
        Some(Ok(der)) => Ok(Fingerprint::of_der(&der)),
        Some(Err(e)) => Err(format!("unreadable PEM certificate: {e}")),
        None => Err("no PEM certificate found".to_owned()),
    }
}

struct Parser<'a> {
    text: &'a str,
    reader: Reader<&'a [u8]>,
    /// Where the event being handled starts.
    at: u64,
    /// A byte offset and the line it is on: positions only move forward while parsing, so
    /// each line number is counted from the previous one, not from the start of the text.
    cursor: Cell<(usize, usize)>,
}

/// Attributes of a `<console>` element before its certificate is seen.
struct Partial {
    id: u64,
    enabled: bool,
    last_address: Option<String>,
    port: Option<u16>,
    fingerprint: Option<Fingerprint>,
    line: usize,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        let mut reader = Reader::from_str(text);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.check_comments = true;
        Self {
            text,
            reader,
            at: 0,
            cursor: Cell::new((0, 1)),
        }
    }

    fn line_of(&self, pos: u64) -> usize {
        let pos = usize::try_from(pos)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        let (from, line) = match self.cursor.get() {
            (at, line) if at <= pos => (at, line),
            _ => (0, 1),
        };
        let line = line
            + self.text.as_bytes()[from..pos]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
        self.cursor.set((pos, line));
        line
    }

    fn err<T>(&self, problem: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            line: self.line_of(self.at),
            problem: problem.into(),
        })
    }

    fn next(&mut self) -> Result<Event<'a>, ParseError> {
        self.at = self.reader.buffer_position();
        match self.reader.read_event() {
            Ok(ev) => Ok(ev),
            Err(e) => Err(ParseError {
                line: self.line_of(self.reader.error_position()),
                problem: format!("malformed XML: {e}"),
            }),
        }
    }

    fn run(mut self) -> Result<Consoles, ParseError> {
        // Prolog: declaration, comments, whitespace, then the root.
        let mut consoles = Consoles::default();
        loop {
            match self.next()? {
                Event::Decl(_) | Event::Comment(_) => {}
                Event::Text(t) if is_blank(&t) => {}
                Event::Start(e) if e.name().as_ref() == b"consoles" => {
                    self.no_attributes(&e, "consoles")?;
                    self.console_list(&mut consoles)?;
                    break;
                }
                Event::Empty(e) if e.name().as_ref() == b"consoles" => {
                    self.no_attributes(&e, "consoles")?;
                    break;
                }
                Event::Eof => return self.err("no <consoles> element (empty file?)"),
                Event::DocType(_) => return self.err("a DOCTYPE is not allowed"),
                other => {
                    return self.err(format!(
                        "expected the <consoles> element, found {}",
                        describe(&other)
                    ));
                }
            }
        }
        // Epilog: only comments and whitespace.
        loop {
            match self.next()? {
                Event::Eof => break,
                Event::Comment(_) => {}
                Event::Text(t) if is_blank(&t) => {}
                other => {
                    return self.err(format!("unexpected {} after </consoles>", describe(&other)));
                }
            }
        }
        Ok(consoles)
    }

    fn no_attributes(&self, e: &BytesStart<'_>, element: &str) -> Result<(), ParseError> {
        if let Some(a) = e.attributes().next() {
            let name = match a {
                Ok(a) => String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                Err(e) => return self.err(format!("malformed attribute on <{element}>: {e}")),
            };
            return self.err(format!("unknown attribute {name:?} on <{element}>"));
        }
        Ok(())
    }

    fn console_list(&mut self, consoles: &mut Consoles) -> Result<(), ParseError> {
        let mut ids = HashSet::new();
        let mut fingerprints = HashSet::new();
        loop {
            let (partial, cert) = match self.next()? {
                Event::End(_) => return Ok(()),
                Event::Comment(_) => continue,
                Event::Text(t) if is_blank(&t) => continue,
                Event::Start(e) if e.name().as_ref() == b"console" => {
                    let p = self.console_attributes(&e)?;
                    let cert = self.console_body()?;
                    (p, cert)
                }
                Event::Empty(e) if e.name().as_ref() == b"console" => {
                    (self.console_attributes(&e)?, None)
                }
                Event::Eof => return self.err("unexpected end of file inside <consoles>"),
                other => {
                    return self.err(format!(
                        "expected a <console> element, found {}",
                        describe(&other)
                    ));
                }
            };
            let line = partial.line;
            let bad = |problem: String| ParseError { line, problem };
            let fingerprint = match (&partial.fingerprint, &cert) {
                (Some(f), Some(pem)) => {
                    let computed = fingerprint_of_pem(pem)
                        .map_err(|e| bad(format!("console id=\"{}\": <cert>: {e}", partial.id)))?;
                    if &computed != f {
                        return Err(bad(format!(
                            "console id=\"{}\": fingerprint=\"{f}\" does not match its <cert> \
                             (which has {computed})",
                            partial.id
                        )));
                    }
                    computed
                }
                (None, Some(pem)) => fingerprint_of_pem(pem)
                    .map_err(|e| bad(format!("console id=\"{}\": <cert>: {e}", partial.id)))?,
                (Some(f), None) => f.clone(),
                (None, None) => {
                    return Err(bad(format!(
                        "console id=\"{}\" has neither a fingerprint attribute nor a <cert>",
                        partial.id
                    )));
                }
            };
            if !ids.insert(partial.id) {
                return Err(bad(format!("duplicate console id=\"{}\"", partial.id)));
            }
            if !fingerprints.insert(fingerprint.clone()) {
                return Err(bad(format!(
                    "console id=\"{}\": fingerprint {fingerprint} is listed twice",
                    partial.id
                )));
            }
            consoles.entries.push(ConsoleEntry {
                id: partial.id,
                enabled: partial.enabled,
                last_address: partial.last_address,
                port: partial.port,
                fingerprint,
                cert_pem: cert,
            });
        }
    }

    fn console_attributes(&self, e: &BytesStart<'_>) -> Result<Partial, ParseError> {
        let mut id = None;
        let mut enabled = None;
        let mut last_address = None;
        let mut port = None;
        let mut fingerprint = None;
        for attr in e.attributes() {
            let attr = match attr {
                Ok(a) => a,
                Err(err) => return self.err(format!("malformed attribute on <console>: {err}")),
            };
            let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
            let value = match attr.decode_and_unescape_value(self.reader.decoder()) {
                Ok(v) => v.into_owned(),
                Err(err) => return self.err(format!("attribute {key}: {err}")),
            };
            match key.as_str() {
                "id" => match value.trim().parse::<u64>() {
                    Ok(v) => id = Some(v),
                    Err(_) => {
                        return self.err(format!(
                            "attribute id=\"{value}\" is not a non-negative integer"
                        ));
                    }
                },
                "enabled" => match value.trim() {
                    "0" => enabled = Some(false),
                    "1" => enabled = Some(true),
                    _ => {
                        return self.err(format!(
                            "attribute enabled=\"{value}\" must be \"0\" or \"1\""
                        ));
                    }
                },
                "lastAddress" => last_address = Some(value),
                "port" => match value.trim().parse::<u16>() {
                    Ok(v) => port = Some(v),
                    Err(_) => {
                        return self.err(format!(
                            "attribute port=\"{value}\" is not a port number (0-65535)"
                        ));
                    }
                },
                "fingerprint" => match value.parse::<Fingerprint>() {
                    Ok(f) => fingerprint = Some(f),
                    Err(e) => return self.err(format!("attribute fingerprint: {e}")),
                },
                other => return self.err(format!("unknown attribute {other:?} on <console>")),
            }
        }
        let Some(id) = id else {
            return self.err("<console> without an id attribute");
        };
        let Some(enabled) = enabled else {
            return self.err(format!(
                "console id=\"{id}\" has no enabled attribute (\"0\" or \"1\")"
            ));
        };
        Ok(Partial {
            id,
            enabled,
            last_address,
            port,
            fingerprint,
            line: self.line_of(self.at),
        })
    }

    /// The content of a `<console>` element up to its end tag: at most one `<cert>`.
    fn console_body(&mut self) -> Result<Option<String>, ParseError> {
        let mut cert = None;
        loop {
            match self.next()? {
                Event::End(_) => return Ok(cert),
                Event::Comment(_) => {}
                Event::Text(t) if is_blank(&t) => {}
                Event::Start(e) if e.name().as_ref() == b"cert" => {
                    self.no_attributes(&e, "cert")?;
                    if cert.is_some() {
                        return self.err("a <console> may hold only one <cert>");
                    }
                    cert = Some(self.cert_text()?);
                }
                Event::Empty(e) if e.name().as_ref() == b"cert" => {
                    return self.err("empty <cert/> element");
                }
                Event::Eof => return self.err("unexpected end of file inside <console>"),
                other => {
                    return self.err(format!(
                        "expected <cert> or </console>, found {}",
                        describe(&other)
                    ));
                }
            }
        }
    }

    fn cert_text(&mut self) -> Result<String, ParseError> {
        let mut out = String::new();
        loop {
            match self.next()? {
                Event::End(_) => break,
                Event::Text(t) => match t.decode() {
                    Ok(s) => out.push_str(&s),
                    Err(e) => return self.err(format!("<cert>: {e}")),
                },
                Event::CData(c) => match c.decode() {
                    Ok(s) => out.push_str(&s),
                    Err(e) => return self.err(format!("<cert>: {e}")),
                },
                Event::GeneralRef(r) => {
                    let resolved = match r.resolve_char_ref() {
                        Ok(Some(c)) => Some(c.to_string()),
                        Ok(None) => r
                            .decode()
                            .ok()
                            .and_then(|name| resolve_predefined_entity(&name).map(str::to_owned)),
                        Err(e) => return self.err(format!("<cert>: {e}")),
                    };
                    match resolved {
                        Some(s) => out.push_str(&s),
                        None => return self.err("<cert>: unknown entity reference"),
                    }
                }
                Event::Comment(_) => {}
                Event::Eof => return self.err("unexpected end of file inside <cert>"),
                other => {
                    return self.err(format!(
                        "<cert> may hold only text, found {}",
                        describe(&other)
                    ));
                }
            }
        }
        let pem = out.trim().to_owned();
        if pem.is_empty() {
            return self.err("empty <cert> element");
        }
        Ok(pem)
    }
}

fn is_blank(t: &[u8]) -> bool {
    t.iter().all(|b| b.is_ascii_whitespace())
}

fn describe(ev: &Event<'_>) -> String {
    match ev {
        Event::Start(e) | Event::Empty(e) => {
            format!("element <{}>", String::from_utf8_lossy(e.name().as_ref()))
        }
        Event::End(e) => format!("end tag </{}>", String::from_utf8_lossy(e.name().as_ref())),
        Event::Text(_) | Event::GeneralRef(_) => "text".to_owned(),
        Event::CData(_) => "CDATA".to_owned(),
        Event::Comment(_) => "a comment".to_owned(),
        Event::Decl(_) => "an XML declaration".to_owned(),
        Event::PI(_) => "a processing instruction".to_owned(),
        Event::DocType(_) => "a DOCTYPE".to_owned(),
        Event::Eof => "end of file".to_owned(),
    }
}

#[cfg(test)]
mod tests;
