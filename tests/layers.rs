//! The house's layers: every module of `src/` uses only modules listed before it in the map atop `lib.rs`, so
//! there is no import circle and no arrow that runs back up; and the `passknock` CLI reaches the
//! daemon only over the control socket, never the store, the table or the engine.
//!
//! Read from the source text, so it also catches a path written out in full
//! (`crate::engine::Job`) that no `use` line shows.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers, bottom first, as the map atop `lib.rs` lists them (`//! - [`name`]: …`).
fn layers() -> Vec<String> {
    let lib = std::fs::read_to_string(root().join("src/lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! - [`"))
        .filter_map(|l| l.split_once("`]"))
        .map(|(name, _)| name.to_string())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level modules a file names through `crate::…`, outside comments and string literals.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            let before = rest[..i].chars().last();
            let after = &rest[i + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `"passknock::crate::…"` never occurs; a quote or a word character before means
            // this is not a path (`mycrate::`, a string).
            if !matches!(before, Some(c) if c.is_alphanumeric() || c == '_' || c == '"') && !name.is_empty() {
                found.insert(name);
            }
            rest = after;
        }
    }
    found
}

/// Every arrow between two top-level modules: (from, to) → files.
fn arrows() -> BTreeMap<(String, String), Vec<String>> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut arrows: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy();
        let top = top.trim_end_matches(".rs").to_string();
        if top == "bin" || top == "lib" {
            continue;
        }
        for to in uses(&std::fs::read_to_string(&f).unwrap()) {
            if to != top {
                arrows
                    .entry((top.clone(), to))
                    .or_default()
                    .push(rel.display().to_string());
            }
        }
    }
    arrows
}

#[test]
fn every_arrow_points_down() {
    let layers = layers();
    assert!(layers.len() >= 8, "lib.rs lists the layers: {layers:?}");
    let rank = |m: &str| layers.iter().position(|l| l == m);
    let mut up = Vec::new();
    for ((from, to), files) in arrows() {
        let (Some(f), Some(t)) = (rank(&from), rank(&to)) else {
            up.push(format!(
                "{from} -> {to}: not a layer in lib.rs ({})",
                files.join(", ")
            ));
            continue;
        };
        if t > f {
            up.push(format!("{from} -> {to} runs back up, in {}", files.join(", ")));
        }
    }
    assert!(up.is_empty(), "arrows that run back up:\n{}", up.join("\n"));
}

#[test]
fn the_cli_reaches_the_daemon_only_through_the_control_socket() {
    let daemon_side = ["store", "nft", "engine", "daemon"];
    let reached: Vec<String> = arrows()
        .into_iter()
        .filter(|((from, to), _)| from == "cli" && daemon_side.contains(&to.as_str()))
        .map(|((_, to), files)| format!("cli -> {to} in {}", files.join(", ")))
        .collect();
    assert!(reached.is_empty(), "{}", reached.join("\n"));
}

#[test]
fn the_reader_finds_paths_and_skips_comments_and_strings() {
    let text =
        "use crate::engine::Job;\n// crate::daemon in a comment\nlet t = \"x\"; f(crate::store::open);\n";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["engine", "store"]);
}

#[test]
fn the_cli_binary_links_no_sqlite_and_no_daemon_code() {
    let bin = env!("CARGO_BIN_EXE_passknock");
    let out = match std::process::Command::new("nm").args(["-C", bin]).output() {
        Ok(o) if o.status.success() => o,
        // A stripped binary or no binutils: nothing to read.
        _ => return,
    };
    let symbols = String::from_utf8_lossy(&out.stdout);
    let linked: Vec<&str> = symbols
        .lines()
        .filter(|l| {
            l.contains("sqlite3_")
                || [
                    "passknock::store::",
                    "passknock::nft::",
                    "passknock::engine::",
                    "passknock::daemon::",
                ]
                .iter()
                .any(|m| l.contains(m))
        })
        .take(5)
        .collect();
    assert!(
        linked.is_empty(),
        "the passknock CLI links daemon-side code:\n{}",
        linked.join("\n")
    );
}
