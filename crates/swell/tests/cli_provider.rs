//! `swell provider …` against a real `swell serve` (the real binary, a real SQLite
//! store): an admin defines a docker provider by its engines and a tenant-private
//! OpenStack provider with its application credential read from a file; the secret is
//! never printed nor logged; grants name definitions; a definition goes when unused.

mod common;

use common::Swell;
use serde_json::json;

const SECRET: &str = "cli-app-cred-secret-9Qx7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_define_list_and_delete_providers_from_the_cli() {
    let s = Swell::start().await;
    s.cli_json(&["tenant", "create", "acme"]).await;

    let rack = s
        .cli_json(&[
            "provider",
            "create",
            "rack1",
            "--kind",
            "docker",
            "--engine",
            "local=unix:///var/run/docker.sock",
        ])
        .await;
    assert_eq!(rack["kind"], "docker");
    assert_eq!(rack["tenant"], serde_json::Value::Null);
    assert_eq!(
        rack["config"]["engines"],
        json!([{"name": "local", "endpoint": "unix:///var/run/docker.sock"}])
    );

    let secret_file = s.write("app-cred.secret", &format!("{SECRET}\n"));
    let os = s
        .cli_json(&[
            "provider",
            "create",
            "os-acme",
            "--kind",
            "openstack",
            "--tenant",
            "acme",
            "--auth-url",
            "http://127.0.0.1:9/v3",
            "--application-credential-id",
            "acme-cred",
            "--application-credential-secret-file",
            &secret_file,
        ])
        .await;
    assert_eq!(os["credentials"], "set");
    assert_eq!(os["tenant"], "acme");
    assert_eq!(os["config"]["application_credential_id"], "acme-cred");

    // The table and CSV outputs, and the YAML of one: the secret shows as `set` only.
    let table = s.cli(&["provider", "list"]).await;
    assert!(table.status.success(), "{table:?}");
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("CREDENTIALS"),
        "{table:?}"
    );
    for name in ["os-acme", "process", "rack1"] {
        assert!(
            lines.iter().any(|l| l.starts_with(name)),
            "{name}: {table:?}"
        );
    }
    let csv = s.cli(&["-o", "csv", "provider", "list"]).await;
    assert!(
        csv.stdout
            .starts_with("NAME,KIND,TENANT,CREDENTIALS,BUILTIN,CREATED,UPDATED\n"),
        "{csv:?}"
    );
    assert!(
        csv.stdout.contains("os-acme,openstack,acme,set,false,"),
        "{csv:?}"
    );
    assert!(
        csv.stdout.contains("\nprocess,process,,,true,,\n"),
        "{csv:?}"
    );
    let yaml = s.cli(&["-o", "yaml", "provider", "get", "os-acme"]).await;
    assert!(yaml.stdout.contains("credentials: set"), "{yaml:?}");

    // Grants name definitions; one private to a tenant is granted to nobody else, and
    // an unknown name is refused naming the entry.
    let granted = s
        .cli_json(&["tenant", "update", "acme", "--providers", "rack1"])
        .await;
    assert_eq!(granted["providers"], json!(["rack1"]));
    s.cli_json(&["tenant", "create", "globex"]).await;
    let refused = s
        .cli(&["tenant", "update", "globex", "--providers", "os-acme"])
        .await;
    assert!(!refused.status.success());
    assert!(
        refused.stderr.contains("providers[0]") && refused.stderr.contains("private"),
        "{refused:?}"
    );

    // Bad input: the CLI or the server names what is wrong; nothing is stored.
    let bad = s
        .cli(&[
            "provider", "create", "bad", "--kind", "docker", "--engine", "nope",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("NAME=ENDPOINT"), "{bad:?}");
    // A qemu definition needs its hypervisor hosts.
    let bad = s
        .cli(&["provider", "create", "bad", "--kind", "qemu"])
        .await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("hosts"), "{bad:?}");
    let names: Vec<String> = s.cli_json(&["provider", "list"]).await["providers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["os-acme", "process", "rack1"]);

    // Unused, it goes, and leaves the grants that named it.
    let gone = s.cli(&["provider", "delete", "rack1"]).await;
    assert!(gone.status.success(), "{gone:?}");
    assert!(gone.stderr.contains("provider rack1 deleted"), "{gone:?}");
    let acme = s.cli_json(&["tenant", "show", "acme"]).await;
    assert_eq!(acme["providers"], json!([]));
    let missing = s.cli(&["provider", "get", "rack1"]).await;
    assert!(!missing.status.success());
    assert!(missing.stderr.contains("404"), "{missing:?}");

    let everything = format!("{}{}{}{}", table.stdout, csv.stdout, yaml.stdout, s.logs());
    assert!(
        !everything.contains(SECRET),
        "the secret was printed or logged"
    );
}

/// A qemu definition with a local host and a remote one over SSH (`--host
/// NAME=ssh://…`, `--ssh-identity`), and `swell provider hosts`: the local host is up,
/// the SSH host (nothing listens on its port) is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_qemu_definition_with_an_ssh_host_and_its_hosts_from_the_cli() {
    let s = Swell::start().await;
    let key = s.write("qemu_ed25519", "not a usable key\n");
    let local = std::path::Path::new(&key)
        .parent()
        .unwrap()
        .join("vms-local");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let local_host = format!("local={}", local.display());
    let ssh_host = format!("rack2=ssh://swell@127.0.0.1:{port}/srv/swell/vms");

    // The SSH host needs its key: the server names the field.
    let bad = s
        .cli(&[
            "provider", "create", "vms", "--kind", "qemu", "--host", &ssh_host,
        ])
        .await;
    assert!(!bad.status.success());
    assert!(
        bad.stderr.contains("config.hosts[0].identity_file"),
        "{bad:?}"
    );
    // A malformed host: the CLI says the syntax.
    let bad = s
        .cli(&[
            "provider",
            "create",
            "vms",
            "--kind",
            "qemu",
            "--host",
            "rack2=ssh://swell@h",
        ])
        .await;
    assert!(!bad.status.success());
    assert!(bad.stderr.contains("NAME=ssh://USER@HOST"), "{bad:?}");

    let p = s
        .cli_json(&[
            "provider",
            "create",
            "vms",
            "--kind",
            "qemu",
            "--accel",
            "tcg",
            "--host",
            &local_host,
            "--host",
            &ssh_host,
            "--ssh-identity",
            &key,
        ])
        .await;
    let rack2 = &p["config"]["hosts"][1];
    assert_eq!(
        (
            &rack2["name"],
            &rack2["ssh"],
            &rack2["state_dir"],
            &rack2["identity_file"]
        ),
        (
            &json!("rack2"),
            &json!(format!("swell@127.0.0.1:{port}")),
            &json!("/srv/swell/vms"),
            &json!(key)
        ),
        "{p}"
    );
    assert!(p["config"]["hosts"][0].get("ssh").is_none(), "{p}");

    let hosts = s.cli_json(&["provider", "hosts", "vms"]).await;
    let seen: Vec<(String, bool)> = hosts["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_string(),
                h["up"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [("local".to_string(), true), ("rack2".to_string(), false)]
    );
    let table = s.cli(&["provider", "hosts", "vms"]).await;
    assert!(table.status.success(), "{table:?}");
    let rack2_row = table
        .stdout
        .lines()
        .find(|l| l.starts_with("rack2"))
        .unwrap();
    assert!(rack2_row.contains("DOWN"), "{}", table.stdout);
    // Not a provider with hosts.
    let none = s.cli(&["provider", "hosts", "process"]).await;
    assert!(!none.status.success());
    assert!(none.stderr.contains("no hypervisor hosts"), "{none:?}");
}

/// `swell serve --qemu-host NAME=ssh://…` without its key, or malformed, is refused at
/// start naming the flag; nothing is served.
#[test]
fn serve_refuses_an_ssh_qemu_host_without_its_key_or_malformed() {
    let dir = tempfile::tempdir().unwrap();
    for (host, extra, says) in [
        (
            "rack2=ssh://swell@10.0.0.2/srv/swell/vms",
            None,
            "needs --qemu-ssh-identity",
        ),
        ("rack2=ssh://swell@10.0.0.2", None, "NAME=ssh://USER@HOST"),
        (
            "rack2=ssh://swell@rack2.example/srv/swell/vms",
            Some("/etc/swell/key"),
            "hosts[0].address",
        ),
    ] {
        let mut cmd = std::process::Command::new(common::SWELL);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--qemu", "--qemu-host", host]);
        if let Some(key) = extra {
            cmd.args(["--qemu-ssh-identity", key]);
        }
        let out = cmd
            .env_remove("SWELL_QEMU_HOSTS")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{host}: {stderr}");
        assert!(stderr.contains(says), "{host}: {stderr}");
    }
}
