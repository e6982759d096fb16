//! Table-driven rejections: every option, every rule. Each row asserts a non-zero exit, exactly
//! one stderr line starting `error:` that names the option and says what is wrong, and that
//! `sa list` + `sp list` are unchanged ("a rejected command changes nothing").

use xipsec_testkit::{
    cli::{SA_EXAMPLE, SP_EXAMPLE, single_error_line},
    daemon::Sandbox,
};

/// A valid `sa add` (name `new`), as (option, value) pairs to override or drop.
const SA_BASE: &[(&str, &str)] = &[
    ("--sa-source", "2001:db8::1"),
    ("--sa-destination", "2001:db8::2"),
    ("--sa-mode", "transport"),
    ("--sa-spi", "0x5000"),
    ("--encryption-algorithm", "aes128-cbc"),
    ("--encryption-key", "0123456789abcdef"),
    ("--integrity-algorithm", "hmac-sha1"),
    ("--integrity-key", "0123456789abcdefghij"),
    ("--sa-name", "new"),
];

/// A valid `sp add` (name `spnew`) using `sa1`, outbound like `sp1` (an SA serves one direction).
const SP_BASE: &[(&str, &str)] = &[
    ("--sp-source", "2001:db8:2::/64"),
    ("--sp-destination", "2001:db8:3::/64"),
    ("--source-port", "1000"),
    ("--destination-port", "2000"),
    ("--upper-layer-protocol", "udp"),
    ("--flow-direction", "out"),
    ("--action", "ipsec"),
    ("--sa-name", "sa1"),
    ("--sp-name", "spnew"),
];

/// `command` with `base`'s options, each replaced (`Some`) or dropped (`None`) per `changes`,
/// written as `--opt=value` so values that start with `-` stay values.
fn with(command: &[&str], base: &[(&str, &str)], changes: &[(&str, Option<&str>)]) -> Vec<String> {
    let mut args: Vec<String> = command.iter().map(|s| (*s).to_owned()).collect();
    for (option, value) in base {
        let value = match changes.iter().find(|(o, _)| o == option) {
            Some((_, Some(v))) => *v,
            Some((_, None)) => continue,
            None => value,
        };
        args.push(format!("{option}={value}"));
    }
    for (option, value) in changes {
        if let Some(value) = value.filter(|_| !base.iter().any(|(o, _)| o == option)) {
            args.push(format!("{option}={value}"));
        }
    }
    args
}

fn sa(changes: &[(&str, Option<&str>)]) -> Vec<String> {
    with(&["sa", "add"], SA_BASE, changes)
}

fn sp(changes: &[(&str, Option<&str>)]) -> Vec<String> {
    with(&["sp", "add"], SP_BASE, changes)
}

fn raw(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| (*s).to_owned()).collect()
}

struct Row {
    what: &'static str,
    args: Vec<String>,
    /// The option (or command) the message must name.
    option: &'static str,
    /// What the message must say about it.
    fragment: &'static str,
}

fn row(what: &'static str, args: Vec<String>, option: &'static str, fragment: &'static str) -> Row {
    Row {
        what,
        args,
        option,
        fragment,
    }
}

#[allow(clippy::too_many_lines)] // One table, read top to bottom.
fn rows() -> Vec<Row> {
    let long_name = "n".repeat(65);
    let long_name: &'static str = Box::leak(long_name.into_boxed_str());
    vec![
        // --sa-source / --sa-destination
        row(
            "source not hex",
            sa(&[("--sa-source", Some("2001:db8::g"))]),
            "--sa-source",
            "is not valid",
        ),
        row(
            "source triple colon",
            sa(&[("--sa-source", Some("2001:db8:::1"))]),
            "--sa-source",
            "ipv6 address",
        ),
        row(
            "source ipv4",
            sa(&[("--sa-source", Some("192.0.2.1"))]),
            "--sa-source",
            "ipv6 address",
        ),
        row(
            "source empty",
            sa(&[("--sa-source", Some(""))]),
            "--sa-source",
            "ipv6 address",
        ),
        row(
            "source a prefix",
            sa(&[("--sa-source", Some("2001:db8::/64"))]),
            "--sa-source",
            "ipv6 address",
        ),
        row(
            "destination nine groups",
            sa(&[("--sa-destination", Some("1:2:3:4:5:6:7:8:9"))]),
            "--sa-destination",
            "is not valid",
        ),
        row(
            "destination group too long",
            sa(&[("--sa-destination", Some("2001:db8::12345"))]),
            "--sa-destination",
            "is not valid",
        ),
        row(
            "source any in tunnel",
            sa(&[("--sa-mode", Some("tunnel")), ("--sa-source", Some("any"))]),
            "--sa-source",
            "transport mode only",
        ),
        row(
            "destination any in tunnel",
            sa(&[
                ("--sa-mode", Some("tunnel")),
                ("--sa-destination", Some("any")),
            ]),
            "--sa-destination",
            "transport mode only",
        ),
        // --sa-mode
        row(
            "unknown mode",
            sa(&[("--sa-mode", Some("transprot"))]),
            "--sa-mode",
            "transport or tunnel",
        ),
        row(
            "empty mode",
            sa(&[("--sa-mode", Some(""))]),
            "--sa-mode",
            "transport or tunnel",
        ),
        // --sa-spi
        row(
            "spi without 0x",
            sa(&[("--sa-spi", Some("1000"))]),
            "--sa-spi",
            "0x",
        ),
        row(
            "spi 0x alone",
            sa(&[("--sa-spi", Some("0x"))]),
            "--sa-spi",
            "1 to 8 hex digits",
        ),
        row(
            "spi nine digits",
            sa(&[("--sa-spi", Some("0x123456789"))]),
            "--sa-spi",
            "1 to 8 hex digits",
        ),
        row(
            "spi over 32 bits",
            sa(&[("--sa-spi", Some("0x1ffffffff"))]),
            "--sa-spi",
            "0xffffffff",
        ),
        row(
            "spi not hex",
            sa(&[("--sa-spi", Some("0xzz00"))]),
            "--sa-spi",
            "hex digits",
        ),
        row(
            "spi negative",
            sa(&[("--sa-spi", Some("-0x100"))]),
            "--sa-spi",
            "is not valid",
        ),
        row(
            "spi reserved 0xff",
            sa(&[("--sa-spi", Some("0xff"))]),
            "--sa-spi",
            "reserved",
        ),
        row(
            "spi reserved 0",
            sa(&[("--sa-spi", Some("0x0"))]),
            "--sa-spi",
            "reserved",
        ),
        row(
            "spi duplicate",
            sa(&[("--sa-spi", Some("0x1000"))]),
            "--sa-spi",
            "already used by sa 'sa1'",
        ),
        // --encryption-algorithm
        row(
            "unknown encryption",
            sa(&[("--encryption-algorithm", Some("aes256-cbc"))]),
            "--encryption-algorithm",
            "3des-cbc, aes128-cbc or null",
        ),
        row(
            "des is not 3des",
            sa(&[("--encryption-algorithm", Some("des-cbc"))]),
            "--encryption-algorithm",
            "3des-cbc, aes128-cbc or null",
        ),
        row(
            "empty encryption",
            sa(&[("--encryption-algorithm", Some(""))]),
            "--encryption-algorithm",
            "3des-cbc, aes128-cbc or null",
        ),
        // --encryption-key
        row(
            "aes key 15 bytes",
            sa(&[("--encryption-key", Some("0123456789abcde"))]),
            "--encryption-key",
            "16-byte key, got 15",
        ),
        row(
            "aes key 17 bytes",
            sa(&[("--encryption-key", Some("0123456789abcdefg"))]),
            "--encryption-key",
            "16-byte key, got 17",
        ),
        row(
            "aes hex key 15 bytes",
            sa(&[("--encryption-key", Some("0x000102030405060708090a0b0c0d0e"))]),
            "--encryption-key",
            "16-byte key, got 15",
        ),
        row(
            "odd hex key",
            sa(&[("--encryption-key", Some("0x123"))]),
            "--encryption-key",
            "even number of hex digits",
        ),
        row(
            "non-hex hex key",
            sa(&[(
                "--encryption-key",
                Some("0xgg0102030405060708090a0b0c0d0e0f"),
            )]),
            "--encryption-key",
            "hex",
        ),
        row(
            "non-ascii key",
            sa(&[("--encryption-key", Some("0123456789abcdé"))]),
            "--encryption-key",
            "ascii",
        ),
        row(
            "3des key 16 bytes",
            sa(&[
                ("--encryption-algorithm", Some("3des-cbc")),
                ("--encryption-key", Some("0123456789abcdef")),
            ]),
            "--encryption-key",
            "24-byte key, got 16",
        ),
        row(
            "3des k1 = k2",
            sa(&[
                ("--encryption-algorithm", Some("3des-cbc")),
                ("--encryption-key", Some("abcdefghabcdefgh12345678")),
            ]),
            "--encryption-key",
            "k1 != k2",
        ),
        row(
            "3des k2 = k3",
            sa(&[
                ("--encryption-algorithm", Some("3des-cbc")),
                ("--encryption-key", Some("12345678abcdefghabcdefgh")),
            ]),
            "--encryption-key",
            "k2 != k3",
        ),
        row(
            "key with null",
            sa(&[("--encryption-algorithm", Some("null"))]),
            "--encryption-key",
            "not allowed with --encryption-algorithm null",
        ),
        row(
            "aes without key",
            sa(&[("--encryption-key", None)]),
            "--encryption-key",
            "required with aes128-cbc",
        ),
        // --integrity-algorithm / --integrity-key
        row(
            "unknown integrity",
            sa(&[("--integrity-algorithm", Some("hmac-md5"))]),
            "--integrity-algorithm",
            "hmac-sha1 or hmac-sha2-256",
        ),
        row(
            "null integrity",
            sa(&[("--integrity-algorithm", Some("null"))]),
            "--integrity-algorithm",
            "hmac-sha1 or hmac-sha2-256",
        ),
        row(
            "sha1 key 19 bytes",
            sa(&[("--integrity-key", Some("0123456789abcdefghi"))]),
            "--integrity-key",
            "20-byte key, got 19",
        ),
        row(
            "sha256 key 20 bytes",
            sa(&[("--integrity-algorithm", Some("hmac-sha2-256"))]),
            "--integrity-key",
            "32-byte key, got 20",
        ),
        row(
            "integrity key odd hex",
            sa(&[("--integrity-key", Some("0xabc"))]),
            "--integrity-key",
            "even number of hex digits",
        ),
        row(
            "integrity key missing",
            sa(&[("--integrity-key", None)]),
            "--integrity-key",
            "required",
        ),
        // --sa-name
        row(
            "duplicate sa name",
            sa(&[("--sa-name", Some("sa1"))]),
            "--sa-name",
            "already exists",
        ),
        row(
            "sa name with a space",
            sa(&[("--sa-name", Some("a b"))]),
            "--sa-name",
            "1 to 64 characters",
        ),
        row(
            "sa name too long",
            sa(&[("--sa-name", Some(long_name))]),
            "--sa-name",
            "1 to 64 characters",
        ),
        row(
            "empty sa name",
            sa(&[("--sa-name", Some(""))]),
            "--sa-name",
            "1 to 64 characters",
        ),
        // required options of sa add
        row(
            "missing --sa-source",
            sa(&[("--sa-source", None)]),
            "--sa-source",
            "required",
        ),
        row(
            "missing --sa-destination",
            sa(&[("--sa-destination", None)]),
            "--sa-destination",
            "required",
        ),
        row(
            "missing --sa-mode",
            sa(&[("--sa-mode", None)]),
            "--sa-mode",
            "required",
        ),
        row(
            "missing --sa-spi",
            sa(&[("--sa-spi", None)]),
            "--sa-spi",
            "required",
        ),
        row(
            "missing --encryption-algorithm",
            sa(&[("--encryption-algorithm", None)]),
            "--encryption-algorithm",
            "required",
        ),
        row(
            "missing --integrity-algorithm",
            sa(&[("--integrity-algorithm", None)]),
            "--integrity-algorithm",
            "required",
        ),
        row(
            "missing --sa-name",
            sa(&[("--sa-name", None)]),
            "--sa-name",
            "required",
        ),
        // --sp-source / --sp-destination
        row(
            "source host bits",
            sp(&[("--sp-source", Some("2001:db8:2::1/64"))]),
            "--sp-source",
            "did you mean 2001:db8:2::/64",
        ),
        row(
            "destination host bits",
            sp(&[("--sp-destination", Some("2001:db8:3::1/48"))]),
            "--sp-destination",
            "did you mean 2001:db8:3::/48",
        ),
        row(
            "prefix length 129",
            sp(&[("--sp-destination", Some("2001:db8::/129"))]),
            "--sp-destination",
            "0 to 128",
        ),
        row(
            "prefix without length",
            sp(&[("--sp-source", Some("2001:db8::"))]),
            "--sp-source",
            "no prefix length",
        ),
        row(
            "ipv4 prefix",
            sp(&[("--sp-source", Some("198.51.100.0/24"))]),
            "--sp-source",
            "ADDR/LEN",
        ),
        row(
            "prefix garbage",
            sp(&[("--sp-destination", Some("x/64"))]),
            "--sp-destination",
            "ADDR/LEN",
        ),
        // --source-port / --destination-port / --upper-layer-protocol
        row(
            "source port 65536",
            sp(&[("--source-port", Some("65536"))]),
            "--source-port",
            "0 to 65535",
        ),
        row(
            "source port negative",
            sp(&[("--source-port", Some("-1"))]),
            "--source-port",
            "0 to 65535",
        ),
        row(
            "destination port a name",
            sp(&[("--destination-port", Some("http"))]),
            "--destination-port",
            "0 to 65535",
        ),
        row(
            "source port with any",
            sp(&[
                ("--upper-layer-protocol", Some("any")),
                ("--destination-port", Some("any")),
            ]),
            "--source-port",
            "needs --upper-layer-protocol",
        ),
        row(
            "destination port with any",
            sp(&[
                ("--upper-layer-protocol", None),
                ("--source-port", Some("0")),
            ]),
            "--destination-port",
            "needs --upper-layer-protocol",
        ),
        row(
            "source port with icmp6",
            sp(&[
                ("--upper-layer-protocol", Some("icmp6")),
                ("--destination-port", Some("128")),
            ]),
            "--source-port",
            "icmp6",
        ),
        row(
            "icmp6 type 256",
            sp(&[
                ("--upper-layer-protocol", Some("icmp6")),
                ("--source-port", Some("any")),
                ("--destination-port", Some("256")),
            ]),
            "--destination-port",
            "0 to 255",
        ),
        row(
            "unknown protocol",
            sp(&[("--upper-layer-protocol", Some("sctp"))]),
            "--upper-layer-protocol",
            "tcp, udp, icmp6 or any",
        ),
        // --flow-direction / --action / --sp-mode
        row(
            "direction both",
            sp(&[("--flow-direction", Some("both"))]),
            "--flow-direction",
            "in or out",
        ),
        row(
            "unknown action",
            sp(&[("--action", Some("drop"))]),
            "--action",
            "none, discard or ipsec",
        ),
        row(
            "unknown sp mode",
            sp(&[("--sp-mode", Some("tunel"))]),
            "--sp-mode",
            "transport or tunnel",
        ),
        row(
            "sp mode differs from sa",
            sp(&[("--sp-mode", Some("tunnel"))]),
            "--sp-mode",
            "does not match sa 'sa1'",
        ),
        // --sa-name / --sp-name / --priority
        row(
            "sp names a missing sa",
            sp(&[("--sa-name", Some("nosuch"))]),
            "--sa-name",
            "no sa named 'nosuch'",
        ),
        row(
            "missing sa with action none",
            sp(&[("--action", Some("none")), ("--sa-name", Some("nosuch"))]),
            "--sa-name",
            "no sa named 'nosuch'",
        ),
        row(
            "ipsec without sa",
            sp(&[("--sa-name", None)]),
            "--sa-name",
            "required with --action ipsec",
        ),
        row(
            "duplicate sp name",
            sp(&[("--sp-name", Some("sp1"))]),
            "--sp-name",
            "already exists",
        ),
        row(
            "bad sp name",
            sp(&[("--sp-name", Some("sp/1"))]),
            "--sp-name",
            "1 to 64 characters",
        ),
        row(
            "duplicate selector",
            raw(&[
                "sp",
                "add",
                "--sp-source=2001:db8:1::/64",
                "--sp-destination=2002:db8:1::/64",
                "--source-port=23",
                "--destination-port=25",
                "--upper-layer-protocol=tcp",
                "--flow-direction=out",
                "--action=discard",
                "--sp-name=sp2",
            ]),
            "--sp-name",
            "same selector, direction and priority as sp 'sp1'",
        ),
        row(
            "an sa used by an sp of the other direction",
            sp(&[("--flow-direction", Some("in"))]),
            "--sa-name",
            "sa 'sa1' is already used by sp 'sp1' (direction out); an sa protects one direction \
             only (RFC 4301 §4.1): add a second sa with its own spi for direction in",
        ),
        row(
            "a discard sp naming an sa of the other direction",
            sp(&[
                ("--flow-direction", Some("in")),
                ("--action", Some("discard")),
            ]),
            "--sa-name",
            "already used by sp 'sp1' (direction out)",
        ),
        row(
            "priority 65536",
            sp(&[("--priority", Some("65536"))]),
            "--priority",
            "0 to 65535",
        ),
        row(
            "priority a word",
            sp(&[("--priority", Some("high"))]),
            "--priority",
            "0 to 65535",
        ),
        // required options of sp add
        row(
            "missing --sp-source",
            sp(&[("--sp-source", None)]),
            "--sp-source",
            "required",
        ),
        row(
            "missing --sp-destination",
            sp(&[("--sp-destination", None)]),
            "--sp-destination",
            "required",
        ),
        row(
            "missing --source-port",
            sp(&[("--source-port", None)]),
            "--source-port",
            "required",
        ),
        row(
            "missing --destination-port",
            sp(&[("--destination-port", None)]),
            "--destination-port",
            "required",
        ),
        row(
            "missing --flow-direction",
            sp(&[("--flow-direction", None)]),
            "--flow-direction",
            "required",
        ),
        row(
            "missing --sp-name",
            sp(&[("--sp-name", None)]),
            "--sp-name",
            "required",
        ),
        // sa remove
        row(
            "remove an sa in use",
            raw(&["sa", "remove", "--sa-name", "sa1"]),
            "--sa-name",
            "is used by sp 'sp1'",
        ),
        row(
            "remove-all with an sa in use",
            raw(&["sa", "remove", "--remove-all"]),
            "--remove-all",
            "nothing removed; sa 'sa1' is used by sp 'sp1'",
        ),
        row(
            "remove a missing sa",
            raw(&["sa", "remove", "--sa-name", "nosuch"]),
            "--sa-name",
            "no sa named 'nosuch'",
        ),
        row(
            "remove an sa by a missing triple",
            raw(&[
                "sa",
                "remove",
                "-s",
                "3ffe:501:ffff::a",
                "-d",
                "3ffe:501:ffff:1::1",
                "-p",
                "0x1001",
            ]),
            "--sa-spi",
            "no sa with source",
        ),
        row(
            "remove an sa by half a triple",
            raw(&["sa", "remove", "--sa-source", "3ffe:501:ffff::a"]),
            "--sa-",
            "together",
        ),
        row(
            "remove an sa by name and all",
            raw(&["sa", "remove", "--sa-name", "sa1", "--remove-all"]),
            "--remove-all",
            "cannot be combined",
        ),
        row(
            "remove no sa",
            raw(&["sa", "remove"]),
            "--sa-name",
            "--remove-all",
        ),
        // sp remove
        row(
            "remove a missing sp",
            raw(&["sp", "remove", "--sp-name", "nosuch"]),
            "--sp-name",
            "no sp named 'nosuch'",
        ),
        row(
            "remove no sp",
            raw(&["sp", "remove"]),
            "--sp-name",
            "--remove-all",
        ),
        // the source document's quirks
        row(
            "sp remove --sa-name",
            raw(&["sp", "remove", "--sa-name", "sp1"]),
            "--sp-name",
            "not --sa-name",
        ),
        row(
            "add without sp",
            raw(&[
                "add",
                "--sp-source=2001:db8:1::/64",
                "--sp-destination=2002:db8:1::/64",
                "--sp-name=sp9",
            ]),
            "sp add",
            "did you mean 'xipsec sp add'?",
        ),
        row(
            "esxcli add without sp",
            raw(&[
                "esxcli",
                "network",
                "ip",
                "ipsec",
                "add",
                "--sp-source=2001:db8:1::/64",
                "--sp-destination=2002:db8:1::/64",
                "--source-port=23",
                "--destination-port=25",
                "--upper-layer-protocol=tcp",
                "--flow-direction=out",
                "--action=ipsec",
                "--sp-mode=transport",
                "--sa-name=sa1",
                "--sp-name=sp1",
            ]),
            "sp add",
            "did you mean 'xipsec sp add'?",
        ),
        // command-line usage
        row(
            "unknown formatter",
            raw(&["sa", "list", "--formatter", "yaml"]),
            "--formatter",
            "possible values",
        ),
        row(
            "unknown option",
            raw(&["sa", "add", "--sa-nmae", "x"]),
            "--sa-nmae",
            "unexpected argument",
        ),
        row(
            "option without a value",
            raw(&["sa", "add", "--sa-name"]),
            "--sa-name",
            "a value is required",
        ),
        row(
            "option given twice",
            raw(&["sp", "remove", "--sp-name", "a", "--sp-name", "b"]),
            "--sp-name",
            "cannot be used multiple times",
        ),
    ]
}

#[test]
fn bad_inputs_are_refused_naming_the_option_and_change_nothing() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    sandbox.ok(SA_EXAMPLE);
    sandbox.ok(SP_EXAMPLE);
    // The bases themselves are valid: each row's failure is its own change.
    let base_sa = sa(&[]);
    let base_sp = sp(&[]);
    let before = sandbox.lists();
    let rows = rows();
    assert!(rows.len() >= 60, "{} rows", rows.len());

    let mut failures = Vec::new();
    for row in &rows {
        let args: Vec<&str> = row.args.iter().map(String::as_str).collect();
        let run = sandbox.run(&args);
        let line = single_error_line(&run, row.what);
        if !line.contains(row.option) || !line.contains(row.fragment) {
            failures.push(format!(
                "{}: expected {:?} and {:?} in {line:?}",
                row.what, row.option, row.fragment
            ));
        }
        assert_eq!(sandbox.lists(), before, "{} changed the state", row.what);
    }
    assert!(
        failures.is_empty(),
        "wrong messages:\n{}",
        failures.join("\n")
    );

    let args: Vec<&str> = base_sa.iter().map(String::as_str).collect();
    sandbox.ok(&args);
    let args: Vec<&str> = base_sp.iter().map(String::as_str).collect();
    sandbox.ok(&args);
}
