//! The control socket's limits against the real `xipsec daemon --no-datapath` and the real CLI:
//! an over-size request, one connection more than the cap and a non-root peer are each refused
//! with one clear error line, change nothing, are logged, and the daemon keeps serving.
//!
//! The non-root test needs root (to run the client as uid 65534 with `setpriv`): without root it
//! fails under `CI=true` and otherwise prints why and passes. The idle timeout is tested in
//! `daemon::socket`'s unit tests with a short timeout (the default is 30 s).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipsec_user::cli::client;
use ipsec_user::daemon::protocol::{Request, Response};
use ipsec_user::daemon::{MAX_CONNECTIONS, MAX_REQUEST};
use ipsec_user::model::SpAddArgs;
use xipsec_testkit::{
    cli::{SA_EXAMPLE, run_on, single_error_line},
    daemon::{Sandbox, xipsec_bin},
};

#[test]
fn an_over_size_request_is_refused_and_the_next_client_is_served() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    // One byte over the limit, newline included: an `sp add` with a huge name.
    let overhead = serde_json::to_vec(&Request::SpAdd(SpAddArgs {
        sp_name: Some(String::new()),
        ..SpAddArgs::default()
    }))
    .expect("encoding a request")
    .len();
    let request = Request::SpAdd(SpAddArgs {
        sp_name: Some("n".repeat(MAX_REQUEST - overhead)),
        ..SpAddArgs::default()
    });
    let answer = client::call(&sandbox.socket(), &request).expect("the daemon answers");
    let Response::Error { message } = answer else {
        panic!("expected an error, got {answer:?}");
    };
    assert_eq!(
        message,
        format!("request longer than {MAX_REQUEST} bytes refused; nothing changed")
    );
    // Exactly at the limit is read and handed to the model (which refuses the name, not the
    // size).
    let request = Request::SpAdd(SpAddArgs {
        sp_name: Some("n".repeat(MAX_REQUEST - overhead - 1)),
        ..SpAddArgs::default()
    });
    let answer = client::call(&sandbox.socket(), &request).expect("the daemon answers");
    assert!(
        matches!(&answer, Response::Error { message } if !message.contains("longer than")),
        "{answer:?}"
    );
    let status = sandbox.ok(&["status", "--formatter", "json"]);
    assert!(status.contains("\"sps\": 0"), "{status}");
    // Everything the daemon logged (`RUST_LOG=warn`), once it is gone.
    daemon.kill9();
    let log = sandbox.log();
    assert!(
        log.contains("control request refused: longer than the limit"),
        "{log}"
    );
}

#[test]
fn one_connection_over_the_cap_is_refused_until_one_closes() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    // Each held connection has been served once, so it surely holds a slot.
    let mut held: Vec<UnixStream> = (0..MAX_CONNECTIONS)
        .map(|_| {
            let stream = UnixStream::connect(sandbox.socket()).expect("connecting");
            (&stream)
                .write_all(b"\"status\"\n")
                .expect("writing a request");
            let mut answer = String::new();
            BufReader::new(&stream)
                .read_line(&mut answer)
                .expect("reading an answer");
            assert!(answer.starts_with("{\"status\":"), "{answer}");
            stream
        })
        .collect();
    let run = sandbox.run(SA_EXAMPLE);
    let line = single_error_line(&run, "sa add as the 65th client");
    assert_eq!(
        line,
        format!(
            "error: too many control connections ({MAX_CONNECTIONS} at once); try again when \
             another command has finished"
        )
    );
    held.pop();
    // The freed slot comes back once the daemon sees the hang-up; then nothing was added.
    let deadline = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let run = sandbox.run(&["sa", "list", "--formatter", "json"]);
        if run.status.success() {
            break run.stdout;
        }
        assert!(run.stderr.contains("too many"), "{run:?}");
        assert!(Instant::now() < deadline, "no slot came back: {run:?}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(listed.trim(), "[]", "the refused sa add added nothing");
    sandbox.ok(SA_EXAMPLE);
    drop(held);
    // Everything the daemon logged (`RUST_LOG=warn`), once it is gone.
    daemon.kill9();
    let log = sandbox.log();
    assert!(
        log.contains("control connection refused: too many connections"),
        "{log}"
    );
}

/// Whether this process may run a client as another user; fails under `CI=true` otherwise.
fn can_switch_user() -> bool {
    xipsec_testkit::skip_unless(
        xipsec_testkit::is_root(),
        "a_non_root_peer_is_refused_by_its_credentials_and_changes_nothing",
        "needs root to run the client as uid 65534 (run with sudo)",
    )
}

/// `xipsec ARGS` as uid/gid 65534 with no supplementary groups.
fn run_as_nobody(socket: &std::path::Path, args: &[&str]) -> xipsec_testkit::cli::Run {
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(xipsec_bin())
        .args(args)
        .env("XIPSEC_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("running setpriv (util-linux)");
    output.into()
}

#[test]
fn a_non_root_peer_is_refused_by_its_credentials_and_changes_nothing() {
    if !can_switch_user() {
        return;
    }
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    sandbox.ok(SA_EXAMPLE);
    let before = sandbox.lists();
    // With the socket at its 0600 the kernel refuses the connect itself: the CLI's own message.
    let run = run_as_nobody(&sandbox.socket(), &["sa", "list"]);
    let line = single_error_line(&run, "sa list as nobody, socket 0600");
    assert!(line.starts_with("error: permission denied on "), "{line}");
    // Open the file permissions wide so that only the daemon's SO_PEERCRED check stands between
    // uid 65534 and the daemon: the refusal must now come from the daemon.
    for (path, mode) in [
        (sandbox.dir.path().to_owned(), 0o711),
        (sandbox.socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .expect("opening the socket's permissions");
    }
    let expected = "error: permission denied: this xipsec daemon's control socket serves root only \
                    (uid 0), not uid 65534 (gid 65534); run as root, or start the daemon with \
                    --control-group naming one of your groups";
    for args in [
        &["sa", "list"][..],
        &["sa", "remove", "--remove-all"][..],
        &["status"][..],
    ] {
        let run = run_as_nobody(&sandbox.socket(), args);
        assert_eq!(single_error_line(&run, "a command as nobody"), expected);
    }
    assert_eq!(sandbox.lists(), before, "a refused peer changed nothing");
    // Root is still served on the same, now world-writable, socket.
    let run = run_on(&sandbox.socket(), &["sa", "list"]);
    assert!(run.status.success(), "{run:?}");
    // Everything the daemon logged (`RUST_LOG=warn`), once it is gone.
    daemon.kill9();
    let log = sandbox.log();
    assert!(
        log.contains("control connection refused: peer is neither root nor in the control group")
            && log.contains("uid=65534"),
        "{log}"
    );
}
