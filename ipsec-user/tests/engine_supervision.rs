//! A dead ESP engine thread is not silent: the daemon logs it and exits non-zero, so a
//! supervisor restarts it (protected flows fail closed meanwhile: the pinned programs keep
//! redirecting to a TUN nobody reads, or dropping once it is gone).
//!
//! Runs the real daemon with its datapath on a veth of a fresh network namespace (`xengsup`), with
//! the test-only fault injection `XIPSEC_TEST_PANIC_ENGINE`. Needs root (namespaces, BPF, TUN);
//! without it the test fails when `CI=true` and otherwise prints why and passes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const XIPSEC: &str = env!("CARGO_BIN_EXE_xipsec");
const NS: &str = "xengsup";

fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        !ipsec_user::testing::ci(),
        "{test}: run as root (sudo -E cargo test -p ipsec-user --test engine_supervision)"
    );
    eprintln!("{test}: skipped: needs root for namespaces, BPF and TUN; run as root");
    false
}

/// The namespace, deleted on drop.
struct Namespace;

impl Namespace {
    fn new() -> Self {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
        for args in [
            &["netns", "add", NS][..],
            &["-n", NS, "link", "set", "lo", "up"][..],
            // The daemon attaches only to Ethernet devices: a veth pair of its own.
            &[
                "-n", NS, "link", "add", "xengsup0", "type", "veth", "peer", "name", "xengsup1",
            ][..],
            &["-n", NS, "link", "set", "xengsup0", "up"][..],
            &["-n", NS, "link", "set", "xengsup1", "up"][..],
        ] {
            let status = Command::new("ip").args(args).status().expect("running ip");
            assert!(status.success(), "ip {args:?} failed");
        }
        Self
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", NS]).output();
    }
}

/// `xipsec daemon` on the namespace's veth, with `fault` injected (if any).
fn daemon(dir: &tempfile::TempDir, fault: Option<&str>) -> Child {
    let mut command = Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            NS,
            XIPSEC,
            "daemon",
            "--interface",
            "xengsup0",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--socket")
        .arg(dir.path().join("s"))
        .arg("--pin-dir")
        .arg("/sys/fs/bpf/xengsup")
        .env("RUST_LOG", "info")
        .env_remove("XIPSEC_SOCKET")
        .env_remove("XIPSEC_TEST_PANIC_ENGINE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(fault) = fault {
        command.env("XIPSEC_TEST_PANIC_ENGINE", fault);
    }
    command.spawn().expect("starting the daemon")
}

/// Waits up to `timeout` for `child` to exit; its status and stderr, or `None` if it runs on.
fn exited(child: &mut Child, timeout: Duration) -> Option<(std::process::ExitStatus, String)> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(status) = child.try_wait().expect("polling the daemon") {
            let mut stderr = String::new();
            std::io::Read::read_to_string(
                child.stderr.as_mut().expect("piped stderr"),
                &mut stderr,
            )
            .expect("reading stderr");
            return Some((status, stderr));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[test]
fn a_dead_engine_thread_makes_the_daemon_exit_non_zero_and_say_why() {
    if !have_root("a_dead_engine_thread_makes_the_daemon_exit_non_zero_and_say_why") {
        return;
    }
    let _ns = Namespace::new();
    // Without a fault the daemon serves on: the exits below come from the dead threads.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut healthy = daemon(&dir, None);
    let early = exited(&mut healthy, Duration::from_secs(3));
    assert!(early.is_none(), "the daemon did not start: {early:?}");
    // SAFETY: our own child (ip netns exec execs the daemon), not yet reaped.
    unsafe { libc::kill(i32::try_from(healthy.id()).expect("pid"), libc::SIGTERM) };
    let (status, _) = exited(&mut healthy, Duration::from_secs(20)).expect("stopping on SIGTERM");
    assert!(status.success(), "a clean stop exits 0");

    for (fault, thread) in [("inbound", "xipsec-esp-in"), ("outbound", "xipsec-esp-out")] {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = daemon(&dir, Some(fault));
        let Some((status, stderr)) = exited(&mut child, Duration::from_secs(30)) else {
            let _ = child.kill();
            panic!("{fault}: the daemon ran on with a dead engine thread");
        };
        assert!(!status.success(), "{fault}: exit status {status}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with("error: ")
                && last.contains(&format!("esp engine thread {thread} died"))
                && last.contains("supervisor"),
            "{fault}: last line {last:?} of {stderr}"
        );
        assert!(
            stderr.contains("protected flows fail closed"),
            "{fault}: logged: {stderr}"
        );
    }
}
