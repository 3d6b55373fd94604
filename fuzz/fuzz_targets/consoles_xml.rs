//! The `consoles.xml` parser on arbitrary bytes: never panics; whatever parses, re-written,
//! parses to the same entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scan_engine::consoles_xml;

fuzz_target!(|data: &[u8]| {
    if let Ok(consoles) = consoles_xml::parse_bytes(data) {
        let again = consoles_xml::parse(&consoles_xml::to_xml(&consoles))
            .expect("the writer's output must parse");
        assert_eq!(again, consoles);
    }
});
