//! The `ssh` metric source's reads against a real OpenSSH server on loopback (root,
//! Debian's `openssh-server`), running the real `top`s: procps's and BusyBox's.

use std::time::Duration;
use swell_core::SshSourceSpec;
use swell_providers::ssh::{SshReadError, read_top};
use swell_providers::test_sshd::{TestSshd, keygen};

fn source(sshd: &TestSshd, command: &str) -> SshSourceSpec {
    SshSourceSpec {
        user: "root".into(),
        port: sshd.addr.port(),
        private_key_file: sshd.client_key.display().to_string(),
        command: command.into(),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test]
async fn reads_cpu_and_steal_from_both_tops() {
    let dir = tempfile::tempdir().unwrap();
    let sshd = TestSshd::start(dir.path()).unwrap();
    let known = dir.path().join("known_hosts-i1");

    // procps: cpu and steal; the host key is recorded on first contact.
    let r = read_top(&source(&sshd, "top -bn1"), "127.0.0.1", &known)
        .await
        .unwrap();
    assert!((0.0..=100.0).contains(&r.cpu), "{r:?}");
    assert!(r.steal.is_some_and(|s| (0.0..=100.0).contains(&s)), "{r:?}");
    assert!(
        std::fs::read_to_string(&known)
            .unwrap()
            .contains("ssh-ed25519")
    );

    // BusyBox (CirrOS's top): cpu, no steal. Two frames: the last one counts.
    if std::path::Path::new("/usr/bin/busybox").exists() || which("busybox") {
        let r = read_top(&source(&sshd, "busybox top -bn2 -d1"), "127.0.0.1", &known)
            .await
            .unwrap();
        assert!((0.0..=100.0).contains(&r.cpu), "{r:?}");
        assert_eq!(r.steal, None);
    } else {
        panic!("busybox is missing: install Debian's busybox (scripts/test does)");
    }

    // Failures say what failed.
    let e = read_top(&source(&sshd, "echo hello"), "127.0.0.1", &known)
        .await
        .unwrap_err();
    assert!(matches!(e, SshReadError::Output(_)), "{e}");
    let e = read_top(&source(&sshd, "exit 3"), "127.0.0.1", &known)
        .await
        .unwrap_err();
    assert_eq!(e.to_string(), "`exit 3` exited with 3");

    let stranger = dir.path().join("stranger");
    keygen(&stranger).unwrap();
    let mut s = source(&sshd, "top -bn1");
    s.private_key_file = stranger.display().to_string();
    let e = read_top(&s, "127.0.0.1", &known).await.unwrap_err();
    assert!(e.to_string().contains("Permission denied"), "{e}");

    // A pinned key that no longer matches (another machine at the address) fails.
    let other = dir.path().join("known_hosts-i2");
    let pinned = std::fs::read_to_string(&known).unwrap();
    let host = pinned.split_whitespace().next().unwrap().to_string();
    let foreign = std::fs::read_to_string(dir.path().join("stranger.pub")).unwrap();
    std::fs::write(&other, format!("{host} {foreign}")).unwrap();
    let e = read_top(&source(&sshd, "top -bn1"), "127.0.0.1", &other)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("ssh failed"), "{e}");

    // Nothing listening.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut s = source(&sshd, "top -bn1");
    s.port = port;
    let e = read_top(&s, "127.0.0.1", &known).await.unwrap_err();
    assert!(e.to_string().contains("Connection refused"), "{e}");

    // A command slower than the timeout is cut off.
    let mut s = source(&sshd, "sleep 30");
    s.timeout = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let e = read_top(&s, "127.0.0.1", &known).await.unwrap_err();
    assert!(matches!(e, SshReadError::Timeout(_)), "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

fn which(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .status()
        .is_ok_and(|s| s.success())
}
