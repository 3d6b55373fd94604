//! A scan job's target strings, as a peer (the console) sends them to the engine: classifying
//! never panics, a block never holds more than the engine's bound, and expanding literal
//! addresses and blocks yields exactly the addresses they name, deduplicated, within the bound.
#![no_main]

use std::{collections::HashSet, net::IpAddr};

use libfuzzer_sys::fuzz_target;
use scan_engine::scan::targets::{self, MAX_HOSTS, Target};

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// Addresses a block names, by arithmetic rather than by listing them.
fn block_size(network: IpAddr, prefix: u8) -> u128 {
    let width: u32 = if network.is_ipv4() { 32 } else { 128 };
    1u128 << (width - u32::from(prefix))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let list: Vec<String> = text.split('\n').take(8).map(str::to_owned).collect();
    let mut literal_only = true;
    let mut named = 0u128;
    for t in &list {
        match targets::classify(t) {
            Ok(Target::Block { network, prefix }) => {
                let size = block_size(network, prefix);
                assert!(
                    size <= MAX_HOSTS as u128,
                    "{t:?} classified as a block of {size}"
                );
                named += size;
            }
            Ok(Target::Address(_)) => named += 1,
            Ok(Target::Host(name)) => {
                assert!(!name.is_empty() && name.len() <= 253, "{name:?}");
                literal_only = false;
            }
            Err(message) => {
                // Refusals go back to the console and into logs: bounded whatever the target.
                assert!(message.len() <= 1200, "{} bytes", message.len());
                literal_only = false;
            }
        }
    }
    // Host names would be resolved; only literal targets are expanded here.
    if literal_only && named <= 4 * MAX_HOSTS as u128 {
        match runtime().block_on(targets::expand(&list)) {
            Ok((hosts, unresolved)) => {
                assert!(unresolved.is_empty());
                assert!(hosts.len() <= MAX_HOSTS);
                assert!(hosts.len() as u128 <= named);
                let unique: HashSet<IpAddr> = hosts.iter().map(|h| h.address).collect();
                assert_eq!(unique.len(), hosts.len(), "expanded addresses repeat");
            }
            Err(_) => {
                assert!(named > MAX_HOSTS as u128 || list.iter().any(|t| t.trim().is_empty()))
            }
        }
    }
});
