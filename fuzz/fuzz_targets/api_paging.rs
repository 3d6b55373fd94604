//! The console API's paging parameters and path ids, as any client may send them: parsing never
//! panics (debug assertions and overflow checks are on), a refusal quotes the value bounded, an
//! accepted page is within the documented bounds, and the page envelope's links are consistent
//! and parse back to the pages they name.
#![no_main]

use libfuzzer_sys::fuzz_target;
use security_console::api::{self, MAX_PAGE_NUMBER, MAX_PAGE_SIZE, Paging};

fn check_query(query: &str, total: u64) {
    let paging = match Paging::from_query(query) {
        Ok(p) => p,
        Err(e) => {
            assert!(format!("{e:?}").len() < 600, "an unbounded refusal");
            return;
        }
    };
    assert!(paging.number <= MAX_PAGE_NUMBER, "{paging:?}");
    assert!((1..=MAX_PAGE_SIZE).contains(&paging.size), "{paging:?}");
    assert!(i64::try_from(paging.offset()).is_ok(), "{paging:?}");

    let envelope = api::page(Vec::new(), total, "/api/3/scan_engines", paging);
    let pages = total.div_ceil(paging.size);
    assert_eq!(envelope["page"]["totalPages"], pages);
    let links = envelope["links"].as_array().expect("links are a list");
    let mut next = None;
    let mut prev = None;
    for link in links {
        let href = link["href"].as_str().expect("an href");
        let query = href.split_once('?').map_or("", |(_, q)| q);
        let target = Paging::from_query(query).expect("a link the console wrote parses");
        assert_eq!(target.size, paging.size, "{href}");
        match link["rel"].as_str() {
            Some("self") => assert_eq!(target.number, paging.number, "{href}"),
            Some("next") => next = Some(target.number),
            Some("prev") => prev = Some(target.number),
            other => panic!("unexpected link rel {other:?}"),
        }
    }
    assert_eq!(
        next,
        (paging.number + 1 < pages).then_some(paging.number + 1),
        "next link of {paging:?} with {pages} pages"
    );
    if let Some(p) = prev {
        assert_eq!(p + 1, paging.number);
    } else {
        assert!(paging.number == 0 || paging.number > pages);
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (total, rest) = data.split_at(8);
    let total = u64::from_le_bytes(total.try_into().expect("8 bytes")) >> 1;
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    check_query(text, total);
    match api::parse_id(text, "id") {
        Ok(id) => assert!(id > 0),
        Err(e) => assert!(format!("{e:?}").len() < 600, "an unbounded refusal"),
    }
});
