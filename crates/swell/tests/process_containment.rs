//! The process provider's containment, end to end through a real `swell serve`: no
//! secret of the server's environment reaches an instance, an instance works in its
//! own directory, and with `--instance-user` it cannot read or write the server's
//! files.

mod common;

use common::*;
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::Duration;

/// A never-scaling group of one instance running `script` under `sh -c`.
fn shell_group(name: &str, script: &str) -> Value {
    json!({
        "name": name,
        "provider": "process",
        "template": { "command": ["sh", "-c", script] },
        "min": 1,
        "max": 1,
        "cooldown": "3s",
        "warmup": "0s",
        "evaluation_interval": "1s",
        "metrics_interval": "500ms",
        "policies": never_scale(),
    })
}

/// Creates the group and waits for its one instance; that instance's directory.
async fn one_instance(s: &Swell, group: &Value) -> PathBuf {
    let name = group["name"].as_str().expect("a name");
    let a = s
        .request(
            reqwest::Method::POST,
            "/v1/groups",
            Some(&group.to_string()),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let list = wait_running(s, name, 1, Duration::from_secs(30)).await;
    let id = list[0]["id"].as_str().expect("an id");
    s.data_dir().join("instances").join(id)
}

/// The file an instance writes, once complete (it ends with a newline).
async fn written(path: PathBuf) -> String {
    eventually(
        &format!("{} to be written", path.display()),
        Duration::from_secs(15),
        || {
            let path = path.clone();
            async move {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                if text.ends_with('\n') {
                    Ok(text)
                } else {
                    Err(text)
                }
            }
        },
    )
    .await
}

#[tokio::test]
async fn no_server_secret_reaches_an_instance() {
    let key = "a".repeat(64);
    let s = Swell::start_with(
        &[],
        &[
            ("SWELL_SECRET_KEY", key.as_str()),
            ("OS_PASSWORD", "os-password-canary"),
            ("OS_USERNAME", "os-user-canary"),
            ("AWS_SECRET_ACCESS_KEY", "aws-canary"),
        ],
    )
    .await;
    let dir = one_instance(
        &s,
        &shell_group(
            "envy",
            "env > env.txt; pwd > pwd.txt; echo done > done.txt; exec sleep 1000",
        ),
    )
    .await;
    written(dir.join("done.txt")).await;
    let env =
        std::fs::read_to_string(dir.join("env.txt")).expect("env.txt in the instance's directory");
    for secret in [
        ADMIN_PASSWORD,
        key.as_str(),
        "os-password-canary",
        "os-user-canary",
        "aws-canary",
    ] {
        assert!(!env.contains(secret), "{secret} leaked: {env}");
    }
    let mut keys: Vec<&str> = env
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .filter(|k| !matches!(*k, "PWD" | "SHLVL" | "_" | "OLDPWD"))
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "HOME",
            "PATH",
            "PORT",
            "SWELL_GROUP",
            "SWELL_INSTANCE_ID",
            "SWELL_OWNER",
            "SWELL_TENANT"
        ],
        "{env}"
    );
    let pwd = std::fs::read_to_string(dir.join("pwd.txt")).unwrap();
    assert_eq!(
        pwd.trim_end(),
        std::fs::canonicalize(&dir).unwrap().to_str().unwrap()
    );
    assert!(
        env.contains(&format!("HOME={}\n", dir.canonicalize().unwrap().display())),
        "{env}"
    );
}

#[tokio::test]
async fn an_instance_user_cannot_read_the_key_or_write_outside_its_directory() {
    // Unknown users, and root, are refused at start with a clear error.
    for (user, says) in [
        ("swell-no-such-user", "does not exist"),
        ("root", "unprivileged"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(SWELL)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--instance-user",
                user,
                "--data-dir",
            ])
            .arg(dir.path().join("data"))
            .env("SWELL_ADMIN_PASSWORD", ADMIN_PASSWORD)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--instance-user") && stderr.contains(says),
            "{stderr}"
        );
    }

    let s = Swell::start_with(&["--instance-user", "nobody"], &[]).await;
    let data = s.data_dir();
    let key_file = data.join("secret.key");
    let key = std::fs::read(&key_file).expect("the generated key");
    let dir = one_instance(
        &s,
        &shell_group(
            "jailed",
            "id -u > uid.txt; cat ../../secret.key > stolen.txt; \
             cat ../../swell.db > db.txt; echo owned > ../../pwned; \
             echo owned > ../pwned; echo done > done.txt; exec sleep 1000",
        ),
    )
    .await;
    written(dir.join("done.txt")).await;
    assert_eq!(
        std::fs::read_to_string(dir.join("uid.txt")).unwrap().trim(),
        "65534"
    );
    let stolen = std::fs::read(dir.join("stolen.txt")).unwrap_or_default();
    assert!(stolen.is_empty(), "read {} bytes of the key", stolen.len());
    assert!(!key.is_empty());
    let db = std::fs::read(dir.join("db.txt")).unwrap_or_default();
    assert!(db.is_empty(), "read {} bytes of the store", db.len());
    assert!(!data.join("pwned").exists());
    assert!(!data.join("instances").join("pwned").exists());
}
