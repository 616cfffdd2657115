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
    let config_file = config.join("swell/config.yaml");
    let mode = std::fs::metadata(&config_file)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let stored = std::fs::read_to_string(&config_file).unwrap();
    assert!(stored.contains("token: swt_"), "{stored}");
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
    let stored = std::fs::read_to_string(&config_file).unwrap();
    assert!(
        !stored.contains("token:"),
        "the stored token is forgotten: {stored}"
    );
    let after = user_cli(&s, &config, None, &["group", "list"]).await;
    assert!(after.stderr.contains("401"), "{after:?}");

    let gone = s.cli(&["tenant", "delete", "acme"]).await;
    assert!(gone.status.success(), "{gone:?}");
    assert!(
        !s.logs().contains(password),
        "a password reached the server log"
    );
}

/// Runs the CLI with only a config directory: no `--url`, no `SWELL_TOKEN`, so that the
/// server and the token come from the contexts.
async fn context_cli(config: &Path, env: &[(&str, &str)], args: &[&str]) -> CliOutput {
    let out = tokio::process::Command::new(SWELL)
        .args(args)
        .env_remove("SWELL_URL")
        .env_remove("SWELL_TOKEN")
        .env_remove("SWELL_CONTEXT")
        .env("XDG_CONFIG_HOME", config)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .expect("running the swell CLI");
    CliOutput {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contexts_keep_a_server_user_and_token_each() {
    let s = Swell::start().await;
    s.cli_json(&["tenant", "create", "acme"]).await;
    let pf = s.write("ann.pw", "ann-context-password-4242\n");
    s.cli_json(&["user", "create", "ann", "--password-file", &pf])
        .await;
    s.cli_json(&[
        "user", "grant", "ann", "--tenant", "acme", "--role", "viewer",
    ])
    .await;
    let admin_pf = s.write("admin.pw", common::ADMIN_PASSWORD);
    let config = s.dir.path().join("contexts");
    for (context, user, file, tenant) in [
        ("ops", "admin", &admin_pf, "default"),
        ("acme", "ann", &pf, "acme"),
    ] {
        let login = context_cli(
            &config,
            &[],
            &[
                "--url",
                &s.url,
                "--context",
                context,
                "login",
                "--user",
                user,
                "--password-file",
                file,
                "--tenant",
                tenant,
            ],
        )
        .await;
        assert!(login.status.success(), "{login:#?}");
        assert!(
            login.stderr.contains(&format!("context `{context}`")),
            "{login:#?}"
        );
    }
    // The last login is the current context; its server and token need no flag.
    let whoami = |env: &'static [(&'static str, &'static str)], args: &'static [&'static str]| {
        let config = config.clone();
        async move {
            let mut all = vec!["-o", "json"];
            all.extend_from_slice(args);
            all.extend(["token", "whoami"]);
            context_cli(&config, env, &all).await.json()["tenant"].clone()
        }
    };
    assert_eq!(whoami(&[], &[]).await, "acme");
    assert_eq!(whoami(&[], &["--context", "ops"]).await, "default");
    assert_eq!(whoami(&[("SWELL_CONTEXT", "ops")], &[]).await, "default");

    let list = context_cli(&config, &[], &["-o", "json", "context", "list"])
        .await
        .json();
    let names: Vec<(&str, bool, &str)> = list
        .as_array()
        .expect("a list")
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap_or_default(),
                c["current"].as_bool().unwrap_or_default(),
                c["user"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(names, [("ops", false, "admin"), ("acme", true, "ann")]);
    assert!(
        !list.to_string().contains("swt_"),
        "no token is listed: {list}"
    );

    let used = context_cli(&config, &[], &["context", "use", "ops"]).await;
    assert!(used.status.success(), "{used:#?}");
    let current = context_cli(&config, &[], &["context", "current"]).await;
    assert_eq!(current.stdout, "ops\n");
    assert_eq!(whoami(&[], &[]).await, "default");
    let deleted = context_cli(&config, &[], &["context", "delete", "ops"]).await;
    assert!(deleted.status.success(), "{deleted:#?}");
    let none = context_cli(&config, &[], &["context", "current"]).await;
    assert!(
        !none.status.success() && none.stderr.contains("no current context"),
        "{none:#?}"
    );
    let unknown = context_cli(&config, &[], &["--context", "ops", "group", "list"]).await;
    assert!(unknown.stderr.contains("no context `ops`"), "{unknown:#?}");
    // The token file of earlier versions becomes context `default` on first use.
    let old = s.dir.path().join("old-config");
    std::fs::create_dir_all(old.join("swell")).unwrap();
    std::fs::write(old.join("swell/token"), format!("{}\n", s.token)).unwrap();
    let migrated = context_cli(
        &old,
        &[],
        &["--url", &s.url, "-o", "json", "token", "whoami"],
    )
    .await;
    assert_eq!(migrated.json()["principal"], "admin", "{migrated:#?}");
    assert!(
        migrated.stderr.contains("into context `default`"),
        "{migrated:#?}"
    );
    assert!(!old.join("swell/token").exists());
    let mode = std::fs::metadata(old.join("swell/config.yaml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let again = context_cli(&old, &[], &["-o", "json", "token", "whoami"]).await;
    assert_eq!(
        again.json()["principal"],
        "admin",
        "the migrated context is current"
    );
}

/// `swell login` without --password-file asks on the terminal without echo (run under
/// `script`, which gives it a pseudo-terminal); without a terminal it says what to give.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_prompts_for_the_password_without_echo() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Swell::start().await;
    let config = s.dir.path().join("tty-config");
    let no_tty = context_cli(&config, &[], &["--url", &s.url, "login", "--user", "admin"]).await;
    assert!(!no_tty.status.success());
    assert!(no_tty.stderr.contains("--password-file"), "{no_tty:#?}");

    let command = format!(
        "{SWELL} --url {} login --user admin --tenant default",
        s.url
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("SWELL_TOKEN")
        .env_remove("SWELL_PASSWORD_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut screen = Vec::new();
    // The password is typed only once the prompt shows (echo is then off).
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&screen).contains("password of admin:") {
            let n = stdout.read(&mut buf).await.expect("reading the terminal");
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&screen));
            screen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the prompt within 30s");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin
        .write_all(format!("{}\n", common::ADMIN_PASSWORD).as_bytes())
        .await
        .expect("typing");
    stdout.read_to_end(&mut screen).await.expect("reading");
    let status = child.wait().await.expect("script ends");
    let screen = String::from_utf8_lossy(&screen);
    assert!(status.success(), "{screen}");
    assert!(screen.contains("logged in as admin"), "{screen}");
    assert!(
        !screen.contains(common::ADMIN_PASSWORD),
        "the password was echoed: {screen}"
    );
    let whoami = context_cli(&config, &[], &["-o", "json", "token", "whoami"]).await;
    assert_eq!(whoami.json()["principal"], "admin");
}

/// Ctrl-C at the password prompt cancels the login and leaves the terminal as it was
/// (echo, line editing and signals back on), as `stty -a` run after it in the same
/// pseudo-terminal shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_the_password_prompt_restores_the_terminal() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Swell::start().await;
    let config = s.dir.path().join("tty-config");
    let command = format!(
        "{SWELL} --url {} login --user admin --tenant default; echo status=$?; stty -a",
        s.url
    );
    let mut child = tokio::process::Command::new("script")
        .args(["-q", "-c", &command, "/dev/null"])
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("SWELL_TOKEN")
        .env_remove("SWELL_PASSWORD_FILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("script (util-linux) runs");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut screen = Vec::new();
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        let mut buf = [0u8; 256];
        while !String::from_utf8_lossy(&screen).contains("password of admin:") {
            let n = stdout.read(&mut buf).await.expect("reading the terminal");
            assert!(n > 0, "no prompt: {}", String::from_utf8_lossy(&screen));
            screen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the prompt within 30s");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"half-typed\x03").await.expect("typing");
    tokio::time::timeout(std::time::Duration::from_secs(30), async {
        stdout.read_to_end(&mut screen).await.expect("reading");
        child.wait().await.expect("script ends")
    })
    .await
    .expect("the login ends within 30s of Ctrl-C");
    let screen = String::from_utf8_lossy(&screen);
    assert!(
        screen.contains("cancelled at the password prompt"),
        "{screen}"
    );
    assert!(screen.contains("status=1"), "{screen}");
    assert!(
        !screen.contains("half-typed"),
        "the typing was echoed: {screen}"
    );
    let flags: Vec<&str> = screen.split_whitespace().collect();
    for flag in ["echo", "icanon", "isig"] {
        assert!(flags.contains(&flag), "{flag} is back on: {screen}");
    }
    let whoami = context_cli(&config, &[], &["-o", "json", "token", "whoami"]).await;
    assert!(!whoami.status.success(), "not logged in: {whoami:#?}");
}

/// A fresh `swell serve` (no password given) logs this machine's CLI in: the client
/// commands work at once, with no flag and no token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_server_logs_the_cli_in_through_a_context() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let port = common::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let mut server = tokio::process::Command::new(SWELL)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("SWELL_ADMIN_PASSWORD")
        .env_remove("SWELL_URL")
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("swell serve");
    let serving = common::eventually(
        "the server to store its context",
        std::time::Duration::from_secs(30),
        || {
            let config = config.clone();
            async move {
                if config.join("swell/config.yaml").exists() {
                    Ok(())
                } else {
                    Err("no configuration yet".to_string())
                }
            }
        },
    );
    serving.await;
    let out = context_cli(
        &config,
        &[("SWELL_URL", url.as_str())],
        &["-o", "json", "token", "whoami"],
    )
    .await;
    assert_eq!(out.json()["principal"], "admin");
    // No --url either: the current context names the server.
    let out = context_cli(&config, &[], &["-o", "json", "group", "list"]).await;
    assert_eq!(out.json()["groups"], serde_json::json!([]));
    let _ = server.start_kill();
    let _ = server.wait().await;
}

/// `swell demo` writes a context of its own (`demo`) that reaches its server while it
/// runs, leaves the current context as it was, and removes its own at the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_writes_its_own_context_and_keeps_the_current_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(config.join("swell")).unwrap();
    let mine = "current_context: mine\ncontexts:\n- name: mine\n  server: http://127.0.0.1:9\n  token: swt_mine\n";
    std::fs::write(config.join("swell/config.yaml"), mine).unwrap();
    let demo = tokio::process::Command::new(SWELL)
        .args(["demo", "--fast", "--json"])
        .env("XDG_CONFIG_HOME", &config)
        .env_remove("SWELL_CONTEXT")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("swell demo");
    let file = config.join("swell/config.yaml");
    common::eventually(
        "the demo's context",
        std::time::Duration::from_secs(60),
        || {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            async move {
                if text.contains("name: demo") {
                    Ok(())
                } else {
                    Err(text)
                }
            }
        },
    )
    .await;
    let during = std::fs::read_to_string(&file).unwrap();
    assert!(during.contains("current_context: mine"), "{during}");
    let groups = context_cli(
        &config,
        &[],
        &["--context", "demo", "-o", "json", "group", "list"],
    )
    .await;
    assert_eq!(groups.json()["groups"][0]["name"], "lab");

    let out = tokio::time::timeout(std::time::Duration::from_secs(300), demo.wait_with_output())
        .await
        .expect("the demo ends within 5 minutes")
        .expect("the demo runs");
    assert!(out.status.success(), "{out:?}");
    let summary: serde_json::Value = serde_json::from_str(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .unwrap_or_default(),
    )
    .expect("the demo's JSON summary");
    assert!(summary["scale_out_events"].as_u64() >= Some(1), "{summary}");
    let yaml = |text: &str| -> serde_json::Value { serde_saphyr::from_str(text).expect("YAML") };
    assert_eq!(
        yaml(&std::fs::read_to_string(&file).unwrap()),
        yaml(mine),
        "the demo's context is gone, the rest as it was"
    );
}
