//! `--wait[=TIMEOUT]` (create, apply, scale, delete) and `swell events --follow`: the
//! CLI waits on the API so that a script need not (polling for waits, the event stream
//! for `--follow`).

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

/// How long one event stream of `--follow` lasts before the CLI reconnects (the
/// server's `timeout`); the HTTP request may take a little longer.
const STREAM_SECS: u64 = 300;

/// Follows a group's events: calls `print` with each batch of new ones (after the id
/// `after`) until the group is gone. It reads the server's event stream
/// (`GET /v1/groups/{name}/events/stream`), reconnecting with `Last-Event-ID` when it
/// ends, so nothing is lost; a server without the stream is polled instead.
pub async fn follow_events(
    c: &Client,
    group: &str,
    mut after: i64,
    mut print: impl FnMut(&[api::Event]) -> Result<()>,
) -> Result<()> {
    let path = format!("/v1/groups/{group}/events/stream?timeout={STREAM_SECS}");
    let lasts = Duration::from_secs(STREAM_SECS + 30);
    loop {
        let Some(mut resp) = c.open_stream(&path, after, lasts).await? else {
            // 404: the group is gone, or the server predates the stream.
            if c.get_opt::<api::Group>(&format!("/v1/groups/{group}"))
                .await?
                .is_none()
            {
                eprintln!("group {group} is gone");
                return Ok(());
            }
            return poll_events(c, group, after, print).await;
        };
        let mut parser = SseParser::default();
        let mut got_any = false;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(chunk)) => chunk,
                // The end, or a broken connection: reconnect from the last id.
                Ok(None) | Err(_) => break,
            };
            for data in parser.push(&String::from_utf8_lossy(&chunk)) {
                let event: api::Event = serde_json::from_str(&data).map_err(|e| {
                    anyhow::anyhow!("the server sent an event that is not one: {e}")
                })?;
                after = event.id;
                got_any = true;
                print(std::slice::from_ref(&event))?;
                if event.kind == "group_deleted" {
                    eprintln!("group {group} is gone");
                    return Ok(());
                }
            }
        }
        if !got_any {
            // A stream that ended with nothing (a group being deleted, a server
            // stopping): do not reconnect in a tight loop.
            tokio::time::sleep(POLL).await;
        }
    }
}

/// [`follow_events`] by polling `GET /v1/groups/{name}/events?after_id=`: for a server
/// without the event stream.
async fn poll_events(
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

/// Splits a Server-Sent Events body, fed in chunks as they come, into the `data` of its
/// messages; comments (keep-alives) and other fields are skipped.
#[derive(Default)]
struct SseParser {
    buf: String,
}

impl SseParser {
    /// Feeds a chunk; returns the data of the messages it completed.
    fn push(&mut self, chunk: &str) -> Vec<String> {
        self.buf.push_str(chunk);
        // CRLF line ends (a CR split from its LF waits for the next chunk).
        if self.buf.contains('\r') && !self.buf.ends_with('\r') {
            self.buf = self.buf.replace("\r\n", "\n");
        }
        let mut out = Vec::new();
        while let Some(end) = self.buf.find("\n\n") {
            let block: String = self.buf.drain(..end + 2).collect();
            let mut data: Option<String> = None;
            for line in block.lines() {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                if field == "data" {
                    let d = data.get_or_insert_with(String::new);
                    if !d.is_empty() {
                        d.push('\n');
                    }
                    d.push_str(value);
                }
            }
            out.extend(data);
        }
        out
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
            suspended: false,
            suspended_at: None,
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

    #[test]
    fn sse_messages_are_split_whatever_the_chunks() {
        let cases: &[(&[&str], &[&str])] = &[
            (&["id: 1\ndata: {\"a\":1}\n\n"], &["{\"a\":1}"]),
            // Split inside a line and between the two newlines.
            (
                &["id: 1\nda", "ta: x\n", "\nid: 2\ndata: y\n\n"],
                &["x", "y"],
            ),
            // Keep-alive comments carry no data.
            (&[":\n\n", "data: z\n\n", ": ping\n\n"], &["z"]),
            // CRLF line ends (one split between its CR and LF), and a message split
            // over data lines.
            (&["data: a\r\ndata: b\r", "\n\r\n"], &["a\nb"]),
            // An unfinished message is kept for later.
            (&["data: half"], &[]),
        ];
        for (chunks, want) in cases {
            let mut p = SseParser::default();
            let got: Vec<String> = chunks.iter().flat_map(|c| p.push(c)).collect();
            assert_eq!(got, *want, "{chunks:?}");
        }
    }
}
