//! `--wait[=TIMEOUT]` (create, apply, scale, delete) and `swell events --follow`: the
//! CLI polls the API so that a script need not.

use crate::client::Client;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};
use swell_api as api;

/// How often a wait or a follow asks the server again.
const POLL: Duration = Duration::from_millis(500);

/// `--wait[=TIMEOUT]`.
#[derive(clap::Args, Debug, Clone, Copy)]
pub struct WaitArgs {
    /// Wait until the group is ready (as many running instances as its desired
    /// capacity, none pending) or, for a deletion, gone; at most TIMEOUT (default 5m),
    /// then fail saying how many are ready.
    #[arg(
        long,
        value_name = "TIMEOUT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "5m",
        value_parser = crate::parse_duration
    )]
    pub wait: Option<Duration>,
}

/// What a wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Running (or paused) instances match the desired capacity and none is pending.
    Ready,
    /// The group no longer exists.
    Gone,
}

/// Where a group stands, in the words of a progress line or a timeout.
fn progress(g: &api::Group) -> String {
    let n = &g.instances;
    let mut line = format!(
        "{}: {} of {} ready",
        g.name,
        n.running + n.paused,
        g.desired_capacity
    );
    for (count, what) in [
        (n.pending, "pending"),
        (n.draining, "draining"),
        (n.terminating, "terminating"),
    ] {
        if count > 0 {
            line.push_str(&format!(", {count} {what}"));
        }
    }
    if g.deleting {
        line.push_str(", deleting");
    }
    line
}

/// Whether a group has reached `until` (`None`: it does not exist).
fn reached(group: Option<&api::Group>, until: Until) -> bool {
    match (group, until) {
        (None, Until::Gone) => true,
        (Some(_), Until::Gone) | (None, Until::Ready) => false,
        (Some(g), Until::Ready) => {
            !g.deleting
                && g.instances.pending == 0
                && g.instances.running + g.instances.paused == g.desired_capacity
        }
    }
}

/// A status line on stderr, redrawn in place, only when stderr is a terminal.
struct ProgressLine {
    shown: bool,
    terminal: bool,
}

impl ProgressLine {
    fn new() -> ProgressLine {
        use std::io::IsTerminal;
        ProgressLine {
            shown: false,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&mut self, text: &str) {
        if self.terminal {
            eprint!("\r\x1b[2K{text}");
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        if self.shown {
            eprint!("\r\x1b[2K");
            self.shown = false;
        }
    }
}

/// Waits until every group of `groups` has reached `until`, for at most `timeout` in
/// all. At the timeout the error names each group not there yet and how many of its
/// instances are ready.
pub async fn groups(c: &Client, groups: &[(String, Until)], timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let mut line = ProgressLine::new();
    loop {
        let mut waiting = Vec::new();
        for (name, until) in groups {
            let g: Option<api::Group> = c.get_opt(&format!("/v1/groups/{name}")).await?;
            if !reached(g.as_ref(), *until) {
                waiting.push(match (g, until) {
                    (Some(g), Until::Ready) => progress(&g),
                    (Some(g), Until::Gone) => format!("{} still exists", progress(&g)),
                    (None, _) => format!("{name}: no such group"),
                });
            }
        }
        if waiting.is_empty() {
            line.clear();
            return Ok(());
        }
        if Instant::now() >= deadline {
            line.clear();
            bail!(
                "timed out after {} waiting: {}",
                swell_core::duration::format(timeout),
                waiting.join("; ")
            );
        }
        line.show(&format!("waiting: {}", waiting.join("; ")));
        tokio::time::sleep(POLL.min(deadline.saturating_duration_since(Instant::now()))).await;
    }
}

/// Follows a group's events: calls `print` with each batch of new ones (after the id
/// `after`) until the group is gone. Long polling on `GET /v1/groups/{name}/events?after_id=`.
pub async fn follow_events(
    c: &Client,
    group: &str,
    mut after: i64,
    mut print: impl FnMut(&[api::Event]) -> Result<()>,
) -> Result<()> {
    loop {
        tokio::time::sleep(POLL).await;
        let list: Option<api::EventList> = c
            .get_opt(&format!("/v1/groups/{group}/events?after_id={after}"))
            .await?;
        let Some(list) = list else {
            eprintln!("group {group} is gone");
            return Ok(());
        };
        if let Some(last) = list.events.last() {
            after = last.id;
            print(&list.events)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(desired: u32, running: u32, pending: u32, paused: u32) -> api::Group {
        api::Group {
            name: "web".into(),
            tenant: "default".into(),
            spec: serde_json::json!({}),
            desired_capacity: desired,
            instances: api::InstanceCounts {
                pending,
                running,
                draining: 1,
                terminating: 0,
                paused,
            },
            last_scaling_at: None,
            deleting: false,
            load_balancer: None,
            created_at: String::new(),
        }
    }

    #[test]
    fn ready_means_as_many_running_as_desired_and_none_pending() {
        let check = |g: Option<api::Group>, until, want: bool| {
            assert_eq!(reached(g.as_ref(), until), want, "{g:?} {until:?}")
        };
        check(Some(group(2, 2, 0, 0)), Until::Ready, true);
        check(Some(group(2, 1, 0, 1)), Until::Ready, true);
        check(Some(group(2, 2, 1, 0)), Until::Ready, false);
        check(Some(group(3, 2, 0, 0)), Until::Ready, false);
        check(Some(group(1, 2, 0, 0)), Until::Ready, false);
        check(None, Until::Ready, false);
        check(None, Until::Gone, true);
        check(Some(group(0, 0, 0, 0)), Until::Gone, false);
        let mut deleting = group(0, 0, 0, 0);
        deleting.deleting = true;
        check(Some(deleting), Until::Ready, false);
        assert_eq!(
            progress(&group(4, 2, 2, 0)),
            "web: 2 of 4 ready, 2 pending, 1 draining"
        );
    }
}
