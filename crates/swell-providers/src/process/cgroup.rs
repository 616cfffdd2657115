//! Control groups for process instances: each instance in a cgroup of its own, with
//! CPU, memory and pids limits, under a parent that belongs to one Swell server.
//!
//! The mode is chosen once, when the provider is built ([`Cgroups::probe`]):
//!
//! - **v2** when a `cgroup2` hierarchy lists `cpu`, `memory` and `pids` in its
//!   `cgroup.controllers` and they can be enabled in `cgroup.subtree_control` down to
//!   `<mount>/swell/<owner>/`;
//! - **v1** otherwise, when the `cpu`, `memory` and `pids` controllers are mounted as
//!   v1 hierarchies (a "hybrid" host: the unified hierarchy is mounted but holds no
//!   controller), with `<mount>/swell/<owner>/` made in each of the three;
//! - **none** when neither works (not root, no delegation): a warning, and instances
//!   run without limits.
//!
//! The parent sits at the root of each hierarchy, not under the server's own cgroup,
//! so that a server restarted from another shell, session or unit finds its instances
//! again (the way Docker's `cgroupfs` driver keeps `/sys/fs/cgroup/…/docker/`). Its
//! name comes from the ownership tag (the server's data directory), so that two servers
//! never mix their instances. An instance's cgroup is named after its id: the cgroup
//! path is what tells which instance a process belongs to.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The `pids.max` of an instance unless configured otherwise: enough for a web server
/// with worker processes and threads (every thread counts), few enough that a fork
/// bomb stops long before the host's pid table is full.
pub const DEFAULT_PIDS_MAX: u32 = 512;

/// The CPU bandwidth period, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// The directory under each hierarchy's root that holds every Swell server's parent.
const SWELL_DIR: &str = "swell";

/// The controllers an instance's cgroup must have.
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// An instance's limits, from its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// CPU time per [`CPU_PERIOD_US`], in microseconds; `None`: unlimited.
    pub cpu_quota_us: Option<u64>,
    /// Memory in bytes; `None`: unlimited.
    pub memory_bytes: Option<u64>,
    /// The most processes and threads at once.
    pub pids_max: u32,
}

impl Limits {
    /// `vcpus` cores and `memory_mb` MiB (`0`: no limit, as the template allows) and
    /// at most `pids_max` tasks.
    pub fn new(vcpus: u32, memory_mb: u32, pids_max: u32) -> Self {
        Limits {
            cpu_quota_us: (vcpus > 0).then(|| u64::from(vcpus) * CPU_PERIOD_US),
            memory_bytes: (memory_mb > 0).then(|| u64::from(memory_mb) * 1024 * 1024),
            pids_max: pids_max.max(1),
        }
    }

    /// The files of a v2 cgroup and what to write into them.
    fn v2_files(&self) -> Vec<(&'static str, String)> {
        let cpu = match self.cpu_quota_us {
            Some(q) => format!("{q} {CPU_PERIOD_US}"),
            None => format!("max {CPU_PERIOD_US}"),
        };
        let memory = self
            .memory_bytes
            .map_or_else(|| "max".to_string(), |b| b.to_string());
        vec![
            ("cpu.max", cpu),
            ("memory.max", memory),
            ("pids.max", self.pids_max.to_string()),
        ]
    }

    /// The files of the v1 `cpu`, `memory` and `pids` cgroups (by controller) and what
    /// to write into them, in order (the period before the quota).
    fn v1_files(&self) -> Vec<(&'static str, &'static str, String)> {
        let unlimited = || "-1".to_string();
        vec![
            ("cpu", "cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
            (
                "cpu",
                "cpu.cfs_quota_us",
                self.cpu_quota_us.map_or_else(unlimited, |q| q.to_string()),
            ),
            (
                "memory",
                "memory.limit_in_bytes",
                self.memory_bytes.map_or_else(unlimited, |b| b.to_string()),
            ),
            ("pids", "pids.max", self.pids_max.to_string()),
        ]
    }
}

/// Which cgroup version is used, for logs and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// The unified hierarchy (cgroup v2).
    V2,
    /// The v1 `cpu`, `memory` and `pids` hierarchies.
    V1,
    /// No cgroups: instances run without limits.
    None,
}

impl std::fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CgroupMode::V2 => "v2",
            CgroupMode::V1 => "v1",
            CgroupMode::None => "none",
        })
    }
}

/// One mounted file system, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its type (`cgroup`, `cgroup2`, …).
    pub fstype: String,
    /// Its super options (for a v1 cgroup: its controllers, e.g. `rw,cpu,cpuacct`).
    pub options: Vec<String>,
}

/// Parses `/proc/self/mountinfo`. Lines that do not parse are skipped.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let point = fields.get(4)?;
            // Optional fields end at a lone "-"; the type, source and super options follow.
            let dash = fields.iter().position(|f| *f == "-")?;
            let fstype = fields.get(dash + 1)?;
            let options = fields.get(dash + 3)?;
            Some(Mount {
                point: PathBuf::from(unescape_octal(point)),
                fstype: fstype.to_string(),
                options: options.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// Undoes mountinfo's `\040`-style escapes (space, tab, newline, backslash).
fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            if let Ok(byte) = u8::try_from(value) {
                out.push(byte);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A way to set up cgroups that the host might allow, in order of preference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// The unified hierarchy mounted at this point.
    V2 { root: PathBuf },
    /// The v1 hierarchies holding `cpu`, `memory` and `pids`, by mount point.
    V1 {
        cpu: PathBuf,
        memory: PathBuf,
        pids: PathBuf,
    },
}

/// The plans worth trying on a host with these mounts: v2 first when a `cgroup2`
/// mount's controllers (as `controllers_of` reads its `cgroup.controllers`) include
/// cpu, memory and pids; then v1 when each of the three has a v1 hierarchy.
pub(crate) fn plans(
    mounts: &[Mount],
    controllers_of: impl Fn(&Path) -> Option<String>,
) -> Vec<Plan> {
    let mut plans = Vec::new();
    for m in mounts.iter().filter(|m| m.fstype == "cgroup2") {
        let Some(listed) = controllers_of(&m.point) else {
            continue;
        };
        let have: HashSet<&str> = listed.split_whitespace().collect();
        if CONTROLLERS.iter().all(|c| have.contains(c)) {
            plans.push(Plan::V2 {
                root: m.point.clone(),
            });
            break;
        }
    }
    let v1 = |controller: &str| {
        mounts
            .iter()
            .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == controller))
            .map(|m| m.point.clone())
    };
    if let (Some(cpu), Some(memory), Some(pids)) = (v1("cpu"), v1("memory"), v1("pids")) {
        plans.push(Plan::V1 { cpu, memory, pids });
    }
    plans
}

/// The name of an owner's parent cgroup: the ownership tag's tail made of safe characters
/// (readable for an operator) and a hash of the whole tag (unique).
pub(crate) fn owner_dir_name(owner: &str) -> String {
    let safe: String = owner
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let tail: String = {
        let chars: Vec<char> = safe.chars().collect();
        chars[chars.len().saturating_sub(40)..].iter().collect()
    };
    let tail = tail.trim_matches(['_', '-']);
    // FNV-1a: stable across builds and platforms, unlike std's hasher.
    let hash = owner.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    if tail.is_empty() {
        format!("{hash:016x}")
    } else {
        format!("{tail}-{hash:016x}")
    }
}

/// The cgroups of one provider: where its instances' cgroups go, in the chosen mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroups {
    mode: CgroupMode,
    /// The owner's parent cgroup in each hierarchy used (v2: one; v1: cpu, memory,
    /// pids, in that order; none: empty).
    parents: Vec<PathBuf>,
}

impl Cgroups {
    /// No cgroups.
    pub fn none() -> Self {
        Cgroups {
            mode: CgroupMode::None,
            parents: Vec::new(),
        }
    }

    /// Chooses the mode for `owner` on this host (see the [module docs](self)), makes
    /// the owner's parent cgroups, and logs the choice.
    pub fn probe(owner: &str) -> Self {
        let mounts = match fs::read_to_string("/proc/self/mountinfo") {
            Ok(text) => parse_mountinfo(&text),
            Err(e) => {
                tracing::warn!(
                    "process instances run without cgroups (no limits): cannot read /proc/self/mountinfo: {e}"
                );
                return Cgroups::none();
            }
        };
        let candidates = plans(&mounts, |root| {
            fs::read_to_string(root.join("cgroup.controllers")).ok()
        });
        let name = owner_dir_name(owner);
        let mut why = Vec::new();
        for plan in candidates {
            match Cgroups::set_up(&plan, &name) {
                Ok(cgroups) => {
                    tracing::info!(
                        mode = %cgroups.mode,
                        parents = ?cgroups.parents,
                        "process instances run in cgroups of their own (cpu, memory and pids limits)"
                    );
                    return cgroups;
                }
                Err(e) => why.push(format!("{plan:?}: {e}")),
            }
        }
        if why.is_empty() {
            why.push("no cgroup v2 hierarchy with cpu, memory and pids, and no v1 cpu, memory and pids hierarchies".into());
        }
        tracing::warn!(
            reasons = %why.join("; "),
            "process instances run without cgroups: no cpu, memory or pids limits, and a process that leaves its process group is not tracked"
        );
        Cgroups::none()
    }

    /// Makes the owner's parent cgroups of `plan`.
    pub(crate) fn set_up(plan: &Plan, owner_name: &str) -> io::Result<Cgroups> {
        match plan {
            Plan::V2 { root } => {
                let enable = "+cpu +memory +pids";
                let swell = root.join(SWELL_DIR);
                let parent = swell.join(owner_name);
                write_file(&root.join("cgroup.subtree_control"), enable)?;
                make_dir(&swell)?;
                write_file(&swell.join("cgroup.subtree_control"), enable)?;
                make_dir(&parent)?;
                write_file(&parent.join("cgroup.subtree_control"), enable)?;
                let enabled = fs::read_to_string(parent.join("cgroup.subtree_control"))?;
                let enabled: HashSet<&str> = enabled.split_whitespace().collect();
                if let Some(missing) = CONTROLLERS.iter().find(|c| !enabled.contains(*c)) {
                    return Err(io::Error::other(format!(
                        "the {missing} controller is not enabled in {}",
                        parent.display()
                    )));
                }
                Ok(Cgroups {
                    mode: CgroupMode::V2,
                    parents: vec![parent],
                })
            }
            Plan::V1 { cpu, memory, pids } => {
                let mut parents = Vec::new();
                for mount in [cpu, memory, pids] {
                    let parent = mount.join(SWELL_DIR).join(owner_name);
                    make_dir(&parent)?;
                    parents.push(parent);
                }
                Ok(Cgroups {
                    mode: CgroupMode::V1,
                    parents,
                })
            }
        }
    }

    /// The mode in use.
    pub fn mode(&self) -> CgroupMode {
        self.mode
    }

    /// Whether instances get cgroups at all.
    pub fn enabled(&self) -> bool {
        self.mode != CgroupMode::None
    }

    /// The owner's parent cgroups (empty without cgroups).
    pub fn parents(&self) -> &[PathBuf] {
        &self.parents
    }

    /// The instance's cgroup in each hierarchy used. `id` must be a checked instance id
    /// (a plain file name).
    pub fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.parents.iter().map(|p| p.join(id)).collect()
    }

    /// Makes the instance's cgroups (or reuses them, for an instance created again)
    /// and writes its limits.
    pub fn prepare(&self, id: &str, limits: &Limits) -> io::Result<()> {
        match self.mode {
            CgroupMode::None => Ok(()),
            CgroupMode::V2 => {
                let dir = self.parents[0].join(id);
                make_dir(&dir)?;
                for (file, value) in limits.v2_files() {
                    write_file(&dir.join(file), &value)?;
                }
                // Without this, a memory limit is worked around by swapping.
                if limits.memory_bytes.is_some() {
                    match write_file(&dir.join("memory.swap.max"), "0") {
                        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                Ok(())
            }
            CgroupMode::V1 => {
                for dir in self.dirs(id) {
                    make_dir(&dir)?;
                }
                for (controller, file, value) in limits.v1_files() {
                    let index = CONTROLLERS
                        .iter()
                        .position(|c| *c == controller)
                        .unwrap_or_default();
                    write_file(&self.parents[index].join(id).join(file), &value)?;
                }
                Ok(())
            }
        }
    }

    /// Moves process `pid` into the instance's cgroups.
    pub fn place(&self, id: &str, pid: i32) -> io::Result<()> {
        for dir in self.dirs(id) {
            write_file(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// The processes in the instance's cgroup (the pids hierarchy's in v1, where the
    /// process count is limited); empty when it has none or does not exist.
    pub fn pids(&self, id: &str) -> Vec<i32> {
        let Some(parent) = self.parents.last() else {
            return Vec::new();
        };
        read_pids(&parent.join(id))
    }

    /// Kills every process of the instance at once where the kernel can
    /// (`cgroup.kill`, v2 on Linux 5.14+); whether it did.
    pub fn kill_all(&self, id: &str) -> bool {
        if self.mode != CgroupMode::V2 {
            return false;
        }
        write_file(&self.parents[0].join(id).join("cgroup.kill"), "1").is_ok()
    }

    /// Removes the instance's cgroups (they must be empty); gone already is fine.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        for dir in self.dirs(id) {
            match fs::remove_dir(&dir) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}

/// The pids listed in `<dir>/cgroup.procs`.
fn read_pids(dir: &Path) -> Vec<i32> {
    fs::read_to_string(dir.join("cgroup.procs"))
        .map(|text| parse_pids(&text))
        .unwrap_or_default()
}

/// Parses a `cgroup.procs` file: one pid a line.
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|pid: &i32| *pid > 0)
        .collect()
}

/// Makes a cgroup directory; one that exists already is fine.
fn make_dir(dir: &Path) -> io::Result<()> {
    match fs::create_dir(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A missing `swell/` parent on the first start.
            fs::create_dir_all(dir)
        }
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(with_path(e, dir)),
        _ => Ok(()),
    }
}

/// Writes a control file in one `write` (cgroupfs reads each write as one command);
/// the error names the file.
fn write_file(path: &Path, value: &str) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    file.write_all(value.as_bytes())
        .map_err(|e| with_path(e, path))
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // This machine's: v1 hybrid, the unified hierarchy mounted with no controller.
    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    // A systemd host on the unified hierarchy only.
    const UNIFIED: &str = "\
25 21 0:22 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
    // An older distribution: cpu and cpuacct share one v1 hierarchy.
    const COMBINED: &str = "\
30 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:11 - cgroup cgroup rw,cpu,cpuacct
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid shared:12 - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/pids rw,nosuid shared:13 - cgroup cgroup rw,pids
";

    fn controllers(
        listing: &'static [(&'static str, &'static str)],
    ) -> impl Fn(&Path) -> Option<String> {
        move |p: &Path| {
            listing
                .iter()
                .find(|(point, _)| Path::new(point) == p)
                .map(|(_, c)| c.to_string())
        }
    }

    #[test]
    fn mountinfo_lines() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 7);
        assert_eq!(
            mounts[1],
            Mount {
                point: "/sys/fs/cgroup/cpu".into(),
                fstype: "cgroup".into(),
                options: vec!["rw".into(), "cpu".into()],
            }
        );
        assert_eq!(mounts[6].fstype, "cgroup2");
        // Optional fields before the dash, escapes in the mount point, junk lines.
        let odd = "1 2 0:3 / /mnt/a\\040b rw shared:1 master:2 - cgroup cgroup rw,pids\njunk\n\n";
        let mounts = parse_mountinfo(odd);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].point, PathBuf::from("/mnt/a b"));
        assert_eq!(mounts[0].options, vec!["rw", "pids"]);
        assert_eq!(unescape_octal("a\\134b\\011"), "a\\b\t");
        assert_eq!(unescape_octal("\\9x\\"), "\\9x\\");
    }

    #[test]
    fn the_mode_follows_the_mounts() {
        let check = |mountinfo: &str,
                     listing: &'static [(&'static str, &'static str)],
                     expected: Vec<Plan>| {
            assert_eq!(
                plans(&parse_mountinfo(mountinfo), controllers(listing)),
                expected,
                "{mountinfo}"
            );
        };
        let v1 = Plan::V1 {
            cpu: "/sys/fs/cgroup/cpu".into(),
            memory: "/sys/fs/cgroup/memory".into(),
            pids: "/sys/fs/cgroup/pids".into(),
        };
        // Hybrid: the unified hierarchy has no controller, so v1.
        check(HYBRID, &[("/sys/fs/cgroup/unified", "")], vec![v1.clone()]);
        // Hybrid where the unified hierarchy got cpu, memory and pids: v2 first.
        check(
            HYBRID,
            &[("/sys/fs/cgroup/unified", "cpuset cpu io memory pids\n")],
            vec![
                Plan::V2 {
                    root: "/sys/fs/cgroup/unified".into(),
                },
                v1,
            ],
        );
        // Pure v2 with the controllers.
        check(
            UNIFIED,
            &[(
                "/sys/fs/cgroup",
                "cpuset cpu io memory hugetlb pids rdma misc\n",
            )],
            vec![Plan::V2 {
                root: "/sys/fs/cgroup".into(),
            }],
        );
        // Pure v2 without pids delegated: nothing to use.
        check(UNIFIED, &[("/sys/fs/cgroup", "cpu memory\n")], vec![]);
        // Unreadable controllers: nothing.
        check(UNIFIED, &[], vec![]);
        // v1 with cpu,cpuacct together.
        check(
            COMBINED,
            &[],
            vec![Plan::V1 {
                cpu: "/sys/fs/cgroup/cpu,cpuacct".into(),
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
            }],
        );
        // v1 without a pids hierarchy: nothing.
        let no_pids: String = COMBINED.lines().take(2).map(|l| format!("{l}\n")).collect();
        check(&no_pids, &[], vec![]);
        // "cpuacct" alone is not "cpu".
        check(
            "1 2 0:3 / /c rw - cgroup cgroup rw,cpuacct\n1 2 0:3 / /m rw - cgroup cgroup rw,memory\n1 2 0:3 / /p rw - cgroup cgroup rw,pids\n",
            &[],
            vec![],
        );
        check("", &[], vec![]);
    }

    #[test]
    fn limits_from_the_template() {
        let l = Limits::new(2, 256, 512);
        assert_eq!(
            l,
            Limits {
                cpu_quota_us: Some(200_000),
                memory_bytes: Some(268_435_456),
                pids_max: 512
            }
        );
        assert_eq!(
            l.v2_files(),
            vec![
                ("cpu.max", "200000 100000".to_string()),
                ("memory.max", "268435456".into()),
                ("pids.max", "512".into()),
            ]
        );
        assert_eq!(
            l.v1_files(),
            vec![
                ("cpu", "cpu.cfs_period_us", "100000".to_string()),
                ("cpu", "cpu.cfs_quota_us", "200000".into()),
                ("memory", "memory.limit_in_bytes", "268435456".into()),
                ("pids", "pids.max", "512".into()),
            ]
        );
        // 0 means "no limit" in a template; pids are always limited.
        let open = Limits::new(0, 0, 0);
        assert_eq!(
            (open.cpu_quota_us, open.memory_bytes, open.pids_max),
            (None, None, 1)
        );
        assert_eq!(
            open.v2_files()
                .into_iter()
                .map(|(_, v)| v)
                .collect::<Vec<_>>(),
            vec!["max 100000", "max", "1"]
        );
        assert_eq!(
            open.v1_files()
                .into_iter()
                .map(|(_, _, v)| v)
                .collect::<Vec<_>>(),
            vec!["100000", "-1", "-1", "1"]
        );
        // The largest template values do not overflow.
        let big = Limits::new(u32::MAX, u32::MAX, u32::MAX);
        assert_eq!(big.memory_bytes, Some(u64::from(u32::MAX) * 1024 * 1024));
    }

    #[test]
    fn owner_names_are_safe_distinct_and_stable() {
        let a = owner_dir_name("/var/lib/swell/data");
        assert!(a.starts_with("var_lib_swell_data-"), "{a}");
        assert_eq!(a, owner_dir_name("/var/lib/swell/data"));
        // Paths that sanitise alike still differ by their hash.
        assert_ne!(a, owner_dir_name("/var/lib/swell_data"));
        assert_ne!(owner_dir_name("/a b"), owner_dir_name("/a_b"));
        let long = format!("/{}", "x".repeat(500));
        for owner in ["", "/", "..", "/a/../b", "é", long.as_str(), "a\nb"] {
            let name = owner_dir_name(owner);
            assert!(!name.is_empty() && name.len() <= 60, "{owner:?}: {name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_')),
                "{owner:?}: {name}"
            );
            assert!(!name.starts_with('.') && !name.starts_with('-'), "{name}");
        }
    }

    #[test]
    fn paths_of_an_instance() {
        let v1 = Cgroups {
            mode: CgroupMode::V1,
            parents: vec![
                "/sys/fs/cgroup/cpu/swell/o".into(),
                "/sys/fs/cgroup/memory/swell/o".into(),
                "/sys/fs/cgroup/pids/swell/o".into(),
            ],
        };
        assert_eq!(
            v1.dirs("web-1"),
            vec![
                PathBuf::from("/sys/fs/cgroup/cpu/swell/o/web-1"),
                "/sys/fs/cgroup/memory/swell/o/web-1".into(),
                "/sys/fs/cgroup/pids/swell/o/web-1".into(),
            ]
        );
        assert!(Cgroups::none().dirs("web-1").is_empty());
        assert!(Cgroups::none().pids("web-1").is_empty());
        assert!(!Cgroups::none().enabled());
        assert_eq!(parse_pids("12\n 34\nx\n-1\n0\n\n56"), vec![12, 34, 56]);
    }
}
