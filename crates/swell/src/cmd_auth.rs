//! Identity commands: `swell login`, `swell tenant …`, `swell user …`, `swell token …`,
//! `swell api-key …`, `swell owner …`, `swell quota …` and `swell audit`.

use crate::client::{self, Client, Output, print};
use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use swell_api as api;

/// The identity commands (flattened into the top-level command list).
#[derive(clap::Subcommand)]
pub enum AuthCommand {
    /// Log in to a tenant; the token is stored in ~/.config/swell/token (mode 0600).
    Login {
        /// The user.
        #[arg(long)]
        user: String,
        /// A file holding the password (`-` for standard input).
        #[arg(long)]
        password_file: PathBuf,
        /// The tenant the token acts in.
        #[arg(long, default_value = "default")]
        tenant: String,
    },
    /// Manage tenants (admin).
    #[command(subcommand)]
    Tenant(TenantCmd),
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
    /// Show or export the audit log of the current tenant (owner, admin).
    Audit {
        /// `table`-like output by default; `csv` or `json` for export.
        #[arg(long)]
        format: Option<String>,
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
    /// Providers its groups may name, e.g. `process,docker`.
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
    match output {
        Output::Json => {
            let mut v = json!({ "ok": true, "message": message });
            if let Some(p) = &shown {
                v["password"] = json!(p);
            }
            println!("{v}");
        }
        Output::Table => {
            eprintln!("{message}");
            if let Some(p) = &shown {
                println!("{p}");
            }
        }
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

/// Writes the token to the user's config directory with mode 0600.
fn store_token(token: &str) -> Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    let path = client::token_path()
        .context("neither XDG_CONFIG_HOME nor HOME is set: cannot store the token")?;
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(f, "{token}")?;
    Ok(path)
}

fn tenants_table(list: &[api::Tenant]) -> comfy_table::Table {
    let mut t = client::table(&[
        "NAME",
        "DISPLAY NAME",
        "GROUPS",
        "MAX INSTANCES",
        "MAX VCPUS",
        "MAX MEMORY MB",
        "MAX GROUPS",
        "PROVIDERS",
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
        t.add_row(vec![
            if x.deleting {
                format!("{} (deleting)", x.name)
            } else {
                x.name.clone()
            },
            x.display_name.clone(),
            x.groups.to_string(),
            n(q.max_instances.map(u64::from)),
            n(q.max_vcpus.map(u64::from)),
            n(q.max_memory_mb),
            n(q.max_groups.map(u64::from)),
            l(&x.providers),
            l(&x.listen),
            l(&x.images),
            x.created_at.clone(),
        ]);
    }
    t
}

fn users_table(list: &[api::User]) -> comfy_table::Table {
    let mut t = client::table(&["NAME", "ADMIN", "ROLE", "OWNS", "CREATED"]);
    for u in list {
        t.add_row(vec![
            u.name.clone(),
            u.admin.to_string(),
            u.role.clone().unwrap_or_else(|| "-".into()),
            u.owned_instances.join(" "),
            u.created_at.clone(),
        ]);
    }
    t
}

fn audit_table(list: &[api::AuditEntry]) -> comfy_table::Table {
    let mut t = client::table(&[
        "TIME", "USER", "TENANT", "ACTION", "TARGET", "FROM", "RESULT",
    ]);
    for e in list {
        t.add_row(vec![
            e.at.clone(),
            e.user.clone().unwrap_or_else(|| "-".into()),
            e.tenant.clone().unwrap_or_else(|| "-".into()),
            e.action.clone(),
            e.target.clone(),
            e.source.clone().unwrap_or_else(|| "-".into()),
            e.result.to_string(),
        ]);
    }
    t
}

fn done(output: Output, what: String) -> Result<()> {
    match output {
        Output::Json => outln!("{}", json!({ "ok": true, "message": what })),
        Output::Table => eprintln!("{what}"),
    }
    Ok(())
}

/// Runs an identity command against the server at `url`.
pub async fn run(cmd: AuthCommand, url: &str, output: Output) -> Result<()> {
    let c = Client::new(url)?;
    match cmd {
        AuthCommand::Login {
            user,
            password_file,
            tenant,
        } => {
            let password = read_password(&password_file)?;
            let body = json!({ "user": user, "password": password, "tenant": tenant });
            let answer: api::LoginResponse =
                c.call(Method::POST, "/v1/auth/tokens", Some(&body)).await?;
            let path = store_token(&answer.token)?;
            done(
                output,
                format!(
                    "logged in as {user} on tenant {tenant} until {} (token in {})",
                    answer.expires_at,
                    path.display()
                ),
            )
        }
        AuthCommand::Admin(cmd) => admin(cmd, output).await,
        AuthCommand::Tenant(cmd) => tenant(&c, cmd, output).await,
        AuthCommand::User(cmd) => user(&c, cmd, output).await,
        AuthCommand::Token(TokenCmd::Revoke) => {
            let _: Value = c
                .call(Method::DELETE, "/v1/auth/tokens/current", None)
                .await?;
            if let Some(path) = client::token_path()
                && std::env::var("SWELL_TOKEN").map_or(true, |t| t.trim().is_empty())
            {
                let _ = std::fs::remove_file(path);
            }
            done(output, "token revoked".into())
        }
        AuthCommand::Token(TokenCmd::Whoami) => {
            let w: api::Whoami = c.get("/v1/auth/whoami").await?;
            print(output, &w, |w| {
                let mut t = client::table(&["PRINCIPAL", "TENANT", "ROLE", "ADMIN", "OWNS"]);
                t.add_row(vec![
                    w.principal.clone(),
                    w.tenant.clone(),
                    w.role.clone().unwrap_or_else(|| "-".into()),
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
            let mut q = Vec::new();
            if let Some(f) = &format {
                q.push(format!("format={f}"));
            }
            if all {
                q.push("all=true".into());
            }
            if let Some(l) = limit {
                q.push(format!("limit={l}"));
            }
            let path = format!("/v1/audit?{}", q.join("&"));
            match format.as_deref() {
                Some("csv") => {
                    out!("{}", c.get_text(&path).await?);
                    Ok(())
                }
                Some("json") => {
                    let list: api::AuditList = c.get(&path).await?;
                    outln!("{}", serde_json::to_string_pretty(&list)?);
                    Ok(())
                }
                _ => {
                    let list: api::AuditList = c.get(&path).await?;
                    print(output, &list, |l| audit_table(&l.entries))
                }
            }
        }
    }
}

fn quota_table(q: &api::Quota) -> comfy_table::Table {
    let mut t = client::table(&["MAX INSTANCES", "MAX VCPUS", "MAX MEMORY MB", "MAX GROUPS"]);
    let n = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
    t.add_row(vec![
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
                done(output, format!("tenant {name} deleted"))
            } else {
                done(
                    output,
                    format!(
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
            done(output, format!("user {name} deleted"))
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
                let mut t = client::table(&["USER", "TENANT", "ROLE"]);
                t.add_row(vec![b.user.clone(), b.tenant.clone(), b.role.clone()]);
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
            done(output, format!("{name} has no role in {tenant} any more"))
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
                format!("password of {name} changed; every token of {name} was revoked"),
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
            match output {
                Output::Json => outln!("{}", serde_json::to_string_pretty(&k)?),
                Output::Table => outln!("{}", k.key),
            }
            Ok(())
        }
        ApiKeyCmd::List => {
            let l: api::ApiKeyList = c.get("/v1/api-keys").await?;
            print(output, &l, |l| {
                let mut t = client::table(&["NAME", "ROLE", "CREATED BY", "CREATED"]);
                for k in &l.keys {
                    t.add_row(vec![
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
            done(output, format!("API key {name} deleted"))
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
            done(output, format!("{user} now owns instance {id}"))
        }
        OwnerCmd::Remove { group, id, user } => {
            let _: Value = c
                .call(
                    Method::DELETE,
                    &format!("/v1/groups/{group}/instances/{id}/owners/{user}"),
                    None,
                )
                .await?;
            done(output, format!("{user} no longer owns instance {id}"))
        }
        OwnerCmd::List { group, id } => {
            let l: api::InstanceOwnerList = c
                .get(&format!("/v1/groups/{group}/instances/{id}/owners"))
                .await?;
            print(output, &l, |l| {
                let mut t = client::table(&["INSTANCE", "USER"]);
                for o in &l.owners {
                    t.add_row(vec![o.instance.clone(), o.user.clone()]);
                }
                t
            })
        }
    }
}

/// After `swell serve` created the admin with a generated password: unless the CLI
/// already holds a token this server accepts, log the admin in on `default` and store
/// the token, so that the client commands work at once on a fresh install.
pub async fn store_bootstrap_token(server: &swell_server::Server, password: &str) -> Result<()> {
    let service = server.service();
    if let Some(existing) = client::current_token()
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
    let path = store_token(&token)?;
    eprintln!(
        "the CLI is logged in as admin on tenant default (token in {})",
        path.display()
    );
    Ok(())
}
