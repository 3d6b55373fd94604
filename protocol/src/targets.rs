//! Scan targets as both sides read them: an IP address, a CIDR block (at most [`MAX_HOSTS`]
//! addresses) or a host name.
//!
//! The console checks a site's targets with [`classify`] and [`count`] when the site is
//! created, so a target the engine would refuse (`10.0.0.0/8`, `0.0.0.0/0`, `bad host!`) is a
//! 400 naming the field at once, not a failed scan later. The engine expands them with the same
//! rules. Pure functions: no resolution, no I/O.

use std::net::IpAddr;

use crate::text::printable;

/// At most this many hosts per job (a /16 of IPv4, a /112 of IPv6).
pub const MAX_HOSTS: usize = 65_536;

/// How much of a refused target its error message quotes. Targets come from an API client or a
/// console, and the refusal goes back to it and into logs, so the quote is cut and escaped.
const QUOTED_TARGET_CHARS: usize = 80;

/// A syntactically classified target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Address(IpAddr),
    Block { network: IpAddr, prefix: u8 },
    Host(String),
}

impl Target {
    /// How many addresses the target stands for at most (a host name counts as one).
    pub fn addresses(&self) -> u64 {
        match self {
            Target::Address(_) | Target::Host(_) => 1,
            Target::Block { network, prefix } => {
                let max = if network.is_ipv4() { 32 } else { 128 };
                let bits = u32::from(max - (*prefix).min(max));
                1u64.checked_shl(bits).unwrap_or(u64::MAX)
            }
        }
    }
}

/// A target as quoted in a refusal: cut, escaped, in quotes.
fn quoted(t: &str) -> String {
    format!("\"{}\"", printable(t, QUOTED_TARGET_CHARS))
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

/// Classifies every target and checks that together they stand for at most [`MAX_HOSTS`]
/// addresses (counting overlaps twice, and each host name as one); returns that count.
pub fn count(targets: &[String]) -> Result<u64, String> {
    let mut total: u64 = 0;
    for t in targets {
        total = total.saturating_add(classify(t)?.addresses());
    }
    if total > MAX_HOSTS as u64 {
        return Err(format!(
            "the targets hold more than {MAX_HOSTS} addresses together"
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_targets_with_the_engines_bounds() {
        assert_eq!(
            classify("10.0.0.1").unwrap(),
            Target::Address("10.0.0.1".parse().unwrap())
        );
        assert_eq!(classify("10.0.0.0/30").unwrap().addresses(), 4);
        assert_eq!(classify("10.0.0.0/16").unwrap().addresses(), 65_536);
        assert_eq!(classify("fe80::/112").unwrap().addresses(), 65_536);
        assert_eq!(
            classify("db-1.example.com").unwrap(),
            Target::Host("db-1.example.com".into())
        );
        for refused in [
            "10.0.0.0/8",
            "0.0.0.0/0",
            "::/0",
            "fe80::/64",
            "10.0.0.0/33",
            "bad host!",
            "",
        ] {
            assert!(classify(refused).is_err(), "{refused:?}");
        }
    }

    #[test]
    fn targets_together_are_bounded_and_refusals_are_cut() {
        assert_eq!(count(&["10.0.0.0/24".into(), "h".into()]).unwrap(), 257);
        assert!(count(&["10.0.0.0/16".into(), "10.1.0.0/31".into()]).is_err());
        let hostile = format!("{}/1", ":\u{1d}".repeat(5_000));
        let message = classify(&hostile).unwrap_err();
        assert!(message.len() < 1_200, "{} bytes", message.len());
        assert!(!message.contains('\u{1d}'), "{message}");
    }
}
