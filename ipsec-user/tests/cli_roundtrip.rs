//! Round trip: accepted SAs and SPs list back with the values they were given, identically in
//! all five formatters, and the JSON matches the schema documented in `src/cli/SCHEMA.md`.

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use serde_json::{Value, json};
use xipsec_testkit::daemon::Sandbox;

type Record = BTreeMap<String, Value>;

/// One field of SCHEMA.md: name, type, null text.
#[derive(Debug, Clone)]
struct SchemaField {
    name: String,
    kind: String,
    null_text: String,
}

/// The field tables of SCHEMA.md, by section (`sa list`, `sp list`, `stats`, `status`).
fn schema() -> BTreeMap<String, Vec<SchemaField>> {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/cli/SCHEMA.md"))
        .expect("reading SCHEMA.md");
    let mut sections = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("## `") {
            current = Some(heading.split('`').next().expect("section name").to_owned());
            sections.insert(current.clone().expect("section"), Vec::new());
            continue;
        }
        let Some(section) = &current else { continue };
        let cells: Vec<&str> = line
            .split(" | ")
            .map(|c| c.trim_matches(['|', ' ']))
            .collect();
        if cells.len() < 3 || !cells[0].starts_with('`') {
            continue;
        }
        sections
            .get_mut(section)
            .expect("section")
            .push(SchemaField {
                name: cells[0].trim_matches('`').to_owned(),
                kind: cells[1].replace("\\|", "|"),
                null_text: cells[2].trim_matches('`').to_owned(),
            });
    }
    sections
}

/// Check one JSON object against a schema section: same keys, in order, with the right types.
fn check_schema(object: &Value, fields: &[SchemaField]) {
    let map = object.as_object().expect("a JSON object");
    let keys: Vec<&String> = map.keys().collect();
    let mut names: Vec<&String> = fields.iter().map(|f| &f.name).collect();
    names.sort();
    assert_eq!(keys, names, "JSON keys differ from SCHEMA.md");
    for f in fields {
        let v = &map[&f.name];
        let ok = match f.kind.as_str() {
            "string" => v.is_string(),
            "integer" => v.is_u64(),
            "string[]" => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
            "string|null" => v.is_string() || v.is_null(),
            "integer|null" => v.is_u64() || v.is_null(),
            other => panic!("SCHEMA.md type {other} unknown to this test"),
        };
        assert!(ok, "{} = {v} is not {}", f.name, f.kind);
    }
}

/// A text cell back to its typed value, per SCHEMA.md's rules for text formats.
fn typed(text: &str, field: &SchemaField, table: bool) -> Value {
    let empty = text.is_empty() || (table && text == "-");
    let null = empty || (!field.null_text.is_empty() && text == field.null_text);
    match field.kind.as_str() {
        "integer|null" | "string|null" if null => Value::Null,
        "integer" | "integer|null" => json!(text.parse::<u64>().expect("an integer cell")),
        "string[]" if empty => json!([]),
        "string[]" => json!(text.split(',').collect::<Vec<_>>()),
        _ => json!(text),
    }
}

fn parse_json(out: &str) -> Vec<Record> {
    serde_json::from_str(out).expect("json output parses")
}

fn parse_table(out: &str, fields: &[SchemaField]) -> Vec<Record> {
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines.len() >= 2, "{out}");
    // Columns start where the runs of dashes under the headers start.
    let dashes = lines[1];
    let mut starts = Vec::new();
    let bytes = dashes.as_bytes();
    for i in 0..bytes.len() {
        if bytes[i] == b'-' && (i == 0 || bytes[i - 1] == b' ') {
            starts.push(i);
        }
    }
    assert_eq!(starts.len(), fields.len(), "{out}");
    lines[2..]
        .iter()
        .map(|line| {
            fields
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    let end = starts
                        .get(i + 1)
                        .copied()
                        .unwrap_or(line.len())
                        .min(line.len());
                    let cell = line[starts[i].min(line.len())..end].trim();
                    (f.name.clone(), typed(cell, f, true))
                })
                .collect()
        })
        .collect()
}

fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().expect("cell").push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().expect("cell").push(c),
        }
    }
    cells
}

fn parse_csv(out: &str, fields: &[SchemaField]) -> Vec<Record> {
    let mut lines = out.lines();
    let header = csv_cells(lines.next().expect("csv header"));
    let names: Vec<String> = fields.iter().map(|f| f.name.clone()).collect();
    assert_eq!(header, names, "csv header differs from SCHEMA.md");
    lines
        .map(|line| {
            let cells = csv_cells(line);
            assert_eq!(cells.len(), fields.len(), "{line}");
            fields
                .iter()
                .zip(cells)
                .map(|(f, c)| (f.name.clone(), typed(&c, f, false)))
                .collect()
        })
        .collect()
}

fn parse_keyvalue(out: &str, type_name: &str, fields: &[SchemaField]) -> Vec<Record> {
    out.split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            block
                .lines()
                .map(|line| {
                    let (key, value) = line.split_once('=').expect("key=value");
                    let mut parts = key.splitn(3, '.');
                    assert_eq!(parts.next(), Some(type_name), "{line}");
                    let name = parts.next().expect("field name");
                    let kind = parts.next().expect("field type");
                    let field = fields
                        .iter()
                        .find(|f| f.name == name)
                        .expect("a schema field");
                    let want = match field.kind.as_str() {
                        "integer" | "integer|null"
                            if value != field.null_text && !value.is_empty() =>
                        {
                            "integer"
                        }
                        "string[]" => "string[]",
                        _ => "string",
                    };
                    assert_eq!(kind, want, "{line}");
                    (name.to_owned(), typed(value, field, false))
                })
                .collect()
        })
        .collect()
}

fn xml_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn between<'a>(s: &'a str, open: &str, close: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some(i) = rest.find(open) {
        let after = &rest[i + open.len()..];
        let j = after.find(close).expect("closing tag");
        out.push(&after[..j]);
        rest = &after[j + close.len()..];
    }
    out
}

fn parse_xml(out: &str, type_name: &str) -> Vec<Record> {
    assert!(
        out.starts_with("<?xml version=\"1.0\" encoding=\"utf-8\"?>"),
        "{out}"
    );
    between(
        out,
        &format!("<structure typeName=\"{type_name}\">"),
        "</structure>",
    )
    .into_iter()
    .map(|structure| {
        structure
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                let line = line.trim();
                let name = between(line, "<field name=\"", "\"")[0].to_owned();
                if line.ends_with("/>") {
                    return (name, Value::Null);
                }
                let value = if line.contains("<list type=\"string\">") {
                    json!(
                        between(line, "<string>", "</string>")
                            .into_iter()
                            .map(xml_unescape)
                            .collect::<Vec<_>>()
                    )
                } else if let Some(n) = between(line, "<integer>", "</integer>").first() {
                    json!(n.parse::<u64>().expect("an integer"))
                } else {
                    json!(xml_unescape(between(line, "<string>", "</string>")[0]))
                };
                (name, value)
            })
            .collect()
    })
    .collect()
}

#[test]
fn accepted_entries_list_back_identically_in_every_format() {
    let schema = schema();
    let sa_fields = &schema["sa list"];
    let sp_fields = &schema["sp list"];
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();

    // SAs: every mode, algorithm, key spelling and address form.
    sandbox.ok(&[
        "sa",
        "add",
        "-s",
        "2001:DB8:0:0:0:0:0:1",
        "-d",
        "2001:db8::2",
        "-m",
        "tunnel",
        "-p",
        "0xABCDEF01",
        "-e",
        "aes128-cbc",
        "-k",
        "0x000102030405060708090a0b0c0d0e0f",
        "-i",
        "hmac-sha2-256",
        "-K",
        "abcdefghijklmnopqrstuvwxyz012345",
        "-n",
        "tun.A-1",
    ]);
    sandbox.ok(&[
        "sa",
        "add",
        "--sa-source=any",
        "--sa-destination=any",
        "--sa-mode=transport",
        "--sa-spi=0x100",
        "--encryption-algorithm=null",
        "--integrity-algorithm=hmac-sha1",
        "--integrity-key=0123456789abcdefghij",
        "--sa-name=null_sa",
    ]);
    sandbox.ok(&[
        "sa",
        "add",
        "--sa-source",
        "fe80::1",
        "--sa-destination",
        "::1",
        "--sa-mode",
        "transport",
        "--sa-spi",
        "0xffffffff",
        "--encryption-algorithm",
        "3des-cbc",
        "--encryption-key",
        "abcdefgh12345678ABCDEFGH",
        "--integrity-algorithm",
        "hmac-sha1",
        "--integrity-key",
        "0x0102030405060708090a0b0c0d0e0f1011121314",
        "--sa-name",
        "des",
    ]);
    // SPs: every protocol, port form, action, direction and priority.
    sandbox.ok(&[
        "sp",
        "add",
        "--sp-source",
        "2001:db8::/32",
        "--sp-destination",
        "any",
        "--source-port",
        "0",
        "--destination-port",
        "any",
        "--flow-direction",
        "out",
        "--sa-name",
        "tun.A-1",
        "--sp-name",
        "all-out",
    ]);
    sandbox.ok(&[
        "sp",
        "add",
        "--sp-source=any",
        "--sp-destination=2001:db8:1::/64",
        "--source-port=any",
        "--destination-port=135",
        "--upper-layer-protocol=icmp6",
        "--flow-direction=in",
        "--action=discard",
        "--sp-name=nd",
        "--priority=0",
    ]);
    sandbox.ok(&[
        "sp",
        "add",
        "--sp-source=::1/128",
        "--sp-destination=fe80::/10",
        "--source-port=65535",
        "--destination-port=443",
        "--upper-layer-protocol=TCP",
        "--flow-direction=in",
        "--action=ipsec",
        "--sp-mode=transport",
        "--sa-name=des",
        "--sp-name=web",
        "--priority=65535",
    ]);
    sandbox.ok(&[
        "sp",
        "add",
        "--sp-source=2001:db8:5::/48",
        "--sp-destination=2001:db8:6::/48",
        "--source-port=53",
        "--destination-port=any",
        "--upper-layer-protocol=udp",
        "--flow-direction=out",
        "--action=none",
        "--sp-name=dns",
    ]);

    let expected_sas = json!([
        {"name": "des", "source": "fe80::1", "destination": "::1", "mode": "transport",
         "spi": "0xffffffff", "encryption_algorithm": "3des-cbc", "integrity_algorithm": "hmac-sha1",
         "owner": "user", "in_use_by": ["web"], "packets": 0, "bytes": 0, "auth_failures": 0,
         "replay_drops": 0, "errors": 0, "udp_encapsulation": null},
        {"name": "null_sa", "source": null, "destination": null, "mode": "transport",
         "spi": "0x100", "encryption_algorithm": "null", "integrity_algorithm": "hmac-sha1",
         "owner": "user", "in_use_by": [], "packets": 0, "bytes": 0, "auth_failures": 0,
         "replay_drops": 0, "errors": 0, "udp_encapsulation": null},
        {"name": "tun.A-1", "source": "2001:db8::1", "destination": "2001:db8::2", "mode": "tunnel",
         "spi": "0xabcdef01", "encryption_algorithm": "aes128-cbc",
         "integrity_algorithm": "hmac-sha2-256", "owner": "user", "in_use_by": ["all-out"],
         "packets": 0, "bytes": 0, "auth_failures": 0, "replay_drops": 0, "errors": 0,
         "udp_encapsulation": null},
    ]);
    let expected_sps = json!([
        {"name": "all-out", "source": "2001:db8::/32", "destination": "::/0", "source_port": null,
         "destination_port": null, "protocol": "any", "direction": "out", "action": "ipsec",
         "mode": "tunnel", "sa_name": "tun.A-1", "priority": null, "packets": 0, "bytes": 0},
        {"name": "nd", "source": "::/0", "destination": "2001:db8:1::/64", "source_port": null,
         "destination_port": 135, "protocol": "icmp6", "direction": "in", "action": "discard",
         "mode": "transport", "sa_name": null, "priority": 0, "packets": 0, "bytes": 0},
        {"name": "web", "source": "::1/128", "destination": "fe80::/10", "source_port": 65535,
         "destination_port": 443, "protocol": "tcp", "direction": "in", "action": "ipsec",
         "mode": "transport", "sa_name": "des", "priority": 65535, "packets": 0, "bytes": 0},
        {"name": "dns", "source": "2001:db8:5::/48", "destination": "2001:db8:6::/48",
         "source_port": 53, "destination_port": null, "protocol": "udp", "direction": "out",
         "action": "none", "mode": "transport", "sa_name": null, "priority": null, "packets": 0,
         "bytes": 0},
    ]);
    // Addresses come back in canonical form, equal to what was typed.
    assert_eq!(
        "2001:DB8:0:0:0:0:0:1"
            .parse::<Ipv6Addr>()
            .expect("an address"),
        "2001:db8::1".parse::<Ipv6Addr>().expect("an address")
    );

    for (command, type_name, fields, expected) in [
        (
            &["sa", "list"][..],
            "SecurityAssociation",
            sa_fields,
            &expected_sas,
        ),
        (
            &["sp", "list"][..],
            "SecurityPolicy",
            sp_fields,
            &expected_sps,
        ),
    ] {
        let run = |format: &str| {
            let mut args = command.to_vec();
            args.extend(["--formatter", format]);
            sandbox.ok(&args)
        };
        let json = parse_json(&run("json"));
        assert_eq!(
            serde_json::to_value(&json).expect("to value"),
            *expected,
            "{command:?}"
        );
        for record in &json {
            check_schema(
                &serde_json::to_value(record).expect("record to value"),
                fields,
            );
        }
        assert_eq!(
            parse_table(&sandbox.ok(command), fields),
            json,
            "{command:?} default table"
        );
        assert_eq!(
            parse_table(&run("table"), fields),
            json,
            "{command:?} table"
        );
        assert_eq!(parse_csv(&run("csv"), fields), json, "{command:?} csv");
        assert_eq!(
            parse_keyvalue(&run("keyvalue"), type_name, fields),
            json,
            "{command:?} keyvalue"
        );
        assert_eq!(parse_xml(&run("xml"), type_name), json, "{command:?} xml");
    }

    // status and stats follow the schema too.
    let status: Value = serde_json::from_str(&sandbox.ok(&["status", "--formatter", "json"]))
        .expect("status json parses");
    check_schema(&status, &schema["status"]);
    assert_eq!(status["sas"], 3);
    assert_eq!(status["sps"], 4);
    let status_xml = parse_xml(&sandbox.ok(&["status", "--formatter", "xml"]), "Status");
    assert_eq!(status_xml.len(), 1);
    assert_eq!(status_xml[0]["sps"], 4);
    for format in ["table", "json", "xml", "csv", "keyvalue"] {
        sandbox.ok(&["stats", "--formatter", format]);
    }
    assert_eq!(
        parse_csv(
            &sandbox.ok(&["stats", "--formatter", "csv"]),
            &schema["stats"]
        ),
        Vec::<Record>::new()
    );
}
