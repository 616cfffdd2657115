//! A private OpenSSH server on loopback for the `ssh` metric source's tests (this crate's
//! and the server's): its own config, host key and authorized key in a directory the
//! caller owns, started as `sshd -D -e -f CONFIG`, stopped (by its pid) when dropped.
//! Needs root (sshd's privilege separation) and Debian's `openssh-server`.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running sshd; stopped when dropped.
pub struct TestSshd {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// A private key it accepts for `root`.
    pub client_key: PathBuf,
    child: Child,
}

/// Generates an unencrypted ed25519 key pair at `path` (and `path.pub`).
pub fn keygen(path: &Path) -> Result<(), String> {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "swell-test", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| format!("ssh-keygen (Debian package openssh-client): {e}"))?;
    if !status.success() {
        return Err(format!("ssh-keygen failed: {status}"));
    }
    Ok(())
}

fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

impl TestSshd {
    /// Starts sshd on a free loopback port with its files in `dir`, and waits (up to
    /// ten seconds) until it greets.
    pub fn start(dir: &Path) -> Result<TestSshd, String> {
        let sshd = sshd_binary()
            .ok_or("sshd not found: install Debian's openssh-server (scripts/test does)")?;
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").map_err(|e| format!("/run/sshd: {e}"))?;
        let host_key = dir.join("host_key");
        let client_key = dir.join("client_key");
        keygen(&host_key)?;
        keygen(&client_key)?;
        let authorized = dir.join("authorized_keys");
        std::fs::copy(dir.join("client_key.pub"), &authorized)
            .map_err(|e| format!("authorized_keys: {e}"))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("a free port: {e}"))?
            .port();
        let config = dir.join("sshd_config");
        let text = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile {}\n\
             AuthorizedKeysFile {}\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
             KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n\
             StrictModes no\nUsePAM no\nPrintMotd no\n",
            host_key.display(),
            dir.join("sshd.pid").display(),
            authorized.display(),
        );
        std::fs::write(&config, text).map_err(|e| format!("sshd_config: {e}"))?;
        let log = std::fs::File::create(dir.join("sshd.log")).map_err(|e| e.to_string())?;
        let child = Command::new(sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting sshd: {e}"))?;
        let mut server = TestSshd {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            client_key,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.greets() {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
                return Err(format!("sshd exited ({status}): {log}"));
            }
            if Instant::now() > deadline {
                return Err("sshd did not greet within 10s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn greets(&self) -> bool {
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let mut banner = [0u8; 8];
        s.read_exact(&mut banner).is_ok() && banner.starts_with(b"SSH-2.0")
    }
}

impl Drop for TestSshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
