//! The client's address: the TCP peer, or, when the peer is a trusted proxy
//! (`swell serve --trusted-proxy CIDR_OR_IP`), the address the proxies recorded in
//! `X-Forwarded-For`. Rate limits and the audit log key on it.

use std::net::IpAddr;

/// An address range: `10.0.0.0/8`, `fd00::/8`, or one address (`192.0.2.7`, `::1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ADDR` or `ADDR/PREFIX`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{text}` is not an IP address or CIDR range"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{text}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the range (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: `peer`, unless `peer` is in `trusted`; then the rightmost
/// address of `X-Forwarded-For` (`forwarded`, every header value in order) that is not
/// itself a trusted proxy (the leftmost when all are). A malformed entry stops the walk
/// there (the proxy chain is not trusted past it) and the last good address is used.
pub fn client_addr(peer: IpAddr, forwarded: &[&str], trusted: &[Cidr]) -> IpAddr {
    let peer = canonical(peer);
    if !trusted.iter().any(|c| c.contains(peer)) {
        return peer;
    }
    let hops: Vec<&str> = forwarded
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in hops.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else {
            break;
        };
        client = canonical(ip);
        if !trusted.iter().any(|c| c.contains(client)) {
            break;
        }
    }
    client
}

/// The key a rate limit uses for an address: IPv6 clients by their /64 (one host
/// usually holds a whole /64, so single addresses are free to it), IPv4 as is.
pub fn limit_key(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let net = u128::from(v6) & (u128::MAX << 64);
            format!("{}/64", std::net::Ipv6Addr::from(net))
        }
        v4 => v4.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ranges() {
        let check = |range: &str, addr: &str, want: bool| {
            assert_eq!(
                Cidr::parse(range).unwrap().contains(ip(addr)),
                want,
                "{range} ∋ {addr}"
            );
        };
        check("10.0.0.0/8", "10.1.2.3", true);
        check("10.0.0.0/8", "11.0.0.1", false);
        check("192.0.2.7", "192.0.2.7", true);
        check("192.0.2.7", "192.0.2.8", false);
        check("0.0.0.0/0", "203.0.113.9", true);
        check("::1", "::1", true);
        check("fd00::/8", "fd12::1", true);
        check("fd00::/8", "fe80::1", false);
        check("127.0.0.1", "::ffff:127.0.0.1", true);
        check("10.0.0.0/8", "::1", false);
        for bad in ["", "x", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "1.2.3.4/"] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn forwarded_only_from_trusted_proxies() {
        let trusted = [Cidr::parse("10.0.0.0/8").unwrap()];
        let check = |peer: &str, xff: &[&str], want: &str| {
            assert_eq!(
                client_addr(ip(peer), xff, &trusted),
                ip(want),
                "{peer} {xff:?}"
            );
        };
        // Not a proxy: the header is the client's own claim and is ignored.
        check("203.0.113.5", &["198.51.100.1"], "203.0.113.5");
        // A trusted proxy: the address it saw.
        check("10.0.0.2", &["198.51.100.1"], "198.51.100.1");
        // A client's forged entry is left of what the proxy appended.
        check("10.0.0.2", &["6.6.6.6, 198.51.100.1"], "198.51.100.1");
        // Proxy chains: skip trusted hops, right to left; several headers in order.
        check("10.0.0.2", &["198.51.100.1, 10.0.0.9"], "198.51.100.1");
        check("10.0.0.2", &["198.51.100.1", "10.0.0.9"], "198.51.100.1");
        check("10.0.0.2", &["10.0.0.8, 10.0.0.9"], "10.0.0.8");
        // No or a malformed header: the proxy itself, or the last good hop.
        check("10.0.0.2", &[], "10.0.0.2");
        check("10.0.0.2", &["garbage"], "10.0.0.2");
        check("10.0.0.2", &["198.51.100.1, junk, 10.0.0.9"], "10.0.0.9");
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), "2001:db8:1:2::/64");
        assert_eq!(
            limit_key(ip("2001:db8:1:2:bbbb::9")),
            limit_key(ip("2001:db8:1:2:aaaa::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), "192.0.2.1");
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), "192.0.2.1");
    }
}
