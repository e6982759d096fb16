//! Packets the kernel drops at the TUN device are counted (`esp_tun_queue_drops`), and a dead
//! outbound worker is recorded and leaves its flows failing closed: the TUN keeps queueing,
//! then dropping, and nothing is sent.
//!
//! One engine in a fresh namespace (`xengtd`) whose outbound worker is made to panic
//! (`XIPSEC_TEST_PANIC_ENGINE=outbound`; this file holds one test so the variable reaches no
//! other). Needs root; without it the test fails when `CI=true` and otherwise prints why.

use std::fs::File;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use ipsec_user::engine::{self, EngineConfig, EspEngine};

const NS: &str = "xengtd";

fn ip(args: &[&str]) {
    let status = Command::new("ip").args(args).status().expect("running ip");
    assert!(status.success(), "ip {args:?} failed");
}

fn stat(engine: &EspEngine, name: &str) -> u64 {
    engine
        .stats()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

#[test]
fn a_dead_outbound_worker_fails_closed_and_tun_drops_are_counted() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        assert!(
            !ipsec_user::testing::ci(),
            "run as root (sudo -E cargo test -p ipsec-user --test engine_tun_drops)"
        );
        eprintln!("skipped: needs root for namespaces and TUN; run as root");
        return;
    }
    let _ = Command::new("ip").args(["netns", "del", NS]).output();
    ip(&["netns", "add", NS]);
    ip(&["-n", NS, "link", "set", "lo", "up"]);
    ip(&["-n", NS, "addr", "add", "fd00:ed::1/128", "dev", "lo"]);
    // SAFETY: set before any thread of this test binary reads the environment (one test here).
    unsafe { std::env::set_var(engine::PANIC_ENV, "outbound") };
    let state = tempfile::tempdir().expect("temp dir");
    let (engine, sender) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let netns = File::open(format!("/var/run/netns/{NS}")).expect("opening the netns");
                // SAFETY: an open netns descriptor; only this thread changes namespace.
                let rc = unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                let engine =
                    EspEngine::start(EngineConfig::new(state.path())).expect("starting the engine");
                let sender = UdpSocket::bind("[fd00:ed::1]:0").expect("binding a udp socket");
                (engine, sender)
            })
            .join()
            .expect("the netns thread panicked")
    });
    ip(&[
        "-n",
        NS,
        "-6",
        "route",
        "add",
        "fd00:ed::99/128",
        "dev",
        "xipsec0",
    ]);
    let start = Instant::now();
    while engine::death().is_none() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let death = engine::death().expect("the dead worker was recorded");
    assert!(death.contains("xipsec-esp-out"), "{death}");
    assert_eq!(stat(&engine, "esp_worker_deaths"), 1);
    assert_eq!(stat(&engine, "esp_tun_queue_drops"), 0);

    for _ in 0..2_000 {
        // Each send succeeds locally; the TUN queues what nobody reads, then drops.
        sender
            .send_to(&[0u8; 100], "[fd00:ed::99]:9")
            .expect("sending a datagram");
    }
    let drops = stat(&engine, "esp_tun_queue_drops");
    assert!(
        (1_000..=2_000).contains(&drops),
        "the TUN queue holds a few hundred packets; {drops} drops counted"
    );
    assert_eq!(
        stat(&engine, "esp_encap_ok"),
        0,
        "nothing was protected or sent"
    );
    drop(engine);
    let _ = Command::new("ip").args(["netns", "del", NS]).output();
}
