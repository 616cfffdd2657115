//! A hypervisor host reached over SSH: its VMs are QEMU processes started there, their
//! files (disk overlay, cloud-init seed, console log) and Swell's records of them are
//! in the host's state directory *there*, and Swell talks to them through one
//! multiplexed OpenSSH connection per host.
//!
//! **The connection.** The system's OpenSSH client, with no configuration file
//! (`-F /dev/null`), no agent, no password prompt (`BatchMode=yes`), only the host's
//! `identity_file`. One master connection per host (`ControlMaster`, kept for
//! [`CONTROL_PERSIST`] idle) carries every call, so a call costs a channel, not a
//! handshake. Host keys are checked: against the operator's `known_hosts` file
//! (`StrictHostKeyChecking=yes`) when the host names one, else pinned on first contact
//! in Swell's own file (`accept-new`; see docs/security.md). The control socket, the
//! pinned keys and the QMP forwards live in a private local directory
//! (`$TMPDIR/swell-qemu-ssh-<uid>/<hash>/`, mode 0700, checked to be ours).
//!
//! **A host is down** when SSH does not answer (connection refused or timed out,
//! authentication or host key failure) or its state directory, once made, is gone:
//! the call fails with [`ProviderError::Unavailable`], placement skips the host and
//! `list` leaves its VMs out, so the controller replaces them elsewhere. A host that
//! did not answer is not tried again for [`DOWN_RETRY`].
//!
//! **Reading the host: one command.** Everything `list`, `metrics`, steal and
//! placement need comes from one shell command per pass ([`SNAPSHOT`]): the records
//! (`<state_dir>/records/<owner>/*.json`), and for each recorded pid its
//! `/proc/<pid>/stat`, `statm`, the `type=1,serial=` argument of its command line and
//! each thread's `schedstat` and name (QEMU names them there, `-name
//! swell-<id>,debug-threads=on`: a vCPU thread is `CPU <n>/TCG` or `CPU <n>/KVM`, and
//! its wait time is the VM's steal), plus the host's uptime, clock tick, page size, CPU
//! count and memory. A record counts only if the process with its pid
//! has its start time and its instance id as SMBIOS serial, exactly as on a local
//! host; that is what lets a new server adopt the VMs after a crash.
//!
//! **Starting a VM: one command.** Making its directory, the overlay
//! (`qemu-img create`), the seed (built locally, sent on the command's standard input),
//! `qemu-system-x86_64 … -daemonize -pidfile` (QEMU returns once the VM exists, so a
//! failure comes back with its message) and writing the record with the new pid and
//! start time all happen in one SSH call.
//!
//! **QMP** (pause, resume, run state, power button) goes through the master
//! connection: a local Unix socket forwarded to the VM's remote `qmp.sock`
//! (`ssh -O forward -L local.sock:remote/qmp.sock`), made when first needed and again
//! after the master was restarted.
//!
//! **Images** are not copied: the image's files must be at the same relative paths
//! under the host's `images_dir` (default: the provider's images directory's path)
//! on the remote host; `image.json` is read locally.

use super::image::VmImage;
use super::qmp::{self, Qmp, QmpError};
use super::{Accel, QemuConfig, Record, check_instance_id, cloud_init, cpu_sample, steal_sample};
use super::{HostUsage, MAX_SOCKET_PATH, Sample};
use crate::process::procfs::{self, Stat};
use crate::{CreateRequest, InstanceMetrics, ObservedState, ProviderError, ProviderInstance};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use swell_core::InstanceId;
use tokio::io::AsyncWriteExt;

/// How long the master connection stays after its last call.
pub const CONTROL_PERSIST: Duration = Duration::from_secs(300);
/// How long one SSH call may take before the host counts as down for it.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting may take (`ConnectTimeout`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a host that did not answer counts as down before it is tried again, so
/// that a pass's several calls (list, metrics, capacity) do not each wait out the
/// connect timeout of a host that went away.
pub const DOWN_RETRY: Duration = Duration::from_secs(10);
/// How long the create command may take (an overlay, a seed, QEMU's start).
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long delete waits for QEMU to vanish after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long a port handed out stays reserved.
const PORT_RESERVATION: Duration = Duration::from_secs(60);
/// The ports a remote VM's forwarded port is picked from.
const PORT_RANGE: std::ops::RangeInclusive<u16> = 20000..=32000;
/// The most output a snapshot may have.
const MAX_OUTPUT: usize = 8 << 20;

/// Where an SSH host is: `user@host[:port]` (an IPv6 address in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The login user.
    pub user: String,
    /// The host name or IP address (without brackets).
    pub host: String,
    /// The SSH port (default 22).
    pub port: u16,
}

impl std::str::FromStr for SshTarget {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let rule = "must be USER@HOST[:PORT] (user and host of letters, digits, '.', '_' or '-', not starting with '-'; an IPv6 address in brackets; port 1 to 65535)";
        let (user, rest) = s.split_once('@').ok_or(rule)?;
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6.split_once(']').ok_or(rule)?;
            addr.parse::<std::net::Ipv6Addr>().map_err(|_| rule)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or(rule)?),
            };
            (addr.to_string(), port)
        } else {
            match rest.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let word = |w: &str| {
            !w.is_empty()
                && w.len() <= 253
                && !w.starts_with('-')
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        };
        if !word(user) || !(word(&host) || host.parse::<std::net::Ipv6Addr>().is_ok()) {
            return Err(rule.into());
        }
        let port = match port {
            None => 22,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or(rule)?,
        };
        Ok(SshTarget {
            user: user.to_string(),
            host,
            port,
        })
    }
}

impl std::fmt::Display for SshTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "{}@[{}]:{}", self.user, self.host, self.port)
        } else {
            write!(f, "{}@{}:{}", self.user, self.host, self.port)
        }
    }
}

/// Whether a remote path is absolute and made only of letters, digits, `/`, `.`, `_`
/// and `-` (it goes into QEMU options and shell commands).
pub fn plain_remote_path(p: &Path) -> bool {
    let Some(s) = p.to_str() else {
        return false;
    };
    s.starts_with('/')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-'))
        && !s.split('/').any(|part| part == "..")
}

/// How to reach and use one SSH host.
#[derive(Debug, Clone)]
pub(crate) struct RemoteSpec {
    pub name: String,
    pub target: SshTarget,
    pub identity_file: PathBuf,
    pub known_hosts: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub images_dir: PathBuf,
    pub address: IpAddr,
}

/// Why an SSH call failed.
#[derive(Debug)]
enum CallError {
    /// SSH itself failed (exit 255) or timed out: the host is down.
    Down(String),
    /// The local side failed (spawning ssh, the local directory).
    Local(ProviderError),
}

impl From<CallError> for ProviderError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Down(why) => ProviderError::Unavailable(why),
            CallError::Local(e) => e,
        }
    }
}

/// A finished remote command.
struct Output {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl Output {
    fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(5)..].join("; ")
    }
}

/// One multiplexed OpenSSH connection to a host.
#[derive(Debug)]
struct SshConn {
    target: SshTarget,
    identity_file: PathBuf,
    known_hosts: Option<PathBuf>,
    local_dir: PathBuf,
    master: tokio::sync::Mutex<()>,
    calls: AtomicU64,
}

impl SshConn {
    fn control_path(&self) -> PathBuf {
        self.local_dir.join("ctl")
    }

    /// The options every `ssh` of this host gets (before the destination).
    fn base_args(&self) -> Vec<std::ffi::OsString> {
        let mut a: Vec<std::ffi::OsString> = Vec::new();
        let mut opt = |o: String| {
            a.push("-o".into());
            a.push(o.into());
        };
        opt("BatchMode=yes".into());
        opt("IdentitiesOnly=yes".into());
        opt("IdentityAgent=none".into());
        opt("GlobalKnownHostsFile=/dev/null".into());
        match &self.known_hosts {
            Some(file) => {
                opt("StrictHostKeyChecking=yes".into());
                opt(format!("UserKnownHostsFile={}", file.display()));
            }
            None => {
                opt("StrictHostKeyChecking=accept-new".into());
                opt(format!(
                    "UserKnownHostsFile={}",
                    self.local_dir.join("known_hosts").display()
                ));
            }
        }
        opt(format!("ConnectTimeout={}", CONNECT_TIMEOUT.as_secs()));
        opt("ServerAliveInterval=5".into());
        opt("ServerAliveCountMax=3".into());
        opt("LogLevel=ERROR".into());
        opt(format!("ControlPath={}", self.control_path().display()));
        let mut out: Vec<std::ffi::OsString> = vec!["-F".into(), "/dev/null".into()];
        out.append(&mut a);
        out.push("-i".into());
        out.push(self.identity_file.clone().into_os_string());
        out.push("-p".into());
        out.push(self.target.port.to_string().into());
        out.push("-l".into());
        out.push(self.target.user.clone().into());
        out
    }

    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ssh");
        cmd.env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .args(self.base_args())
            .kill_on_drop(true);
        cmd
    }

    /// Starts the master connection unless its socket is there.
    async fn ensure_master(&self) -> Result<(), CallError> {
        let _one = self.master.lock().await;
        let ctl = self.control_path();
        // A master killed without cleaning up leaves its socket: nobody answers there.
        if std::os::unix::net::UnixStream::connect(&ctl).is_ok() {
            return Ok(());
        }
        let _ = std::fs::remove_file(&ctl);
        let log = self.local_dir.join("master.log");
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut cmd = self.command();
        cmd.args(["-M", "-N", "-f"])
            .args([
                "-o",
                &format!("ControlPersist={}", CONTROL_PERSIST.as_secs()),
            ])
            .args(["-o", "StreamLocalBindUnlink=yes"])
            .arg("-E")
            .arg(&log)
            .arg("--")
            .arg(&self.target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = std::fs::remove_file(&log);
        let status = match tokio::time::timeout(CONNECT_TIMEOUT * 3, cmd.status()).await {
            Err(_) => return Err(CallError::Down(format!("ssh {}: no answer", self.target))),
            Ok(Err(source)) => {
                return Err(CallError::Local(ProviderError::Io {
                    action: "running ssh (Debian package openssh-client)".into(),
                    source,
                }));
            }
            Ok(Ok(status)) => status,
        };
        if status.success() {
            return Ok(());
        }
        let why = std::fs::read_to_string(&log).unwrap_or_default();
        Err(CallError::Down(format!(
            "ssh {}: {}",
            self.target,
            why.lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("failed")
        )))
    }

    /// Runs `script` with `sh` on the host (over the master), feeding it `input`.
    async fn run(
        &self,
        script: &str,
        input: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Result<Output, CallError> {
        self.ensure_master().await?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut cmd = self.command();
        cmd.args(["-T", "-o", "ControlMaster=no", "--"])
            .arg(&self.target.host)
            .arg(format!("exec sh -c {}", quote(script)))
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| {
            CallError::Local(ProviderError::Io {
                action: "running ssh (Debian package openssh-client)".into(),
                source,
            })
        })?;
        let stdin = child.stdin.take();
        let work = async move {
            if let (Some(mut stdin), Some(input)) = (stdin, input) {
                let _ = stdin.write_all(&input).await;
                drop(stdin);
            }
            child.wait_with_output().await
        };
        let out = match tokio::time::timeout(timeout, work).await {
            Err(_) => {
                return Err(CallError::Down(format!(
                    "ssh {}: no answer within {timeout:?}",
                    self.target
                )));
            }
            Ok(Err(source)) => {
                return Err(CallError::Local(ProviderError::Io {
                    action: "running ssh".into(),
                    source,
                }));
            }
            Ok(Ok(out)) => out,
        };
        let out = Output {
            code: out.status.code(),
            stdout: out.stdout,
            stderr: out.stderr,
        };
        if out.code == Some(255) || out.code.is_none() {
            // The master may be what failed: the next call starts a new one.
            let _ = std::fs::remove_file(self.control_path());
            return Err(CallError::Down(format!(
                "ssh {}: {}",
                self.target,
                out.stderr_tail()
            )));
        }
        if out.stdout.len() > MAX_OUTPUT {
            return Err(CallError::Local(ProviderError::Backend(format!(
                "ssh {}: more than {MAX_OUTPUT} bytes of output",
                self.target
            ))));
        }
        Ok(out)
    }

    /// Asks the master to forward `local` to the remote socket `remote`.
    async fn forward(&self, local: &Path, remote: &Path) -> Result<(), CallError> {
        self.ensure_master().await?;
        let _ = std::fs::remove_file(local);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let mut cmd = self.command();
        cmd.args(["-O", "forward", "-L"])
            .arg(format!("{}:{}", local.display(), remote.display()))
            .arg("--")
            .arg(&self.target.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        match tokio::time::timeout(CONNECT_TIMEOUT, cmd.output()).await {
            Ok(Ok(out)) if out.status.success() => Ok(()),
            Ok(Ok(out)) => Err(CallError::Down(format!(
                "ssh {}: forwarding QMP: {}",
                self.target,
                String::from_utf8_lossy(&out.stderr).trim()
            ))),
            Ok(Err(source)) => Err(CallError::Local(ProviderError::Io {
                action: "running ssh".into(),
                source,
            })),
            Err(_) => Err(CallError::Down(format!(
                "ssh {}: forwarding QMP: no answer",
                self.target
            ))),
        }
    }

    /// Drops a forward made by [`forward`](Self::forward) (if the master lives).
    async fn cancel_forward(&self, local: &Path, remote: &Path) {
        if std::os::unix::net::UnixStream::connect(self.control_path()).is_ok() {
            let mut cmd = self.command();
            cmd.args(["-O", "cancel", "-L"])
                .arg(format!("{}:{}", local.display(), remote.display()))
                .arg("--")
                .arg(&self.target.host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            let _ = tokio::time::timeout(CONNECT_TIMEOUT, cmd.status()).await;
        }
        let _ = std::fs::remove_file(local);
    }
}

impl Drop for SshConn {
    fn drop(&mut self) {
        // The master would otherwise outlive the provider for CONTROL_PERSIST.
        if self.control_path().exists() {
            let _ = std::process::Command::new("ssh")
                .env_clear()
                .env("PATH", "/usr/local/bin:/usr/bin:/bin")
                .args(self.base_args())
                .args(["-O", "exit", "--"])
                .arg(&self.target.host)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// What one snapshot command saw on the host.
#[derive(Debug, Default)]
struct Snapshot {
    /// The state directory was missing.
    no_state: bool,
    cpus: Option<f64>,
    memory_mb: Option<f64>,
    uptime: Option<f64>,
    ticks_per_second: Option<f64>,
    page_size: Option<u64>,
    kvm: bool,
    records: Vec<Record>,
    procs: HashMap<i32, Proc>,
    listening: HashSet<u16>,
}

/// One recorded pid as the host saw it.
#[derive(Debug, Default)]
struct Proc {
    stat: Option<Stat>,
    resident_pages: Option<u64>,
    serials: Vec<String>,
    /// Nanoseconds each vCPU thread waited runnable.
    vcpu_waits: Vec<u64>,
}

impl Snapshot {
    /// The records whose QEMU lives and carries their id, with its stat.
    fn live(&self) -> Vec<(&Record, &Stat)> {
        self.records
            .iter()
            .filter_map(|r| {
                let p = self.procs.get(&r.pid)?;
                let stat = p
                    .stat
                    .as_ref()
                    .filter(|s| s.starttime == r.starttime && !s.is_exited())?;
                p.serials.contains(&r.instance_id).then_some((r, stat))
            })
            .collect()
    }
}

/// The snapshot command's script. `@STATE@`, `@OWNER@` and `@PORTS@` are filled in.
const SNAPSHOT: &str = r#"
cd @STATE@ 2>/dev/null || { echo nostate; exit 0; }
echo "cpus $(getconf _NPROCESSORS_ONLN 2>/dev/null)"
echo "mem $(sed -n 's/^MemTotal: *\([0-9]*\) kB/\1/p' /proc/meminfo)"
echo "uptime $(cat /proc/uptime)"
echo "clk $(getconf CLK_TCK 2>/dev/null)"
echo "page $(getconf PAGESIZE 2>/dev/null)"
[ -r /dev/kvm ] && [ -w /dev/kvm ] && echo kvm
for f in records/@OWNER@/*.json; do
  [ -f "$f" ] || continue
  printf 'record '; tr -d '\n' < "$f"; echo
  pid=$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$f")
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || continue
  echo "stat $pid $(cat /proc/$pid/stat 2>/dev/null)"
  echo "statm $pid $(cat /proc/$pid/statm 2>/dev/null)"
  tr '\0' '\n' < /proc/$pid/cmdline 2>/dev/null | sed -n "s/^type=1,serial=/serial $pid /p"
  for t in /proc/$pid/task/*; do
    echo "task $pid|$(cat $t/schedstat 2>/dev/null)|$(cat $t/comm 2>/dev/null)"
  done
done
if [ @PORTS@ = 1 ]; then cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | sed 's/^/tcp /'; fi
exit 0
"#;

fn parse_snapshot(text: &str) -> Snapshot {
    let mut s = Snapshot::default();
    for line in text.lines() {
        let (tag, rest) = line.split_once(' ').unwrap_or((line, ""));
        match tag {
            "nostate" => s.no_state = true,
            "kvm" => s.kvm = true,
            "cpus" => s.cpus = rest.trim().parse().ok().filter(|n: &f64| *n > 0.0),
            "mem" => {
                s.memory_mb = rest
                    .trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|k| *k > 0.0)
                    .map(|k| k / 1024.0);
            }
            "uptime" => s.uptime = procfs::parse_uptime(rest),
            "clk" => s.ticks_per_second = rest.trim().parse().ok().filter(|n: &f64| *n > 0.0),
            "page" => s.page_size = rest.trim().parse().ok().filter(|n| *n > 0),
            "record" => {
                if let Ok(r) = serde_json::from_str::<Record>(rest) {
                    s.records.push(r);
                }
            }
            "stat" | "statm" | "serial" => {
                let (pid, value) = rest.split_once(' ').unwrap_or((rest, ""));
                let Ok(pid) = pid.parse::<i32>() else {
                    continue;
                };
                let p = s.procs.entry(pid).or_default();
                match tag {
                    "stat" => p.stat = procfs::parse_stat(value).filter(|st| st.pid == pid),
                    "statm" => p.resident_pages = procfs::parse_statm_resident(value),
                    _ => p.serials.push(value.to_string()),
                }
            }
            "task" => {
                let mut parts = rest.splitn(3, '|');
                let (Some(pid), Some(sched), Some(comm)) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    continue;
                };
                let Ok(pid) = pid.parse::<i32>() else {
                    continue;
                };
                if is_vcpu_thread(comm)
                    && let Some(wait) = super::parse_schedstat_wait(sched)
                {
                    s.procs.entry(pid).or_default().vcpu_waits.push(wait);
                }
            }
            "tcp" => {
                let f: Vec<&str> = rest.split_whitespace().collect();
                if f.len() > 3
                    && f[3] == "0A"
                    && let Some((_, port)) = f[1].rsplit_once(':')
                    && let Ok(port) = u16::from_str_radix(port, 16)
                {
                    s.listening.insert(port);
                }
            }
            _ => {}
        }
    }
    s
}

/// QEMU names its vCPU threads `CPU <n>/TCG` or `CPU <n>/KVM`.
fn is_vcpu_thread(comm: &str) -> bool {
    comm.strip_prefix("CPU ")
        .and_then(|r| r.split_once('/'))
        .is_some_and(|(n, _)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Single-quotes `s` for a POSIX shell.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn quote_path(p: &Path) -> String {
    quote(&p.display().to_string())
}

/// The VMs of one SSH host; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct RemoteQemu {
    spec: RemoteSpec,
    config: QemuConfig,
    owner_dir: String,
    conn: SshConn,
    /// Whether the state directory was seen (or made): from then on its absence
    /// means the host was lost.
    state_seen: AtomicBool,
    create_lock: tokio::sync::Mutex<()>,
    recent_ports: Mutex<HashMap<u16, Instant>>,
    qmp_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    cpu_samples: Mutex<HashMap<String, Sample>>,
    steal_samples: Mutex<HashMap<String, Sample>>,
    /// The host's CPUs and MiB as it last reported them.
    reported: Mutex<Option<(f64, f64)>>,
    /// Until when the host counts as down without being tried (it did not answer).
    down_until: Mutex<Option<(Instant, String)>>,
}

impl RemoteQemu {
    /// Builds the host's provider; makes its private local directory (nothing is
    /// contacted until it is used).
    pub(crate) fn new(spec: RemoteSpec, config: QemuConfig) -> Result<Self, ProviderError> {
        let local_dir = local_dir(&config.owner, &spec)?;
        let owner_dir = crate::process::cgroup::owner_dir_name(&config.owner);
        let conn = SshConn {
            target: spec.target.clone(),
            identity_file: spec.identity_file.clone(),
            known_hosts: spec.known_hosts.clone(),
            local_dir,
            master: tokio::sync::Mutex::new(()),
            calls: AtomicU64::new(0),
        };
        Ok(RemoteQemu {
            spec,
            config,
            owner_dir,
            conn,
            state_seen: AtomicBool::new(false),
            create_lock: tokio::sync::Mutex::new(()),
            recent_ports: Mutex::new(HashMap::new()),
            qmp_locks: Mutex::new(HashMap::new()),
            cpu_samples: Mutex::new(HashMap::new()),
            steal_samples: Mutex::new(HashMap::new()),
            reported: Mutex::new(None),
            down_until: Mutex::new(None),
        })
    }

    /// How many `ssh` processes this host's calls started so far (the master's start
    /// included; QMP conversations over a forward are not processes).
    pub(crate) fn ssh_calls(&self) -> u64 {
        self.conn.calls.load(Ordering::Relaxed)
    }

    /// The SSH target.
    pub(crate) fn target(&self) -> &SshTarget {
        &self.spec.target
    }

    /// The host's CPUs and MiB as it reported them at the last snapshot.
    pub(crate) fn reported_capacity(&self) -> Option<(f64, f64)> {
        *lock(&self.reported)
    }

    fn records_dir(&self) -> PathBuf {
        self.spec.state_dir.join("records").join(&self.owner_dir)
    }

    fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.spec.state_dir.join("instances").join(id.as_str())
    }

    /// One pass over the host: see [`SNAPSHOT`]. Fails with
    /// [`ProviderError::Unavailable`] when the host is down.
    async fn snapshot(&self, ports: bool) -> Result<Snapshot, ProviderError> {
        let state = &self.spec.state_dir;
        // The state directory is made at first contact, never again after.
        let first = !self.state_seen.load(Ordering::Relaxed);
        let script = format!(
            "{}{}",
            if first {
                format!("mkdir -p -m 700 {} || exit 3\n", quote_path(state))
            } else {
                String::new()
            },
            SNAPSHOT
                .replace("@STATE@", &quote_path(state))
                .replace("@OWNER@", &self.owner_dir)
                .replace("@PORTS@", if ports { "1" } else { "0" })
        );
        if let Some((until, why)) = lock(&self.down_until).as_ref()
            && Instant::now() < *until
        {
            return Err(ProviderError::Unavailable(format!(
                "qemu host {} down (tried again after {DOWN_RETRY:?}): {why}",
                self.spec.name
            )));
        }
        let out = match self.conn.run(&script, None, CALL_TIMEOUT).await {
            Ok(out) => {
                if lock(&self.down_until).take().is_some() {
                    tracing::info!(host = %self.spec.name, "qemu host up again: SSH answers");
                }
                out
            }
            Err(CallError::Down(why)) => {
                let was =
                    lock(&self.down_until).replace((Instant::now() + DOWN_RETRY, why.clone()));
                if was.is_none() {
                    tracing::warn!(host = %self.spec.name, "qemu host down: {why}");
                }
                return Err(ProviderError::Unavailable(why));
            }
            Err(CallError::Local(e)) => return Err(e),
        };
        if out.code != Some(0) {
            return Err(ProviderError::Unavailable(format!(
                "qemu host {}: reading its state failed: {}",
                self.spec.name,
                out.stderr_tail()
            )));
        }
        let snap = parse_snapshot(&String::from_utf8_lossy(&out.stdout));
        if snap.no_state {
            return Err(ProviderError::Unavailable(format!(
                "qemu host {}: its state directory {} is gone",
                self.spec.name,
                state.display()
            )));
        }
        self.state_seen.store(true, Ordering::Relaxed);
        if let (Some(c), Some(m)) = (snap.cpus, snap.memory_mb) {
            *lock(&self.reported) = Some((c, m));
        }
        Ok(snap)
    }

    /// What the live VMs reserve and used (see [`HostUsage`]).
    pub(crate) async fn usage(&self) -> Result<HostUsage, ProviderError> {
        let snap = self.snapshot(false).await?;
        Ok(self.usage_of(&snap))
    }

    /// [`usage`](Self::usage) and whether a live VM has this id, from one snapshot.
    pub(crate) async fn usage_and_has(
        &self,
        id: &InstanceId,
    ) -> Result<(HostUsage, bool), ProviderError> {
        check_instance_id(id)?;
        let snap = self.snapshot(false).await?;
        let has = snap
            .live()
            .iter()
            .any(|(r, _)| r.instance_id == id.as_str());
        Ok((self.usage_of(&snap), has))
    }

    fn usage_of(&self, snap: &Snapshot) -> HostUsage {
        let samples = lock(&self.cpu_samples);
        let mut usage = HostUsage::default();
        for (record, _) in snap.live() {
            usage.vms += 1;
            usage.allocated.vcpus += f64::from(record.vcpus);
            usage.allocated.memory_mb += f64::from(record.memory_mb);
            if let Some(s) = samples.get(&record.instance_id) {
                usage.cpu_used += s.rate / 100.0;
            }
        }
        usage
    }

    /// The live record of `id`, if any.
    async fn live(&self, id: &InstanceId) -> Result<Option<(Record, Stat)>, ProviderError> {
        check_instance_id(id)?;
        let snap = self.snapshot(false).await?;
        Ok(snap
            .live()
            .into_iter()
            .find(|(r, _)| r.instance_id == id.as_str())
            .map(|(r, s)| (r.clone(), s.clone())))
    }

    /// Whether a live VM of this host has this id.
    pub(crate) async fn has(&self, id: &InstanceId) -> Result<bool, ProviderError> {
        Ok(self.live(id).await?.is_some())
    }

    /// The QEMU pid (on the remote host) of a live VM.
    pub(crate) async fn qemu_pid(&self, id: &InstanceId) -> Result<Option<i32>, ProviderError> {
        Ok(self.live(id).await?.map(|(r, _)| r.pid))
    }

    fn local_qmp_socket(&self, id: &InstanceId) -> PathBuf {
        self.conn.local_dir.join(format!("{}.qmp", id.as_str()))
    }

    /// Runs one QMP command on a VM through the forwarded socket.
    async fn qmp(
        &self,
        id: &InstanceId,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, ProviderError> {
        let gate = {
            let mut locks = lock(&self.qmp_locks);
            locks
                .entry(id.as_str().to_string())
                .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
                .clone()
        };
        let _one_at_a_time = gate.lock().await;
        let local = self.local_qmp_socket(id);
        let remote = self.instance_dir(id).join("qmp.sock");
        let qmp_err = |e: QmpError| ProviderError::Backend(format!("VM {id}: {e}"));
        // A forward made earlier (by this master) answers at once; else (re)make it,
        // dropping the old one first (the master keeps a forward it was given even
        // when its socket is gone).
        let mut conn = match Qmp::connect(&local).await {
            Ok(conn) => conn,
            Err(_) => {
                if local.exists() {
                    self.conn.cancel_forward(&local, &remote).await;
                }
                self.conn.forward(&local, &remote).await?;
                Qmp::connect(&local).await.map_err(qmp_err)?
            }
        };
        conn.execute(command, arguments).await.map_err(qmp_err)
    }

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

    fn to_instance(&self, record: &Record, state: ObservedState) -> ProviderInstance {
        ProviderInstance {
            instance_id: InstanceId(record.instance_id.clone()),
            tenant: record.tenant.clone(),
            group: record.group.clone(),
            native_id: record.pid.to_string(),
            host: self.spec.name.clone(),
            address: Some(SocketAddr::new(self.spec.address, record.port)),
            state,
        }
    }

    /// The live VMs (adopted from the records as they are).
    pub(crate) async fn list(&self) -> Result<Vec<ProviderInstance>, ProviderError> {
        let snap = self.snapshot(false).await?;
        let mut out = Vec::new();
        for (record, _) in snap.live() {
            let state = self.state(&InstanceId(record.instance_id.clone())).await;
            out.push(self.to_instance(record, state));
        }
        Ok(out)
    }

    /// CPU, memory and steal of the given VMs, from one snapshot.
    pub(crate) async fn metrics(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, InstanceMetrics)>, ProviderError> {
        let wanted: HashSet<&str> = ids.iter().map(InstanceId::as_str).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let snap = self.snapshot(false).await?;
        let ticks = snap.ticks_per_second.unwrap_or(100.0);
        let page = snap.page_size.unwrap_or(4096);
        let now = Instant::now();
        let mut out = Vec::new();
        for (record, stat) in snap.live() {
            if !wanted.contains(record.instance_id.as_str()) {
                continue;
            }
            let id = InstanceId(record.instance_id.clone());
            let cpu = {
                let mut samples = lock(&self.cpu_samples);
                let sample = cpu_sample(
                    samples.get(id.as_str()),
                    stat.starttime,
                    stat.own_ticks(),
                    now,
                    snap.uptime,
                    ticks,
                );
                samples.insert(id.as_str().to_string(), sample);
                sample.rate
            };
            let proc = snap.procs.get(&record.pid);
            let steal = proc
                .filter(|p| !p.vcpu_waits.is_empty())
                .and_then(|p| self.steal_of(&id, record, &p.vcpu_waits, now));
            let pages = proc.and_then(|p| p.resident_pages).unwrap_or(0);
            out.push((
                id,
                InstanceMetrics {
                    cpu_percent: cpu,
                    memory_mb: pages.saturating_mul(page) as f64 / (1024.0 * 1024.0),
                    steal_percent: steal,
                },
            ));
        }
        Ok(out)
    }

    fn steal_of(
        &self,
        id: &InstanceId,
        record: &Record,
        waits: &[u64],
        now: Instant,
    ) -> Option<f64> {
        let mut samples = lock(&self.steal_samples);
        let prev = samples.get(id.as_str()).copied();
        let next = steal_sample(
            prev.as_ref(),
            record.starttime,
            waits.iter().sum(),
            now,
            waits.len(),
        );
        samples.insert(id.as_str().to_string(), next);
        prev.is_some_and(|p| p.starttime == record.starttime)
            .then_some(next.rate)
    }

    /// Steal of each live VM among `ids` since the previous reading (one snapshot).
    pub(crate) async fn steal(
        &self,
        ids: &[InstanceId],
    ) -> Result<Vec<(InstanceId, f64)>, ProviderError> {
        let wanted: HashSet<&str> = ids.iter().map(InstanceId::as_str).collect();
        let snap = self.snapshot(false).await?;
        let now = Instant::now();
        let mut out = Vec::new();
        for (record, _) in snap.live() {
            if !wanted.contains(record.instance_id.as_str()) {
                continue;
            }
            let id = InstanceId(record.instance_id.clone());
            if let Some(p) = snap
                .procs
                .get(&record.pid)
                .filter(|p| !p.vcpu_waits.is_empty())
                && let Some(s) = self.steal_of(&id, record, &p.vcpu_waits, now)
            {
                out.push((id, s));
            }
        }
        Ok(out)
    }

    /// The image's files as paths on the remote host.
    fn remote_image(&self, image: &VmImage) -> Result<VmImage, ProviderError> {
        let map = |p: &PathBuf| -> Result<PathBuf, ProviderError> {
            let rel = p.strip_prefix(&self.config.images_dir).map_err(|_| {
                ProviderError::Backend(format!(
                    "image file {} is not under the images directory {}",
                    p.display(),
                    self.config.images_dir.display()
                ))
            })?;
            let remote = self.spec.images_dir.join(rel);
            if !plain_remote_path(&remote) {
                return Err(ProviderError::InvalidTemplate(format!(
                    "template.image: {} must be a path of letters, digits, '/', '.', '_' or '-' to be used on qemu host {}",
                    remote.display(),
                    self.spec.name
                )));
            }
            Ok(remote)
        };
        Ok(VmImage {
            kernel: image.kernel.as_ref().map(map).transpose()?,
            initrd: image.initrd.as_ref().map(map).transpose()?,
            disk: match &image.disk {
                Some((p, f)) => Some((map(p)?, f.clone())),
                None => None,
            },
            ..image.clone()
        })
    }

    /// A port in [`PORT_RANGE`] that nothing listens on and no VM of ours uses.
    fn pick_port(&self, snap: &Snapshot) -> Result<u16, ProviderError> {
        let in_use: HashSet<u16> = snap.records.iter().map(|r| r.port).collect();
        let mut recent = lock(&self.recent_ports);
        recent.retain(|_, at| at.elapsed() < PORT_RESERVATION);
        let span = u32::from(PORT_RANGE.end() - PORT_RANGE.start()) + 1;
        let start = rand_u32() % span;
        for i in 0..span {
            let port = PORT_RANGE.start() + ((start + i) % span) as u16;
            if !in_use.contains(&port)
                && !snap.listening.contains(&port)
                && !recent.contains_key(&port)
            {
                recent.insert(port, Instant::now());
                return Ok(port);
            }
        }
        Err(ProviderError::NoCapacity(format!(
            "qemu host {}: no free port in {PORT_RANGE:?}",
            self.spec.name
        )))
    }

    /// Starts a VM on the host; see the [module docs](self).
    pub(crate) async fn create(
        &self,
        request: &CreateRequest,
        image: &VmImage,
        seed: Option<Vec<u8>>,
    ) -> Result<ProviderInstance, ProviderError> {
        let id = &request.instance_id;
        check_instance_id(id)?;
        let image = self.remote_image(image)?;
        let _serial = self.create_lock.lock().await;
        let snap = self.snapshot(true).await?;
        let live = snap.live();
        if let Some((record, _)) = live.iter().find(|(r, _)| r.instance_id == id.as_str()) {
            return Ok(self.to_instance(record, ObservedState::Running));
        }
        if let Some(max) = self.config.max_vms
            && live.len() >= max as usize
        {
            return Err(ProviderError::NoCapacity(format!(
                "qemu host {} runs its most VMs ({max})",
                self.spec.name
            )));
        }
        let accel = match self.config.accel {
            Accel::Auto if snap.kvm => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            fixed => fixed,
        };
        let port = self.pick_port(&snap)?;
        let dir = self.instance_dir(id);
        let socket = dir.join("qmp.sock");
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(ProviderError::Backend(format!(
                "the QMP socket path {} on qemu host {} is longer than {MAX_SOCKET_PATH} bytes: use a shorter state_dir",
                socket.display(),
                self.spec.name
            )));
        }
        let mut args = super::command_line(request, &image, accel, &dir, self.spec.address, port);
        // Named vCPU threads (`CPU 0/TCG`): the snapshot finds them by name.
        if let Some(name) = args.iter().position(|a| a == "-name").map(|i| i + 1)
            && let Some(value) = args.get_mut(name)
        {
            value.push_str(",debug-threads=on");
        }
        let mut qemu_cmd = quote(&self.config.qemu);
        for a in &args {
            qemu_cmd.push(' ');
            qemu_cmd.push_str(&quote(a));
        }
        // The record without pid and start time, which the script adds.
        let record = Record::starting(request, port);
        let mut head = serde_json::to_value(&record)
            .map_err(|e| ProviderError::Backend(format!("encoding a VM record: {e}")))?;
        if let Some(map) = head.as_object_mut() {
            map.remove("pid");
            map.remove("starttime");
        }
        let head = head.to_string();
        let head = head.strip_suffix('}').unwrap_or(&head);
        let records = self.records_dir();
        let record_file = records.join(format!("{}.json", id.as_str()));
        let mut script = String::from("set -e\numask 077\n");
        script += &format!(
            "D={}\nrm -rf \"$D\"\nmkdir -p \"$D\" {}\ncd \"$D\"\n",
            quote_path(&dir),
            quote_path(&records)
        );
        if let Some((base, format)) = &image.disk {
            script += &format!(
                "{} create -q -f qcow2 -F {} -b {} disk.qcow2 >qemu.log 2>&1 || {{ cat qemu.log >&2; exit 3; }}\n",
                quote(&self.config.qemu_img),
                quote(format),
                quote_path(base)
            );
        }
        if seed.is_some() {
            script += &format!("cat > {}\n", cloud_init::SEED_FILE);
        }
        script += &format!(
            "{qemu_cmd} -daemonize -pidfile \"$D/qemu.pid\" >qemu.log 2>&1 || {{ cat qemu.log >&2; exit 3; }}\n\
             pid=$(cat \"$D/qemu.pid\")\n\
             st=$(sed 's/^.*) //' /proc/$pid/stat | cut -d' ' -f20)\n\
             printf '%s,\"pid\":%s,\"starttime\":%s}}' {} \"$pid\" \"$st\" > {}.tmp\n\
             mv {}.tmp {}\n\
             echo \"started $pid $st\"\n",
            quote(head),
            quote_path(&record_file),
            quote_path(&record_file),
            quote_path(&record_file),
        );
        let out = self.conn.run(&script, seed, CREATE_TIMEOUT).await?;
        let text = String::from_utf8_lossy(&out.stdout);
        let started = text.lines().find_map(|l| {
            let mut f = l.strip_prefix("started ")?.split_whitespace();
            Some((
                f.next()?.parse::<i32>().ok()?,
                f.next()?.parse::<u64>().ok()?,
            ))
        });
        let Some((pid, starttime)) = started.filter(|_| out.code == Some(0)) else {
            let _ = self.forget(id).await;
            return Err(ProviderError::Backend(format!(
                "VM {id} on qemu host {}: starting QEMU failed: {}",
                self.spec.name,
                out.stderr_tail()
            )));
        };
        let record = Record {
            pid,
            starttime,
            ..record
        };
        // QEMU daemonized: the VM exists. Its QMP answering through the forward is
        // the last check.
        if let Err(e) = self.qmp(id, "query-status", None).await {
            let _ = self.kill_and_forget(id, &record, Duration::ZERO).await;
            return Err(ProviderError::Backend(format!(
                "VM {id} on qemu host {}: QMP did not answer: {e}",
                self.spec.name
            )));
        }
        tracing::info!(instance = %id, host = %self.spec.name, pid, port, %accel, image = %image.name, "started VM over SSH");
        Ok(self.to_instance(&record, ObservedState::Running))
    }

    /// Waits up to `grace` for the VM's QEMU to go, SIGKILLs it if it did not, then
    /// removes its files and record: one SSH call.
    async fn kill_and_forget(
        &self,
        id: &InstanceId,
        record: &Record,
        grace: Duration,
    ) -> Result<(), ProviderError> {
        let tenths = |d: Duration| d.as_millis().div_ceil(100);
        let script = format!(
            "pid={pid}; start={start}\n\
             alive() {{ s=$(sed 's/^.*) //' /proc/$pid/stat 2>/dev/null) || return 1; \
             [ \"$(echo \"$s\" | cut -d' ' -f20)\" = \"$start\" ] && [ \"$(echo \"$s\" | cut -d' ' -f1)\" != Z ]; }}\n\
             i=0; while alive && [ $i -lt {grace} ]; do sleep 0.1; i=$((i+1)); done\n\
             if alive; then echo killed; kill -9 $pid 2>/dev/null; fi\n\
             i=0; while alive && [ $i -lt {kill} ]; do sleep 0.1; i=$((i+1)); done\n\
             if alive; then echo stuck; exit 4; fi\n\
             rm -rf {dir} {record}\n",
            pid = record.pid,
            start = record.starttime,
            grace = tenths(grace),
            kill = tenths(KILL_WAIT),
            dir = quote_path(&self.instance_dir(id)),
            record = quote_path(&self.records_dir().join(format!("{}.json", id.as_str()))),
        );
        let out = self
            .conn
            .run(&script, None, grace + KILL_WAIT + CALL_TIMEOUT)
            .await?;
        self.drop_local(id).await;
        let said = String::from_utf8_lossy(&out.stdout);
        if out.code == Some(4) {
            return Err(ProviderError::Backend(format!(
                "QEMU (pid {}) of VM {id} on qemu host {} still runs {KILL_WAIT:?} after SIGKILL",
                record.pid, self.spec.name
            )));
        }
        if said.contains("killed") {
            tracing::warn!(instance = %id, host = %self.spec.name, ?grace, "VM did not power off; killed QEMU");
        } else {
            tracing::info!(instance = %id, host = %self.spec.name, "VM powered off");
        }
        Ok(())
    }

    /// Forgets the local side of a VM: its QMP forward and samples.
    async fn drop_local(&self, id: &InstanceId) {
        let local = self.local_qmp_socket(id);
        self.conn
            .cancel_forward(&local, &self.instance_dir(id).join("qmp.sock"))
            .await;
        lock(&self.qmp_locks).remove(id.as_str());
        lock(&self.cpu_samples).remove(id.as_str());
        lock(&self.steal_samples).remove(id.as_str());
    }

    /// Removes a VM's files and record on the host (its QEMU is gone).
    async fn forget(&self, id: &InstanceId) -> Result<(), ProviderError> {
        let script = format!(
            "rm -rf {} {}",
            quote_path(&self.instance_dir(id)),
            quote_path(&self.records_dir().join(format!("{}.json", id.as_str())))
        );
        self.conn.run(&script, None, CALL_TIMEOUT).await?;
        self.drop_local(id).await;
        Ok(())
    }

    /// The power button, then SIGKILL after `grace`; files and record removed.
    pub(crate) async fn delete(
        &self,
        id: &InstanceId,
        grace: Duration,
    ) -> Result<(), ProviderError> {
        let Some((record, _)) = self.live(id).await? else {
            return self.forget(id).await;
        };
        // A paused guest cannot see its power button.
        let _ = self.qmp(id, "cont", None).await;
        let asked = self.qmp(id, "system_powerdown", None).await;
        let grace = if asked.is_ok() { grace } else { Duration::ZERO };
        self.kill_and_forget(id, &record, grace).await
    }

    /// QMP `stop`.
    pub(crate) async fn pause(&self, id: &InstanceId) -> Result<(), ProviderError> {
        if self.live(id).await?.is_none() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        self.qmp(id, "stop", None).await.map(|_| ())
    }

    /// QMP `cont`.
    pub(crate) async fn resume(&self, id: &InstanceId) -> Result<(), ProviderError> {
        if self.live(id).await?.is_none() {
            return Err(ProviderError::NotFound(id.clone()));
        }
        self.qmp(id, "cont", None).await.map(|_| ())
    }
}

/// The host's private local directory: `$TMPDIR/swell-qemu-ssh-<uid>/<hash>` (short,
/// for socket paths), mode 0700 and checked to be ours and not a link.
fn local_dir(owner: &str, spec: &RemoteSpec) -> Result<PathBuf, ProviderError> {
    let uid = nix::unistd::geteuid().as_raw();
    // Another key or known_hosts file is another connection.
    let key = format!(
        "{owner}\0{}\0{}\0{}\0{}\0{:?}",
        spec.name,
        spec.target,
        spec.state_dir.display(),
        spec.identity_file.display(),
        spec.known_hosts
    );
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let base = std::env::temp_dir().join(format!("swell-qemu-ssh-{uid}"));
    let dir = base.join(format!("{hash:016x}"));
    for d in [&base, &dir] {
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(ProviderError::Io {
                    action: format!("creating {}", d.display()),
                    source,
                });
            }
        }
        let meta = std::fs::symlink_metadata(d).map_err(|source| ProviderError::Io {
            action: format!("reading {}", d.display()),
            source,
        })?;
        if !meta.is_dir() || meta.uid() != uid {
            return Err(ProviderError::Backend(format!(
                "{} is not a directory of this user: refusing to keep SSH sockets there",
                d.display()
            )));
        }
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
            ProviderError::Io {
                action: format!("restricting {}", d.display()),
                source,
            }
        })?;
    }
    // ssh appends up to 17 characters to the control path while making it.
    if dir.join("ctl").as_os_str().len() + 17 > 104 {
        return Err(ProviderError::Backend(format!(
            "the SSH control socket path under {} is too long: use a shorter TMPDIR",
            dir.display()
        )));
    }
    Ok(dir)
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish() as u32
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
    fn ssh_targets_parse_and_bad_ones_are_refused() {
        let t: SshTarget = "swell@rack2.example:2222".parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port),
            ("swell", "rack2.example", 2222)
        );
        assert_eq!(t.to_string(), "swell@rack2.example:2222");
        let t: SshTarget = "root@10.0.0.2".parse().unwrap();
        assert_eq!(t.port, 22);
        let t: SshTarget = "u@[fd00::2]:22".parse().unwrap();
        assert_eq!(
            (t.host.as_str(), t.to_string().as_str()),
            ("fd00::2", "u@[fd00::2]:22")
        );
        for bad in [
            "rack2",
            "@rack2",
            "u@",
            "u@-oProxyCommand=x",
            "-l@host",
            "u@host:0",
            "u@host:99999",
            "u@host:x",
            "u@ho st",
            "u@[nope]:22",
            "u@[::1]x",
        ] {
            assert!(bad.parse::<SshTarget>().is_err(), "{bad}");
        }
    }

    #[test]
    fn remote_paths_must_be_plain_and_absolute() {
        assert!(plain_remote_path(Path::new("/srv/swell/rack2")));
        for bad in [
            "srv/x",
            "/srv/a b",
            "/srv/a,b",
            "/srv/../etc",
            "/srv/$(x)",
            "/srv/'",
        ] {
            assert!(!plain_remote_path(Path::new(bad)), "{bad}");
        }
    }

    #[test]
    fn quoting_survives_quotes() {
        assert_eq!(quote("a'b"), r"'a'\''b'");
        assert_eq!(quote("plain"), "'plain'");
    }

    #[test]
    fn vcpu_threads_are_recognised_by_name() {
        assert!(is_vcpu_thread("CPU 0/TCG"));
        assert!(is_vcpu_thread("CPU 12/KVM"));
        for other in [
            "qemu-system-x86",
            "CPU /TCG",
            "CPU x/KVM",
            "worker",
            "CPU 0",
        ] {
            assert!(!is_vcpu_thread(other), "{other}");
        }
    }

    #[test]
    fn a_snapshot_is_parsed_and_only_matching_processes_are_live() {
        let rec = |id: &str, pid: i32, start: u64| {
            format!(
                "record {{\"instance_id\":\"{id}\",\"tenant\":\"t\",\"group\":\"g\",\"port\":20001,\"vcpus\":1,\"memory_mb\":128,\"pid\":{pid},\"starttime\":{start}}}"
            )
        };
        let stat = |pid: i32, start: u64| {
            format!(
                "stat {pid} {pid} (qemu-system-x86) S 1 {pid} {pid} 0 -1 4194560 1 0 0 0 150 50 0 0 20 0 3 0 {start} 1000 500 18446744073709551615"
            )
        };
        let text = [
            "cpus 4".to_string(),
            "mem 2048000".into(),
            "uptime 100.5 50.0".into(),
            "clk 100".into(),
            "page 4096".into(),
            "kvm".into(),
            rec("vm-1", 10, 500),
            stat(10, 500),
            "statm 10 1000 256 0".into(),
            "serial 10 vm-1".into(),
            "task 10|1 2 3|qemu-system-x86".into(),
            "task 10|5 700 9|CPU 0/TCG".into(),
            "task 10|5 300 9|CPU 1/TCG".into(),
            // Its pid was reused: another start time.
            rec("vm-2", 11, 600),
            stat(11, 601),
            "serial 11 vm-2".into(),
            // Right pid and start, but another VM's serial.
            rec("vm-3", 12, 700),
            stat(12, 700),
            "serial 12 vm-9".into(),
            // No process at all.
            rec("vm-4", 13, 800),
            "record {not json".into(),
            "tcp   0: 0100007F:4E21 00000000:0000 0A 00000000:00000000".into(),
            "tcp   1: 0100007F:4E22 0200007F:0016 01 00000000:00000000".into(),
        ]
        .join("\n");
        let s = parse_snapshot(&text);
        assert_eq!((s.cpus, s.memory_mb), (Some(4.0), Some(2000.0)));
        assert_eq!(
            (s.ticks_per_second, s.page_size, s.kvm),
            (Some(100.0), Some(4096), true)
        );
        assert_eq!(s.records.len(), 4);
        let live: Vec<&str> = s
            .live()
            .iter()
            .map(|(r, _)| r.instance_id.as_str())
            .collect();
        assert_eq!(live, ["vm-1"]);
        let p = &s.procs[&10];
        assert_eq!(
            (p.resident_pages, p.vcpu_waits.clone()),
            (Some(256), vec![700, 300])
        );
        assert_eq!(p.stat.as_ref().map(|s| s.own_ticks()), Some(200));
        assert_eq!(s.listening, HashSet::from([0x4E21]));
        assert!(parse_snapshot("nostate\n").no_state);
    }
}
