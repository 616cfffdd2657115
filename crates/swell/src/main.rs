//! `swell`: the server, the demo, the simulator, the benchmarks and the client, in one binary.

/// `println!` for a command's output. When the reader has gone (`swell events web |
/// head`), the command ends quietly with status 0, as `ls | head` does, instead of
/// panicking on the broken pipe.
macro_rules! outln {
    () => { $crate::write_out(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::write_out(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` for a command's output, with [`outln!`]'s broken-pipe rule.
macro_rules! out {
    ($($arg:tt)*) => { $crate::write_out(format_args!($($arg)*)) };
}

/// mimalloc instead of glibc's allocator: the controller allocates and frees small
/// objects (instance ids, readings, records) across its threads all the time, and
/// glibc's bins spent a fifth of an idle fleet's CPU on them (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod client;
mod cmd_auth;
mod cmd_bench;
mod cmd_bench_controller;
mod cmd_bench_lb;
mod cmd_context;
mod cmd_cost;
mod cmd_demo;
mod cmd_provider;
mod cmd_sim;
mod cmd_webhook;
mod config;
mod docs;
mod output;
mod wait;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use client::Client;
use output::{Format, Output, Table, print};
use reqwest::Method;
use std::net::SocketAddr;
use std::path::PathBuf;
use swell_api as api;

/// Swell: autoscaling for private and hybrid clouds.
#[derive(Parser)]
#[command(name = "swell", version, about, propagate_version = true)]
struct Cli {
    /// The Swell server the client commands talk to [default: the context's server,
    /// else http://127.0.0.1:7700].
    #[arg(long, global = true, env = "SWELL_URL")]
    url: Option<String>,
    /// The context (server, user, token) of the CLI's configuration to use
    /// [default: the current context; see `swell context`].
    #[arg(long, global = true, env = "SWELL_CONTEXT", value_name = "NAME")]
    context: Option<String>,
    /// Output format of the commands that print data.
    #[arg(
        short = 'o',
        long,
        global = true,
        value_enum,
        default_value = "table",
        value_name = "FORMAT"
    )]
    output: Format,
    /// Print tables and CSV without their header line.
    #[arg(long, global = true)]
    no_headers: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: REST API, controller and load balancers.
    Serve(Box<ServeArgs>),
    /// Watch a fleet scale out and back in on the embedded defaults.
    Demo(cmd_demo::DemoArgs),
    /// Apply a tenant document (YAML or JSON) whole: create its new groups, update the
    /// changed ones, all in one transaction (one bad group changes nothing).
    Apply {
        /// The tenant document (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        /// Print the plan (create / update / unchanged / delete) and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Also delete the tenant's groups the document does not list.
        #[arg(long)]
        prune: bool,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
    /// Manage scaling groups.
    #[command(subcommand)]
    Group(GroupCmd),
    /// Manage a group's instances.
    #[command(subcommand)]
    Instance(InstanceCmd),
    /// Show a group's events (decisions and actions, with their causes).
    Events {
        /// The group.
        group: String,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<u32>,
        /// Keep printing new events as they happen, until the group is gone (Ctrl-C
        /// to stop): read from the server's event stream, reconnecting from the last
        /// event printed so that none is lost or repeated.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Show a group's metric history (one row per metrics interval, whatever its policy),
    /// or one instance's with `--instance`; `push` readings; the forecasting `history`.
    Metrics(MetricsArgs),
    /// Set a group's desired capacity.
    Scale {
        /// The group.
        group: String,
        /// The new desired capacity, within [min, max].
        desired_capacity: u32,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
    /// Replay a load trace through a scaling policy (see docs/simulator.md).
    Sim(cmd_sim::SimArgs),
    /// Benchmarks that print figures against a baseline measured in the same run.
    Bench(cmd_bench::BenchArgs),
    #[command(flatten)]
    Auth(cmd_auth::AuthCommand),
    /// The CLI's contexts: a server, a user and a token each (~/.config/swell/config.yaml).
    #[command(subcommand)]
    Context(cmd_context::ContextCmd),
    /// Print the shell completion script: `swell completion bash > /etc/bash_completion.d/swell`.
    Completion {
        /// bash, zsh, fish, powershell or elvish.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (swell.1, swell-group-list.1, …) into a folder.
    Man {
        /// The folder (created if absent).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// The demo application (an HTTP service whose CPU cost is set per request).
    #[command(hide = true)]
    DemoApp {
        /// Port on 127.0.0.1.
        #[arg(long, env = "PORT")]
        port: u16,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, env = "SWELL_LISTEN", default_value = "127.0.0.1:7700")]
    listen: SocketAddr,
    /// Also serve Prometheus metrics at `http://ADDR/metrics`, without a credential:
    /// every tenant's series and the controller's own (docs/metrics.md). Bind it to
    /// loopback or a network only your Prometheus reaches.
    #[arg(long, env = "SWELL_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,
    /// Where the store and the instances' logs live.
    #[arg(long, env = "SWELL_DATA_DIR", default_value = "./swell-data")]
    data_dir: PathBuf,
    /// Keep the store in this PostgreSQL database instead of SQLite in the data
    /// directory (`postgres://user:password@host:5432/swell`; prefer the environment
    /// variable, which `ps` does not show). One server per database.
    #[arg(
        long,
        env = "SWELL_DATABASE_URL",
        hide_env_values = true,
        value_name = "URL"
    )]
    database_url: Option<String>,
    /// Stop every instance on shutdown (default: keep them running and adopt them at the
    /// next start).
    #[arg(long)]
    stop_instances_on_exit: bool,
    /// The bootstrap admin's password, used on first start only (from the environment,
    /// never a flag; else --admin-password-file; else one is generated and printed once).
    #[arg(
        long,
        env = "SWELL_ADMIN_PASSWORD",
        hide = true,
        hide_env_values = true
    )]
    admin_password: Option<String>,
    /// A file holding the bootstrap admin's password (first start only).
    #[arg(long, env = "SWELL_ADMIN_PASSWORD_FILE")]
    admin_password_file: Option<PathBuf>,
    /// The key sealing provider credentials: 32 bytes as base64 or hex (environment only).
    #[arg(long, env = "SWELL_SECRET_KEY", hide = true, hide_env_values = true)]
    secret_key: Option<String>,
    /// A file holding that key (default: <data dir>/secret.key, generated if absent).
    #[arg(long, env = "SWELL_SECRET_KEY_FILE")]
    secret_key_file: Option<PathBuf>,
    /// Run `process` instances as this unprivileged user (and its primary group)
    /// instead of the server's own; the server must run as root.
    #[arg(long, env = "SWELL_INSTANCE_USER", value_name = "USER")]
    instance_user: Option<String>,
    /// Enable the `docker` provider on the local engine (/var/run/docker.sock).
    #[arg(long)]
    docker: bool,
    /// Enable the `qemu` provider: instances are QEMU virtual machines on this host,
    /// booted from the images under --qemu-images.
    #[arg(long)]
    qemu: bool,
    /// The `qemu` provider's images, one directory each (default: $SWELL_VM_IMAGES,
    /// else ~/.cache/swell/vm-images, where scripts/build-vm-image puts them).
    #[arg(long, env = "SWELL_QEMU_IMAGES", value_name = "DIR")]
    qemu_images: Option<PathBuf>,
    /// The `qemu` provider's accelerator: `kvm`, `tcg` (software emulation), or `auto`
    /// (KVM when a probe at start finds that it works, else TCG; logged).
    #[arg(
        long,
        env = "SWELL_QEMU_ACCEL",
        default_value = "auto",
        value_name = "auto|kvm|tcg"
    )]
    qemu_accel: swell_providers::qemu::Accel,
    /// The most VMs the `qemu` provider runs at once on this host; past it a group's
    /// `fallback_providers` take the rest. Default: no limit.
    #[arg(long, env = "SWELL_QEMU_MAX_VMS", value_name = "N")]
    qemu_max_vms: Option<u32>,
    /// A hypervisor host of the `qemu` provider, `NAME=STATE_DIR` (its records and VM
    /// files; an absolute path, its own), or a remote one over SSH,
    /// `NAME=ssh://USER@HOST[:PORT]/STATE_DIR[?address=IP&images_dir=DIR]` (its state
    /// directory on that host; key from --qemu-ssh-identity); repeatable. Default: one
    /// host, `localhost`, in `<data dir>/qemu`. A host whose state directory is gone,
    /// or whose SSH does not answer, is down: its VMs are replaced on the others.
    #[arg(
        long = "qemu-host",
        env = "SWELL_QEMU_HOSTS",
        value_name = "NAME=DIR",
        value_delimiter = ';'
    )]
    qemu_hosts: Vec<String>,
    /// The private key Swell logs in to the `ssh://` qemu hosts with.
    #[arg(long, env = "SWELL_QEMU_SSH_IDENTITY", value_name = "FILE")]
    qemu_ssh_identity: Option<PathBuf>,
    /// A known_hosts file with the `ssh://` qemu hosts' keys, checked strictly
    /// (`StrictHostKeyChecking=yes`). Without it each host's key is pinned on first
    /// contact (`accept-new`), in a file that does not survive a reboot.
    #[arg(long, env = "SWELL_QEMU_SSH_KNOWN_HOSTS", value_name = "FILE")]
    qemu_ssh_known_hosts: Option<PathBuf>,
    /// Placement on the `qemu` hosts: hosts whose load is below this percentage are
    /// preferred (filled evenly by what is committed on them).
    #[arg(
        long,
        env = "SWELL_QEMU_PREFER_BELOW",
        value_name = "PERCENT",
        default_value_t = 70.0
    )]
    qemu_prefer_below: f64,
    /// Placement on the `qemu` hosts: a host whose load is above this percentage is
    /// never chosen. Default: any host with room.
    #[arg(long, env = "SWELL_QEMU_NEVER_ABOVE", value_name = "PERCENT")]
    qemu_never_above: Option<f64>,
    /// vCPUs committable per physical vCPU on a `qemu` host.
    #[arg(
        long,
        env = "SWELL_QEMU_CPU_OVERCOMMIT",
        value_name = "RATIO",
        default_value_t = 16.0
    )]
    qemu_cpu_overcommit: f64,
    /// MiB committable per physical MiB on a `qemu` host.
    #[arg(
        long,
        env = "SWELL_QEMU_MEMORY_OVERCOMMIT",
        value_name = "RATIO",
        default_value_t = 1.5
    )]
    qemu_memory_overcommit: f64,
    /// A Docker engine (a host) of the `docker` provider, `NAME=ENDPOINT`, e.g.
    /// `h2=tcp://10.0.0.2:2376` (needs --docker-tls-*) or
    /// `local=unix:///var/run/docker.sock`; repeatable.
    #[arg(
        long = "docker-engine",
        env = "SWELL_DOCKER_ENGINES",
        value_delimiter = ','
    )]
    docker_engines: Vec<String>,
    /// The CA certificate (PEM) that signed the `tcp://` Docker engines' certificates.
    #[arg(
        long,
        env = "SWELL_DOCKER_TLS_CA",
        value_name = "FILE",
        requires_all = ["docker_tls_cert", "docker_tls_key"]
    )]
    docker_tls_ca: Option<PathBuf>,
    /// This server's client certificate (PEM) for the `tcp://` Docker engines.
    #[arg(
        long,
        env = "SWELL_DOCKER_TLS_CERT",
        value_name = "FILE",
        requires_all = ["docker_tls_ca", "docker_tls_key"]
    )]
    docker_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of that client certificate.
    #[arg(
        long,
        env = "SWELL_DOCKER_TLS_KEY",
        value_name = "FILE",
        requires_all = ["docker_tls_ca", "docker_tls_cert"]
    )]
    docker_tls_key: Option<PathBuf>,
    /// Enable the `openstack` provider on the cloud the `OS_*` environment describes
    /// (an openrc: OS_AUTH_URL, OS_USERNAME, OS_PASSWORD, OS_PROJECT_NAME, …).
    #[arg(long, conflicts_with = "os_cloud")]
    openstack: bool,
    /// Enable the `openstack` provider on cloud NAME of a clouds.yaml.
    #[arg(long, value_name = "NAME")]
    os_cloud: Option<String>,
    /// The clouds.yaml of --os-cloud (default: $OS_CLIENT_CONFIG_FILE, ./clouds.yaml,
    /// ~/.config/openstack/clouds.yaml, /etc/openstack/clouds.yaml).
    #[arg(long, value_name = "FILE", requires = "os_cloud")]
    os_config: Option<PathBuf>,
    /// How long a new OpenStack server may take to become ACTIVE before its create
    /// fails (default 300s).
    #[arg(long, env = "SWELL_OS_BUILD_TIMEOUT", value_name = "DURATION", value_parser = parse_duration)]
    os_build_timeout: Option<std::time::Duration>,
    /// How the log (on stderr) is written: `text` for people (coloured only on a
    /// terminal, never with NO_COLOR), `json` for a log system (one object per line).
    #[arg(long, env = "SWELL_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    /// What is logged: a level (`info`, `debug`) or a filter
    /// (`info,swell_server=debug`) [default: $RUST_LOG, else $SWELL_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// The shortest `evaluation_interval`, `metrics_interval` and load balancer
    /// `health_check.interval` a group may have; a group below it is refused (400).
    /// Lower it only for tests: every tick of every group costs the server work.
    #[arg(long, env = "SWELL_MIN_INTERVAL", value_name = "DURATION", value_parser = parse_min_interval, default_value = "1s")]
    min_interval: std::time::Duration,
    /// A reverse proxy (address or CIDR range) whose `X-Forwarded-For` names the client
    /// for rate limits and the audit log; repeatable. Without it the TCP peer is the
    /// client (behind a proxy, every client would share the proxy's budget).
    #[arg(
        long = "trusted-proxy",
        env = "SWELL_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR_OR_IP",
        value_parser = parse_cidr
    )]
    trusted_proxies: Vec<swell_server::auth::source::Cidr>,
    /// A URL prefix a group's `prometheus` metric source may name (the server calls
    /// it), e.g. `http://prom.internal:9090`; repeatable. Without any, only loopback
    /// hosts (localhost, 127.0.0.0/8, [::1]) are allowed.
    #[arg(
        long = "allow-metric-url",
        env = "SWELL_ALLOW_METRIC_URLS",
        value_delimiter = ',',
        value_name = "PREFIX"
    )]
    allow_metric_urls: Vec<String>,
    /// Let webhooks name loopback, private and link-local addresses (refused by
    /// default: the server would make requests from its own network position for any
    /// tenant; see docs/security.md).
    #[arg(long, env = "SWELL_WEBHOOK_ALLOW_PRIVATE")]
    webhook_allow_private: bool,
    /// Serve the API over TLS with this certificate chain (PEM, leaf first).
    #[arg(
        long,
        env = "SWELL_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(
        long,
        env = "SWELL_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

/// How `swell serve` writes its log.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format), for Loki or
    /// Elasticsearch.
    Json,
}

/// `--min-interval`: a duration of at least 100 ms (no group may go below that anyway).
fn parse_min_interval(text: &str) -> Result<std::time::Duration, String> {
    let d = swell_core::duration::parse(text)?;
    if d < std::time::Duration::from_millis(100) {
        return Err(format!("must be at least 100ms (got {text})"));
    }
    Ok(d)
}

fn parse_cidr(text: &str) -> Result<swell_server::auth::source::Cidr, String> {
    swell_server::auth::source::Cidr::parse(text)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    swell_core::duration::parse(text)
}

/// The openstack provider's configuration from `--openstack` (the `OS_*` environment,
/// read here at the binary's edge) or `--os-cloud` (a clouds.yaml). The ownership tag is a
/// placeholder: the server replaces it with its data directory's.
fn openstack_config(
    args: &ServeArgs,
) -> Result<Option<swell_providers::openstack::OpenStackConfig>> {
    use swell_providers::openstack::OpenStackConfig;
    let owner = args.data_dir.display().to_string();
    let mut config = if args.openstack {
        OpenStackConfig::from_env_vars(owner, std::env::vars()).context(
            "--openstack reads the cloud from the OS_* environment (source the cloud's openrc)",
        )?
    } else if let Some(cloud) = &args.os_cloud {
        OpenStackConfig::from_clouds_yaml(owner, args.os_config.as_deref(), cloud)
            .with_context(|| format!("--os-cloud {cloud}"))?
    } else {
        return Ok(None);
    };
    if let Some(t) = args.os_build_timeout {
        config.build_timeout = t;
    }
    Ok(Some(config))
}

/// The docker provider's engines from `--docker`, `--docker-engine NAME=ENDPOINT` and
/// `--docker-tls-*` (the client certificate of every `tcp://` engine). A `tcp://` engine
/// publishes its containers' ports on the address Swell reaches it at; one without TLS
/// is refused when the server starts.
fn docker_engines(args: &ServeArgs) -> Result<Vec<swell_providers::docker::EngineConfig>> {
    use swell_providers::docker::{EngineConfig, TlsConfig};
    let tls = match (
        &args.docker_tls_ca,
        &args.docker_tls_cert,
        &args.docker_tls_key,
    ) {
        (Some(ca), Some(cert), Some(key)) => Some(TlsConfig {
            ca: ca.clone(),
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let mut engines = Vec::new();
    if args.docker {
        engines.push(EngineConfig::local("local"));
    }
    for spec in &args.docker_engines {
        let (name, endpoint) = spec
            .split_once('=')
            .with_context(|| format!("--docker-engine `{spec}` must be NAME=ENDPOINT, e.g. local=unix:///var/run/docker.sock"))?;
        let mut engine = EngineConfig::for_endpoint(name, endpoint)
            .with_context(|| format!("--docker-engine `{spec}`"))?;
        if !engine.endpoint.starts_with("unix://") && !engine.endpoint.starts_with('/') {
            engine.tls = tls.clone();
        }
        engines.push(engine);
    }
    Ok(engines)
}

/// The `--qemu-host` hosts, each with `--qemu-max-vms` as its limit and the
/// `--qemu-ssh-*` files for the `ssh://` ones.
fn qemu_hosts(args: &ServeArgs) -> Result<Vec<swell_providers::qemu::hosts::QemuHost>> {
    let mut hosts = Vec::new();
    for spec in &args.qemu_hosts {
        let mut host: swell_providers::qemu::hosts::QemuHost = spec
            .parse()
            .map_err(|rule| anyhow::anyhow!("--qemu-host `{spec}` {rule}"))?;
        host.max_vms = args.qemu_max_vms;
        if host.ssh.is_some() {
            host.identity_file = Some(args.qemu_ssh_identity.clone().with_context(|| {
                format!("--qemu-host `{spec}`: an ssh:// host needs --qemu-ssh-identity FILE (the private key Swell logs in with)")
            })?);
            host.known_hosts = args.qemu_ssh_known_hosts.clone();
        }
        hosts.push(host);
    }
    Ok(hosts)
}

#[derive(Subcommand)]
enum GroupCmd {
    /// Create a group from a group document.
    Create {
        /// The group document (`-` for standard input).
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
    /// List the groups.
    List,
    /// Show one group.
    Show {
        /// The group.
        name: String,
    },
    /// Replace a group's document (`-f FILE`), or change fields of it
    /// (`NAME --set FIELD=VALUE`, repeatable), validated as a whole document.
    Update {
        /// The group whose fields `--set` changes.
        #[arg(conflicts_with = "file", requires = "set")]
        name: Option<String>,
        /// The group document (`-` for standard input).
        #[arg(short = 'f', long = "file", required_unless_present = "set")]
        file: Option<PathBuf>,
        /// A field and its new value (YAML): `max=10`, `policies.0.target=60`,
        /// `termination_policy=[oldest]`; a dotted path, list items by index.
        #[arg(long = "set", value_name = "FIELD=VALUE", requires = "name")]
        set: Vec<String>,
    },
    /// Suspend a group's autoscaling: its policies record what they would do
    /// (`would_scale` events) and change nothing; `swell scale` still works.
    Suspend {
        /// The group.
        name: String,
    },
    /// Resume a group's autoscaling.
    Resume {
        /// The group.
        name: String,
    },
    /// Delete a group (its instances are drained and deleted first).
    Delete {
        /// The group.
        name: String,
        #[command(flatten)]
        wait: wait::WaitArgs,
    },
}

/// `swell metrics GROUP [--instance ID] [--since TIME]`, or one of its subcommands.
#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
struct MetricsArgs {
    #[command(subcommand)]
    cmd: Option<MetricsCmd>,
    /// The group whose short metric history to show (kept in the server's memory: the
    /// last 360 metrics intervals).
    #[arg(required = true)]
    group: Option<String>,
    /// Show this instance's CPU and memory instead (its last 120 metrics intervals).
    #[arg(long)]
    instance: Option<String>,
    /// Only points at or after this RFC 3339 time.
    #[arg(long)]
    since: Option<String>,
}

#[derive(Subcommand)]
enum MetricsCmd {
    /// Push one reading of METRIC for a group (or one of its instances).
    Push {
        /// The group.
        group: String,
        /// The metric: cpu, memory, request_rate, request_rate_per_instance, in_flight,
        /// latency_p99, error_rate or steal.
        metric: String,
        /// The value, in the metric's unit (percent for cpu).
        value: f64,
        /// The instance measured; without it the value is the group's.
        #[arg(long)]
        instance: Option<String>,
    },
    /// Show the load history (five-minute summaries) a group's forecasting policies learn from
    /// (`predictive`, `swell`; kept 16 days, across restarts).
    History {
        /// The group.
        group: String,
        /// Only summaries at or after this RFC 3339 time (default: the last hour).
        #[arg(long)]
        since: Option<String>,
        /// Only this metric.
        #[arg(long)]
        metric: Option<String>,
    },
}

#[derive(Subcommand)]
enum InstanceCmd {
    /// List a group's instances.
    List {
        /// The group.
        group: String,
        /// Include terminated and failed instances.
        #[arg(long)]
        all: bool,
    },
    /// Pause an instance (out of the load balancer, no CPU).
    Pause {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
    },
    /// Resume a paused instance.
    Resume {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
    },
    /// Protect an instance from scale-in (it is still replaced if it dies).
    Protect {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
    },
    /// Lift an instance's scale-in protection.
    Unprotect {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
    },
}

/// Writes a command's output to stdout; a closed reader ends the process with status 0.
fn write_out(text: std::fmt::Arguments) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(text).and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

fn main() -> std::process::ExitCode {
    match run(Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line with every cause, never a backtrace: errors say what to do.
            eprintln!("error: {}", one_line(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, leaving out a cause whose text the line
/// already holds (library errors often show their source in their own message).
fn one_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

fn run(cli: Cli) -> Result<()> {
    let output = Output {
        format: cli.output,
        headers: !cli.no_headers,
    };
    match cli.command {
        Command::Sim(args) => cmd_sim::run(args, output),
        Command::Bench(mut args) => {
            // The benchmark prints Markdown tables, or JSON lines with `-o json`.
            match &mut args.command {
                cmd_bench::BenchCommand::Policies(p) => {
                    p.json |= json_or_table(output, "swell bench policies")?;
                }
                cmd_bench::BenchCommand::Controller(c) => {
                    c.json |= json_or_table(output, "swell bench controller")?;
                }
                _ => {}
            }
            cmd_bench::run(args)
        }
        Command::Demo(mut args) => {
            args.json |= json_or_table(output, "swell demo")?;
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            rt.block_on(cmd_demo::run(args))
        }
        Command::Completion { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(
                shell,
                &mut <Cli as clap::CommandFactory>::command(),
                "swell",
                &mut text,
            );
            out!("{}", String::from_utf8_lossy(&text));
            Ok(())
        }
        Command::Man { dir } => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(<Cli as clap::CommandFactory>::command(), &dir)
                .with_context(|| format!("writing the man pages into {}", dir.display()))?;
            eprintln!(
                "man pages written to {} (try `man -l {}/swell.1`)",
                dir.display(),
                dir.display()
            );
            Ok(())
        }
        Command::Context(cmd) => cmd_context::run(cmd, cli.url.as_deref(), output),
        command => {
            let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            let place = Place {
                url: cli.url,
                context: cli.context,
            };
            rt.block_on(run_async(command, place, output))
        }
    }
}

/// Whether `-o` asks a command that prints either text or JSON for JSON; any other
/// format is refused rather than ignored.
fn json_or_table(output: Output, command: &str) -> Result<bool> {
    match output.format {
        Format::Json => Ok(true),
        Format::Table => Ok(false),
        other => anyhow::bail!(
            "-o: {command} prints a table or JSON (-o json), not {}",
            format!("{other:?}").to_lowercase()
        ),
    }
}

/// Where a client command goes: `--url`/`SWELL_URL` and `--context`/`SWELL_CONTEXT`,
/// resolved against the CLI's configuration only by the commands that call a server.
pub struct Place {
    /// `--url`.
    pub url: Option<String>,
    /// `--context`.
    pub context: Option<String>,
}

impl Place {
    /// The server and token to use.
    pub fn target(&self) -> Result<config::Target> {
        config::resolve(self.url.as_deref(), self.context.as_deref(), false)
    }

    /// The same for `swell login`, which may name a context it is about to create.
    pub fn login_target(&self) -> Result<config::Target> {
        config::resolve(self.url.as_deref(), self.context.as_deref(), true)
    }
}

/// Starts the log on stderr: `level` (else `$RUST_LOG`, else `$SWELL_LOG`, else
/// `default`) in `format`.
fn init_tracing(default: &str, format: LogFormat, level: Option<&str>) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).with_context(|| {
            format!("--log-level `{level}`: not a level or filter (e.g. info, or info,swell_server=debug)")
        })?,
        None => EnvFilter::try_from_env("RUST_LOG")
            .or_else(|_| EnvFilter::try_from_env("SWELL_LOG"))
            .unwrap_or_else(|_| EnvFilter::new(default)),
    };
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second start in one process (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => log.with_ansi(colour_on_stderr()).try_init(),
        LogFormat::Json => log.json().try_init(),
    };
    Ok(())
}

/// A message for the operator at the terminal: a plain line, or a log record when the
/// log is JSON (so that every line of stderr parses).
fn notice(format: LogFormat, message: &str) {
    match format {
        LogFormat::Text => eprintln!("{message}"),
        LogFormat::Json => tracing::info!("{message}"),
    }
}

/// Colour only for a person: stderr is a terminal and `NO_COLOR` is unset or empty
/// (no-color.org). journald, `docker logs` and files get plain text.
fn colour_on_stderr() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stderr().is_terminal()
}

async fn run_async(command: Command, place: Place, output: Output) -> Result<()> {
    match command {
        Command::Serve(args) => serve(*args).await,
        Command::DemoApp { port } => swell_demo_app::run(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .context("demo app"),
        Command::Sim(_)
        | Command::Bench(_)
        | Command::Demo(_)
        | Command::Completion { .. }
        | Command::Man { .. }
        | Command::Context(_) => unreachable!("handled before the runtime starts"),
        Command::Auth(cmd) => cmd_auth::run(cmd, &place, output).await,
        client_command => run_client(client_command, &Client::new(&place.target()?)?, output).await,
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    init_tracing("info", args.log_format, args.log_level.as_deref())?;
    use swell_server::secrets::SecretString;
    let openstack = openstack_config(&args)?;
    let docker_engines = docker_engines(&args)?;
    let qemu_hosts = qemu_hosts(&args)?;
    let admin_password = match (args.admin_password, &args.admin_password_file) {
        (Some(p), _) => Some(p),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .with_context(|| format!("reading {}", f.display()))?
                .trim_end_matches(['\n', '\r'])
                .to_string(),
        ),
        (None, None) => None,
    };
    let server = swell_server::Server::start(swell_server::ServerConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        database_url: args.database_url.map(SecretString::new),
        stop_instances_on_exit: args.stop_instances_on_exit,
        admin_password: admin_password.map(SecretString::new),
        secret_key: args.secret_key.map(SecretString::new),
        secret_key_file: args.secret_key_file,
        docker_engines,
        openstack,
        qemu: (args.qemu || args.qemu_images.is_some()).then(|| {
            let images = args
                .qemu_images
                .clone()
                .unwrap_or_else(swell_providers::qemu::default_images_dir);
            // The state directory and owner are the server's own (set at start).
            let mut qemu = swell_providers::qemu::QemuConfig::new(images, "", "");
            qemu.accel = args.qemu_accel;
            qemu.max_vms = args.qemu_max_vms;
            qemu.hosts = qemu_hosts;
            qemu.placement = swell_core::placement::PlacementPrefs {
                overcommit: swell_core::placement::Overcommit {
                    cpu: args.qemu_cpu_overcommit,
                    memory: args.qemu_memory_overcommit,
                },
                prefer_below: args.qemu_prefer_below,
                never_above: args.qemu_never_above,
            };
            qemu
        }),
        min_interval: args.min_interval,
        trusted_proxies: args.trusted_proxies,
        metric_urls: swell_server::metric_urls::MetricUrlPolicy::prefixes(&args.allow_metric_urls)
            .map_err(|e| anyhow::anyhow!("--allow-metric-url: {e}"))?,
        instance_user: args.instance_user,
        tls: match (args.tls_cert, args.tls_key) {
            (Some(cert), Some(key)) => Some(swell_server::tls::TlsFiles { cert, key }),
            _ => None,
        },
        max_event_streams: swell_server::event_stream::DEFAULT_MAX_EVENT_STREAMS,
        webhook_allow_private: args.webhook_allow_private,
        metrics_listen: args.metrics_listen,
    })
    .await?;
    let format = args.log_format;
    if let Some(p) = server.generated_admin_password() {
        notice(
            format,
            &format!(
                "created the admin user `admin` with the password {} (shown only now; change it with `swell user passwd admin`)",
                p.expose()
            ),
        );
        if let Err(e) = cmd_auth::store_bootstrap_token(&server, p.expose()).await {
            notice(
                format,
                &format!("could not store a token for the CLI: {e:#}"),
            );
        }
    }
    notice(
        format,
        &format!("swell serving the API on {} (Ctrl-C to stop)", server.url()),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let lost = tokio::select! {
        _ = tokio::signal::ctrl_c() => None,
        _ = term.recv() => None,
        reason = server.lock_lost() => Some(reason),
    };
    notice(format, "shutting down…");
    server.shutdown().await;
    match lost {
        None => Ok(()),
        Some(reason) => anyhow::bail!("lost the PostgreSQL server lock, so stopped: {reason}"),
    }
}

async fn run_client(command: Command, c: &Client, output: Output) -> Result<()> {
    let one_group = |g: &api::Group| client::groups_table(std::slice::from_ref(g));
    match command {
        Command::Group(GroupCmd::List) => {
            let list: api::GroupList = c.get("/v1/groups").await?;
            print(output, &list, |l| client::groups_table(&l.groups))
        }
        Command::Group(GroupCmd::Show { name }) => {
            let g: api::Group = c.get(&format!("/v1/groups/{name}")).await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Create { file, wait }) => {
            let spec: swell_core::GroupSpec = docs::read(&file)?;
            let g: api::Group = c
                .call(Method::POST, "/v1/groups", Some(&docs::group_json(&spec)?))
                .await?;
            let g = wait_ready(c, g, wait).await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Update {
            name: Some(name),
            set,
            ..
        }) => {
            let g: api::Group = c.get(&format!("/v1/groups/{name}")).await?;
            let mut doc = g.spec;
            docs::set_fields(&mut doc, &set)?;
            // The server validates the whole document, as for `-f`, and names the field.
            let g: api::Group = c
                .call(Method::PUT, &format!("/v1/groups/{name}"), Some(&doc))
                .await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Update {
            name: None,
            file: Some(file),
            ..
        }) => {
            let spec: swell_core::GroupSpec = docs::read(&file)?;
            let g: api::Group = c
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{}", spec.name),
                    Some(&docs::group_json(&spec)?),
                )
                .await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Update { .. }) => {
            anyhow::bail!("`swell group update` takes -f FILE, or NAME --set FIELD=VALUE")
        }
        Command::Group(GroupCmd::Suspend { name }) => {
            let g: api::Group = c
                .call(Method::POST, &format!("/v1/groups/{name}/suspend"), None)
                .await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Resume { name }) => {
            let g: api::Group = c
                .call(Method::POST, &format!("/v1/groups/{name}/resume"), None)
                .await?;
            print(output, &g, one_group)
        }
        Command::Group(GroupCmd::Delete { name, wait }) => {
            let g: api::Group = c
                .call(Method::DELETE, &format!("/v1/groups/{name}"), None)
                .await?;
            if let Some(timeout) = wait.wait {
                wait::groups(c, &[(name, wait::Until::Gone)], timeout).await?;
            }
            print(output, &g, one_group)
        }
        Command::Apply {
            file,
            dry_run,
            prune,
            wait,
        } => apply(c, &file, dry_run, prune, wait, output).await,
        Command::Instance(InstanceCmd::List { group, all }) => {
            let list: api::InstanceList = c
                .get(&format!("/v1/groups/{group}/instances?all={all}"))
                .await?;
            print(output, &list, |l| client::instances_table(&l.instances))
        }
        Command::Instance(InstanceCmd::Pause { group, id }) => {
            let i: api::Instance = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/instances/{id}/pause"),
                    None,
                )
                .await?;
            print(output, &i, |i| {
                client::instances_table(std::slice::from_ref(i))
            })
        }
        Command::Instance(InstanceCmd::Resume { group, id }) => {
            let i: api::Instance = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/instances/{id}/resume"),
                    None,
                )
                .await?;
            print(output, &i, |i| {
                client::instances_table(std::slice::from_ref(i))
            })
        }
        Command::Instance(InstanceCmd::Protect { group, id }) => {
            let i: api::Instance = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/instances/{id}/protect"),
                    None,
                )
                .await?;
            print(output, &i, |i| {
                client::instances_table(std::slice::from_ref(i))
            })
        }
        Command::Instance(InstanceCmd::Unprotect { group, id }) => {
            let i: api::Instance = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/instances/{id}/unprotect"),
                    None,
                )
                .await?;
            print(output, &i, |i| {
                client::instances_table(std::slice::from_ref(i))
            })
        }
        Command::Events {
            group,
            since,
            limit,
            follow,
        } => {
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(format!("since={s}"));
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let list: api::EventList = c
                .get(&format!("/v1/groups/{group}/events?{}", q.join("&")))
                .await?;
            if !follow {
                return print(output, &list, |l| client::events_table(&l.events));
            }
            // Following, each event is printed as it comes: a row (the header once), or
            // one JSON object per line, or one YAML document each.
            let mut headers = output.headers;
            let mut widths = Vec::new();
            let mut batch = |events: &[api::Event]| -> Result<()> {
                match output.format {
                    Format::Json => {
                        for e in events {
                            outln!("{}", serde_json::to_string(e)?);
                        }
                    }
                    Format::Yaml => {
                        for e in events {
                            out!("---\n{}", output::render(output, e, |_| Table::new(&[]))?);
                        }
                    }
                    Format::Table | Format::Wide if !events.is_empty() => {
                        let wide = output.format == Format::Wide;
                        let table = client::events_table(events);
                        out!("{}", table.render_within(wide, headers, &mut widths));
                        headers = false;
                    }
                    Format::Csv if !events.is_empty() => {
                        out!("{}", client::events_table(events).csv(headers));
                        headers = false;
                    }
                    Format::Table | Format::Wide | Format::Csv => {}
                }
                Ok(())
            };
            batch(&list.events)?;
            let after = list.events.last().map_or(0, |e| e.id);
            wait::follow_events(c, &group, after, batch).await
        }
        Command::Metrics(MetricsArgs {
            cmd: None,
            group,
            instance,
            since,
        }) => {
            let group = group.unwrap_or_default();
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(format!("since={}", client::query_value(&s)));
            }
            let q = q.join("&");
            match instance {
                None => {
                    let m: api::GroupMetrics =
                        c.get(&format!("/v1/groups/{group}/metrics?{q}")).await?;
                    print(output, &m, |m| client::group_metrics_table(&m.points))
                }
                Some(id) => {
                    let m: api::InstanceMetricHistory = c
                        .get(&format!("/v1/groups/{group}/instances/{id}/metrics?{q}"))
                        .await?;
                    print(output, &m, |m| client::instance_metrics_table(&m.points))
                }
            }
        }
        Command::Metrics(MetricsArgs {
            cmd:
                Some(MetricsCmd::Push {
                    group,
                    metric,
                    value,
                    instance,
                }),
            ..
        }) => {
            let body = serde_json::to_value(api::PushMetrics {
                samples: vec![api::PushedSample {
                    metric,
                    value,
                    instance_id: instance,
                }],
            })?;
            let r: api::PushedMetrics = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/metrics"),
                    Some(&body),
                )
                .await?;
            print(output, &r, |r| {
                let mut t = Table::new(&["ACCEPTED"]);
                t.add_row([r.accepted.to_string()]);
                t
            })
        }
        Command::Metrics(MetricsArgs {
            cmd:
                Some(MetricsCmd::History {
                    group,
                    since,
                    metric,
                }),
            ..
        }) => {
            let mut q = Vec::new();
            if let Some(s) = since {
                q.push(format!("since={s}"));
            }
            if let Some(m) = metric {
                q.push(format!("metric={m}"));
            }
            let h: api::LoadHistory = c
                .get(&format!(
                    "/v1/groups/{group}/metrics/history?{}",
                    q.join("&")
                ))
                .await?;
            print(output, &h, |h| client::load_history_table(&h.summaries))
        }
        Command::Scale {
            group,
            desired_capacity,
            wait,
        } => {
            let body = serde_json::json!({ "desired_capacity": desired_capacity });
            let g: api::Group = c
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{group}/desired_capacity"),
                    Some(&body),
                )
                .await?;
            let g = wait_ready(c, g, wait).await?;
            print(output, &g, one_group)
        }
        Command::Serve(_)
        | Command::Auth(_)
        | Command::Context(_)
        | Command::Completion { .. }
        | Command::Man { .. }
        | Command::Demo(_)
        | Command::DemoApp { .. }
        | Command::Sim(_)
        | Command::Bench(_) => unreachable!("not a client command"),
    }
}

/// With `--wait`: waits until the group is ready and returns it as it then is.
async fn wait_ready(c: &Client, g: api::Group, wait: wait::WaitArgs) -> Result<api::Group> {
    let Some(timeout) = wait.wait else {
        return Ok(g);
    };
    wait::groups(c, &[(g.name.clone(), wait::Until::Ready)], timeout).await?;
    c.get(&format!("/v1/groups/{}", g.name)).await
}

/// Applies a tenant document through `POST /v1/apply`: the server checks every group and
/// applies them in one transaction. Each group is also checked here first, so that a
/// mistake is reported before anything is sent.
async fn apply(
    c: &Client,
    file: &std::path::Path,
    dry_run: bool,
    prune: bool,
    wait: wait::WaitArgs,
    output: Output,
) -> Result<()> {
    let doc: docs::TenantDoc = docs::read(file)?;
    let groups = doc
        .groups
        .iter()
        .map(docs::group_json)
        .collect::<Result<Vec<_>>>()?;
    let body = serde_json::to_value(api::TenantDocument {
        tenant: doc.tenant.clone(),
        groups,
    })?;
    let path = format!("/v1/apply?dry_run={dry_run}&prune={prune}");
    let result: api::ApplyResult = c.call(Method::POST, &path, Some(&body)).await?;
    if dry_run {
        return print(output, &result.changes, |changes| {
            let mut t = Table::new(&["GROUP", "PLAN"]);
            for ch in changes {
                let plan = match ch.action.as_str() {
                    "unchanged" => "unchanged".to_string(),
                    action => format!("would {action}"),
                };
                t.add_row([ch.group.clone(), plan]);
            }
            t
        });
    }
    if !output.is_document() {
        for ch in &result.changes {
            let done = match ch.action.as_str() {
                "create" => "created",
                "update" => "updated",
                "delete" => "deleted (its instances are drained first)",
                _ => "unchanged",
            };
            eprintln!("group {} {done}", ch.group);
        }
    }
    let mut groups = result.groups;
    if let Some(timeout) = wait.wait {
        let targets: Vec<(String, wait::Until)> = result
            .changes
            .iter()
            .map(|ch| {
                let until = if ch.action == "delete" {
                    wait::Until::Gone
                } else {
                    wait::Until::Ready
                };
                (ch.group.clone(), until)
            })
            .collect();
        wait::groups(c, &targets, timeout).await?;
        // As they now are; the deleted ones are gone.
        let mut now = Vec::new();
        for g in &groups {
            now.extend(c.get_opt(&format!("/v1/groups/{}", g.name)).await?);
        }
        groups = now;
    }
    print(output, &groups, |r| client::groups_table(r))
}

#[cfg(test)]
mod tests {
    use super::one_line;
    use anyhow::Context;

    /// An error that shows its source in its own message, as many library errors do.
    #[derive(Debug)]
    struct Read {
        source: std::io::Error,
    }
    impl std::fmt::Display for Read {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "cannot read x: {}", self.source)
        }
    }
    impl std::error::Error for Read {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.source)
        }
    }

    /// The engines `swell serve ARGS` would start with, checked as the server checks
    /// them: the rule broken (`field: rule`), if any.
    fn serve_engines(args: &[&str]) -> Result<Vec<String>, String> {
        use clap::Parser;
        let cli = super::Cli::try_parse_from(["swell", "serve"].iter().chain(args))
            .map_err(|e| e.to_string())?;
        let super::Command::Serve(serve) = cli.command else {
            return Err("not serve".into());
        };
        let engines = super::docker_engines(&serve).map_err(|e| format!("{e:#}"))?;
        let config = swell_providers::docker::DockerConfig::new("owner", engines.clone());
        config.validate().map_err(|e| e.to_string())?;
        Ok(engines
            .iter()
            .map(|e| format!("{} {} tls={}", e.name, e.publish_address, e.tls.is_some()))
            .collect())
    }

    #[test]
    fn a_tcp_docker_engine_needs_tls_and_publishes_where_it_is_reached() {
        let tls = [
            "--docker-tls-ca",
            "ca.pem",
            "--docker-tls-cert",
            "cert.pem",
            "--docker-tls-key",
            "key.pem",
        ];
        let err = serve_engines(&["--docker-engine", "h2=tcp://10.0.0.2:2375"]).unwrap_err();
        assert!(
            err.starts_with("engines[0].tls: a tcp:// engine needs TLS"),
            "{err}"
        );
        let mut args = vec!["--docker", "--docker-engine", "h2=tcp://10.0.0.2:2376"];
        args.extend(tls);
        assert_eq!(
            serve_engines(&args),
            Ok(vec![
                "local 127.0.0.1 tls=false".to_string(),
                "h2 10.0.0.2 tls=true".to_string()
            ])
        );
        // All three files or none.
        let err = serve_engines(&["--docker-tls-ca", "ca.pem"]).unwrap_err();
        assert!(err.contains("--docker-tls-cert"), "{err}");
        let err = serve_engines(&["--docker-engine", "h2=ssh://host"]).unwrap_err();
        assert!(err.contains("must be unix://"), "{err}");
    }

    #[test]
    fn causes_already_in_the_message_are_not_repeated() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let shown = anyhow::Error::new(Read { source: io() }).context("--os-cloud lab");
        assert_eq!(
            one_line(&shown),
            "--os-cloud lab: cannot read x: no such file"
        );
        let plain = Err::<(), _>(io()).context("opening the store").unwrap_err();
        assert_eq!(one_line(&plain), "opening the store: no such file");
    }
}
