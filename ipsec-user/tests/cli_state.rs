//! A corrupt state file stops the daemon with a clear error and is never touched: not JSON,
//! truncated, unknown version, an invalid policy database, or unreadable.

mod cli_support;

use cli_support::{SA_EXAMPLE, SP_EXAMPLE, Sandbox};
use serde_json::Value;

/// A valid state file with the source document's SA and SP, written by a real daemon.
fn valid_state() -> Value {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    sandbox.ok(SA_EXAMPLE);
    sandbox.ok(SP_EXAMPLE);
    daemon.stop();
    let bytes = std::fs::read(sandbox.state_file()).expect("reading state.json");
    serde_json::from_slice(&bytes).expect("a fresh state file parses")
}

fn expect_refusal(what: &str, bytes: &[u8], reason: &str) {
    let sandbox = Sandbox::new();
    std::fs::create_dir_all(sandbox.state_dir()).expect("creating the state dir");
    std::fs::write(sandbox.state_file(), bytes).expect("writing state.json");
    let output = sandbox
        .daemon_command()
        .output()
        .expect("running the daemon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{what}: the daemon started");
    let want = format!(
        "error: state file {} is corrupt: ",
        sandbox.state_file().display()
    );
    assert!(stderr.contains(&want), "{what}: {stderr}");
    assert!(stderr.contains(reason), "{what}: {stderr}");
    assert!(
        stderr.trim_end().ends_with("; fix or move it away"),
        "{what}: {stderr}"
    );
    assert_eq!(
        std::fs::read(sandbox.state_file()).expect("reading state.json back"),
        bytes,
        "{what}: the file was changed"
    );
    assert!(
        !sandbox.socket().exists(),
        "{what}: a refused daemon left a socket"
    );
}

#[test]
fn corrupt_state_files_are_refused_and_left_untouched() {
    let valid = valid_state();
    let text = serde_json::to_vec(&valid).expect("serialising");

    let mut ghost = valid.clone();
    ghost["spd"]["sps"][0]["sa_name"] = "ghost".into();
    let mut twins = valid.clone();
    let sa = twins["spd"]["sas"][0].clone();
    twins["spd"]["sas"].as_array_mut().expect("sas").push(sa);
    let mut short_key = valid.clone();
    short_key["spd"]["sas"][0]["encryption_key"] = "00".into();
    let mut future = valid.clone();
    future["version"] = 2.into();
    let mut no_version = valid.clone();
    no_version
        .as_object_mut()
        .expect("object")
        .remove("version");

    let to_vec = |v: &Value| serde_json::to_vec_pretty(v).expect("serialising");
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"\x00\x01 not json at all".to_vec(), "not JSON"),
        ("empty", Vec::new(), "not JSON"),
        ("truncated", text[..text.len() / 2].to_vec(), "not JSON"),
        ("an array", b"[1, 2, 3]".to_vec(), "JSON object"),
        ("unknown version", to_vec(&future), "unknown version 2"),
        ("no version", to_vec(&no_version), "no \"version\""),
        (
            "spd of the wrong shape",
            br#"{"version": 1, "spd": [1]}"#.to_vec(),
            "bad \"spd\"",
        ),
        ("sp naming a missing sa", to_vec(&ghost), "invalid \"spd\""),
        ("duplicate sa", to_vec(&twins), "invalid \"spd\""),
        ("key of the wrong length", to_vec(&short_key), "spd"),
    ];
    for (what, bytes, reason) in cases {
        expect_refusal(what, &bytes, reason);
    }
}

#[test]
fn an_unreadable_state_file_is_refused() {
    let sandbox = Sandbox::new();
    // A directory where the file should be: unreadable as a file, whoever runs the test.
    std::fs::create_dir_all(sandbox.state_file()).expect("creating a directory named state.json");
    let output = sandbox
        .daemon_command()
        .output()
        .expect("running the daemon");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains("is corrupt: cannot read it"), "{stderr}");
    assert!(sandbox.state_file().is_dir(), "the directory was replaced");
}

#[test]
fn a_missing_state_file_is_an_empty_state_and_is_created_on_the_first_change() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    assert!(
        !sandbox.state_file().exists(),
        "nothing to save before the first change"
    );
    assert_eq!(
        sandbox.lists(),
        (serde_json::json!([]), serde_json::json!([]))
    );
    sandbox.ok(SA_EXAMPLE);
    let state: Value = serde_json::from_slice(&std::fs::read(sandbox.state_file()).expect("read"))
        .expect("state.json parses");
    assert_eq!(state["version"], 1);
    assert_eq!(state["spd"]["sas"][0]["name"], "sa1");
    let leftovers: Vec<_> = std::fs::read_dir(sandbox.state_dir())
        .expect("listing the state dir")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name != "state.json" && name != "lock")
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files left behind: {leftovers:?}"
    );
}
