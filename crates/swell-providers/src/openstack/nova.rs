//! Nova (compute v2.1): servers, flavors, actions, limits and hypervisors; and how a
//! server becomes a [`ProviderInstance`].

use super::client::{CallError, Client, Retry, Service};
use super::scope;
use super::{
    META_GROUP, META_INSTANCE, META_MEMBER_PORT, META_NETWORK, META_OWNER, META_PAUSE_MODE,
    META_TENANT,
};
use crate::{ObservedState, ProviderInstance};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use swell_core::InstanceId;
use swell_core::PauseMode;

/// The parts of a Nova server the provider reads.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Server {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub(crate) addresses: BTreeMap<String, Vec<Address>>,
    #[serde(default)]
    pub(crate) fault: Option<Fault>,
    /// Visible to admins only.
    #[serde(rename = "OS-EXT-SRV-ATTR:host", default)]
    pub(crate) host: Option<String>,
    /// The project it belongs to.
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
}

/// One address of a server.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Address {
    pub(crate) addr: String,
    #[serde(rename = "OS-EXT-IPS:type", default)]
    pub(crate) kind: Option<String>,
}

/// Why a server is in ERROR.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Fault {
    #[serde(default)]
    pub(crate) message: String,
}

/// `GET /servers/{id}`'s answer.
#[derive(Deserialize)]
pub(crate) struct One {
    pub(crate) server: Server,
}

/// A page of `GET /servers/detail`.
#[derive(Deserialize)]
pub(crate) struct Many {
    #[serde(default)]
    pub(crate) servers: Vec<Server>,
}

impl Server {
    /// The Swell instance id it carries, if any.
    pub(crate) fn instance_id(&self) -> Option<&str> {
        self.metadata.get(META_INSTANCE).map(String::as_str)
    }

    /// Whether it is `project`'s.
    pub(crate) fn owned_by_project(&self, project: &str) -> bool {
        scope::owned(None, self.tenant_id.as_deref(), project)
    }

    /// How it is paused: its `swell_pause_mode` metadata (`pause` when absent or not
    /// a mode Swell knows).
    pub(crate) fn pause_mode(&self) -> PauseMode {
        self.metadata
            .get(META_PAUSE_MODE)
            .and_then(|m| PauseMode::parse(m))
            .unwrap_or_default()
    }

    /// Whether it belongs to this owner.
    pub(crate) fn owned_by(&self, owner: &str) -> bool {
        self.metadata.get(META_OWNER).is_some_and(|o| o == owner)
    }

    /// The observed state: ACTIVE and the transitional states of a live server
    /// (BUILD, REBOOT, RESIZE, MIGRATING, …) are running — a server still building is
    /// on its way to serving, and counting it as gone would make the controller
    /// replace it; PAUSED and SUSPENDED are paused, and so is a shelved server whose
    /// pause mode is `shelve` (Swell shelved it and will unshelve it); ERROR, SHUTOFF,
    /// SHELVED (otherwise: shelved behind Swell's back), DELETED, SOFT_DELETED and
    /// UNKNOWN are exited.
    pub(crate) fn state(&self) -> ObservedState {
        match self.status.as_str() {
            "PAUSED" | "SUSPENDED" => ObservedState::Paused,
            "SHELVED" | "SHELVED_OFFLOADED" if self.pause_mode() == PauseMode::Shelve => {
                ObservedState::Paused
            }
            "ERROR" | "SHUTOFF" | "SHELVED" | "SHELVED_OFFLOADED" | "DELETED" | "SOFT_DELETED"
            | "UNKNOWN" => ObservedState::Exited,
            _ => ObservedState::Running,
        }
    }

    /// The first fixed IP: on the network named in the metadata if any, else the
    /// first network in name order; IPv4 before IPv6.
    pub(crate) fn fixed_ip(&self) -> Option<IpAddr> {
        let preferred = self.metadata.get(META_NETWORK);
        let mut nets: Vec<(&String, &Vec<Address>)> = self.addresses.iter().collect();
        nets.sort_by_key(|(name, _)| Some(*name) != preferred);
        let fixed = |a: &&Address| a.kind.as_deref() != Some("floating");
        let ips: Vec<IpAddr> = nets
            .iter()
            .flat_map(|(_, addrs)| addrs.iter().filter(fixed))
            .filter_map(|a| a.addr.parse().ok())
            .collect();
        ips.iter()
            .find(|ip| ip.is_ipv4())
            .or_else(|| ips.first())
            .copied()
    }

    /// The port members serve on, from the metadata (80 when absent).
    pub(crate) fn member_port(&self) -> u16 {
        self.metadata
            .get(META_MEMBER_PORT)
            .and_then(|p| p.parse().ok())
            .unwrap_or(80)
    }

    /// Nova's fault message, or a stand-in.
    pub(crate) fn fault_message(&self) -> String {
        match &self.fault {
            Some(f) if !f.message.trim().is_empty() => f.message.trim().to_string(),
            _ => "Nova gave no fault message".into(),
        }
    }

    /// As the provider reports it; `None` for a server without Swell's metadata.
    /// `host` is the compute host when the credentials may see it (admin), else
    /// `fallback_host` (the region).
    pub(crate) fn to_instance(&self, fallback_host: &str) -> Option<ProviderInstance> {
        let instance_id = self.instance_id()?;
        Some(ProviderInstance {
            instance_id: InstanceId(instance_id.to_string()),
            tenant: self.metadata.get(META_TENANT).cloned().unwrap_or_default(),
            group: self.metadata.get(META_GROUP).cloned().unwrap_or_default(),
            native_id: self.id.clone(),
            host: self
                .host
                .clone()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| fallback_host.to_string()),
            address: self
                .fixed_ip()
                .map(|ip| SocketAddr::new(ip, self.member_port())),
            state: self.state(),
        })
    }
}

/// `GET /servers/{id}`; `None` when it is gone (404).
pub(crate) async fn get_server(c: &Client, id: &str) -> Result<Option<Server>, CallError> {
    match c.get(Service::Compute, &format!("/servers/{id}")).await {
        Ok(v) => decode::<One>("nova GET /servers/{id}", v).map(|o| Some(o.server)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// `GET /servers/detail` of `project` with a query (`name=…`), every page: only the
/// project's own servers. Nova lists the token's project unless asked for all
/// (`all_tenants`, never sent); the project is named in the query as well, and each
/// server's `tenant_id` is checked, so that two providers of two projects never see
/// (or adopt, or delete) each other's servers.
pub(crate) async fn list_servers(
    c: &Client,
    project: &str,
    query: &str,
) -> Result<Vec<Server>, CallError> {
    const PAGE: usize = 500;
    let mut out: Vec<Server> = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut q = format!("project_id={}", enc(project));
        if !query.is_empty() {
            q.push('&');
            q.push_str(query);
        }
        q.push_str(&format!("&limit={PAGE}"));
        if let Some(last) = &marker {
            q.push_str(&format!("&marker={}", enc(last)));
        }
        let v = c
            .get(Service::Compute, &format!("/servers/detail?{q}"))
            .await?;
        let page = decode::<Many>("nova GET /servers/detail", v)?.servers;
        let n = page.len();
        marker = page.last().map(|s| s.id.clone());
        out.extend(page.into_iter().filter(|s| s.owned_by_project(project)));
        if n < PAGE {
            return Ok(out);
        }
    }
}

/// `POST /servers` (sent once: a lost answer is resolved by looking the server up by
/// its metadata, never by a blind second create). Returns the new server's id.
pub(crate) async fn create_server(c: &Client, body: &Value) -> Result<String, CallError> {
    let a = c
        .call(
            Service::Compute,
            Method::POST,
            "/servers",
            Some(body),
            Retry::Once,
        )
        .await?;
    a.body
        .pointer("/server/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| decode_error("nova POST /servers", "no server.id in the answer"))
}

/// The Nova action that pauses a server in `mode`.
pub(crate) fn pause_action(mode: PauseMode) -> &'static str {
    match mode {
        PauseMode::Pause => "pause",
        PauseMode::Suspend => "suspend",
        PauseMode::Shelve => "shelve",
    }
}

/// The statuses a server paused in `mode` settles in: a shelved server is SHELVED, or
/// SHELVED_OFFLOADED once Nova took it off its host (at once with Nova's default
/// `shelved_offload_time` of 0).
pub(crate) fn paused_statuses(mode: PauseMode) -> &'static [&'static str] {
    match mode {
        PauseMode::Pause => &["PAUSED"],
        PauseMode::Suspend => &["SUSPENDED"],
        PauseMode::Shelve => &["SHELVED", "SHELVED_OFFLOADED"],
    }
}

/// The Nova action that brings a server in `status` back to ACTIVE, if there is one.
pub(crate) fn resume_action(status: &str) -> Option<&'static str> {
    match status {
        "PAUSED" => Some("unpause"),
        "SUSPENDED" => Some("resume"),
        "SHELVED" | "SHELVED_OFFLOADED" => Some("unshelve"),
        _ => None,
    }
}

/// `POST /servers/{id}/action` with `{"<action>": null}`.
pub(crate) async fn action(c: &Client, id: &str, action: &str) -> Result<(), CallError> {
    let body = serde_json::json!({ action: null });
    c.call(
        Service::Compute,
        Method::POST,
        &format!("/servers/{id}/action"),
        Some(&body),
        Retry::Safe,
    )
    .await
    .map(|_| ())
}

/// The parts of a Nova flavor the provider reads: its id (for `flavorRef`) and the size
/// of a server made from it (for the capacity cap).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct Flavor {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) vcpus: u32,
    /// MiB.
    #[serde(default)]
    pub(crate) ram: u64,
}

/// A flavor from its id (`GET /flavors/{id}`) or, failing that, its name (the list of
/// every flavor, private ones included), among the flavors `project` may use: public
/// ones, and private ones whose access list names the project (an admin's credential
/// sees every private flavor; another project's is skipped). `None` when there is no
/// such flavor.
pub(crate) async fn resolve_flavor(
    c: &Client,
    project: &str,
    flavor: &str,
) -> Result<Option<Flavor>, CallError> {
    match c
        .get(Service::Compute, &format!("/flavors/{}", enc(flavor)))
        .await
    {
        Ok(v) => {
            if let Some(f) = v.get("flavor")
                && let Some(found) = usable_flavor(c, project, f).await?
            {
                return Ok(Some(found));
            }
        }
        Err(e) if e.is_not_found() => {}
        Err(e) => return Err(e),
    }
    let v = c
        .get(Service::Compute, "/flavors/detail?is_public=None")
        .await?;
    // One odd entry in the list must not hide the flavor asked for.
    for f in v
        .get("flavors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|f| f.get("name").and_then(Value::as_str) == Some(flavor))
    {
        if let Some(found) = usable_flavor(c, project, f).await? {
            return Ok(Some(found));
        }
    }
    Ok(None)
}

/// The flavor, when it decodes and `project` may use it.
async fn usable_flavor(c: &Client, project: &str, f: &Value) -> Result<Option<Flavor>, CallError> {
    let Ok(found) = serde_json::from_value::<Flavor>(f.clone()) else {
        return Ok(None);
    };
    if scope::flavor_is_public(f) {
        return Ok(Some(found));
    }
    match c
        .get(
            Service::Compute,
            &format!("/flavors/{}/os-flavor-access", enc(&found.id)),
        )
        .await
    {
        Ok(access) => Ok(scope::flavor_access_lists(&access, project).then_some(found)),
        // Only an admin may read access lists; anyone else is shown the private flavors
        // their project has access to and no other.
        Err(e) if e.status() == Some(403) => Ok(Some(found)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether the credential's user has the key pair `name` (Nova keeps key pairs per
/// user: another user's, another project's, is not found, even by an admin who does
/// not name its user).
pub(crate) async fn has_keypair(c: &Client, name: &str) -> Result<bool, CallError> {
    match c
        .get(Service::Compute, &format!("/os-keypairs/{}", enc(name)))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

/// The absolute limits of the project (`GET /limits`).
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AbsoluteLimits {
    #[serde(default = "unlimited")]
    pub(crate) max_total_instances: i64,
    #[serde(default = "unlimited")]
    pub(crate) max_total_cores: i64,
    #[serde(default = "unlimited", rename = "maxTotalRAMSize")]
    pub(crate) max_total_ram_size: i64,
    #[serde(default)]
    pub(crate) total_instances_used: i64,
    #[serde(default)]
    pub(crate) total_cores_used: i64,
    #[serde(default, rename = "totalRAMUsed")]
    pub(crate) total_ram_used: i64,
}

fn unlimited() -> i64 {
    -1
}

/// `GET /limits`.
pub(crate) async fn limits(c: &Client) -> Result<AbsoluteLimits, CallError> {
    limits_of(c.get(Service::Compute, "/limits").await?)
}

/// The absolute limits in a `GET /limits` answer.
pub(crate) fn limits_of(v: Value) -> Result<AbsoluteLimits, CallError> {
    #[derive(Deserialize)]
    struct Body {
        limits: Limits,
    }
    #[derive(Deserialize)]
    struct Limits {
        absolute: AbsoluteLimits,
    }
    Ok(decode::<Body>("nova GET /limits", v)?.limits.absolute)
}

/// One hypervisor's totals (microversions before 2.88 carry them).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Hypervisor {
    #[serde(default)]
    pub(crate) state: Option<String>,
    #[serde(default)]
    pub(crate) status: Option<String>,
    pub(crate) vcpus: Option<f64>,
    pub(crate) vcpus_used: Option<f64>,
    pub(crate) memory_mb: Option<f64>,
    pub(crate) memory_mb_used: Option<f64>,
}

/// `GET /os-hypervisors/detail`; `None` when the credentials may not see it (403) or
/// the microversion no longer reports totals.
pub(crate) async fn hypervisors(c: &Client) -> Result<Option<Vec<Hypervisor>>, CallError> {
    match c.get(Service::Compute, "/os-hypervisors/detail").await {
        Ok(v) => hypervisors_of(v),
        Err(e) if matches!(e.status(), Some(403 | 404)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The hypervisors in a `GET /os-hypervisors/detail` answer; `None` when one lacks its
/// totals (microversion 2.88 and later).
pub(crate) fn hypervisors_of(v: Value) -> Result<Option<Vec<Hypervisor>>, CallError> {
    #[derive(Deserialize)]
    struct Body {
        hypervisors: Vec<Hypervisor>,
    }
    let list = match v.get("hypervisors") {
        None => Vec::new(),
        Some(_) => decode::<Body>("nova GET /os-hypervisors/detail", v)?.hypervisors,
    };
    if list
        .iter()
        .any(|h| h.vcpus.is_none() || h.memory_mb.is_none())
    {
        return Ok(None);
    }
    Ok(Some(list))
}

/// Percent-encodes a path segment or query value.
pub(crate) fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(call: &str, v: Value) -> Result<T, CallError> {
    decode_value(v).map_err(|e| decode_error(call, &e))
}

/// An answer as a `T`; an error names the field (`servers[0].id: invalid type: …`,
/// `server: missing field `id``), since a cloud's answer can be long.
pub(crate) fn decode_value<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, String> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            inner.to_string()
        } else {
            format!("{path}: {inner}")
        }
    })
}

pub(crate) fn decode_error(call: &str, message: &str) -> CallError {
    CallError {
        call: call.to_string(),
        kind: super::client::CallErrorKind::Decode,
        message: message.to_string(),
        tries: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(name: &str) -> Server {
        // Recorded from the fixture cloud (tests/fixtures/openstack/).
        let text = std::fs::read_to_string(format!(
            "{}/tests/fixtures/openstack/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap();
        serde_json::from_str::<One>(&text).unwrap().server
    }

    #[test]
    fn metadata_to_provider_instance() {
        let s = server("server-active.json");
        let i = s.to_instance("RegionOne").unwrap();
        assert_eq!(
            i,
            ProviderInstance {
                instance_id: InstanceId("web-0001".into()),
                tenant: "acme".into(),
                group: "web".into(),
                native_id: s.id.clone(),
                host: "fakehost1".into(),
                address: Some("10.10.0.252:8080".parse().unwrap()),
                state: ObservedState::Running,
            }
        );
        let mut s = server("server-paused.json");
        assert_eq!(s.state(), ObservedState::Paused);
        s.host = None;
        s.metadata.remove(META_MEMBER_PORT);
        let i = s.to_instance("RegionOne").unwrap();
        assert_eq!(i.host, "RegionOne");
        assert_eq!(i.address.unwrap().port(), 80);
        let e = server("server-error-novalidhost.json");
        assert_eq!(e.state(), ObservedState::Exited);
        assert_eq!(e.fault_message(), "No valid host was found.");
        assert_eq!(e.to_instance("r").unwrap().address, None);
        assert_eq!(server("server-build.json").state(), ObservedState::Running);
        s.metadata.remove(META_INSTANCE);
        assert_eq!(s.to_instance("r"), None);
        assert!(e.owned_by("rec") && !e.owned_by("other"));
    }

    /// A shelved server is paused when Swell shelved it (its pause mode is `shelve`),
    /// gone otherwise (shelved behind Swell's back, it would never serve again).
    #[test]
    fn a_shelved_server_is_paused_only_in_shelve_mode() {
        let check = |status: &str, mode: Option<&str>, expected: ObservedState| {
            let mut s = server("server-active.json");
            s.status = status.into();
            if let Some(m) = mode {
                s.metadata.insert(META_PAUSE_MODE.into(), m.into());
            }
            assert_eq!(s.state(), expected, "{status} in mode {mode:?}");
        };
        use ObservedState::{Exited, Paused, Running};
        check("ACTIVE", Some("shelve"), Running);
        check("PAUSED", None, Paused);
        check("SUSPENDED", Some("suspend"), Paused);
        check("SHELVED", Some("shelve"), Paused);
        check("SHELVED_OFFLOADED", Some("shelve"), Paused);
        check("SHELVED_OFFLOADED", None, Exited);
        check("SHELVED", Some("suspend"), Exited);
        check("SHELVED_OFFLOADED", Some("hibernate"), Exited);
        check("SHUTOFF", Some("shelve"), Exited);
        for (action, status) in [
            ("unpause", "PAUSED"),
            ("resume", "SUSPENDED"),
            ("unshelve", "SHELVED_OFFLOADED"),
        ] {
            assert_eq!(resume_action(status), Some(action));
        }
        assert_eq!(resume_action("SHUTOFF"), None);
        assert_eq!(
            paused_statuses(PauseMode::Shelve),
            ["SHELVED", "SHELVED_OFFLOADED"]
        );
        assert_eq!(pause_action(PauseMode::Suspend), "suspend");
    }

    #[test]
    fn fixed_ip_prefers_the_named_network_and_ipv4() {
        let s: Server = serde_json::from_value(serde_json::json!({
            "id": "x", "metadata": {"swell_network": "b"},
            "addresses": {
                "a": [{"addr": "10.0.0.1", "OS-EXT-IPS:type": "fixed"}],
                "b": [{"addr": "fd00::5", "OS-EXT-IPS:type": "fixed"},
                      {"addr": "10.1.0.5", "OS-EXT-IPS:type": "fixed"},
                      {"addr": "203.0.113.9", "OS-EXT-IPS:type": "floating"}]}
        }))
        .unwrap();
        assert_eq!(s.fixed_ip(), Some("10.1.0.5".parse().unwrap()));
    }

    #[test]
    fn limits_parse() {
        let v: Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/openstack/limits-quota-full.json"
        ))
        .unwrap();
        let l: AbsoluteLimits = serde_json::from_value(v["limits"]["absolute"].clone()).unwrap();
        assert_eq!((l.max_total_instances, l.total_instances_used), (1, 1));
        assert_eq!(enc("m1.tiny x/y"), "m1.tiny%20x%2Fy");
    }
}
