//! Which URLs a group's `prometheus` metric source may name: the server calls them, so
//! a tenant choosing any URL would make the server a request-forgery tool (its network
//! position, not the tenant's). An admin lists the allowed prefixes with
//! `swell serve --allow-metric-url PREFIX`; without any, only loopback hosts are
//! allowed (a Prometheus on the server's own host, as in the docs' examples).

use swell_core::{GroupSpec, MetricSourceSpec, ValidationError};

/// A URL cut into what the allow-list compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parts {
    scheme: String,
    host: String,
    port: u16,
    path: String,
}

fn parts(url: &str) -> Result<Parts, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("`{url}` must start with http:// or https://"))?;
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => 80,
        "https" => 443,
        _ => return Err(format!("`{url}` must start with http:// or https://")),
    };
    // What a URL library would rewrite (`\` as `/`, dot segments, encoded dots) could
    // step out of an allowed path: refused rather than normalised here.
    if rest.contains('\\') {
        return Err(format!("`{url}` must not contain `\\`"));
    }
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(format!("`{url}` must not hold a user name or password"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("`{url}`: unclosed `[` in the host"))?;
        (format!("[{}]", host.to_ascii_lowercase()), after)
    } else {
        match authority.rfind(':') {
            Some(i) => (authority[..i].to_ascii_lowercase(), &authority[i..]),
            None => (authority.to_ascii_lowercase(), ""),
        }
    };
    let port = match port.strip_prefix(':') {
        None if port.is_empty() => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("`{url}`: the port must be a number 0-65535"))?,
        None => return Err(format!("`{url}`: unexpected `{port}` after the host")),
    };
    if host.is_empty() || host == "[]" {
        return Err(format!("`{url}` has no host"));
    }
    if path.split('/').any(|seg| seg == "." || seg == "..")
        || path.to_ascii_lowercase().contains("%2e")
    {
        return Err(format!(
            "`{url}` must not contain `.` or `..` path segments"
        ));
    }
    let path = path.trim_end_matches('/').to_string();
    Ok(Parts {
        scheme,
        host,
        port,
        path,
    })
}

fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The metric URL allow-list of a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetricUrlPolicy {
    /// `None`: loopback hosts only.
    allowed: Option<Vec<Parts>>,
}

impl MetricUrlPolicy {
    /// Only loopback hosts (`localhost`, `127.0.0.0/8`, `[::1]`), any port: the default.
    pub fn loopback_only() -> Self {
        MetricUrlPolicy { allowed: None }
    }

    /// URLs under these prefixes only (`http://prom.internal:9090`,
    /// `https://metrics.example.com/prometheus`): same scheme, host and port, and a
    /// path at or below the prefix's (by whole segments). An empty list is the
    /// default, loopback only.
    pub fn prefixes<S: AsRef<str>>(prefixes: &[S]) -> Result<Self, String> {
        if prefixes.is_empty() {
            return Ok(Self::loopback_only());
        }
        let allowed = prefixes
            .iter()
            .map(|p| parts(p.as_ref()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MetricUrlPolicy {
            allowed: Some(allowed),
        })
    }

    /// Whether the server may call `url`; the error is the rule broken.
    pub fn check(&self, url: &str) -> Result<(), String> {
        let u = parts(url)?;
        match &self.allowed {
            None if is_loopback(&u.host) => Ok(()),
            None => Err(format!(
                "`{url}` is not allowed: this server lets metric sources call only loopback hosts (an admin allows more with `swell serve --allow-metric-url PREFIX`)"
            )),
            Some(list) => {
                let ok = list.iter().any(|p| {
                    p.scheme == u.scheme
                        && p.host == u.host
                        && p.port == u.port
                        && (u.path == p.path
                            || u.path
                                .strip_prefix(&p.path)
                                .is_some_and(|rest| rest.starts_with('/')))
                });
                if ok {
                    Ok(())
                } else {
                    Err(format!(
                        "`{url}` is not under any URL this server allows for metric sources (`swell serve --allow-metric-url`)"
                    ))
                }
            }
        }
    }

    /// Checks every `prometheus` source of `spec`: the error names
    /// `metric_sources[i].url`.
    pub fn check_group(&self, spec: &GroupSpec) -> Result<(), ValidationError> {
        for (i, source) in spec.metric_sources.iter().enumerate() {
            if let MetricSourceSpec::Prometheus(p) = source {
                self.check(&p.url).map_err(|rule| {
                    ValidationError::new(format!("metric_sources[{i}].url"), rule)
                })?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_by_default() {
        let p = MetricUrlPolicy::loopback_only();
        for ok in [
            "http://127.0.0.1:9090",
            "http://127.1.2.3:9090/",
            "http://localhost:9090",
            "https://[::1]:9090/prom",
            "HTTP://LOCALHOST",
        ] {
            assert_eq!(p.check(ok), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1:9090",
            "http://169.254.169.254/latest",
            "http://127.0.0.1@evil.example:80",
            "http://localhost.evil.example",
            "http://[::ffff:10.0.0.1]:9090",
            "ftp://127.0.0.1",
            "http://",
        ] {
            assert!(p.check(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_match_scheme_host_port_and_whole_segments() {
        let p = MetricUrlPolicy::prefixes(&[
            "http://prom.internal:9090",
            "https://metrics.example.com/prometheus/",
        ])
        .unwrap();
        let check = |url: &str, want: bool| assert_eq!(p.check(url).is_ok(), want, "{url}");
        check("http://prom.internal:9090", true);
        check("http://PROM.internal:9090/", true);
        check("http://prom.internal:9090/sub/path", true);
        check("http://prom.internal:9091", false);
        check("http://prom.internal", false);
        check("https://prom.internal:9090", false);
        check("http://prom.internal.evil.example:9090", false);
        check("http://prom.internal:9090@evil.example", false);
        check("https://metrics.example.com/prometheus", true);
        check("https://metrics.example.com:443/prometheus/x", true);
        check("https://metrics.example.com/prometheus-other", false);
        check("https://metrics.example.com/", false);
        check("https://metrics.example.com/prometheus/../admin", false);
        check("https://metrics.example.com/prometheus/%2e%2e/admin", false);
        check("https://metrics.example.com/prometheus\\..\\admin", false);
        check("http://127.0.0.1:9090", false);
        assert!(MetricUrlPolicy::prefixes(&["prom.internal"]).is_err());
        assert!(MetricUrlPolicy::prefixes(&["http://h:99999"]).is_err());
        assert_eq!(
            MetricUrlPolicy::prefixes::<&str>(&[]).unwrap(),
            MetricUrlPolicy::loopback_only()
        );
    }
}
