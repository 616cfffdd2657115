//! The qemu provider: every instance is a virtual machine, one local QEMU process
//! controlled over QMP.
//!
//! An instance boots its template's `image`, a directory under the provider's images
//! directory ([`image`]: a kernel and initramfs booted directly, or a disk), with the
//! template's `vcpus` and `memory_mb`, one virtio-net NIC on QEMU's user-mode network,
//! and a free `127.0.0.1` port forwarded to the image's guest port: the instance's
//! address. The user-mode network is restricted (`restrict=on`): the guest reaches
//! neither the host (whose loopback services it would otherwise see at 10.0.2.2) nor
//! anything else; only the forwarded port reaches it. A disk is never written: each VM
//! gets a qcow2 overlay of it.
//!
//! **Stamped.** The instance id is the VM's SMBIOS serial number (what the guest reads
//! in `/sys/class/dmi/id/product_serial`), is on the kernel command line as
//! `swell.instance=` and is in the QEMU process's command line (`-name swell-<id>`), so
//! an operator sees which VM is which.
//!
//! **Found from what Swell recorded.** Like the process provider, the provider writes a
//! record (instance id, tenant, group, port, QEMU's pid and start time) into
//! `state_dir/records/<owner>/` when it starts a VM (first without the pid, before
//! QEMU starts, which then writes its pid file: a crash in between loses no VM), and
//! [`list`](crate::Provider::list) (also after a restart: adoption) trusts only these
//! records, checked against the kernel (same pid, same start time, and the id in that
//! process's command line): nothing a guest says is read to decide what is an
//! instance.
//!
//! **Controlled over QMP.** Each VM's QMP socket is `state_dir/instances/<id>/qmp.sock`
//! (with its `console.log`, QEMU's own `qemu.log` and the disk overlay). Pause is QMP
//! `stop`, resume `cont`, and delete `system_powerdown` (the guest's ACPI power button)
//! then SIGKILL once the grace period has passed. QEMU runs in its own process group,
//! so it outlives a `kill -9` of the server and is adopted by the next one.
//!
//! **Accelerator.** KVM where it works, else TCG (software emulation), chosen once by
//! a probe that boots no guest ([`probe_accel`]) and logged.
//!
//! **Metrics from the host side.** CPU is the QEMU process's CPU time (all its
//! threads) in percent of one core; memory its resident set. [`QemuProvider::steal`]
//! gives each VM's steal time as the guest would see it: the time its vCPU threads
//! waited runnable for a host CPU (`/proc/<pid>/task/<tid>/schedstat`, second field;
//! thread ids from QMP `query-cpus-fast`), since a guest's own `steal` is 0 under TCG.
//!
//! Linux only (it reads `/proc`).

pub mod cloud_init;
pub mod hosts;
pub mod image;
pub mod qmp;
pub mod remote;

use crate::process::procfs::{self, Stat};
use crate::records::{read_record, read_records, record_path, write_record};
use crate::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, SysconfVar, sysconf};
use qmp::{Qmp, QmpError};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swell_core::InstanceId;

/// How long create waits for a new QEMU to answer on its QMP socket.
const START_WAIT: Duration = Duration::from_secs(15);
/// How often waits look again.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// How long delete waits for QEMU to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a port handed out stays reserved.
const PORT_RESERVATION: Duration = Duration::from_secs(60);
/// Samples closer together than this are too noisy for a rate.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// How long the KVM probe's firmware may take to find no boot device.
pub const FIRMWARE_WAIT: Duration = Duration::from_secs(2);
/// The longest Unix socket path (`sun_path` holds 108 bytes with its NUL).
const MAX_SOCKET_PATH: usize = 107;
/// QEMU's own pid file in the instance directory (`-pidfile`).
const PID_FILE: &str = "qemu.pid";

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// KVM if the probe finds that it works, else TCG.
    Auto,
    /// Hardware virtualisation (`/dev/kvm`); guests run at near native speed.
    Kvm,
    /// QEMU's software emulation: works everywhere, several times slower.
    Tcg,
}

impl std::fmt::Display for Accel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Accel::Auto => "auto",
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

impl std::str::FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Accel::Auto),
            "kvm" => Ok(Accel::Kvm),
            "tcg" => Ok(Accel::Tcg),
            other => Err(format!(
                "accelerator must be auto, kvm or tcg, not `{other}`"
            )),
        }
    }
}

/// How to build a [`QemuProvider`].
#[derive(Debug, Clone, PartialEq)]
pub struct QemuConfig {
    /// Where the VM images are (`<images_dir>/<image>/image.json`).
    pub images_dir: PathBuf,
    /// Where the provider keeps its records (`records/<owner>/`) and each VM's files
    /// (`instances/<id>/`). Must not be writable by anyone else.
    pub state_dir: PathBuf,
    /// The tag of the Swell server that owns the VMs.
    pub owner: String,
    /// Which accelerator to use.
    pub accel: Accel,
    /// The QEMU binary (`qemu-system-x86_64`).
    pub qemu: String,
    /// The most VMs this host runs at once (`None`: no limit); past it the provider
    /// reports no room, so a group's `fallback_providers` take the rest.
    pub max_vms: Option<u32>,
    /// The `qemu-img` binary.
    pub qemu_img: String,
    /// The `genisoimage` binary, which makes cloud-init seeds.
    pub genisoimage: String,
    /// The name of the host the VMs run on (what instances report as their `host`).
    pub host: String,
    /// The hypervisor hosts of [`hosts::QemuHostsProvider`]; empty: one host,
    /// `localhost`, with `state_dir` and `max_vms` above.
    pub hosts: Vec<hosts::QemuHost>,
    /// How [`hosts::QemuHostsProvider`] chooses a host for a new VM.
    pub placement: swell_core::placement::PlacementPrefs,
}

impl QemuConfig {
    /// Images from `images_dir`, state in `state_dir`, owned by `owner`; the
    /// accelerator chosen by the probe; `qemu-system-x86_64` and `qemu-img` from `PATH`.
    pub fn new(
        images_dir: impl Into<PathBuf>,
        state_dir: impl Into<PathBuf>,
        owner: impl Into<String>,
    ) -> Self {
        QemuConfig {
            images_dir: images_dir.into(),
            state_dir: state_dir.into(),
            owner: owner.into(),
            accel: Accel::Auto,
            qemu: "qemu-system-x86_64".into(),
            max_vms: None,
            qemu_img: "qemu-img".into(),
            genisoimage: "genisoimage".into(),
            host: "localhost".into(),
            hosts: Vec::new(),
            placement: swell_core::placement::PlacementPrefs::default(),
        }
    }
}

/// The images directory `swell serve` uses when given none: `$SWELL_VM_IMAGES`, else
/// `~/.cache/swell/vm-images` (where scripts/build-vm-image puts them).
pub fn default_images_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SWELL_VM_IMAGES").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".cache/swell/vm-images")
}

/// What the provider writes down when it starts a VM: all that adoption trusts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    instance_id: String,
    tenant: String,
    group: String,
    port: u16,
    /// The QEMU process; 0 in the record written before QEMU starts, whose pid is
    /// then in QEMU's own pid file (`qemu.pid` of the instance directory).
    pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22): a reused pid is not it.
    starttime: u64,
    /// Its vCPU count.
    vcpus: u32,
    /// Its memory, MiB (0 in records written before it was kept).
    #[serde(default)]
    memory_mb: u32,
}

impl Record {
    /// The record of a VM about to start, on `port`: no QEMU pid or start time yet.
    fn starting(request: &CreateRequest, port: u16) -> Record {
        Record {
            instance_id: request.instance_id.as_str().to_string(),
            tenant: request.tenant.as_str().to_string(),
            group: request.group.clone(),
            port,
            pid: 0,
            starttime: 0,
            vcpus: request.template.vcpus.max(1),
            memory_mb: request.template.memory_mb.max(64),
        }
    }
}

impl crate::records::Record for Record {
    const WHAT: &'static str = "a VM record";
    fn instance_id(&self) -> &str {
        &self.instance_id
    }
}

/// What the live VMs of one host take.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct HostUsage {
    /// How many VMs live there.
    pub vms: u32,
    /// Their templates' vCPUs and MiB.
    pub allocated: swell_core::placement::Resources,
    /// CPU cores their QEMU processes used at their last metrics reading.
    pub cpu_used: f64,
}

/// The previous reading of a counter, for the next rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// The QEMU process's start time: guards against pid reuse.
    starttime: u64,
    /// The counter (CPU ticks, or nanoseconds waited).
    value: u64,
    /// When it was read.
    at: Instant,
    /// The rate computed then.
    rate: f64,
}

/// Runs instances as QEMU virtual machines; see the [module docs](self).
#[derive(Debug)]
pub struct QemuProvider {
    config: QemuConfig,
    records_dir: PathBuf,
    /// Shared by the hosts of one [`hosts::QemuHostsProvider`]: probed once.
    accel: Arc<tokio::sync::OnceCell<Accel>>,
    create_lock: tokio::sync::Mutex<()>,
    recent_ports: Mutex<HashMap<u16, Instant>>,
    /// One QMP conversation at a time per VM (QEMU serves one client at a time).
    qmp_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cpu_samples: Mutex<HashMap<String, Sample>>,
    steal_samples: Mutex<HashMap<String, Sample>>,
    ticks_per_second: f64,
    page_size: u64,
}

impl QemuProvider {
    /// Builds the provider; nothing is started or probed until it is used (see
    /// [`accel`](Self::accel) to probe at once).
    pub fn new(config: QemuConfig) -> Self {
        let accel = match config.accel {
            Accel::Auto => tokio::sync::OnceCell::new(),
            fixed => tokio::sync::OnceCell::new_with(Some(fixed)),
        };
        Self::sharing_accel(config, Arc::new(accel))
    }

    /// Builds the provider with an accelerator cell shared with other hosts.
    pub(crate) fn sharing_accel(
        config: QemuConfig,
        accel: Arc<tokio::sync::OnceCell<Accel>>,
    ) -> Self {
        let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            _ => 100.0,
        };
        let page_size = match sysconf(SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p as u64,
            _ => 4096,
        };
        let records_dir = config
            .state_dir
            .join("records")
            .join(crate::process::cgroup::owner_dir_name(&config.owner));
        QemuProvider {
            config,
            records_dir,
            accel,
            create_lock: tokio::sync::Mutex::new(()),
            recent_ports: Mutex::new(HashMap::new()),
            qmp_locks: Mutex::new(HashMap::new()),
            cpu_samples: Mutex::new(HashMap::new()),
            steal_samples: Mutex::new(HashMap::new()),
            ticks_per_second,
            page_size,
        }
    }

    /// The accelerator VMs use: the configured one, or with [`Accel::Auto`] the
    /// probe's answer (probed once, logged).
    pub async fn accel(&self) -> Accel {
        *self
            .accel
            .get_or_init(|| async {
                let accel = probe_accel(&self.config.qemu).await;
                tracing::info!(%accel, "qemu provider: accelerator chosen by probe");
                accel
            })
            .await
    }

    /// The directory of a VM's files (`qmp.sock`, `console.log`, `qemu.log`, disk).
    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.instances_dir().join(id.as_str())
    }

    /// Where the instance directories are.
    fn instances_dir(&self) -> PathBuf {
        self.config.state_dir.join("instances")
    }

    /// The pid of the QEMU process of a live VM of ours.
    pub async fn qemu_pid(&self, id: &InstanceId) -> Result<Option<i32>, ProviderError> {
        Ok(self.live(id).await?.map(|(r, _)| r.pid))
    }

    /// Steal time of each VM in percent of its vCPUs' time since the previous call:
    /// how long its vCPU threads waited, runnable, for a host CPU. VMs that are gone,
    /// or seen for the first time (no previous reading yet), are left out.
    pub async fn steal(&self, ids: &[InstanceId]) -> Result<Vec<(InstanceId, f64)>, ProviderError> {
        let mut out = Vec::new();
        for id in ids {
            let Some((record, _)) = self.live(id).await? else {
                continue;
            };
            if let Some(steal) = self.steal_of(id, &record).await? {
                out.push((id.clone(), steal));
            }
        }
        Ok(out)
    }

    /// One VM's steal since the previous reading (`None`: no previous reading, or
    /// QEMU did not say its vCPU threads).
    async fn steal_of(
        &self,
        id: &InstanceId,
        record: &Record,
    ) -> Result<Option<f64>, ProviderError> {
        {
            let cpus = match self.qmp(id, "query-cpus-fast", None).await {
                Ok(cpus) => cpus,
                Err(e) => {
                    tracing::debug!(instance = %id, "reading vCPU threads: {e}");
                    return Ok(None);
                }
            };
            let threads = qmp::vcpu_threads(&cpus);
            if threads.is_empty() {
                return Ok(None);
            }
            let pid = record.pid;
            let waited = blocking(move || {
                threads
                    .iter()
                    .map(|tid| {
                        fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat"))
                            .ok()
                            .and_then(|t| parse_schedstat_wait(&t))
                    })
                    .collect::<Option<Vec<u64>>>()
                    .map(|w| (w.iter().sum::<u64>(), w.len()))
            })
            .await?;
            let Some((waited_ns, n)) = waited else {
                return Ok(None);
            };
            let now = Instant::now();
            let mut samples = lock(&self.steal_samples);
            let prev = samples.get(id.as_str()).copied();
            let next = steal_sample(prev.as_ref(), record.starttime, waited_ns, now, n);
            samples.insert(id.as_str().to_string(), next);
            Ok(prev
                .is_some_and(|p| p.starttime == record.starttime)
                .then_some(next.rate))
        }
    }

    /// What the live VMs of this host reserve (their templates' vCPUs and MiB), how
    /// many there are, and the CPU cores they used at their last metrics reading.
    pub(crate) async fn usage(&self) -> Result<HostUsage, ProviderError> {
        let live = self.scan().await?;
        let samples = lock(&self.cpu_samples);
        let mut usage = HostUsage::default();
        for (record, _) in &live {
            usage.vms += 1;
            usage.allocated.vcpus += f64::from(record.vcpus);
            usage.allocated.memory_mb += f64::from(record.memory_mb);
            if let Some(s) = samples.get(&record.instance_id) {
                usage.cpu_used += s.rate / 100.0;
            }
        }
        Ok(usage)
    }

    /// Whether a live VM of this host has this id.
    pub(crate) async fn has(&self, id: &InstanceId) -> Result<bool, ProviderError> {
        Ok(self.live(id).await?.is_some())
    }

    /// The state directory (records and VM files).
    pub(crate) fn state_dir(&self) -> &Path {
        &self.config.state_dir
    }

    /// Runs one QMP command on a VM.
    async fn qmp(
        &self,
        id: &InstanceId,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, QmpError> {
        let gate = {
            let mut locks = lock(&self.qmp_locks);
            locks
                .entry(id.as_str().to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        let _one_at_a_time = gate.lock().await;
        let mut conn = Qmp::connect(&self.instance_dir(id).join("qmp.sock")).await?;
        conn.execute(command, arguments).await
    }

    /// The record of a VM and its QEMU process's stat, if that process lives.
    async fn live(&self, id: &InstanceId) -> Result<Option<(Record, Stat)>, ProviderError> {
        check_instance_id(id)?;
        let path = record_path(&self.records_dir, id.as_str());
        let instances = self.instances_dir();
        blocking(move || read_record(&path).and_then(|r| find_live(&instances, r))).await
    }

    /// Every record of ours whose QEMU lives.
    async fn scan(&self) -> Result<Vec<(Record, Stat)>, ProviderError> {
        let (dir, instances) = (self.records_dir.clone(), self.instances_dir());
        blocking(move || {
            read_records(&dir)
                .into_iter()
                .filter_map(|r| find_live(&instances, r))
                .collect()
        })
        .await
    }

    /// The observed state of a live VM: QMP's run state, or running when QMP does
    /// not answer (a VM busy starting).
    async fn state(&self, id: &InstanceId) -> ObservedState {
        match self.qmp(id, "query-status", None).await {
            Ok(status) => match qmp::run_state(&status) {
                Some("paused" | "suspended" | "prelaunch" | "inmigrate") => ObservedState::Paused,
                Some("shutdown" | "internal-error" | "guest-panicked" | "io-error") => {
                    ObservedState::Exited
                }
                _ => ObservedState::Running,
            },
            Err(_) => ObservedState::Running,
        }
    }

    /// A free port on 127.0.0.1 that no VM of ours uses or was just given.
    fn pick_port(&self, in_use: &HashSet<u16>) -> Result<u16, ProviderError> {
        let mut recent = lock(&self.recent_ports);
        recent.retain(|_, at| at.elapsed() < PORT_RESERVATION);
        for _ in 0..64 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map_err(|source| ProviderError::Io {
                    action: "finding a free port on 127.0.0.1".into(),
                    source,
                })?
                .port();
            if !in_use.contains(&port) && !recent.contains_key(&port) {
                recent.insert(port, Instant::now());
                return Ok(port);
            }
        }
        Err(ProviderError::NoCapacity(
            "no free port on 127.0.0.1 after 64 tries".into(),
        ))
    }

    /// Waits until the VM's QEMU is gone or `deadline` passes; whether it is gone.
    async fn wait_gone(&self, record: &Record, deadline: tokio::time::Instant) -> bool {
        loop {
            if !alive(record) {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Writes (or replaces) a VM's record.
    async fn write_record(&self, record: &Record) -> Result<(), ProviderError> {
        let (dir, record) = (self.records_dir.clone(), record.clone());
        let path = record_path(&dir, &record.instance_id);
        blocking(move || write_record(&dir, &path, &record)).await?
    }

    /// Removes a VM's record and files.
    async fn forget(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let record = record_path(&self.records_dir, id.as_str());
        let dir = self.instance_dir(id);
        lock(&self.qmp_locks).remove(id.as_str());
        lock(&self.cpu_samples).remove(id.as_str());
        lock(&self.steal_samples).remove(id.as_str());
        blocking(move || {
            match fs::remove_file(&record) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(ProviderError::Io {
                        action: format!("removing {}", record.display()),
                        source: e,
                    });
                }
                _ => {}
            }
            match fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::Io {
                    action: format!("removing {}", dir.display()),
                    source: e,
                }),
                _ => Ok(()),
            }
        })
        .await?
    }
}

#[async_trait]
impl Provider for QemuProvider {
    fn name(&self) -> &str {
        "qemu"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        let id = &request.instance_id;
        check_instance_id(id)?;
        let Some(image_name) = request.template.image.as_deref() else {
            return Err(ProviderError::InvalidTemplate(
                "template.image: the qemu provider needs an image (a directory under its images directory)".into(),
            ));
        };
        let images_dir = self.config.images_dir.clone();
        let name = image_name.to_string();
        let image = blocking(move || image::load(&images_dir, &name)).await??;
        let seed = if image.cloud_init {
            Some(cloud_init::seed(
                id.as_str(),
                request.template.qemu.as_ref(),
            )?)
        } else if request.template.qemu.is_some() {
            return Err(ProviderError::InvalidTemplate(format!(
                "template.qemu: image `{}` reads no cloud-init seed (its image.json has no `cloud_init: true`)",
                image.name
            )));
        } else {
            None
        };
        let accel = self.accel().await;

        let _serial = self.create_lock.lock().await;
        let owned = self.scan().await?;
        if let Some((record, stat)) = owned.iter().find(|(r, _)| r.instance_id == id.as_str()) {
            return Ok(to_instance(
                record,
                stat,
                ObservedState::Running,
                &self.config.host,
            ));
        }
        if let Some(max) = self.config.max_vms
            && owned.len() >= max as usize
        {
            return Err(ProviderError::NoCapacity(format!(
                "this host runs its most VMs ({max}, --qemu-max-vms)"
            )));
        }
        let in_use: HashSet<u16> = owned.iter().map(|(r, _)| r.port).collect();
        let port = self.pick_port(&in_use)?;

        let dir = self.instance_dir(id);
        let socket = dir.join("qmp.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ProviderError::Backend(format!(
                "the QMP socket path {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter data directory",
                socket.display()
            )));
        }
        let (d, s) = (dir.clone(), socket.clone());
        let log = blocking(move || -> Result<fs::File, ProviderError> {
            let io = |action: String| move |source| ProviderError::Io { action, source };
            // A leftover of an earlier VM of this id (a crash between start and record).
            let _ = fs::remove_dir_all(&d);
            fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .map_err(io(format!("restricting {}", d.display())))?;
            let _ = fs::remove_file(&s);
            let log = d.join("qemu.log");
            fs::File::create(&log).map_err(io(format!("creating {}", log.display())))
        })
        .await??;
        if let Some((base, format)) = &image.disk {
            image::make_overlay(&self.config.qemu_img, base, format, &dir.join("disk.qcow2"))
                .await?;
        }
        if let Some(seed) = &seed {
            cloud_init::write_seed(&self.config.genisoimage, &dir, seed).await?;
        }

        let mut args = command_line(
            request,
            &image,
            accel,
            &dir,
            Ipv4Addr::LOCALHOST.into(),
            port,
        );
        // The record goes down before QEMU starts, and QEMU writes its own pid file:
        // a server killed in between leaves a VM that the next one still finds.
        let pid_file = dir.join(PID_FILE);
        args.extend(["-pidfile".into(), pid_file.display().to_string()]);
        let mut record = Record::starting(request, port);
        self.write_record(&record).await?;
        let stderr = log.try_clone().map_err(|source| ProviderError::Io {
            action: "opening qemu.log".into(),
            source,
        })?;
        let spawned = tokio::process::Command::new(&self.config.qemu)
            .args(&args)
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false)
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(source) => {
                let _ = self.forget(id).await;
                return Err(ProviderError::Io {
                    action: format!("starting `{}`", self.config.qemu),
                    source,
                });
            }
        };
        let Some(pid) = child.id().map(|p| p as i32) else {
            let _ = self.forget(id).await;
            return Err(ProviderError::Backend(format!(
                "`{}` exited before its pid was read",
                self.config.qemu
            )));
        };
        // Not reaped yet, so its stat is there even if it exited at once.
        let written = match read_stat(pid) {
            Some(stat) => {
                (record.pid, record.starttime) = (pid, stat.starttime);
                self.write_record(&record).await
            }
            None => Err(ProviderError::Backend(format!(
                "QEMU (pid {pid}) vanished at start"
            ))),
        };
        if let Err(e) = written {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let _ = self.forget(id).await;
            return Err(e);
        }
        // Wait for QMP: QEMU answering means the VM exists and runs.
        let deadline = tokio::time::Instant::now() + START_WAIT;
        let started = loop {
            if let Ok(Some(status)) = child.try_wait() {
                break Err(format!("QEMU exited at start ({status})"));
            }
            match self.qmp(id, "query-status", None).await {
                Ok(_) => break Ok(()),
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    break Err(format!(
                        "QEMU did not answer on QMP within {START_WAIT:?}: {e}"
                    ));
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        };
        if let Err(why) = started {
            let _ = child.start_kill();
            let _ = child.wait().await;
            let log = fs::read_to_string(dir.join("qemu.log")).unwrap_or_default();
            let _ = self.forget(id).await;
            return Err(ProviderError::Backend(format!(
                "VM {id}: {why}; qemu.log: {}",
                log.trim()
            )));
        }
        // Reap it when it exits, so that it does not linger as a zombie.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        tracing::info!(instance = %id, pid, port, %accel, image = %image.name, "started VM");
        Ok(ProviderInstance {
            instance_id: id.clone(),
            tenant: record.tenant,
            group: record.group,
            native_id: pid.to_string(),
            host: self.config.host.clone(),
            address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            state: ObservedState::Running,
        })
    }

    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        let Some((record, _)) = self.live(id).await? else {
            return self.forget(id).await;
        };
        // A paused guest cannot see its power button.
        let _ = self.qmp(id, "cont", None).await;
        let asked = self.qmp(id, "system_powerdown", None).await;
        let deadline = tokio::time::Instant::now() + grace;
        if asked.is_ok() && self.wait_gone(&record, deadline).await {
            tracing::info!(instance = %id, "VM powered off");
        } else {
            tracing::warn!(instance = %id, ?grace, "VM did not power off; killing QEMU");
            match signal::kill(Pid::from_raw(record.pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(ProviderError::Io {
                        action: format!("killing QEMU (pid {}) of VM {id}", record.pid),
                        source: e.into(),
                    });
                }
            }
            let deadline = tokio::time::Instant::now() + KILL_WAIT;
            if !self.wait_gone(&record, deadline).await {
                return Err(ProviderError::Backend(format!(
                    "QEMU (pid {}) of VM {id} still runs {KILL_WAIT:?} after SIGKILL",
                    record.pid
                )));
            }
        }
        self.forget(id).await
    }

    async fn capacity(&self) -> Result<Option<crate::ProviderCapacity>, ProviderError> {
        let Some(max) = self.config.max_vms else {
            return Ok(None);
        };
        let running = self.scan().await?.len();
        Ok(Some(crate::ProviderCapacity {
            instances: Some(max.saturating_sub(u32::try_from(running).unwrap_or(u32::MAX))),
            vcpus: None,
            memory_mb: None,
        }))
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        if self.live(id).await?.is_none() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        self.qmp(id, "stop", None).await.map_err(qmp_error(id))?;
        Ok(())
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        if self.live(id).await?.is_none() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        self.qmp(id, "cont", None).await.map_err(qmp_error(id))?;
        Ok(())
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        let mut out = Vec::new();
        for (record, stat) in self.scan().await? {
            let state = self.state(&InstanceId(record.instance_id.clone())).await;
            out.push(to_instance(&record, &stat, state, &self.config.host));
        }
        Ok(out)
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for id in ids {
            if !seen.insert(id.as_str()) {
                continue;
            }
            let Some((record, stat)) = self.live(id).await? else {
                continue;
            };
            let pid = record.pid;
            let uptime_and_pages = blocking(move || {
                let pages = fs::read_to_string(format!("/proc/{pid}/statm"))
                    .ok()
                    .and_then(|t| procfs::parse_statm_resident(&t));
                let uptime = fs::read_to_string("/proc/uptime")
                    .ok()
                    .and_then(|t| procfs::parse_uptime(&t));
                (uptime, pages)
            })
            .await?;
            let (uptime, pages) = uptime_and_pages;
            let now = Instant::now();
            let sample = {
                let mut samples = lock(&self.cpu_samples);
                let sample = cpu_sample(
                    samples.get(id.as_str()),
                    stat.starttime,
                    stat.own_ticks(),
                    now,
                    uptime,
                    self.ticks_per_second,
                );
                samples.insert(id.as_str().to_string(), sample);
                sample
            };
            let steal_percent = self.steal_of(id, &record).await?;
            out.push((
                id.clone(),
                InstanceMetrics {
                    cpu_percent: sample.rate,
                    memory_mb: pages.unwrap_or(0).saturating_mul(self.page_size) as f64
                        / (1024.0 * 1024.0),
                    steal_percent,
                },
            ));
        }
        Ok(out)
    }
}

/// The QEMU command line of a VM whose files are in `dir`, its guest port forwarded
/// from `listen:port` on its host.
pub(crate) fn command_line(
    request: &CreateRequest,
    image: &image::VmImage,
    accel: Accel,
    dir: &Path,
    listen: std::net::IpAddr,
    port: u16,
) -> Vec<String> {
    let id = request.instance_id.as_str();
    let template = &request.template;
    let mut args: Vec<String> = vec![
        "-name".into(),
        format!("swell-{id}"),
        "-nodefaults".into(),
        "-no-user-config".into(),
        "-display".into(),
        "none".into(),
        "-machine".into(),
        "pc".into(),
        "-accel".into(),
        match accel {
            Accel::Kvm => "kvm".into(),
            _ => "tcg".into(),
        },
        "-cpu".into(),
        match accel {
            Accel::Kvm => "host".into(),
            _ => "max".into(),
        },
        "-smp".into(),
        template.vcpus.max(1).to_string(),
        "-m".into(),
        template.memory_mb.max(64).to_string(),
        "-smbios".into(),
        format!("type=1,serial={id}"),
        "-serial".into(),
        format!("file:{}", dir.join("console.log").display()),
        "-qmp".into(),
        format!("unix:{},server=on,wait=off", dir.join("qmp.sock").display()),
        "-netdev".into(),
        format!(
            "user,id=net0,restrict=on,hostfwd=tcp:{listen}:{port}-:{}",
            image.guest_port
        ),
        "-device".into(),
        "virtio-net-pci,netdev=net0".into(),
    ];
    if let Some(kernel) = &image.kernel {
        args.extend(["-kernel".into(), kernel.display().to_string()]);
        if let Some(initrd) = &image.initrd {
            args.extend(["-initrd".into(), initrd.display().to_string()]);
        }
        let cmdline = format!(
            "{} swell.port={} swell.instance={id}",
            image.cmdline, image.guest_port
        );
        args.extend(["-append".into(), cmdline.trim().to_string()]);
    }
    if image.disk.is_some() {
        args.extend([
            "-drive".into(),
            format!(
                "file={},if=virtio,format=qcow2",
                dir.join("disk.qcow2").display()
            ),
        ]);
    }
    if image.cloud_init {
        args.extend([
            "-drive".into(),
            format!(
                "file={},if=virtio,format=raw,readonly=on",
                dir.join(cloud_init::SEED_FILE).display()
            ),
        ]);
    }
    args
}

fn qmp_error(id: &InstanceId) -> impl Fn(QmpError) -> ProviderError + '_ {
    move |e| ProviderError::Backend(format!("VM {id}: {e}"))
}

fn to_instance(record: &Record, stat: &Stat, state: ObservedState, host: &str) -> ProviderInstance {
    ProviderInstance {
        instance_id: InstanceId(record.instance_id.clone()),
        tenant: record.tenant.clone(),
        group: record.group.clone(),
        native_id: stat.pid.to_string(),
        host: host.to_string(),
        address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, record.port))),
        state,
    }
}

/// Chooses the accelerator: KVM when `/dev/kvm` opens, QEMU starts a disk-less machine
/// on it with the host's CPU model, `query-kvm` says enabled, its firmware (SeaBIOS)
/// runs to "No bootable device" on its debug port within [`FIRMWARE_WAIT`], and the
/// host's kernel boots under KVM to its panic for want of a root within [`KERNEL_WAIT`]
/// (a host that cannot really run nested guests passed the firmware step when loaded,
/// but its kernels never boot); else TCG.
pub async fn probe_accel(qemu: &str) -> Accel {
    let probe = async {
        probe_kvm(qemu).await?;
        match host_kernel() {
            Some(kernel) => probe_kernel(qemu, &kernel).await,
            None => Ok(()),
        }
    };
    match probe.await {
        Ok(()) => Accel::Kvm,
        Err(why) => {
            tracing::info!("qemu provider: KVM unusable ({why}); using TCG");
            Accel::Tcg
        }
    }
}

async fn probe_kvm(qemu: &str) -> Result<(), String> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .map_err(|e| format!("/dev/kvm: {e}"))?;
    let dir = tempfile_dir().map_err(|e| format!("a probe directory: {e}"))?;
    let socket = dir.join("qmp.sock");
    let firmware_log = dir.join("firmware.log");
    let mut child = tokio::process::Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-machine",
            "pc",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "32",
            "-device",
            "isa-debugcon,iobase=0x402,chardev=firmware",
            "-chardev",
        ])
        .arg(format!("file,id=firmware,path={}", firmware_log.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", socket.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {qemu}: {e}"))?;
    let outcome = async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut conn = loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("QEMU exited ({status})"));
            }
            match Qmp::connect(&socket).await {
                Ok(conn) => break conn,
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        };
        let kvm = conn
            .execute("query-kvm", None)
            .await
            .map_err(|e| e.to_string())?;
        if kvm.get("enabled").and_then(serde_json::Value::as_bool) != Some(true) {
            return Err("query-kvm: not enabled".into());
        }
        // SeaBIOS writes its progress to the debug port; with no disk it ends with
        // "No bootable device." in milliseconds on a KVM host. A host whose KVM cannot
        // really run guests (nested, without hardware help) crawls: seconds for the
        // firmware, and a kernel that never boots.
        let deadline = tokio::time::Instant::now() + FIRMWARE_WAIT;
        loop {
            let log = fs::read_to_string(&firmware_log).unwrap_or_default();
            if log.contains("No bootable device") {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                let status = conn
                    .execute("query-status", None)
                    .await
                    .map(|s| qmp::run_state(&s).unwrap_or("?").to_string())
                    .unwrap_or_else(|e| e.to_string());
                return Err(format!(
                    "the firmware did not finish within {FIRMWARE_WAIT:?} under KVM (state {status})"
                ));
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = fs::remove_dir_all(&dir);
    outcome
}

/// How long a kernel may take, under KVM, from start to its panic for want of a root
/// file system (about a second on a KVM host; a loaded one gets more).
pub const KERNEL_WAIT: Duration = Duration::from_secs(20);

/// The host's newest kernel image (`/boot/vmlinuz-*`), to see KVM run a real kernel.
fn host_kernel() -> Option<PathBuf> {
    let mut kernels: Vec<PathBuf> = fs::read_dir("/boot")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .collect();
    kernels.sort();
    kernels.pop()
}

/// The firmware's pace alone misleads on a loaded host (under CI load a host whose KVM
/// cannot run guests once passed it): KVM must also boot `kernel` to its panic for want
/// of a root file system within [`KERNEL_WAIT`]. Where KVM cannot really run guests the
/// kernel stops at an emulation failure and never gets there.
async fn probe_kernel(qemu: &str, kernel: &Path) -> Result<(), String> {
    let dir = tempfile_dir().map_err(|e| format!("a probe directory: {e}"))?;
    let console = dir.join("console.log");
    let child = tokio::process::Command::new(qemu)
        .args([
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-no-reboot",
            "-machine",
            "pc",
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
        ])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1 root=/dev/nonexistent"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let outcome = match child {
        Err(e) => Err(format!("starting {qemu}: {e}")),
        Ok(mut child) => {
            let deadline = tokio::time::Instant::now() + KERNEL_WAIT;
            let panicked = || {
                let log = fs::read_to_string(&console).unwrap_or_default();
                log.contains("Kernel panic")
            };
            let outcome = loop {
                // Read after the exit check: a kernel that panicked lets QEMU exit.
                let exited = child.try_wait().ok().flatten();
                if panicked() {
                    break Ok(());
                }
                if tokio::time::Instant::now() >= deadline {
                    break Err(format!(
                        "{} did not boot under KVM within {KERNEL_WAIT:?}",
                        kernel.display()
                    ));
                }
                if let Some(status) = exited {
                    break Err(format!(
                        "QEMU exited ({status}) before {} booted under KVM",
                        kernel.display()
                    ));
                }
                tokio::time::sleep(POLL_INTERVAL).await;
            };
            let _ = child.start_kill();
            let _ = child.wait().await;
            outcome
        }
    };
    let _ = fs::remove_dir_all(&dir);
    outcome
}

/// A fresh private directory under the system's temporary directory.
fn tempfile_dir() -> std::io::Result<PathBuf> {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "swell-kvm-probe-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    fs::create_dir(&dir)?;
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
    Ok(dir)
}

/// The second field of `/proc/<pid>/task/<tid>/schedstat`: nanoseconds the thread
/// waited, runnable, on a run queue.
fn parse_schedstat_wait(text: &str) -> Option<u64> {
    text.split_whitespace().nth(1)?.parse().ok()
}

/// The next steal sample: the wait time gained since `prev` over the wall time times
/// the vCPUs, in percent; 0 for a first sample (or a new process).
fn steal_sample(
    prev: Option<&Sample>,
    starttime: u64,
    waited_ns: u64,
    now: Instant,
    vcpus: usize,
) -> Sample {
    let rate = match prev.filter(|p| p.starttime == starttime) {
        Some(prev) => {
            let elapsed = now.saturating_duration_since(prev.at);
            if elapsed < MIN_SAMPLE_INTERVAL {
                return *prev;
            }
            waited_ns.saturating_sub(prev.value) as f64
                / (elapsed.as_nanos() as f64 * vcpus.max(1) as f64)
                * 100.0
        }
        None => 0.0,
    };
    Sample {
        starttime,
        value: waited_ns,
        at: now,
        rate: if rate.is_finite() {
            rate.clamp(0.0, 100.0)
        } else {
            0.0
        },
    }
}

/// The next CPU sample of a QEMU process: ticks since `prev` over the wall time, in
/// percent of one core; a first sample averages since the process started.
fn cpu_sample(
    prev: Option<&Sample>,
    starttime: u64,
    ticks: u64,
    now: Instant,
    uptime_s: Option<f64>,
    ticks_per_second: f64,
) -> Sample {
    let rate = match prev.filter(|p| p.starttime == starttime) {
        Some(prev) => {
            let elapsed = now.saturating_duration_since(prev.at);
            if elapsed < MIN_SAMPLE_INTERVAL {
                return *prev;
            }
            ticks.saturating_sub(prev.value) as f64 / ticks_per_second / elapsed.as_secs_f64()
                * 100.0
        }
        None => match uptime_s {
            Some(uptime) => {
                let lifetime = uptime - starttime as f64 / ticks_per_second;
                if lifetime >= MIN_SAMPLE_INTERVAL.as_secs_f64() {
                    ticks as f64 / ticks_per_second / lifetime * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        },
    };
    Sample {
        starttime,
        value: ticks,
        at: now,
        rate: if rate.is_finite() { rate.max(0.0) } else { 0.0 },
    }
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    procfs::parse_stat(&text).filter(|s| s.pid == pid)
}

/// Whether the recorded QEMU still runs (same pid, same start time, not a zombie).
fn alive(record: &Record) -> bool {
    read_stat(record.pid).is_some_and(|s| s.starttime == record.starttime && !s.is_exited())
}

/// The record's QEMU if it lives and is this VM's: same pid and start time, and the
/// instance id in its command line (its SMBIOS serial).
/// A record written before its QEMU started takes the pid from QEMU's pid file.
fn find_live(instances: &Path, mut record: Record) -> Option<(Record, Stat)> {
    if record.pid == 0 {
        let pid_file = instances.join(&record.instance_id).join(PID_FILE);
        record.pid = fs::read_to_string(pid_file).ok()?.trim().parse().ok()?;
        record.starttime = read_stat(record.pid)?.starttime;
    }
    let stat =
        read_stat(record.pid).filter(|s| s.starttime == record.starttime && !s.is_exited())?;
    let cmdline = fs::read(format!("/proc/{}/cmdline", record.pid)).ok()?;
    let serial = format!("type=1,serial={}", record.instance_id);
    cmdline
        .split(|b| *b == 0)
        .any(|arg| arg == serial.as_bytes())
        .then_some((record, stat))
}

/// Instance ids become directory names: no separators, no `.` or `..`.
fn check_instance_id(id: &InstanceId) -> Result<(), ProviderError> {
    let s = id.as_str();
    let ok = !s.is_empty()
        && s.len() <= 64
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Backend(format!(
            "instance id `{s}` must be 1 to 64 ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::Backend(format!("blocking task failed: {e}")))
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steal_is_the_wait_gained_over_wall_time_and_vcpus() {
        let t0 = Instant::now();
        let first = steal_sample(None, 7, 1_000_000_000, t0, 2);
        assert_eq!(first.rate, 0.0);
        // 1 s later, 1 s more waited over 2 vCPUs: 50 %.
        let second = steal_sample(
            Some(&first),
            7,
            2_000_000_000,
            t0 + Duration::from_secs(1),
            2,
        );
        assert!((second.rate - 50.0).abs() < 1e-9, "{}", second.rate);
        // One vCPU that waited 0.25 s of 1 s: 25 %.
        let one = steal_sample(
            Some(&second),
            7,
            2_250_000_000,
            t0 + Duration::from_secs(2),
            1,
        );
        assert!((one.rate - 25.0).abs() < 1e-9, "{}", one.rate);
        // Too soon: the previous sample stands.
        let soon = steal_sample(
            Some(&one),
            7,
            2_300_000_000,
            t0 + Duration::from_millis(2010),
            1,
        );
        assert_eq!(soon, one);
        // A new QEMU (another start time) starts over; a counter going back gives 0.
        assert_eq!(
            steal_sample(Some(&one), 8, 5, t0 + Duration::from_secs(3), 1).rate,
            0.0
        );
        assert_eq!(
            steal_sample(Some(&one), 7, 5, t0 + Duration::from_secs(3), 1).rate,
            0.0
        );
    }

    #[test]
    fn cpu_is_ticks_over_wall_time() {
        let t0 = Instant::now();
        // Started 10 s after boot, now 20 s: 5 s of CPU is 50 %.
        let first = cpu_sample(None, 1000, 500, t0, Some(20.0), 100.0);
        assert!((first.rate - 50.0).abs() < 1e-9);
        // 2 s later, 300 ticks more: 150 % (two busy vCPU threads).
        let second = cpu_sample(
            Some(&first),
            1000,
            800,
            t0 + Duration::from_secs(2),
            None,
            100.0,
        );
        assert!((second.rate - 150.0).abs() < 1e-9, "{}", second.rate);
    }

    #[test]
    fn schedstat_wait_is_the_second_field() {
        assert_eq!(parse_schedstat_wait("123 456 7\n"), Some(456));
        assert_eq!(parse_schedstat_wait("123"), None);
        assert_eq!(parse_schedstat_wait("1 x 2"), None);
    }

    #[test]
    fn accelerators_parse_and_print() {
        for a in [Accel::Auto, Accel::Kvm, Accel::Tcg] {
            assert_eq!(a.to_string().parse::<Accel>(), Ok(a));
        }
        assert!(
            "xen"
                .parse::<Accel>()
                .unwrap_err()
                .contains("auto, kvm or tcg")
        );
    }

    #[test]
    fn a_record_of_another_process_is_not_live() {
        // Our own process: right pid and start time, but no VM serial on its command line.
        let me = std::process::id() as i32;
        let stat = read_stat(me).unwrap();
        let record = Record {
            instance_id: "web-1".into(),
            tenant: "t".into(),
            group: "g".into(),
            port: 1,
            pid: me,
            starttime: stat.starttime,
            vcpus: 1,
            memory_mb: 128,
        };
        assert!(alive(&record));
        assert!(find_live(Path::new("/nonexistent"), record.clone()).is_none());
        let other_start = Record {
            starttime: stat.starttime + 1,
            ..record
        };
        assert!(!alive(&other_start));
    }

    #[test]
    fn a_record_written_before_qemu_started_finds_it_by_its_pid_file() {
        // A process whose command line carries the VM's serial, as QEMU's does.
        let mut vm = std::process::Command::new("sh")
            .args(["-c", "read _", "sh", "type=1,serial=web-1"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let instances = tempfile::tempdir().unwrap();
        let dir = instances.path().join("web-1");
        fs::create_dir_all(&dir).unwrap();
        let starting = Record {
            instance_id: "web-1".into(),
            tenant: "t".into(),
            group: "g".into(),
            port: 1,
            pid: 0,
            starttime: 0,
            vcpus: 1,
            memory_mb: 128,
        };
        // Killed before QEMU wrote its pid file: nothing is live.
        assert!(find_live(instances.path(), starting.clone()).is_none());
        // A pid file naming another process (ours, without the serial): not it.
        fs::write(dir.join(PID_FILE), format!("{}\n", std::process::id())).unwrap();
        assert!(find_live(instances.path(), starting.clone()).is_none());
        fs::write(dir.join(PID_FILE), format!("{}\n", vm.id())).unwrap();
        let (found, stat) = find_live(instances.path(), starting).expect("the VM is found");
        assert_eq!(found.pid, vm.id() as i32);
        assert_eq!(found.starttime, stat.starttime);
        assert!(alive(&found));
        vm.kill().unwrap();
        vm.wait().unwrap();
        assert!(!alive(&found));
    }

    #[test]
    fn instance_ids_must_be_short_directory_names() {
        assert!(
            check_instance_id(&InstanceId("0190b3c4-7e4f-7000-8000-000000000000".into())).is_ok()
        );
        for bad in ["", ".", "..", "a/b", "a b", &"x".repeat(65)] {
            assert!(
                check_instance_id(&InstanceId(bad.to_string())).is_err(),
                "{bad}"
            );
        }
    }
}
