//! The CLI's contexts, like kubectl's: `$XDG_CONFIG_HOME/swell/config.yaml` (else
//! `~/.config/swell/config.yaml`, mode 0600) holds, per context, a server URL, the user
//! and tenant logged in and their token, and names the current context.

use anyhow::{Context as _, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The server a client command talks to when nothing names one.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7700";

/// The context `swell login` writes when the configuration has none.
const FIRST_CONTEXT: &str = "default";

/// The configuration file's contents.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The context used when neither `--context` nor `SWELL_CONTEXT` names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_context: Option<String>,
    /// Every context, by name.
    #[serde(default)]
    pub contexts: Vec<ContextEntry>,
}

/// One context: a server and who the CLI is on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContextEntry {
    /// Its name.
    pub name: String,
    /// The server's base URL.
    pub server: String,
    /// The user logged in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The tenant the token acts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The token sent as `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// What a client command talks to: the server, the token, and the context they came
/// from (the one `swell login` and `swell token revoke` write).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// The server's base URL.
    pub url: String,
    /// The token to send (`SWELL_TOKEN`, else the context's).
    pub token: Option<String>,
    /// The context in use, if any.
    pub context: Option<String>,
}

/// The configuration directory: `$XDG_CONFIG_HOME/swell`, else `~/.config/swell`.
pub fn dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".config"))
        })?;
    Some(base.join("swell"))
}

/// The configuration file.
pub fn path() -> Result<PathBuf> {
    dir()
        .map(|d| d.join("config.yaml"))
        .context("neither XDG_CONFIG_HOME nor HOME is set: no place for the CLI's configuration")
}

impl Config {
    /// Reads the configuration (empty when there is none). The single token file of
    /// earlier versions (`swell/token`) becomes context `default` on `server` the first
    /// time, and is removed.
    pub fn load(server: &str) -> Result<Config> {
        let path = path()?;
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                serde_saphyr::from_str(&text).with_context(|| format!("reading {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Config::migrate(&path, server),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn migrate(path: &Path, server: &str) -> Result<Config> {
        let old = path.with_file_name("token");
        let Ok(text) = std::fs::read_to_string(&old) else {
            return Ok(Config::default());
        };
        let mut config = Config::default();
        if !text.trim().is_empty() {
            config.contexts.push(ContextEntry {
                name: FIRST_CONTEXT.into(),
                server: server.to_string(),
                user: None,
                tenant: None,
                token: Some(text.trim().to_string()),
            });
            config.current_context = Some(FIRST_CONTEXT.into());
        }
        config.save()?;
        std::fs::remove_file(&old).with_context(|| format!("removing {}", old.display()))?;
        eprintln!(
            "moved the token of {} into context `{FIRST_CONTEXT}` ({server}) of {}",
            old.display(),
            path.display()
        );
        Ok(config)
    }

    /// Writes the configuration with mode 0600 (its directory 0700): it holds tokens.
    pub fn save(&self) -> Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
        let path = path()?;
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating {}", dir.display()))?;
        }
        let text = serde_saphyr::to_string(self).context("writing the configuration")?;
        // Written beside and renamed, so that a reader never sees half a file.
        let tmp = path.with_extension("yaml.tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// The context named `name`.
    pub fn get(&self, name: &str) -> Option<&ContextEntry> {
        self.contexts.iter().find(|c| c.name == name)
    }

    /// The context named `name`, added (on `server`) if absent.
    pub fn entry(&mut self, name: &str, server: &str) -> &mut ContextEntry {
        let i = match self.contexts.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                self.contexts.push(ContextEntry {
                    name: name.to_string(),
                    server: server.to_string(),
                    user: None,
                    tenant: None,
                    token: None,
                });
                self.contexts.len() - 1
            }
        };
        &mut self.contexts[i]
    }

    /// Records a login in context `name` (added if absent): its server, user, tenant
    /// and token.
    pub fn remember(&mut self, name: &str, server: &str, user: &str, tenant: &str, token: String) {
        let entry = self.entry(name, server);
        entry.server = server.to_string();
        entry.user = Some(user.to_string());
        entry.tenant = Some(tenant.to_string());
        entry.token = Some(token);
    }

    /// Removes context `name`; the current context is unset when it was that one.
    pub fn delete(&mut self, name: &str) -> Result<()> {
        let before = self.contexts.len();
        self.contexts.retain(|c| c.name != name);
        if self.contexts.len() == before {
            bail!("no context `{name}` (see `swell context list`)");
        }
        if self.current_context.as_deref() == Some(name) {
            self.current_context = None;
        }
        Ok(())
    }

    /// The context a command uses: `named` (`--context`, `SWELL_CONTEXT`), else, when
    /// `--url` names a server, the first context on that server, else the current one.
    pub fn select(&self, named: Option<&str>, url: Option<&str>) -> Result<Option<&ContextEntry>> {
        if let Some(name) = named {
            return match self.get(name) {
                Some(c) => Ok(Some(c)),
                None => bail!(
                    "--context: no context `{name}` (known: {}; `swell login --context {name}` creates it)",
                    self.names()
                ),
            };
        }
        if let Some(url) = url {
            return Ok(self.contexts.iter().find(|c| c.server == url));
        }
        Ok(self.current_context.as_deref().and_then(|n| self.get(n)))
    }

    /// The name `swell login` writes to: the context [`Config::select`] finds, else
    /// `default` for a first context, else the server's `host:port`.
    pub fn login_name(&self, named: Option<&str>, url: &str, url_given: bool) -> String {
        if let Some(n) = named {
            return n.to_string();
        }
        let found = if url_given {
            self.contexts.iter().find(|c| c.server == url)
        } else {
            self.current_context.as_deref().and_then(|n| self.get(n))
        };
        if let Some(c) = found {
            return c.name.clone();
        }
        if self.get(FIRST_CONTEXT).is_none() {
            return FIRST_CONTEXT.into();
        }
        reqwest::Url::parse(url)
            .ok()
            .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port_or_known_default()?)))
            .unwrap_or_else(|| url.to_string())
    }

    fn names(&self) -> String {
        if self.contexts.is_empty() {
            return "none".into();
        }
        self.contexts
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The server and token a client command uses: `--url`/`SWELL_URL` (else the context's
/// server, else [`DEFAULT_URL`]) and `SWELL_TOKEN` (else the context's token). A token
/// is only taken from a context whose server is the one called, unless the context was
/// named: a token never goes to a server it was not made for by accident. A named
/// context that does not exist is an error, unless `new_context` (`swell login`
/// creates it).
pub fn resolve(url: Option<&str>, context: Option<&str>, new_context: bool) -> Result<Target> {
    let url = url.map(crate::client::server_url).transpose()?;
    let config = Config::load(url.as_deref().unwrap_or(DEFAULT_URL))?;
    let chosen = match context {
        Some(name) if new_context && config.get(name).is_none() => None,
        _ => config.select(context, url.as_deref())?,
    };
    let server = match (&url, chosen) {
        (Some(u), _) => u.clone(),
        (None, Some(c)) => c.server.clone(),
        (None, None) => DEFAULT_URL.to_string(),
    };
    let token = match std::env::var("SWELL_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Some(t.trim().to_string()),
        _ => chosen.and_then(|c| c.token.clone()),
    };
    Ok(Target {
        url: server,
        token,
        context: chosen.map(|c| c.name.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(name: &str, server: &str) -> ContextEntry {
        ContextEntry {
            name: name.into(),
            server: server.into(),
            user: None,
            tenant: None,
            token: Some(format!("tok-{name}")),
        }
    }

    fn config() -> Config {
        Config {
            current_context: Some("lab".into()),
            contexts: vec![ctx("lab", "http://10.0.0.1:7700"), ctx("demo", DEFAULT_URL)],
        }
    }

    #[test]
    fn selection_prefers_the_named_context_then_the_url_then_the_current() {
        let c = config();
        let name = |named, url| c.select(named, url).unwrap().map(|c| c.name.as_str());
        assert_eq!(name(Some("demo"), None), Some("demo"));
        assert_eq!(name(Some("demo"), Some("http://x:1")), Some("demo"));
        assert_eq!(name(None, Some(DEFAULT_URL)), Some("demo"));
        assert_eq!(name(None, Some("http://elsewhere:7700")), None);
        assert_eq!(name(None, None), Some("lab"));
        let err = c.select(Some("nope"), None).unwrap_err().to_string();
        assert!(
            err.contains("no context `nope`") && err.contains("lab, demo"),
            "{err}"
        );
        assert_eq!(Config::default().select(None, None).unwrap(), None);
    }

    #[test]
    fn login_names_the_context_it_writes() {
        let c = config();
        assert_eq!(c.login_name(Some("x"), DEFAULT_URL, false), "x");
        assert_eq!(c.login_name(None, DEFAULT_URL, true), "demo");
        assert_eq!(c.login_name(None, DEFAULT_URL, false), "lab");
        assert_eq!(
            Config::default().login_name(None, DEFAULT_URL, true),
            "default"
        );
        let mut c = config();
        c.contexts.push(ctx("default", "http://a:1"));
        assert_eq!(
            c.login_name(None, "http://b.example:7850", true),
            "b.example:7850"
        );
    }

    #[test]
    fn deleting_the_current_context_unsets_it() {
        let mut c = config();
        c.delete("lab").unwrap();
        assert_eq!(c.current_context, None);
        assert_eq!(c.contexts.len(), 1);
        assert!(
            c.delete("lab")
                .unwrap_err()
                .to_string()
                .contains("no context `lab`")
        );
    }

    #[test]
    fn the_file_round_trips_and_refuses_unknown_fields() {
        let c = config();
        let text = serde_saphyr::to_string(&c).unwrap();
        assert_eq!(serde_saphyr::from_str::<Config>(&text).unwrap(), c);
        assert!(serde_saphyr::from_str::<Config>("contexts: []\ncurent_context: x\n").is_err());
    }
}
