//! One harness in the whole repository: no file but `testkit/src/netns.rs` creates a network
//! namespace (by `ip netns add`, `unshare` or `CLONE_NEWNET`), so every test, the demo and the
//! benchmarks get unique names and clean-up on drop from the kit.

use std::fs;
use std::path::{Path, PathBuf};

/// What creates a namespace, written the ways a Rust or Python file would.
const CREATORS: [&str; 5] = [
    r#""netns", "add""#,
    "netns add",
    "unshare",
    "CLONE_NEWNET",
    "setns(",
];

/// The kit's own namespace module, the one place allowed.
const ALLOWED: &str = "testkit/src/netns.rs";

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !(name == "target" || name.starts_with('.') || name == "corpus") {
                sources(&path, out);
            }
        } else if name.ends_with(".rs") || name.ends_with(".py") || name.ends_with(".sh") {
            out.push(path);
        }
    }
}

/// Every `(file, line)` of `root` that names a namespace creator, except the allowed file and
/// this test.
fn creators(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    sources(root, &mut files);
    let mut found = Vec::new();
    for file in files {
        let relative = file
            .strip_prefix(root)
            .unwrap_or(&file)
            .to_string_lossy()
            .into_owned();
        if relative == ALLOWED || relative == "testkit/tests/one_harness.rs" {
            continue;
        }
        let Ok(text) = fs::read_to_string(&file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            if CREATORS.iter().any(|c| line.contains(c)) {
                found.push(format!("{relative}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    found
}

#[test]
fn only_the_kit_creates_network_namespaces() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace root");
    let allowed = fs::read_to_string(root.join(ALLOWED)).expect("reading the kit's netns.rs");
    assert!(
        allowed.contains(CREATORS[0]),
        "the kit no longer creates namespaces the way this test looks for"
    );
    let found = creators(root);
    assert!(
        found.is_empty(),
        "namespaces created outside {ALLOWED}:\n{}",
        found.join("\n")
    );
}

#[test]
fn a_second_harness_is_found() {
    let dir = tempfile::tempdir().expect("a scratch tree");
    fs::create_dir_all(dir.path().join("tests")).expect("mkdir");
    fs::write(
        dir.path().join("tests/private.rs"),
        "fn setup() { sh(&[\"ip\", \"netns\", \"add\", \"x\"]); }\n",
    )
    .expect("writing");
    fs::write(
        dir.path().join("tests/helper.py"),
        "os.unshare(os.CLONE_NEWNET)\n",
    )
    .expect("writing");
    let found = creators(dir.path());
    assert_eq!(found.len(), 2, "{found:?}");
}
