//! A plain clone works alone: nothing the README, the docs or the examples tell a user to
//! run reads a file outside the repository (such as a sibling folder `../elsewhere/`), and the
//! traces those commands name are in the repository.

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// README.md, every page of docs/ and every file of examples/.
fn user_facing_files() -> Vec<PathBuf> {
    let root = repo();
    let mut files = vec![
        root.join("README.md"),
        root.join("traces/README.md"),
        root.join("scripts/openstack/README.md"),
    ];
    for dir in ["docs", "examples"] {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
            .unwrap_or_else(|e| panic!("{dir}/: {e}"))
            .map(|e| e.expect("directory entry").path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        files.extend(entries);
    }
    files
}

/// The relative paths in `text`, written in a file `depth` folders below the
/// repository's root, that climb out of the repository (`../../elsewhere` from `docs/`).
fn paths_leaving_the_repo(text: &str, depth: usize) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '`' | '(' | ')' | '"' | '\'' | '='))
        .filter(|word| {
            let mut level = depth as isize;
            for part in word.split('/') {
                match part {
                    ".." => level -= 1,
                    "." | "" => {}
                    _ => level += 1,
                }
                if level < 0 {
                    return true;
                }
            }
            false
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn the_check_finds_paths_outside_the_repo() {
    assert_eq!(
        paths_leaving_the_repo("swell sim --trace ../elsewhere/traces/a.csv", 0),
        vec!["../elsewhere/traces/a.csv"]
    );
    assert_eq!(
        paths_leaving_the_repo("[x](../../elsewhere/a.md)", 1),
        vec!["../../elsewhere/a.md"]
    );
    assert!(paths_leaving_the_repo("see [api](api.md) and traces/a.csv", 0).is_empty());
    assert!(paths_leaving_the_repo("[lab](../examples/openstack-lab.yaml)", 1).is_empty());
}

#[test]
fn no_user_facing_text_points_outside_the_repository() {
    let mut found = Vec::new();
    let root = repo().canonicalize().expect("the repository");
    for file in user_facing_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let folder = file.canonicalize().expect("a file of the repository");
        let depth = folder
            .parent()
            .and_then(|d| d.strip_prefix(&root).ok())
            .map_or(0, |d| d.components().count());
        for (n, line) in text.lines().enumerate() {
            for path in paths_leaving_the_repo(line, depth) {
                found.push(format!("{}:{}: {path}", file.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "paths outside the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_trace_the_docs_name_is_bundled() {
    let root = repo();
    let mut named = Vec::new();
    for file in user_facing_files() {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        for word in text.split(|c: char| c.is_whitespace() || c == '`') {
            if word.contains("traces/") && word.ends_with(".csv") {
                named.push(word.to_string());
            }
        }
    }
    assert!(!named.is_empty(), "the docs name no trace");
    for trace in named {
        assert!(
            root.join(&trace).is_file(),
            "{trace} is named in the docs but not in the repository"
        );
    }
}

/// Every text file of the repository, below `dir`.
fn text_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "corpus") {
                text_files(&path, out);
            }
        } else if std::fs::read_to_string(&path).is_ok() {
            out.push(path);
        }
    }
}

#[test]
fn no_code_or_script_reads_the_sibling_shared_folder() {
    let root = repo();
    let mut files = Vec::new();
    for dir in ["crates", "scripts", "docs", "examples", "fuzz"] {
        text_files(&root.join(dir), &mut files);
    }
    let this = Path::new(file!()).file_name().expect("this file");
    let needle = ["..", "/shared"].concat();
    let found: Vec<String> = files
        .iter()
        .filter(|f| f.file_name() != Some(this))
        .filter(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&needle)))
        .map(|f| f.display().to_string())
        .collect();
    assert!(found.is_empty(), "files naming {needle}: {found:?}");
}
