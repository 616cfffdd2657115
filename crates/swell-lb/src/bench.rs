//! `swell bench lb`: Swell's load balancer against nginx, both in front of the
//! same two instances, measured by `wrk` in alternating runs.
//!
//! A benchmark, not a test: it starts two backend processes (the command is
//! given, e.g. `swell demo-app --port {port}`), Swell's [`LoadBalancer`] in
//! this process (on the caller's tokio runtime), and nginx as a child process
//! from a generated config in a temporary directory — `worker_processes auto`,
//! an upstream with `keepalive`, HTTP/1.1 to the upstream, the same forwarding
//! headers Swell adds, access log off. Then, for each run, and for each load
//! (keep-alive, and a new connection per request with `Connection: close`),
//! it runs `wrk --latency` against both (which one goes first alternates), and
//! reports the median of the runs. nginx is never configured weaker than its
//! defaults; `keepalive_requests` is raised so that it does not close busy
//! client connections, which only helps it.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{Backend, LbConfig, LoadBalancer};

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How to start one backend: program and arguments; `{port}` in any of
    /// them is replaced by the port to listen on (127.0.0.1).
    pub backend_command: Vec<String>,
    /// Path the load requests (the demo app's `/` is cheap).
    pub path: String,
    /// Measured runs per load and per proxy.
    pub runs: u32,
    /// Length of one measured run.
    pub duration: Duration,
    /// Length of the warm-up run against each proxy before measuring.
    pub warmup: Duration,
    /// wrk threads (`-t`).
    pub threads: u32,
    /// wrk connections (`-c`).
    pub connections: u32,
    /// The nginx binary.
    pub nginx: PathBuf,
    /// The wrk binary.
    pub wrk: PathBuf,
    /// Install nginx and wrk with `apt-get` when missing (needs root).
    pub install: bool,
    /// Swell's [`LbConfig::workers`]; nginx runs `worker_processes auto`
    /// (one per core), so the default is the number of cores too.
    pub workers: usize,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            backend_command: vec!["swell-demo-app".into()],
            path: "/".into(),
            runs: 3,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            threads: 2,
            connections: 64,
            nginx: "nginx".into(),
            wrk: "wrk".into(),
            install: false,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A tool is missing.
    #[error("{tool} not found; install it with: apt-get install -y nginx wrk")]
    Missing {
        /// `nginx` or `wrk`.
        tool: String,
    },
    /// Starting or talking to a process, or a socket, failed.
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Something did not come up or did not behave.
    #[error("{0}")]
    Failed(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BenchError {
    let what = what.into();
    move |source| BenchError::Io { what, source }
}

/// One wrk run's figures.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct WrkResult {
    /// Requests per second.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Requests completed.
    pub requests: u64,
    /// Socket errors plus non-2xx/3xx answers.
    pub errors: u64,
}

/// Both proxies under one load: every run and the medians.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparison {
    /// Swell's runs.
    pub swell_runs: Vec<WrkResult>,
    /// nginx's runs.
    pub nginx_runs: Vec<WrkResult>,
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn median_of(runs: &[WrkResult]) -> WrkResult {
    WrkResult {
        rps: median(runs.iter().map(|r| r.rps).collect()),
        p50_ms: median(runs.iter().map(|r| r.p50_ms).collect()),
        p99_ms: median(runs.iter().map(|r| r.p99_ms).collect()),
        requests: runs.iter().map(|r| r.requests).sum(),
        errors: runs.iter().map(|r| r.errors).sum(),
    }
}

impl Comparison {
    /// Swell's medians (requests and errors: summed over runs).
    pub fn swell(&self) -> WrkResult {
        median_of(&self.swell_runs)
    }

    /// nginx's medians (requests and errors: summed over runs).
    pub fn nginx(&self) -> WrkResult {
        median_of(&self.nginx_runs)
    }

    /// Swell's requests/s over nginx's (goal: at least 0.9).
    pub fn rps_ratio(&self) -> f64 {
        self.swell().rps / self.nginx().rps
    }

    /// Swell's p99 over nginx's (goal: at most 1.2).
    pub fn p99_ratio(&self) -> f64 {
        self.swell().p99_ms / self.nginx().p99_ms
    }
}

/// The whole benchmark's outcome.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BenchReport {
    /// Keep-alive load: each wrk connection sends request after request.
    pub keepalive: Comparison,
    /// New-connection load: `Connection: close` on every request.
    pub newconn: Comparison,
    /// The wrk command line of one keep-alive run (target elided).
    pub command: String,
}

impl BenchReport {
    /// One JSON object: for the keep-alive load `swell_rps`, `nginx_rps`,
    /// `rps_ratio`, `swell_p99_ms`, `nginx_p99_ms`, `p99_ratio`; for the
    /// new-connection load the same with a `newconn_` prefix; and both
    /// proxies' p50s and error counts.
    pub fn to_json(&self) -> String {
        let mut fields: Vec<(String, String)> = Vec::new();
        for (prefix, c) in [("", &self.keepalive), ("newconn_", &self.newconn)] {
            let (s, n) = (c.swell(), c.nginx());
            let num = |v: f64| {
                if v.is_finite() {
                    format!("{:.3}", v)
                } else {
                    "null".to_owned()
                }
            };
            for (k, v) in [
                ("swell_rps", num(s.rps)),
                ("nginx_rps", num(n.rps)),
                ("rps_ratio", num(c.rps_ratio())),
                ("swell_p50_ms", num(s.p50_ms)),
                ("nginx_p50_ms", num(n.p50_ms)),
                ("swell_p99_ms", num(s.p99_ms)),
                ("nginx_p99_ms", num(n.p99_ms)),
                ("p99_ratio", num(c.p99_ratio())),
                ("swell_errors", s.errors.to_string()),
                ("nginx_errors", n.errors.to_string()),
            ] {
                fields.push((format!("{prefix}{k}"), v));
            }
        }
        let body: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", body.join(","))
    }

    /// A human-readable table.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<12} {:<6} {:>12} {:>9} {:>9} {:>8}",
            "load", "proxy", "requests/s", "p50 ms", "p99 ms", "errors"
        );
        for (name, c) in [("keep-alive", &self.keepalive), ("new-conn", &self.newconn)] {
            for (proxy, r) in [("swell", c.swell()), ("nginx", c.nginx())] {
                let _ = writeln!(
                    out,
                    "{:<12} {:<6} {:>12.0} {:>9.2} {:>9.2} {:>8}",
                    name, proxy, r.rps, r.p50_ms, r.p99_ms, r.errors
                );
            }
            let _ = writeln!(
                out,
                "{:<12} ratio  {:>12.3} {:>9} {:>9.3}   (goal: rps >= 0.9, p99 <= 1.2)",
                name,
                c.rps_ratio(),
                "",
                c.p99_ratio()
            );
        }
        out
    }
}

/// Parses wrk's `--latency` output.
pub fn parse_wrk(output: &str) -> Option<WrkResult> {
    let mut r = WrkResult::default();
    let mut got_rps = false;
    for line in output.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().ok()?;
            got_rps = true;
        } else if words.len() == 2 && words[0] == "50%" {
            r.p50_ms = parse_duration_ms(words[1])?;
        } else if words.len() == 2 && words[0] == "99%" {
            r.p99_ms = parse_duration_ms(words[1])?;
        } else if words.len() >= 2 && words[1] == "requests" && words.get(2) == Some(&"in") {
            r.requests = words[0].parse().ok()?;
        } else if let Some(v) = t.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.errors += v.trim().parse::<u64>().ok()?;
        }
    }
    got_rps.then_some(r)
}

/// `812.00us`, `1.23ms`, `1.00s`, `2.00m` → milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

/// The nginx configuration equivalent to Swell's load balancer.
pub fn nginx_config(
    dir: &Path,
    listen: SocketAddr,
    backends: &[SocketAddr],
    as_root: bool,
) -> String {
    let d = dir.display();
    let servers: String = backends
        .iter()
        .map(|b| format!("        server {b};\n"))
        .collect();
    let user = if as_root { "user root;\n" } else { "" };
    format!(
        "{user}worker_processes auto;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{
    worker_connections 4096;
}}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 1000000;
    upstream backends {{
{servers}        keepalive 64;
    }}
    server {{
        listen {listen} reuseport;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header Forwarded \"for=$remote_addr;proto=$scheme\";
        }}
    }}
}}
"
    )
}

fn free_port() -> Result<SocketAddr, BenchError> {
    let l = StdListener::bind("127.0.0.1:0").map_err(io("picking a free port"))?;
    l.local_addr().map_err(io("picking a free port"))
}

/// Finds `name` on `PATH` (and in the sbin directories, where nginx lives).
fn which(name: &Path) -> Option<PathBuf> {
    if name.components().count() > 1 {
        return name.is_file().then(|| name.to_owned());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

async fn find_tools(opts: &BenchOptions) -> Result<(PathBuf, PathBuf), BenchError> {
    let found = || (which(&opts.nginx), which(&opts.wrk));
    if let (Some(n), Some(w)) = found() {
        return Ok((n, w));
    }
    if opts.install && is_root() {
        eprintln!("installing nginx and wrk: apt-get install -y nginx wrk");
        let status = Command::new("apt-get")
            .args(["install", "-y", "nginx", "wrk"])
            .stdout(Stdio::null())
            .status()
            .await
            .map_err(io("running apt-get"))?;
        if !status.success() {
            return Err(BenchError::Failed(format!(
                "apt-get install failed: {status}"
            )));
        }
    }
    match found() {
        (Some(n), Some(w)) => Ok((n, w)),
        (None, _) => Err(BenchError::Missing {
            tool: "nginx".into(),
        }),
        (_, None) => Err(BenchError::Missing { tool: "wrk".into() }),
    }
}

/// Waits until `addr` accepts a connection (up to 10 s).
async fn wait_listening(addr: SocketAddr, what: &str) -> Result<(), BenchError> {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(BenchError::Failed(format!(
        "{what} did not start listening on {addr}"
    )))
}

/// The nginx master, stopped with `nginx -s stop` when dropped (also on an
/// early return with `?`): killing the master alone would orphan its workers.
struct Nginx {
    bin: PathBuf,
    dir: PathBuf,
    conf: PathBuf,
    child: Child,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new(&self.bin)
            .arg("-p")
            .arg(&self.dir)
            .arg("-c")
            .arg(&self.conf)
            .args(["-s", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        // The master exits once its workers have; bounded, then forced.
        for _ in 0..50 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.start_kill();
    }
}

/// Children killed when dropped (also on an early return with `?`).
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.start_kill();
        }
    }
}

async fn wrk(
    wrk: &Path,
    opts: &BenchOptions,
    target: SocketAddr,
    duration: Duration,
    close: bool,
) -> Result<WrkResult, BenchError> {
    let mut cmd = Command::new(wrk);
    cmd.arg(format!("-t{}", opts.threads))
        .arg(format!("-c{}", opts.connections))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency");
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(format!("http://{target}{}", opts.path));
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(io("running wrk"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_wrk(&text).ok_or_else(|| {
        BenchError::Failed(format!(
            "could not parse wrk's output:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ))
    })
}

/// Runs the benchmark. Needs a multi-threaded tokio runtime: Swell's load
/// balancer runs on it while wrk measures it. `progress` gets one line per run.
pub async fn bench_lb(
    opts: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<BenchReport, BenchError> {
    if opts.backend_command.is_empty() {
        return Err(BenchError::Failed("backend command is empty".into()));
    }
    let (nginx_bin, wrk_bin) = find_tools(opts).await?;
    let mut children = Children(Vec::new());

    // Two instances.
    let mut backends = Vec::new();
    for i in 0..2 {
        let addr = free_port()?;
        let port = addr.port().to_string();
        let args: Vec<String> = opts
            .backend_command
            .iter()
            .map(|a| a.replace("{port}", &port))
            .collect();
        let child = Command::new(&args[0])
            .args(&args[1..])
            .env("PORT", &port)
            .env("SWELL_INSTANCE_ID", format!("bench-{i}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(io(format!("starting backend {:?}", args)))?;
        children.0.push(child);
        wait_listening(addr, "a backend").await?;
        backends.push(addr);
    }

    // Swell, in this process, with its defaults but for the worker threads.
    let config = LbConfig {
        workers: opts.workers,
        ..LbConfig::default()
    };
    let swell = LoadBalancer::bind_with("127.0.0.1:0".parse().expect("literal"), config)
        .await
        .map_err(io("binding Swell's load balancer"))?;
    swell.set_backends(
        backends
            .iter()
            .enumerate()
            .map(|(i, a)| Backend::new(format!("bench-{i}"), *a))
            .collect(),
    );

    // nginx, as a child, from a config in a temporary directory.
    let dir = std::env::temp_dir().join(format!("swell-bench-lb-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io("creating nginx's directory"))?;
    let nginx_addr = free_port()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(&dir, nginx_addr, &backends, is_root()))
        .map_err(io("writing nginx.conf"))?;
    let nginx = Command::new(&nginx_bin)
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(io("starting nginx"))?;
    let nginx = Nginx {
        bin: nginx_bin,
        dir: dir.clone(),
        conf,
        child: nginx,
    };
    wait_listening(nginx_addr, "nginx").await?;

    let targets = [("swell", swell.local_addr()), ("nginx", nginx_addr)];
    for (name, addr) in targets {
        progress(&format!("warm-up: {name}"));
        wrk(&wrk_bin, opts, addr, opts.warmup, false).await?;
    }
    let mut report = BenchReport {
        command: format!(
            "wrk -t{} -c{} -d{}s --latency [-H 'Connection: close'] http://<proxy>{}",
            opts.threads,
            opts.connections,
            opts.duration.as_secs(),
            opts.path
        ),
        ..BenchReport::default()
    };
    for run in 0..opts.runs {
        for close in [false, true] {
            let order: Vec<_> = if run % 2 == 0 {
                targets.to_vec()
            } else {
                targets.iter().rev().copied().collect()
            };
            for (name, addr) in order {
                let r = wrk(&wrk_bin, opts, addr, opts.duration, close).await?;
                let load = if close { "new-conn" } else { "keep-alive" };
                progress(&format!(
                    "run {}/{} {load:<10} {name}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                    run + 1,
                    opts.runs,
                    r.rps,
                    r.p50_ms,
                    r.p99_ms,
                    r.errors
                ));
                let c = if close {
                    &mut report.newconn
                } else {
                    &mut report.keepalive
                };
                if name == "swell" {
                    c.swell_runs.push(r);
                } else {
                    c.nginx_runs.push(r);
                }
            }
        }
    }
    drop(nginx);
    drop(children);
    swell.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.51ms  640.12us  20.12ms   85.00%
    Req/Sec    21.50k     1.20k   24.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.60ms
     90%    2.20ms
     99%    1.02s
  427812 requests in 10.00s, 60.11MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:  42779.53
Transfer/sec:      6.01MB
";

    #[test]
    fn parses_wrk_output() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.rps, 42779.53);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(r.requests, 427_812);
        assert_eq!(r.errors, 12);
        assert!(parse_wrk("garbage").is_none());
    }

    #[test]
    fn json_has_the_agreed_keys() {
        let run = |rps, p99_ms| WrkResult {
            rps,
            p50_ms: 1.0,
            p99_ms,
            requests: 1,
            errors: 0,
        };
        let c = Comparison {
            swell_runs: vec![run(90.0, 6.0), run(100.0, 5.0), run(80.0, 7.0)],
            nginx_runs: vec![run(100.0, 5.0)],
        };
        let report = BenchReport {
            keepalive: c.clone(),
            newconn: c,
            command: String::new(),
        };
        let json = report.to_json();
        for key in [
            "\"swell_rps\":90.000",
            "\"nginx_rps\":100.000",
            "\"rps_ratio\":0.900",
            "\"swell_p99_ms\":6.000",
            "\"nginx_p99_ms\":5.000",
            "\"p99_ratio\":1.200",
            "\"newconn_rps_ratio\":0.900",
            "\"newconn_p99_ratio\":1.200",
        ] {
            assert!(json.contains(key), "{key} in {json}");
        }
        assert!(json.starts_with('{') && json.ends_with('}'));
    }

    #[test]
    fn nginx_config_is_an_equivalent_keepalive_proxy() {
        let conf = nginx_config(
            Path::new("/tmp/x"),
            "127.0.0.1:9000".parse().unwrap(),
            &[
                "127.0.0.1:1".parse().unwrap(),
                "127.0.0.1:2".parse().unwrap(),
            ],
            false,
        );
        assert!(conf.contains("server 127.0.0.1:1;\n        server 127.0.0.1:2;"));
        assert!(conf.contains("keepalive 64;"));
        assert!(conf.contains("proxy_http_version 1.1;"));
        assert!(conf.contains("worker_processes auto;"));
        assert!(!conf.contains("user root"));
    }
}
