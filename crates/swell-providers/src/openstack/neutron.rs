//! Neutron (network v2.0): networks by name, a server's ports, floating IPs, and the
//! group's own security group with its rules.

use super::client::{CallError, Client, Retry, Service};
use super::nova::{decode, enc};
use super::scope::{self, NetworkUse};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use swell_core::group::SecurityGroupRule;

/// A network.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Network {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) project_id: Option<String>,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
    /// Shared with the asking project (with all, or with it by RBAC).
    #[serde(default)]
    pub(crate) shared: Option<bool>,
    #[serde(default, rename = "router:external")]
    pub(crate) external: Option<bool>,
}

impl Network {
    /// Whether `project` may use it for `use_` (see [`scope`]).
    pub(crate) fn usable(&self, project: &str, use_: NetworkUse) -> bool {
        scope::network_usable(
            scope::owned(
                self.project_id.as_deref(),
                self.tenant_id.as_deref(),
                project,
            ),
            self.shared == Some(true),
            self.external == Some(true),
            use_,
        )
    }
}

/// A port.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Port {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) fixed_ips: Vec<FixedIp>,
}

/// One fixed IP of a port.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FixedIp {
    pub(crate) subnet_id: String,
    pub(crate) ip_address: String,
}

/// A floating IP.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct FloatingIp {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) floating_ip_address: String,
    /// The port it is associated with; `None` when it dangles.
    #[serde(default)]
    pub(crate) port_id: Option<String>,
}

/// How a network, image, pool… was named in a template: by id or by name.
pub(crate) fn looks_like_uuid(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit())
}

/// The networks `project` may use for `use_` matching an id or a name: none, one, or
/// several when a name is ambiguous (the caller decides). Another project's network is
/// not there, whoever's credential asks (an admin's sees them all): by name the queries
/// ask only for the project's own, shared or external networks, and every answer is
/// checked again ([`Network::usable`]), by id too.
pub(crate) async fn find_network(
    c: &Client,
    project: &str,
    name_or_id: &str,
    use_: NetworkUse,
) -> Result<Vec<Network>, CallError> {
    #[derive(Deserialize)]
    struct One {
        network: Network,
    }
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        networks: Vec<Network>,
    }
    if looks_like_uuid(name_or_id) {
        match c
            .get(Service::Network, &format!("/networks/{}", enc(name_or_id)))
            .await
        {
            Ok(v) => {
                let n = decode::<One>("neutron GET /networks/{id}", v)?.network;
                if n.usable(project, use_) {
                    return Ok(vec![n]);
                }
            }
            // Neutron hides other projects' networks from a non-admin (404).
            Err(e) if e.is_not_found() || e.status() == Some(403) => {}
            Err(e) => return Err(e),
        }
    }
    let name = enc(name_or_id);
    let queries = match use_ {
        NetworkUse::Attach => vec![
            format!("/networks?name={name}&project_id={}", enc(project)),
            format!("/networks?name={name}&shared=true"),
        ],
        NetworkUse::FloatingIp => vec![format!("/networks?name={name}&router%3Aexternal=true")],
    };
    let mut found: Vec<Network> = Vec::new();
    for q in queries {
        let v = c.get(Service::Network, &q).await?;
        for n in decode::<Many>("neutron GET /networks", v)?.networks {
            if n.name == name_or_id
                && n.usable(project, use_)
                && !found.iter().any(|f| f.id == n.id)
            {
                found.push(n);
            }
        }
    }
    Ok(found)
}

/// The ports of a server.
pub(crate) async fn ports_of(c: &Client, server_id: &str) -> Result<Vec<Port>, CallError> {
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        ports: Vec<Port>,
    }
    let v = c
        .get(
            Service::Network,
            &format!("/ports?device_id={}", enc(server_id)),
        )
        .await?;
    Ok(decode::<Many>("neutron GET /ports", v)?.ports)
}

/// The floating IPs associated with a port.
pub(crate) async fn floating_ips_of(
    c: &Client,
    port_id: &str,
) -> Result<Vec<FloatingIp>, CallError> {
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        floatingips: Vec<FloatingIp>,
    }
    let v = c
        .get(
            Service::Network,
            &format!("/floatingips?port_id={}", enc(port_id)),
        )
        .await?;
    Ok(decode::<Many>("neutron GET /floatingips", v)?.floatingips)
}

/// The project's floating IPs with this description.
pub(crate) async fn floating_ips_described(
    c: &Client,
    project_id: &str,
    description: &str,
) -> Result<Vec<FloatingIp>, CallError> {
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        floatingips: Vec<FloatingIp>,
    }
    let v = c
        .get(
            Service::Network,
            &format!(
                "/floatingips?project_id={}&description={}",
                enc(project_id),
                enc(description)
            ),
        )
        .await?;
    Ok(decode::<Many>("neutron GET /floatingips", v)?.floatingips)
}

/// Allocates a floating IP on `network_id` and associates it with the port.
pub(crate) async fn create_floating_ip(
    c: &Client,
    network_id: &str,
    port_id: &str,
    fixed_ip: Option<&str>,
    description: &str,
) -> Result<FloatingIp, CallError> {
    let mut fip = json!({
        "floating_network_id": network_id,
        "port_id": port_id,
        "description": description,
    });
    if let Some(ip) = fixed_ip {
        fip["fixed_ip_address"] = json!(ip);
    }
    // Safe to retry: a second association of the same port and fixed IP is refused.
    let a = c
        .call(
            Service::Network,
            Method::POST,
            "/floatingips",
            Some(&json!({ "floatingip": fip })),
            Retry::Safe,
        )
        .await?;
    #[derive(Deserialize)]
    struct One {
        floatingip: FloatingIp,
    }
    Ok(decode::<One>("neutron POST /floatingips", a.body)?.floatingip)
}

/// Releases a floating IP (gone already counts as released).
pub(crate) async fn delete_floating_ip(c: &Client, id: &str) -> Result<(), CallError> {
    c.delete(Service::Network, &format!("/floatingips/{id}"))
        .await
}

/// A security group with its rules.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SecurityGroup {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) description: Option<String>,
    #[serde(default)]
    pub(crate) project_id: Option<String>,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
    #[serde(default)]
    pub(crate) security_group_rules: Vec<Value>,
}

impl SecurityGroup {
    /// Whether it is `project`'s own.
    pub(crate) fn owned_by(&self, project: &str) -> bool {
        scope::owned(
            self.project_id.as_deref(),
            self.tenant_id.as_deref(),
            project,
        )
    }

    /// Whether it is the group security group of Swell's `owner` (see
    /// [`scope::security_group_is_ours`]).
    pub(crate) fn is_swells(&self, owner: &str) -> bool {
        scope::security_group_is_ours(self.description.as_deref().unwrap_or(""), owner)
    }
}

/// The project's security groups matching an id or a name (a template's
/// `security_groups`): another project's group is never among them, by name or by id.
pub(crate) async fn find_security_group(
    c: &Client,
    project: &str,
    name_or_id: &str,
) -> Result<Vec<SecurityGroup>, CallError> {
    #[derive(Deserialize)]
    struct One {
        security_group: SecurityGroup,
    }
    if looks_like_uuid(name_or_id) {
        match c
            .get(
                Service::Network,
                &format!("/security-groups/{}", enc(name_or_id)),
            )
            .await
        {
            Ok(v) => {
                let sg = decode::<One>("neutron GET /security-groups/{id}", v)?.security_group;
                if sg.owned_by(project) {
                    return Ok(vec![sg]);
                }
            }
            Err(e) if e.is_not_found() || e.status() == Some(403) => {}
            Err(e) => return Err(e),
        }
    }
    security_groups_named(c, project, name_or_id).await
}

/// The project's security groups named `name` (Neutron does not keep names unique):
/// asked with the project's id, and each answer checked to be the project's.
pub(crate) async fn security_groups_named(
    c: &Client,
    project_id: &str,
    name: &str,
) -> Result<Vec<SecurityGroup>, CallError> {
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        security_groups: Vec<SecurityGroup>,
    }
    let v = c
        .get(
            Service::Network,
            &format!(
                "/security-groups?name={}&project_id={}",
                enc(name),
                enc(project_id)
            ),
        )
        .await?;
    Ok(decode::<Many>("neutron GET /security-groups", v)?
        .security_groups
        .into_iter()
        .filter(|sg| sg.name == name && sg.owned_by(project_id))
        .collect())
}

/// Deletes a security group (gone already counts as deleted). Neutron refuses one a
/// port still has with 409 `SecurityGroupInUse`, which comes back as the error.
pub(crate) async fn delete_security_group(c: &Client, id: &str) -> Result<(), CallError> {
    c.delete(Service::Network, &format!("/security-groups/{id}"))
        .await
}

/// Finds the project's security group `name` made by Swell's `owner`, or creates it
/// (in the token's project, described as `owner`'s); then adds each rule it lacks.
/// Returns its id. A group of the same name that is not the project's own, or not
/// `owner`'s, is never taken.
pub(crate) async fn ensure_security_group(
    c: &Client,
    project_id: &str,
    owner: &str,
    name: &str,
    rules: &[SecurityGroupRule],
) -> Result<String, CallError> {
    #[derive(Deserialize)]
    struct One {
        security_group: SecurityGroup,
    }
    let found = security_groups_named(c, project_id, name).await?;
    let sg = match found.into_iter().find(|sg| sg.is_swells(owner)) {
        Some(sg) => sg,
        None => {
            let body = json!({"security_group": {
                "name": name,
                "description": scope::security_group_description(owner),
            }});
            let a = c
                .call(
                    Service::Network,
                    Method::POST,
                    "/security-groups",
                    Some(&body),
                    Retry::Once,
                )
                .await?;
            decode::<One>("neutron POST /security-groups", a.body)?.security_group
        }
    };
    for rule in rules {
        let want = rule_body(&sg.id, rule);
        if sg.security_group_rules.iter().any(|r| same_rule(r, &want)) {
            continue;
        }
        match c
            .call(
                Service::Network,
                Method::POST,
                "/security-group-rules",
                Some(&json!({ "security_group_rule": want })),
                Retry::Safe,
            )
            .await
        {
            Ok(_) => {}
            // SecurityGroupRuleExists: someone added it meanwhile.
            Err(e) if e.status() == Some(409) && !e.is_quota() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sg.id)
}

/// Neutron's body for a template rule.
pub(crate) fn rule_body(sg_id: &str, r: &SecurityGroupRule) -> Value {
    let ethertype = if r.remote_ip_prefix.contains(':') {
        "IPv6"
    } else {
        "IPv4"
    };
    let (min, max) = match r.port_range_min {
        Some(lo) => (Some(lo), Some(r.port_range_max.unwrap_or(lo))),
        None => (None, None),
    };
    json!({
        "security_group_id": sg_id,
        "direction": r.direction,
        "ethertype": ethertype,
        "protocol": r.protocol,
        "port_range_min": min,
        "port_range_max": max,
        "remote_ip_prefix": r.remote_ip_prefix,
    })
}

fn same_rule(have: &Value, want: &Value) -> bool {
    [
        "direction",
        "ethertype",
        "protocol",
        "port_range_min",
        "port_range_max",
        "remote_ip_prefix",
    ]
    .iter()
    .all(|k| have.get(*k).unwrap_or(&Value::Null) == want.get(*k).unwrap_or(&Value::Null))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_and_ids() {
        let r = SecurityGroupRule {
            direction: "ingress".into(),
            protocol: "tcp".into(),
            port_range_min: Some(22),
            port_range_max: None,
            remote_ip_prefix: "0.0.0.0/0".into(),
        };
        let b = rule_body("sg", &r);
        assert_eq!(b["port_range_max"], json!(22));
        assert_eq!(b["ethertype"], json!("IPv4"));
        // As Neutron returns an existing rule (extra fields, same values).
        let have = json!({"id": "r1", "direction": "ingress", "ethertype": "IPv4",
            "protocol": "tcp", "port_range_min": 22, "port_range_max": 22,
            "remote_ip_prefix": "0.0.0.0/0", "remote_group_id": null});
        assert!(same_rule(&have, &b));
        let icmp = SecurityGroupRule {
            protocol: "icmp".into(),
            port_range_min: None,
            remote_ip_prefix: "fd00::/8".into(),
            ..r
        };
        let b = rule_body("sg", &icmp);
        assert_eq!(b["port_range_min"], Value::Null);
        assert_eq!(b["ethertype"], json!("IPv6"));
        assert!(!same_rule(&have, &b));
        assert!(looks_like_uuid("2403977b-4fd0-47c5-b7ab-e33e3519a258"));
        assert!(looks_like_uuid("2403977b4fd047c5b7abe33e3519a258"));
        assert!(!looks_like_uuid("private"));
    }
}
