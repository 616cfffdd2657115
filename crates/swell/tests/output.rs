//! What `swell` writes, as the programs reading it see it: `swell serve`'s log is plain
//! text when stderr is a file (no colour codes) and one JSON object per line with
//! `--log-format json`; a command whose reader has gone ends quietly.

mod common;

use common::*;
use serde_json::Value;

#[tokio::test]
async fn a_log_written_to_a_file_has_no_escape_sequences() {
    let mut s = Swell::start().await;
    s.stop().await;
    let log = s.log(1);
    assert!(log.contains("INFO"), "the log holds info lines:\n{log}");
    assert!(
        !log.contains('\x1b'),
        "an escape sequence in the log:\n{log:?}"
    );
}

#[tokio::test]
async fn json_logs_are_one_object_per_line() {
    let mut s = Swell::start_with(&["--log-format", "json"], &[]).await;
    let group = group_doc("web", 1, 2, never_scale());
    let created = s
        .request(
            reqwest::Method::POST,
            "/v1/groups",
            Some(&group.to_string()),
        )
        .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    wait_running(&s, "web", 1, std::time::Duration::from_secs(30)).await;
    s.stop().await;
    let log = s.log(1);
    let lines: Vec<Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 2, "{log}");
    for line in &lines {
        for key in ["timestamp", "level", "target", "fields"] {
            assert!(line.get(key).is_some(), "no `{key}` in {line}");
        }
    }
    assert!(!log.contains('\x1b'));
    // What a group's worker logs (here the provider starting its instance) carries the
    // group's tenant and name, for a log system to filter on.
    let started: Vec<&Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "started process instance")
        .collect();
    assert!(!started.is_empty(), "{log}");
    for line in started {
        assert_eq!(
            (&line["span"]["tenant"], &line["span"]["group"]),
            (&Value::from("default"), &Value::from("web")),
            "{line}"
        );
    }
}

#[tokio::test]
async fn a_bad_log_level_is_refused_naming_the_flag() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_swell"))
        .args(["serve", "--log-level", "swell=loudly", "--data-dir"])
        .arg(tempfile::tempdir().expect("a directory").path())
        .output()
        .expect("swell runs");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--log-level"), "{err}");
}

/// `swell … | head`: the reader closes the pipe before the command has written. The
/// command ends with status 0 and says nothing (it panicked on the broken pipe).
#[test]
fn a_closed_pipe_ends_a_command_quietly() {
    let trace = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../traces/wikipedia_en_2016-01_1h.csv"
    );
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_swell"))
        .args(["sim", "--trace", trace, "--policy", "hpa"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("swell runs");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("swell ends");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
}
