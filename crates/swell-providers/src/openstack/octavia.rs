//! Octavia (load-balancer v2): the group's pool, its members, and waiting for the load
//! balancer to leave its PENDING_* states after each change.

use super::client::{CallError, CallErrorKind, Client, Retry, Service};
use super::neutron::looks_like_uuid;
use super::nova::{decode, decode_error, enc};
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
    pub(crate) loadbalancers: Vec<IdOnly>,
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
    /// Its load balancer (a pool belongs to one).
    pub(crate) fn loadbalancer(&self) -> Option<&str> {
        self.loadbalancers.first().map(|l| l.id.as_str())
    }
}

/// The pools matching an id or a name.
pub(crate) async fn find_pool(c: &Client, name_or_id: &str) -> Result<Vec<Pool>, CallError> {
    if looks_like_uuid(name_or_id)
        && let Some(p) = get_pool(c, name_or_id).await?
    {
        return Ok(vec![p]);
    }
    #[derive(Deserialize)]
    struct Many {
        #[serde(default)]
        pools: Vec<Pool>,
    }
    let v = c
        .get(
            Service::LoadBalancer,
            &format!("/lbaas/pools?name={}", enc(name_or_id)),
        )
        .await?;
    Ok(decode::<Many>("octavia GET /lbaas/pools", v)?.pools)
}

/// A pool by id; `None` when it is gone.
pub(crate) async fn get_pool(c: &Client, id: &str) -> Result<Option<Pool>, CallError> {
    #[derive(Deserialize)]
    struct One {
        pool: Pool,
    }
    match c
        .get(Service::LoadBalancer, &format!("/lbaas/pools/{id}"))
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
