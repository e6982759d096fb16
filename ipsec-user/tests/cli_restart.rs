//! Restart: a large state (500 SAs, 2,000 SPs) survives SIGTERM and a new start unchanged, and
//! the daemon cleans up its socket on the way out.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use xipsec_testkit::daemon::Sandbox;

pub const SAS: usize = 500;
pub const SPS: usize = 2_000;

fn sa_args(i: usize) -> Vec<String> {
    let tunnel = !i.is_multiple_of(2);
    let (enc, key) = match i % 3 {
        0 => ("aes128-cbc", Some(format!("{i:016}"))),
        1 => ("3des-cbc", Some(format!("{i:08}a{i:07}b{i:07}"))),
        _ => ("null", None),
    };
    let (int, ikey) = if i.is_multiple_of(2) {
        ("hmac-sha1", format!("{i:020}"))
    } else {
        ("hmac-sha2-256", format!("0x{i:064x}"))
    };
    let mut args: Vec<String> = vec![
        "sa".into(),
        "add".into(),
        format!("--sa-source=2001:db8::{:x}", i + 1),
        format!("--sa-destination=2001:db8:ffff::{:x}", i + 1),
        format!("--sa-mode={}", if tunnel { "tunnel" } else { "transport" }),
        format!("--sa-spi={:#x}", 0x1000 + i),
        format!("--encryption-algorithm={enc}"),
        format!("--integrity-algorithm={int}"),
        format!("--integrity-key={ikey}"),
        format!("--sa-name=sa{i}"),
    ];
    if let Some(key) = key {
        args.push(format!("--encryption-key={key}"));
    }
    args
}

fn sp_args(j: usize) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "sp".into(),
        "add".into(),
        format!("--sp-source=2001:db8:{:x}::/48", j + 1),
        format!(
            "--sp-destination={}",
            if j.is_multiple_of(4) {
                "any".to_owned()
            } else {
                format!("2001:db9:{j:x}::/64")
            }
        ),
        format!(
            "--source-port={}",
            if j.is_multiple_of(5) {
                "any".to_owned()
            } else {
                (j % 65_536).to_string()
            }
        ),
        format!("--destination-port={}", j % 1_000),
        "--upper-layer-protocol=tcp".into(),
        format!(
            "--flow-direction={}",
            if j.is_multiple_of(2) { "in" } else { "out" }
        ),
        format!("--sp-name=sp{j}"),
    ];
    match j % 10 {
        0 => args.push("--action=discard".into()),
        1 => args.push("--action=none".into()),
        _ => args.push(format!("--sa-name=sa{}", j % SAS)),
    }
    if j.is_multiple_of(7) {
        args.push(format!("--priority={}", j % 100));
    }
    args
}

/// Add every SA and SP, 8 clients at a time (each is its own `xipsec` process).
/// The permission bits (`mode & 0o777`) of `path`.
fn permission_bits(path: &Path) -> u32 {
    let metadata =
        std::fs::metadata(path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
    metadata.permissions().mode() & 0o777
}

fn populate(sandbox: &Sandbox) {
    let run_all = |jobs: Vec<Vec<String>>| {
        std::thread::scope(|scope| {
            for chunk in jobs.chunks(jobs.len().div_ceil(8)) {
                scope.spawn(move || {
                    for args in chunk {
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        sandbox.ok(&args);
                    }
                });
            }
        });
    };
    run_all((0..SAS).map(sa_args).collect());
    run_all((0..SPS).map(sp_args).collect());
}

#[test]
fn a_large_state_survives_a_restart() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    populate(&sandbox);
    let before = sandbox.lists();
    assert_eq!(before.0.as_array().expect("sa array").len(), SAS);
    assert_eq!(before.1.as_array().expect("sp array").len(), SPS);
    let tables = (sandbox.ok(&["sa", "list"]), sandbox.ok(&["sp", "list"]));
    daemon.stop();

    assert_eq!(
        permission_bits(&sandbox.state_file()),
        0o600,
        "state.json holds keys"
    );
    assert_eq!(permission_bits(&sandbox.state_dir()), 0o700);

    let _daemon = sandbox.start();
    assert_eq!(
        sandbox.lists(),
        before,
        "the state changed across a restart"
    );
    assert_eq!(
        (sandbox.ok(&["sa", "list"]), sandbox.ok(&["sp", "list"])),
        tables
    );
    // The restored state is live: it still enforces its rules and takes changes.
    let dup = sandbox.run(&sa_args(7).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!dup.status.success());
    sandbox.ok(&["sp", "remove", "--remove-all"]);
    sandbox.ok(&["sa", "remove", "--remove-all"]);
    assert_eq!(
        sandbox.lists(),
        (serde_json::json!([]), serde_json::json!([]))
    );
}

#[test]
fn the_socket_is_root_only_and_a_second_daemon_is_refused() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    assert_eq!(permission_bits(&sandbox.socket()), 0o600);

    // Same socket: refused, and the first daemon keeps serving.
    let stderr = sandbox.refused();
    assert!(
        stderr.contains("another xipsec daemon answers on"),
        "{stderr}"
    );
    // Same state directory, other socket: refused too.
    let other = sandbox.dir.path().join("other.sock");
    let mut third = std::process::Command::new(xipsec_testkit::daemon::xipsec_bin());
    third
        .args(["daemon", "--no-datapath", "--state-dir"])
        .arg(sandbox.state_dir())
        .arg("--socket")
        .arg(&other);
    let stderr = xipsec_testkit::daemon::refused(third);
    assert!(
        stderr.contains("in use by another xipsec daemon"),
        "{stderr}"
    );
    assert!(!other.exists(), "a refused daemon left a socket behind");
    sandbox.ok(&["status"]);

    // A daemon killed with -9 leaves its socket; the next one replaces it.
    daemon.kill9();
    assert!(sandbox.socket().exists());
    let daemon = sandbox.start();
    sandbox.ok(&["status"]);
    daemon.stop();
}
