//! Octavia (load-balancer v2): the group's pool, its members, and waiting for the load
//! balancer to leave its PENDING_* states after each change.

use super::client::{CallError, CallErrorKind, Client, Retry, Service};
use super::neutron::looks_like_uuid;
use super::nova::{decode, decode_error, enc};
use super::scope;
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

/// A pool.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Pool {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) loadbalancers: Vec<IdOnly>,
    #[serde(default)]
    pub(crate) project_id: Option<String>,
    #[serde(default)]
    pub(crate) tenant_id: Option<String>,
}

/// `{"id": …}`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct IdOnly {
    pub(crate) id: String,
}

/// A member.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Member {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) provisioning_status: String,
}

impl Pool {
    /// Whether it is `project`'s own.
    pub(crate) fn owned_by(&self, project: &str) -> bool {
        scope::owned(
            self.project_id.as_deref(),
            self.tenant_id.as_deref(),
            project,
        )
    }

    /// Its load balancer (a pool belongs to one).
    pub(crate) fn loadbalancer(&self) -> Option<&str> {
        self.loadbalancers.first().map(|l| l.id.as_str())
    }
}

/// The project's pools matching an id or a name: another project's pool is never among
/// them, whoever's credential asks (by name the query names the project, and every
/// answer is checked, by id too).
pub(crate) async fn find_pool(
    c: &Client,
    project: &str,
    name_or_id: &str,
) -> Result<Vec<Pool>, CallError> {
    if looks_like_uuid(name_or_id) {
        match get_pool(c, name_or_id).await {
            Ok(Some(p)) if p.owned_by(project) => return Ok(vec![p]),
            Ok(_) => {}
            // Octavia refuses a non-admin another project's pool (403).
            Err(e) if e.status() == Some(403) => {}
            Err(e) => return Err(e),
        }
    }
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        pools: Vec<Pool>,
    }
    let v = c
        .get(
            Service::LoadBalancer,
            &format!(
                "/lbaas/pools?name={}&project_id={}",
                enc(name_or_id),
                enc(project)
            ),
        )
        .await?;
    Ok(decode::<Many>("octavia GET /lbaas/pools", v)?
        .pools
        .into_iter()
        .filter(|p| p.name == name_or_id && p.owned_by(project))
        .collect())
}

/// The project's own pool by id; `None` when it is gone or not the project's (a pool id
/// read back from a server's metadata, which the project's users can edit, never leads
/// to another project's pool).
pub(crate) async fn own_pool(
    c: &Client,
    project: &str,
    id: &str,
) -> Result<Option<Pool>, CallError> {
    Ok(get_pool(c, id).await?.filter(|p| p.owned_by(project)))
}

/// A pool by id; `None` when it is gone.
pub(crate) async fn get_pool(c: &Client, id: &str) -> Result<Option<Pool>, CallError> {
    #[derive(Deserialize)]
    struct One {
        pool: Pool,
    }
    match c
        .get(Service::LoadBalancer, &format!("/lbaas/pools/{}", enc(id)))
        .await
    {
        Ok(v) => Ok(Some(
            decode::<One>("octavia GET /lbaas/pools/{id}", v)?.pool,
        )),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The pool's members named `name` (Swell names each member after its instance id).
pub(crate) async fn members_named(
    c: &Client,
    pool: &str,
    name: &str,
) -> Result<Vec<Member>, CallError> {
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        members: Vec<Member>,
    }
    let v = c
        .get(
            Service::LoadBalancer,
            &format!("/lbaas/pools/{pool}/members?name={}", enc(name)),
        )
        .await?;
    Ok(decode::<Many>("octavia GET /lbaas/pools/{id}/members", v)?
        .members
        .into_iter()
        .filter(|m| m.name == name)
        .collect())
}

/// Adds a member.
pub(crate) async fn add_member(
    c: &Client,
    pool: &str,
    name: &str,
    address: &str,
    port: u16,
    subnet_id: Option<&str>,
) -> Result<Member, CallError> {
    let mut m = json!({"name": name, "address": address, "protocol_port": port});
    if let Some(s) = subnet_id {
        m["subnet_id"] = json!(s);
    }
    #[derive(Deserialize)]
    struct One {
        member: Member,
    }
    // Safe to retry: the same address and port twice is refused (409 duplicate).
    let a = c
        .call(
            Service::LoadBalancer,
            Method::POST,
            &format!("/lbaas/pools/{pool}/members"),
            Some(&json!({ "member": m })),
            Retry::Safe,
        )
        .await?;
    Ok(decode::<One>("octavia POST /lbaas/pools/{id}/members", a.body)?.member)
}

/// Sets a member's weight (0: no new connections).
pub(crate) async fn set_weight(
    c: &Client,
    pool: &str,
    member: &str,
    weight: u32,
) -> Result<(), CallError> {
    c.call(
        Service::LoadBalancer,
        Method::PUT,
        &format!("/lbaas/pools/{pool}/members/{member}"),
        Some(&json!({"member": {"weight": weight}})),
        Retry::Safe,
    )
    .await
    .map(|_| ())
}

/// Removes a member (gone already counts as removed).
pub(crate) async fn remove_member(c: &Client, pool: &str, member: &str) -> Result<(), CallError> {
    c.delete(
        Service::LoadBalancer,
        &format!("/lbaas/pools/{pool}/members/{member}"),
    )
    .await
}

/// Waits until the load balancer's provisioning status is ACTIVE (it is PENDING_UPDATE
/// while a change is applied and refuses further changes until then).
pub(crate) async fn wait_lb_active(
    c: &Client,
    lb: &str,
    timeout: Duration,
) -> Result<(), CallError> {
    let deadline = Instant::now() + timeout;
    let call = "octavia GET /lbaas/loadbalancers/{id}";
    loop {
        let v = c
            .get(Service::LoadBalancer, &format!("/lbaas/loadbalancers/{lb}"))
            .await?;
        let status = v
            .pointer("/loadbalancer/provisioning_status")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        match status.as_str() {
            "ACTIVE" => return Ok(()),
            "ERROR" => {
                return Err(decode_error(
                    call,
                    &format!("load balancer {lb} is in provisioning status ERROR"),
                ));
            }
            _ if Instant::now() >= deadline => {
                return Err(CallError::new(
                    call,
                    CallErrorKind::Transport,
                    format!(
                        "load balancer {lb} still {status} after {} s",
                        timeout.as_secs()
                    ),
                    1,
                ));
            }
            _ => tokio::time::sleep(c.tuning.poll_interval).await,
        }
    }
}
