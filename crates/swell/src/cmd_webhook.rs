//! `swell webhook …`: a tenant's webhooks (its events `POST`ed, signed, to a URL) and
//! their delivery log; `swell alerts token GROUP`: the token an Alertmanager presents
//! to the group's alert receiver. Secrets are read from files, never from the command
//! line (`ps` would show them), and never printed.

use crate::client::Client;
use crate::output::{Output, Table, done, or_dash, print};
use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};
use std::path::PathBuf;
use swell_api as api;

/// `swell webhook …`.
#[derive(clap::Subcommand)]
pub enum WebhookCmd {
    /// Make a webhook (owner): the tenant's events, or one group's, are `POST`ed to the
    /// URL as JSON, signed with `X-Swell-Signature: sha256=HMAC` under the secret.
    Create {
        /// Where events are sent (`https://hooks.example.com/swell`). (Not `url`:
        /// that is the global `--url` of the server.)
        #[arg(value_name = "URL")]
        target: String,
        /// Only this group's events (default: every group of the tenant).
        #[arg(long)]
        group: Option<String>,
        /// Only these event kinds (`scale_out,instance_failed`; default: every kind).
        #[arg(long = "events", value_delimiter = ',', value_name = "KIND")]
        events: Vec<String>,
        /// A file holding the signing secret, 16 to 256 characters (`-`: standard input).
        #[arg(long)]
        secret_file: PathBuf,
    },
    /// List the tenant's webhooks.
    List,
    /// Delete a webhook and its delivery log.
    Delete {
        /// Its id (`wh-…`).
        id: String,
    },
    /// Show a webhook's delivery log: every attempt, oldest first.
    Deliveries {
        /// Its id (`wh-…`).
        id: String,
        /// At most this many (the newest; default 100).
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `swell alerts …`.
#[derive(clap::Subcommand)]
pub enum AlertsCmd {
    /// Make the group's alert token (member), printed once: Alertmanager presents it to
    /// `POST /v1/groups/GROUP/alerts`. The previous token stops working.
    Token {
        /// The group.
        group: String,
    },
}

fn webhooks_table(list: &[api::Webhook]) -> Table {
    let mut t = Table::new(&["ID", "GROUP", "URL", "EVENTS"]).wide(&["SECRET", "CREATED"]);
    for w in list {
        t.add_row([
            w.id.clone(),
            or_dash(w.group.as_ref()),
            w.url.clone(),
            if w.events.is_empty() {
                "all".to_string()
            } else {
                w.events.join(",")
            },
            w.secret.clone(),
            w.created_at.clone(),
        ]);
    }
    t
}

fn deliveries_table(list: &[api::WebhookDelivery]) -> Table {
    let mut t = Table::new(&[
        "AT", "EVENT", "GROUP", "ATTEMPT", "OUTCOME", "STATUS", "ERROR",
    ]);
    for d in list {
        t.add_row([
            d.at.clone(),
            d.event_id.to_string(),
            d.group.clone(),
            d.attempt.to_string(),
            d.outcome.clone(),
            or_dash(d.status_code),
            or_dash(d.error.as_ref()),
        ]);
    }
    t
}

/// Runs `swell webhook …`.
pub async fn run(c: &Client, cmd: WebhookCmd, output: Output) -> Result<()> {
    match cmd {
        WebhookCmd::Create {
            target,
            group,
            events,
            secret_file,
        } => {
            let mut body = json!({"url": target, "events": events, "secret": crate::cmd_provider::read_secret(&secret_file)?});
            if let Some(g) = group {
                body["group"] = json!(g);
            }
            let w: api::Webhook = c.call(Method::POST, "/v1/webhooks", Some(&body)).await?;
            print(output, &w, |w| webhooks_table(std::slice::from_ref(w)))
        }
        WebhookCmd::List => {
            let l: api::WebhookList = c.get("/v1/webhooks").await?;
            print(output, &l, |l| webhooks_table(&l.webhooks))
        }
        WebhookCmd::Delete { id } => {
            let _: Value = c
                .call(Method::DELETE, &format!("/v1/webhooks/{id}"), None)
                .await?;
            done(output, &format!("webhook {id} deleted"))
        }
        WebhookCmd::Deliveries { id, limit } => {
            let mut path = format!("/v1/webhooks/{id}/deliveries");
            if let Some(n) = limit {
                path.push_str(&format!("?limit={n}"));
            }
            let l: api::WebhookDeliveryList = c.get(&path).await?;
            print(output, &l, |l| deliveries_table(&l.deliveries))
        }
    }
}

/// Runs `swell alerts …`.
pub async fn run_alerts(c: &Client, cmd: AlertsCmd, output: Output) -> Result<()> {
    match cmd {
        AlertsCmd::Token { group } => {
            let t: api::AlertToken = c
                .call(
                    Method::POST,
                    &format!("/v1/groups/{group}/alerts/token"),
                    None,
                )
                .await?;
            print(output, &t, |t| {
                let mut table = Table::new(&["GROUP", "TOKEN"]);
                table.add_row([t.group.clone(), t.token.clone()]);
                table
            })
        }
    }
}
