//! The source document's examples run verbatim, in both option spellings and behind the
//! `esxcli network ip ipsec` prefix, and `list` shows them in table and JSON.

use serde_json::json;
use xipsec_testkit::{
    cli::{SA_EXAMPLE, SP_EXAMPLE, single_error_line},
    daemon::Sandbox,
};

/// The prefix esxcli users type before a command.
const ESXCLI: [&str; 4] = ["esxcli", "network", "ip", "ipsec"];

/// `xipsec esxcli {global} network ip ipsec {command}`, which must succeed; its stdout.
fn esxcli(sandbox: &Sandbox, global: &[&str], command: &[&str]) -> String {
    let [esxcli, namespace @ ..] = ESXCLI;
    sandbox.ok(&[&[esxcli], global, &namespace, command].concat())
}

/// `xipsec {command} --help` succeeds and names every one of `options`.
fn assert_help_lists(sandbox: &Sandbox, command: &[&str], options: &[&str]) {
    let help = sandbox.ok(&[command, &["--help"]].concat());
    let command = command.join(" ");
    for option in options {
        assert!(
            help.contains(option),
            "{command} --help lacks {option}: {help}"
        );
    }
}

fn expected_sa1() -> serde_json::Value {
    json!({
        "name": "sa1",
        "source": "3ffe:501:ffff::a",
        "destination": "3ffe:501:ffff:1::1",
        "mode": "transport",
        "spi": "0x1000",
        "encryption_algorithm": "3des-cbc",
        "integrity_algorithm": "hmac-sha1",
        "owner": "user",
        "in_use_by": ["sp1"],
        "packets": 0,
        "bytes": 0,
        "auth_failures": 0,
        "replay_drops": 0,
        "errors": 0,
        "udp_encapsulation": null
    })
}

fn expected_sp1() -> serde_json::Value {
    json!({
        "name": "sp1",
        "source": "2001:db8:1::/64",
        "destination": "2002:db8:1::/64",
        "source_port": 23,
        "destination_port": 25,
        "protocol": "tcp",
        "direction": "out",
        "action": "ipsec",
        "mode": "transport",
        "sa_name": "sa1",
        "priority": null,
        "packets": 0,
        "bytes": 0
    })
}

#[test]
fn source_examples_run_verbatim_and_list_back() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    assert_eq!(
        sandbox.ok(SA_EXAMPLE),
        "",
        "add prints nothing, like esxcli"
    );
    assert_eq!(sandbox.ok(SP_EXAMPLE), "");

    let (sas, sps) = sandbox.lists();
    assert_eq!(sas, json!([expected_sa1()]));
    assert_eq!(sps, json!([expected_sp1()]));

    let table = sandbox.ok(&["sa", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    for header in [
        "Name",
        "Source",
        "Destination",
        "Mode",
        "SPI",
        "Encryption",
        "Integrity",
    ] {
        assert!(lines[0].contains(header), "{table}");
    }
    assert!(lines[1].starts_with("----"), "{table}");
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "sa1",
            "3ffe:501:ffff::a",
            "3ffe:501:ffff:1::1",
            "transport",
            "0x1000",
            "3des-cbc",
            "hmac-sha1",
            "user",
            "sp1",
            "0",
            "0",
            "0",
            "0",
            "0",
            "-"
        ],
        "{table}"
    );
    // Keys are never shown, in any spelling.
    for format in ["table", "json", "xml", "csv", "keyvalue"] {
        let out = sandbox.ok(&["sa", "list", "--formatter", format]);
        for secret in ["6970763672656164796c6f67", "ipv6readylogo", "key"] {
            assert!(
                !out.to_lowercase().contains(secret),
                "{format} shows a key: {out}"
            );
        }
    }

    let table = sandbox.ok(&["sp", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    let cells: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "sp1",
            "2001:db8:1::/64",
            "2002:db8:1::/64",
            "23",
            "25",
            "tcp",
            "out",
            "ipsec",
            "transport",
            "sa1",
            "-",
            "0",
            "0"
        ],
        "{table}"
    );
}

#[test]
fn both_option_spellings_short_flags_and_the_esxcli_prefix_work() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    // The SA example with `--opt=value`, behind the esxcli prefix.
    let mut args = [ESXCLI.as_slice(), &["sa", "add"]].concat();
    let joined: Vec<String> = SA_EXAMPLE[2..]
        .chunks(2)
        .map(|pair| format!("{}={}", pair[0], pair[1]))
        .collect();
    args.extend(joined.iter().map(String::as_str));
    sandbox.ok(&args);
    // The SP example with `--opt value`, behind the esxcli prefix.
    let mut args = [ESXCLI.as_slice(), &["sp", "add"]].concat();
    let split: Vec<&str> = SP_EXAMPLE[2..]
        .iter()
        .flat_map(|a| a.splitn(2, '='))
        .collect();
    args.extend(split);
    sandbox.ok(&args);
    // Short flags: -s -d -m -p -e -k -i -K -n.
    sandbox.ok(&[
        "sa",
        "add",
        "-s",
        "2001:db8::1",
        "-d",
        "2001:db8::2",
        "-m",
        "tunnel",
        "-p",
        "0x2000",
        "-e",
        "aes128-cbc",
        "-k",
        "0123456789abcdef",
        "-i",
        "hmac-sha2-256",
        "-K",
        "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "-n",
        "sa2",
    ]);

    let (sas, sps) = sandbox.lists();
    assert_eq!(sas[0], expected_sa1());
    assert_eq!(sas[1]["name"], "sa2");
    assert_eq!(sas[1]["mode"], "tunnel");
    assert_eq!(sas[1]["spi"], "0x2000");
    assert_eq!(sas[1]["encryption_algorithm"], "aes128-cbc");
    assert_eq!(sas[1]["integrity_algorithm"], "hmac-sha2-256");
    assert_eq!(sps, json!([expected_sp1()]));

    // esxcli's global --formatter comes before the namespace.
    let out = esxcli(&sandbox, &["--formatter=json"], &["sp", "list"]);
    let parsed: serde_json::Value = serde_json::from_str(&out).expect("json output parses");
    assert_eq!(parsed, json!([expected_sp1()]));
    let out = esxcli(&sandbox, &["--formatter", "csv"], &["sa", "list"]);
    assert!(out.starts_with("name,source,destination,"), "{out}");

    // Removal as the spec words it (the source's `sp remove --sa-name` is answered with a hint).
    let hint = sandbox.run(&["sp", "remove", "--sa-name", "sp1"]);
    let line = single_error_line(&hint, "sp remove --sa-name");
    assert!(line.contains("--sp-name"), "{line}");
    esxcli(&sandbox, &[], &["sp", "remove", "--sp-name", "sp1"]);
    sandbox.ok(&["sa", "remove", "--sa-name", "sa1"]);
    sandbox.ok(&[
        "sa",
        "remove",
        "--sa-source",
        "2001:db8::1",
        "--sa-destination",
        "2001:db8::2",
        "--sa-spi",
        "0x2000",
    ]);
    assert_eq!(sandbox.lists(), (json!([]), json!([])));
}

#[test]
fn help_status_stats_and_completions() {
    let sandbox = Sandbox::new();
    assert_help_lists(
        &sandbox,
        &["sa", "add"],
        &[
            "-s, --sa-source",
            "-d, --sa-destination",
            "-m, --sa-mode",
            "-p, --sa-spi",
            "-e, --encryption-algorithm",
            "-k, --encryption-key",
            "-i, --integrity-algorithm",
            "-K, --integrity-key",
            "-n, --sa-name",
            "--socket",
            "3des-cbc",
            "hmac-sha2-256",
        ],
    );
    assert_help_lists(
        &sandbox,
        &["sp", "add"],
        &[
            "--sp-source",
            "--sp-destination",
            "--source-port",
            "--destination-port",
            "--upper-layer-protocol",
            "--flow-direction",
            "--action",
            "--sp-mode",
            "--sa-name",
            "--sp-name",
            "--priority",
        ],
    );
    assert_help_lists(
        &sandbox,
        &["daemon"],
        &[
            "--interface",
            "--xdp-mode",
            "--state-dir",
            "--pin-dir",
            "--no-datapath",
            "--esp-rx-coalesce-us",
        ],
    );
    for bad in ["10001", "soon", "1.5"] {
        let run = sandbox.run(&["daemon", "--no-datapath", "--esp-rx-coalesce-us", bad]);
        let line = single_error_line(&run, "daemon --esp-rx-coalesce-us out of range");
        assert!(line.contains("--esp-rx-coalesce-us"), "{line}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let script = sandbox.ok(&["completions", shell]);
        assert!(
            script.contains("sa-source"),
            "{shell} completions: {script}"
        );
    }

    let _daemon = sandbox.start();
    let status: serde_json::Value =
        serde_json::from_str(&sandbox.ok(&["status", "--formatter", "json"]))
            .expect("status json parses");
    assert_eq!(status["datapath"], "none");
    assert_eq!(status["sas"], 0);
    assert_eq!(status["socket"], sandbox.socket().display().to_string());
    assert_eq!(
        status["state_file"],
        sandbox.state_file().display().to_string()
    );
    let table = sandbox.ok(&["status"]);
    assert!(table.contains("Datapath: none"), "{table}");
    let stats: serde_json::Value =
        serde_json::from_str(&sandbox.ok(&["stats", "--formatter", "json"]))
            .expect("stats json parses");
    assert_eq!(stats, json!([]), "no datapath, no drops");
}
