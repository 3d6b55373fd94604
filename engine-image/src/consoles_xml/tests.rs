use std::{fmt::Write as _, sync::OnceLock};

use proptest::prelude::*;
use scan_engine_protocol::Identity;

use super::*;

fn certs() -> &'static [(String, Fingerprint)] {
    static CERTS: OnceLock<Vec<(String, Fingerprint)>> = OnceLock::new();
    CERTS.get_or_init(|| {
        (0..3)
            .map(|i| {
                let id = Identity::generate(&format!("console-{i}")).unwrap();
                (id.cert_pem().trim().to_owned(), id.fingerprint().clone())
            })
            .collect()
    })
}

fn fp(n: u8) -> Fingerprint {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
        .parse()
        .unwrap()
}

#[test]
fn parses_the_documented_shape() {
    let (pem, f) = &certs()[0];
    let text = format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- written by hand -->
<consoles>
  <console id="1" enabled="0" lastAddress="10.0.0.5" port="40814" fingerprint="{f}">
    <cert>{pem}</cert>
  </console>
  <console id="2" enabled="1" fingerprint="{}"/>
</consoles>
"#,
        fp(9)
    );
    let c = parse(&text).unwrap();
    assert_eq!(c.entries.len(), 2);
    assert_eq!(c.entries[0].id, 1);
    assert!(!c.entries[0].enabled);
    assert_eq!(c.entries[0].last_address.as_deref(), Some("10.0.0.5"));
    assert_eq!(c.entries[0].port, Some(40814));
    assert_eq!(&c.entries[0].fingerprint, f);
    assert_eq!(c.entries[0].cert_pem.as_deref(), Some(pem.as_str()));
    assert!(c.entries[1].enabled);
    assert_eq!(c.entries[1].cert_pem, None);
    assert_eq!(parse(&to_xml(&c)).unwrap(), c);
}

#[test]
fn fingerprint_may_be_computed_from_the_certificate() {
    let (pem, f) = &certs()[1];
    let c = parse(&format!(
        "<consoles><console id=\"3\" enabled=\"1\"><cert>\n{pem}\n</cert></console></consoles>"
    ))
    .unwrap();
    assert_eq!(&c.entries[0].fingerprint, f);
}

#[test]
fn empty_lists() {
    assert_eq!(parse("<consoles/>").unwrap(), Consoles::default());
    assert_eq!(
        parse("<consoles>\n</consoles>").unwrap(),
        Consoles::default()
    );
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        load(&dir.path().join(FILE_NAME)).unwrap(),
        Consoles::default()
    );
}

fn problem(text: &str) -> ParseError {
    parse(text).expect_err(text)
}

#[test]
fn malformed_files_are_refused_with_line_and_reason() {
    let f = fp(1);
    let cases: Vec<(String, &str, usize)> = vec![
        ("".into(), "no <consoles>", 1),
        ("<consoles>".into(), "end of file", 1),
        (
            "<consoles><console id=\"1\" enabled=\"0\" fingerprint=\"x".into(),
            "malformed",
            1,
        ),
        (
            format!(
                "<consoles>\n<console id=\"1\" enabled=\"yes\" fingerprint=\"{f}\"/></consoles>"
            ),
            "enabled=\"yes\"",
            2,
        ),
        (
            format!("<consoles>\n\n<console enabled=\"1\" fingerprint=\"{f}\"/></consoles>"),
            "without an id",
            3,
        ),
        (
            format!("<consoles><console id=\"x\" enabled=\"1\" fingerprint=\"{f}\"/></consoles>"),
            "id=\"x\"",
            1,
        ),
        (
            format!("<consoles><console id=\"1\" fingerprint=\"{f}\"/></consoles>"),
            "no enabled",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/>\n<console id=\"1\" enabled=\"0\" fingerprint=\"{}\"/></consoles>",
                fp(2)
            ),
            "duplicate console id=\"1\"",
            2,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/><console id=\"2\" enabled=\"0\" fingerprint=\"{f}\"/></consoles>"
            ),
            "listed twice",
            1,
        ),
        (
            "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"sha256:abc\"/></consoles>"
                .into(),
            "fingerprint",
            1,
        ),
        (
            "<consoles><console id=\"1\" enabled=\"1\"/></consoles>".into(),
            "neither a fingerprint",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\" colour=\"red\"/></consoles>"
            ),
            "unknown attribute \"colour\"",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\" port=\"99999\"/></consoles>"
            ),
            "port=\"99999\"",
            1,
        ),
        (
            format!("<consoles><consol id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/></consoles>"),
            "<consol>",
            1,
        ),
        (
            format!("<engines><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/></engines>"),
            "<engines>",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"><cert>garbage</cert></console></consoles>"
            ),
            "no PEM certificate",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"><cert>{}</cert></console></consoles>",
                certs()[0].0
            ),
            "does not match",
            1,
        ),
        (
            format!(
                "<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/></consoles><consoles/>"
            ),
            "after </consoles>",
            1,
        ),
        (
            format!(
                "<consoles>text<console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"/></consoles>"
            ),
            "found text",
            1,
        ),
        (
            format!("<consoles><console id=\"1\" enabled=\"1\" fingerprint=\"{f}\"></consoles>"),
            "malformed",
            1,
        ),
        (
            "<!DOCTYPE x [<!ENTITY a \"b\">]><consoles/>".into(),
            "DOCTYPE",
            1,
        ),
    ];
    for (text, needle, line) in cases {
        let e = problem(&text);
        assert!(e.problem.contains(needle), "{text:?}: {e} lacks {needle:?}");
        assert_eq!(e.line, line, "{text:?}: {e}");
    }
    assert!(
        parse_bytes(b"<consoles>\xff</consoles>")
            .unwrap_err()
            .problem
            .contains("UTF-8")
    );
}

#[test]
fn load_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(
        &path,
        "<consoles>\n  <console id=\"1\" enabled=\"2\"/>\n</consoles>",
    )
    .unwrap();
    let msg = load(&path).unwrap_err().to_string();
    assert!(msg.contains("consoles.xml"), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
    assert!(msg.contains("enabled=\"2\""), "{msg}");
}

#[test]
fn save_is_atomic_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    let c = Consoles {
        entries: vec![ConsoleEntry {
            id: 4,
            enabled: true,
            last_address: Some("a&b<c>\"'".into()),
            port: None,
            fingerprint: fp(4),
            cert_pem: None,
        }],
    };
    save(&path, &c).unwrap();
    assert_eq!(load(&path).unwrap(), c);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from(FILE_NAME)]);
}

fn entry_strategy() -> impl Strategy<Value = (bool, Option<String>, Option<u16>, u8, Option<usize>)>
{
    (
        any::<bool>(),
        proptest::option::of("[a-zA-Z0-9.:<>&\"' _-]{0,24}"),
        proptest::option::of(any::<u16>()),
        any::<u8>(),
        proptest::option::of(0usize..3),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn write_then_parse_round_trips(raw in proptest::collection::vec(entry_strategy(), 0..6), first_id in 0u64..1000) {
        let mut used_fps = std::collections::HashSet::new();
        let mut entries = Vec::new();
        for (i, (enabled, last_address, port, fp_seed, cert)) in raw.into_iter().enumerate() {
            let (fingerprint, cert_pem) = match cert {
                Some(k) => (certs()[k].1.clone(), Some(certs()[k].0.clone())),
                None => (fp(fp_seed), None),
            };
            if !used_fps.insert(fingerprint.clone()) {
                continue;
            }
            entries.push(ConsoleEntry { id: first_id + i as u64 * 7, enabled, last_address, port, fingerprint, cert_pem });
        }
        let consoles = Consoles { entries };
        let xml = to_xml(&consoles);
        prop_assert_eq!(parse(&xml).unwrap(), consoles);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = parse_bytes(&bytes);
    }

    #[test]
    fn mutated_documents_never_panic(cut in 0usize..400, insert in "[<>/=\"&;# a-z0-9]{0,8}") {
        let doc = format!(
            "<?xml version=\"1.0\"?>\n<consoles>\n  <console id=\"1\" enabled=\"1\" lastAddress=\"10.0.0.1\" port=\"1\" fingerprint=\"{}\">\n    <cert>&lt;x&#65;</cert>\n  </console>\n</consoles>\n",
            fp(3)
        );
        let cut = cut.min(doc.len());
        let mut mutated = doc.as_bytes()[..cut].to_vec();
        mutated.extend_from_slice(insert.as_bytes());
        mutated.extend_from_slice(&doc.as_bytes()[cut..]);
        let _ = parse_bytes(&mutated);
    }
}

fn many_entries(n: usize) -> String {
    let mut text = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<consoles>\n");
    for i in 0..n {
        let _ = writeln!(
            text,
            "  <console id=\"{}\" enabled=\"{}\" lastAddress=\"10.0.{}.{}\" port=\"40814\" fingerprint=\"sha256:{:064x}\"/>",
            i + 1,
            i % 2,
            i / 256 % 256,
            i % 256,
            i
        );
    }
    text.push_str("</consoles>\n");
    text
}

#[test]
fn twenty_thousand_entries_parse_in_well_under_a_second() {
    let text = many_entries(20_000);
    let started = std::time::Instant::now();
    let c = parse(&text).unwrap();
    let took = started.elapsed();
    println!("parsed 20,000 consoles.xml entries in {took:?}");
    assert_eq!(c.entries.len(), 20_000);
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");

    // Line numbers stay right at the far end of a large file.
    let broken = text.replace(
        "</consoles>",
        "  <console id=\"1\" enabled=\"1\" fingerprint=\"sha256:00\"/>\n</consoles>",
    );
    let e = parse(&broken).unwrap_err();
    assert_eq!(e.line, 20_003, "{e}");
    assert!(e.problem.contains("fingerprint"), "{e}");
}

#[test]
fn concurrent_writers_never_lose_an_entry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::thread::scope(|s| {
        for t in 0..24u8 {
            let path = &path;
            s.spawn(move || {
                update(path, |c| {
                    let id = c.next_id();
                    c.entries.push(ConsoleEntry {
                        id,
                        enabled: false,
                        last_address: None,
                        port: None,
                        fingerprint: fp(t),
                        cert_pem: None,
                    });
                    ((), true)
                })
                .unwrap();
            });
        }
    });
    let c = load(&path).unwrap();
    assert_eq!(c.entries.len(), 24);
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names
            .iter()
            .all(|n| n == FILE_NAME || n == "consoles.xml.lock"),
        "{names:?}"
    );
}

#[test]
fn an_update_that_writes_nothing_leaves_the_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, "<consoles/>").unwrap();
    update(&path, |c| {
        c.entries.clear();
        ((), false)
    })
    .unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "<consoles/>");
}

#[cfg(unix)]
#[test]
fn save_keeps_the_file_permissions() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(FILE_NAME);
    std::fs::write(&path, "<consoles/>").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    save(&path, &Consoles::default()).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}
