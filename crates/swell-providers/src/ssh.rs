//! The `ssh` metric source's southbound half: runs the source's command (`top -bn1`) on
//! one instance with the system's OpenSSH client and parses the output
//! ([`swell_core::top::parse_top`]).
//!
//! The client runs with no configuration file (`-F /dev/null`), no agent, no password
//! prompt (`BatchMode`), only the source's key, an empty environment (no locale sent,
//! so `top` prints `C` numbers), and the whole read bounded by the source's `timeout`
//! (the process is killed past it). Host keys are checked: each instance has its own
//! known_hosts file, filled on first contact (`StrictHostKeyChecking=accept-new`:
//! Swell created the instance a moment ago) and enforced after, so a changed key fails
//! the reads of that instance, while an address reused by a later instance (a recycled
//! floating IP) starts with its own, empty file.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use swell_core::SshSourceSpec;
use swell_core::top::{MAX_TOP_OUTPUT, TopCpu, TopError, parse_top};
use tokio::io::AsyncReadExt;

/// Why one read failed.
#[derive(Debug, thiserror::Error)]
pub enum SshReadError {
    /// The `ssh` client could not be started.
    #[error("cannot run ssh: {0}")]
    Spawn(#[source] std::io::Error),
    /// The read took longer than the source's timeout.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// ssh failed (connection refused, authentication, host key) or the command did.
    #[error("{0}")]
    Failed(String),
    /// The command's output holds no usable `top` summary.
    #[error("unreadable output: {0}")]
    Output(#[from] TopError),
}

/// Runs `source.command` on `host` over SSH and reads its CPU summary. `known_hosts`
/// is the instance's own known_hosts file (created on first contact).
pub async fn read_top(
    source: &SshSourceSpec,
    host: &str,
    known_hosts: &Path,
) -> Result<TopCpu, SshReadError> {
    match tokio::time::timeout(source.timeout, run(source, host, known_hosts)).await {
        Ok(result) => result,
        Err(_) => Err(SshReadError::Timeout(source.timeout)),
    }
}

async fn run(
    source: &SshSourceSpec,
    host: &str,
    known_hosts: &Path,
) -> Result<TopCpu, SshReadError> {
    let connect_secs = source.timeout.as_secs().max(1).to_string();
    let mut cmd = tokio::process::Command::new("ssh");
    cmd.env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .args(["-F", "/dev/null", "-T", "-n"])
        .args(["-o", "BatchMode=yes"])
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none"])
        .args(["-o", "LogLevel=ERROR"])
        .args(["-o", &format!("ConnectTimeout={connect_secs}")])
        .arg("-i")
        .arg(&source.private_key_file)
        .args(["-p", &source.port.to_string(), "-l", &source.user])
        .arg(host)
        .arg(&source.command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(SshReadError::Spawn)?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(SshReadError::Failed("ssh's output is not piped".into()));
    };
    // Bounded reads: an instance cannot make the server hold more than this.
    let mut out = Vec::new();
    let mut err = Vec::new();
    let mut stdout = stdout.take(MAX_TOP_OUTPUT as u64);
    let mut stderr = stderr.take(4096);
    let (r1, r2) = tokio::join!(stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    if out.len() >= MAX_TOP_OUTPUT {
        let _ = child.kill().await;
    }
    let status = child.wait().await.map_err(SshReadError::Spawn)?;
    r1.and(r2).map_err(SshReadError::Spawn)?;
    if !status.success() {
        let stderr = String::from_utf8_lossy(&err);
        let last = stderr
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty())
            .unwrap_or("");
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| c.to_string());
        let what = if status.code() == Some(255) {
            format!("ssh failed: {last}")
        } else {
            format!("`{}` exited with {code}: {last}", source.command)
        };
        return Err(SshReadError::Failed(
            what.trim_end_matches(": ").to_string(),
        ));
    }
    Ok(parse_top(&String::from_utf8_lossy(&out))?)
}

/// The host part of an instance's address (`127.0.0.1:8080` → `127.0.0.1`,
/// `[::1]:80` → `::1`, a bare IP as is); `None` when it is not an IP address.
pub fn host_of(address: &str) -> Option<String> {
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Some(sa.ip().to_string());
    }
    address
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_addresses() {
        assert_eq!(host_of("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:80").as_deref(), Some("::1"));
        assert_eq!(host_of("172.24.4.223").as_deref(), Some("172.24.4.223"));
        assert_eq!(host_of("-oProxyCommand=x"), None);
        assert_eq!(host_of(""), None);
    }
}
