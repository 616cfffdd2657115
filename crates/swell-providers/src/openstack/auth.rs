//! Keystone v3: the token request for each kind of credential, the token's expiry and
//! the service catalog (endpoint by service type, region and interface).

use super::config::{AppCredentialRef, AuthConfig, NameOrId};
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::SystemTime;

/// Keystone's `/v3` URL from a configured `auth_url` (`http://h:5000`, `…/v3`, `…/v3/`).
pub(crate) fn identity_url(auth_url: &str) -> String {
    let base = auth_url.trim_end_matches('/');
    if base.ends_with("/v3") {
        base.to_string()
    } else {
        format!("{base}/v3")
    }
}

/// The body of `POST /v3/auth/tokens` for the configured credentials.
pub(crate) fn token_request(auth: &AuthConfig) -> Value {
    fn user(user: &NameOrId, domain: &NameOrId) -> Value {
        match user {
            NameOrId::Id(id) => json!({ "id": id }),
            NameOrId::Name(name) => json!({ "name": name, "domain": domain.to_json() }),
        }
    }
    match auth {
        AuthConfig::Password {
            user: u,
            password,
            user_domain,
            project,
            project_domain,
            ..
        } => {
            let mut u = user(u, user_domain);
            u["password"] = json!(password.expose());
            let project = match project {
                NameOrId::Id(id) => json!({ "id": id }),
                NameOrId::Name(name) => json!({ "name": name, "domain": project_domain.to_json() }),
            };
            json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": u}},
                "scope": {"project": project}
            }})
        }
        AuthConfig::ApplicationCredential {
            credential, secret, ..
        } => {
            let mut cred = match credential {
                AppCredentialRef::Id(id) => json!({ "id": id }),
                AppCredentialRef::Name {
                    name,
                    user: u,
                    user_domain,
                } => json!({ "name": name, "user": user(u, user_domain) }),
            };
            cred["secret"] = json!(secret.expose());
            json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": cred
            }}})
        }
    }
}

/// Who is asking, for error messages (never the secret).
pub(crate) fn describe(auth: &AuthConfig) -> String {
    fn n(x: &NameOrId) -> String {
        match x {
            NameOrId::Name(n) => n.clone(),
            NameOrId::Id(i) => format!("id {i}"),
        }
    }
    match auth {
        AuthConfig::Password { user, project, .. } => {
            format!("user {}, project {}", n(user), n(project))
        }
        AuthConfig::ApplicationCredential { credential, .. } => match credential {
            AppCredentialRef::Id(id) => format!("application credential {id}"),
            AppCredentialRef::Name { name, user, .. } => {
                format!("application credential {name} of user {}", n(user))
            }
        },
    }
}

/// The parts of a token response the provider uses.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenBody {
    pub(crate) token: TokenInfo,
}

/// `token` in Keystone's answer.
#[derive(Debug, Deserialize)]
pub(crate) struct TokenInfo {
    pub(crate) expires_at: String,
    #[serde(default)]
    pub(crate) catalog: Vec<CatalogService>,
    pub(crate) project: Option<IdName>,
    #[serde(default)]
    pub(crate) roles: Vec<IdName>,
}

/// An object with an id and a name.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IdName {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
}

/// One service of the catalog.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct CatalogService {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) endpoints: Vec<Endpoint>,
}

/// One endpoint of a service.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Endpoint {
    pub(crate) interface: String,
    #[serde(default)]
    pub(crate) region_id: Option<String>,
    #[serde(default)]
    pub(crate) region: Option<String>,
    pub(crate) url: String,
}

/// The service catalog of a token.
#[derive(Debug, Clone, Default)]
pub(crate) struct Catalog {
    pub(crate) services: Vec<CatalogService>,
}

impl Catalog {
    /// The URL (without a trailing `/`) of the first endpoint of a service of type
    /// `kind` with this interface, in `region` when one is given.
    pub(crate) fn endpoint(
        &self,
        kind: &str,
        region: Option<&str>,
        interface: &str,
    ) -> Option<String> {
        self.services
            .iter()
            .filter(|s| s.kind == kind)
            .flat_map(|s| s.endpoints.iter())
            .find(|e| {
                e.interface == interface
                    && region.is_none_or(|r| {
                        e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                    })
            })
            .map(|e| e.url.trim_end_matches('/').to_string())
    }

    /// Whether the catalog has a service of this type at all.
    pub(crate) fn has(&self, kind: &str) -> bool {
        self.services.iter().any(|s| s.kind == kind)
    }

    /// The regions and interfaces offered for `kind`, for an error message.
    pub(crate) fn offered(&self, kind: &str) -> String {
        let v: Vec<String> = self
            .services
            .iter()
            .filter(|s| s.kind == kind)
            .flat_map(|s| s.endpoints.iter())
            .map(|e| {
                format!(
                    "{} in {}",
                    e.interface,
                    e.region_id
                        .as_deref()
                        .or(e.region.as_deref())
                        .unwrap_or("no region")
                )
            })
            .collect();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// Parses Keystone's `expires_at` (`2026-11-23T15:01:00.000000Z`).
pub(crate) fn parse_expiry(text: &str) -> Option<SystemTime> {
    let ts: jiff::Timestamp = text.parse().ok()?;
    Some(SystemTime::from(ts))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openstack::config::Secret;
    use std::time::{Duration, UNIX_EPOCH};

    fn catalog() -> Catalog {
        // Recorded from the fixture cloud (tests/fixtures/openstack/token.json).
        let body: TokenBody =
            serde_json::from_str(include_str!("../../tests/fixtures/openstack/token.json"))
                .unwrap();
        Catalog {
            services: body.token.catalog,
        }
    }

    #[test]
    fn catalog_lookup_by_region_and_interface() {
        let c = catalog();
        let check = |kind: &str, region: Option<&str>, interface: &str, expect: Option<&str>| {
            assert_eq!(
                c.endpoint(kind, region, interface).as_deref(),
                expect,
                "{kind} {region:?} {interface}"
            );
        };
        check(
            "compute",
            Some("RegionOne"),
            "public",
            Some("http://127.0.0.1:8774/v2.1"),
        );
        check(
            "compute",
            None,
            "internal",
            Some("http://127.0.0.1:8774/v2.1"),
        );
        check("compute", Some("RegionTwo"), "public", None);
        check("compute", Some("RegionOne"), "admin", None);
        check(
            "identity",
            Some("RegionOne"),
            "admin",
            Some("http://127.0.0.1:5000/v3"),
        );
        check(
            "load-balancer",
            Some("RegionOne"),
            "public",
            Some("http://127.0.0.1:9876"),
        );
        check("network", None, "public", Some("http://127.0.0.1:9696"));
        check("volumev3", None, "public", None);
        assert!(c.has("load-balancer"));
        assert!(!c.has("object-store"));
        assert_eq!(
            c.offered("compute"),
            "internal in RegionOne, public in RegionOne"
        );
    }

    #[test]
    fn token_requests() {
        let pw = AuthConfig::password("http://k:5000", "admin", "s3cret", "admin");
        assert_eq!(
            token_request(&pw),
            json!({"auth": {"identity": {"methods": ["password"], "password": {"user": {
                "name": "admin", "domain": {"id": "default"}, "password": "s3cret"}}},
                "scope": {"project": {"name": "admin", "domain": {"id": "default"}}}}})
        );
        let by_id = AuthConfig::Password {
            auth_url: "http://k:5000/v3".into(),
            user: NameOrId::Id("u1".into()),
            password: Secret::new("p"),
            user_domain: NameOrId::Name("Ignored".into()),
            project: NameOrId::Id("p1".into()),
            project_domain: NameOrId::Name("Ignored".into()),
        };
        assert_eq!(
            token_request(&by_id)["auth"]["scope"],
            json!({"project": {"id": "p1"}})
        );
        assert_eq!(
            token_request(&by_id)["auth"]["identity"]["password"]["user"],
            json!({"id": "u1", "password": "p"})
        );
        let app = AuthConfig::ApplicationCredential {
            auth_url: "http://k:5000/v3".into(),
            credential: AppCredentialRef::Name {
                name: "swell".into(),
                user: NameOrId::Name("ops".into()),
                user_domain: NameOrId::Name("Default".into()),
            },
            secret: Secret::new("x"),
        };
        assert_eq!(
            token_request(&app),
            json!({"auth": {"identity": {"methods": ["application_credential"],
                "application_credential": {"name": "swell", "secret": "x",
                    "user": {"name": "ops", "domain": {"name": "Default"}}}}}})
        );
        assert_eq!(describe(&app), "application credential swell of user ops");
        assert!(!format!("{app:?}").contains('x') || !format!("{app:?}").contains("\"x\""));
    }

    #[test]
    fn identity_urls_and_expiry() {
        assert_eq!(identity_url("http://k:5000"), "http://k:5000/v3");
        assert_eq!(identity_url("http://k:5000/v3/"), "http://k:5000/v3");
        assert_eq!(identity_url("http://k/identity/v3"), "http://k/identity/v3");
        assert_eq!(
            parse_expiry("2026-11-23T15:01:00.000000Z"),
            Some(UNIX_EPOCH + Duration::from_secs(1_795_446_060))
        );
        assert_eq!(parse_expiry("tomorrow"), None);
    }
}
