//! Fuzzing bodies for the providers' parsers of outside input: what OpenStack's Keystone,
//! Nova, Neutron and Octavia answer, a `clouds.yaml`, and what a Docker engine answers.
//! Shared by the `fuzz/` targets (cargo-fuzz, nightly) and the stable replay test
//! `tests/fuzz_corpus.rs`. Not part of the API.
//!
//! A cloud or an engine is outside Swell's control (a proxy in between, a buggy or
//! hostile one): whatever it answers must become a value or an error naming the field,
//! never a panic, and what Swell makes of an accepted answer must keep its properties.

use crate::docker::{
    self, DockerConfig, DockerProvider, EngineConfig, LABEL_INSTANCE, LABEL_OWNER,
};
use crate::openstack::client::{CallErrorKind, error_message, session_from_answer};
use crate::openstack::nova::{self, Flavor, Server, decode_value};
use crate::openstack::{
    AuthConfig, META_INSTANCE, META_MEMBER_PORT, META_NETWORK, OpenStackConfig,
    OpenStackConfigError, auth, capacity_from, neutron, octavia,
};
use crate::{ObservedState, ProviderInstance};
use bollard::models::{ContainerInspectResponse, ContainerStatsResponse, ContainerSummary};
use serde::Deserialize;
use serde_json::{Value, json};
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use swell_core::fuzz_targets::path_resolves;

/// 2026-12-02T08:00:00Z, when the fuzzed token is received.
fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_796_198_400)
}

/// Keystone's `POST /v3/auth/tokens` answer (`session_from_answer`): an accepted token
/// is renewed at or before it expires, after `now` when it has not expired yet, and no
/// earlier than the renewal margin before; its catalog finds an endpoint exactly when it
/// has one of that type, interface and region, without a trailing `/`. A rejected answer
/// gets an error naming the field, or says the token has no project.
pub fn keystone_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let auth = AuthConfig::password("http://keystone:5000", "swell", "secret", "lab");
    let margin = Duration::from_secs(120);
    let session = match session_from_answer(text, "tok".into(), now(), margin, &auth) {
        Ok(s) => s,
        Err((CallErrorKind::Decode, msg)) => {
            if let Ok(doc) = serde_json::from_str::<Value>(text) {
                check_decode_error(&msg, &doc);
            }
            return;
        }
        Err((CallErrorKind::Auth, msg)) => {
            assert!(msg.contains("not scoped to a project"), "{msg}");
            let doc: Value = serde_json::from_str(text).expect("it decoded");
            assert!(at(at(&doc, "token", 0), "project", 2).is_null(), "{msg}");
            return;
        }
        Err((kind, msg)) => panic!("{kind:?}: {msg}"),
    };
    let doc: Value = serde_json::from_str(text).expect("it decoded");
    // Fields by name, or by position where the answer gave an array for the object.
    let token = at(&doc, "token", 0);
    let expires =
        auth::parse_expiry(at(token, "expires_at", 0).as_str().expect("decoded")).expect("decoded");
    assert!(session.renew_at <= expires);
    assert!(session.renew_at >= expires - margin);
    if expires > now() {
        assert!(session.renew_at > now(), "{text}");
    }
    assert_eq!(
        Some(session.project_id.as_str()),
        at(at(token, "project", 2), "id", 0).as_str()
    );
    let admin = items(at(token, "roles", 3))
        .iter()
        .any(|r| at(r, "name", 1) == "admin");
    assert_eq!(session.is_admin, admin);

    let catalog = &session.catalog;
    for kind in catalog.services.iter().map(|s| s.kind.as_str()) {
        assert!(catalog.has(kind));
        assert!(!catalog.offered(kind).is_empty());
        for interface in ["public", "internal", "admin"] {
            for region in [None, Some("RegionOne")] {
                let offers: Vec<&auth::Endpoint> = catalog
                    .services
                    .iter()
                    .filter(|s| s.kind == kind)
                    .flat_map(|s| &s.endpoints)
                    .filter(|e| {
                        e.interface == interface
                            && region.is_none_or(|r| {
                                e.region_id.as_deref() == Some(r) || e.region.as_deref() == Some(r)
                            })
                    })
                    .collect();
                match catalog.endpoint(kind, region, interface) {
                    Some(url) => {
                        assert!(!url.ends_with('/'), "{url}");
                        assert_eq!(
                            Some(url.as_str()),
                            offers.first().map(|e| e.url.trim_end_matches('/'))
                        );
                    }
                    None => assert!(offers.is_empty(), "{kind} {interface} {region:?}"),
                }
            }
        }
    }
}

/// Nova, Neutron and Octavia answers, each of the shapes the provider reads decoded from
/// the same JSON: servers (`GET /servers/{id}`, `/servers/detail`) and the instance each
/// becomes, limits and hypervisors and the capacity they leave, a flavor, networks,
/// ports, floating IPs, security groups, pools and members; and the message of an error
/// answer (`error_message`, any text). Accepted answers keep the ids they carried and
/// give instances whose address is one of the server's fixed IPs; the capacity is never
/// negative or above the project's room; rejected ones name the field.
pub fn openstack_answer(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    check_error_message(text);
    let Ok(doc) = serde_json::from_str::<Value>(text) else {
        return;
    };

    match decode_value::<nova::One>(doc.clone()) {
        Ok(one) => check_server(&one.server, at(&doc, "server", 0)),
        Err(msg) => check_decode_error(&msg, &doc),
    }
    match decode_value::<nova::Many>(doc.clone()) {
        Ok(many) => {
            for (i, s) in many.servers.iter().enumerate() {
                check_server(s, &items(at(&doc, "servers", 0))[i]);
            }
        }
        Err(msg) => check_decode_error(&msg, &doc),
    }
    if let Some(f) = doc.get("flavor") {
        match decode_value::<Flavor>(f.clone()) {
            Ok(flavor) => assert_eq!(Some(flavor.id.as_str()), at(f, "id", 0).as_str()),
            Err(msg) => check_decode_error(&msg, f),
        }
    }
    check_capacity(&doc);

    /// The ids of the items of `doc[key]` (each item's first field).
    fn ids<'a>(doc: &'a Value, key: &str) -> Vec<&'a str> {
        items(at(doc, key, 0))
            .iter()
            .map(|x| at(x, "id", 0).as_str().expect("decoded"))
            .collect()
    }
    macro_rules! list {
        ($key:ident: $item:ty) => {{
            #[derive(Deserialize)]
            struct Many {
                #[serde(default)]
                $key: Vec<$item>,
            }
            match decode_value::<Many>(doc.clone()) {
                Ok(m) => {
                    let got: Vec<&str> = m.$key.iter().map(|x| x.id.as_str()).collect();
                    assert_eq!(got, ids(&doc, stringify!($key)));
                    Some(m.$key)
                }
                Err(msg) => {
                    check_decode_error(&msg, &doc);
                    None
                }
            }
        }};
    }
    list!(networks: neutron::Network);
    if let Some(ports) = list!(ports: neutron::Port) {
        for (p, v) in ports.iter().zip(items(at(&doc, "ports", 0))) {
            assert_eq!(p.fixed_ips.len(), items(at(v, "fixed_ips", 1)).len());
        }
    }
    list!(floatingips: neutron::FloatingIp);
    list!(security_groups: neutron::SecurityGroup);
    if let Some(pools) = list!(pools: octavia::Pool) {
        for (p, v) in pools.iter().zip(items(at(&doc, "pools", 0))) {
            let first = items(at(v, "loadbalancers", 1))
                .first()
                .map(|lb| at(lb, "id", 0));
            assert_eq!(p.loadbalancer(), first.and_then(Value::as_str));
        }
    }
    list!(members: octavia::Member);
}

/// Field `key` of a decoded object, or item `index` of an array that stood for it (serde
/// reads a struct from an array of its fields in order, as the cloud may answer).
fn at<'a>(v: &'a Value, key: &str, index: usize) -> &'a Value {
    match v {
        Value::Array(a) => a.get(index).unwrap_or(&Value::Null),
        _ => &v[key],
    }
}

/// The items of a decoded list (empty for a missing one).
fn items(v: &Value) -> &[Value] {
    v.as_array().map_or(&[], Vec::as_slice)
}

/// A server as the provider reports it: the instance its metadata names, the fixed
/// address (never a floating one; IPv4 first) on the member port, the observed state.
fn check_server(s: &Server, v: &Value) {
    assert_eq!(Some(s.id.as_str()), at(v, "id", 0).as_str());
    let Some(i) = s.to_instance("RegionOne") else {
        assert!(!s.metadata.contains_key(META_INSTANCE));
        return;
    };
    assert_eq!(
        Some(i.instance_id.as_str()),
        s.metadata.get(META_INSTANCE).map(String::as_str)
    );
    assert_eq!(i.native_id, s.id);
    assert!(!i.host.is_empty());
    assert_eq!(i.state, s.state());
    assert_eq!(
        s.status == "PAUSED" || s.status == "SUSPENDED",
        i.state == ObservedState::Paused
    );
    let fixed: Vec<IpAddr> = s
        .addresses
        .values()
        .flatten()
        .filter(|a| a.kind.as_deref() != Some("floating"))
        .filter_map(|a| a.addr.parse().ok())
        .collect();
    match i.address {
        None => assert!(fixed.is_empty(), "{fixed:?}"),
        Some(addr) => {
            assert!(fixed.contains(&addr.ip()), "{addr} not in {fixed:?}");
            assert!(addr.is_ipv4() || fixed.iter().all(IpAddr::is_ipv6));
            let port = s
                .metadata
                .get(META_MEMBER_PORT)
                .and_then(|p| p.parse().ok());
            assert_eq!(addr.port(), port.unwrap_or(80));
            // On the network the metadata names, when it has a fixed IP of that family.
            if let Some(net) = s.metadata.get(META_NETWORK)
                && let Some(addrs) = s.addresses.get(net)
            {
                let on_net = addrs
                    .iter()
                    .filter(|a| a.kind.as_deref() != Some("floating"))
                    .filter_map(|a| a.addr.parse::<IpAddr>().ok())
                    .any(|ip| ip.is_ipv4() == addr.is_ipv4());
                if on_net {
                    assert!(
                        addrs.iter().any(|a| a.addr.parse() == Ok(addr.ip())),
                        "{addr}"
                    );
                }
            }
        }
    }
}

/// `GET /limits` and `GET /os-hypervisors/detail` answers, and the capacity they leave:
/// exactly the project's room (maximum less use, at least 0, a negative maximum being
/// unlimited), and with hypervisors never more than it, never negative.
fn check_capacity(doc: &Value) {
    let limits = match nova::limits_of(doc.clone()) {
        Ok(l) => Some(l),
        Err(e) => {
            check_decode_error(&e.message, doc);
            None
        }
    };
    let hypervisors = match nova::hypervisors_of(doc.clone()) {
        Ok(h) => h,
        Err(e) => {
            check_decode_error(&e.message, doc);
            None
        }
    };
    let l = limits.unwrap_or_default();
    let room =
        |max: i64, used: i64| (max >= 0).then(|| (i128::from(max) - i128::from(used)).max(0));
    for (cpu_oc, mem_oc) in [(16.0, 1.5), (1.0, 1.0), (1e300, 1e300)] {
        let cap = capacity_from(&l, hypervisors.as_deref(), cpu_oc, mem_oc);
        assert_eq!(
            cap.instances.map(i128::from),
            room(l.max_total_instances, l.total_instances_used)
                .map(|n| n.min(i128::from(u32::MAX))),
            "{l:?}"
        );
        let cores = room(l.max_total_cores, l.total_cores_used);
        let ram = room(l.max_total_ram_size, l.total_ram_used);
        if let Some(v) = cap.vcpus {
            assert!(v >= 0.0, "{cap:?}");
            if let Some(q) = cores {
                assert!(v <= q as f64, "{cap:?} {l:?}");
            }
        } else {
            assert!(cores.is_none() && hypervisors.is_none());
        }
        if let Some(m) = cap.memory_mb {
            if let Some(q) = ram {
                assert!(i128::from(m) <= q, "{cap:?} {l:?}");
            }
        } else {
            assert!(ram.is_none() && hypervisors.is_none());
        }
    }
}

/// The message Swell shows for a cloud's error answer: never empty; from a JSON answer
/// the cloud's own text, else the text without its tags, on one line, at most 300
/// characters and an ellipsis.
fn check_error_message(text: &str) {
    let (msg, _) = error_message(text);
    assert!(!msg.is_empty());
    if serde_json::from_str::<Value>(text.trim()).is_err() {
        assert!(msg.chars().count() <= 301, "{msg}");
        assert!(!msg.contains(['<', '>', '\n']), "{msg:?}");
        assert_eq!(msg.trim(), msg);
    }
}

/// A decode error names the field: it starts with a place in the answer
/// (`servers[0].id: invalid type …`), or says which field is missing, or the answer
/// itself is not the object expected.
fn check_decode_error(msg: &str, doc: &Value) {
    assert!(!msg.is_empty());
    let named = msg
        .match_indices(": ")
        .any(|(at, _)| path_resolves(doc, &msg[..at]));
    assert!(
        named || msg.contains("missing field `") || !doc.is_object(),
        "{msg:?} names no field of {doc}"
    );
}

/// `clouds.yaml` (`OpenStackConfig::from_clouds_yaml_text`, cloud `lab`), with a
/// `secure.yaml` after a `# secure.yaml` line if any. An accepted config passes
/// `validate`, and written back as a clouds.yaml it reads back the same; a rejected one
/// names the field (`clouds.lab.auth.password`) or is a parse error of the file.
pub fn clouds_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (clouds, secure) = match text.split_once("\n# secure.yaml\n") {
        Some((c, s)) => (c, Some(s)),
        None => (text, None),
    };
    let read = |clouds: &str, secure: Option<&str>| {
        OpenStackConfig::from_clouds_yaml_text(
            "srv",
            Path::new("/etc/openstack/clouds.yaml"),
            clouds,
            secure.map(|s| (Path::new("/etc/openstack/secure.yaml"), s)),
            "lab",
        )
    };
    let config = match read(clouds, secure) {
        Ok(c) => c,
        Err(
            OpenStackConfigError::Missing { field, rule }
            | OpenStackConfigError::Invalid { field, rule },
        ) => {
            assert!(
                field == "clouds.lab" || field.starts_with("clouds.lab."),
                "{field}"
            );
            assert!(!rule.is_empty());
            return;
        }
        Err(OpenStackConfigError::Parse { path, message }) => {
            assert!(path.ends_with("clouds.yaml") || path.ends_with("secure.yaml"));
            assert!(!message.is_empty());
            return;
        }
        Err(e) => panic!("{e}"),
    };
    config
        .validate()
        .unwrap_or_else(|e| panic!("an accepted clouds.yaml is invalid: {e}"));
    let written = clouds_yaml_of(&config);
    let back = read(&written, None)
        .unwrap_or_else(|e| panic!("the written clouds.yaml does not read back: {e}\n{written}"));
    assert_eq!(back, config, "{written}");
}

/// `config` as a clouds.yaml (JSON, which YAML reads too).
fn clouds_yaml_of(config: &OpenStackConfig) -> String {
    use crate::openstack::{AppCredentialRef, NameOrId};
    let mut auth = serde_json::Map::new();
    let mut put = |k: &str, v: &str| {
        auth.insert(k.into(), json!(v));
    };
    let named = |put: &mut dyn FnMut(&str, &str), prefix: &str, x: &NameOrId| match x {
        NameOrId::Name(n) => put(&format!("{prefix}name"), n),
        NameOrId::Id(i) => put(&format!("{prefix}id"), i),
    };
    let auth_type = match &config.auth {
        AuthConfig::Password {
            auth_url,
            user,
            password,
            user_domain,
            project,
            project_domain,
        } => {
            put("auth_url", auth_url);
            put("password", password.expose());
            named(&mut put, "user", user);
            named(&mut put, "user_domain_", user_domain);
            named(&mut put, "project_", project);
            named(&mut put, "project_domain_", project_domain);
            "password"
        }
        AuthConfig::ApplicationCredential {
            auth_url,
            credential,
            secret,
        } => {
            put("auth_url", auth_url);
            put("application_credential_secret", secret.expose());
            match credential {
                AppCredentialRef::Id(id) => put("application_credential_id", id),
                AppCredentialRef::Name {
                    name,
                    user,
                    user_domain,
                } => {
                    put("application_credential_name", name);
                    named(&mut put, "user", user);
                    named(&mut put, "user_domain_", user_domain);
                }
            }
            "v3applicationcredential"
        }
    };
    // `user` + `name` is `username`; `user` + `id` is `user_id`.
    if let Some(v) = auth.remove("username") {
        auth.insert("username".into(), v);
    }
    if let Some(v) = auth.remove("userid") {
        auth.insert("user_id".into(), v);
    }
    let mut entry = json!({
        "auth_type": auth_type,
        "auth": auth,
        "interface": config.interface,
        "compute_api_version": config.compute_microversion,
    });
    if let Some(r) = &config.region {
        entry["region_name"] = json!(r);
    }
    json!({ "clouds": { "lab": entry } }).to_string()
}

/// The Docker provider on one engine, never contacted.
fn docker() -> &'static DockerProvider {
    static P: OnceLock<DockerProvider> = OnceLock::new();
    P.get_or_init(|| {
        DockerProvider::new(DockerConfig::new("srv", vec![EngineConfig::local("e1")]))
            .expect("a valid config")
    })
}

/// Docker Engine API answers as bollard decodes them (JSON): a container list, a
/// container's inspection, a stats reading; and what the provider makes of them. A
/// container becomes an instance exactly when it carries Swell's labels (and, inspected,
/// this owner's), with the published port of the container port; a stats reading gives
/// CPU and memory that are finite and never negative; the load the running containers'
/// labels say is committed is finite and never negative.
pub fn docker_answer(data: &[u8]) {
    let p = docker();
    let engine = &p.engines[0];
    if let Ok(list) = serde_json::from_slice::<Vec<ContainerSummary>>(data) {
        for s in &list {
            let labels = s.labels.as_ref();
            match p.summary_instance(engine, s) {
                Some(i) => {
                    check_container(&i, labels.and_then(|l| l.get(LABEL_INSTANCE)));
                    let published = s
                        .ports
                        .iter()
                        .flatten()
                        .any(|port| port.public_port == i.address.map(|a| a.port()));
                    assert!(i.address.is_none() || published);
                }
                None => assert!(labels.and_then(|l| l.get(LABEL_INSTANCE)).is_none()),
            }
        }
        let allocated = docker::allocated(&list);
        for v in [allocated.vcpus, allocated.memory_mb] {
            assert!(v.is_finite() && v >= 0.0, "{allocated:?}");
        }
    }
    if let Ok(c) = serde_json::from_slice::<ContainerInspectResponse>(data) {
        let labels = c.config.as_ref().and_then(|c| c.labels.as_ref());
        match p.inspect_instance(engine, &c) {
            Some(i) => {
                let labels = labels.expect("an instance has labels");
                assert_eq!(labels.get(LABEL_OWNER).map(String::as_str), Some("srv"));
                check_container(&i, labels.get(LABEL_INSTANCE));
            }
            None => assert!(
                labels.is_none_or(|l| l.get(LABEL_OWNER).map(String::as_str) != Some("srv")
                    || l.get(LABEL_INSTANCE).is_none())
            ),
        }
    }
    if let Ok(stats) = serde_json::from_slice::<ContainerStatsResponse>(data) {
        for limit in [0.0, 0.5, 2.0, 1e-300, f64::NAN, f64::INFINITY, -1.0] {
            let r = docker::stats::reading(&stats, limit);
            for v in [r.metrics.cpu_percent, r.metrics.memory_mb, r.cores] {
                assert!(v.is_finite() && v >= 0.0, "{r:?} with limit {limit}");
            }
        }
    }
}

/// An instance from a container: its id is the label's, on engine `e1`.
fn check_container(i: &ProviderInstance, label: Option<&String>) {
    assert_eq!(Some(i.instance_id.as_str()), label.map(String::as_str));
    assert_eq!(i.host, "e1");
}

/// `prometheus::parse_answer` (a Prometheus server's `/api/v1/query` answer, for the
/// `prometheus` metric source): an accepted answer gives a finite value over at least
/// one series, and the same bytes parse the same way again; an error message is on one
/// line.
pub fn prometheus_answer(data: &[u8]) {
    match crate::prometheus::parse_answer(data) {
        Ok((value, series)) => {
            assert!(value.is_finite() && series >= 1, "{value} over {series}");
            assert_eq!(crate::prometheus::parse_answer(data), Ok((value, series)));
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.contains('\n'), "{text:?}");
        }
    }
}
