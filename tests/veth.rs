//! veth test: two namespaces, a real daemon on side a. `discard` drops ping6/UDP/TCP and counts
//! it; `none` passes; `ipsec` (no ESP path yet) drops and nothing of that flow reaches the wire;
//! removing the policy restores traffic.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use ipsec_tests::{daemon::Daemon, netns::VethPair, require_root, traffic};

fn ping(ns: &str, addr: &str) -> bool {
    VethPair::exec(ns, &["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running ping")
        .success()
}

fn udp_delivered(net: &VethPair, port: u16) -> usize {
    traffic::udp_delivered(
        (&net.ns_b, &net.ns_a),
        &net.addr_a,
        port,
        (5, "hello"),
        "1.5",
    )
}

fn tcp_works(net: &VethPair, port: u16) -> bool {
    let mut server: Child = VethPair::exec(&net.ns_a, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["tcp-serve", &net.addr_a, &port.to_string(), "4"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the TCP server");
    std::thread::sleep(Duration::from_millis(400));
    let ok = VethPair::exec(&net.ns_b, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["tcp-check", &net.addr_a, &port.to_string(), "hello"])
        .status()
        .expect("TCP client")
        .success();
    let _ = server.kill();
    let _ = server.wait();
    ok
}

fn sp_packets(d: &Daemon, name: &str) -> u64 {
    let out = d.ok(&["sp", "list", "--formatter", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("sp list JSON");
    let sp = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .find(|sp| sp["name"] == name)
        .unwrap_or_else(|| panic!("{name} not listed: {out}"));
    sp["packets"]
        .as_u64()
        .unwrap_or_else(|| panic!("no packets field: {sp}"))
}

#[test]
fn policies_act_on_real_traffic() {
    if !require_root("policies_act_on_real_traffic") {
        return;
    }
    let net = VethPair::new("xvt", 0x71);
    let d = Daemon::start("veth", &net.ns_a, &net.if_a);
    let b_to_a = [
        "--sp-source",
        "fd00:71::2/128",
        "--sp-destination",
        "fd00:71::1/128",
        "--source-port",
        "any",
        "--destination-port",
        "any",
        "--upper-layer-protocol",
        "any",
        "--flow-direction",
        "in",
    ];

    assert!(ping(&net.ns_b, &net.addr_a), "baseline ping must work");
    assert_eq!(udp_delivered(&net, 9001), 5, "baseline UDP");
    assert!(tcp_works(&net, 9002), "baseline TCP");

    // discard: ping6, UDP and TCP from b are dropped and counted.
    d.ok(&[
        &["sp", "add"][..],
        &b_to_a,
        &["--action", "discard", "--sp-name", "drop-b"],
    ]
    .concat());
    assert!(!ping(&net.ns_b, &net.addr_a), "discard must drop ping6");
    assert_eq!(udp_delivered(&net, 9001), 0, "discard must drop UDP");
    assert!(!tcp_works(&net, 9002), "discard must drop TCP");
    assert!(
        sp_packets(&d, "drop-b") >= 9,
        "discard must count what it drops"
    );
    d.ok(&["sp", "remove", "--sp-name", "drop-b"]);

    // none: passes, counted.
    d.ok(&[
        &["sp", "add"][..],
        &b_to_a,
        &["--action", "none", "--sp-name", "pass-b"],
    ]
    .concat());
    assert!(ping(&net.ns_b, &net.addr_a), "none must pass ping6");
    assert_eq!(udp_delivered(&net, 9001), 5, "none must pass UDP");
    assert!(
        sp_packets(&d, "pass-b") >= 7,
        "none must count what it passes"
    );
    d.ok(&["sp", "remove", "--sp-name", "pass-b"]);

    // ipsec outbound from a (no ESP path yet): dropped before the wire, fail closed.
    d.ok(&[
        "sa",
        "add",
        "--sa-source",
        "fd00:71::1",
        "--sa-destination",
        "fd00:71::2",
        "--sa-mode",
        "transport",
        "--sa-spi",
        "0x1000",
        "--encryption-algorithm",
        "aes128-cbc",
        "--encryption-key",
        "0x00112233445566778899aabbccddeeff",
        "--integrity-algorithm",
        "hmac-sha2-256",
        "--integrity-key",
        "0x00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
        "--sa-name",
        "sa-b",
    ]);
    d.ok(&[
        "sp",
        "add",
        "--sp-source",
        "fd00:71::1/128",
        "--sp-destination",
        "fd00:71::2/128",
        "--source-port",
        "any",
        "--destination-port",
        "9003",
        "--upper-layer-protocol",
        "udp",
        "--flow-direction",
        "out",
        "--action",
        "ipsec",
        "--sa-name",
        "sa-b",
        "--sp-name",
        "protect-b",
    ]);
    let capture = VethPair::exec(
        &net.ns_b,
        &["tcpdump", "-i", &net.if_b, "-nn", "-l", "-A", "udp"],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("starting tcpdump");
    std::thread::sleep(Duration::from_millis(800));
    let sent = VethPair::exec(&net.ns_a, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["udp-send", &net.addr_b, "9003", "5", "SECRET-PLAINTEXT"])
        .status()
        .expect("sending protected UDP");
    assert!(sent.success());
    // Unprotected UDP to another port still leaves: the capture is live.
    let control = VethPair::exec(&net.ns_a, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["udp-send", &net.addr_b, "9004", "3", "CONTROL-CLEAR"])
        .status()
        .expect("sending clear UDP");
    assert!(control.success());
    std::thread::sleep(Duration::from_millis(800));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    let seen = String::from_utf8_lossy(&capture.wait_with_output().expect("tcpdump output").stdout)
        .into_owned();
    assert!(
        seen.contains("CONTROL-CLEAR"),
        "the capture must see clear traffic: {seen}"
    );
    assert!(
        !seen.contains("SECRET-PLAINTEXT"),
        "plaintext of a protected flow reached the wire: {seen}"
    );
    assert!(
        sp_packets(&d, "protect-b") >= 5,
        "ipsec drops must be counted"
    );
    let stats = d.ok(&["stats", "--formatter", "json"]);
    assert!(
        stats.contains("drop_ipsec_unavailable"),
        "stats must name the drop reason: {stats}"
    );

    // Removing the policy restores the flow.
    d.ok(&["sp", "remove", "--sp-name", "protect-b"]);
    let recv = VethPair::exec(&net.ns_b, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["udp-recv", &net.addr_b, "9003", "1.5"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("UDP receiver on b");
    std::thread::sleep(Duration::from_millis(300));
    let _ = VethPair::exec(&net.ns_a, &["python3"])
        .arg(traffic::fixture("traffic.py"))
        .args(["udp-send", &net.addr_b, "9003", "5", "now-clear"])
        .status();
    let out = recv.wait_with_output().expect("receiver output");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "5",
        "traffic must flow again after removal"
    );
    let _ = Command::new("true").status();
}
