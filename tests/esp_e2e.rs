//! End to end between two xipsec hosts (two namespaces, a veth, a daemon on each side):
//! ping6, 1,400-byte UDP and a 10 MB TCP transfer over ESP; a capture on the veth sees only ESP;
//! a bit-flipped packet, a replayed packet, an unknown SPI and clear traffic for an `ipsec`
//! policy are each dropped and counted; kill -9 of one daemon stops the flow without leaking
//! plaintext, and a restart brings it back.

use std::{path::Path, process::Stdio, time::Duration};

use ipsec_common::abi::XIPSEC_MARK;
use ipsec_tests::{
    daemon::Daemon,
    netns::VethPair,
    require_root,
    traffic::{Capture, fixture, py},
};

/// A pair of SAs and SPs on `d` protecting everything between `me` and `peer`.
fn configure(
    d: &Daemon,
    (me, peer): (&str, &str),
    (out_spi, in_spi): (&str, &str),
    mode: &str,
    enc: (&str, &str),
    integ: (&str, &str),
) {
    for (name, src, dst, spi) in [("out", me, peer, out_spi), ("in", peer, me, in_spi)] {
        d.ok(&[
            "sa",
            "add",
            "--sa-source",
            src,
            "--sa-destination",
            dst,
            "--sa-mode",
            mode,
            "--sa-spi",
            spi,
            "--encryption-algorithm",
            enc.0,
            "--encryption-key",
            enc.1,
            "--integrity-algorithm",
            integ.0,
            "--integrity-key",
            integ.1,
            "--sa-name",
            &format!("sa-{name}"),
        ]);
    }
    for (dir, src, dst, sa) in [("out", me, peer, "sa-out"), ("in", peer, me, "sa-in")] {
        d.ok(&[
            "sp",
            "add",
            "--sp-source",
            &format!("{src}/128"),
            "--sp-destination",
            &format!("{dst}/128"),
            "--source-port",
            "any",
            "--destination-port",
            "any",
            "--upper-layer-protocol",
            "any",
            "--flow-direction",
            dir,
            "--action",
            "ipsec",
            "--sa-name",
            sa,
            "--sp-name",
            &format!("protect-{dir}"),
        ]);
    }
}

fn ping(ns: &str, addr: &str) -> bool {
    VethPair::exec(ns, &["ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("ping")
        .success()
}

/// Every captured IPv6 packet between the two hosts is ESP (or a fragment of it); ND aside.
fn assert_only_esp(seen: &str, context: &str) {
    let mut esp = 0;
    for line in seen.lines() {
        if line.contains("ICMP6, neighbor") || line.contains("ICMP6, router") {
            continue;
        }
        assert!(
            line.contains("ESP") || line.contains("frag ("),
            "{context}: plaintext on the wire: {line}\n{seen}"
        );
        esp += 1;
    }
    assert!(esp > 0, "{context}: the capture saw no ESP at all:\n{seen}");
}

fn sa_field(d: &Daemon, sa: &str, field: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["sa", "list", "--formatter", "json"])).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .find(|s| s["name"] == sa)
        .and_then(|s| s[field].as_u64())
        .unwrap_or_else(|| panic!("{sa}.{field} missing"))
}

fn stat(d: &Daemon, reason: &str) -> u64 {
    let v: serde_json::Value =
        serde_json::from_str(&d.ok(&["stats", "--formatter", "json"])).expect("JSON");
    v.as_array()
        .expect("array")
        .iter()
        .find(|s| s["reason"] == reason)
        .and_then(|s| s["packets"].as_u64())
        .unwrap_or_else(|| panic!("stat {reason} missing: {v}"))
}

fn inject(ns: &str, iface: &str, pcap: &Path, index: usize, mode: &str) {
    let ok = VethPair::exec(ns, &["python3"])
        .arg(fixture("inject.py"))
        .args([
            iface,
            pcap.to_str().expect("utf-8"),
            &index.to_string(),
            mode,
            &XIPSEC_MARK.to_string(),
        ])
        .status()
        .expect("inject.py")
        .success();
    assert!(ok, "injecting a frame failed");
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
fn two_hosts_protect_traffic_end_to_end() {
    if !require_root("two_hosts_protect_traffic_end_to_end") {
        return;
    }
    let net = VethPair::new("xe2", 0x73);
    let mut a = Daemon::start("e2ea", &net.ns_a, &net.if_a);
    let b = Daemon::start("e2eb", &net.ns_b, &net.if_b);
    let enc = ("aes128-cbc", "0x000102030405060708090a0b0c0d0e0f");
    let integ = (
        "hmac-sha2-256",
        "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    );
    configure(
        &a,
        (&net.addr_a, &net.addr_b),
        ("0x1001", "0x1002"),
        "transport",
        enc,
        integ,
    );
    configure(
        &b,
        (&net.addr_b, &net.addr_a),
        ("0x1002", "0x1001"),
        "transport",
        enc,
        integ,
    );
    let dir = a.dir.clone();
    // Each side's capture sees everything that side sends (taps run after TC egress), but not
    // the ESP its XDP hands to AF_XDP (XDP runs before taps): capture both ends.
    let between = "ip6 and src net fd00:73::/64 and dst net fd00:73::/64";
    let (wire_a, wire_b) = (dir.join("wire-a.pcap"), dir.join("wire-b.pcap"));
    let cap_a = Capture::start(&net.ns_a, &net.if_a, &wire_a, between);
    let cap_b = Capture::start(&net.ns_b, &net.if_b, &wire_b, between);

    assert!(
        ping(&net.ns_a, &net.addr_b),
        "ping6 over ESP: {}\n{}",
        a.log(),
        b.log()
    );

    // 1,400-byte UDP: the ESP packet exceeds the 1,500-byte MTU, is fragmented and reassembled.
    let recv = py(&net.ns_b, &["udp-recv", &net.addr_b, "9400", "2", "sizes"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver");
    std::thread::sleep(Duration::from_millis(300));
    py(
        &net.ns_a,
        &["udp-send", &net.addr_b, "9400", "3", "x", "1400"],
    )
    .status()
    .expect("sender");
    let got = String::from_utf8_lossy(&recv.wait_with_output().expect("receiver").stdout)
        .trim()
        .to_string();
    assert_eq!(got, "3 1400 1400 1400", "1,400-byte datagrams over ESP");

    // 10 MB over TCP with matching checksums.
    let sink = py(&net.ns_b, &["tcp-sink", &net.addr_b, "9500", "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sink");
    std::thread::sleep(Duration::from_millis(500));
    let source = py(&net.ns_a, &["tcp-source", &net.addr_b, "9500", "10"])
        .output()
        .expect("source");
    let sent = String::from_utf8_lossy(&source.stdout).trim().to_string();
    let received = String::from_utf8_lossy(&sink.wait_with_output().expect("sink").stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    assert!(
        sent.starts_with("10000000 "),
        "source: {sent} {}\na stats: {}\nb stats: {}\na sa: {}\nb sa: {}",
        String::from_utf8_lossy(&source.stderr),
        a.ok(&["stats"]),
        b.ok(&["stats"]),
        a.ok(&["sa", "list"]),
        b.ok(&["sa", "list"])
    );
    assert_eq!(received, sent, "10 MB over ESP must arrive intact");

    assert_only_esp(&cap_a.stop(), "protected traffic sent by a");
    assert_only_esp(&cap_b.stop(), "protected traffic sent by b");
    assert!(
        stat(&b, "esp_xsk_received") > 1000,
        "b receives ESP by AF_XDP: {}",
        b.ok(&["stats"])
    );
    assert!(
        sa_field(&a, "sa-out", "packets") > 1000,
        "outbound SA counts packets"
    );
    assert!(
        sa_field(&b, "sa-in", "packets") > 1000,
        "inbound SA counts packets"
    );

    // One small ESP packet a -> b to tamper with (captured where it leaves).
    let one = dir.join("one.pcap");
    let cap = Capture::start(
        &net.ns_a,
        &net.if_a,
        &one,
        "ip6 proto 50 and src fd00:73::1",
    );
    assert!(ping(&net.ns_a, &net.addr_b));
    let _ = cap.stop();

    let before = sa_field(&b, "sa-in", "auth_failures");
    inject(&net.ns_a, &net.if_a, &one, 0, "flip");
    assert_eq!(
        sa_field(&b, "sa-in", "auth_failures"),
        before + 1,
        "a bit-flipped packet is an auth failure"
    );

    let before = sa_field(&b, "sa-in", "replay_drops");
    inject(&net.ns_a, &net.if_a, &one, 0, "raw");
    assert_eq!(
        sa_field(&b, "sa-in", "replay_drops"),
        before + 1,
        "a replayed packet is a replay drop"
    );

    let before = stat(&b, "drop_unknown_spi");
    inject(&net.ns_a, &net.if_a, &one, 0, "spi");
    assert_eq!(
        stat(&b, "drop_unknown_spi"),
        before + 1,
        "ESP with an unknown SPI is dropped and counted"
    );

    let before = stat(&b, "drop_ipsec_clear");
    inject(&net.ns_a, &net.if_a, &one, 0, "clear-udp");
    assert_eq!(
        stat(&b, "drop_ipsec_clear"),
        before + 1,
        "clear traffic for an ipsec policy is dropped and counted"
    );

    // kill -9 of a: the flow stops, and nothing leaves in clear.
    a.kill9();
    let down = dir.join("down.pcap");
    let cap = Capture::start(&net.ns_a, &net.if_a, &down, "ip6 and not icmp6[0] >= 133");
    assert!(
        !ping(&net.ns_a, &net.addr_b),
        "with its daemon dead, a must not reach b"
    );
    let seen = cap.stop();
    assert!(
        !seen.contains("ICMP6, echo"),
        "plaintext left a while its daemon was dead: {seen}"
    );
    a.spawn();
    assert!(
        ping(&net.ns_a, &net.addr_b),
        "restart brings the flow back: {}",
        a.log()
    );
}
