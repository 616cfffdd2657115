//! Several hypervisor hosts behind one `qemu` provider.
//!
//! Each host is one [`QemuProvider`](super::QemuProvider) with its own state directory
//! (its records and its VMs' files); all share the images, the owner tag and the
//! accelerator probe. A new VM goes to the host [`swell_core::placement::choose_host`]
//! picks: the least-loaded host that is up and has room under the over-commit ratios,
//! preferring hosts below [`PlacementPrefs::prefer_below`] and never one above
//! [`PlacementPrefs::never_above`]. A host's allocation is the sum of the vCPUs and
//! memory its live VMs were created with (from its records), its measured load the CPU
//! its QEMU processes used at their last metrics reading.
//!
//! **A lost host.** A host whose state directory is gone (a machine that died with its
//! disk, an unmounted volume) is *down*: placement skips it and `list` leaves its VMs
//! out, so the controller replaces them on the hosts that are up. The state directory
//! is created when the provider is built, never afterwards, so a lost one is not
//! silently recreated empty. A host whose QEMU processes died is still up: its VMs are
//! gone from `list` and are replaced wherever placement says. When no host is up,
//! `list` fails instead (there is nowhere to replace anything).

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
        }
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
        if !dirs.insert(host.state_dir.as_path()) {
            return Err(err(field("state_dir"), "two hosts share this directory"));
        }
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

/// One host as [`QemuHostsProvider::hosts`] reports it: its per-host metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStatus {
    /// Its name.
    pub name: String,
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
    capacity: Resources,
    max_vms: Option<u32>,
    vms: QemuProvider,
}

/// The `qemu` provider over one or more hypervisor hosts; see the [module docs](self).
pub struct QemuHostsProvider {
    hosts: Vec<Host>,
    prefs: PlacementPrefs,
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
    /// `config.state_dir` and `config.max_vms`), creating each state directory
    /// (mode 0700) that does not exist yet.
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
        let machine = machine_capacity();
        let mut built = Vec::new();
        for host in hosts {
            create_private_dir(&host.state_dir)?;
            let mut c = config.clone();
            c.state_dir = host.state_dir.clone();
            c.host = host.name.clone();
            c.max_vms = host.max_vms;
            c.hosts = Vec::new();
            built.push(Host {
                name: host.name.clone(),
                capacity: Resources {
                    vcpus: host.vcpus.unwrap_or(machine.vcpus),
                    memory_mb: host.memory_mb.unwrap_or(machine.memory_mb),
                },
                max_vms: host.max_vms,
                vms: QemuProvider::sharing_accel(c, accel.clone()),
            });
        }
        Ok(QemuHostsProvider {
            hosts: built,
            prefs: config.placement,
            create_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// The accelerator every host's VMs use (probed once, logged).
    pub async fn accel(&self) -> Accel {
        match self.hosts.first() {
            Some(h) => h.vms.accel().await,
            None => Accel::Tcg,
        }
    }

    /// Every host's state and load, read now.
    pub async fn hosts(&self) -> Result<Vec<HostStatus>, ProviderError> {
        let mut out = Vec::new();
        for host in &self.hosts {
            let (load, vms) = self.host_load(host).await?;
            out.push(HostStatus {
                name: host.name.clone(),
                up: load.up,
                vms,
                load_percent: load.load_percent(self.prefs.overcommit),
                load,
            });
        }
        Ok(out)
    }

    /// Steal time of each VM (see [`QemuProvider::steal`]), whichever host it is on.
    pub async fn steal(&self, ids: &[InstanceId]) -> Result<Vec<(InstanceId, f64)>, ProviderError> {
        let mut out = Vec::new();
        for host in self.up_hosts() {
            out.extend(host.vms.steal(ids).await?);
        }
        Ok(out)
    }

    /// The QEMU pid of a live VM, whichever host it is on.
    pub async fn qemu_pid(&self, id: &InstanceId) -> Result<Option<i32>, ProviderError> {
        for host in self.up_hosts() {
            if let Some(pid) = host.vms.qemu_pid(id).await? {
                return Ok(Some(pid));
            }
        }
        Ok(None)
    }

    fn up_hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.iter().filter(|h| is_up(h))
    }

    /// The host a live VM of this id is on.
    async fn host_of(&self, id: &InstanceId) -> Result<Option<&Host>, ProviderError> {
        for host in self.up_hosts() {
            if host.vms.has(id).await? {
                return Ok(Some(host));
            }
        }
        Ok(None)
    }

    /// What placement sees of `host`, and its VM count.
    async fn host_load(&self, host: &Host) -> Result<(HostLoad, u32), ProviderError> {
        if !is_up(host) {
            return Ok((
                HostLoad {
                    up: false,
                    capacity: host.capacity,
                    allocated: Resources::default(),
                    cpu_used: 0.0,
                },
                0,
            ));
        }
        let usage = host.vms.usage().await?;
        Ok((
            HostLoad {
                up: true,
                capacity: host.capacity,
                allocated: usage.allocated,
                cpu_used: usage.cpu_used,
            },
            usage.vms,
        ))
    }
}

/// A host is up while its state directory is there.
fn is_up(host: &Host) -> bool {
    host.vms.state_dir().is_dir()
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
        // Idempotent: a VM of this id already on some host is the answer.
        if let Some(host) = self.host_of(&request.instance_id).await? {
            return host.vms.create(request).await;
        }
        let need = Resources {
            vcpus: f64::from(request.template.vcpus.max(1)),
            memory_mb: f64::from(request.template.memory_mb.max(64)),
        };
        let mut loads = Vec::new();
        for host in &self.hosts {
            let (mut load, vms) = self.host_load(host).await?;
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
        host.vms.create(request).await
    }

    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        match self.host_of(id).await? {
            Some(host) => host.vms.delete(id, grace).await,
            None => {
                // Gone already: clear what any host that is up still keeps of it.
                for host in self.up_hosts() {
                    host.vms.delete(id, grace).await?;
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
            if !is_up(host) {
                tracing::warn!(host = %host.name, dir = %host.vms.state_dir().display(),
                    "qemu host down: its state directory is gone; its VMs are left out");
                continue;
            }
            up += 1;
            out.extend(host.vms.list().await?);
        }
        if up == 0 {
            return Err(ProviderError::Backend(
                "no qemu host is up (every host's state directory is gone)".into(),
            ));
        }
        Ok(out)
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        let mut out = Vec::new();
        for host in self.up_hosts() {
            out.extend(host.vms.metrics(ids).await?);
        }
        Ok(out)
    }

    async fn capacity(&self) -> Result<Option<ProviderCapacity>, ProviderError> {
        // Only a VM limit on every host that is up gives a count.
        let mut left: u32 = 0;
        for host in self.up_hosts() {
            let Some(max) = host.max_vms else {
                return Ok(None);
            };
            let vms = host.vms.usage().await?.vms;
            left = left.saturating_add(max.saturating_sub(vms));
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

    #[test]
    fn mem_total_is_read_in_mib() {
        assert_eq!(
            parse_mem_total_mb("MemTotal:        2048000 kB\nMemFree: 1 kB\n"),
            Some(2000.0)
        );
        assert_eq!(parse_mem_total_mb("MemFree: 1 kB\n"), None);
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
            let mut c = base();
            change(&mut c);
            let e = validate(&c).unwrap_err();
            assert_eq!(
                (e.field.as_str(), e.rule.contains(rule)),
                (field, true),
                "{e}"
            );
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
