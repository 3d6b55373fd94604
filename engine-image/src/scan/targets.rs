//! Turning a job's target strings into addresses: IPs, CIDR blocks (bounded in size) and host
//! names (resolved).

use std::net::IpAddr;

/// At most this many hosts per job (a /16).
pub const MAX_HOSTS: usize = 65_536;

/// A syntactically classified target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Address(IpAddr),
    Block { network: IpAddr, prefix: u8 },
    Host(String),
}

/// One host to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub address: IpAddr,
    /// The name it was given as, if any.
    pub name: Option<String>,
}

/// How much of a refused target its error message quotes. Targets come from the console and
/// the refusal goes back to it (and into logs), so the quote is cut and escaped.
const QUOTED_TARGET_CHARS: usize = 80;

/// A target as quoted in a refusal: cut, escaped, in quotes.
fn quoted(t: &str) -> String {
    format!(
        "\"{}\"",
        scan_engine_protocol::text::printable(t, QUOTED_TARGET_CHARS)
    )
}

/// Classifies one target string.
pub fn classify(target: &str) -> Result<Target, String> {
    let t = target.trim();
    if t.is_empty() {
        return Err("empty target".to_owned());
    }
    if let Some((net, prefix)) = t.split_once('/') {
        let network: IpAddr = net.parse().map_err(|_| {
            format!(
                "target {}: the part before '/' is not an IP address",
                quoted(t)
            )
        })?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("target {}: prefix must be 0..={max}", quoted(t)))?;
        let bits = u32::from(max - prefix);
        if bits > MAX_HOSTS.trailing_zeros() {
            return Err(format!(
                "target {} holds more than {MAX_HOSTS} addresses (the largest block is /{} for \
                 IPv4, /{} for IPv6)",
                quoted(t),
                32 - MAX_HOSTS.trailing_zeros(),
                128 - MAX_HOSTS.trailing_zeros()
            ));
        }
        return Ok(Target::Block { network, prefix });
    }
    if let Ok(a) = t.parse::<IpAddr>() {
        return Ok(Target::Address(a));
    }
    // Bracketed IPv6 is an address too.
    if let Some(inner) = t.strip_prefix('[').and_then(|s| s.strip_suffix(']'))
        && let Ok(a) = inner.parse::<IpAddr>()
    {
        return Ok(Target::Address(a));
    }
    let valid_name = t.len() <= 253
        && t.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if !valid_name {
        return Err(format!(
            "target {} is neither an IP address, a CIDR block nor a host name",
            quoted(t)
        ));
    }
    Ok(Target::Host(t.to_owned()))
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
    fn classifies_targets() {
        assert_eq!(
            classify("10.0.0.1").unwrap(),
            Target::Address("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            classify("10.0.0.0/30").unwrap(),
            Target::Block {
                network: "10.0.0.0".parse().unwrap(),
                prefix: 30
            }
        );
        assert_eq!(
            classify("db-1.example.com").unwrap(),
            Target::Host("db-1.example.com".into())
        );
        assert!(classify("10.0.0.0/8").unwrap_err().contains("65536"));
        assert!(classify("10.0.0.0/33").is_err());
        assert!(classify("fe80::/64").is_err());
        assert!(classify("fe80::/112").is_ok());
        assert!(classify("bad host!").is_err());
        assert!(classify("").is_err());
    }

    #[test]
    fn a_refusal_quotes_the_target_cut_and_escaped_once() {
        // Found by the scan_targets fuzz target: a refusal used to quote a hostile target
        // twice with every control character spelled out, many times its own size.
        let hostile = format!("{}/1", ":\u{1d}".repeat(5_000));
        let message = classify(&hostile).unwrap_err();
        assert!(message.len() < 1_200, "{} bytes", message.len());
        assert!(!message.contains('\u{1d}'), "{message}");
        assert!(message.contains("\\u{1d}"), "{message}");
        let plain = classify("lab host").unwrap_err();
        assert_eq!(
            plain,
            "target \"lab host\" is neither an IP address, a CIDR block nor a host name"
        );
    }

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
