//! `swell provider …`: the providers an admin defines by name (`docker-rack1`,
//! `openstack-prod`), operator-wide or private to one tenant. Secrets are read from
//! files, never from the command line (`ps` would show them), and never printed.

use crate::client::Client;
use crate::output::{Output, Table, done, or_dash, print};
use anyhow::{Context, Result, bail};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use swell_api as api;

/// `swell provider …`.
#[derive(clap::Subcommand)]
pub enum ProviderCmd {
    /// Define a provider (admin): `--kind docker --engine NAME=ENDPOINT …`,
    /// `--kind openstack --auth-url … --application-credential-id …
    /// --application-credential-secret-file FILE`, `--kind qemu --host NAME=DIR …`,
    /// or `--kind process`.
    Create {
        /// Its name (what groups' `provider` and tenants' grants name).
        name: String,
        /// process, docker, openstack or qemu.
        #[arg(long)]
        kind: String,
        /// Make it private to this tenant (e.g. the tenant's own OpenStack project);
        /// without it the provider is operator-wide and granted to tenants by name.
        #[arg(long)]
        tenant: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// List the providers (admin: every one; others: the ones their tenant may use).
    List,
    /// Show one provider (its credentials only as `set`).
    #[command(visible_alias = "get")]
    Show {
        /// Its name.
        name: String,
    },
    /// Replace a provider's settings (the flags given) or its secret.
    Update {
        /// Its name.
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show a qemu provider's hypervisor hosts (admin): up or down, VMs, capacity,
    /// allocation and load, read now.
    Hosts {
        /// Its name.
        name: String,
    },
    /// Delete a provider (refused while a group uses it).
    Delete {
        /// Its name.
        name: String,
    },
}

/// A definition's settings, as flags.
#[derive(clap::Args, Default)]
pub struct ConfigArgs {
    /// The whole `config` as a JSON or YAML file (the flags below add to it).
    #[arg(long)]
    config_file: Option<PathBuf>,
    /// docker: an engine, `NAME=ENDPOINT` (`local=unix:///var/run/docker.sock`,
    /// `h2=tcp://10.0.0.2:2376` with --tls-*); repeatable.
    #[arg(long = "engine", value_name = "NAME=ENDPOINT")]
    engines: Vec<String>,
    /// docker: the CA certificate of the tcp:// engines (a file on the server's host).
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    tls_ca: Option<PathBuf>,
    /// docker: the client certificate for the tcp:// engines (on the server's host).
    #[arg(long, requires_all = ["tls_ca", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// docker: the client key for the tcp:// engines (on the server's host).
    #[arg(long, requires_all = ["tls_ca", "tls_cert"])]
    tls_key: Option<PathBuf>,
    /// qemu: a hypervisor host, `NAME=STATE_DIR` (an absolute path on the server's
    /// host, its own) or `NAME=ssh://USER@HOST[:PORT]/STATE_DIR[?address=IP]` (a
    /// remote host, its state directory there); repeatable.
    #[arg(long = "host", value_name = "NAME=DIR")]
    hosts: Vec<String>,
    /// qemu: the private key (a file on the server's host) for the ssh:// hosts.
    #[arg(long, value_name = "FILE")]
    ssh_identity: Option<PathBuf>,
    /// qemu: a known_hosts file (on the server's host) with the ssh:// hosts' keys,
    /// checked strictly; without it each key is pinned on first contact.
    #[arg(long, value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// qemu: where the VM images are (on the server's host).
    #[arg(long, value_name = "DIR")]
    images_dir: Option<PathBuf>,
    /// qemu: the accelerator, auto, kvm or tcg.
    #[arg(long)]
    accel: Option<String>,
    /// qemu: hosts whose load is below this percentage are preferred (default 70).
    #[arg(long, value_name = "PERCENT")]
    prefer_below_percent: Option<f64>,
    /// qemu: a host whose load is above this percentage is never chosen.
    #[arg(long, value_name = "PERCENT")]
    never_above_percent: Option<f64>,
    /// openstack: Keystone's URL (`http://controller:5000/v3`).
    #[arg(long)]
    auth_url: Option<String>,
    /// openstack: the application credential's id.
    #[arg(long)]
    application_credential_id: Option<String>,
    /// openstack: the application credential's name (with --user-name or --user-id).
    #[arg(long)]
    application_credential_name: Option<String>,
    /// openstack: a file holding the application credential's secret (`-`: standard input).
    #[arg(long, conflicts_with = "password_file")]
    application_credential_secret_file: Option<PathBuf>,
    /// openstack: the user, by name (password auth).
    #[arg(long)]
    user_name: Option<String>,
    /// openstack: the user, by id.
    #[arg(long)]
    user_id: Option<String>,
    /// openstack: a file holding the user's password (`-`: standard input).
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// openstack: the project, by name (password auth).
    #[arg(long)]
    project_name: Option<String>,
    /// openstack: the project, by id.
    #[arg(long)]
    project_id: Option<String>,
    /// openstack: the region.
    #[arg(long)]
    region: Option<String>,
    /// openstack: the endpoint interface (public, internal or admin).
    #[arg(long)]
    interface: Option<String>,
}

impl ConfigArgs {
    /// The `config` document the flags give (`None`: none given), and the secret.
    fn body(&self) -> Result<(Option<Value>, Option<String>)> {
        let mut config = match &self.config_file {
            Some(path) => Some(read_config(path)?),
            None => None,
        };
        let mut set = |k: &str, v: Value| {
            let c = config.get_or_insert_with(|| json!({}));
            if let Some(obj) = c.as_object_mut() {
                obj.insert(k.to_string(), v);
            }
        };
        if !self.engines.is_empty() {
            let tls = self
                .tls_ca
                .as_ref()
                .map(|ca| json!({"ca": ca, "cert": self.tls_cert, "key": self.tls_key}));
            let mut engines = Vec::new();
            for spec in &self.engines {
                let (name, endpoint) = spec.split_once('=').with_context(|| {
                    format!("--engine `{spec}` must be NAME=ENDPOINT, e.g. local=unix:///var/run/docker.sock")
                })?;
                let mut e = json!({"name": name, "endpoint": endpoint});
                if let Some(t) = tls.as_ref().filter(|_| endpoint.starts_with("tcp://")) {
                    e["tls"] = t.clone();
                }
                engines.push(e);
            }
            set("engines", Value::Array(engines));
        }
        if !self.hosts.is_empty() {
            let mut hosts = Vec::new();
            for spec in &self.hosts {
                let mut host: swell_providers::qemu::hosts::QemuHost = spec
                    .parse()
                    .map_err(|rule| anyhow::anyhow!("--host `{spec}` {rule}"))?;
                if host.ssh.is_some() {
                    host.identity_file = self.ssh_identity.clone();
                    host.known_hosts = self.ssh_known_hosts.clone();
                }
                hosts.push(serde_json::to_value(&host)?);
            }
            set("hosts", Value::Array(hosts));
        }
        if let Some(dir) = &self.images_dir {
            set("images_dir", json!(dir));
        }
        for (key, value) in [
            ("prefer_below_percent", self.prefer_below_percent),
            ("never_above_percent", self.never_above_percent),
        ] {
            if let Some(v) = value {
                set(key, json!(v));
            }
        }
        for (key, value) in [
            ("accel", &self.accel),
            ("auth_url", &self.auth_url),
            ("application_credential_id", &self.application_credential_id),
            (
                "application_credential_name",
                &self.application_credential_name,
            ),
            ("user_name", &self.user_name),
            ("user_id", &self.user_id),
            ("project_name", &self.project_name),
            ("project_id", &self.project_id),
            ("region", &self.region),
            ("interface", &self.interface),
        ] {
            if let Some(v) = value {
                set(key, json!(v));
            }
        }
        let secret = match (
            &self.application_credential_secret_file,
            &self.password_file,
        ) {
            (Some(f), _) | (None, Some(f)) => Some(read_secret(f)?),
            (None, None) => None,
        };
        Ok((config, secret))
    }
}

fn read_config(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    serde_saphyr::from_str(&text)
        .with_context(|| format!("{} is neither JSON nor YAML", path.display()))
}

/// A secret from a file (`-`: standard input), without its trailing newline; an empty
/// one is an error.
pub(crate) fn read_secret(path: &Path) -> Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        use std::io::Read;
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the secret from standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the secret file {}", path.display()))?;
    }
    let secret = text.trim_end_matches(['\n', '\r']).to_string();
    if secret.is_empty() {
        bail!("the secret file {} is empty", path.display());
    }
    Ok(secret)
}

fn hosts_table(list: &api::ProviderHostList) -> Table {
    let mut t = Table::new(&["HOST", "UP", "VMS", "VCPUS", "MEMORY_MB", "LOAD%"]).wide(&[
        "SSH",
        "VCPUS_TOTAL",
        "MEMORY_MB_TOTAL",
        "CPU_USED",
    ]);
    for h in &list.hosts {
        t.add_row([
            h.name.clone(),
            if h.up { "yes" } else { "DOWN" }.to_string(),
            h.vms.to_string(),
            format!("{}", h.vcpus_allocated),
            format!("{}", h.memory_mb_allocated),
            format!("{:.1}", h.load_percent),
            or_dash(h.ssh.as_ref()),
            format!("{}", h.vcpus),
            format!("{:.0}", h.memory_mb),
            format!("{:.2}", h.cpu_used),
        ]);
    }
    t
}

fn providers_table(list: &[api::Provider]) -> Table {
    let mut t = Table::new(&["NAME", "KIND", "TENANT", "CREDENTIALS"])
        .wide(&["BUILTIN", "CREATED", "UPDATED"]);
    for p in list {
        t.add_row([
            p.name.clone(),
            p.kind.clone(),
            or_dash(p.tenant.as_ref()),
            or_dash(p.credentials.as_ref()),
            p.builtin.to_string(),
            or_dash(p.created_at.as_ref()),
            or_dash(p.updated_at.as_ref()),
        ]);
    }
    t
}

/// Runs `swell provider …`.
pub async fn run(c: &Client, cmd: ProviderCmd, output: Output) -> Result<()> {
    let one = |p: &api::Provider| providers_table(std::slice::from_ref(p));
    match cmd {
        ProviderCmd::Create {
            name,
            kind,
            tenant,
            config,
        } => {
            let (config, secret) = config.body()?;
            let mut body = json!({"name": name, "kind": kind});
            if let Some(t) = tenant {
                body["tenant"] = json!(t);
            }
            if let Some(c) = config {
                body["config"] = c;
            }
            if let Some(s) = secret {
                body["credentials"] = json!(s);
            }
            let p: api::Provider = c.call(Method::POST, "/v1/providers", Some(&body)).await?;
            print(output, &p, one)
        }
        ProviderCmd::List => {
            let l: api::ProviderList = c.get("/v1/providers").await?;
            print(output, &l, |l| providers_table(&l.providers))
        }
        ProviderCmd::Show { name } => {
            let p: api::Provider = c.get(&format!("/v1/providers/{name}")).await?;
            print(output, &p, one)
        }
        ProviderCmd::Update { name, config } => {
            let (config, secret) = config.body()?;
            let mut body = json!({});
            if let Some(c) = config {
                body["config"] = c;
            }
            if let Some(s) = secret {
                body["credentials"] = json!(s);
            }
            let p: api::Provider = c
                .call(Method::PUT, &format!("/v1/providers/{name}"), Some(&body))
                .await?;
            print(output, &p, one)
        }
        ProviderCmd::Hosts { name } => {
            let l: api::ProviderHostList = c.get(&format!("/v1/providers/{name}/hosts")).await?;
            print(output, &l, hosts_table)
        }
        ProviderCmd::Delete { name } => {
            let _: Value = c
                .call(Method::DELETE, &format!("/v1/providers/{name}"), None)
                .await?;
            done(output, &format!("provider {name} deleted"))
        }
    }
}
