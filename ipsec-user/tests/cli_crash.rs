//! kill -9 storm: 8 clients add 1,000 SAs and SPs concurrently and the daemon is killed with
//! SIGKILL midway. After a restart every acknowledged add is present, the state file parses,
//! and nothing is half-present: every entry there is complete and exactly as it was added,
//! keys included (compared in the state file the killed daemon left, and in the one the
//! restarted daemon writes back from memory).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use xipsec_testkit::{cli::SpArgs, daemon::Sandbox};

const CLIENTS: usize = 8;
const ADDS_PER_CLIENT: usize = 125;
const KILL_AFTER_ACKS: usize = 400;

/// One add: its command line and the listing entry it must produce, if it is there at all.
struct Add {
    name: String,
    kind: &'static str,
    args: Vec<String>,
    expected: Value,
    /// An SA's (encryption, integrity) key bytes as the state file's hex.
    keys: Option<(String, String)>,
}

fn sa_add(client: usize, k: usize) -> Add {
    let name = format!("c{client}sa{k}");
    let spi = 0x10_000 + client * 1_000 + k;
    let source = format!("2001:db8:{client:x}::{:x}", k + 1);
    let canonical = source
        .parse::<std::net::Ipv6Addr>()
        .expect("an address")
        .to_string();
    let (enc_key, integ_key) = (format!("{client:08}{k:08}"), format!("{client:016}{k:016}"));
    Add {
        keys: Some((hex::encode(&enc_key), hex::encode(&integ_key))),
        kind: "sa",
        args: vec![
            "sa".into(),
            "add".into(),
            format!("--sa-source={source}"),
            "--sa-destination=2001:db8:ffff::1".into(),
            "--sa-mode=transport".into(),
            format!("--sa-spi={spi:#x}"),
            "--encryption-algorithm=aes128-cbc".into(),
            format!("--encryption-key={enc_key}"),
            "--integrity-algorithm=hmac-sha2-256".into(),
            format!("--integrity-key={integ_key}"),
            format!("--sa-name={name}"),
        ],
        expected: json!({
            "name": name, "source": canonical, "destination": "2001:db8:ffff::1",
            "mode": "transport", "spi": format!("{spi:#x}"), "encryption_algorithm": "aes128-cbc",
            "integrity_algorithm": "hmac-sha2-256", "owner": "user",
        }),
        name,
    }
}

fn sp_add(client: usize, k: usize, sa: Option<&str>) -> Add {
    let name = format!("c{client}sp{k}");
    let source = format!("2001:db8:{client:x}:{k:x}::/64");
    let canonical = source
        .parse::<ipnet::Ipv6Net>()
        .expect("a prefix")
        .to_string();
    let mut args = vec![
        "sp".into(),
        "add".into(),
        format!("--sp-source={source}"),
        "--sp-destination=any".into(),
        "--source-port=any".into(),
        format!("--destination-port={}", 1_000 + k),
        "--upper-layer-protocol=udp".into(),
        "--flow-direction=out".into(),
        format!("--sp-name={name}"),
    ];
    match sa {
        Some(sa) => args.push(format!("--sa-name={sa}")),
        None => args.push("--action=discard".into()),
    }
    Add {
        keys: None,
        kind: "sp",
        args,
        expected: json!({
            "name": name, "source": canonical, "destination": "::/0", "source_port": null,
            "destination_port": 1_000 + k, "protocol": "udp", "direction": "out",
            "action": if sa.is_some() { "ipsec" } else { "discard" }, "mode": "transport",
            "sa_name": sa, "priority": null,
        }),
        name,
    }
}

/// `entry` restricted to the keys of `expected` (counters and in-use lists vary).
fn project(entry: &Value, expected: &Value) -> Value {
    let keys = expected.as_object().expect("an object");
    Value::Object(keys.keys().map(|k| (k.clone(), entry[k].clone())).collect())
}

/// Every SA in `state` has the keys it was added with; how many SAs there are.
fn check_keys(state: &Value, keys: &BTreeMap<String, (String, String)>, what: &str) -> usize {
    let sas = state["spd"]["sas"].as_array().expect("spd.sas is a list");
    for sa in sas {
        let name = sa["name"].as_str().expect("an SA name");
        let (enc, integ) = keys
            .get(name)
            .unwrap_or_else(|| panic!("{what}: {name} was never added"));
        assert_eq!(
            (&sa["encryption_key"], &sa["integrity_key"]),
            (&Value::from(enc.as_str()), &Value::from(integ.as_str())),
            "{what}: {name}'s keys"
        );
    }
    sas.len()
}

#[test]
fn acknowledged_adds_survive_kill_9() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let acks = AtomicUsize::new(0);
    // name -> (kind, expected entry, acknowledged)
    let attempted: Mutex<BTreeMap<String, (&'static str, Value, bool)>> =
        Mutex::new(BTreeMap::new());
    // SA name -> its keys, as the state file must hold them.
    let keys: Mutex<BTreeMap<String, (String, String)>> = Mutex::new(BTreeMap::new());
    let refused_after_kill = AtomicUsize::new(0);

    std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let (sandbox, acks, attempted, refused, keys) =
                (&sandbox, &acks, &attempted, &refused_after_kill, &keys);
            scope.spawn(move || {
                let mut last_sa: Option<String> = None;
                for k in 0..ADDS_PER_CLIENT {
                    let add = if k.is_multiple_of(3) {
                        sa_add(client, k)
                    } else {
                        sp_add(client, k, last_sa.as_deref())
                    };
                    attempted
                        .lock()
                        .expect("attempted lock")
                        .insert(add.name.clone(), (add.kind, add.expected.clone(), false));
                    if let Some(k) = &add.keys {
                        keys.lock()
                            .expect("keys lock")
                            .insert(add.name.clone(), k.clone());
                    }
                    let args: Vec<&str> = add.args.iter().map(String::as_str).collect();
                    let run = sandbox.run(&args);
                    if run.status.success() {
                        assert!(run.stderr.is_empty(), "{run:?}");
                        acks.fetch_add(1, Ordering::SeqCst);
                        attempted
                            .lock()
                            .expect("attempted lock")
                            .get_mut(&add.name)
                            .expect("attempted")
                            .2 = true;
                        if add.kind == "sa" {
                            last_sa = Some(add.name);
                        }
                    } else {
                        // Only the daemon's death may refuse these adds.
                        assert!(
                            run.stderr.contains("no xipsec daemon answers")
                                || run
                                    .stderr
                                    .contains("closed the connection before answering"),
                            "{run:?}"
                        );
                        refused.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_mins(2);
        while acks.load(Ordering::SeqCst) < KILL_AFTER_ACKS {
            assert!(
                Instant::now() < deadline,
                "the clients did not reach {KILL_AFTER_ACKS} acks"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        daemon.kill9();
    });

    let acked = acks.load(Ordering::SeqCst);
    assert!(
        (KILL_AFTER_ACKS..CLIENTS * ADDS_PER_CLIENT).contains(&acked),
        "{acked} acks"
    );
    assert!(
        refused_after_kill.load(Ordering::SeqCst) > 0,
        "the kill came too late"
    );

    // The file parses on its own, before any daemon reads it.
    let bytes = std::fs::read(sandbox.state_file()).expect("reading state.json");
    let state: Value = serde_json::from_slice(&bytes).expect("state.json parses after kill -9");
    assert_eq!(state["version"], 1);
    let keys = keys.into_inner().expect("keys lock");
    let saved = check_keys(&state, &keys, "the state file left by kill -9");
    assert!(saved > 0, "the state file left by kill -9 holds no SA");

    let _daemon = sandbox.start();
    let (sas, sps) = sandbox.lists();
    let attempted = attempted.into_inner().expect("attempted lock");
    let mut present = BTreeSet::new();
    for (kind, entries) in [("sa", &sas), ("sp", &sps)] {
        for entry in entries.as_array().expect("a list") {
            let name = entry["name"].as_str().expect("a name").to_owned();
            let (want_kind, expected, _) = attempted
                .get(&name)
                .unwrap_or_else(|| panic!("{name} is present but was never added"));
            assert_eq!(kind, *want_kind, "{name}");
            assert_eq!(
                project(entry, expected),
                *expected,
                "{name} is not as it was added"
            );
            present.insert(name);
        }
    }
    let lost: Vec<&String> = attempted
        .iter()
        .filter(|(name, (_, _, acked))| *acked && !present.contains(*name))
        .map(|(name, _)| name)
        .collect();
    assert!(lost.is_empty(), "acknowledged adds lost: {lost:?}");
    // At most one in-flight add per client can be there unacknowledged.
    assert!(
        present.len() <= acked + CLIENTS,
        "{} present, {acked} acked",
        present.len()
    );
    // The restored daemon takes changes again, and writes back the keys it restored.
    let discard = SpArgs {
        action: "discard",
        sa: None,
        ..SpArgs::ipsec("2001:db8:9::/64", "any", "in", "after-restart")
    };
    sandbox.ok(&discard.args());
    let state: Value =
        serde_json::from_slice(&std::fs::read(sandbox.state_file()).expect("reading state.json"))
            .expect("state.json parses");
    let restored = check_keys(&state, &keys, "the state the restarted daemon wrote");
    assert_eq!(restored, saved, "every saved SA restored");
    sandbox.ok(&["sp", "remove", "--remove-all"]);
    sandbox.ok(&["sa", "remove", "--remove-all"]);
}
