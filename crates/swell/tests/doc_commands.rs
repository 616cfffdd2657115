//! The commands the README and the docs show work as shown: every `swell …` line of their
//! code blocks parses with the real CLI (flags and values; `swell ARGS --help` stops
//! before running anything), and the README's "Using it" block runs, line by line,
//! against a real `swell serve` from the repository's root.

mod common;

use common::*;
use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md and every page of docs/.
fn pages() -> Vec<PathBuf> {
    let mut files = vec![repo().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(repo().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The words of one shell command line: the part before a comment, a pipe, `&&`, a
/// redirection or a trailing `&`, split as the shell would (quotes kept together).
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut in_word = false;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                in_word = true;
            }
            (None, '#') if !in_word => break,
            (None, '|' | '>' | '&' | ';') => break,
            (None, c) if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            (None, c) => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The `swell` commands of a page's code blocks (`$ ` prompts, `cargo run --release --`
/// and `./target/release/swell` count as `swell`), with where each is.
fn commands(page: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(page).expect("the page");
    let mut found = Vec::new();
    let mut in_block = false;
    for (n, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let line = line.trim().trim_start_matches("$ ");
        let rest = [
            "swell ",
            "cargo run --release -- ",
            "./target/release/swell ",
        ]
        .iter()
        .find_map(|p| line.strip_prefix(p));
        // A synopsis (`[--policy NAME | …]`) is not a command.
        if let Some(rest) = rest
            && !rest.contains(" [")
        {
            let place = format!("{}:{}", page.display(), n + 1);
            found.push((place, shell_words(rest)));
        }
    }
    found
}

#[test]
fn shell_words_are_split_as_a_shell_would() {
    let check = |line: &str, want: &[&str]| assert_eq!(shell_words(line), want, "{line}");
    check("serve &", &["serve"]);
    check(
        "apply -f x.yaml   # create or update",
        &["apply", "-f", "x.yaml"],
    );
    check(
        "tenant create acme --images 'acme/*' | head",
        &["tenant", "create", "acme", "--images", "acme/*"],
    );
    check("completion bash > /etc/x", &["completion", "bash"]);
    check("events web#1", &["events", "web#1"]);
}

#[test]
fn every_swell_command_in_the_docs_parses() {
    let mut all = Vec::new();
    for page in pages() {
        all.extend(commands(&page));
    }
    assert!(all.len() > 30, "only {} commands found", all.len());
    let mut failures = Vec::new();
    for (place, args) in &all {
        let out = std::process::Command::new(SWELL)
            .args(args)
            .arg("--help")
            .env_remove("SWELL_URL")
            .env_remove("SWELL_CONTEXT")
            .output()
            .expect("swell runs");
        if !out.status.success() {
            failures.push(format!(
                "{place}: swell {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "doc commands the CLI refuses:\n{}",
        failures.join("\n")
    );
}

/// The README's "Using it" block, run as written (but `serve`, which the test starts
/// itself, and the benchmark, which `swell bench policies`'s own test covers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readmes_using_it_block_runs_against_a_real_server() {
    let readme = repo().join("README.md");
    let text = std::fs::read_to_string(&readme).expect("README.md");
    let section = text
        .split("## Using it")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("README.md has a `## Using it` block");
    let block = repo().join("README.md");
    let lines: Vec<Vec<String>> = commands_in(section);
    assert!(lines.len() >= 8, "{lines:?}");
    // The example tenant's command is `swell demo-app`: the server finds it on PATH.
    let bin = Path::new(SWELL).parent().expect("the binary's folder");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let s = Swell::start_with(&[], &[("PATH", &path)]).await;
    let mut ran = 0;
    for args in lines {
        if matches!(args[0].as_str(), "serve" | "bench") {
            continue;
        }
        let out = tokio::process::Command::new(SWELL)
            .args(&args)
            .env("SWELL_URL", &s.url)
            .env("SWELL_TOKEN", &s.token)
            .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
            .env_remove("SWELL_CONTEXT")
            .current_dir(repo())
            .output()
            .await
            .expect("swell runs");
        assert!(
            out.status.success(),
            "{}: swell {} failed: {}\n{}",
            block.display(),
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            s.logs()
        );
        ran += 1;
    }
    assert!(ran >= 8, "ran {ran}");
}

/// The `swell` commands of one block's text.
fn commands_in(block: &str) -> Vec<Vec<String>> {
    block
        .lines()
        .filter_map(|l| l.trim().strip_prefix("swell "))
        .map(shell_words)
        .collect()
}
