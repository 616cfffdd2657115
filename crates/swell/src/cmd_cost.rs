//! `swell price …` (admin: what an instance-hour of a provider, or of one OpenStack
//! flavor, costs from a time on) and `swell cost` (instance-hours and cost per group
//! over a period, with what the period would have cost at each group's peak size).

use crate::client::Client;
use crate::output::{Format, Output, Table, done, or_dash, print};
use anyhow::Result;
use reqwest::Method;
use serde_json::{Value, json};
use swell_api as api;

/// `swell price …`.
#[derive(clap::Subcommand)]
pub enum PriceCmd {
    /// Set the price of one instance-hour of a provider (or of one of its OpenStack
    /// flavors with --size), from now or from --from on; the earlier price still
    /// applies before that.
    Set {
        /// The provider's name (`process`, `openstack-acme`).
        provider: String,
        /// The price of one instance-hour, a number >= 0 (the operator's currency).
        #[arg(allow_negative_numbers = true)]
        per_hour: f64,
        /// An OpenStack flavor this price is for (default: every size without its own).
        #[arg(long)]
        size: Option<String>,
        /// When it takes effect, RFC 3339 (default: now).
        #[arg(long)]
        from: Option<String>,
    },
    /// List every price, with the time each takes effect.
    List,
    /// Delete a provider's prices (or one flavor's with --size), their whole history.
    Delete {
        /// The provider's name.
        provider: String,
        /// Only this flavor's prices.
        #[arg(long)]
        size: Option<String>,
    },
}

/// `swell cost`.
#[derive(clap::Args)]
pub struct CostArgs {
    /// This tenant's groups (default: the current tenant's; another tenant: admins).
    #[arg(long, conflicts_with = "all")]
    tenant: Option<String>,
    /// Every tenant's groups (admin).
    #[arg(long)]
    all: bool,
    /// Only this group.
    #[arg(long)]
    group: Option<String>,
    /// The period's start, RFC 3339 (default: 30 days before --until).
    #[arg(long)]
    since: Option<String>,
    /// The period's end, RFC 3339 (default: now).
    #[arg(long)]
    until: Option<String>,
    /// The length of the buckets of `-o json` (`1h`, `1d`; default: 1h up to a
    /// two-day period, else 1d).
    #[arg(long)]
    step: Option<String>,
}

/// A query parameter's value, percent-encoded (a time's `+02:00` stays itself).
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn prices_table(list: &[api::Price]) -> Table {
    let mut t = Table::new(&["PROVIDER", "SIZE", "PER HOUR", "FROM"]).wide(&["SET AT"]);
    for p in list {
        t.add_row([
            p.provider.clone(),
            or_dash(p.size.as_ref()),
            p.per_hour.to_string(),
            p.from.clone(),
            p.set_at.clone(),
        ]);
    }
    t
}

/// Two decimals for money and hours in tables (JSON and CSV keep every digit).
fn num(v: f64) -> String {
    format!("{v:.2}")
}

fn cost_table(r: &api::CostReport) -> Table {
    let mut t = Table::new(&[
        "TENANT",
        "GROUP",
        "INSTANCE-HOURS",
        "COST",
        "PEAK",
        "AT PEAK",
        "SAVING",
    ])
    .wide(&["UNPRICED-HOURS", "PROVIDER", "SIZE", "SINCE", "UNTIL"]);
    for g in &r.groups {
        t.add_row([
            g.tenant.clone(),
            g.group.clone(),
            num(g.instance_hours),
            num(g.cost),
            g.peak_instances.to_string(),
            num(g.peak_cost),
            num(g.saving),
            num(g.unpriced_hours),
            g.provider.clone(),
            or_dash(g.size.as_ref()),
            g.since.clone(),
            g.until.clone(),
        ]);
    }
    t.add_row([
        "TOTAL".to_string(),
        "-".into(),
        num(r.total.instance_hours),
        num(r.total.cost),
        "-".into(),
        num(r.total.peak_cost),
        num(r.total.saving),
        num(r.total.unpriced_hours),
        "-".into(),
        "-".into(),
        r.since.clone(),
        r.until.clone(),
    ]);
    t
}

/// Runs `swell price …`.
pub async fn price(c: &Client, cmd: PriceCmd, output: Output) -> Result<()> {
    match cmd {
        PriceCmd::Set {
            provider,
            per_hour,
            size,
            from,
        } => {
            let mut body = json!({"provider": provider, "per_hour": per_hour});
            if let Some(s) = size {
                body["size"] = json!(s);
            }
            if let Some(f) = from {
                body["from"] = json!(f);
            }
            let p: api::Price = c.call(Method::POST, "/v1/prices", Some(&body)).await?;
            print(output, &p, |p| prices_table(std::slice::from_ref(p)))
        }
        PriceCmd::List => {
            let l: api::PriceList = c.get("/v1/prices").await?;
            print(output, &l, |l| prices_table(&l.prices))
        }
        PriceCmd::Delete { provider, size } => {
            let mut path = format!("/v1/prices/{}", encode(&provider));
            if let Some(s) = &size {
                path.push_str(&format!("?size={}", encode(s)));
            }
            let _: Value = c.call(Method::DELETE, &path, None).await?;
            let what = match size {
                Some(s) => format!("{provider} (size {s})"),
                None => provider,
            };
            done(output, &format!("prices of {what} deleted"))
        }
    }
}

/// Runs `swell cost`: a table per group with a total line; `-o json|yaml` the API's
/// report (with the buckets over time); `-o csv` the server's export, one row per group.
pub async fn cost(c: &Client, args: CostArgs, output: Output) -> Result<()> {
    let mut q = Vec::new();
    if args.all {
        q.push("all=true".to_string());
    }
    for (name, value) in [
        ("tenant", &args.tenant),
        ("group", &args.group),
        ("since", &args.since),
        ("until", &args.until),
        ("step", &args.step),
    ] {
        if let Some(v) = value {
            q.push(format!("{name}={}", encode(v)));
        }
    }
    if output.format == Format::Csv {
        q.push("format=csv".to_string());
        let text = c.get_text(&format!("/v1/cost?{}", q.join("&"))).await?;
        let text = match text.split_once('\n') {
            Some((_, rows)) if !output.headers => rows,
            _ => &text,
        };
        out!("{text}");
        return Ok(());
    }
    let report: api::CostReport = c.get(&format!("/v1/cost?{}", q.join("&"))).await?;
    print(output, &report, cost_table)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(
            encode("2026-12-06T10:00:00+02:00"),
            "2026-12-06T10%3A00%3A00%2B02%3A00"
        );
        assert_eq!(encode("web-1_a.b~"), "web-1_a.b~");
        assert_eq!(encode("a b&c"), "a%20b%26c");
    }
}
