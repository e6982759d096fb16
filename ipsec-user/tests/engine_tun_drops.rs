//! Packets the kernel drops at the TUN device are counted (`esp_tun_queue_drops`), and a dead
//! outbound worker is recorded and leaves its flows failing closed: the TUN keeps queueing,
//! then dropping, and nothing is sent.
//!
//! One engine in a fresh namespace (the test kit's, `xetd…`) whose outbound worker is made to panic
//! (`XIPSEC_TEST_PANIC_ENGINE=outbound`; this file holds one test so the variable reaches no
//! other). Needs root; without it the test fails when `CI=true` and otherwise prints why.

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use ipsec_user::engine::{self, EngineConfig, EspEngine};
use xipsec_testkit::{netns::Netns, require_root};

/// The engine's counter `name` (which must exist).
fn stat(engine: &EspEngine, name: &str) -> u64 {
    let stats: std::collections::HashMap<String, u64> = engine.stats().into_iter().collect();
    *stats.get(name).unwrap_or_else(|| panic!("no stat {name}"))
}
#[test]
fn a_dead_outbound_worker_fails_closed_and_tun_drops_are_counted() {
    if !require_root("a_dead_outbound_worker_fails_closed_and_tun_drops_are_counted") {
        return;
    }
    let ns = Netns::new("xetd");
    ns.ip(&["addr", "add", "fd00:ed::1/128", "dev", "lo"]);
    // SAFETY: set before any thread of this test binary reads the environment (one test here).
    unsafe { std::env::set_var(engine::PANIC_ENV, "outbound") };
    let state = tempfile::tempdir().expect("temp dir");
    let (engine, sender) = ns.run(|| {
        let engine =
            EspEngine::start(EngineConfig::new(state.path())).expect("starting the engine");
        let sender = UdpSocket::bind("[fd00:ed::1]:0").expect("binding a udp socket");
        (engine, sender)
    });
    ns.ip(&["-6", "route", "add", "fd00:ed::99/128", "dev", "xipsec0"]);
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
}
