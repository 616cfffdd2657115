//! The identity CLI against a real `swell serve`: tenants, users, roles, `swell login`
//! (token stored 0600, `SWELL_TOKEN` overriding it), `swell token revoke`, `swell audit`.

mod common;

use common::{CliOutput, SWELL, Swell};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;

/// Runs the CLI as a user of this machine: its own config directory, no `SWELL_TOKEN`
/// unless given.
async fn user_cli(s: &Swell, config: &Path, token: Option<&str>, args: &[&str]) -> CliOutput {
    let mut cmd = tokio::process::Command::new(SWELL);
    cmd.arg("--url")
        .arg(&s.url)
        .args(args)
        .env_remove("SWELL_URL")
        .env_remove("SWELL_TOKEN")
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env("XDG_CONFIG_HOME", config)
        .stdin(Stdio::null());
    if let Some(t) = token {
        cmd.env("SWELL_TOKEN", t);
    }
    let out = cmd.output().await.expect("running the swell CLI");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_users_login_token_and_audit() {
    let s = Swell::start().await;
    let t = s
        .cli_json(&["tenant", "create", "acme", "--max-instances", "5"])
        .await;
    assert_eq!(t["name"], "acme");
    assert_eq!(t["effective_quota"]["max_instances"], 5);
    let password = "ann-cli-password-31337";
    let pf = s.write("ann.pw", &format!("{password}\n"));
    let u = s
        .cli_json(&["user", "create", "ann", "--password-file", &pf])
        .await;
    assert_eq!(u["name"], "ann");
    let b = s
        .cli_json(&[
            "user", "grant", "ann", "--tenant", "acme", "--role", "owner",
        ])
        .await;
    assert_eq!(b["role"], "owner");
    let bad = s
        .cli(&["user", "grant", "ann", "--tenant", "acme", "--role", "boss"])
        .await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("unknown role `boss`"), "{bad:?}");

    let config = s.dir.path().join("ann-config");
    let login = user_cli(
        &s,
        &config,
        None,
        &[
            "login",
            "--user",
            "ann",
            "--password-file",
            &pf,
            "--tenant",
            "acme",
        ],
    )
    .await;
    assert!(login.status.success(), "{login:?}");
    let token_file = config.join("swell/token");
    let mode = std::fs::metadata(&token_file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let who = user_cli(&s, &config, None, &["-o", "json", "token", "whoami"])
        .await
        .json();
    assert_eq!(
        (who["tenant"].clone(), who["role"].clone()),
        ("acme".into(), "owner".into())
    );
    let groups = user_cli(&s, &config, None, &["-o", "json", "group", "list"])
        .await
        .json();
    assert_eq!(
        groups["groups"],
        serde_json::json!([]),
        "acme has no groups"
    );
    let refused = user_cli(&s, &config, None, &["tenant", "list"]).await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("403"), "{refused:?}");

    // SWELL_TOKEN overrides the stored token.
    let bogus = user_cli(&s, &config, Some("swt_bogus"), &["group", "list"]).await;
    assert!(bogus.stderr.contains("401"), "{bogus:?}");

    // The admin's grant into acme is in acme's audit log.
    let csv = user_cli(&s, &config, None, &["audit", "--format", "csv"]).await;
    assert!(csv.status.success(), "{csv:?}");
    assert!(
        csv.stdout
            .starts_with("id,at,user,tenant,action,target,source,result\n")
    );
    assert!(
        csv.stdout
            .contains("admin,acme,PUT /v1/tenants/{tenant}/users/{user},/v1/tenants/acme/users/ann,127.0.0.1,200"),
        "{}",
        csv.stdout
    );

    let revoked = user_cli(&s, &config, None, &["token", "revoke"]).await;
    assert!(revoked.status.success(), "{revoked:?}");
    assert!(!token_file.exists(), "the stored token is forgotten");
    let after = user_cli(&s, &config, None, &["group", "list"]).await;
    assert!(after.stderr.contains("401"), "{after:?}");

    let gone = s.cli(&["tenant", "delete", "acme"]).await;
    assert!(gone.status.success(), "{gone:?}");
    assert!(
        !s.logs().contains(password),
        "a password reached the server log"
    );
}
