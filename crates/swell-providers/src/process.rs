//! The process provider: every instance is a local child process.
//!
//! An instance runs its template's `command` (an argv list, no shell) with a free
//! `127.0.0.1` port chosen here and substituted for `{port}` in every argument and in
//! the template's `env` values. Its Swell ids travel in its environment
//! (`SWELL_INSTANCE_ID`, `SWELL_GROUP`, `SWELL_TENANT`, `SWELL_OWNER`, plus `PORT`),
//! so [`list`](crate::Provider::list) finds this server's instances by reading
//! `/proc/*/environ` — also after the server restarted, and also the ones an earlier
//! server process started (adoption). The process the provider started (the oldest
//! one carrying an id) stands for the instance; its descendants inherit the tags and
//! are part of it.
//!
//! Each instance gets its own process group, so that a Ctrl-C on the server's terminal
//! does not reach it and it outlives a `kill -9` of the server; signals (stop, pause,
//! resume) go to the whole group, so a `sh -c` wrapper's children follow. Output is
//! appended to `instances_dir/<instance_id>/stdout.log` and `stderr.log`, which are
//! never removed by the provider.
//!
//! Metrics are read from `/proc/<pid>/stat` and `statm`, summed over the instance's
//! process group: CPU in percent of one core since this provider's previous sample of
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
//! let provider = ProcessProvider::new(ProcessConfig {
//!     instances_dir: "swell-data/instances".into(),
//!     owner: "server-1f3a".into(),
//! });
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

mod procfs;

use crate::{
    CreateRequest, InstanceMetrics, ObservedState, Provider, ProviderError, ProviderInstance,
};
use async_trait::async_trait;
use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::unistd::{Pid, SysconfVar, getpgrp, sysconf};
use procfs::Stat;
use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
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
/// Environment variable carrying the owning server's tag.
pub const ENV_OWNER: &str = "SWELL_OWNER";
/// Environment variable carrying the port the instance must listen on.
pub const ENV_PORT: &str = "PORT";

/// How often delete, pause and resume look at a process while they wait for it.
const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// How long delete waits for a process to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long pause and resume wait for the process to show its new state.
const STATE_WAIT: Duration = Duration::from_secs(1);
/// How long a port handed out stays reserved, so that two instances started in quick
/// succession (before the first one binds) do not get the same port.
const PORT_RESERVATION: Duration = Duration::from_secs(60);
/// How long a scan waits before each further look at a process whose environment
/// read empty (see [`scan_owned`]).
const EXEC_RETRY_DELAYS: [Duration; 4] = [
    Duration::from_millis(2),
    Duration::from_millis(5),
    Duration::from_millis(10),
    Duration::from_millis(20),
];
/// How often create looks whether a new process shows its tags yet.
const STARTUP_POLL: Duration = Duration::from_millis(5);
/// How long create waits for a new process to show its tags in `/proc`.
const STARTUP_WAIT: Duration = Duration::from_secs(2);
/// Samples closer together than this are too noisy to compute a CPU rate from.
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_millis(50);
/// CPU samples of processes not seen for this long are forgotten.
const SAMPLE_RETENTION: Duration = Duration::from_secs(600);

/// How to build a [`ProcessProvider`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessConfig {
    /// Where the per-instance log directories go (`<instances_dir>/<instance_id>/`).
    pub instances_dir: PathBuf,
    /// The tag of the Swell server that owns the instances (unique per server, e.g.
    /// derived from its data dir). Only processes carrying it are this provider's.
    pub owner: String,
}

/// The previous CPU reading of one process (group), for the next rate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// The leader's start time: guards against pid reuse.
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
    /// Serialises creates, so that two creates of one id cannot both start a process.
    create_lock: tokio::sync::Mutex<()>,
    /// Ports handed out recently, with when.
    recent_ports: Mutex<HashMap<u16, Instant>>,
    /// Previous CPU readings, by leader pid.
    samples: Mutex<HashMap<i32, Sample>>,
    /// Clock ticks per second (`_SC_CLK_TCK`).
    ticks_per_second: f64,
    /// Bytes per memory page.
    page_size: u64,
    /// This process: never one of the instances.
    own_pid: i32,
    /// This process's group: never signalled as a whole.
    own_pgrp: i32,
}

impl ProcessProvider {
    /// Builds the provider. Nothing is started and nothing is read until it is used.
    pub fn new(config: ProcessConfig) -> Self {
        let ticks_per_second = match sysconf(SysconfVar::CLK_TCK) {
            Ok(Some(t)) if t > 0 => t as f64,
            _ => 100.0,
        };
        let page_size = match sysconf(SysconfVar::PAGE_SIZE) {
            Ok(Some(p)) if p > 0 => p as u64,
            _ => 4096,
        };
        Self {
            config,
            create_lock: tokio::sync::Mutex::new(()),
            recent_ports: Mutex::new(HashMap::new()),
            samples: Mutex::new(HashMap::new()),
            ticks_per_second,
            page_size,
            own_pid: std::process::id() as i32,
            own_pgrp: getpgrp().as_raw(),
        }
    }

    /// The owner tag this provider manages.
    pub fn owner(&self) -> &str {
        &self.config.owner
    }

    /// The directory holding an instance's `stdout.log` and `stderr.log`.
    pub fn log_dir(&self, id: &InstanceId) -> PathBuf {
        self.config.instances_dir.join(id.as_str())
    }

    /// This owner's instances as found in `/proc`, one entry per instance.
    async fn scan(&self) -> Result<Vec<Found>, ProviderError> {
        Ok(representatives(
            scan_owned(&self.config.owner, self.own_pid).await?,
        ))
    }

    /// What to signal to reach every live process carrying `id`: normally the one
    /// process group the provider started; more if some descendant left the group.
    async fn targets(&self, id: &InstanceId) -> Result<Vec<Target>, ProviderError> {
        let mut targets: Vec<Target> = Vec::new();
        for found in scan_owned(&self.config.owner, self.own_pid).await? {
            if found.instance_id != id.as_str() || found.stat.is_exited() {
                continue;
            }
            let target = self.target(&found);
            if target.pgid.is_none() || targets.iter().all(|t| t.pgid != target.pgid) {
                targets.push(target);
            }
        }
        Ok(targets)
    }

    /// Waits until a process just spawned shows its tags in `/proc` (it has not
    /// finished its `execve` when spawn returns), so that a create is visible to the
    /// very next list. Gives up quietly if the process exits or takes too long.
    async fn wait_tagged(&self, pid: i32, id: &InstanceId) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + STARTUP_WAIT;
        loop {
            let owner = self.config.owner.clone();
            let seen = blocking(move || match examine(pid, &owner, &mut Vec::new()) {
                Seen::Ours(found) => Some(found.instance_id),
                Seen::Blank => None,
                Seen::NotOurs => Some(String::new()),
            })
            .await?;
            match seen {
                Some(seen_id) if seen_id == id.as_str() => return Ok(()),
                // Exited already, or never readable: nothing to wait for.
                Some(_) => return Ok(()),
                None if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(instance = %id, pid, "process shows no environment yet");
                    return Ok(());
                }
                None => tokio::time::sleep(STARTUP_POLL).await,
            }
        }
    }

    /// What to signal for one found process: its group when that is safe.
    fn target(&self, found: &Found) -> Target {
        let pgrp = found.stat.pgrp;
        Target {
            pid: found.stat.pid,
            starttime: found.stat.starttime,
            pgid: (pgrp > 1 && pgrp != self.own_pgrp).then_some(pgrp),
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

    /// Sends `sig` to every target; a process already gone is not an error.
    fn signal_all(&self, targets: &[Target], sig: Signal) -> Result<(), ProviderError> {
        for target in targets {
            target.signal(sig)?;
        }
        Ok(())
    }

    /// Waits until every target is gone or `deadline` passes; whether they are gone.
    async fn wait_gone(
        &self,
        targets: &[Target],
        deadline: tokio::time::Instant,
    ) -> Result<bool, ProviderError> {
        loop {
            let check = targets.to_vec();
            if blocking(move || check.iter().all(Target::is_gone)).await? {
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits (briefly) until every target's leader is, or is not, stopped.
    async fn wait_stopped(&self, targets: &[Target], stopped: bool) -> Result<(), ProviderError> {
        let deadline = tokio::time::Instant::now() + STATE_WAIT;
        loop {
            let check = targets.to_vec();
            let done = blocking(move || {
                check.iter().all(|t| match t.current_stat() {
                    Some(stat) => stat.is_stopped() == stopped,
                    None => true,
                })
            })
            .await?;
            if done || tokio::time::Instant::now() >= deadline {
                return Ok(());
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Pause or resume: `sig` to the instance's group, then wait for the new state.
    async fn stop_or_continue(&self, id: &InstanceId, sig: Signal) -> Result<(), ProviderError> {
        let targets = self.targets(id).await?;
        if targets.is_empty() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        self.signal_all(&targets, sig)?;
        self.wait_stopped(&targets, sig == Signal::SIGSTOP).await
    }
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
        let owned = self.scan().await?;
        if let Some(existing) = owned
            .iter()
            .find(|f| f.instance_id == id.as_str() && !f.stat.is_exited())
        {
            return Ok(existing.to_instance());
        }
        let in_use: HashSet<u16> = owned.iter().filter_map(|f| f.port).collect();
        let port = self.pick_port(&in_use)?;

        let dir = self.log_dir(id);
        let (stdout, stderr) = blocking(move || open_logs(&dir)).await??;

        let port_text = port.to_string();
        let substitute = |s: &String| s.replace("{port}", &port_text);
        let mut cmd = tokio::process::Command::new(substitute(program));
        cmd.args(command[1..].iter().map(substitute))
            .envs(
                request
                    .template
                    .env
                    .iter()
                    .map(|(name, value)| (name, substitute(value))),
            )
            .env(ENV_INSTANCE_ID, id.as_str())
            .env(ENV_GROUP, &request.group)
            .env(ENV_TENANT, request.tenant.as_str())
            .env(ENV_OWNER, &self.config.owner)
            .env(ENV_PORT, &port_text)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0)
            .kill_on_drop(false);
        let mut child = cmd.spawn().map_err(|e| spawn_error(program, e))?;
        let pid = child.id().ok_or_else(|| {
            ProviderError::Backend(format!("`{program}` exited before its pid was read"))
        })?;
        // Reap it when it exits, so that an exited instance does not linger as a
        // zombie. If the runtime goes away first, tokio's orphan queue reaps it.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        tracing::info!(instance = %id, pid, port, "started process instance");
        self.wait_tagged(pid as i32, id).await?;

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
        let targets = self.targets(id).await?;
        if targets.is_empty() {
            return Ok(());
        }
        self.signal_all(&targets, Signal::SIGTERM)?;
        // A paused process only sees the SIGTERM once it runs again.
        self.signal_all(&targets, Signal::SIGCONT)?;
        let deadline = tokio::time::Instant::now() + grace;
        if self.wait_gone(&targets, deadline).await? {
            tracing::info!(instance = %id, "process instance stopped");
            return Ok(());
        }
        tracing::warn!(instance = %id, ?grace, "process instance ignored SIGTERM; killing it");
        self.signal_all(&targets, Signal::SIGKILL)?;
        let deadline = tokio::time::Instant::now() + KILL_WAIT;
        if self.wait_gone(&targets, deadline).await? {
            return Ok(());
        }
        let pids: Vec<String> = targets.iter().map(|t| t.pid.to_string()).collect();
        Err(ProviderError::Backend(format!(
            "instance {id} (pid {}) still runs {KILL_WAIT:?} after SIGKILL",
            pids.join(", ")
        )))
    }

    async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.stop_or_continue(id, Signal::SIGSTOP).await
    }

    async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        self.stop_or_continue(id, Signal::SIGCONT).await
    }

    async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        Ok(self.scan().await?.iter().map(Found::to_instance).collect())
    }

    async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let own_pgrp = self.own_pgrp;
        let wanted: HashSet<&str> = ids.iter().map(InstanceId::as_str).collect();
        let found: Vec<Found> = self
            .scan()
            .await?
            .into_iter()
            .filter(|f| wanted.contains(f.instance_id.as_str()) && !f.stat.is_exited())
            .collect();
        let (readings, uptime) = blocking(move || {
            let readings = read_usage(found, own_pgrp);
            let uptime = fs::read_to_string("/proc/uptime")
                .ok()
                .and_then(|text| procfs::parse_uptime(&text));
            (readings, uptime)
        })
        .await?;

        let now = Instant::now();
        let mut samples = lock(&self.samples);
        let mut by_id: HashMap<&str, InstanceMetrics> = HashMap::new();
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
                .entry(reading.instance_id.as_str())
                .or_insert(InstanceMetrics {
                    cpu_percent: sample.percent,
                    memory_mb: (reading.resident_pages.saturating_mul(self.page_size)) as f64
                        / (1024.0 * 1024.0),
                });
        }
        samples.retain(|_, s| now.saturating_duration_since(s.at) < SAMPLE_RETENTION);
        drop(samples);

        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for id in ids {
            if let Some(m) = by_id.get(id.as_str())
                && seen.insert(id.as_str())
            {
                out.push((id.clone(), *m));
            }
        }
        Ok(out)
    }
}

/// One tagged process of ours, as found in `/proc`.
#[derive(Debug, Clone)]
struct Found {
    stat: Stat,
    instance_id: String,
    tenant: String,
    group: String,
    port: Option<u16>,
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
            instance_id: InstanceId(self.instance_id.clone()),
            tenant: self.tenant.clone(),
            group: self.group.clone(),
            native_id: self.stat.pid.to_string(),
            host: "localhost".into(),
            address: self
                .port
                .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port))),
            state: self.state(),
        }
    }
}

/// What one signal goes to: a process, or its whole group.
#[derive(Debug, Clone, Copy)]
struct Target {
    pid: i32,
    /// The leader's start time, so that a reused pid is not mistaken for it.
    starttime: u64,
    /// The process group to signal instead of the pid alone, when that is safe.
    pgid: Option<i32>,
}

impl Target {
    /// The leader's stat, if it is still the same process.
    fn current_stat(&self) -> Option<Stat> {
        read_stat(self.pid).filter(|s| s.starttime == self.starttime)
    }

    /// Whether the leader and (if signalled as a group) every member have exited.
    fn is_gone(&self) -> bool {
        let leader_alive = self.current_stat().is_some_and(|s| !s.is_exited());
        if leader_alive {
            return false;
        }
        match self.pgid {
            None => true,
            Some(pgid) => !all_stats().iter().any(|s| s.pgrp == pgid && !s.is_exited()),
        }
    }

    fn signal(&self, sig: Signal) -> Result<(), ProviderError> {
        let result = match self.pgid {
            Some(pgid) => signal::killpg(Pid::from_raw(pgid), sig),
            None => {
                if self.current_stat().is_none() {
                    return Ok(());
                }
                signal::kill(Pid::from_raw(self.pid), sig)
            }
        };
        match result {
            Ok(()) | Err(Errno::ESRCH) => Ok(()),
            Err(errno) => Err(ProviderError::Io {
                action: format!("sending {sig} to process {}", self.pid),
                source: errno.into(),
            }),
        }
    }
}

/// One instance's CPU and memory reading, summed over its process group.
#[derive(Debug)]
struct Usage {
    instance_id: String,
    pid: i32,
    starttime: u64,
    ticks: u64,
    resident_pages: u64,
}

/// Reads the CPU ticks and resident pages of each instance's process group: the
/// members' own CPU time plus the leader's reaped children's, so that a `sh -c`
/// wrapper is measured with what it runs.
fn read_usage(found: Vec<Found>, own_pgrp: i32) -> Vec<Usage> {
    let grouped = found
        .iter()
        .any(|f| f.stat.pgrp == f.stat.pid && f.stat.pgrp != own_pgrp);
    let stats = if grouped { all_stats() } else { Vec::new() };
    found
        .into_iter()
        .map(|f| {
            let leader = &f.stat;
            let members: Vec<&Stat> = if leader.pgrp == leader.pid && leader.pgrp != own_pgrp {
                stats
                    .iter()
                    .filter(|s| s.pgrp == leader.pgrp && s.pid != leader.pid)
                    .collect()
            } else {
                Vec::new()
            };
            let ticks = members.iter().map(|s| s.own_ticks()).fold(
                leader.own_ticks() + leader.children_ticks(),
                u64::saturating_add,
            );
            let resident_pages = std::iter::once(leader.pid)
                .chain(members.iter().filter(|s| !s.is_exited()).map(|s| s.pid))
                .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/statm")).ok())
                .filter_map(|text| procfs::parse_statm_resident(&text))
                .fold(0u64, u64::saturating_add);
            Usage {
                instance_id: f.instance_id,
                pid: leader.pid,
                starttime: leader.starttime,
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

/// What one look at a process found.
enum Seen {
    /// One of ours.
    Ours(Found),
    /// Somebody else's, gone, or unreadable.
    NotOurs,
    /// A live user process with an empty environment: most likely in the middle of an
    /// `execve` (the kernel shows no environment until the new program's stack is
    /// set up), so it deserves a second look.
    Blank,
}

/// Looks at one process.
fn examine(pid: i32, owner: &str, buf: &mut Vec<u8>) -> Seen {
    let Ok(len) = read_environ(pid, buf) else {
        return Seen::NotOurs;
    };
    let environ = &buf[..len];
    if environ.is_empty() {
        return match read_stat(pid) {
            Some(stat) if !stat.is_kernel_thread() && !stat.is_exited() => Seen::Blank,
            _ => Seen::NotOurs,
        };
    }
    let mut vars = procfs::parse_environ(environ);
    if vars.get(ENV_OWNER).map(String::as_str) != Some(owner) {
        return Seen::NotOurs;
    }
    let Some(instance_id) = vars.remove(ENV_INSTANCE_ID) else {
        return Seen::NotOurs;
    };
    let Some(stat) = read_stat(pid) else {
        return Seen::NotOurs;
    };
    Seen::Ours(Found {
        stat,
        instance_id,
        tenant: vars.remove(ENV_TENANT).unwrap_or_default(),
        group: vars.remove(ENV_GROUP).unwrap_or_default(),
        port: vars.get(ENV_PORT).and_then(|p| p.parse().ok()),
    })
}

/// Reads `/proc/<pid>/environ` into `buf` (reused between calls: its length is a
/// capacity, not the content), the first 64 KiB in one `read` call; the length read.
///
/// The kernel copies the environment out of the memory of the process as it is at
/// that call; a reader that takes it in several small reads (as `fs::read` does, with
/// a 32-byte probe first) can see the process `execve` in between and get a cut-off
/// environment without our tags. One large read sees one consistent copy.
fn read_environ(pid: i32, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    use std::io::Read;
    const FIRST_READ: usize = 64 * 1024;
    let mut file = File::open(format!("/proc/{pid}/environ"))?;
    if buf.len() < FIRST_READ {
        buf.resize(FIRST_READ, 0);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(len * 2, 0);
        }
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

/// Looks at `pids`: ours, and the blank ones to look at again.
fn examine_all(pids: Vec<i32>, owner: &str) -> (Vec<Found>, Vec<i32>) {
    let mut found = Vec::new();
    let mut blank = Vec::new();
    let mut buf = Vec::new();
    for pid in pids {
        match examine(pid, owner, &mut buf) {
            Seen::Ours(f) => found.push(f),
            Seen::NotOurs => {}
            Seen::Blank => blank.push(pid),
        }
    }
    (found, blank)
}

/// Every process tagged with `owner` (except this one), sorted by instance id and pid.
/// Unreadable processes are skipped; zombies have an empty environment, so they drop
/// out here. Processes caught in the middle of an `execve` are looked at again a few
/// milliseconds later, so that an instance starting through a chain of wrappers (a
/// pyenv shim, `env`, `sh -c exec …`) does not blink out of the list.
async fn scan_owned(owner: &str, own_pid: i32) -> Result<Vec<Found>, ProviderError> {
    let who = owner.to_string();
    let (mut found, mut blank) = blocking(move || {
        let pids = proc_pids().into_iter().filter(|p| *p != own_pid).collect();
        examine_all(pids, &who)
    })
    .await?;
    for delay in EXEC_RETRY_DELAYS {
        if blank.is_empty() {
            break;
        }
        tokio::time::sleep(delay).await;
        let who = owner.to_string();
        let (more, still_blank) = blocking(move || examine_all(blank, &who)).await?;
        found.extend(more);
        blank = still_blank;
    }
    found.sort_by(|a, b| {
        (a.instance_id.as_str(), a.stat.pid).cmp(&(b.instance_id.as_str(), b.stat.pid))
    });
    Ok(found)
}

/// One entry per instance: an instance's children inherit its environment, so the
/// oldest process carrying an id (the one the provider started, or, once that has
/// exited, the oldest of what it left behind) stands for the instance. `found` must be
/// sorted by instance id.
fn representatives(found: Vec<Found>) -> Vec<Found> {
    let mut reps: Vec<Found> = Vec::new();
    for f in found {
        match reps.last_mut() {
            Some(rep) if rep.instance_id == f.instance_id => {
                if (f.stat.starttime, f.stat.pid) < (rep.stat.starttime, rep.stat.pid) {
                    *rep = f;
                }
            }
            _ => reps.push(f),
        }
    }
    reps
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

/// Opens (appending, creating) the instance's `stdout.log` and `stderr.log`.
fn open_logs(dir: &Path) -> Result<(File, File), ProviderError> {
    let io = |action: String| move |source| ProviderError::Io { action, source };
    fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
    let open = |name: &str| {
        let path = dir.join(name);
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(format!("opening {}", path.display())))
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
            stat,
            instance_id: id.into(),
            tenant: "t".into(),
            group: "g".into(),
            port: Some(8000),
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
    fn the_oldest_process_stands_for_the_instance() {
        let picked = representatives(vec![
            found("a", stat(10, 10, 1, 'S')),
            found("a", stat(11, 10, 2, 'R')),
            found("b", stat(20, 19, 5, 'S')),
            found("b", stat(21, 19, 4, 'S')),
            found("c", stat(30, 30, 1, 'T')),
            // A descendant that made its own group (a daemon) is not a second instance.
            found("d", stat(40, 40, 1, 'S')),
            found("d", stat(41, 41, 3, 'S')),
        ]);
        let pids: Vec<(String, i32)> = picked
            .iter()
            .map(|f| (f.instance_id.clone(), f.stat.pid))
            .collect();
        assert_eq!(
            pids,
            vec![
                ("a".into(), 10),
                ("b".into(), 21),
                ("c".into(), 30),
                ("d".into(), 40)
            ]
        );
        assert_eq!(picked[2].state(), ObservedState::Paused);
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
        let mut no_port = found("web-1", stat(42, 42, 1, 'R'));
        no_port.port = None;
        assert_eq!(no_port.to_instance().address, None);
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
}
