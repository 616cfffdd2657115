//! The process provider: every instance is a local child process.
//!
//! An instance runs its template's `command` (an argv list, no shell) with a free
//! `127.0.0.1` port chosen here and substituted for `{port}` in every argument and in
//! the template's `env` values.
//!
//! **Contained.** The process starts with a cleared environment holding only `PATH`
//! (the server's, or a fixed default), `HOME` (its own directory), the template's
//! `env`, and Swell's `SWELL_INSTANCE_ID`, `SWELL_GROUP`, `SWELL_TENANT`,
//! `SWELL_OWNER` and `PORT`: no variable of the server (its admin password, secret
//! key, database URL, cloud credentials) reaches it. Its working directory is its own
//! directory `instances_dir/<instance_id>/`, which also holds its `stdout.log` and
//! `stderr.log` (never removed by the provider). With an
//! [instance user](ProcessConfig::instance_user) it runs as that unprivileged user
//! (and its primary group), and its directory belongs to that user. Each instance gets
//! a cgroup of its own with CPU, memory and pids limits from its template (see
//! [`cgroup`] for the modes), entered before the instance's program runs: the process
//! starts as `/bin/sh` waiting on a pipe, the provider moves it into the cgroup,
//! records it, and only then lets it `exec` the program (same pid, same process group;
//! no fork happens in between, so nothing escapes the cgroup).
//!
//! **Found from what Swell recorded.** When it starts an instance the provider writes
//! a record (instance id, tenant, group, port, pid and the process's start time from
//! `/proc/<pid>/stat`) into `records_dir/<owner>/`, a directory no instance can write
//! when instances run as another user. [`list`](crate::Provider::list) (also after a
//! restart, which is how a new server adopts what an earlier one started) reads these
//! records and asks the kernel which processes belong to each instance: the processes
//! in its cgroup, or without cgroups the recorded process (same pid *and* start time)
//! and its process group. What a process says about itself (its environment) is never
//! read: a process started outside Swell with forged `SWELL_*` variables is not an
//! instance.
//!
//! Each instance gets its own process group, so that a Ctrl-C on the server's terminal
//! does not reach it and it outlives a `kill -9` of the server; signals (stop, pause,
//! resume) go to every process of the instance.
//!
//! Metrics are read from `/proc/<pid>/stat` and `statm`, summed over the instance's
//! processes: CPU in percent of one core since this provider's previous sample of
//! the instance (the first sample: the average since the process started), resident
//! memory in MiB.
//!
//! Linux only (it reads `/proc`).
//!
//! ```no_run
//! use std::time::Duration;
//! use swell_core::{InstanceId, Template, TenantId};
//! use swell_providers::process::{ProcessConfig, ProcessProvider};
//! use swell_providers::{CreateRequest, Provider};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let provider = ProcessProvider::new(ProcessConfig::new(
//!     "swell-data/instances",
//!     "server-1f3a",
//! ));
//! let web = provider
//!     .create(&CreateRequest {
//!         instance_id: InstanceId("web-0001".into()),
//!         tenant: TenantId::default_tenant(),
//!         group: "web".into(),
//!         template: Template {
//!             command: vec!["swell".into(), "demo-app".into(), "--port".into(), "{port}".into()],
//!             ..Template::default()
//!         },
//!     })
//!     .await?;
//! println!("pid {} serving on {:?}", web.native_id, web.address);
//! provider.delete(&web.instance_id, Duration::from_secs(10)).await?;
//! # Ok(())
//! # }
//! ```

pub mod cgroup;
pub(crate) mod procfs;

use crate::records::{read_record, read_records, record_path, write_record};
use crate::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use cgroup::{CgroupMode, Cgroups, Limits};
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, SysconfVar, sysconf};
use procfs::Stat;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use swell_core::InstanceId;

/// Environment variable carrying the instance's id.
pub const ENV_INSTANCE_ID: &str = "SWELL_INSTANCE_ID";
/// Environment variable carrying the instance's group name.
pub const ENV_GROUP: &str = "SWELL_GROUP";
/// Environment variable carrying the instance's tenant.
pub const ENV_TENANT: &str = "SWELL_TENANT";
/// Environment variable carrying the owning server's tag (informational: the provider
/// never reads it back).
pub const ENV_OWNER: &str = "SWELL_OWNER";
/// Environment variable carrying the port the instance must listen on.
pub const ENV_PORT: &str = "PORT";
/// The `PATH` of instances when the server has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The script of the shell an instance starts as when it gets a cgroup: it waits until
/// the provider has put it into its cgroup and recorded it (one line on stdin; end of
/// file, when the server died first, means "do not start"), then becomes the program,
/// same pid. `SWELL_OWNER` comes as its first argument and joins the environment only
/// then, so that a process still waiting at the gate carries no ownership tag: whoever
/// tells instances by their tags (an operator's `ps e`, the end-to-end tests) sees one
/// only once it is recorded and runs its program.
const GATE: &str = "IFS= read -r go || exit 125; SWELL_OWNER=$1; export SWELL_OWNER; shift; exec \"$@\" </dev/null";

/// How often delete, pause and resume look at a process while they wait for it.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long delete waits for a process to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long pause and resume wait for the process to show its new state.
const STATE_WAIT: Duration = Duration::from_secs(1);
/// How long a port handed out stays reserved, so that two instances started in quick
/// succession (before the first one binds) do not get the same port.
const PORT_RESERVATION: Duration = Duration::from_secs(60);
/// Samples closer together than this are too noisy to compute a CPU rate from.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// CPU samples of processes not seen for this long are forgotten.
const SAMPLE_RETENTION: Duration = Duration::from_secs(600);

/// How to build a [`ProcessProvider`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Where the instances' directories go (`<instances_dir>/<instance_id>/`: their
    /// working directory, `HOME` and logs).
    pub instances_dir: PathBuf,
    /// Where the provider records the instances it started (`<records_dir>/<owner>/`).
    /// Must not be writable by instances: it is what adoption trusts.
    pub records_dir: PathBuf,
    /// The tag of the Swell server that owns the instances (unique per server, e.g.
    /// derived from its data dir). It names the records' and the cgroups' parent.
    pub owner: String,
    /// Whether to put instances in cgroups when the host allows it (probed when the
    /// provider is built); `false`: never.
    pub cgroups: bool,
    /// The most processes and threads one instance may have at once (cgroups only).
    pub pids_max: u32,
    /// Run instances as this unprivileged user instead of the server's.
    pub instance_user: Option<InstanceUser>,
}

impl ProcessConfig {
    /// Instances in `instances_dir`, records in its sibling `process-records`, owned by
    /// `owner`; cgroups when the host has them, [`cgroup::DEFAULT_PIDS_MAX`] processes
    /// each, run as the server's user.
    pub fn new(instances_dir: impl Into<PathBuf>, owner: impl Into<String>) -> Self {
        let instances_dir = instances_dir.into();
        let records_dir = instances_dir.parent().map_or_else(
            || PathBuf::from("process-records"),
            |p| p.join("process-records"),
        );
        ProcessConfig {
            instances_dir,
            records_dir,
            owner: owner.into(),
            cgroups: true,
            pids_max: cgroup::DEFAULT_PIDS_MAX,
            instance_user: None,
        }
    }
}

/// The unprivileged user instances run as (`swell serve --instance-user`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceUser {
    /// Its name.
    pub name: String,
    /// Its user id.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

/// Why an instance user cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum InstanceUserError {
    /// No such user on this host.
    #[error("instance user `{0}` does not exist on this host")]
    NoSuchUser(String),
    /// The user is root: that would contain nothing.
    #[error("instance user `{0}` has uid 0: instances must run as an unprivileged user")]
    Root(String),
    /// Only root can start processes as another user.
    #[error(
        "instance user `{0}`: the server runs as uid {1}, and only root can start processes as another user"
    )]
    NotRoot(String, u32),
    /// The user database could not be read.
    #[error("looking up instance user `{0}`: {1}")]
    Lookup(String, #[source] nix::Error),
    /// The user cannot reach the instances' directories.
    #[error(
        "instance user `{user}` cannot enter {} (mode {mode:o}); make it searchable (chmod o+x)",
        dir.display()
    )]
    Unreachable {
        /// The user.
        user: String,
        /// The directory it cannot enter.
        dir: PathBuf,
        /// Its mode.
        mode: u32,
    },
}

impl InstanceUser {
    /// Looks `name` up in the host's user database; refuses root, and refuses when the
    /// server cannot switch users (it does not run as root).
    pub fn lookup(name: &str) -> Result<Self, InstanceUserError> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| InstanceUserError::Lookup(name.to_string(), e))?
            .ok_or_else(|| InstanceUserError::NoSuchUser(name.to_string()))?;
        if user.uid.is_root() {
            return Err(InstanceUserError::Root(name.to_string()));
        }
        let euid = nix::unistd::geteuid();
        if !euid.is_root() && euid != user.uid {
            return Err(InstanceUserError::NotRoot(name.to_string(), euid.as_raw()));
        }
        Ok(InstanceUser {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// Checks that the user can enter `dir` (every directory on the way must be
    /// searchable by it), so that a data directory made `0700` is reported at start,
    /// not as a failure of every instance.
    pub fn check_reach(&self, dir: &Path) -> Result<(), InstanceUserError> {
        for ancestor in dir.ancestors() {
            let Ok(meta) = fs::metadata(ancestor) else {
                continue;
            };
            let mode = meta.mode();
            let can = if meta.uid() == self.uid {
                mode & 0o100 != 0
            } else if meta.gid() == self.gid {
                mode & 0o010 != 0
            } else {
                mode & 0o001 != 0
            };
            if !can {
                return Err(InstanceUserError::Unreachable {
                    user: self.name.clone(),
                    dir: ancestor.to_path_buf(),
                    mode: mode & 0o7777,
                });
            }
        }
        Ok(())
    }
}

/// What the provider writes down when it starts an instance: all that adoption trusts.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Record {
    instance_id: String,
    tenant: String,
    group: String,
    port: u16,
    /// The process the provider started.
    pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22): a reused pid is not it.
    starttime: u64,
}

impl crate::records::Record for Record {
    const WHAT: &'static str = "an instance record";
    fn instance_id(&self) -> &str {
        &self.instance_id
    }
}

/// The previous CPU reading of one instance, for the next rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// The representative's start time: guards against pid reuse.
    starttime: u64,
    /// CPU ticks used so far.
    ticks: u64,
    /// When they were read.
    at: Instant,
    /// The rate computed at that reading, in percent of one core.
    percent: f64,
}

/// Runs instances as local processes; see the [module docs](self).
#[derive(Debug)]
pub struct ProcessProvider {
    config: ProcessConfig,
    /// `records_dir/<owner>`.
    records_dir: PathBuf,
    /// The instances' cgroups (mode chosen when built).
    cgroups: Cgroups,
    /// The `PATH` instances get.
    path: String,
    /// Serialises creates, so that two creates of one id cannot both start a process.
    create_lock: tokio::sync::Mutex<()>,
    /// Ports handed out recently, with when.
    recent_ports: Mutex<HashMap<u16, Instant>>,
    /// Previous CPU readings, by representative pid.
    samples: Mutex<HashMap<i32, Sample>>,
    /// Clock ticks per second (`_SC_CLK_TCK`).
    ticks_per_second: f64,
    /// Bytes per memory page.
    page_size: u64,
}

impl ProcessProvider {
    /// Builds the provider: chooses the cgroup mode (and logs it) and makes the
    /// owner's parent cgroups; no instance is started or read until it is used.
    pub fn new(config: ProcessConfig) -> Self {
        let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            _ => 100.0,
        };
        let page_size = match sysconf(SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p as u64,
            _ => 4096,
        };
        let cgroups = if config.cgroups {
            Cgroups::probe(&config.owner)
        } else {
            tracing::info!("process instances run without cgroups (turned off)");
            Cgroups::none()
        };
        let path = std::env::var("PATH")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.to_string());
        Self {
            records_dir: config
                .records_dir
                .join(cgroup::owner_dir_name(&config.owner)),
            config,
            cgroups,
            path,
            create_lock: tokio::sync::Mutex::new(()),
            recent_ports: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
            ticks_per_second,
            page_size,
        }
    }

    /// The ownership tag this provider manages.
    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// The directory holding an instance's `stdout.log` and `stderr.log`: its working
    /// directory and `HOME`.
    pub fn log_dir(&self, id: &InstanceId) -> PathBuf {
        self.config.instances_dir.join(id.as_str())
    }

    /// The cgroup mode chosen when the provider was built.
    pub fn cgroup_mode(&self) -> CgroupMode {
        self.cgroups.mode()
    }

    /// The instance's cgroup directories (one per hierarchy; none without cgroups).
    pub fn cgroup_dirs(&self, id: &InstanceId) -> Vec<PathBuf> {
        self.cgroups.dirs(id.as_str())
    }

    /// This owner's parent cgroups, which hold its instances' cgroups.
    pub fn cgroup_parents(&self) -> &[PathBuf] {
        self.cgroups.parents()
    }

    /// This owner's live instances, one entry each; `with_members` also finds every
    /// process of each (for metrics), which without cgroups takes a look at every
    /// process's stat.
    async fn scan(&self, with_members: bool) -> Result<Vec<Found>, ProviderError> {
        let records_dir = self.records_dir.clone();
        let cgroups = self.cgroups.clone();
        blocking(move || {
            let mut stats = None;
            read_records(&records_dir)
                .into_iter()
                .filter_map(|record| find_live(record, &cgroups, with_members, &mut stats))
                .collect()
        })
        .await
    }

    /// The record of one instance, if there is one.
    async fn record(&self, id: &InstanceId) -> Result<Option<Record>, ProviderError> {
        let path = record_path(&self.records_dir, id.as_str());
        blocking(move || read_record(&path)).await
    }

    /// The live processes of an instance (by its cgroup, or its record).
    async fn members(
        &self,
        id: &InstanceId,
        record: Option<Record>,
    ) -> Result<Vec<Stat>, ProviderError> {
        let cgroups = self.cgroups.clone();
        let id = id.as_str().to_string();
        blocking(move || live_members(&id, record.as_ref(), &cgroups, &mut None)).await
    }

    /// Sends `sig` to every process of the instance; whether there was any.
    async fn signal(
        &self,
        id: &InstanceId,
        record: Option<&Record>,
        sig: Signal,
    ) -> Result<bool, ProviderError> {
        let members = self.members(id, record.cloned()).await?;
        signal_members(&members, record, self.cgroups.enabled(), sig)?;
        Ok(!members.is_empty())
    }

    /// Waits until the instance has no live process or `deadline` passes; whether it
    /// has none. With `kill`, every process seen meanwhile gets SIGKILL (a fork loop
    /// keeps making new ones until its last member is dead).
    async fn wait_gone(
        &self,
        id: &InstanceId,
        record: Option<&Record>,
        deadline: tokio::time::Instant,
        kill: bool,
    ) -> Result<bool, ProviderError> {
        loop {
            let members = self.members(id, record.cloned()).await?;
            if members.is_empty() {
                return Ok(true);
            }
            if kill {
                signal_members(&members, record, self.cgroups.enabled(), Signal::SIGKILL)?;
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// A free port on 127.0.0.1 that no instance of ours uses or was just given.
    fn pick_port(&self, in_use: &HashSet<u16>) -> Result<u16, ProviderError> {
        let mut recent = lock(&self.recent_ports);
        recent.retain(|_, at| at.elapsed() < PORT_RESERVATION);
        for _ in 0..64 {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| {
                ProviderError::Io {
                    action: "binding a free port on 127.0.0.1".into(),
                    source,
                }
            })?;
            let port = listener
                .local_addr()
                .map_err(|source| ProviderError::Io {
                    action: "reading a bound port".into(),
                    source,
                })?
                .port();
            drop(listener);
            if !in_use.contains(&port) && !recent.contains_key(&port) {
                recent.insert(port, Instant::now());
                return Ok(port);
            }
        }
        Err(ProviderError::NoCapacity(
            "no free port on 127.0.0.1 after 64 tries".into(),
        ))
    }

    /// Pause or resume: `sig` to every process of the instance, again to those that
    /// have not changed state yet (new ones a fork made meanwhile), until all show it.
    async fn stop_or_continue(&self, id: &InstanceId, sig: Signal) -> Result<(), ProviderError> {
        let record = self.record(id).await?;
        if !self.signal(id, record.as_ref(), sig).await? {
            return Err(ProviderError::NotFound(id.clone()));
        }
        let stopped = sig == Signal::SIGSTOP;
        let deadline = tokio::time::Instant::now() + STATE_WAIT;
        loop {
            let members = self.members(id, record.clone()).await?;
            let behind: Vec<Stat> = members
                .into_iter()
                .filter(|s| s.is_stopped() != stopped)
                .collect();
            if behind.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            signal_members(&behind, record.as_ref(), self.cgroups.enabled(), sig)?;
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Removes the instance's cgroups (retrying while the kernel still counts an
    /// exiting process in them) and its record.
    async fn forget(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let cgroups = self.cgroups.clone();
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        loop {
            let (c, i) = (cgroups.clone(), id.as_str().to_string());
            match blocking(move || c.remove(&i)).await? {
                Ok(()) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(ProviderError::Io {
                        action: format!("removing the cgroup of instance {id}"),
                        source: e,
                    });
                }
                Err(_) => tokio::time::sleep(POLL_INTERVAL).await,
            }
        }
        let path = record_path(&self.records_dir, id.as_str());
        blocking(move || match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ProviderError::Io {
                action: format!("removing {}", path.display()),
                source: e,
            }),
            _ => Ok(()),
        })
        .await?
    }

    /// The readings of the instances found, by instance id: CPU since the previous
    /// reading of the same process, and resident memory.
    async fn measure(
        &self,
        found: Vec<Found>,
    ) -> Result<HashMap<InstanceId, InstanceMetrics>, ProviderError> {
        let (readings, uptime) = blocking(move || {
            let readings = read_usage(found);
            let uptime = fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|text| procfs::parse_uptime(&text));
            (readings, uptime)
        })
        .await?;

        let now = Instant::now();
        let mut samples = lock(&self.samples);
        let mut by_id: HashMap<InstanceId, InstanceMetrics> = HashMap::new();
        for reading in &readings {
            let sample = next_sample(
                samples.get(&reading.pid),
                reading.starttime,
                reading.ticks,
                now,
                uptime,
                self.ticks_per_second,
            );
            samples.insert(reading.pid, sample);
            by_id
                .entry(InstanceId(reading.instance_id.clone()))
                .or_insert(InstanceMetrics {
                    cpu_percent: sample.percent,
                    memory_mb: (reading.resident_pages.saturating_mul(self.page_size)) as f64
                        / (1024.0 * 1024.0),
                    steal_percent: None,
                });
        }
        samples.retain(|_, s| now.saturating_duration_since(s.at) < SAMPLE_RETENTION);
        drop(samples);
        Ok(by_id)
    }

    /// The environment of a new instance: nothing of the server's but `PATH`.
    fn environment(
        &self,
        request: &CreateRequest,
        dir: &Path,
        port: u16,
    ) -> BTreeMap<String, String> {
        let port_text = port.to_string();
        instance_env(
            &self.path,
            dir,
            request
                .template
                .env
                .iter()
                .map(|(name, value)| (name.clone(), value.replace("{port}", &port_text))),
            [
                (ENV_INSTANCE_ID, request.instance_id.as_str()),
                (ENV_GROUP, request.group.as_str()),
                (ENV_TENANT, request.tenant.as_str()),
                (ENV_OWNER, self.config.owner.as_str()),
                (ENV_PORT, port_text.as_str()),
            ],
        )
    }
}

/// An instance's environment, built from nothing: `PATH` and `HOME`, then the
/// template's variables (which may replace those two), then Swell's (which win).
fn instance_env(
    path: &str,
    home: &Path,
    template: impl IntoIterator<Item = (String, String)>,
    swell: impl IntoIterator<Item = (&'static str, impl Into<String>)>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    env.insert("PATH".to_string(), path.to_string());
    env.insert("HOME".to_string(), home.display().to_string());
    env.extend(template);
    env.extend(swell.into_iter().map(|(k, v)| (k.to_string(), v.into())));
    env
}

#[async_trait]
impl Provider for ProcessProvider {
    fn name(&self) -> &str {
        "process"
    }

    async fn create(&self, request: &CreateRequest) -> Result<ProviderInstance, ProviderError> {
        let id = &request.instance_id;
        check_instance_id(id)?;
        let command = &request.template.command;
        let Some(program) = command.first() else {
            return Err(ProviderError::InvalidTemplate(
                "the process provider needs a non-empty `command`".into(),
            ));
        };

        let _serial = self.create_lock.lock().await;
        let owned = self.scan(false).await?;
        if let Some(existing) = owned.iter().find(|f| f.record.instance_id == id.as_str()) {
            return Ok(existing.to_instance());
        }
        let in_use: HashSet<u16> = owned.iter().map(|f| f.record.port).collect();
        let port = self.pick_port(&in_use)?;

        let dir = self.log_dir(id);
        let user = self.config.instance_user.clone();
        let logs_dir = dir.clone();
        let (stdout, stderr) = blocking(move || open_logs(&logs_dir, user.as_ref())).await??;

        let mut env = self.environment(request, &dir, port);
        let port_text = port.to_string();
        let program = program.replace("{port}", &port_text);
        let args: Vec<String> = command[1..]
            .iter()
            .map(|a| a.replace("{port}", &port_text))
            .collect();
        let gated = self.cgroups.enabled();
        let mut cmd = if gated {
            let limits = Limits::new(
                request.template.vcpus,
                request.template.memory_mb,
                self.config.pids_max,
            );
            let (cgroups, cg_id) = (self.cgroups.clone(), id.as_str().to_string());
            blocking(move || cgroups.prepare(&cg_id, &limits))
                .await?
                .map_err(|source| ProviderError::Io {
                    action: format!("making the cgroup of instance {id}"),
                    source,
                })?;
            let path = env.get("PATH").map_or("", String::as_str);
            let resolved =
                resolve_program(&program, path, &dir).map_err(|e| spawn_error(&program, e))?;
            let owner = env.remove(ENV_OWNER).unwrap_or_default();
            let mut cmd = tokio::process::Command::new("/bin/sh");
            cmd.arg("-c")
                .arg(GATE)
                .arg("swell-gate")
                .arg(owner)
                .arg(resolved)
                .args(&args)
                .stdin(Stdio::piped());
            cmd
        } else {
            let mut cmd = tokio::process::Command::new(&program);
            cmd.args(&args).stdin(Stdio::null());
            cmd
        };
        cmd.env_clear()
            .envs(&env)
            .current_dir(&dir)
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        if let Some(user) = &self.config.instance_user {
            cmd.uid(user.uid).gid(user.gid);
        }
        let mut child = cmd.spawn().map_err(|e| spawn_error(&program, e))?;
        let Some(pid) = child.id() else {
            return Err(ProviderError::Backend(format!(
                "`{program}` exited before its pid was read"
            )));
        };
        let pid = pid as i32;
        let gate = child.stdin.take();
        let started = self.record_start(request, port, pid, gated).await;
        let started = match (started, gate) {
            (Ok(()), Some(mut gate)) => {
                use tokio::io::AsyncWriteExt;
                gate.write_all(b"go\n")
                    .await
                    .map_err(|source| ProviderError::Io {
                        action: format!("starting instance {id} (pid {pid})"),
                        source,
                    })
            }
            (other, _) => other,
        };
        if let Err(e) = started {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(e);
        }
        // Reap it when it exits, so that an exited instance does not linger as a
        // zombie. If the runtime goes away first, tokio's orphan queue reaps it.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        tracing::info!(instance = %id, pid, port, cgroup = %self.cgroups.mode(), "started process instance");

        Ok(ProviderInstance {
            instance_id: id.clone(),
            tenant: request.tenant.as_str().to_string(),
            group: request.group.clone(),
            native_id: pid.to_string(),
            host: "localhost".into(),
            address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            state: ObservedState::Running,
        })
    }

    async fn delete(&self, id: &InstanceId, grace: Duration) -> Result<(), ProviderError> {
        check_instance_id(id)?;
        let record = self.record(id).await?;
        if self.signal(id, record.as_ref(), Signal::SIGTERM).await? {
            // A paused process only sees the SIGTERM once it runs again.
            self.signal(id, record.as_ref(), Signal::SIGCONT).await?;
            let deadline = tokio::time::Instant::now() + grace;
            if self.wait_gone(id, record.as_ref(), deadline, false).await? {
                tracing::info!(instance = %id, "process instance stopped");
            } else {
                tracing::warn!(instance = %id, ?grace, "process instance ignored SIGTERM; killing it");
                let (c, i) = (self.cgroups.clone(), id.as_str().to_string());
                blocking(move || c.kill_all(&i)).await?;
                let deadline = tokio::time::Instant::now() + KILL_WAIT;
                if !self.wait_gone(id, record.as_ref(), deadline, true).await? {
                    let pid = record.as_ref().map_or(0, |r| r.pid);
                    return Err(ProviderError::Backend(format!(
                        "instance {id} (pid {pid}) still runs {KILL_WAIT:?} after SIGKILL"
                    )));
                }
            }
        }
        self.forget(id).await
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.stop_or_continue(id, Signal::SIGSTOP).await
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.stop_or_continue(id, Signal::SIGCONT).await
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        Ok(self
            .scan(false)
            .await?
            .iter()
            .map(Found::to_instance)
            .collect())
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted: HashSet<&str> = ids.iter().map(InstanceId::as_str).collect();
        let found: Vec<Found> = self
            .scan(true)
            .await?
            .into_iter()
            .filter(|f| wanted.contains(f.record.instance_id.as_str()))
            .collect();
        let by_id = self.measure(found).await?;
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for id in ids {
            if let Some(m) = by_id.get(id)
                && seen.insert(id.as_str())
            {
                out.push((id.clone(), *m));
            }
        }
        Ok(out)
    }

    /// One `/proc` pass lists the instances and measures the live ones (the default
    /// would make two).
    async fn observe(&self) -> Result<crate::Observation, ProviderError> {
        let found = self.scan(true).await?;
        let instances: Vec<ProviderInstance> = found.iter().map(Found::to_instance).collect();
        let live: Vec<Found> = found
            .into_iter()
            .filter(|f| f.state() != ObservedState::Exited)
            .collect();
        let measured = !live.is_empty();
        let (readings, metrics_error) = match self.measure(live).await {
            Ok(readings) => (readings, None),
            Err(e) => (HashMap::new(), Some(e)),
        };
        Ok(crate::Observation::joined(
            instances,
            readings,
            measured,
            metrics_error,
        ))
    }
}

impl ProcessProvider {
    /// Puts a just-spawned process into its cgroup (when `gated`: it waits at the gate
    /// until then) and writes its record.
    async fn record_start(
        &self,
        request: &CreateRequest,
        port: u16,
        pid: i32,
        gated: bool,
    ) -> Result<(), ProviderError> {
        let id = request.instance_id.as_str().to_string();
        let record_file = record_path(&self.records_dir, &id);
        let records_dir = self.records_dir.clone();
        let cgroups = self.cgroups.clone();
        let tenant = request.tenant.as_str().to_string();
        let group = request.group.clone();
        blocking(move || {
            if gated {
                cgroups
                    .place(&id, pid)
                    .map_err(|source| ProviderError::Io {
                        action: format!("moving pid {pid} into the cgroup of instance {id}"),
                        source,
                    })?;
            }
            // The spawned process has not been reaped, so its stat is there even if it
            // exited at once.
            let starttime = read_stat(pid).map(|s| s.starttime).ok_or_else(|| {
                ProviderError::Backend(format!("pid {pid} of instance {id} vanished at start"))
            })?;
            write_record(
                &records_dir,
                &record_file,
                &Record {
                    instance_id: id,
                    tenant,
                    group,
                    port,
                    pid,
                    starttime,
                },
            )
        })
        .await?
    }
}

/// One live instance of ours: its record and the processes found for it.
#[derive(Debug, Clone)]
struct Found {
    record: Record,
    /// The process that stands for it: the recorded one while it lives, else the
    /// oldest of what it left behind.
    stat: Stat,
    /// Every live process of the instance (only when asked for).
    members: Vec<Stat>,
}

impl Found {
    fn state(&self) -> ObservedState {
        if self.stat.is_exited() {
            ObservedState::Exited
        } else if self.stat.is_stopped() {
            ObservedState::Paused
        } else {
            ObservedState::Running
        }
    }

    fn to_instance(&self) -> ProviderInstance {
        ProviderInstance {
            instance_id: InstanceId(self.record.instance_id.clone()),
            tenant: self.record.tenant.clone(),
            group: self.record.group.clone(),
            native_id: self.stat.pid.to_string(),
            host: "localhost".into(),
            address: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, self.record.port))),
            state: self.state(),
        }
    }
}

/// The instance of `record` if any of its processes lives.
fn find_live(
    record: Record,
    cgroups: &Cgroups,
    with_members: bool,
    stats: &mut Option<Vec<Stat>>,
) -> Option<Found> {
    let leader =
        read_stat(record.pid).filter(|s| s.starttime == record.starttime && !s.is_exited());
    if let Some(stat) = leader.clone()
        && !with_members
        && !cgroups.enabled()
    {
        // Without cgroups the recorded process alone tells that the instance lives.
        return Some(Found {
            record,
            stat,
            members: Vec::new(),
        });
    }
    let members = live_members(&record.instance_id, Some(&record), cgroups, stats);
    let stat = match leader {
        Some(stat) if !cgroups.enabled() || members.iter().any(|m| m.pid == stat.pid) => stat,
        _ => members.iter().min_by_key(|s| (s.starttime, s.pid))?.clone(),
    };
    Some(Found {
        record,
        stat,
        members: if with_members { members } else { Vec::new() },
    })
}

/// The live processes of instance `id`: those in its cgroup; without cgroups, the
/// recorded process (same pid and start time) and its process group (a pid that is
/// still some process group's id is not handed out again, so the group is the
/// instance's while any member lives). `stats` caches a look at every process.
fn live_members(
    id: &str,
    record: Option<&Record>,
    cgroups: &Cgroups,
    stats: &mut Option<Vec<Stat>>,
) -> Vec<Stat> {
    if cgroups.enabled() {
        return cgroups
            .pids(id)
            .into_iter()
            .filter_map(read_stat)
            .filter(|s| !s.is_exited())
            .collect();
    }
    let Some(record) = record else {
        return Vec::new();
    };
    let all = stats.get_or_insert_with(all_stats);
    all.iter()
        .filter(|s| !s.is_exited())
        .filter(|s| {
            (s.pid == record.pid && s.starttime == record.starttime) || s.pgrp == record.pid
        })
        .cloned()
        .collect()
}

/// Sends `sig` to `members`: each one with cgroups; without, the recorded process's
/// group at once (a process forked meanwhile gets it too) and each member outside it.
/// A process already gone is not an error.
fn signal_members(
    members: &[Stat],
    record: Option<&Record>,
    cgrouped: bool,
    sig: Signal,
) -> Result<(), ProviderError> {
    let outcome = |result: nix::Result<()>, what: i32| match result {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(errno) => Err(ProviderError::Io {
            action: format!("sending {sig} to process {what}"),
            source: errno.into(),
        }),
    };
    let group = record
        .map(|r| r.pid)
        .filter(|pgid| !cgrouped && *pgid > 1 && members.iter().any(|m| m.pgrp == *pgid));
    if let Some(pgid) = group {
        outcome(signal::killpg(Pid::from_raw(pgid), sig), pgid)?;
    }
    for m in members {
        if group != Some(m.pgrp) {
            outcome(signal::kill(Pid::from_raw(m.pid), sig), m.pid)?;
        }
    }
    Ok(())
}

/// Finds the file `program` names the way `execvp` would with this `PATH` (relative
/// names with a `/` from `cwd`, the instance's directory), so that a template naming
/// a missing or non-executable program is refused at create, as without the gate.
fn resolve_program(program: &str, path: &str, cwd: &Path) -> std::io::Result<PathBuf> {
    use std::io::{Error, ErrorKind};
    let check = |candidate: &Path| -> std::io::Result<()> {
        let meta = fs::metadata(candidate)?;
        if meta.is_dir() {
            return Err(Error::from_raw_os_error(libc::EISDIR));
        }
        if meta.mode() & 0o111 == 0 {
            return Err(Error::from(ErrorKind::PermissionDenied));
        }
        Ok(())
    };
    if program.is_empty() {
        return Err(Error::from(ErrorKind::NotFound));
    }
    if program.contains('/') {
        let candidate = cwd.join(program);
        check(&candidate)?;
        return Ok(candidate);
    }
    let mut denied = None;
    for entry in path.split(':').filter(|e| !e.is_empty()) {
        let candidate = cwd.join(entry).join(program);
        match check(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => denied = denied.or(Some(e)),
        }
    }
    Err(denied.unwrap_or_else(|| Error::from(ErrorKind::NotFound)))
}

/// One instance's CPU and memory reading, summed over its processes.
#[derive(Debug)]
struct Usage {
    instance_id: String,
    pid: i32,
    starttime: u64,
    ticks: u64,
    resident_pages: u64,
}

/// Reads the CPU ticks and resident pages of each instance: its processes' own CPU
/// time plus the children the representative reaped, so that a `sh -c` wrapper is
/// measured with what it runs.
fn read_usage(found: Vec<Found>) -> Vec<Usage> {
    found
        .into_iter()
        .map(|f| {
            let rep = &f.stat;
            let ticks = f
                .members
                .iter()
                .filter(|m| m.pid != rep.pid)
                .map(Stat::own_ticks)
                .fold(
                    rep.own_ticks().saturating_add(rep.children_ticks()),
                    u64::saturating_add,
                );
            let resident_pages = std::iter::once(rep.pid)
                .chain(f.members.iter().filter(|m| m.pid != rep.pid).map(|m| m.pid))
                .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/statm")).ok())
                .filter_map(|text| procfs::parse_statm_resident(&text))
                .fold(0u64, u64::saturating_add);
            Usage {
                instance_id: f.record.instance_id,
                pid: rep.pid,
                starttime: rep.starttime,
                ticks,
                resident_pages,
            }
        })
        .collect()
}

/// The next CPU sample of a process from its previous one (if it is the same process).
///
/// The rate is the CPU ticks used since the previous sample over the wall time since
/// then; a first sample is measured against the process's start (its average so far).
fn next_sample(
    prev: Option<&Sample>,
    starttime: u64,
    ticks: u64,
    now: Instant,
    uptime_s: Option<f64>,
    ticks_per_second: f64,
) -> Sample {
    let percent = match prev.filter(|p| p.starttime == starttime) {
        Some(prev) => {
            let elapsed = now.saturating_duration_since(prev.at);
            if elapsed < MIN_SAMPLE_INTERVAL {
                return *prev;
            }
            ticks.saturating_sub(prev.ticks) as f64 / ticks_per_second / elapsed.as_secs_f64()
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
        ticks,
        at: now,
        percent: if percent.is_finite() {
            percent.max(0.0)
        } else {
            0.0
        },
    }
}

/// The pids in `/proc`.
fn proc_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &i32| *pid > 0)
        .collect()
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    procfs::parse_stat(&text).filter(|s| s.pid == pid)
}

/// The stat of every process that can be read.
fn all_stats() -> Vec<Stat> {
    proc_pids().into_iter().filter_map(read_stat).collect()
}

/// Instance ids become directory names: no separators, no `.` or `..`.
fn check_instance_id(id: &InstanceId) -> Result<(), ProviderError> {
    let s = id.as_str();
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ProviderError::Backend(format!(
            "instance id `{s}` must be 1 to 128 ASCII letters, digits, '-', '_' or '.'"
        )))
    }
}

/// Makes the instance's directory (owned by the instance user, when there is one) and
/// opens (appending, creating) its `stdout.log` and `stderr.log`. The instance can
/// write in that directory, so a log that is a symbolic or hard link (to a file the
/// server may write, planted by an earlier run) is refused, not followed.
fn open_logs(dir: &Path, user: Option<&InstanceUser>) -> Result<(File, File), ProviderError> {
    let io = |action: String| move |source| ProviderError::Io { action, source };
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    if let Some(user) = user {
        std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid)).map_err(io(format!(
            "giving {} to {}",
            dir.display(),
            user.name
        )))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(io(format!("restricting {}", dir.display())))?;
    }
    let open = |name: &str| {
        let path = dir.join(name);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))?;
        let meta = file
            .metadata()
            .map_err(io(format!("reading {}", path.display())))?;
        if !meta.is_file() || meta.nlink() != 1 {
            return Err(ProviderError::Backend(format!(
                "{} is not a plain file of its own (a link?): refusing to write to it",
                path.display()
            )));
        }
        Ok(file)
    };
    Ok((open("stdout.log")?, open("stderr.log")?))
}

/// A spawn failure caused by the template (missing or non-executable program, bad
/// argument or variable) is an invalid template; anything else is an I/O error.
fn spawn_error(program: &str, error: std::io::Error) -> ProviderError {
    use std::io::ErrorKind;
    let template_fault = matches!(
        error.kind(),
        ErrorKind::NotFound | ErrorKind::PermissionDenied | ErrorKind::InvalidInput
    ) || matches!(
        error.raw_os_error(),
        Some(libc::ENOEXEC | libc::EISDIR | libc::ENOTDIR | libc::ENAMETOOLONG | libc::ELOOP)
    );
    if template_fault {
        ProviderError::InvalidTemplate(format!("cannot run `{program}`: {error}"))
    } else {
        ProviderError::Io {
            action: format!("starting `{program}`"),
            source: error,
        }
    }
}

/// Runs blocking file-system work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ProviderError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ProviderError::Backend(format!("blocking task failed: {e}")))
}

/// Locks a mutex, also when a panic poisoned it (the data stays consistent: every
/// critical section here is a plain map update).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pid: i32, pgrp: i32, starttime: u64, state: char) -> Stat {
        Stat {
            pid,
            comm: "x".into(),
            state,
            pgrp,
            flags: 0,
            utime: 0,
            stime: 0,
            cutime: 0,
            cstime: 0,
            starttime,
        }
    }

    fn found(id: &str, stat: Stat) -> Found {
        Found {
            record: Record {
                instance_id: id.into(),
                tenant: "t".into(),
                group: "g".into(),
                port: 8000,
                pid: stat.pid,
                starttime: stat.starttime,
            },
            stat,
            members: Vec::new(),
        }
    }

    #[test]
    fn a_first_sample_averages_since_start() {
        let now = Instant::now();
        // Started 10 s after boot, now 20 s after boot, used 5 s of CPU: 50 %.
        let s = next_sample(None, 1000, 500, now, Some(20.0), 100.0);
        assert!((s.percent - 50.0).abs() < 1e-9, "{}", s.percent);
        assert_eq!((s.starttime, s.ticks, s.at), (1000, 500, now));
        // Unknown uptime, or a process started just now: 0.
        assert_eq!(next_sample(None, 1000, 500, now, None, 100.0).percent, 0.0);
        assert_eq!(
            next_sample(None, 1000, 500, now, Some(10.01), 100.0).percent,
            0.0
        );
    }

    #[test]
    fn later_samples_use_the_delta() {
        let t0 = Instant::now();
        let first = next_sample(None, 1000, 500, t0, Some(20.0), 100.0);
        // 2 s later, 150 more ticks at 100 ticks/s: 1.5 s of CPU in 2 s = 75 %.
        let second = next_sample(
            Some(&first),
            1000,
            650,
            t0 + Duration::from_secs(2),
            Some(22.0),
            100.0,
        );
        assert!((second.percent - 75.0).abs() < 1e-9, "{}", second.percent);
        // Two cores busy: 200 %.
        let third = next_sample(
            Some(&second),
            1000,
            850,
            t0 + Duration::from_secs(3),
            None,
            100.0,
        );
        assert!((third.percent - 200.0).abs() < 1e-9, "{}", third.percent);
        // Too soon after: the previous sample stands, baseline unchanged.
        let soon = next_sample(
            Some(&third),
            1000,
            851,
            t0 + Duration::from_millis(3010),
            None,
            100.0,
        );
        assert_eq!(soon, third);
        // Ticks going backwards (a member reaped elsewhere): 0, not negative.
        let back = next_sample(
            Some(&third),
            1000,
            10,
            t0 + Duration::from_secs(4),
            None,
            100.0,
        );
        assert_eq!(back.percent, 0.0);
    }

    #[test]
    fn a_reused_pid_starts_over() {
        let t0 = Instant::now();
        let old = next_sample(None, 1000, 500, t0, Some(20.0), 100.0);
        // Same pid, different start time (15 s after boot), 1 s of CPU in 5 s.
        let new = next_sample(
            Some(&old),
            1500,
            100,
            t0 + Duration::from_secs(1),
            Some(20.0),
            100.0,
        );
        assert!((new.percent - 20.0).abs() < 1e-9, "{}", new.percent);
        assert_eq!(new.starttime, 1500);
    }

    #[test]
    fn states_of_the_representative() {
        assert_eq!(
            found("c", stat(30, 30, 1, 'T')).state(),
            ObservedState::Paused
        );
        assert_eq!(
            found("c", stat(30, 30, 1, 'S')).state(),
            ObservedState::Running
        );
        assert_eq!(
            found("z", stat(1, 1, 1, 'Z')).state(),
            ObservedState::Exited
        );
    }

    #[test]
    fn found_becomes_an_instance() {
        let inst = found("web-1", stat(42, 42, 1, 'R')).to_instance();
        assert_eq!(inst.instance_id, InstanceId("web-1".into()));
        assert_eq!(inst.native_id, "42");
        assert_eq!(inst.host, "localhost");
        assert_eq!(inst.address, Some("127.0.0.1:8000".parse().unwrap()));
        assert_eq!(inst.state, ObservedState::Running);
        assert_eq!((inst.tenant.as_str(), inst.group.as_str()), ("t", "g"));
    }

    #[test]
    fn instance_ids_must_be_directory_names() {
        for ok in [
            "a",
            "0190b3c4-7e4f-7000-8000-000000000000",
            "web_1.x",
            "a..b",
        ] {
            assert!(check_instance_id(&InstanceId(ok.into())).is_ok(), "{ok}");
        }
        let long = "x".repeat(129);
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a b",
            "é",
            "a\0b",
            long.as_str(),
        ] {
            assert!(check_instance_id(&InstanceId(bad.into())).is_err(), "{bad}");
        }
    }

    #[test]
    fn spawn_errors_blame_the_template_when_they_should() {
        let not_found = std::io::Error::from(std::io::ErrorKind::NotFound);
        let err = spawn_error("nope", not_found);
        assert!(
            matches!(&err, ProviderError::InvalidTemplate(m) if m.contains("`nope`")),
            "{err}"
        );
        let noexec = std::io::Error::from_raw_os_error(libc::ENOEXEC);
        assert!(matches!(
            spawn_error("x", noexec),
            ProviderError::InvalidTemplate(_)
        ));
        let other = std::io::Error::from_raw_os_error(libc::EAGAIN);
        assert!(matches!(spawn_error("x", other), ProviderError::Io { .. }));
    }

    #[test]
    fn the_environment_is_built_from_nothing() {
        let env = instance_env(
            "/usr/bin:/bin",
            Path::new("/data/instances/web-1"),
            [
                ("GREETING".to_string(), "hi".to_string()),
                ("PATH".to_string(), "/opt/app/bin".to_string()),
                // A template cannot pass itself off as another instance.
                (ENV_INSTANCE_ID.to_string(), "other".to_string()),
                (ENV_TENANT.to_string(), "other-tenant".to_string()),
            ],
            [
                (ENV_INSTANCE_ID, "web-1"),
                (ENV_GROUP, "web"),
                (ENV_TENANT, "acme"),
                (ENV_OWNER, "/data"),
                (ENV_PORT, "8000"),
            ],
        );
        let expected: BTreeMap<String, String> = [
            ("GREETING", "hi"),
            ("HOME", "/data/instances/web-1"),
            ("PATH", "/opt/app/bin"),
            ("PORT", "8000"),
            ("SWELL_GROUP", "web"),
            ("SWELL_INSTANCE_ID", "web-1"),
            ("SWELL_OWNER", "/data"),
            ("SWELL_TENANT", "acme"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(env, expected);
        let bare = instance_env(DEFAULT_PATH, Path::new("/h"), [], [(ENV_PORT, "1")]);
        assert_eq!(bare.keys().collect::<Vec<_>>(), ["HOME", "PATH", "PORT"]);
    }

    #[test]
    fn programs_are_found_like_execvp_finds_them() {
        use std::io::ErrorKind;
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        fs::create_dir_all(bin.join("adir")).unwrap();
        let write = |name: &str, mode: u32| {
            let p = bin.join(name);
            fs::write(&p, "#!/bin/sh\n").unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            p
        };
        let tool = write("tool", 0o755);
        write("plain", 0o644);
        let path = format!("/nonexistent:{}", bin.display());
        let cwd = dir.path();
        assert_eq!(resolve_program("tool", &path, cwd).unwrap(), tool);
        assert_eq!(
            resolve_program("bin/tool", "", cwd).unwrap(),
            cwd.join("bin/tool")
        );
        assert_eq!(
            resolve_program(tool.to_str().unwrap(), "", Path::new("/")).unwrap(),
            tool
        );
        // A relative PATH entry counts from the instance's directory.
        assert_eq!(
            resolve_program("tool", "bin", cwd).unwrap(),
            cwd.join("bin/tool")
        );
        let kind = |program: &str| resolve_program(program, &path, cwd).unwrap_err().kind();
        assert_eq!(kind("nope"), ErrorKind::NotFound);
        assert_eq!(kind("plain"), ErrorKind::PermissionDenied);
        assert_eq!(kind(""), ErrorKind::NotFound);
        assert_eq!(
            resolve_program("adir", &path, cwd)
                .unwrap_err()
                .raw_os_error(),
            Some(libc::EISDIR)
        );
        assert_eq!(
            resolve_program("tool", "", cwd).unwrap_err().kind(),
            ErrorKind::NotFound
        );
    }

    #[test]
    fn records_round_trip_and_junk_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let records = dir.path().join("records");
        let record = Record {
            instance_id: "web-1".into(),
            tenant: "acme".into(),
            group: "web".into(),
            port: 8000,
            pid: 42,
            starttime: 12345,
        };
        write_record(&records, &record_path(&records, "web-1"), &record).unwrap();
        fs::write(records.join("junk.json"), "{not json").unwrap();
        fs::write(records.join("half.json.tmp"), "{").unwrap();
        assert_eq!(read_records::<Record>(&records), vec![record]);
        let mode = fs::metadata(&records).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(read_records::<Record>(&dir.path().join("absent")).is_empty());
    }
}
