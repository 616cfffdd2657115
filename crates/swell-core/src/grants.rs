//! What an admin grants a tenant (DESIGN.md invariant 7): the providers its groups may
//! name, the addresses its load balancers may listen on, and the images its docker and
//! openstack templates may start. A tenant is granted nothing until an admin says so.
//!
//! Pure parsing and matching; the service layer applies them to a group document.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

/// Most entries in each of a tenant's grant lists.
pub const MAX_GRANT_ENTRIES: usize = 64;
/// Longest image pattern.
pub const MAX_IMAGE_PATTERN: usize = 255;

/// A tenant's grants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Providers its groups may name (`provider`, `fallback_providers`).
    #[serde(default)]
    pub providers: Vec<String>,
    /// Addresses its load balancers may listen on.
    #[serde(default)]
    pub listen: Vec<ListenRange>,
    /// Images its docker and openstack templates may name.
    #[serde(default)]
    pub images: Vec<ImagePattern>,
}

impl Grants {
    /// What the bootstrap `default` tenant is granted: the local `process` provider and
    /// loopback ports 1024 and up, so the Quickstart, the demo and `examples/` work.
    pub fn bootstrap() -> Grants {
        Grants {
            providers: vec!["process".into()],
            listen: vec![ListenRange {
                ip: IpAddr::from([127, 0, 0, 1]),
                first: 1024,
                last: 65535,
            }],
            images: Vec::new(),
        }
    }

    /// Whether provider `name` is granted.
    pub fn allows_provider(&self, name: &str) -> bool {
        self.providers.iter().any(|p| p == name)
    }

    /// Whether `image` matches a granted pattern.
    pub fn allows_image(&self, image: &str) -> bool {
        self.images.iter().any(|p| p.matches(image))
    }

    /// Whether `addr` falls in a granted listen range.
    pub fn allows_listen(&self, addr: &SocketAddr) -> bool {
        self.listen.iter().any(|r| r.contains(addr))
    }
}

/// Checks the shape of a grant's provider names (field `providers[i]`): each a valid
/// provider name, listed once. Whether a definition of that name exists is the
/// server's check (it knows its provider definitions).
pub fn check_providers(providers: &[String]) -> Result<(), ValidationError> {
    if providers.len() > MAX_GRANT_ENTRIES {
        return Err(ValidationError::new(
            "providers",
            format!("at most {MAX_GRANT_ENTRIES} entries"),
        ));
    }
    for (i, p) in providers.iter().enumerate() {
        crate::ids::ProviderName::new(p.as_str())
            .map_err(|e| ValidationError::new(format!("providers[{i}]"), e.rule))?;
        if providers[..i].contains(p) {
            return Err(ValidationError::new(
                format!("providers[{i}]"),
                format!("provider `{p}` is listed twice"),
            ));
        }
    }
    Ok(())
}

/// Parses a list of grant entries (`listen` or `images`), naming `field[i]` on error.
pub fn parse_list<T: FromStr<Err = String>>(
    field: &str,
    entries: &[String],
) -> Result<Vec<T>, ValidationError> {
    if entries.len() > MAX_GRANT_ENTRIES {
        return Err(ValidationError::new(
            field,
            format!("at most {MAX_GRANT_ENTRIES} entries"),
        ));
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            e.parse()
                .map_err(|rule| ValidationError::new(format!("{field}[{i}]"), rule))
        })
        .collect()
}

/// An IP address and a port range a tenant's load balancers may listen on:
/// `127.0.0.1:20000-20099`, `127.0.0.1:8080`, `[::1]:9000-9009`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenRange {
    /// The address, exactly as a group must name it.
    pub ip: IpAddr,
    /// First port of the range (>= 1).
    pub first: u16,
    /// Last port of the range (>= `first`).
    pub last: u16,
}

impl ListenRange {
    /// Whether `addr` is this range's IP with a port in the range.
    pub fn contains(&self, addr: &SocketAddr) -> bool {
        addr.ip() == self.ip && (self.first..=self.last).contains(&addr.port())
    }

    /// The range's ports.
    pub fn ports(&self) -> std::ops::RangeInclusive<u16> {
        self.first..=self.last
    }
}

impl FromStr for ListenRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` must be an IP address and a port or port range, like 127.0.0.1:20000-20099"
            )
        };
        let (host, ports) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let ip: IpAddr = host.parse().map_err(|_| bad())?;
        if ip.is_ipv6() && !s.starts_with('[') {
            return Err(bad());
        }
        let (first, last) = match ports.split_once('-') {
            Some((a, b)) => (a, b),
            None => (ports, ports),
        };
        let port = |p: &str| -> Result<u16, String> {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("`{s}`: a port must be 1 to 65535")),
                Ok(n) => Ok(n),
            }
        };
        let (first, last) = (port(first)?, port(last)?);
        if first > last {
            return Err(format!(
                "`{s}`: the range's first port ({first}) must be <= its last ({last})"
            ));
        }
        Ok(ListenRange { ip, first, last })
    }
}

impl fmt::Display for ListenRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}")?,
            IpAddr::V6(ip) => write!(f, "[{ip}]")?,
        }
        if self.first == self.last {
            write!(f, ":{}", self.first)
        } else {
            write!(f, ":{}-{}", self.first, self.last)
        }
    }
}

impl Serialize for ListenRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Whether two listen addresses cannot both be bound: the same port, and the same IP or
/// either one the unspecified address (`0.0.0.0` or `::`, which takes the port on every
/// address).
pub fn listen_overlaps(a: &SocketAddr, b: &SocketAddr) -> bool {
    a.port() == b.port() && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// An image name pattern: `*` matches any run of characters (`/` and `:` included),
/// every other character itself. `acme/*`, `swell-demo-app:*`, `cirros`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ImagePattern(String);

impl ImagePattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `image` (as the template names it) matches the pattern.
    pub fn matches(&self, image: &str) -> bool {
        glob_match(self.0.as_bytes(), image.as_bytes())
    }
}

/// Iterative wildcard match (`*` only), linear in practice: on a mismatch it backtracks
/// to just after the last `*` and lets that star take one more character.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

impl FromStr for ImagePattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() || s.len() > MAX_IMAGE_PATTERN {
            return Err(format!(
                "an image pattern must be 1 to {MAX_IMAGE_PATTERN} characters"
            ));
        }
        if let Some(c) = s.chars().find(|c| {
            !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/' | ':' | '@' | '*'))
        }) {
            return Err(format!(
                "`{s}`: `{c}` is not allowed (letters, digits, '.', '_', '-', '/', ':', '@', and '*' for any run of characters)"
            ));
        }
        Ok(ImagePattern(s.to_string()))
    }
}

impl fmt::Display for ImagePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for ImagePattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ImagePattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn listen_ranges_parse_or_name_the_rule() {
        let ok = |s: &str, ip: &str, first: u16, last: u16| {
            let r: ListenRange = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(
                r,
                ListenRange {
                    ip: ip.parse().unwrap(),
                    first,
                    last
                },
                "{s}"
            );
            assert_eq!(
                r.to_string().parse::<ListenRange>().unwrap(),
                r,
                "{s} round trip"
            );
        };
        ok("127.0.0.1:20000-20099", "127.0.0.1", 20000, 20099);
        ok("127.0.0.1:8080", "127.0.0.1", 8080, 8080);
        ok("0.0.0.0:1-65535", "0.0.0.0", 1, 65535);
        ok("[::1]:9000-9009", "::1", 9000, 9009);
        let bad = |s: &str, rule: &str| {
            let e = s.parse::<ListenRange>().unwrap_err();
            assert!(e.contains(rule), "{s}: {e}");
        };
        bad("127.0.0.1", "must be an IP address");
        bad("localhost:80", "must be an IP address");
        bad("127.0.0.1:0", "1 to 65535");
        bad("127.0.0.1:70000", "1 to 65535");
        bad("127.0.0.1:200-100", "must be <=");
        bad("127.0.0.1:+80", "must be an IP address");
        bad("127.0.0.1:80-", "must be an IP address");
        bad("::1:80", "must be an IP address");
        bad("", "must be an IP address");
    }

    #[test]
    fn a_listen_address_is_in_a_range_only_on_its_exact_ip() {
        let r: ListenRange = "127.0.0.1:20000-20099".parse().unwrap();
        for (a, inside) in [
            ("127.0.0.1:20000", true),
            ("127.0.0.1:20099", true),
            ("127.0.0.1:19999", false),
            ("127.0.0.1:20100", false),
            ("0.0.0.0:20000", false),
            ("127.0.0.2:20000", false),
            ("[::1]:20000", false),
        ] {
            assert_eq!(r.contains(&addr(a)), inside, "{a}");
        }
    }

    #[test]
    fn overlapping_listen_addresses() {
        for (a, b, overlap) in [
            ("127.0.0.1:80", "127.0.0.1:80", true),
            ("0.0.0.0:80", "127.0.0.1:80", true),
            ("127.0.0.1:80", "[::]:80", true),
            ("127.0.0.1:80", "127.0.0.2:80", false),
            ("127.0.0.1:80", "127.0.0.1:81", false),
            ("127.0.0.1:80", "[::1]:80", false),
        ] {
            assert_eq!(listen_overlaps(&addr(a), &addr(b)), overlap, "{a} {b}");
            assert_eq!(listen_overlaps(&addr(b), &addr(a)), overlap, "{b} {a}");
        }
    }

    #[test]
    fn image_patterns_match_with_star_only() {
        for (pattern, image, matches) in [
            ("acme/*", "acme/web:1.2", true),
            ("acme/*", "acme/a/b", true),
            ("acme/*", "acme", false),
            ("acme/*", "evil/acme/web", false),
            ("swell-demo-app:*", "swell-demo-app:latest", true),
            ("swell-demo-app:*", "swell-demo-app", false),
            ("cirros", "cirros", true),
            ("cirros", "cirros2", false),
            ("*", "anything/at:all", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("*-app", "x-app", true),
            ("a.b", "aXb", false),
        ] {
            let p: ImagePattern = pattern.parse().unwrap();
            assert_eq!(p.matches(image), matches, "{pattern} ~ {image}");
        }
        assert!("acme/[a-z]".parse::<ImagePattern>().is_err());
        assert!("acme/?".parse::<ImagePattern>().is_err());
        assert!("".parse::<ImagePattern>().is_err());
        assert!("a b".parse::<ImagePattern>().is_err());
    }

    #[test]
    fn provider_grants_are_valid_names_once() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(check_providers(&names(&["process", "docker-rack1"])).is_ok());
        let e = check_providers(&names(&["docker", "Qemu!"])).unwrap_err();
        assert_eq!(e.field, "providers[1]");
        let e = check_providers(&names(&["docker", "docker"])).unwrap_err();
        assert_eq!(e.field, "providers[1]");
    }

    #[test]
    fn grant_lists_name_the_bad_entry() {
        let e =
            parse_list::<ListenRange>("listen", &["127.0.0.1:80".into(), "x".into()]).unwrap_err();
        assert_eq!(e.field, "listen[1]");
        let e = parse_list::<ImagePattern>("images", &["a b".into()]).unwrap_err();
        assert_eq!(e.field, "images[0]");
    }

    #[test]
    fn grants_round_trip_as_json() {
        let g = Grants {
            providers: vec!["docker".into()],
            listen: vec!["127.0.0.1:20000-20099".parse().unwrap()],
            images: vec!["acme/*".parse().unwrap()],
        };
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(
            json,
            r#"{"providers":["docker"],"listen":["127.0.0.1:20000-20099"],"images":["acme/*"]}"#
        );
        assert_eq!(serde_json::from_str::<Grants>(&json).unwrap(), g);
        assert!(Grants::bootstrap().allows_listen(&addr("127.0.0.1:8080")));
        assert!(!Grants::bootstrap().allows_listen(&addr("127.0.0.1:80")));
        assert!(!Grants::bootstrap().allows_listen(&addr("0.0.0.0:8080")));
        assert!(Grants::bootstrap().allows_provider("process"));
        assert!(!Grants::bootstrap().allows_provider("docker"));
    }
}
