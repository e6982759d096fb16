//! A dead ESP engine thread is not silent: the daemon logs it and exits non-zero, so a
//! supervisor restarts it (protected flows fail closed meanwhile: the pinned programs keep
//! redirecting to a TUN nobody reads, or dropping once it is gone).
//!
//! Runs the real daemon with its datapath on a veth of a fresh network namespace (the test
//! kit's, named `xes…`), with the test-only fault injection `XIPSEC_TEST_PANIC_ENGINE`. Needs root (namespaces, BPF, TUN);
//! without it the test fails when `CI=true` and otherwise prints why and passes.

use std::process::Child;
use std::time::{Duration, Instant};

use xipsec_testkit::{daemon::Sandbox, netns::Netns, require_root};

/// A fresh namespace with a veth pair of its own (the daemon attaches only to Ethernet
/// devices); deleted on drop.
fn namespace() -> Netns {
    let ns = Netns::new("xes");
    ns.ip(&[
        "link", "add", "xengsup0", "type", "veth", "peer", "name", "xengsup1",
    ]);
    ns.ip(&["link", "set", "xengsup0", "up"]);
    ns.ip(&["link", "set", "xengsup1", "up"]);
    ns
}

/// `xipsec daemon` on the namespace's veth, with `fault` injected (if any).
fn daemon(sandbox: &Sandbox, fault: Option<&str>) -> Child {
    let mut command = sandbox.daemon_command();
    command
        .env("RUST_LOG", "info")
        .env_remove("XIPSEC_TEST_PANIC_ENGINE");
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
    if !require_root("a_dead_engine_thread_makes_the_daemon_exit_non_zero_and_say_why") {
        return;
    }
    let ns = namespace();
    // Without a fault the daemon serves on: the exits below come from the dead threads.
    let sandbox = Sandbox::attached(ns.name(), "xengsup0");
    let mut healthy = daemon(&sandbox, None);
    let early = exited(&mut healthy, Duration::from_secs(3));
    assert!(early.is_none(), "the daemon did not start: {early:?}");
    // Our own child (ip netns exec execs the daemon), not yet reaped.
    xipsec_testkit::daemon::signal(&healthy, libc::SIGTERM);
    let (status, _) = exited(&mut healthy, Duration::from_secs(20)).expect("stopping on SIGTERM");
    assert!(status.success(), "a clean stop exits 0");

    for (fault, thread) in [("inbound", "xipsec-esp-in"), ("outbound", "xipsec-esp-out")] {
        // The same pin dir (what the stopped daemon left pinned, the next one takes over) and
        // state (empty) as the healthy run.
        let mut child = daemon(&sandbox, Some(fault));
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
