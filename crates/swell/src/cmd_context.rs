//! `swell context list|use|delete|current`: the CLI's contexts (see `config.rs`).

use crate::config::{Config, DEFAULT_URL};
use crate::output::{Output, Table, or_dash, print};
use anyhow::{Result, bail};
use serde::Serialize;

/// `swell context …`.
#[derive(clap::Subcommand)]
pub enum ContextCmd {
    /// List the contexts (`*` marks the current one; tokens are never shown).
    List,
    /// Make a context the current one.
    Use {
        /// The context.
        name: String,
    },
    /// Forget a context and its token (the token stays valid on the server: revoke it
    /// first with `swell token revoke` to end it).
    Delete {
        /// The context.
        name: String,
    },
    /// Print the current context's name.
    Current,
}

/// A context as listed: everything but the token.
#[derive(Serialize)]
struct Listed<'a> {
    name: &'a str,
    current: bool,
    server: &'a str,
    user: Option<&'a str>,
    tenant: Option<&'a str>,
    logged_in: bool,
}

/// Runs a context command (`url`: `--url`, the server a migrated token file belongs to).
pub fn run(cmd: ContextCmd, url: Option<&str>, output: Output) -> Result<()> {
    let server = url
        .map(crate::client::server_url)
        .transpose()?
        .unwrap_or_else(|| DEFAULT_URL.to_string());
    let mut config = Config::load(&server)?;
    match cmd {
        ContextCmd::List => {
            let current = config.current_context.as_deref();
            let list: Vec<Listed> = config
                .contexts
                .iter()
                .map(|c| Listed {
                    name: &c.name,
                    current: Some(c.name.as_str()) == current,
                    server: &c.server,
                    user: c.user.as_deref(),
                    tenant: c.tenant.as_deref(),
                    logged_in: c.token.is_some(),
                })
                .collect();
            print(output, &list, |list| {
                let mut t = Table::new(&["CURRENT", "NAME", "SERVER", "USER", "TENANT"])
                    .wide(&["LOGGED IN"]);
                for c in list {
                    t.add_row([
                        if c.current { "*" } else { "" }.to_string(),
                        c.name.to_string(),
                        c.server.to_string(),
                        or_dash(c.user),
                        or_dash(c.tenant),
                        c.logged_in.to_string(),
                    ]);
                }
                t
            })
        }
        ContextCmd::Use { name } => {
            if config.get(&name).is_none() {
                bail!("no context `{name}` (see `swell context list`)");
            }
            config.current_context = Some(name.clone());
            config.save()?;
            crate::output::done(output, &format!("switched to context `{name}`"))
        }
        ContextCmd::Delete { name } => {
            config.delete(&name)?;
            config.save()?;
            crate::output::done(output, &format!("context `{name}` deleted"))
        }
        ContextCmd::Current => match &config.current_context {
            Some(name) => {
                outln!("{name}");
                Ok(())
            }
            None => {
                bail!("no current context (`swell login` or `swell context use NAME` sets one)")
            }
        },
    }
}
