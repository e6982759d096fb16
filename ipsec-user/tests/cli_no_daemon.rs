//! No daemon: every client command says so, says how to start one, and exits non-zero; whether
//! the socket is missing or left behind by a dead daemon, and whether it is given by `--socket`
//! or `XIPSEC_SOCKET`.

use std::process::{Command, Stdio};

use xipsec_testkit::{
    cli::{SA_EXAMPLE, SP_EXAMPLE},
    daemon::xipsec_bin,
};

fn commands() -> Vec<Vec<&'static str>> {
    vec![
        SA_EXAMPLE.to_vec(),
        vec!["sa", "list"],
        vec!["sa", "list", "--formatter", "json"],
        vec!["sa", "remove", "--sa-name", "sa1"],
        vec!["sa", "remove", "--remove-all"],
        SP_EXAMPLE.to_vec(),
        vec!["sp", "list"],
        vec!["sp", "remove", "--sp-name", "sp1"],
        vec!["sp", "remove", "--remove-all"],
        vec!["stats"],
        vec!["status", "--formatter", "xml"],
        vec!["esxcli", "network", "ip", "ipsec", "sa", "list"],
    ]
}

fn expect_no_daemon(socket: &std::path::Path, args: &[&str], via_flag: bool) {
    let mut command = Command::new(xipsec_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .env_remove("XIPSEC_SOCKET");
    if via_flag {
        command.arg("--socket").arg(socket);
    } else {
        command.env("XIPSEC_SOCKET", socket);
    }
    let output = command.output().expect("running xipsec");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    assert!(
        !output.status.success(),
        "{args:?} succeeded without a daemon"
    );
    assert!(output.stdout.is_empty(), "{args:?} printed to stdout");
    assert_eq!(
        stderr,
        format!(
            "error: no xipsec daemon answers on {} (start one with: xipsec daemon --interface \
             IFACE)\n",
            socket.display()
        ),
        "{args:?}"
    );
}

#[test]
fn every_command_reports_the_missing_daemon() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let missing = dir.path().join("missing.sock");
    // A socket file nobody listens on: what a daemon killed with -9 leaves behind.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).expect("binding a socket"));
    assert!(stale.exists());
    for args in commands() {
        for socket in [&missing, &stale] {
            for via_flag in [false, true] {
                expect_no_daemon(socket, &args, via_flag);
            }
        }
    }
}

#[test]
fn the_default_socket_is_named() {
    let output = Command::new(xipsec_bin())
        .args(["sa", "list"])
        .env_remove("XIPSEC_SOCKET")
        .output()
        .expect("running xipsec");
    let stderr = String::from_utf8(output.stderr).expect("stderr is UTF-8");
    if std::path::Path::new("/run/xipsec/control.sock").exists() {
        // A real daemon runs on this machine; nothing to check about its absence.
        return;
    }
    assert!(!output.status.success());
    assert!(stderr.contains("/run/xipsec/control.sock"), "{stderr}");
}
