//! Turning a job's target strings into addresses: IPs, CIDR blocks (bounded in size) and host
//! names (resolved).

use std::net::IpAddr;

/// Classification and its bounds are shared with the console, which checks a site's targets
/// with the same rules when the site is created.
pub use scan_engine_protocol::targets::{MAX_HOSTS, Target, classify};

/// One host to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub address: IpAddr,
    /// The name it was given as, if any.
    pub name: Option<String>,
}

/// Every address of a block, network order.
pub fn block_addresses(network: IpAddr, prefix: u8) -> Vec<IpAddr> {
    match network {
        IpAddr::V4(v4) => {
            let bits = 32 - u32::from(prefix);
            let mask = if bits == 32 { 0 } else { u32::MAX << bits };
            let base = u32::from(v4) & mask;
            let count = 1u64 << bits;
            (0..count)
                .map(|i| IpAddr::V4((base + i as u32).into()))
                .collect()
        }
        IpAddr::V6(v6) => {
            let bits = 128 - u32::from(prefix);
            let mask = if bits == 128 { 0 } else { u128::MAX << bits };
            let base = u128::from(v6) & mask;
            let count = 1u128 << bits;
            (0..count).map(|i| IpAddr::V6((base + i).into())).collect()
        }
    }
}

/// Expands all targets into hosts (resolving names), deduplicated, at most [`MAX_HOSTS`].
/// Returns the hosts and a note on names that did not resolve.
pub async fn expand(targets: &[String]) -> Result<(Vec<Host>, Vec<String>), String> {
    let classified = targets
        .iter()
        .map(|t| classify(t))
        .collect::<Result<Vec<_>, _>>()?;
    let mut hosts = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut unresolved = Vec::new();
    let mut push = |hosts: &mut Vec<Host>, h: Host| -> Result<(), String> {
        if seen.insert(h.address) {
            if hosts.len() >= MAX_HOSTS {
                return Err(format!("the targets hold more than {MAX_HOSTS} addresses"));
            }
            hosts.push(h);
        }
        Ok(())
    };
    for target in classified {
        match target {
            Target::Address(address) => push(
                &mut hosts,
                Host {
                    address,
                    name: None,
                },
            )?,
            Target::Block { network, prefix } => {
                for address in block_addresses(network, prefix) {
                    push(
                        &mut hosts,
                        Host {
                            address,
                            name: None,
                        },
                    )?;
                }
            }
            Target::Host(name) => match tokio::net::lookup_host((name.as_str(), 0)).await {
                Ok(addrs) => {
                    let mut any = false;
                    for a in addrs {
                        any = true;
                        push(
                            &mut hosts,
                            Host {
                                address: a.ip(),
                                name: Some(name.clone()),
                            },
                        )?;
                    }
                    if !any {
                        unresolved.push(format!("{name}: no addresses"));
                    }
                }
                Err(e) => unresolved.push(format!("{name}: {e}")),
            },
        }
    }
    Ok((hosts, unresolved))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_expand_to_all_their_addresses() {
        let a = block_addresses("10.0.0.5".parse().unwrap(), 30);
        let want: Vec<IpAddr> = ["10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(a, want);
        assert_eq!(
            block_addresses("10.0.0.0".parse().unwrap(), 16).len(),
            65_536
        );
        assert_eq!(block_addresses("::1".parse().unwrap(), 128).len(), 1);
    }

    #[tokio::test]
    async fn expansion_deduplicates_and_resolves() {
        let (hosts, unresolved) = expand(&[
            "127.0.0.1".into(),
            "127.0.0.0/31".into(),
            "localhost".into(),
        ])
        .await
        .unwrap();
        assert!(unresolved.is_empty(), "{unresolved:?}");
        assert_eq!(hosts[0].address, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(hosts[1].address, "127.0.0.0".parse::<IpAddr>().unwrap());
        assert!(hosts.len() >= 2);
        assert!(
            expand(&["10.0.0.0/16".into(), "10.1.0.0/31".into()])
                .await
                .is_err()
        );
    }
}
