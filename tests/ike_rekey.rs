//! Rekeying under load between two xipsec hosts that negotiate with each other (IKEv2, PSK,
//! transport mode): CHILD_SAs are rekeyed about every 10 s and the IKE SA about every 30 s for
//! two minutes, both sides scheduling rekeys (with jitter, so some collide, RFC 7296 §2.8.1),
//! while a paced TCP stream (every byte checked at the far end) and a ping every 20 ms run from
//! a to b.
//!
//! What must hold: the stream arrives whole and intact; captures on both ends hold no clear
//! frame (everything between the hosts is ESP or IKE); traffic moved through at least 8 ESP SPIs
//! each way (the CHILD_SAs really were replaced); the IKE SA's SPIs changed at least twice; the
//! SAs listed at the start are gone at the end and no more than three CHILD_SAs' worth of SAs (the
//! old, the new, and a colliding one about to be deleted) are listed at any moment (retired SAs
//! are removed); ping loss is printed, and must stay under 1%
//! (make-before-break: the old SA keeps working until the new one is in place).
//!
//! Needs root; fails under `CI=true` when it cannot run.

use std::{
    collections::BTreeSet,
    net::Ipv6Addr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use xipsec_testkit::{
    as_root,
    capture::{Capture, Class, Frames},
    cli::{self, SpArgs},
    daemon::Node,
    netns::VethPair,
    stream::{self, Pace},
};

const PSK: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const PORT: u16 = 9631;
/// The stream: 32 KiB every 60 ms for about two minutes.
const PACE: Pace = Pace {
    chunk: 32 << 10,
    pause: Duration::from_millis(60),
    total: 1_900 * (32 << 10),
};
/// A ping every 20 ms for two minutes.
const PINGS: &str = "6000";

/// The SPIs (any JSON string field whose name contains "spi") `xipsec COMMAND -f json` lists.
fn listed_spis(node: &Node, command: &[&str]) -> BTreeSet<String> {
    let out = node.ok(&[command, &["--formatter", "json"]].concat());
    let list: serde_json::Value = serde_json::from_str(&out).expect("parsing a JSON list");
    list.as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(serde_json::Value::as_object)
        .flat_map(|entry| {
            entry
                .iter()
                .filter(|(k, _)| k.to_ascii_lowercase().contains("spi"))
                .filter_map(|(_, v)| v.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// What a poller saw on one host.
#[derive(Default)]
struct Seen {
    esp: BTreeSet<String>,
    ike: BTreeSet<String>,
    most_sas: usize,
}

/// Polls `sa list` and `ike sa list` on `node` every 500 ms until `stop`.
fn poll(node: &Node, stop: &AtomicBool, seen: &Mutex<Seen>) {
    while !stop.load(Ordering::Relaxed) {
        let esp = listed_spis(node, &["sa", "list"]);
        let ike = listed_spis(node, &["ike", "sa", "list"]);
        let mut seen = seen.lock().expect("the poller's record");
        seen.most_sas = seen.most_sas.max(esp.len());
        seen.esp.extend(esp);
        seen.ike.extend(ike);
        drop(seen);
        thread::sleep(Duration::from_millis(500));
    }
}

fn configure(node: &Node, (me, peer): (&str, &str), initiate: &str) {
    node.ok(&cli::ike_peer_add(
        "peer",
        (me, peer),
        (PSK, initiate),
        &[
            "--lifetime",
            "13",
            "--ike-lifetime",
            "33",
            "--rekey-margin",
            "3",
        ],
    ));
    for (name, src, dst, dir) in [("to-peer", me, peer, "out"), ("from-peer", peer, me, "in")] {
        let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
        node.ok(&SpArgs::ike((&src, &dst), dir, "transport", "peer", name).args());
    }
}

/// Frames between the hosts that are neither ESP, IKE (UDP 500/4500) nor link control.
fn clear(frames: &Frames) -> Vec<String> {
    frames
        .frames
        .iter()
        .filter(|f| f.class == Class::Clear && f.upper != 50)
        .filter(|f| {
            let ip = f.ipv6();
            let udp_port = |at: usize| ip.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
            let ike = f.upper == 17
                && matches!(
                    (udp_port(40), udp_port(42)),
                    (Some(500), Some(500)) | (Some(4500), Some(4500))
                );
            !ike
        })
        .map(xipsec_testkit::capture::Frame::describe)
        .collect()
}

/// The distinct ESP SPIs on the wire, by source address.
fn wire_spis(frames: &Frames, from: Ipv6Addr) -> BTreeSet<u32> {
    frames
        .frames
        .iter()
        .filter(|f| f.src == from)
        .filter_map(|f| f.spi)
        .collect()
}

#[test]
fn rekeying_under_tcp_for_two_minutes() {
    as_root("rekeying_under_tcp_for_two_minutes", || {
        let net = VethPair::new("ikrk", 0x1c2);
        let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
        let b = Node::start_tap_visible(&net.ns_b, &net.if_b);
        let (addr_a, addr_b) = (net.addr_a.as_str(), net.addr_b.as_str());
        configure(&b, (addr_b, addr_a), "never");
        configure(&a, (addr_a, addr_b), "always");
        let started = std::time::Instant::now();
        while !xipsec_testkit::traffic::ping(&net.ns_a, addr_b, ("1", "1"), None) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the first CHILD_SA never carried a ping\na: {}\nb: {}",
                a.log(),
                b.log()
            );
        }
        let first = listed_spis(&a, &["sa", "list"]);

        let dir = a.dir().to_owned();
        let cap_a = Capture::start(&net.ns_a, &net.if_a, &dir.join("rekey-a.pcap"), &[]);
        let cap_b = Capture::start(&net.ns_b, &net.if_b, &dir.join("rekey-b.pcap"), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_a, seen_b) = (Mutex::new(Seen::default()), Mutex::new(Seen::default()));
        let b_addr: Ipv6Addr = addr_b.parse().expect("b's address");
        let (sent, got, ping_out) = thread::scope(|s| {
            s.spawn(|| poll(&a, &stop, &seen_a));
            s.spawn(|| poll(&b, &stop, &seen_b));
            let received = stream::sink(net.ns_b.clone(), b_addr, PORT);
            let sent = stream::source(net.ns_a.clone(), b_addr, PORT, PACE);
            let pinger = stream::ping(&net.ns_a, addr_b, "0.02", PINGS);
            let sent = sent.join().expect("the source thread");
            let got = received.join().expect("the sink thread");
            let out = pinger.wait_with_output().expect("ping");
            stop.store(true, Ordering::Relaxed);
            (sent, got, String::from_utf8_lossy(&out.stdout).into_owned())
        });
        let frames_a = cap_a.stop();
        let frames_b = cap_b.stop();
        let (transmitted, answered) = stream::ping_summary(&ping_out);
        let (seen_a, seen_b) = (
            seen_a.into_inner().expect("a's record"),
            seen_b.into_inner().expect("b's record"),
        );
        let last = listed_spis(&a, &["sa", "list"]);
        // Each capture sees what its own host sends (taps see TC's output; XDP takes inbound ESP
        // before them).
        let wire_ab = wire_spis(&frames_a, net.addr_a.parse().expect("a"));
        let wire_ba = wire_spis(&frames_b, b_addr);
        eprintln!(
            "rekeying: ping every 20 ms: {transmitted} sent, {answered} answered; ESP SPIs on the \
             wire a->b {}, b->a {}; IKE SPIs seen at a {}; at most {} SAs listed at a, {} at b",
            wire_ab.len(),
            wire_ba.len(),
            seen_a.ike.len(),
            seen_a.most_sas,
            seen_b.most_sas
        );
        let logs = || format!("a log:\n{}\nb log:\n{}", a.log(), b.log());

        assert_eq!(
            sent,
            Ok(PACE.total),
            "the source sent the whole stream\n{}",
            logs()
        );
        assert_eq!(
            got,
            (PACE.total, None),
            "the stream arrives whole and intact\n{}",
            logs()
        );
        for (frames, host) in [(&frames_a, "a"), (&frames_b, "b")] {
            let clear = clear(frames);
            assert!(
                clear.is_empty(),
                "clear frames on {host}'s wire: {clear:#?}"
            );
        }
        assert!(
            wire_ab.len() >= 8 && wire_ba.len() >= 8,
            "traffic moved through {} SPIs a->b and {} b->a in two minutes of 10 s CHILD_SAs",
            wire_ab.len(),
            wire_ba.len()
        );
        // Each IKE SA lists two SPIs (initiator's and responder's): three IKE SAs at least.
        assert!(
            seen_a.ike.len() >= 6,
            "the IKE SA was not rekeyed every 30 s: SPIs seen {:?}",
            seen_a.ike
        );
        assert!(
            first.is_disjoint(&last),
            "the first CHILD_SA's SAs are still listed: {first:?} vs {last:?}"
        );
        assert!(
            seen_a.most_sas <= 6 && seen_b.most_sas <= 6,
            "retired SAs pile up: at most {} (a) and {} (b) listed",
            seen_a.most_sas,
            seen_b.most_sas
        );
        assert!(
            (transmitted - answered) * 100 < transmitted,
            "{} of {transmitted} pings lost across the rekeys\n{}",
            transmitted - answered,
            logs()
        );
    });
}
