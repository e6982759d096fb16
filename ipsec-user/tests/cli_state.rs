//! A corrupt state file stops the daemon with a clear error and is never touched: not JSON,
//! truncated, unknown version, an invalid policy database, or unreadable. A non-empty policy
//! database (SAs of every cipher, with their keys, and SPs) round-trips through a restart: the
//! restarted daemon writes back exactly the keys it was given.

use serde_json::Value;
use xipsec_testkit::{
    cli::{SA_EXAMPLE, SP_EXAMPLE, SpArgs},
    daemon::Sandbox,
};

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
    let stderr = sandbox.refused();
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
        (
            "key of the wrong length",
            to_vec(&short_key),
            "invalid \"spd\": state: sa 'sa1': --encryption-key: 3des-cbc needs a 24-byte key, \
             got 1 bytes",
        ),
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
    let stderr = sandbox.refused();
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

/// The SAs of the round trip: (name, encryption, encryption key as given, integrity, integrity
/// key as given).
const ROUND_TRIP_SAS: &[(&str, &str, Option<&str>, &str, &str)] = &[
    (
        "rt-aes",
        "aes128-cbc",
        Some("0x00112233445566778899aabbccddeeff"),
        "hmac-sha2-256",
        "0xf0e1d2c3b4a5968778695a4b3c2d1e0f00112233445566778899aabbccddeeff",
    ),
    (
        "rt-3des",
        "3des-cbc",
        Some("ipv6readylogo3descbcout2"),
        "hmac-sha1",
        "ipv6readylogsha1out2",
    ),
    (
        "rt-null",
        "null",
        None,
        "hmac-sha1",
        "0x0102030405060708090a0b0c0d0e0f1011121314",
    ),
];

/// A key as given on the command line (`0x` hex or ASCII), as the state file's hex.
fn key_hex(given: &str) -> String {
    match given.strip_prefix("0x") {
        Some(hex) => hex.to_owned(),
        None => hex::encode(given.as_bytes()),
    }
}

/// The state file's SAs, name -> (encryption_key, integrity_key).
fn state_keys(sandbox: &Sandbox) -> std::collections::BTreeMap<String, (Value, Value)> {
    let state: Value =
        serde_json::from_slice(&std::fs::read(sandbox.state_file()).expect("reading state.json"))
            .expect("state.json parses");
    state["spd"]["sas"]
        .as_array()
        .expect("spd.sas is a list")
        .iter()
        .map(|sa| {
            (
                sa["name"].as_str().expect("a name").to_owned(),
                (sa["encryption_key"].clone(), sa["integrity_key"].clone()),
            )
        })
        .collect()
}

#[test]
fn a_non_empty_state_round_trips_with_its_keys() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    for (i, (name, enc, enc_key, integ, integ_key)) in ROUND_TRIP_SAS.iter().enumerate() {
        let spi = format!("{:#x}", 0x5000 + i);
        let mut args = vec![
            "sa",
            "add",
            "--sa-source",
            "2001:db8::1",
            "--sa-destination",
            "2001:db8::2",
            "--sa-mode",
            "transport",
            "--sa-spi",
            &spi,
            "--encryption-algorithm",
            enc,
            "--integrity-algorithm",
            integ,
            "--integrity-key",
            integ_key,
            "--sa-name",
            name,
        ];
        if let Some(k) = enc_key {
            args.extend(["--encryption-key", k]);
        }
        sandbox.ok(&args);
    }
    sandbox.ok(SA_EXAMPLE);
    sandbox.ok(SP_EXAMPLE);
    let lists = sandbox.lists();
    daemon.stop();

    let mut expected: std::collections::BTreeMap<String, (Value, Value)> = ROUND_TRIP_SAS
        .iter()
        .map(|(name, _, enc_key, _, integ_key)| {
            (
                (*name).to_owned(),
                (
                    Value::from(enc_key.map(key_hex).unwrap_or_default()),
                    Value::from(key_hex(integ_key)),
                ),
            )
        })
        .collect();
    expected.insert(
        "sa1".into(),
        (
            Value::from(hex::encode("ipv6readylogo3descbcout2")),
            Value::from(hex::encode("ipv6readylogsha1out2")),
        ),
    );
    assert_eq!(
        state_keys(&sandbox),
        expected,
        "keys written by the first daemon"
    );

    // The restarted daemon restores the state; a change makes it write the state back from
    // memory, so the file now shows the keys the running daemon holds.
    let daemon = sandbox.start();
    assert_eq!(sandbox.lists(), lists, "lists after the restart");
    let discard = SpArgs {
        action: "discard",
        sa: None,
        ..SpArgs::ipsec("2001:db8:9::/64", "any", "in", "after-restart")
    };
    sandbox.ok(&discard.args());
    assert_eq!(
        state_keys(&sandbox),
        expected,
        "keys held by the restarted daemon"
    );
    daemon.stop();
}
