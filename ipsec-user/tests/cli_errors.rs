//! Table-driven rejections (`cli_errors.tsv`): every option, every rule. Each row asserts a non-zero exit, exactly
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

/// One refused command: what it tries, its arguments, and what the error must say.
struct Row {
    what: String,
    args: Vec<String>,
    /// The option (or command) the message must name.
    option: String,
    /// What the message must say about it.
    fragment: String,
}

/// The table, `cli_errors.tsv` (its header says how a line reads).
fn rows() -> Vec<Row> {
    include_str!("cli_errors.tsv")
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [what, command, arguments, option, fragment] = fields[..] else {
                panic!("cli_errors.tsv: not five tab-separated fields: {line:?}");
            };
            let changes: Vec<(&str, Option<&str>)> = arguments
                .split(" | ")
                .filter(|change| !change.is_empty())
                .map(|change| match change.split_once('=') {
                    Some((option, value)) => (option, Some(value)),
                    None => (change, None),
                })
                .collect();
            let args = match command {
                "sa" => sa(&changes),
                "sp" => sp(&changes),
                "raw" => arguments.split(' ').map(str::to_owned).collect(),
                other => panic!("cli_errors.tsv: unknown command {other:?} in {line:?}"),
            };
            Row {
                what: what.to_owned(),
                args,
                option: option.to_owned(),
                fragment: fragment.to_owned(),
            }
        })
        .collect()
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
    // Every row of the table was read (101 when it moved from Rust code to the file).
    assert!(rows.len() >= 101, "{} rows", rows.len());

    let mut failures = Vec::new();
    for row in &rows {
        let args: Vec<&str> = row.args.iter().map(String::as_str).collect();
        let run = sandbox.run(&args);
        let line = single_error_line(&run, &row.what);
        if !line.contains(&row.option) || !line.contains(&row.fragment) {
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
