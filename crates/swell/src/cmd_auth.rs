//! Identity commands: `swell login`, `swell tenant …`, `swell user …`, `swell token …`,
//! `swell api-key …`, `swell owner …`, `swell quota …` and `swell audit`.

use crate::Place;
use crate::client::Client;
use crate::config::Config;
use crate::output::{Format, Output, Table, done, or_dash, print};
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::Read;
use std::path::{Path, PathBuf};
use swell_api as api;

/// The identity commands (flattened into the top-level command list).
#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Log in to a tenant; the token is stored in a context of
    /// ~/.config/swell/config.yaml (mode 0600), which becomes the current one.
    Login {
        /// The user.
        #[arg(long)]
        user: String,
        /// A file holding the password (`-` for standard input); without it the
        /// password is asked for on the terminal, without echo.
        #[arg(long, env = "SWELL_PASSWORD_FILE")]
        password_file: Option<PathBuf>,
        /// The tenant the token acts in.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage provider definitions: what tenants run instances on (admin).
    #[command(subcommand)]
    Provider(Box<crate::cmd_provider::ProviderCmd>),
    /// Set what an instance-hour of a provider (or an OpenStack flavor) costs (admin).
    #[command(subcommand)]
    Price(Box<crate::cmd_cost::PriceCmd>),
    /// Instance-hours and cost per group over a period, and what it would have cost
    /// at each group's peak size (the saving).
    Cost(crate::cmd_cost::CostArgs),
    /// Manage the tenant's webhooks (its events sent, signed, to a URL) and read their
    /// delivery log.
    #[command(subcommand)]
    Webhook(Box<crate::cmd_webhook::WebhookCmd>),
    /// A group's Alertmanager receiver: its alert token.
    #[command(subcommand)]
    Alerts(crate::cmd_webhook::AlertsCmd),
    /// Manage users and their roles.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage the current token.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Manage API keys of the current tenant (owner).
    #[command(subcommand, name = "api-key")]
    ApiKey(ApiKeyCmd),
    /// Bind users to instances they may see, pause and resume (owner).
    #[command(subcommand)]
    Owner(OwnerCmd),
    /// The service-wide default quota (admin).
    #[command(subcommand)]
    Quota(QuotaCmd),
    /// Operator commands run on the server's host, against the store itself.
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Show or export the audit log of the current tenant (owner, admin); `-o csv` is
    /// the server's export.
    Audit {
        /// The old name of `-o`.
        #[arg(long, hide = true, value_enum)]
        format: Option<Format>,
        /// Every tenant's records (admin).
        #[arg(long)]
        all: bool,
        /// At most this many (the newest).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `swell admin …`: on the server's host, with the store's own access (no token).
#[derive(clap::Subcommand)]
pub enum AdminCmd {
    /// Set a user's password directly in the store (a lost admin password) and revoke
    /// every token of the user; the new password is read from a file or generated and
    /// printed once. Works with the server stopped or running.
    ResetPassword {
        /// The user.
        user: String,
        /// A file holding the new password (`-` for standard input); default: generate one.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// The server's data directory (its SQLite store).
        #[arg(long, env = "SWELL_DATA_DIR", default_value = "./swell-data")]
        data_dir: PathBuf,
        /// The server's PostgreSQL store instead (prefer the environment variable).
        #[arg(
            long,
            env = "SWELL_DATABASE_URL",
            hide_env_values = true,
            value_name = "URL"
        )]
        database_url: Option<String>,
    },
}

/// Quota flags shared by tenant create and update.
#[derive(clap::Args, Default)]
pub struct QuotaArgs {
    /// Most live instances over all the tenant's groups.
    #[arg(long)]
    max_instances: Option<u32>,
    /// Most vCPUs.
    #[arg(long)]
    max_vcpus: Option<u32>,
    /// Most memory in MiB.
    #[arg(long)]
    max_memory_mb: Option<u64>,
    /// Most groups.
    #[arg(long)]
    max_groups: Option<u32>,
}

impl QuotaArgs {
    fn any(&self) -> bool {
        self.max_instances.is_some()
            || self.max_vcpus.is_some()
            || self.max_memory_mb.is_some()
            || self.max_groups.is_some()
    }

    fn json(&self) -> Value {
        json!({
            "max_instances": self.max_instances,
            "max_vcpus": self.max_vcpus,
            "max_memory_mb": self.max_memory_mb,
            "max_groups": self.max_groups,
        })
    }
}

/// Grant flags shared by tenant create and update (admins only). Each list given
/// replaces the stored one whole; an empty value (`--providers ''`) grants nothing.
#[derive(clap::Args, Default)]
pub struct GrantArgs {
    /// Provider definitions its groups may name, e.g. `process,docker-rack1`.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    providers: Option<Vec<String>>,
    /// Addresses its load balancers may listen on: `IP:PORT` or `IP:FIRST-LAST`, e.g.
    /// `127.0.0.1:20000-20099`.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    listen: Option<Vec<String>>,
    /// Image patterns its docker and openstack templates may name (`*` matches any run
    /// of characters), e.g. `acme/*,swell-demo-app:*`.
    #[arg(long, value_delimiter = ',', num_args = 1)]
    images: Option<Vec<String>>,
}

impl GrantArgs {
    /// Sets the given lists in a tenant body.
    fn add_to(self, body: &mut Value) {
        let list = |v: Vec<String>| -> Value {
            json!(v.into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>())
        };
        if let Some(v) = self.providers {
            body["providers"] = list(v);
        }
        if let Some(v) = self.listen {
            body["listen"] = list(v);
        }
        if let Some(v) = self.images {
            body["images"] = list(v);
        }
    }
}

/// `swell tenant …`.
#[derive(clap::Subcommand)]
pub enum TenantCmd {
    /// Create a tenant.
    Create {
        /// Its name.
        name: String,
        /// A name for humans.
        #[arg(long)]
        display_name: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// List tenants.
    List,
    /// Show a tenant.
    Show {
        /// Its name.
        name: String,
    },
    /// Update a tenant's display fields, quota or grants (the quota and each grant list
    /// given are replaced whole).
    Update {
        /// Its name.
        name: String,
        /// A name for humans.
        #[arg(long)]
        display_name: Option<String>,
        /// A description.
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        quota: QuotaArgs,
        #[command(flatten)]
        grants: GrantArgs,
    },
    /// Delete a tenant (refused while it has groups, unless --force).
    Delete {
        /// Its name.
        name: String,
        /// Scale its groups to zero and delete them first.
        #[arg(long)]
        force: bool,
    },
}

/// `swell user …`.
#[derive(clap::Subcommand)]
pub enum UserCmd {
    /// Create a user.
    Create {
        /// Its name.
        name: String,
        /// A file holding the password (`-` for standard input).
        #[arg(long)]
        password_file: PathBuf,
        /// A service-wide administrator (admin only).
        #[arg(long)]
        admin: bool,
    },
    /// List the users of the current tenant (admin: all).
    List,
    /// Show a user.
    Show {
        /// Its name.
        name: String,
    },
    /// Delete a user (admin).
    Delete {
        /// Its name.
        name: String,
    },
    /// Give a user a role in a tenant.
    Grant {
        /// The user.
        name: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
        /// `owner`, `member` or `viewer`.
        #[arg(long)]
        role: String,
    },
    /// Take a user's role in a tenant away.
    Revoke {
        /// The user.
        name: String,
        /// The tenant.
        #[arg(long)]
        tenant: String,
    },
    /// Change a password (every token of the user is revoked).
    Passwd {
        /// The user.
        name: String,
        /// A file holding the new password (`-` for standard input).
        #[arg(long)]
        password_file: PathBuf,
        /// A file holding your current password: needed to change your own.
        #[arg(long)]
        current_password_file: Option<PathBuf>,
    },
}

/// `swell token …`.
#[derive(clap::Subcommand)]
pub enum TokenCmd {
    /// Revoke the current token (and forget the stored one).
    Revoke,
    /// Show who the current token is.
    Whoami,
}

/// `swell api-key …`.
#[derive(clap::Subcommand)]
pub enum ApiKeyCmd {
    /// Create a key; it is printed once.
    Create {
        /// Its name.
        name: String,
        /// `owner`, `member` or `viewer`.
        #[arg(long)]
        role: String,
    },
    /// List the tenant's keys.
    List,
    /// Delete a key.
    Delete {
        /// Its name.
        name: String,
    },
}

/// `swell owner …`.
#[derive(clap::Subcommand)]
pub enum OwnerCmd {
    /// Bind a user to an instance.
    Add {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
        /// The user.
        user: String,
    },
    /// Remove the binding.
    Remove {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
        /// The user.
        user: String,
    },
    /// List an instance's owners.
    List {
        /// The group.
        group: String,
        /// The instance id.
        id: String,
    },
}

/// `swell quota …`.
#[derive(clap::Subcommand)]
pub enum QuotaCmd {
    /// Show the default quota.
    Show,
    /// Set the default quota (replaced whole; a missing limit is unlimited).
    Set {
        #[command(flatten)]
        quota: QuotaArgs,
    },
}

/// `swell admin …`.
async fn admin(cmd: AdminCmd, output: Output) -> Result<()> {
    use std::sync::Arc;
    use swell_store::Store;
    let AdminCmd::ResetPassword {
        user,
        password_file,
        data_dir,
        database_url,
    } = cmd;
    let store: Arc<dyn Store> = match &database_url {
        Some(url) => Arc::new(
            swell_store::PgStore::connect(url)
                .await
                .context("opening the PostgreSQL store")?,
        ),
        None => {
            let db = data_dir.join("swell.db");
            anyhow::ensure!(
                db.exists(),
                "no store at {}: give the server's --data-dir (or --database-url)",
                db.display()
            );
            Arc::new(
                swell_store::SqliteStore::open(&db)
                    .await
                    .with_context(|| format!("opening {}", db.display()))?,
            )
        }
    };
    anyhow::ensure!(
        store.get_user(&user).await?.is_some(),
        "no user `{user}` in the store"
    );
    let password = match &password_file {
        Some(f) => read_password(f)?,
        None => swell_server::auth::generate_password(),
    };
    swell_server::auth::check_password(&password).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Shown once, on standard output, when this command chose it.
    let shown = password_file.is_none().then(|| password.clone());
    let hash = tokio::task::spawn_blocking(move || swell_server::auth::hash_password(&password))
        .await
        .context("hashing the password")??;
    let now = swell_core::Timestamp::from_millis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_millis() as i64,
    );
    store.set_password(&user, &hash, now).await?;
    // Every login is to a tenant: with none left (deleted before that was refused), the
    // bootstrap tenant comes back so that the admin can log in.
    let mut message = format!("the password of `{user}` is reset; their tokens are revoked");
    if store.list_tenants().await?.iter().all(|t| t.deleting) {
        let default = swell_core::TenantId::default_tenant();
        store.ensure_tenant(&default, now).await?;
        message.push_str(&format!(
            "; no tenant was left, so `{default}` was created to log in to"
        ));
    }
    if output.is_document() {
        let mut v = json!({ "ok": true, "message": message });
        if let Some(p) = &shown {
            v["password"] = json!(p);
        }
        return print(output, &v, |_| Table::new(&[]));
    }
    eprintln!("{message}");
    if let Some(p) = &shown {
        outln!("{p}");
    }
    Ok(())
}

/// Reads a password from a file (`-`: standard input); the trailing newline is dropped.
fn read_password(path: &Path) -> Result<String> {
    let mut text = String::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
    } else {
        text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the password file {}", path.display()))?;
    }
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Asks for a password on the terminal without echoing it; refused when standard
/// input is not a terminal (a script gives `--password-file`). Echo goes off before the
/// prompt shows, so that nothing typed after the prompt can appear. The terminal is read
/// a byte at a time with its signals off, so Ctrl-C arrives as a byte that cancels and
/// the settings are restored on every path (a SIGINT would kill the CLI with echo off).
fn prompt_password(prompt: &str) -> Result<String> {
    use nix::sys::termios::{LocalFlags, SetArg, SpecialCharacterIndices, tcgetattr, tcsetattr};
    use std::io::{IsTerminal, Write};
    anyhow::ensure!(
        std::io::stdin().is_terminal(),
        "no terminal to ask for the password on: give --password-file FILE (`-` for standard input) or SWELL_PASSWORD_FILE"
    );
    let mut tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("opening the terminal")?;
    let before = tcgetattr(&tty).context("reading the terminal's settings")?;
    let mut quiet = before.clone();
    quiet
        .local_flags
        .remove(LocalFlags::ECHO | LocalFlags::ICANON | LocalFlags::ISIG);
    quiet.control_chars[SpecialCharacterIndices::VMIN as usize] = 1;
    quiet.control_chars[SpecialCharacterIndices::VTIME as usize] = 0;
    let erase = before.control_chars[SpecialCharacterIndices::VERASE as usize];
    tcsetattr(&tty, SetArg::TCSANOW, &quiet).context("turning the terminal's echo off")?;
    let read = write!(tty, "{prompt}")
        .and_then(|()| tty.flush())
        .and_then(|()| read_secret_line(&mut tty, erase));
    tcsetattr(&tty, SetArg::TCSANOW, &before).context("turning the terminal's echo back on")?;
    let _ = writeln!(tty);
    match read.context("reading the password from the terminal")? {
        Some(line) => Ok(line),
        None => anyhow::bail!("cancelled at the password prompt"),
    }
}

/// One line typed with echo and line editing off: Enter ends it; Backspace (or the
/// terminal's erase key) removes a character, Ctrl-U the whole line; Ctrl-C, or Ctrl-D
/// on an empty line, cancels (`None`).
fn read_secret_line(input: &mut impl Read, erase: u8) -> std::io::Result<Option<String>> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        if input.read(&mut byte)? == 0 {
            break;
        }
        match byte[0] {
            b'\n' | b'\r' => break,
            0x03 => return Ok(None),
            0x04 if line.is_empty() => return Ok(None),
            0x04 => {}
            0x15 => line.clear(),
            b if b == 0x7f || b == 0x08 || b == erase => {
                // A character may be several UTF-8 bytes: drop its continuation bytes too.
                while let Some(b) = line.pop() {
                    if b & 0xc0 != 0x80 {
                        break;
                    }
                }
            }
            b => line.push(b),
        }
    }
    String::from_utf8(line)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8"))
}

fn tenants_table(list: &[api::Tenant]) -> Table {
    let mut t = Table::new(&[
        "NAME",
        "DISPLAY NAME",
        "GROUPS",
        "MAX INSTANCES",
        "PROVIDERS",
    ])
    .wide(&[
        "MAX VCPUS",
        "MAX MEMORY MB",
        "MAX GROUPS",
        "LISTEN",
        "IMAGES",
        "CREATED",
    ]);
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    let l = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(",")
        }
    };
    for x in list {
        let q = &x.effective_quota;
        t.add_row([
            if x.deleting {
                format!("{} (deleting)", x.name)
            } else {
                x.name.clone()
            },
            x.display_name.clone(),
            x.groups.to_string(),
            n(q.max_instances.map(u64::from)),
            l(&x.providers),
            n(q.max_vcpus.map(u64::from)),
            n(q.max_memory_mb),
            n(q.max_groups.map(u64::from)),
            l(&x.listen),
            l(&x.images),
            x.created_at.clone(),
        ]);
    }
    t
}

fn users_table(list: &[api::User]) -> Table {
    let mut t = Table::new(&["NAME", "ADMIN", "ROLE", "OWNS"]).wide(&["CREATED"]);
    for u in list {
        t.add_row([
            u.name.clone(),
            u.admin.to_string(),
            or_dash(u.role.as_ref()),
            u.owned_instances.join(" "),
            u.created_at.clone(),
        ]);
    }
    t
}

fn audit_table(list: &[api::AuditEntry]) -> Table {
    let mut t =
        Table::new(&["TIME", "USER", "ACTION", "TARGET", "RESULT"]).wide(&["ID", "TENANT", "FROM"]);
    for e in list {
        t.add_row([
            e.at.clone(),
            or_dash(e.user.as_ref()),
            e.action.clone(),
            e.target.clone(),
            e.result.to_string(),
            e.id.to_string(),
            or_dash(e.tenant.as_ref()),
            or_dash(e.source.as_ref()),
        ]);
    }
    t
}

/// Runs an identity command against the server `place` names.
pub async fn run(cmd: AuthCommand, place: &Place, output: Output) -> Result<()> {
    if let AuthCommand::Admin(cmd) = cmd {
        return admin(cmd, output).await;
    }
    let target = if matches!(cmd, AuthCommand::Login { .. }) {
        place.login_target()?
    } else {
        place.target()?
    };
    let c = Client::new(&target)?;
    match cmd {
        AuthCommand::Login {
            user,
            password_file,
            tenant,
        } => {
            let password = match &password_file {
                Some(file) => read_password(file)?,
                None => prompt_password(&format!("password of {user}: "))?,
            };
            let body = json!({ "user": user, "password": password, "tenant": tenant });
            let answer: api::LoginResponse =
                c.call(Method::POST, "/v1/auth/tokens", Some(&body)).await?;
            let mut config = Config::load(&target.url)?;
            let name =
                config.login_name(place.context.as_deref(), &target.url, place.url.is_some());
            config.remember(&name, &target.url, &user, &tenant, answer.token);
            config.current_context = Some(name.clone());
            let path = config.save()?;
            done(
                output,
                &format!(
                    "logged in as {user} on tenant {tenant} at {} until {} (context `{name}` in {})",
                    target.url,
                    answer.expires_at,
                    path.display()
                ),
            )
        }
        AuthCommand::Tenant(cmd) => tenant(&c, cmd, output).await,
        AuthCommand::Provider(cmd) => crate::cmd_provider::run(&c, *cmd, output).await,
        AuthCommand::Price(cmd) => crate::cmd_cost::price(&c, *cmd, output).await,
        AuthCommand::Cost(args) => crate::cmd_cost::cost(&c, args, output).await,
        AuthCommand::Webhook(cmd) => crate::cmd_webhook::run(&c, *cmd, output).await,
        AuthCommand::Alerts(cmd) => crate::cmd_webhook::run_alerts(&c, cmd, output).await,
        AuthCommand::User(cmd) => user(&c, cmd, output).await,
        AuthCommand::Token(TokenCmd::Revoke) => {
            let _: Value = c
                .call(Method::DELETE, "/v1/auth/tokens/current", None)
                .await?;
            // The stored token is forgotten, unless the one revoked came from SWELL_TOKEN.
            if let Some(name) = &target.context
                && std::env::var("SWELL_TOKEN").map_or(true, |t| t.trim().is_empty())
            {
                let mut config = Config::load(&target.url)?;
                if let Some(entry) = config.contexts.iter_mut().find(|c| &c.name == name) {
                    entry.token = None;
                    config.save()?;
                }
            }
            done(output, "token revoked")
        }
        AuthCommand::Token(TokenCmd::Whoami) => {
            let w: api::Whoami = c.get("/v1/auth/whoami").await?;
            print(output, &w, |w| {
                let mut t = Table::new(&["PRINCIPAL", "TENANT", "ROLE", "ADMIN", "OWNS"]);
                t.add_row([
                    w.principal.clone(),
                    w.tenant.clone(),
                    or_dash(w.role.as_ref()),
                    w.admin.to_string(),
                    w.owned_instances.join(" "),
                ]);
                t
            })
        }
        AuthCommand::ApiKey(cmd) => api_key(&c, cmd, output).await,
        AuthCommand::Owner(cmd) => owner(&c, cmd, output).await,
        AuthCommand::Quota(QuotaCmd::Show) => {
            let q: api::Quota = c.get("/v1/quota/default").await?;
            print(output, &q, quota_table)
        }
        AuthCommand::Quota(QuotaCmd::Set { quota }) => {
            let q: api::Quota = c
                .call(Method::PUT, "/v1/quota/default", Some(&quota.json()))
                .await?;
            print(output, &q, quota_table)
        }
        AuthCommand::Audit { format, all, limit } => {
            let output = Output {
                format: format.unwrap_or(output.format),
                ..output
            };
            let mut q = Vec::new();
            if all {
                q.push("all=true".into());
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            if output.format == Format::Csv {
                // The server's export: every field, formulas neutralised.
                q.push("format=csv".to_string());
                let text = c.get_text(&format!("/v1/audit?{}", q.join("&"))).await?;
                let text = match text.split_once('\n') {
                    Some((_, rows)) if !output.headers => rows,
                    _ => &text,
                };
                out!("{text}");
                return Ok(());
            }
            let list: api::AuditList = c.get(&format!("/v1/audit?{}", q.join("&"))).await?;
            print(output, &list, |l| audit_table(&l.entries))
        }
        AuthCommand::Admin(_) => unreachable!("handled above"),
    }
}

fn quota_table(q: &api::Quota) -> Table {
    let mut t = Table::new(&["MAX INSTANCES", "MAX VCPUS", "MAX MEMORY MB", "MAX GROUPS"]);
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    t.add_row([
        n(q.max_instances.map(u64::from)),
        n(q.max_vcpus.map(u64::from)),
        n(q.max_memory_mb),
        n(q.max_groups.map(u64::from)),
    ]);
    t
}

async fn tenant(c: &Client, cmd: TenantCmd, output: Output) -> Result<()> {
    let one = |t: &api::Tenant| tenants_table(std::slice::from_ref(t));
    match cmd {
        TenantCmd::Create {
            name,
            display_name,
            description,
            quota,
            grants,
        } => {
            let mut body = json!({ "name": name });
            if let Some(d) = display_name {
                body["display_name"] = json!(d);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if quota.any() {
                body["quota"] = quota.json();
            }
            grants.add_to(&mut body);
            let t: api::Tenant = c.call(Method::POST, "/v1/tenants", Some(&body)).await?;
            print(output, &t, one)
        }
        TenantCmd::List => {
            let l: api::TenantList = c.get("/v1/tenants").await?;
            print(output, &l, |l| tenants_table(&l.tenants))
        }
        TenantCmd::Show { name } => {
            let t: api::Tenant = c.get(&format!("/v1/tenants/{name}")).await?;
            print(output, &t, one)
        }
        TenantCmd::Update {
            name,
            display_name,
            description,
            quota,
            grants,
        } => {
            let mut body = json!({});
            if let Some(d) = display_name {
                body["display_name"] = json!(d);
            }
            if let Some(d) = description {
                body["description"] = json!(d);
            }
            if quota.any() {
                body["quota"] = quota.json();
            }
            grants.add_to(&mut body);
            let t: api::Tenant = c
                .call(Method::PUT, &format!("/v1/tenants/{name}"), Some(&body))
                .await?;
            print(output, &t, one)
        }
        TenantCmd::Delete { name, force } => {
            let answer: Value = c
                .call(
                    Method::DELETE,
                    &format!("/v1/tenants/{name}?force={force}"),
                    None,
                )
                .await?;
            if answer.is_null() {
                done(output, &format!("tenant {name} deleted"))
            } else {
                done(
                    output,
                    &format!(
                        "tenant {name} is being deleted: its groups scale to zero, then it is removed"
                    ),
                )
            }
        }
    }
}

async fn user(c: &Client, cmd: UserCmd, output: Output) -> Result<()> {
    let one = |u: &api::User| users_table(std::slice::from_ref(u));
    match cmd {
        UserCmd::Create {
            name,
            password_file,
            admin,
        } => {
            let password = read_password(&password_file)?;
            let body = json!({ "name": name, "password": password, "admin": admin });
            let u: api::User = c.call(Method::POST, "/v1/users", Some(&body)).await?;
            print(output, &u, one)
        }
        UserCmd::List => {
            let l: api::UserList = c.get("/v1/users").await?;
            print(output, &l, |l| users_table(&l.users))
        }
        UserCmd::Show { name } => {
            let u: api::User = c.get(&format!("/v1/users/{name}")).await?;
            print(output, &u, one)
        }
        UserCmd::Delete { name } => {
            let _: Value = c
                .call(Method::DELETE, &format!("/v1/users/{name}"), None)
                .await?;
            done(output, &format!("user {name} deleted"))
        }
        UserCmd::Grant { name, tenant, role } => {
            let b: api::RoleBinding = c
                .call(
                    Method::PUT,
                    &format!("/v1/tenants/{tenant}/users/{name}"),
                    Some(&json!({ "role": role })),
                )
                .await?;
            print(output, &b, |b| {
                let mut t = Table::new(&["USER", "TENANT", "ROLE"]);
                t.add_row([b.user.clone(), b.tenant.clone(), b.role.clone()]);
                t
            })
        }
        UserCmd::Revoke { name, tenant } => {
            let _: Value = c
                .call(
                    Method::DELETE,
                    &format!("/v1/tenants/{tenant}/users/{name}"),
                    None,
                )
                .await?;
            done(output, &format!("{name} has no role in {tenant} any more"))
        }
        UserCmd::Passwd {
            name,
            password_file,
            current_password_file,
        } => {
            let mut body = json!({ "password": read_password(&password_file)? });
            if let Some(file) = current_password_file {
                body["current_password"] = json!(read_password(&file)?);
            }
            let _: Value = c
                .call(
                    Method::PUT,
                    &format!("/v1/users/{name}/password"),
                    Some(&body),
                )
                .await?;
            done(
                output,
                &format!("password of {name} changed; every token of {name} was revoked"),
            )
        }
    }
}

async fn api_key(c: &Client, cmd: ApiKeyCmd, output: Output) -> Result<()> {
    match cmd {
        ApiKeyCmd::Create { name, role } => {
            let k: api::CreatedApiKey = c
                .call(
                    Method::POST,
                    "/v1/api-keys",
                    Some(&json!({ "name": name, "role": role })),
                )
                .await?;
            if output.is_document() {
                return print(output, &k, |_| Table::new(&[]));
            }
            // Only the key, for `KEY=$(swell api-key create …)`.
            outln!("{}", k.key);
            Ok(())
        }
        ApiKeyCmd::List => {
            let l: api::ApiKeyList = c.get("/v1/api-keys").await?;
            print(output, &l, |l| {
                let mut t = Table::new(&["NAME", "ROLE", "CREATED BY", "CREATED"]);
                for k in &l.keys {
                    t.add_row([
                        k.name.clone(),
                        k.role.clone(),
                        k.created_by.clone(),
                        k.created_at.clone(),
                    ]);
                }
                t
            })
        }
        ApiKeyCmd::Delete { name } => {
            let _: Value = c
                .call(Method::DELETE, &format!("/v1/api-keys/{name}"), None)
                .await?;
            done(output, &format!("API key {name} deleted"))
        }
    }
}

async fn owner(c: &Client, cmd: OwnerCmd, output: Output) -> Result<()> {
    match cmd {
        OwnerCmd::Add { group, id, user } => {
            let _: Value = c
                .call(
                    Method::PUT,
                    &format!("/v1/groups/{group}/instances/{id}/owners/{user}"),
                    None,
                )
                .await?;
            done(output, &format!("{user} now owns instance {id}"))
        }
        OwnerCmd::Remove { group, id, user } => {
            let _: Value = c
                .call(
                    Method::DELETE,
                    &format!("/v1/groups/{group}/instances/{id}/owners/{user}"),
                    None,
                )
                .await?;
            done(output, &format!("{user} no longer owns instance {id}"))
        }
        OwnerCmd::List { group, id } => {
            let l: api::InstanceOwnerList = c
                .get(&format!("/v1/groups/{group}/instances/{id}/owners"))
                .await?;
            print(output, &l, |l| {
                let mut t = Table::new(&["INSTANCE", "USER"]);
                for o in &l.owners {
                    t.add_row([o.instance.clone(), o.user.clone()]);
                }
                t
            })
        }
    }
}

/// After `swell serve` created the admin with a generated password: unless the CLI
/// already has a context on this server whose token it accepts, log the admin in on
/// `default` and store the token in that context (made current when there is none), so
/// that the client commands work at once on a fresh install.
pub async fn store_bootstrap_token(server: &swell_server::Server, password: &str) -> Result<()> {
    let service = server.service();
    let url = server.url();
    let mut config = Config::load(crate::config::DEFAULT_URL)?;
    let name = config.login_name(None, &url, true);
    if let Some(existing) = config.get(&name).and_then(|c| c.token.clone())
        && service.auth().authenticate(&existing).await.is_ok()
    {
        return Ok(());
    }
    let (token, _) = service
        .auth()
        .login(
            swell_server::auth::BOOTSTRAP_ADMIN,
            password,
            "default",
            None,
        )
        .await
        .context("logging the bootstrap admin in")?;
    config.remember(
        &name,
        &url,
        swell_server::auth::BOOTSTRAP_ADMIN,
        "default",
        token,
    );
    config.current_context.get_or_insert_with(|| name.clone());
    let path = config.save()?;
    eprintln!(
        "the CLI is logged in as admin on tenant default (context `{name}` in {})",
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::read_secret_line;

    /// What a typed sequence gives at the password prompt (erase key DEL, as most terminals).
    fn check(typed: &[u8], expected: Option<&str>) {
        let got = read_secret_line(&mut &typed[..], 0x7f).expect("readable");
        assert_eq!(got.as_deref(), expected, "typed {typed:?}");
    }

    #[test]
    fn the_password_line_is_edited_and_cancelled_like_a_terminal_line() {
        check(b"secret\n", Some("secret"));
        check(b"secret\r", Some("secret"));
        check(b"secrex\x7ft\n", Some("secret"));
        check(b"secrex\x08t\n", Some("secret"));
        check("pässé\x7f\x7fs\n".as_bytes(), Some("päss"));
        check(b"wrong\x15right\n", Some("right"));
        check(b"half\x03typed\n", None);
        check(b"\x04", None);
        check(b"a\x04b\n", Some("ab"));
        check(b"no newline", Some("no newline"));
        check(b"", Some(""));
    }
}
