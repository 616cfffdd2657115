//! The provider's configuration: credentials (Keystone v3 password or application
//! credential, with project and domain scoping), region, interface, microversion,
//! timeouts and over-commit ratios; read from `OS_*` variables or a `clouds.yaml`.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A secret (password, application-credential secret): never printed by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

/// A Keystone object (user, project, domain) named either by name or by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameOrId {
    /// By name (unique within its domain).
    Name(String),
    /// By id.
    Id(String),
}

impl NameOrId {
    /// The `default` domain, by id.
    pub fn default_domain() -> Self {
        NameOrId::Id("default".into())
    }

    /// Keystone's JSON for it: `{"name": …}` or `{"id": …}`.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        match self {
            NameOrId::Name(n) => serde_json::json!({ "name": n }),
            NameOrId::Id(i) => serde_json::json!({ "id": i }),
        }
    }
}

/// How the provider authenticates to Keystone v3.
#[derive(Debug, Clone, PartialEq)]
pub enum AuthConfig {
    /// A user's password, scoped to a project.
    Password {
        /// Keystone's URL, e.g. `http://127.0.0.1:5000/v3` (`/v3` is added if missing).
        auth_url: String,
        /// The user, by name (needs `user_domain`) or id.
        user: NameOrId,
        /// The user's password.
        password: Secret,
        /// The user's domain, when the user is given by name (default: `default`).
        user_domain: NameOrId,
        /// The project the token is scoped to, by name (needs `project_domain`) or id.
        project: NameOrId,
        /// The project's domain, when the project is given by name (default: `default`).
        project_domain: NameOrId,
    },
    /// An application credential (already scoped to its project by Keystone).
    ApplicationCredential {
        /// Keystone's URL, e.g. `http://127.0.0.1:5000/v3`.
        auth_url: String,
        /// Which credential: by id, or by name with its user.
        credential: AppCredentialRef,
        /// The credential's secret.
        secret: Secret,
    },
}

/// An application credential, by id or by name and user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppCredentialRef {
    /// By id.
    Id(String),
    /// By name, with the user who owns it.
    Name {
        /// The credential's name.
        name: String,
        /// The owning user, by name (needs `user_domain`) or id.
        user: NameOrId,
        /// The user's domain, when the user is given by name.
        user_domain: NameOrId,
    },
}

impl AuthConfig {
    /// Password auth for a user and project both named in the `default` domain.
    pub fn password(
        auth_url: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
        project_name: impl Into<String>,
    ) -> Self {
        AuthConfig::Password {
            auth_url: auth_url.into(),
            user: NameOrId::Name(username.into()),
            password: Secret::new(password),
            user_domain: NameOrId::default_domain(),
            project: NameOrId::Name(project_name.into()),
            project_domain: NameOrId::default_domain(),
        }
    }

    /// Keystone's URL as configured.
    pub fn auth_url(&self) -> &str {
        match self {
            AuthConfig::Password { auth_url, .. }
            | AuthConfig::ApplicationCredential { auth_url, .. } => auth_url,
        }
    }
}

/// How to build an [`OpenStackProvider`](super::OpenStackProvider).
#[derive(Debug, Clone, PartialEq)]
pub struct OpenStackConfig {
    /// The tag of the Swell server that owns the servers (unique per Swell server);
    /// stamped on every server as metadata `swell_owner`, and only servers carrying it
    /// are this provider's.
    pub owner: String,
    /// Credentials and scope.
    pub auth: AuthConfig,
    /// The region whose endpoints are used (`None`: the first endpoint of each service).
    pub region: Option<String>,
    /// The endpoint interface: `public` (default), `internal` or `admin`.
    pub interface: String,
    /// The Nova microversion sent with every compute call (default `2.79`).
    pub compute_microversion: String,
    /// How long a new server may take to become ACTIVE (default 300 s).
    pub build_timeout: Duration,
    /// How long one HTTP call may take (default 30 s).
    pub request_timeout: Duration,
    /// vCPUs committable per physical vCPU on the hypervisors (default 16).
    pub cpu_overcommit: f64,
    /// MiB committable per physical MiB on the hypervisors (default 1.5).
    pub memory_overcommit: f64,
}

/// The default Nova microversion (Train; every cloud since 2019 has it).
pub const DEFAULT_COMPUTE_MICROVERSION: &str = "2.79";

impl OpenStackConfig {
    /// A config with the defaults: public interface, no region preference, compute
    /// microversion 2.79, 300 s build timeout, 30 s per call, 16:1 CPU and 1.5:1
    /// memory over-commit.
    pub fn new(owner: impl Into<String>, auth: AuthConfig) -> Self {
        OpenStackConfig {
            owner: owner.into(),
            auth,
            region: None,
            interface: "public".into(),
            compute_microversion: DEFAULT_COMPUTE_MICROVERSION.into(),
            build_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            cpu_overcommit: 16.0,
            memory_overcommit: 1.5,
        }
    }

    /// Reads the `OS_*` variables given (pass `std::env::vars()` at startup):
    /// `OS_AUTH_URL`; `OS_USERNAME`/`OS_USER_ID` + `OS_PASSWORD`, or
    /// `OS_APPLICATION_CREDENTIAL_ID` (or `_NAME` with a user) +
    /// `OS_APPLICATION_CREDENTIAL_SECRET`; `OS_PROJECT_NAME`/`OS_PROJECT_ID`
    /// (`OS_TENANT_NAME`/`OS_TENANT_ID` too); `OS_USER_DOMAIN_NAME`/`_ID`,
    /// `OS_PROJECT_DOMAIN_NAME`/`_ID` (falling back to `OS_DOMAIN_NAME`/`_ID`, then
    /// `default`); `OS_REGION_NAME`, `OS_INTERFACE` (or `OS_ENDPOINT_TYPE`),
    /// `OS_COMPUTE_API_VERSION`. `OS_AUTH_TYPE` chooses between `password` and
    /// `v3applicationcredential` when both kinds of variables are set.
    pub fn from_env_vars(
        owner: impl Into<String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, OpenStackConfigError> {
        let vars: HashMap<String, String> = vars
            .into_iter()
            .filter(|(k, v)| k.starts_with("OS_") && !v.trim().is_empty())
            .collect();
        let get = |k: &str| vars.get(k).map(|v| v.trim().to_string());
        let src = Source::Env;
        let auth_url = get("OS_AUTH_URL").ok_or_else(|| OpenStackConfigError::Missing {
            field: "OS_AUTH_URL".into(),
            rule: "Keystone's URL, e.g. http://controller:5000/v3".into(),
        })?;
        check_url(&src.name("auth_url"), &auth_url)?;
        let fields = AuthFields {
            auth_type: get("OS_AUTH_TYPE"),
            auth_url,
            username: get("OS_USERNAME"),
            user_id: get("OS_USER_ID"),
            password: get("OS_PASSWORD"),
            user_domain_name: get("OS_USER_DOMAIN_NAME"),
            user_domain_id: get("OS_USER_DOMAIN_ID"),
            project_name: get("OS_PROJECT_NAME").or_else(|| get("OS_TENANT_NAME")),
            project_id: get("OS_PROJECT_ID").or_else(|| get("OS_TENANT_ID")),
            project_domain_name: get("OS_PROJECT_DOMAIN_NAME"),
            project_domain_id: get("OS_PROJECT_DOMAIN_ID"),
            domain_name: get("OS_DOMAIN_NAME"),
            domain_id: get("OS_DOMAIN_ID"),
            app_cred_id: get("OS_APPLICATION_CREDENTIAL_ID"),
            app_cred_name: get("OS_APPLICATION_CREDENTIAL_NAME"),
            app_cred_secret: get("OS_APPLICATION_CREDENTIAL_SECRET"),
        };
        let auth = fields.into_auth(&src)?;
        let mut config = OpenStackConfig::new(owner, auth);
        config.region = get("OS_REGION_NAME");
        if let Some(i) = get("OS_INTERFACE").or_else(|| get("OS_ENDPOINT_TYPE")) {
            config.interface = check_interface(&src.name("interface"), &i)?;
        }
        if let Some(v) = get("OS_COMPUTE_API_VERSION") {
            config.compute_microversion = check_microversion(&src.name("compute_api_version"), &v)?;
        }
        Ok(config)
    }

    /// Reads cloud `cloud` from a `clouds.yaml` (the os-client-config format: `clouds:
    /// <name>: {auth: {...}, auth_type, region_name, interface, compute_api_version}`),
    /// and `secure.yaml` beside it if present (its values override). The file is
    /// `path`, else `$OS_CLIENT_CONFIG_FILE`, else the first of `./clouds.yaml`,
    /// `~/.config/openstack/clouds.yaml`, `/etc/openstack/clouds.yaml` that exists.
    pub fn from_clouds_yaml(
        owner: impl Into<String>,
        path: Option<&Path>,
        cloud: &str,
    ) -> Result<Self, OpenStackConfigError> {
        let path = match path {
            Some(p) => p.to_path_buf(),
            None => find_clouds_yaml(
                std::env::var_os("OS_CLIENT_CONFIG_FILE").map(PathBuf::from),
                std::env::var_os("HOME").map(PathBuf::from),
            )?,
        };
        let text = std::fs::read_to_string(&path).map_err(|source| OpenStackConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let secure = path
            .parent()
            .map(|d| d.join("secure.yaml"))
            .filter(|p| p.is_file())
            .map(|p| {
                std::fs::read_to_string(&p)
                    .map(|t| (p.clone(), t))
                    .map_err(|source| OpenStackConfigError::Read { path: p, source })
            })
            .transpose()?;
        Self::from_clouds_yaml_text(
            owner,
            &path,
            &text,
            secure.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
            cloud,
        )
    }

    /// [`from_clouds_yaml`](Self::from_clouds_yaml) on text already read.
    pub fn from_clouds_yaml_text(
        owner: impl Into<String>,
        path: &Path,
        text: &str,
        secure: Option<(&Path, &str)>,
        cloud: &str,
    ) -> Result<Self, OpenStackConfigError> {
        let mut file = parse_clouds(path, text)?;
        let mut entry = file.clouds.remove(cloud).ok_or_else(|| {
            let known: Vec<&String> = file.clouds.keys().collect();
            OpenStackConfigError::Invalid {
                field: format!("clouds.{cloud}"),
                rule: format!(
                    "no such cloud in {} (it has: {})",
                    path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    }
                ),
            }
        })?;
        if let Some((spath, stext)) = secure {
            let mut sfile = parse_clouds(spath, stext)?;
            if let Some(s) = sfile.clouds.remove(cloud) {
                entry.merge(s);
            }
        }
        let src = Source::Yaml(cloud.to_string());
        let a = entry.auth.unwrap_or_default();
        let auth_url = a
            .auth_url
            .clone()
            .ok_or_else(|| OpenStackConfigError::Missing {
                field: src.name("auth_url"),
                rule: "Keystone's URL, e.g. http://controller:5000/v3".into(),
            })?;
        check_url(&src.name("auth_url"), &auth_url)?;
        let fields = AuthFields {
            auth_type: entry.auth_type,
            auth_url,
            username: a.username,
            user_id: a.user_id,
            password: a.password,
            user_domain_name: a.user_domain_name,
            user_domain_id: a.user_domain_id,
            project_name: a.project_name.or(a.tenant_name),
            project_id: a.project_id.or(a.tenant_id),
            project_domain_name: a.project_domain_name,
            project_domain_id: a.project_domain_id,
            domain_name: a.domain_name,
            domain_id: a.domain_id,
            app_cred_id: a.application_credential_id,
            app_cred_name: a.application_credential_name,
            app_cred_secret: a.application_credential_secret,
        };
        let auth = fields.into_auth(&src)?;
        let mut config = OpenStackConfig::new(owner, auth);
        config.region = entry.region_name;
        if let Some(i) = entry.interface.or(entry.endpoint_type) {
            config.interface = check_interface(&src.name("interface"), &i)?;
        }
        if let Some(v) = entry.compute_api_version {
            config.compute_microversion =
                check_microversion(&src.name("compute_api_version"), &v.0)?;
        }
        Ok(config)
    }

    /// Checks the values a caller may have changed after building the config.
    pub fn validate(&self) -> Result<(), OpenStackConfigError> {
        if self.owner.trim().is_empty() {
            return Err(OpenStackConfigError::Invalid {
                field: "owner".into(),
                rule: "must not be empty".into(),
            });
        }
        if self.owner.len() > 255 {
            return Err(OpenStackConfigError::Invalid {
                field: "owner".into(),
                rule: format!(
                    "is {} bytes; Nova metadata values hold at most 255",
                    self.owner.len()
                ),
            });
        }
        check_url("auth.auth_url", self.auth.auth_url())?;
        check_interface("interface", &self.interface)?;
        check_microversion("compute_microversion", &self.compute_microversion)?;
        for (field, d) in [
            ("build_timeout", self.build_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if d.is_zero() {
                return Err(OpenStackConfigError::Invalid {
                    field: field.into(),
                    rule: "must be more than 0 s".into(),
                });
            }
        }
        for (field, r) in [
            ("cpu_overcommit", self.cpu_overcommit),
            ("memory_overcommit", self.memory_overcommit),
        ] {
            if !(r.is_finite() && r > 0.0) {
                return Err(OpenStackConfigError::Invalid {
                    field: field.into(),
                    rule: format!("({r}) must be a number above 0"),
                });
            }
        }
        Ok(())
    }
}

/// A configuration the provider cannot use; names the variable or field and the rule.
#[derive(Debug, thiserror::Error)]
pub enum OpenStackConfigError {
    /// A required value is absent.
    #[error("{field} is missing: {rule}")]
    Missing {
        /// The variable or field (`OS_AUTH_URL`, `clouds.lab.auth.auth_url`).
        field: String,
        /// What it must hold.
        rule: String,
    },
    /// A value breaks a rule.
    #[error("{field}: {rule}")]
    Invalid {
        /// The variable or field.
        field: String,
        /// The rule it breaks.
        rule: String,
    },
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A configuration file is not valid YAML of the clouds.yaml shape.
    #[error("{} is not a valid clouds.yaml: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (with line and column).
        message: String,
    },
    /// No clouds.yaml was given or found.
    #[error("no clouds.yaml found (looked at {})", searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NotFound {
        /// Where it was looked for.
        searched: Vec<PathBuf>,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Where a value came from, to name it in errors.
#[derive(Debug, Clone)]
enum Source {
    Env,
    Yaml(String),
}

impl Source {
    /// The name of a value: `OS_<KEY>` or `clouds.<cloud>.auth.<key>`.
    fn name(&self, key: &str) -> String {
        match self {
            Source::Env => format!("OS_{}", key.to_ascii_uppercase()),
            Source::Yaml(cloud) => {
                let top = matches!(
                    key,
                    "auth_type" | "region_name" | "interface" | "compute_api_version"
                );
                if top {
                    format!("clouds.{cloud}.{key}")
                } else {
                    format!("clouds.{cloud}.auth.{key}")
                }
            }
        }
    }
}

/// Auth values from either source, before they are checked.
struct AuthFields {
    auth_type: Option<String>,
    auth_url: String,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    app_cred_id: Option<String>,
    app_cred_name: Option<String>,
    app_cred_secret: Option<String>,
}

impl AuthFields {
    fn into_auth(self, src: &Source) -> Result<AuthConfig, OpenStackConfigError> {
        let app = match self.auth_type.as_deref() {
            Some("password" | "v3password") => false,
            Some("v3applicationcredential" | "applicationcredential") => true,
            Some(other) => {
                return Err(OpenStackConfigError::Invalid {
                    field: src.name("auth_type"),
                    rule: format!("`{other}` must be password or v3applicationcredential"),
                });
            }
            None => self.app_cred_secret.is_some() || self.app_cred_id.is_some(),
        };
        let domain = |name: Option<String>, id: Option<String>| -> NameOrId {
            match (id, name) {
                (Some(id), _) => NameOrId::Id(id),
                (None, Some(name)) => NameOrId::Name(name),
                (None, None) => match (&self.domain_id, &self.domain_name) {
                    (Some(id), _) => NameOrId::Id(id.clone()),
                    (None, Some(n)) => NameOrId::Name(n.clone()),
                    (None, None) => NameOrId::default_domain(),
                },
            }
        };
        let user = match (&self.user_id, &self.username) {
            (Some(id), _) => Some(NameOrId::Id(id.clone())),
            (None, Some(n)) => Some(NameOrId::Name(n.clone())),
            (None, None) => None,
        };
        let user_domain = domain(self.user_domain_name.clone(), self.user_domain_id.clone());
        if app {
            let secret =
                self.app_cred_secret
                    .clone()
                    .ok_or_else(|| OpenStackConfigError::Missing {
                        field: src.name("application_credential_secret"),
                        rule: "application-credential auth needs the credential's secret".into(),
                    })?;
            let credential = match (self.app_cred_id.clone(), self.app_cred_name.clone()) {
                (Some(id), _) => AppCredentialRef::Id(id),
                (None, Some(name)) => AppCredentialRef::Name {
                    name,
                    user: user.ok_or_else(|| OpenStackConfigError::Missing {
                        field: src.name("username"),
                        rule: "an application credential given by name needs its user (username or user_id)".into(),
                    })?,
                    user_domain,
                },
                (None, None) => {
                    return Err(OpenStackConfigError::Missing {
                        field: src.name("application_credential_id"),
                        rule: "application-credential auth needs the credential's id (or its name and user)".into(),
                    });
                }
            };
            return Ok(AuthConfig::ApplicationCredential {
                auth_url: self.auth_url,
                credential,
                secret: Secret::new(secret),
            });
        }
        let user = user.ok_or_else(|| OpenStackConfigError::Missing {
            field: src.name("username"),
            rule: "password auth needs a user (username or user_id), or give an application credential".into(),
        })?;
        let password = self
            .password
            .clone()
            .ok_or_else(|| OpenStackConfigError::Missing {
                field: src.name("password"),
                rule: "password auth needs the user's password".into(),
            })?;
        let project = match (self.project_id.clone(), self.project_name.clone()) {
            (Some(id), _) => NameOrId::Id(id),
            (None, Some(n)) => NameOrId::Name(n),
            (None, None) => {
                return Err(OpenStackConfigError::Missing {
                    field: src.name("project_name"),
                    rule: "Swell needs a project-scoped token: give project_name or project_id"
                        .into(),
                });
            }
        };
        let project_domain = domain(
            self.project_domain_name.clone(),
            self.project_domain_id.clone(),
        );
        Ok(AuthConfig::Password {
            auth_url: self.auth_url,
            user,
            password: Secret::new(password),
            user_domain,
            project,
            project_domain,
        })
    }
}

fn check_url(field: &str, url: &str) -> Result<(), OpenStackConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(OpenStackConfigError::Invalid {
            field: field.into(),
            rule: format!("`{url}` must be an http(s) URL, e.g. http://controller:5000/v3"),
        }),
    }
}

fn check_interface(field: &str, value: &str) -> Result<String, OpenStackConfigError> {
    let v = value.trim().trim_end_matches("URL").to_ascii_lowercase();
    if matches!(v.as_str(), "public" | "internal" | "admin") {
        Ok(v)
    } else {
        Err(OpenStackConfigError::Invalid {
            field: field.into(),
            rule: format!("`{value}` must be public, internal or admin"),
        })
    }
}

fn check_microversion(field: &str, value: &str) -> Result<String, OpenStackConfigError> {
    let v = value.trim();
    let ok = v
        .split_once('.')
        .is_some_and(|(a, b)| a == "2" && !b.is_empty() && b.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(v.to_string())
    } else {
        Err(OpenStackConfigError::Invalid {
            field: field.into(),
            rule: format!("`{value}` must be a Nova 2.x microversion such as 2.79"),
        })
    }
}

/// Where `from_clouds_yaml` looks without an explicit path.
fn find_clouds_yaml(
    env_file: Option<PathBuf>,
    home: Option<PathBuf>,
) -> Result<PathBuf, OpenStackConfigError> {
    let mut searched = Vec::new();
    if let Some(p) = env_file {
        // An explicit variable must point at a file: do not fall back silently.
        if p.is_file() {
            return Ok(p);
        }
        return Err(OpenStackConfigError::Invalid {
            field: "OS_CLIENT_CONFIG_FILE".into(),
            rule: format!("{} is not a file", p.display()),
        });
    }
    searched.push(PathBuf::from("clouds.yaml"));
    if let Some(h) = home {
        searched.push(h.join(".config/openstack/clouds.yaml"));
    }
    searched.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    searched
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or(OpenStackConfigError::NotFound { searched })
}

/// The parts of clouds.yaml Swell reads; other keys are ignored (the file is shared
/// with the `openstack` CLI, which knows many more).
#[derive(Debug, Default, Deserialize)]
struct CloudsFile {
    #[serde(default)]
    clouds: BTreeMap<String, CloudEntry>,
}

#[derive(Debug, Default, Deserialize)]
struct CloudEntry {
    auth: Option<CloudAuth>,
    auth_type: Option<String>,
    region_name: Option<String>,
    interface: Option<String>,
    endpoint_type: Option<String>,
    compute_api_version: Option<VersionText>,
}

/// `compute_api_version: 2.79` is a YAML number; `"2.79"` a string: accept both, as
/// the text written (read as a number, `2.10` would become microversion 2.1).
#[derive(Debug, Clone)]
struct VersionText(String);

impl<'de> Deserialize<'de> for VersionText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = VersionText;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Nova microversion such as 2.79")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<VersionText, E> {
                Ok(VersionText(format!("{v}")))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<VersionText, E> {
                Ok(VersionText(v.to_string()))
            }
        }
        // A plain scalar asked for as a string is its text, digits as written.
        d.deserialize_str(Text)
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
struct CloudAuth {
    auth_url: Option<String>,
    username: Option<String>,
    user_id: Option<String>,
    password: Option<String>,
    user_domain_name: Option<String>,
    user_domain_id: Option<String>,
    project_name: Option<String>,
    project_id: Option<String>,
    tenant_name: Option<String>,
    tenant_id: Option<String>,
    project_domain_name: Option<String>,
    project_domain_id: Option<String>,
    domain_name: Option<String>,
    domain_id: Option<String>,
    application_credential_id: Option<String>,
    application_credential_name: Option<String>,
    application_credential_secret: Option<String>,
}

impl CloudEntry {
    /// Overlays `secure.yaml`'s entry on this one.
    fn merge(&mut self, other: CloudEntry) {
        macro_rules! take {
            ($dst:expr, $src:expr, $($f:ident),*) => { $( if $src.$f.is_some() { $dst.$f = $src.$f; } )* };
        }
        take!(
            self,
            other,
            auth_type,
            region_name,
            interface,
            endpoint_type,
            compute_api_version
        );
        if let Some(o) = other.auth {
            let mut a = self.auth.take().unwrap_or_default();
            take!(
                a,
                o,
                auth_url,
                username,
                user_id,
                password,
                user_domain_name,
                user_domain_id,
                project_name,
                project_id,
                tenant_name,
                tenant_id,
                project_domain_name,
                project_domain_id,
                domain_name,
                domain_id,
                application_credential_id,
                application_credential_name,
                application_credential_secret
            );
            self.auth = Some(a);
        }
    }
}

fn parse_clouds(path: &Path, text: &str) -> Result<CloudsFile, OpenStackConfigError> {
    serde_saphyr::from_str::<CloudsFile>(text).map_err(|e| OpenStackConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<OpenStackConfig, OpenStackConfigError> {
        OpenStackConfig::from_env_vars(
            "srv",
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    const BASE: &[(&str, &str)] = &[
        ("OS_AUTH_URL", "http://127.0.0.1:5000/v3"),
        ("OS_USERNAME", "admin"),
        ("OS_PASSWORD", "adminpass"),
        ("OS_PROJECT_NAME", "admin"),
        ("OS_USER_DOMAIN_NAME", "Default"),
        ("OS_PROJECT_DOMAIN_ID", "default"),
        ("OS_REGION_NAME", "RegionOne"),
        ("HOME", "/root"),
    ];

    fn with(
        extra: &[(&'static str, &'static str)],
        without: &[&str],
    ) -> Vec<(&'static str, &'static str)> {
        let mut v: Vec<(&str, &str)> = BASE
            .iter()
            .filter(|(k, _)| !without.contains(k) && !extra.iter().any(|(e, _)| e == k))
            .copied()
            .collect();
        v.extend_from_slice(extra);
        v
    }

    #[test]
    fn password_from_env() {
        let c = env(BASE).unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::Password {
                auth_url: "http://127.0.0.1:5000/v3".into(),
                user: NameOrId::Name("admin".into()),
                password: Secret::new("adminpass"),
                user_domain: NameOrId::Name("Default".into()),
                project: NameOrId::Name("admin".into()),
                project_domain: NameOrId::Id("default".into()),
            }
        );
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.interface, "public");
        assert_eq!(c.compute_microversion, "2.79");
        assert_eq!(c.owner, "srv");
        // The secret never shows in Debug.
        let debug = format!("{c:?}");
        assert!(!debug.contains("adminpass"), "{debug}");
        assert!(debug.contains("***"));

        let c = env(&with(
            &[
                ("OS_PROJECT_ID", "p-1"),
                ("OS_INTERFACE", "internalURL"),
                ("OS_COMPUTE_API_VERSION", "2.95"),
            ],
            &[
                "OS_PROJECT_NAME",
                "OS_USER_DOMAIN_NAME",
                "OS_PROJECT_DOMAIN_ID",
            ],
        ))
        .unwrap();
        let AuthConfig::Password {
            project,
            user_domain,
            ..
        } = &c.auth
        else {
            panic!("{c:?}")
        };
        assert_eq!(project, &NameOrId::Id("p-1".into()));
        assert_eq!(user_domain, &NameOrId::Id("default".into()));
        assert_eq!(c.interface, "internal");
        assert_eq!(c.compute_microversion, "2.95");
    }

    #[test]
    fn application_credential_from_env() {
        let c = env(&[
            ("OS_AUTH_URL", "https://keystone.example:5000"),
            ("OS_AUTH_TYPE", "v3applicationcredential"),
            ("OS_APPLICATION_CREDENTIAL_ID", "ac1"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
        ])
        .unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::ApplicationCredential {
                auth_url: "https://keystone.example:5000".into(),
                credential: AppCredentialRef::Id("ac1".into()),
                secret: Secret::new("s"),
            }
        );
        // By name: needs the user.
        let e = env(&[
            ("OS_AUTH_URL", "https://keystone.example:5000"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "swell"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
        ])
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "OS_USERNAME is missing: an application credential given by name needs its user (username or user_id)"
        );
        let c = env(&[
            ("OS_AUTH_URL", "https://keystone.example:5000"),
            ("OS_APPLICATION_CREDENTIAL_NAME", "swell"),
            ("OS_APPLICATION_CREDENTIAL_SECRET", "s"),
            ("OS_USERNAME", "ops"),
        ])
        .unwrap();
        assert!(matches!(
            c.auth,
            AuthConfig::ApplicationCredential {
                credential: AppCredentialRef::Name { .. },
                ..
            }
        ));
    }

    #[test]
    fn bad_env_names_the_variable_and_the_rule() {
        let check = |vars: Vec<(&str, &str)>, expect: &str| {
            let e = env(&vars).unwrap_err();
            assert_eq!(e.to_string(), expect);
        };
        check(
            with(&[], &["OS_AUTH_URL"]),
            "OS_AUTH_URL is missing: Keystone's URL, e.g. http://controller:5000/v3",
        );
        check(
            with(&[("OS_AUTH_URL", "controller:5000")], &[]),
            "OS_AUTH_URL: `controller:5000` must be an http(s) URL, e.g. http://controller:5000/v3",
        );
        check(
            with(&[], &["OS_PASSWORD"]),
            "OS_PASSWORD is missing: password auth needs the user's password",
        );
        check(
            with(&[], &["OS_USERNAME"]),
            "OS_USERNAME is missing: password auth needs a user (username or user_id), or give an application credential",
        );
        check(
            with(&[], &["OS_PROJECT_NAME"]),
            "OS_PROJECT_NAME is missing: Swell needs a project-scoped token: give project_name or project_id",
        );
        check(
            with(&[("OS_INTERFACE", "private")], &[]),
            "OS_INTERFACE: `private` must be public, internal or admin",
        );
        check(
            with(&[("OS_COMPUTE_API_VERSION", "3")], &[]),
            "OS_COMPUTE_API_VERSION: `3` must be a Nova 2.x microversion such as 2.79",
        );
        check(
            with(&[("OS_AUTH_TYPE", "token")], &[]),
            "OS_AUTH_TYPE: `token` must be password or v3applicationcredential",
        );
        check(
            vec![
                ("OS_AUTH_URL", "http://k:5000"),
                ("OS_APPLICATION_CREDENTIAL_ID", "x"),
            ],
            "OS_APPLICATION_CREDENTIAL_SECRET is missing: application-credential auth needs the credential's secret",
        );
    }

    const CLOUDS: &str = r#"
clouds:
  lab:
    auth:
      auth_url: http://127.0.0.1:5000/v3
      username: admin
      password: adminpass
      project_name: admin
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
    compute_api_version: 2.79
  prod:
    auth_type: v3applicationcredential
    auth:
      auth_url: https://keystone.example/v3
      application_credential_id: ac1
    region_name: RegionTwo
    interface: internal
"#;

    fn yaml(
        text: &str,
        secure: Option<&str>,
        cloud: &str,
    ) -> Result<OpenStackConfig, OpenStackConfigError> {
        OpenStackConfig::from_clouds_yaml_text(
            "srv",
            Path::new("/etc/openstack/clouds.yaml"),
            text,
            secure.map(|s| (Path::new("/etc/openstack/secure.yaml"), s)),
            cloud,
        )
    }

    #[test]
    fn clouds_yaml() {
        let c = yaml(CLOUDS, None, "lab").unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::Password {
                auth_url: "http://127.0.0.1:5000/v3".into(),
                user: NameOrId::Name("admin".into()),
                password: Secret::new("adminpass"),
                user_domain: NameOrId::Name("Default".into()),
                project: NameOrId::Name("admin".into()),
                project_domain: NameOrId::Name("Default".into()),
            }
        );
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        assert_eq!(c.compute_microversion, "2.79");
        // The secret from secure.yaml, as os-client-config merges it.
        let secure = "clouds:\n  prod:\n    auth:\n      application_credential_secret: s3\n";
        let c = yaml(CLOUDS, Some(secure), "prod").unwrap();
        assert_eq!(
            c.auth,
            AuthConfig::ApplicationCredential {
                auth_url: "https://keystone.example/v3".into(),
                credential: AppCredentialRef::Id("ac1".into()),
                secret: Secret::new("s3"),
            }
        );
        assert_eq!(c.interface, "internal");
        assert_eq!(
            yaml(CLOUDS, None, "prod").unwrap_err().to_string(),
            "clouds.prod.auth.application_credential_secret is missing: application-credential auth needs the credential's secret"
        );
    }

    #[test]
    fn microversions_keep_their_text() {
        // A YAML number: `2.10` is microversion 2.10, not the float 2.1.
        for (written, expect) in [
            ("2.10", "2.10"),
            ("\"2.10\"", "2.10"),
            ("2.79", "2.79"),
            ("'2.100'", "2.100"),
        ] {
            let text = CLOUDS.replace(
                "compute_api_version: 2.79",
                &format!("compute_api_version: {written}"),
            );
            assert_eq!(
                yaml(&text, None, "lab").unwrap().compute_microversion,
                expect,
                "{written}"
            );
        }
    }

    #[test]
    fn bad_clouds_yaml_names_the_field() {
        assert_eq!(
            yaml(CLOUDS, None, "staging").unwrap_err().to_string(),
            "clouds.staging: no such cloud in /etc/openstack/clouds.yaml (it has: lab, prod)"
        );
        let bad = CLOUDS.replace("interface: public", "interface: outside");
        assert_eq!(
            yaml(&bad, None, "lab").unwrap_err().to_string(),
            "clouds.lab.interface: `outside` must be public, internal or admin"
        );
        let bad = CLOUDS.replace("      password: adminpass\n", "");
        assert_eq!(
            yaml(&bad, None, "lab").unwrap_err().to_string(),
            "clouds.lab.auth.password is missing: password auth needs the user's password"
        );
        let e = yaml("clouds: [1, 2", None, "lab").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/openstack/clouds.yaml is not a valid clouds.yaml:"),
            "{e}"
        );
    }

    #[test]
    fn clouds_yaml_file_and_search() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clouds.yaml");
        std::fs::write(&path, CLOUDS).unwrap();
        let c = OpenStackConfig::from_clouds_yaml("srv", Some(&path), "lab").unwrap();
        assert_eq!(c.region.as_deref(), Some("RegionOne"));
        let e =
            OpenStackConfig::from_clouds_yaml("srv", Some(&dir.path().join("nope.yaml")), "lab")
                .unwrap_err();
        assert!(e.to_string().starts_with("cannot read "), "{e}");
        // Search order: OS_CLIENT_CONFIG_FILE, ./clouds.yaml, ~/.config/openstack, /etc.
        assert_eq!(find_clouds_yaml(Some(path.clone()), None).unwrap(), path);
        let e = find_clouds_yaml(Some(dir.path().join("missing.yaml")), None).unwrap_err();
        assert!(e.to_string().starts_with("OS_CLIENT_CONFIG_FILE: "), "{e}");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".config/openstack")).unwrap();
        std::fs::write(home.join(".config/openstack/clouds.yaml"), CLOUDS).unwrap();
        if !Path::new("clouds.yaml").exists() {
            assert_eq!(
                find_clouds_yaml(None, Some(home.clone())).unwrap(),
                home.join(".config/openstack/clouds.yaml")
            );
        }
    }

    #[test]
    fn validate_checks_what_callers_may_change() {
        let mut c =
            OpenStackConfig::new("srv", AuthConfig::password("http://k:5000", "u", "p", "x"));
        assert!(c.validate().is_ok());
        c.cpu_overcommit = 0.0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "cpu_overcommit: (0) must be a number above 0"
        );
        c.cpu_overcommit = 16.0;
        c.build_timeout = Duration::ZERO;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "build_timeout: must be more than 0 s"
        );
        c.build_timeout = Duration::from_secs(300);
        c.owner = " ".into();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "owner: must not be empty"
        );
        c.owner = "x".repeat(256);
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "owner: is 256 bytes; Nova metadata values hold at most 255"
        );
    }
}
