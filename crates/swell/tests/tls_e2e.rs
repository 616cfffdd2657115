//! `swell serve --tls-cert/--tls-key` with a self-signed certificate made here, and the
//! CLI trusting it through `SWELL_CA_CERT`: it logs in and calls the API over TLS; without
//! the CA it refuses the server.

mod common;

use common::{ADMIN_PASSWORD, SWELL, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// Stops the server when the test ends, passed or not.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGTERM);
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_over_tls_with_swell_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("api.crt");
    let key = dir.path().join("api.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let _server = Serving(
        std::process::Command::new(SWELL)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env("SWELL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .env_remove("SWELL_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let url = format!("https://127.0.0.1:{port}");
    let trusting = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ck.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = trusting.get(format!("{url}/v1/health")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no answer over TLS:\n{}",
            std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pw = dir.path().join("admin.pw");
    std::fs::write(&pw, ADMIN_PASSWORD).unwrap();
    let cli = |ca: Option<&std::path::Path>, args: &[&str]| {
        let mut cmd = tokio::process::Command::new(SWELL);
        cmd.arg("--url")
            .arg(&url)
            .args(args)
            .env_remove("SWELL_URL")
            .env_remove("SWELL_TOKEN")
            .env_remove("SWELL_CA_CERT")
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null());
        if let Some(ca) = ca {
            cmd.env("SWELL_CA_CERT", ca);
        }
        cmd.output()
    };
    let pw_arg = pw.display().to_string();
    let out = cli(
        Some(&cert),
        &["login", "--user", "admin", "--password-file", &pw_arg],
    )
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    let out = cli(Some(&cert), &["-o", "json", "token", "whoami"])
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("\"admin\""),
        "{out:?}"
    );
    // Without the CA the certificate is not trusted: the CLI fails, and says so.
    let out = cli(None, &["-o", "json", "token", "whoami"]).await.unwrap();
    assert!(!out.status.success(), "{out:?}");
}
