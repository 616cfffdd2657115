//! Several hypervisor hosts behind one `qemu` provider.
//!
//! Each host is one [`QemuProvider`](super::QemuProvider) with its own state directory
//! (its records and its VMs' files), or, for a host named by `ssh`, one
//! [`remote`](super::remote) host whose state directory is on that machine and whose
//! QEMUs Swell starts there over SSH; all share the images, the owner tag and the
//! accelerator setting. A new VM goes to the host [`swell_core::placement::choose_host`]
//! picks: the least-loaded host that is up and has room under the over-commit ratios,
//! preferring hosts below [`PlacementPrefs::prefer_below`] and never one above
//! [`PlacementPrefs::never_above`]. A host's allocation is the sum of the vCPUs and
//! memory its live VMs were created with (from its records), its measured load the CPU
//! its QEMU processes used at their last metrics reading. Its capacity is the
//! configured `vcpus`/`memory_mb`, else what an SSH host reports of itself, else this
//! machine's.
//!
//! **A lost host.** A host whose state directory is gone (a machine that died with its
//! disk, an unmounted volume), or an SSH host whose SSH does not answer, is *down*:
//! placement skips it and `list` leaves its VMs out, so the controller replaces them
//! on the hosts that are up. A local state directory is created when the provider is
//! built (an SSH host's at first contact), never afterwards, so a lost one is not
//! silently recreated empty. A host whose QEMU processes died but whose directory is
//! there is still up (intended): its VMs are gone from `list` and are replaced
//! wherever placement says. When no host is up, `list` fails instead (there is nowhere
//! to replace anything).

use super::remote::{self, RemoteQemu, RemoteSpec, SshTarget};
use super::{Accel, QemuConfig, QemuProvider};
use crate::{
    CreateRequest, InstanceMetrics, Provider, ProviderCapacity, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use swell_core::InstanceId;
use swell_core::placement::{self, HostLoad, PlacementPrefs, Resources};

/// One hypervisor host of the qemu provider.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuHost {
    /// Its name: what its instances report as their `host` (letters, digits, `-`,
    /// `_`, `.`; at most 63).
    pub name: String,
    /// Its state directory: records and VM files. Two hosts never share one.
    pub state_dir: PathBuf,
    /// Its physical vCPUs (default: this machine's).
    #[serde(default)]
    pub vcpus: Option<f64>,
    /// Its physical memory, MiB (default: this machine's).
    #[serde(default)]
    pub memory_mb: Option<f64>,
    /// The most VMs it runs at once (default: no limit but the over-commit ratios).
    #[serde(default)]
    pub max_vms: Option<u32>,
    /// A remote host: `USER@HOST[:PORT]` reached over SSH ([`super::remote`]); its
    /// `state_dir` is then a path on that host. None: this machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<String>,
    /// The private key Swell logs in to an SSH host with (a path on this machine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// A known_hosts file (on this machine) holding the SSH host's key, checked
    /// strictly; none: the key is pinned on first contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// Where the images are on the SSH host (default: the provider's images
    /// directory's path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images_dir: Option<PathBuf>,
    /// The IPv4 address of the SSH host that its VMs' ports are forwarded on and that
    /// Swell and its load balancer reach them at (default: the SSH host, when it is an
    /// IPv4 address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<std::net::Ipv4Addr>,
}

/// A configuration of hosts that cannot work, with the field and the rule.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct QemuHostsError {
    /// The field, e.g. `hosts[1].name`.
    pub field: String,
    /// The rule it breaks.
    pub rule: String,
}

impl QemuHost {
    /// A host named `name` with its state in `state_dir` and this machine's capacity.
    pub fn local(name: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        QemuHost {
            name: name.into(),
            state_dir: state_dir.into(),
            vcpus: None,
            memory_mb: None,
            max_vms: None,
            ssh: None,
            identity_file: None,
            known_hosts: None,
            images_dir: None,
            address: None,
        }
    }

    /// A host reached over SSH at `target` (`USER@HOST[:PORT]`), logged in to with
    /// `identity_file`, its state in `state_dir` there.
    pub fn ssh(
        name: impl Into<String>,
        target: impl Into<String>,
        identity_file: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        QemuHost {
            ssh: Some(target.into()),
            identity_file: Some(identity_file.into()),
            ..QemuHost::local(name, state_dir)
        }
    }

    /// The IPv4 address an SSH host's VMs are reached at: `address`, else the SSH
    /// host when it is an IPv4 address.
    fn vm_address(&self, target: &SshTarget) -> Option<std::net::Ipv4Addr> {
        self.address.or_else(|| target.host.parse().ok())
    }
}

impl std::str::FromStr for QemuHost {
    type Err = String;

    /// A host from the command line: `NAME=STATE_DIR` (on this machine) or
    /// `NAME=ssh://USER@HOST[:PORT]/STATE_DIR[?address=IP&images_dir=DIR]` (over SSH;
    /// its `identity_file` and `known_hosts` come from other flags).
    fn from_str(spec: &str) -> Result<Self, String> {
        let usage = "must be NAME=STATE_DIR or NAME=ssh://USER@HOST[:PORT]/STATE_DIR[?address=IP&images_dir=DIR], e.g. rack1=/srv/swell/rack1 or rack2=ssh://swell@10.0.0.2/srv/swell";
        let (name, rest) = spec.split_once('=').ok_or(usage)?;
        let Some(url) = rest.strip_prefix("ssh://") else {
            return Ok(QemuHost::local(name, rest));
        };
        let (url, query) = url.split_once('?').unwrap_or((url, ""));
        let slash = url.find('/').ok_or(usage)?;
        let (target, dir) = url.split_at(slash);
        let mut host = QemuHost::local(name, dir);
        host.ssh = Some(target.to_string());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("address", ip)) => {
                    host.address = Some(
                        ip.parse()
                            .map_err(|_| format!("address `{ip}` must be an IPv4 address"))?,
                    );
                }
                Some(("images_dir", d)) => host.images_dir = Some(d.into()),
                _ => {
                    return Err(format!(
                        "`{pair}`: only address=IP and images_dir=DIR may follow the `?`"
                    ));
                }
            }
        }
        Ok(host)
    }
}

/// Checks the hosts and placement settings of `config`; the first broken rule.
pub fn validate(config: &QemuConfig) -> Result<(), QemuHostsError> {
    let err = |field: String, rule: &str| QemuHostsError {
        field,
        rule: rule.to_string(),
    };
    let p = &config.placement;
    for (field, ratio) in [
        ("cpu_overcommit", p.overcommit.cpu),
        ("memory_overcommit", p.overcommit.memory),
    ] {
        if !(ratio.is_finite() && ratio > 0.0) {
            return Err(err(field.into(), "must be a positive number"));
        }
    }
    if !(p.prefer_below.is_finite() && p.prefer_below >= 0.0) {
        return Err(err("prefer_below_percent".into(), "must be 0 or more"));
    }
    if let Some(max) = p.never_above
        && !(max.is_finite() && max >= 0.0)
    {
        return Err(err("never_above_percent".into(), "must be 0 or more"));
    }
    let mut names = HashSet::new();
    let mut dirs = HashSet::new();
    for (i, host) in config.hosts.iter().enumerate() {
        let field = |f: &str| format!("hosts[{i}].{f}");
        let name_ok = !host.name.is_empty()
            && host.name.len() <= 63
            && host
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !name_ok {
            return Err(err(
                field("name"),
                "must be 1 to 63 ASCII letters, digits, '-', '_' or '.'",
            ));
        }
        if !names.insert(host.name.as_str()) {
            return Err(err(field("name"), "two hosts have this name"));
        }
        if !host.state_dir.is_absolute() {
            return Err(err(field("state_dir"), "must be an absolute path"));
        }
        let machine = match &host.ssh {
            None => String::new(),
            Some(t) => {
                t.parse::<SshTarget>()
                    .map_err(|rule| err(field("ssh"), &rule))?
                    .host
            }
        };
        if !dirs.insert((machine, host.state_dir.as_path())) {
            return Err(err(field("state_dir"), "two hosts share this directory"));
        }
        validate_ssh(host, &field)?;
        for (f, v) in [("vcpus", host.vcpus), ("memory_mb", host.memory_mb)] {
            if let Some(v) = v
                && !(v.is_finite() && v > 0.0)
            {
                return Err(err(field(f), "must be a positive number"));
            }
        }
    }
    Ok(())
}

/// The SSH fields of one host: all or none of them apply.
fn validate_ssh(host: &QemuHost, field: &dyn Fn(&str) -> String) -> Result<(), QemuHostsError> {
    let err = |f: &str, rule: &str| QemuHostsError {
        field: field(f),
        rule: rule.to_string(),
    };
    let Some(target) = &host.ssh else {
        for (f, set) in [
            ("identity_file", host.identity_file.is_some()),
            ("known_hosts", host.known_hosts.is_some()),
            ("images_dir", host.images_dir.is_some()),
            ("address", host.address.is_some()),
        ] {
            if set {
                return Err(err(f, "only for an SSH host (set ssh)"));
            }
        }
        return Ok(());
    };
    let target: SshTarget = target.parse().map_err(|rule: String| err("ssh", &rule))?;
    if !remote::plain_remote_path(&host.state_dir) {
        return Err(err(
            "state_dir",
            "on an SSH host, must be an absolute path of letters, digits, '/', '.', '_' or '-'",
        ));
    }
    match &host.identity_file {
        None => {
            return Err(err(
                "identity_file",
                "an SSH host needs its private key file",
            ));
        }
        Some(p) if !p.is_absolute() => {
            return Err(err("identity_file", "must be an absolute path"));
        }
        Some(_) => {}
    }
    if host.known_hosts.as_ref().is_some_and(|p| !p.is_absolute()) {
        return Err(err("known_hosts", "must be an absolute path"));
    }
    if host
        .images_dir
        .as_ref()
        .is_some_and(|p| !remote::plain_remote_path(p))
    {
        return Err(err(
            "images_dir",
            "must be an absolute path of letters, digits, '/', '.', '_' or '-'",
        ));
    }
    match host.vm_address(&target) {
        None => Err(err(
            "address",
            "an SSH host named by a host name needs the IPv4 address its VMs are reached at",
        )),
        Some(a) if a.is_unspecified() || a.is_multicast() || a.is_broadcast() => Err(err(
            "address",
            "must be an address of the host (not 0.0.0.0, broadcast or multicast)",
        )),
        Some(_) => Ok(()),
    }
}

/// One host as [`QemuHostsProvider::hosts`] reports it: its per-host metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Its name.
    pub name: String,
    /// Its SSH target (`USER@HOST:PORT`); none for a host on this machine.
    pub ssh: Option<String>,
    /// Whether it is up (its state directory is there).
    pub up: bool,
    /// How many VMs of ours live on it.
    pub vms: u32,
    /// What placement sees: capacity, allocation and measured CPU (cores).
    pub load: HostLoad,
    /// Its load in percent (see [`swell_core::placement`]).
    pub load_percent: f64,
}

struct Host {
    name: String,
    /// The configured capacity; `None` parts are the machine's (an SSH host's as it
    /// reports them).
    vcpus: Option<f64>,
    memory_mb: Option<f64>,
    max_vms: Option<u32>,
    vms: Vms,
}

/// Where a host's VMs run.
enum Vms {
    /// On this machine.
    Local(Box<QemuProvider>),
    /// On another, over SSH.
    Remote(Box<RemoteQemu>),
}

impl Host {
    /// Its capacity: configured, else reported by an SSH host, else this machine's.
    fn capacity(&self, machine: Resources) -> Resources {
        let reported = match &self.vms {
            Vms::Remote(r) => r.reported_capacity(),
            Vms::Local(_) => None,
        };
        Resources {
            vcpus: self
                .vcpus
                .or(reported.map(|r| r.0))
                .unwrap_or(machine.vcpus),
            memory_mb: self
                .memory_mb
                .or(reported.map(|r| r.1))
                .unwrap_or(machine.memory_mb),
        }
    }

    /// Runs `op` unless the host is down; `Ok(None)` when it is (a local host's state
    /// directory gone, an SSH host not answering).
    async fn if_up<'a, T, F>(
        &'a self,
        op: impl FnOnce(&'a Vms) -> F,
    ) -> Result<Option<T>, ProviderError>
    where
        F: std::future::Future<Output = Result<T, ProviderError>> + 'a,
    {
        if let Vms::Local(p) = &self.vms
            && !p.state_dir().is_dir()
        {
            return Ok(None);
        }
        match op(&self.vms).await {
            Ok(v) => Ok(Some(v)),
            Err(ProviderError::Unavailable(why)) if matches!(self.vms, Vms::Remote(_)) => {
                // `list` warns once per pass; the other calls would repeat it.
                tracing::debug!(host = %self.name, "qemu host down: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

impl Vms {
    async fn usage(&self) -> Result<super::HostUsage, ProviderError> {
        match self {
            Vms::Local(p) => p.usage().await,
            Vms::Remote(r) => r.usage().await,
        }
    }
    async fn usage_and_has(
        &self,
        id: &InstanceId,
    ) -> Result<(super::HostUsage, bool), ProviderError> {
        match self {
            Vms::Local(p) => Ok((p.usage().await?, p.has(id).await?)),
            Vms::Remote(r) => r.usage_and_has(id).await,
        }
    }
    async fn has(&self, id: &InstanceId) -> Result<bool, ProviderError> {
        match self {
            Vms::Local(p) => p.has(id).await,
            Vms::Remote(r) => r.has(id).await,
        }
    }
    async fn qemu_pid(&self, id: &InstanceId) -> Result<Option<i32>, ProviderError> {
        match self {
            Vms::Local(p) => p.qemu_pid(id).await,
            Vms::Remote(r) => r.qemu_pid(id).await,
        }
    }
    async fn steal(&self, ids: &[InstanceId]) -> Result<Vec<(InstanceId, f64)>, ProviderError> {
        match self {
            Vms::Local(p) => p.steal(ids).await,
            Vms::Remote(r) => r.steal(ids).await,
        }
    }
    async fn create(
        &self,
        request: &CreateRequest,
        images_dir: &std::path::Path,
        genisoimage: &str,
    ) -> Result<ProviderInstance, ProviderError> {
        match self {
            Vms::Local(p) => p.create(request).await,
            Vms::Remote(r) => {
                let (image, seed) = remote_inputs(request, images_dir, genisoimage).await?;
                r.create(request, &image, seed).await
            }
        }
    }
    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        match self {
            Vms::Local(p) => p.delete(id, grace).await,
            Vms::Remote(r) => r.delete(id, grace).await,
        }
    }
    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self {
            Vms::Local(p) => p.pause(id).await,
            Vms::Remote(r) => r.pause(id).await,
        }
    }
    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self {
            Vms::Local(p) => p.resume(id).await,
            Vms::Remote(r) => r.resume(id).await,
        }
    }
    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        match self {
            Vms::Local(p) => p.list().await,
            Vms::Remote(r) => r.list().await,
        }
    }
    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        match self {
            Vms::Local(p) => p.metrics(ids).await,
            Vms::Remote(r) => r.metrics(ids).await,
        }
    }
}

/// The image (read from the local images directory) and the cloud-init seed ISO
/// (built locally) of a VM to start on an SSH host.
async fn remote_inputs(
    request: &CreateRequest,
    images_dir: &std::path::Path,
    genisoimage: &str,
) -> Result<(super::image::VmImage, Option<Vec<u8>>), ProviderError> {
    let Some(name) = request.template.image.clone() else {
        return Err(ProviderError::InvalidTemplate(
            "template.image: the qemu provider needs an image (a directory under its images directory)".into(),
        ));
    };
    let dir = images_dir.to_path_buf();
    let image = tokio::task::spawn_blocking(move || super::image::load(&dir, &name))
        .await
        .map_err(|e| ProviderError::Backend(format!("blocking task failed: {e}")))??;
    if !image.cloud_init {
        if request.template.qemu.is_some() {
            return Err(ProviderError::InvalidTemplate(format!(
                "template.qemu: image `{}` reads no cloud-init seed (its image.json has no `cloud_init: true`)",
                image.name
            )));
        }
        return Ok((image, None));
    }
    let seed =
        super::cloud_init::seed(request.instance_id.as_str(), request.template.qemu.as_ref())?;
    let tmp = super::tempfile_dir().map_err(|source| ProviderError::Io {
        action: "making a directory for a cloud-init seed".into(),
        source,
    })?;
    let iso = super::cloud_init::write_seed(genisoimage, &tmp, &seed).await;
    let bytes = match iso {
        Ok(iso) => tokio::fs::read(&iso)
            .await
            .map_err(|source| ProviderError::Io {
                action: format!("reading {}", iso.display()),
                source,
            }),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    let bytes = bytes?;
    Ok((image, Some(bytes)))
}

/// The `qemu` provider over one or more hypervisor hosts; see the [module docs](self).
pub struct QemuHostsProvider {
    hosts: Vec<Host>,
    prefs: PlacementPrefs,
    machine: Resources,
    images_dir: PathBuf,
    genisoimage: String,
    create_lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for QemuHostsProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QemuHostsProvider")
            .field(
                "hosts",
                &self.hosts.iter().map(|h| &h.name).collect::<Vec<_>>(),
            )
            .field("prefs", &self.prefs)
            .finish()
    }
}

impl QemuHostsProvider {
    /// Builds the provider over `config.hosts` (none: one host, `config.host`, with
    /// `config.state_dir` and `config.max_vms`), creating each local state directory
    /// (mode 0700) that does not exist yet; an SSH host's is made at first contact.
    pub fn new(config: QemuConfig) -> Result<Self, ProviderError> {
        validate(&config).map_err(|e| ProviderError::Backend(e.to_string()))?;
        let hosts = if config.hosts.is_empty() {
            vec![QemuHost {
                max_vms: config.max_vms,
                ..QemuHost::local(config.host.clone(), config.state_dir.clone())
            }]
        } else {
            config.hosts.clone()
        };
        let accel = Arc::new(match config.accel {
            Accel::Auto => tokio::sync::OnceCell::new(),
            fixed => tokio::sync::OnceCell::new_with(Some(fixed)),
        });
        let mut built = Vec::new();
        for host in hosts {
            let mut c = config.clone();
            c.state_dir = host.state_dir.clone();
            c.host = host.name.clone();
            c.max_vms = host.max_vms;
            c.hosts = Vec::new();
            let vms = match &host.ssh {
                None => {
                    create_private_dir(&host.state_dir)?;
                    Vms::Local(Box::new(QemuProvider::sharing_accel(c, accel.clone())))
                }
                Some(target) => {
                    // validate() checked these.
                    let bad = |f: &str| {
                        ProviderError::Backend(format!("qemu host {}: bad {f}", host.name))
                    };
                    let target: SshTarget = target.parse().map_err(|_| bad("ssh"))?;
                    let spec = RemoteSpec {
                        name: host.name.clone(),
                        address: host
                            .vm_address(&target)
                            .ok_or_else(|| bad("address"))?
                            .into(),
                        identity_file: host
                            .identity_file
                            .clone()
                            .ok_or_else(|| bad("identity_file"))?,
                        known_hosts: host.known_hosts.clone(),
                        state_dir: host.state_dir.clone(),
                        images_dir: host
                            .images_dir
                            .clone()
                            .unwrap_or_else(|| config.images_dir.clone()),
                        target,
                    };
                    Vms::Remote(Box::new(RemoteQemu::new(spec, c)?))
                }
            };
            built.push(Host {
                name: host.name.clone(),
                vcpus: host.vcpus,
                memory_mb: host.memory_mb,
                max_vms: host.max_vms,
                vms,
            });
        }
        Ok(QemuHostsProvider {
            hosts: built,
            prefs: config.placement,
            machine: machine_capacity(),
            images_dir: config.images_dir.clone(),
            genisoimage: config.genisoimage.clone(),
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The accelerator the local hosts' VMs use (probed once, logged); an SSH host
    /// uses the configured one, or with `auto` KVM when its `/dev/kvm` is usable.
    pub async fn accel(&self) -> Accel {
        for h in &self.hosts {
            if let Vms::Local(p) = &h.vms {
                return p.accel().await;
            }
        }
        Accel::Tcg
    }

    /// Every host's state and load, read now.
    pub async fn hosts(&self) -> Result<Vec<HostStatus>, ProviderError> {
        let mut out = Vec::new();
        for host in &self.hosts {
            let (load, vms) = self.host_load(host).await?;
            out.push(HostStatus {
                name: host.name.clone(),
                ssh: match &host.vms {
                    Vms::Remote(r) => Some(r.target().to_string()),
                    Vms::Local(_) => None,
                },
                up: load.up,
                vms,
                load_percent: load.load_percent(self.prefs.overcommit),
                load,
            });
        }
        Ok(out)
    }

    /// How many `ssh` processes the calls to SSH host `name` started so far (its
    /// master connection's start included); `None` for a local or unknown host.
    pub fn ssh_calls(&self, name: &str) -> Option<u64> {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| match &h.vms {
                Vms::Remote(r) => Some(r.ssh_calls()),
                Vms::Local(_) => None,
            })
    }

    /// Steal time of each VM (see [`QemuProvider::steal`]), whichever host it is on.
    pub async fn steal(&self, ids: &[InstanceId]) -> Result<Vec<(InstanceId, f64)>, ProviderError> {
        let mut out = Vec::new();
        for host in &self.hosts {
            if let Some(s) = host.if_up(|v| v.steal(ids)).await? {
                out.extend(s);
            }
        }
        Ok(out)
    }

    /// The QEMU pid of a live VM (on the host it runs on), whichever host it is on.
    pub async fn qemu_pid(&self, id: &InstanceId) -> Result<Option<i32>, ProviderError> {
        for host in &self.hosts {
            if let Some(Some(pid)) = host.if_up(|v| v.qemu_pid(id)).await? {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    /// The host a live VM of this id is on.
    async fn host_of(&self, id: &InstanceId) -> Result<Option<&Host>, ProviderError> {
        for host in &self.hosts {
            if host.if_up(|v| v.has(id)).await? == Some(true) {
                return Ok(Some(host));
            }
        }
        Ok(None)
    }

    /// What placement sees of `host`, and its VM count.
    async fn host_load(&self, host: &Host) -> Result<(HostLoad, u32), ProviderError> {
        let usage = host.if_up(Vms::usage).await?;
        Ok(self.load_of(host, usage))
    }

    /// What placement sees of `host` given its usage (`None`: down), and its VM count.
    fn load_of(&self, host: &Host, usage: Option<super::HostUsage>) -> (HostLoad, u32) {
        let capacity = host.capacity(self.machine);
        match usage {
            None => (
                HostLoad {
                    up: false,
                    capacity,
                    allocated: Resources::default(),
                    cpu_used: 0.0,
                },
                0,
            ),
            Some(usage) => (
                HostLoad {
                    up: true,
                    capacity,
                    allocated: usage.allocated,
                    cpu_used: usage.cpu_used,
                },
                usage.vms,
            ),
        }
    }
}

#[async_trait]
impl Provider for QemuHostsProvider {
    fn name(&self) -> &str {
        "qemu"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        if request.template.image.is_none() {
            return Err(ProviderError::InvalidTemplate(
                "template.image: the qemu provider needs an image (a directory under its images directory)".into(),
            ));
        }
        let _serial = self.create_lock.lock().await;
        let (images, iso) = (&self.images_dir, self.genisoimage.as_str());
        let need = Resources {
            vcpus: f64::from(request.template.vcpus.max(1)),
            memory_mb: f64::from(request.template.memory_mb.max(64)),
        };
        // One reading per host (one ssh call for an SSH host): its load, and whether
        // a VM of this id already lives there.
        let mut loads = Vec::new();
        for host in &self.hosts {
            let read = host
                .if_up(|v| v.usage_and_has(&request.instance_id))
                .await?;
            // Idempotent: a VM of this id already on some host is the answer.
            if let Some((_, true)) = read {
                return host.vms.create(request, images, iso).await;
            }
            let (mut load, vms) = self.load_of(host, read.map(|(u, _)| u));
            // A host at its VM limit has no room, whatever its resources.
            if host.max_vms.is_some_and(|max| vms >= max) {
                load.up = false;
            }
            loads.push(load);
        }
        let Some(i) = placement::choose_host(&loads, need, &self.prefs) else {
            let up = loads.iter().filter(|l| l.up).count();
            return Err(ProviderError::NoCapacity(format!(
                "no qemu host has room for {} vCPU and {} MiB ({up} of {} hosts up with room; over-commit {}:1 CPU, {}:1 memory{})",
                need.vcpus,
                need.memory_mb,
                self.hosts.len(),
                self.prefs.overcommit.cpu,
                self.prefs.overcommit.memory,
                self.prefs
                    .never_above
                    .map(|m| format!(", never above {m} % load"))
                    .unwrap_or_default(),
            )));
        };
        let host = &self.hosts[i];
        tracing::info!(
            instance = %request.instance_id,
            host = %host.name,
            load_percent = loads[i].load_percent(self.prefs.overcommit),
            "qemu provider: placing VM"
        );
        host.vms.create(request, images, iso).await
    }

    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        match self.host_of(id).await? {
            Some(host) => host.vms.delete(id, grace).await,
            None => {
                // Gone already: clear what any host that is up still keeps of it.
                for host in &self.hosts {
                    host.if_up(|v| v.delete(id, grace)).await?;
                }
                Ok(())
            }
        }
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self.host_of(id).await? {
            Some(host) => host.vms.pause(id).await,
            None => Err(ProviderError::NotFound(id.clone())),
        }
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        match self.host_of(id).await? {
            Some(host) => host.vms.resume(id).await,
            None => Err(ProviderError::NotFound(id.clone())),
        }
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        let mut out = Vec::new();
        let mut up = 0;
        for host in &self.hosts {
            match host.if_up(Vms::list).await? {
                Some(vms) => {
                    up += 1;
                    out.extend(vms);
                }
                None => {
                    tracing::warn!(host = %host.name,
                        "qemu host down (state directory gone, or SSH not answering): its VMs are left out");
                }
            }
        }
        if up == 0 {
            return Err(ProviderError::Backend(
                "no qemu host is up (every host's state directory is gone or its SSH does not answer)".into(),
            ));
        }
        Ok(out)
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        let mut out = Vec::new();
        for host in &self.hosts {
            if let Some(m) = host.if_up(|v| v.metrics(ids)).await? {
                out.extend(m);
            }
        }
        Ok(out)
    }

    async fn hosts(&self) -> Result<Option<Vec<HostStatus>>, ProviderError> {
        QemuHostsProvider::hosts(self).await.map(Some)
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        // Only a VM limit on every host that is up gives a count.
        let mut left: u32 = 0;
        for host in &self.hosts {
            let Some(usage) = host.if_up(Vms::usage).await? else {
                continue;
            };
            let Some(max) = host.max_vms else {
                return Ok(None);
            };
            left = left.saturating_add(max.saturating_sub(usage.vms));
        }
        Ok(Some(ProviderCapacity {
            instances: Some(left),
            vcpus: None,
            memory_mb: None,
        }))
    }
}

/// This machine's vCPUs and memory (MiB), the default capacity of a host.
fn machine_capacity() -> Resources {
    let vcpus = std::thread::available_parallelism()
        .map(|n| n.get() as f64)
        .unwrap_or(1.0);
    let memory_mb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_mem_total_mb(&t))
        .unwrap_or(1024.0);
    Resources { vcpus, memory_mb }
}

/// `MemTotal` of `/proc/meminfo`, in MiB.
fn parse_mem_total_mb(text: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn create_private_dir(dir: &std::path::Path) -> Result<(), ProviderError> {
    use std::os::unix::fs::PermissionsExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|source| ProviderError::Io {
            action: format!("creating the qemu host directory {}", dir.display()),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `change` applied to `config` makes `validate` refuse it naming `field` and `rule`.
    fn refused(mut config: QemuConfig, change: &dyn Fn(&mut QemuConfig), field: &str, rule: &str) {
        change(&mut config);
        let e = validate(&config).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.rule.contains(rule)),
            (field, true),
            "{e}"
        );
    }

    #[test]
    fn mem_total_is_read_in_mib() {
        assert_eq!(
            parse_mem_total_mb("MemTotal:        2048000 kB\nMemFree: 1 kB\n"),
            Some(2000.0)
        );
        assert_eq!(parse_mem_total_mb("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn hosts_parse_from_the_command_line() {
        let h: QemuHost = "rack1=/srv/swell/rack1".parse().unwrap();
        assert_eq!(h, QemuHost::local("rack1", "/srv/swell/rack1"));
        let h: QemuHost =
            "rack2=ssh://swell@kvm2.example:2222/srv/swell?address=10.0.0.2&images_dir=/srv/img"
                .parse()
                .unwrap();
        assert_eq!(
            (
                h.name.as_str(),
                h.ssh.as_deref(),
                h.state_dir.to_str(),
                h.address,
                h.images_dir.as_deref().and_then(|p| p.to_str())
            ),
            (
                "rack2",
                Some("swell@kvm2.example:2222"),
                Some("/srv/swell"),
                Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
                Some("/srv/img")
            )
        );
        assert!(
            "rack1"
                .parse::<QemuHost>()
                .unwrap_err()
                .contains("NAME=STATE_DIR")
        );
        assert!(
            "r=ssh://u@h"
                .parse::<QemuHost>()
                .unwrap_err()
                .contains("NAME=ssh://")
        );
        assert!(
            "r=ssh://u@h/d?port=1"
                .parse::<QemuHost>()
                .unwrap_err()
                .contains("only address=IP")
        );
        assert!(
            "r=ssh://u@h/d?address=x"
                .parse::<QemuHost>()
                .unwrap_err()
                .contains("IPv4")
        );
    }

    #[test]
    fn bad_ssh_hosts_name_the_field_and_the_rule() {
        let base = || {
            let mut c = QemuConfig::new("/images", "/state", "owner");
            c.hosts = vec![
                QemuHost::local("a", "/srv/a"),
                QemuHost::ssh("b", "swell@10.0.0.2:2222", "/etc/swell/key", "/srv/a"),
            ];
            c
        };
        // Another machine's /srv/a is not this one's.
        assert_eq!(validate(&base()), Ok(()));
        let check = |change: &dyn Fn(&mut QemuConfig), field: &str, rule: &str| {
            refused(base(), change, field, rule)
        };
        check(
            &|c| c.hosts[1].ssh = Some("10.0.0.2".into()),
            "hosts[1].ssh",
            "USER@HOST",
        );
        check(
            &|c| c.hosts[1].ssh = Some("u@-oProxyCommand=x".into()),
            "hosts[1].ssh",
            "not starting with '-'",
        );
        check(
            &|c| c.hosts[1].identity_file = None,
            "hosts[1].identity_file",
            "private key",
        );
        check(
            &|c| c.hosts[1].identity_file = Some("key".into()),
            "hosts[1].identity_file",
            "absolute",
        );
        check(
            &|c| c.hosts[1].known_hosts = Some("kh".into()),
            "hosts[1].known_hosts",
            "absolute",
        );
        check(
            &|c| c.hosts[1].state_dir = "/srv/a b".into(),
            "hosts[1].state_dir",
            "letters, digits",
        );
        check(
            &|c| c.hosts[1].images_dir = Some("/img,x".into()),
            "hosts[1].images_dir",
            "letters, digits",
        );
        check(
            &|c| c.hosts[1].ssh = Some("swell@rack2.example".into()),
            "hosts[1].address",
            "IPv4 address",
        );
        check(
            &|c| c.hosts[1].address = Some(std::net::Ipv4Addr::UNSPECIFIED),
            "hosts[1].address",
            "not 0.0.0.0",
        );
        check(
            &|c| c.hosts[0].identity_file = Some("/k".into()),
            "hosts[0].identity_file",
            "only for an SSH host",
        );
        check(
            &|c| c.hosts[0].address = Some(std::net::Ipv4Addr::LOCALHOST),
            "hosts[0].address",
            "only for an SSH host",
        );
        check(
            &|c| {
                c.hosts.push(QemuHost::ssh(
                    "c",
                    "other@10.0.0.2",
                    "/etc/swell/key",
                    "/srv/a",
                ))
            },
            "hosts[2].state_dir",
            "share",
        );
        // A host name needs the address its VMs are reached at.
        let mut c = base();
        c.hosts[1].ssh = Some("swell@rack2.example".into());
        c.hosts[1].address = Some(std::net::Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(validate(&c), Ok(()));
    }

    #[test]
    fn bad_hosts_name_the_field_and_the_rule() {
        let base = || {
            let mut c = QemuConfig::new("/images", "/state", "owner");
            c.hosts = vec![
                QemuHost::local("a", "/srv/a"),
                QemuHost::local("b", "/srv/b"),
            ];
            c
        };
        assert_eq!(validate(&base()), Ok(()));
        let check = |change: &dyn Fn(&mut QemuConfig), field: &str, rule: &str| {
            refused(base(), change, field, rule)
        };
        check(
            &|c| c.hosts[1].name = "a".into(),
            "hosts[1].name",
            "two hosts",
        );
        check(
            &|c| c.hosts[0].name = "a/b".into(),
            "hosts[0].name",
            "letters",
        );
        check(
            &|c| c.hosts[0].name = String::new(),
            "hosts[0].name",
            "1 to 63",
        );
        check(
            &|c| c.hosts[1].state_dir = "/srv/a".into(),
            "hosts[1].state_dir",
            "share",
        );
        check(
            &|c| c.hosts[1].state_dir = "rel".into(),
            "hosts[1].state_dir",
            "absolute",
        );
        check(
            &|c| c.hosts[0].vcpus = Some(0.0),
            "hosts[0].vcpus",
            "positive",
        );
        check(
            &|c| c.hosts[0].memory_mb = Some(f64::NAN),
            "hosts[0].memory_mb",
            "positive",
        );
        check(
            &|c| c.placement.overcommit.cpu = 0.0,
            "cpu_overcommit",
            "positive",
        );
        check(
            &|c| c.placement.overcommit.memory = -1.0,
            "memory_overcommit",
            "positive",
        );
        check(
            &|c| c.placement.prefer_below = f64::NAN,
            "prefer_below_percent",
            "0 or more",
        );
        check(
            &|c| c.placement.never_above = Some(-5.0),
            "never_above_percent",
            "0 or more",
        );
    }
}
