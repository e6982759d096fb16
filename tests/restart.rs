//! Restart with a real daemon on a veth: 500 SAs and 2,000 SPs survive a stop and a kill -9 with
//! identical lists and identical map contents; while the daemon is down the pinned programs keep
//! enforcing (discard drops, protected traffic never leaves in clear); verdicts are unchanged
//! after the restart, and ESP works after it: the protected flow leaves only as ESP (captured
//! on the far side) and scapy decrypts it with the configured keys, so the restored SA has its
//! keys.

use std::sync::Arc;

use ipsec_tests::{
    esp_oracle::{EspSa, Expect, assert_confidential},
    maps::pinned_meaning,
};
use xipsec_testkit::{
    as_root, capture::Capture, cli::SpArgs, daemon::Node, netns::VethPair, traffic,
};

const SECRET: &str = "RESTART-SECRET";

/// The protected SA a -> b (the flow to UDP port 9103).
fn protected_sa() -> EspSa {
    EspSa {
        name: "to-b".into(),
        spi: 0x7200,
        src: "fd00:72::1".into(),
        dst: "fd00:72::2".into(),
        mode: "transport",
        enc: "aes128-cbc",
        enc_key: Some("0x00112233445566778899aabbccddeeff".into()),
        integ: "hmac-sha2-256",
        integ_key: "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff".into(),
    }
}

/// The protected flow leaves a only as ESP under the SA (captured on b, which has no XDP), and
/// scapy decrypts it to the plaintext with the configured keys.
fn assert_esp_works(net: &VethPair, d: &Node, when: &str) {
    let sa = protected_sa();
    let _absorb = traffic::EspAbsorb::start(&net.ns_b);
    let cap = Capture::start_with_marker_from(
        &net.ns_b,
        &net.if_b,
        &d.dir().join("esp.pcap"),
        &[sa.spi],
        (&net.ns_a, &net.if_a),
    );
    let sent = traffic::py(&net.ns_a, &["udp-send", &net.addr_b, "9103", "4", SECRET])
        .status()
        .expect("sending protected UDP");
    assert!(sent.success(), "{when}: udp-send failed");
    let frames = cap.stop();
    frames.assert_only_esp(when);
    assert_eq!(frames.esp_count(), 4, "{when}: one ESP packet per datagram");
    assert_confidential(
        &frames,
        std::slice::from_ref(&sa),
        4,
        &Expect {
            flows: &[(sa.src.as_str(), sa.dst.as_str())],
            protocols: &[17],
            markers: &[SECRET.as_bytes()],
        },
        when,
    );
}

/// Datagrams delivered from `from_ns` to `to_addr`:`port` (receiver in `to_ns`).
fn udp(from_ns: &str, to_ns: &str, to_addr: &str, port: u16) -> usize {
    traffic::udp_delivered((from_ns, to_ns), to_addr, port, (4, "restart-test"), "1.2")
}

/// `list` JSON without the counters, which start from zero in a new process.
fn listing(d: &Node, what: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&d.ok(&[what, "list", "--formatter", "json"])).expect("list JSON");
    for item in v.as_array_mut().expect("array") {
        let obj = item.as_object_mut().expect("object");
        for counter in [
            "packets",
            "bytes",
            "auth_failures",
            "replay_drops",
            "errors",
        ] {
            obj.remove(counter);
        }
    }
    v
}

struct Verdicts {
    discarded: usize,
    passed: usize,
    protected_in_clear: usize,
}

fn verdicts(net: &VethPair) -> Verdicts {
    Verdicts {
        discarded: udp(&net.ns_b, &net.ns_a, &net.addr_a, 9101),
        passed: udp(&net.ns_b, &net.ns_a, &net.addr_a, 9102),
        protected_in_clear: udp(&net.ns_a, &net.ns_b, &net.addr_b, 9103),
    }
}

fn assert_enforced(v: &Verdicts, when: &str) {
    assert_eq!(v.discarded, 0, "{when}: discard policy must drop");
    assert_eq!(v.passed, 4, "{when}: traffic without policy must pass");
    assert_eq!(
        v.protected_in_clear, 0,
        "{when}: protected traffic must never arrive in clear"
    );
}

#[test]
fn restart_keeps_state_maps_and_verdicts() {
    as_root("restart_keeps_state_maps_and_verdicts", || {
        let net = VethPair::new("xrs", 0x72);
        let d = Node::start(&net.ns_a, &net.if_a);

        d.ok(&SpArgs {
            dport: "9101",
            proto: "udp",
            action: "discard",
            sa: None,
            ..SpArgs::ipsec("fd00:72::2/128", "fd00:72::1/128", "in", "drop-9101")
        }
        .args());
        // 500 SAs and 2,000 SPs from 8 concurrent clients.
        let d = Arc::new(std::sync::Mutex::new(d));
        let socket = d.lock().expect("lock").socket();
        let workers: Vec<_> = (0..8)
            .map(|w| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let run = |args: Vec<String>| {
                        let out = std::process::Command::new(xipsec_testkit::daemon::xipsec_bin())
                            .arg("--socket")
                            .arg(&socket)
                            .args(&args)
                            .output()
                            .expect("xipsec");
                        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
                    };
                    for i in (w..500).step_by(8) {
                        run(format!(
                            "sa add -s 2001:db8:72::{i:x} -d 2001:db8:73::{i:x} -m transport -p 0x{:x} -e aes128-cbc -k 0x00112233445566778899aabbccddeeff -i hmac-sha1 -K 0x00112233445566778899aabbccddeeff00112233 -n bulk-sa-{i}",
                            0x10000 + i
                        ).split(' ').map(String::from).collect());
                    }
                    for i in (w..2000).step_by(8) {
                        let action = ["none", "discard", "ipsec"][i % 3];
                        let mut args: Vec<String> = format!(
                            "sp add --sp-source 2001:db8:{:x}::/48 --sp-destination 2001:db8:{:x}:{:x}::/64 --source-port any --destination-port {} --upper-layer-protocol tcp --flow-direction {} --action {action} --sp-name bulk-sp-{i}",
                            0x100 + i % 7, 0x200 + i % 5, i, 1 + i % 1000, if i % 2 == 0 { "in" } else { "out" }
                        ).split(' ').map(String::from).collect();
                        if action == "ipsec" {
                            args.extend(["--sa-name".into(), format!("bulk-sa-{}", i % 500)]);
                        }
                        run(args);
                    }
                })
            })
            .collect();
        for w in workers {
            w.join().expect("client thread");
        }
        let mut d = Arc::try_unwrap(d)
            .ok()
            .expect("sole owner")
            .into_inner()
            .expect("lock");
        d.ok_args(&protected_sa().sa_add_args());
        d.ok(&SpArgs {
            dport: "9103",
            proto: "udp",
            sa: Some("to-b"),
            ..SpArgs::ipsec("fd00:72::1/128", "fd00:72::2/128", "out", "protect-9103")
        }
        .args());

        let sas = listing(&d, "sa");
        let sps = listing(&d, "sp");
        assert_eq!(sas.as_array().expect("array").len(), 501);
        assert_eq!(sps.as_array().expect("array").len(), 2002);
        let maps = pinned_meaning(&d.pin_dir());
        assert_eq!(
            maps.1.len(),
            2002 * ipsec_common::abi::RULE_KINDS as usize,
            "every SP is one rule of each kind in the kernel (its selector, and its two fragment rules)"
        );
        assert_enforced(&verdicts(&net), "running");
        assert_esp_works(&net, &d, "running");

        for (how, stop) in [("stop", true), ("kill -9", false)] {
            if stop {
                d.stop();
            } else {
                d.kill9();
            }
            assert_enforced(&verdicts(&net), &format!("daemon down after {how}"));
            d.spawn();
            assert_eq!(listing(&d, "sa"), sas, "SA list after {how} and restart");
            assert_eq!(listing(&d, "sp"), sps, "SP list after {how} and restart");
            assert_eq!(
                pinned_meaning(&d.pin_dir()),
                maps,
                "map contents after {how} and restart"
            );
            assert_enforced(&verdicts(&net), &format!("after {how} and restart"));
            assert_esp_works(&net, &d, &format!("after {how} and restart"));
        }
    });
}
