//! Rekeying under load between two xipsec hosts that negotiate with each other (IKEv2, PSK,
//! transport mode): CHILD_SAs are rekeyed about every 10 s and the IKE SA about every 30 s for
//! two minutes, both sides scheduling rekeys (with jitter, so some collide, RFC 7296 §2.8.1),
//! while a paced TCP stream (every byte checked at the far end) and a ping every 5 ms run from
//! a to b.
//!
//! What must hold: the stream arrives whole and intact; captures on both ends hold no clear
//! frame (everything between the hosts is ESP or IKE); traffic moved through at least 8 ESP SPIs
//! each way (the CHILD_SAs really were replaced); the IKE SA's SPIs changed at least twice; the
//! SAs listed at the start are gone at the end and no more than three CHILD_SAs' worth of SAs (the
//! old, the new, and a colliding one about to be deleted) are listed at any moment (retired SAs
//! are removed); not one ping is lost and no packet is dropped for want of an SA on either host
//! (`drop_unknown_spi`, `esp_unknown_spi`, `esp_no_sa` stay still; TCP would hide a lost
//! segment): make before break, each side sends on the old CHILD_SA until the other receives on
//! the new one (the responder of a rekey switches when the initiator deletes the old one).
//!
//! Two more cases on the same pair of hosts, with long lifetimes and no dead peer detection so
//! that nothing but the test moves the SAs, a ping every 10 ms and a paced TCP stream running:
//!
//! - A simultaneous rekey, forced (RFC 7296 §2.8.1 and §2.8.2), of the CHILD_SA and then of the
//!   IKE SA: IKE is dropped in both namespaces' nftables `output` hook, both daemons are asked
//!   to rekey (`ike sa rekey`) and each request is dropped; then only IKE responses are dropped,
//!   so that each side's retransmitted request reaches the other and is answered while its own
//!   is outstanding (the requests cross); then nothing is dropped and the retransmissions get
//!   the answers. Both daemons must log the collision (the test cannot pass without one), one
//!   saying its own exchange survived and the other the peer's; afterwards both list the same
//!   one CHILD_SA (the survivor; the redundant one deleted) or the same one IKE SA, not one ping
//!   is lost, no packet dropped for want of an SA, no clear frame, the stream intact. (When the
//!   winner's Delete of the old IKE SA overtakes the loser's answer, the loser adopts the
//!   winner's SA on the Delete and its own redundant one, never completed on its side, is left
//!   `retiring` at the winner until the retransmission span ends: the test waits for that.)
//! - Stopping a daemon (SIGTERM) sends an INFORMATIONAL Delete of its IKE SA (before that,
//!   `ike sa list` shows when the IKE SA and its CHILD_SA are rekeyed and expire): the peer logs the
//!   deletion and lists no `ike` SA within 2 s (no dead peer detection configured), and its
//!   flow to the stopped host stays dropped (no clear frame on its wire).
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
    netns::{self, VethPair},
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
/// A ping every 5 ms for two minutes (dense enough that a gap of a millisecond or two at each
/// rekey loses some).
const PING_INTERVAL: &str = "0.005";
const PINGS: &str = "24000";

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

/// Short lifetimes: CHILD_SAs rekeyed about every 10 s, the IKE SA about every 30 s.
const SHORT: &[&str] = &[
    "--lifetime",
    "13",
    "--ike-lifetime",
    "33",
    "--rekey-margin",
    "3",
];
/// Nothing moves the SAs but the test: hour-long lifetimes, no dead peer detection.
const STILL: &[&str] = &["--dpd", "0"];

fn configure(node: &Node, (me, peer): (&str, &str), initiate: &str, extra: &[&str]) {
    node.ok(&cli::ike_peer_add(
        "peer",
        (me, peer),
        (PSK, initiate),
        extra,
    ));
    for (name, src, dst, dir) in [("to-peer", me, peer, "out"), ("from-peer", peer, me, "in")] {
        let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
        node.ok(&SpArgs::ike((&src, &dst), dir, "transport", "peer", name).args());
    }
}

/// The drop counters a gap in make before break moves: ESP on an SPI the receiver has not
/// installed (or removed already), in XDP and in the engine, and outbound packets of a flow
/// whose SP has no SA.
const GAP_COUNTERS: [&str; 3] = ["drop_unknown_spi", "esp_unknown_spi", "esp_no_sa"];

/// `GAP_COUNTERS` on `node`, in that order.
fn gap_counters(node: &Node) -> Vec<u64> {
    GAP_COUNTERS.iter().map(|c| node.stat(c)).collect()
}

/// What `GAP_COUNTERS` counted on each host since `before` (a's, b's): (host, counter, packets)
/// for each that moved.
fn gaps(
    (a, b): (&Node, &Node),
    before: &(Vec<u64>, Vec<u64>),
) -> Vec<(&'static str, &'static str, u64)> {
    let mut moved = Vec::new();
    for (host, node, then) in [("a", a, &before.0), ("b", b, &before.1)] {
        for ((name, now), then) in GAP_COUNTERS.iter().zip(gap_counters(node)).zip(then) {
            if now != *then {
                moved.push((host, *name, now - then));
            }
        }
    }
    moved
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

/// Two hosts a and b on a veth pair (`prefix`, `tag`), peers of each other with the
/// `ike peer add` options `extra` (a initiates), once a ping from a reaches b.
fn pair(prefix: &str, tag: u16, extra: &[&str]) -> (VethPair, Node, Node) {
    let net = VethPair::new(prefix, tag);
    let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
    let b = Node::start_tap_visible(&net.ns_b, &net.if_b);
    let (addr_a, addr_b) = (net.addr_a.as_str(), net.addr_b.as_str());
    configure(&b, (addr_b, addr_a), "never", extra);
    configure(&a, (addr_a, addr_b), "always", extra);
    first_ping(&net, (&a, &b));
    (net, a, b)
}

/// Waits (20 s at most) until a ping from a reaches b: the first CHILD_SA is in place.
fn first_ping(net: &VethPair, (a, b): (&Node, &Node)) {
    let started = std::time::Instant::now();
    while !xipsec_testkit::traffic::ping(&net.ns_a, &net.addr_b, ("1", "1"), None) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the first CHILD_SA never carried a ping\na: {}\nb: {}",
            a.log(),
            b.log()
        );
    }
}

#[test]
fn rekeying_under_tcp_for_two_minutes() {
    as_root("rekeying_under_tcp_for_two_minutes", || {
        let (net, a, b) = pair("ikrk", 0x1c2, SHORT);
        let first = listed_spis(&a, &["sa", "list"]);
        let counted = (gap_counters(&a), gap_counters(&b));

        let dir = a.dir().to_owned();
        let cap_a = Capture::start(&net.ns_a, &net.if_a, &dir.join("rekey-a.pcap"), &[]);
        let cap_b = Capture::start(&net.ns_b, &net.if_b, &dir.join("rekey-b.pcap"), &[]);
        let stop = Arc::new(AtomicBool::new(false));
        let (seen_a, seen_b) = (Mutex::new(Seen::default()), Mutex::new(Seen::default()));
        let b_addr: Ipv6Addr = net.addr_b.parse().expect("b's address");
        let (sent, got, ping_out) = thread::scope(|s| {
            s.spawn(|| poll(&a, &stop, &seen_a));
            s.spawn(|| poll(&b, &stop, &seen_b));
            let received = stream::sink(net.ns_b.clone(), b_addr, PORT);
            let sent = stream::source(net.ns_a.clone(), b_addr, PORT, PACE);
            let pinger = stream::ping(&net.ns_a, &net.addr_b, PING_INTERVAL, PINGS);
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
        let gaps = gaps((&a, &b), &counted);
        // Each capture sees what its own host sends (taps see TC's output; XDP takes inbound ESP
        // before them).
        let wire_ab = wire_spis(&frames_a, net.addr_a.parse().expect("a"));
        let wire_ba = wire_spis(&frames_b, b_addr);
        eprintln!(
            "rekeying: ping every 5 ms: {transmitted} sent, {answered} answered; ESP SPIs on the \
             wire a->b {}, b->a {}; IKE SPIs seen at a {}; at most {} SAs listed at a, {} at b; \
             gap counters moved: {gaps:?}",
            wire_ab.len(),
            wire_ba.len(),
            seen_a.ike.len(),
            seen_a.most_sas,
            seen_b.most_sas
        );
        let logs = || format!("a log:\n{}\nb log:\n{}", a.log(), b.log());

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
        let (frames, pings) = ([frames_a, frames_b], (transmitted, answered));
        let traffic = Traffic {
            total: PACE.total,
            sent,
            got,
            frames,
            pings,
            gaps,
        };
        traffic.assert_undisturbed("the rekeys", logs);
    });
}

/// The traffic of one case: the stream (its length, what the source sent, what the sink
/// got), both hosts' captures (a's, b's), the pings (sent, answered) and the gap counters
/// that moved.
struct Traffic {
    total: usize,
    sent: Result<usize, String>,
    got: (usize, Option<String>),
    frames: [Frames; 2],
    pings: (u64, u64),
    gaps: Vec<(&'static str, &'static str, u64)>,
}

impl Traffic {
    /// Whatever moved underneath (`what`), the traffic did not notice: the stream whole and
    /// intact, no clear frame on either wire, not one ping lost, no packet dropped for want of
    /// an SA (TCP hides a lost segment by resending it; these counters do not).
    fn assert_undisturbed(&self, what: &str, logs: impl Fn() -> String) {
        assert_eq!(
            self.sent,
            Ok(self.total),
            "the source sent its stream\n{}",
            logs()
        );
        assert_eq!(
            self.got,
            (self.total, None),
            "the stream arrives whole and intact across {what}\n{}",
            logs()
        );
        for (frames, host) in self.frames.iter().zip(["a", "b"]) {
            let clear = clear(frames);
            assert!(
                clear.is_empty(),
                "clear frames on {host}'s wire: {clear:#?}"
            );
        }
        let (transmitted, answered) = self.pings;
        assert_eq!(
            answered,
            transmitted,
            "{} of {transmitted} pings lost across {what} (make before break: none may be)\n{}",
            transmitted - answered,
            logs()
        );
        assert!(
            self.gaps.is_empty(),
            "packets dropped across {what} for want of an SA: {:?}\n{}",
            self.gaps,
            logs()
        );
    }
}

/// The nftables table each test host gets to drop the IKE it sends (deleted on drop).
const TABLE: &str = "xipsecrekey";

/// Drops IKE a namespace's host sends, in the `output` hook, counting what it drops.
struct IkeFilter {
    ns: String,
}

impl IkeFilter {
    fn new(ns: &str) -> Self {
        netns::output(ns, &["nft", "add", "table", "inet", TABLE]);
        netns::output(
            ns,
            &[
                "nft",
                "add",
                "chain",
                "inet",
                TABLE,
                "out",
                "{ type filter hook output priority 0 ; policy accept ; }",
            ],
        );
        Self { ns: ns.to_owned() }
    }

    /// Replaces the rules with `rules` (each one `nft add rule` tail); counters start at 0.
    fn set(&self, rules: &[&[&str]]) {
        netns::output(&self.ns, &["nft", "flush", "chain", "inet", TABLE, "out"]);
        for rule in rules {
            let args = [&["nft", "add", "rule", "inet", TABLE, "out"], *rule].concat();
            netns::output(&self.ns, &args);
        }
    }

    /// Every IKE message (UDP to port 500 or 4500).
    fn drop_all(&self) {
        self.set(&[&["udp", "dport", "{ 500, 4500 }", "counter", "drop"]]);
    }

    /// IKE responses only: the R flag (0x20 of the header's flags octet, RFC 7296 §3.1), on
    /// port 4500 after the non-ESP marker.
    fn drop_responses(&self) {
        self.set(&[
            &["udp", "dport", "500", "@th,218,1", "1", "counter", "drop"],
            &[
                "udp",
                "dport",
                "4500",
                "@th,64,32",
                "0",
                "@th,250,1",
                "1",
                "counter",
                "drop",
            ],
        ]);
    }

    fn pass(&self) {
        self.set(&[]);
    }

    /// Packets the current rules dropped.
    fn dropped(&self) -> u64 {
        let listing = netns::output(&self.ns, &["nft", "list", "chain", "inet", TABLE, "out"]);
        listing
            .split("packets ")
            .skip(1)
            .filter_map(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for IkeFilter {
    fn drop(&mut self) {
        let _ = netns::exec(&self.ns, &["nft", "delete", "table", "inet", TABLE]).status();
    }
}

/// Polls `done` every 50 ms until it holds; panics with `what` after `timeout`.
fn wait_for(
    timeout: Duration,
    what: &str,
    mut done: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < timeout,
            "{what} within {timeout:?}\n{}",
            context()
        );
        thread::sleep(Duration::from_millis(50));
    }
}

/// One IKE SA as `ike sa list` shows it: (SPIi, SPIr, state, CHILD_SAs as `inbound/outbound`).
type IkeRow = (String, String, String, Vec<String>);

/// A host's IKE SAs as `ike sa list` shows them.
fn ike_state(node: &Node) -> Vec<IkeRow> {
    let out = node.ok(&["ike", "sa", "list", "--formatter", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("parsing ike sa list");
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|sa| {
            let children = sa["child_sas"]
                .as_array()
                .map(|c| c.iter().map(text).collect())
                .unwrap_or_default();
            (
                text(&sa["spi_i"]),
                text(&sa["spi_r"]),
                text(&sa["state"]),
                children,
            )
        })
        .collect()
}

/// The IKE SAs of `ike_state` that are not `retiring` (replaced, or a collision's redundant
/// one about to go).
fn live(sas: Vec<IkeRow>) -> Vec<IkeRow> {
    sas.into_iter().filter(|s| s.2 != "retiring").collect()
}

/// `ike sa list` on `node` (one fresh IKE SA with one CHILD_SA, default lifetimes: 14400 s
/// and 3600 s, margin 540 s) shows when each is rekeyed (the margin and up to a tenth of it
/// early) and when it expires.
fn assert_timers(node: &Node) {
    let out = node.ok(&["ike", "sa", "list", "--formatter", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("parsing ike sa list");
    let sa = &list[0];
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(u64::MAX);
    let first = |v: &serde_json::Value| {
        v[0].as_str()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    };
    let (rekey, expire) = (number(&sa["rekey_seconds"]), number(&sa["expire_seconds"]));
    assert!(
        (13_800..=13_860).contains(&rekey),
        "ike rekey in {rekey} s: {out}"
    );
    assert!(
        (14_340..=14_400).contains(&expire),
        "ike expiry in {expire} s: {out}"
    );
    let (rekey, expire) = (
        first(&sa["child_sa_rekey_seconds"]),
        first(&sa["child_sa_expire_seconds"]),
    );
    assert!(
        (3_000..=3_060).contains(&rekey),
        "child rekey in {rekey} s: {out}"
    );
    assert!(
        (3_540..=3_600).contains(&expire),
        "child expiry in {expire} s: {out}"
    );
}

/// `inbound/outbound` seen from the other side.
fn mirrored(child: &str) -> String {
    let (i, o) = child.split_once('/').expect("inbound/outbound");
    format!("{o}/{i}")
}

/// The number of `ike` SAs `sa list` shows.
fn ike_owned(node: &Node) -> usize {
    let out = node.ok(&["sa", "list", "--formatter", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("parsing sa list");
    list.as_array()
        .expect("a JSON array")
        .iter()
        .filter(|sa| sa["owner"] == "ike")
        .count()
}

/// The value of `key=` on a log line, without quotes.
fn field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    let rest = &line[at..];
    let end = rest.find(' ').unwrap_or(rest.len());
    Some(rest[..end].trim_matches('"'))
}

/// The collisions of SAs of kind `sa` (`child` or `ike`) a host logged: who survived each.
fn collisions(node: &Node, sa: &str) -> Vec<String> {
    node.log()
        .lines()
        .filter(|l| l.contains("ike: simultaneous rekey") && field(l, "sa") == Some(sa))
        .map(|l| field(l, "survivor").unwrap_or_default().to_owned())
        .collect()
}

/// The stream of the collision cases: 16 KiB every 50 ms for about 12 s.
const COLLISION_PACE: Pace = Pace {
    chunk: 16 << 10,
    pause: Duration::from_millis(50),
    total: 240 * (16 << 10),
};

/// Forces both hosts to rekey the same SA at once with their requests crossing (see the
/// module docs), the CHILD_SA or with `ike` the IKE SA.
fn force_collision((a, b): (&Node, &Node), filters: &[IkeFilter; 2], ike: bool) {
    let logs = || format!("a log:\n{}\nb log:\n{}", a.log(), b.log());
    for f in filters {
        f.drop_all();
    }
    for node in [a, b] {
        let mut args = vec!["ike", "sa", "rekey", "--peer-name", "peer"];
        if ike {
            args.push("--ike");
        }
        node.ok(&args);
    }
    // First both requests are dropped; then, retransmitted (1 s after the first try), each
    // reaches the other side, which answers it while its own is outstanding, and the answers
    // are dropped.
    for (responses, seconds, what) in [
        (false, 2, "both rekey requests dropped"),
        (
            true,
            5,
            "each side answered the other's retransmitted request",
        ),
    ] {
        for f in filters.iter().filter(|_| responses) {
            f.drop_responses();
        }
        let dropped = || filters.iter().all(|f| f.dropped() >= 1);
        wait_for(Duration::from_secs(seconds), what, dropped, logs);
    }
    // The next retransmissions get the (kept) answers.
    for f in filters {
        f.pass();
    }
}

/// `xipsec ike sa rekey ARGS` on `node`, which must fail with one `error:` line containing
/// `expected`.
fn refused(node: &Node, args: &[&str], expected: &str) {
    let run = cli::Run::from(node.cli(&[&["ike", "sa", "rekey"], args].concat()));
    let line = cli::single_error_line(&run, &format!("ike sa rekey {args:?}"));
    assert!(line.contains(expected), "{args:?}: {line}");
}

/// Bad `ike sa rekey` input gets a clear error and changes nothing; the help explains it.
fn rekey_refusals(a: &Node) {
    let before = ike_state(a);
    refused(a, &[], "--peer-name: required");
    refused(
        a,
        &["--peer-name", "nope"],
        "--peer-name: no peer named 'nope'",
    );
    refused(
        a,
        &["--peer-name", "peer", "--child", "--ike"],
        "cannot be used with",
    );
    assert_eq!(ike_state(a), before, "refused rekeys change nothing");
    let help = a.ok(&["ike", "sa", "rekey", "--help"]);
    for needle in [
        "--peer-name <NAME>",
        "--child",
        "--ike",
        "Make before break",
    ] {
        assert!(help.contains(needle), "{needle} in the help:\n{help}");
    }
}

/// One forced collision under a 10 ms ping and a paced stream from a to b; see the module docs.
fn collide(net: &VethPair, (a, b): (&Node, &Node), filters: &[IkeFilter; 2], ike: bool) {
    let kind = if ike { "ike" } else { "child" };
    let before = (ike_state(a), ike_state(b));
    assert_eq!(
        (before.0.len(), before.1.len()),
        (1, 1),
        "one IKE SA each: {before:?}"
    );
    let (collided_a, collided_b) = (collisions(a, kind).len(), collisions(b, kind).len());
    let counted = (gap_counters(a), gap_counters(b));
    let dir = a.dir().to_owned();
    let cap_a = Capture::start(
        &net.ns_a,
        &net.if_a,
        &dir.join(format!("{kind}-a.pcap")),
        &[],
    );
    let cap_b = Capture::start(
        &net.ns_b,
        &net.if_b,
        &dir.join(format!("{kind}-b.pcap")),
        &[],
    );
    let b_addr: Ipv6Addr = net.addr_b.parse().expect("b's address");
    let port = PORT + 1 + u16::from(ike);
    let received = stream::sink(net.ns_b.clone(), b_addr, port);
    let sent = stream::source(net.ns_a.clone(), b_addr, port, COLLISION_PACE);
    let pinger = stream::ping(&net.ns_a, &net.addr_b, "0.01", "1200");
    thread::sleep(Duration::from_secs(2));
    force_collision((a, b), filters, ike);
    let logs = || format!("a log:\n{}\nb log:\n{}", a.log(), b.log());
    // Settled: one established IKE SA each with one CHILD_SA, the same on both sides, and the
    // SA that collided replaced.
    let settled = || {
        let (now_a, now_b) = (live(ike_state(a)), live(ike_state(b)));
        let [(spi_i, spi_r, state, children)] = now_a.as_slice() else {
            return false;
        };
        let [(peer_i, peer_r, peer_state, peer_children)] = now_b.as_slice() else {
            return false;
        };
        let (old_ike, old_children) = (&before.0[0], &before.0[0].3);
        let replaced = if ike {
            (spi_i, spi_r) != (&old_ike.0, &old_ike.1) && children == old_children
        } else {
            (spi_i, spi_r) == (&old_ike.0, &old_ike.1) && children != old_children
        };
        state == "established"
            && peer_state == state
            && (spi_i, spi_r) == (peer_i, peer_r)
            && children.len() == 1
            && peer_children
                .iter()
                .map(|c| mirrored(c))
                .eq(children.iter().cloned())
            && replaced
            && ike_owned(a) == 2
            && ike_owned(b) == 2
    };
    wait_for(
        Duration::from_secs(10),
        "one SA survived the collision, the same on both sides, the redundant one deleted",
        settled,
        || format!("a: {:?}\nb: {:?}\n{}", ike_state(a), ike_state(b), logs()),
    );
    let after = ike_state(a);
    // A redundant IKE SA whose creator never learned it was made (the old SA's Delete overtook
    // the answer) carries nothing and is dropped after the retransmission span (16 s).
    wait_for(
        Duration::from_secs(20),
        "no retiring IKE SA left",
        || {
            [a, b]
                .iter()
                .all(|n| ike_state(n).iter().all(|s| s.2 != "retiring"))
        },
        || format!("a: {:?}\nb: {:?}\n{}", ike_state(a), ike_state(b), logs()),
    );
    let sent = sent.join().expect("the source thread");
    let got = received.join().expect("the sink thread");
    let out = pinger.wait_with_output().expect("ping");
    let (transmitted, answered) = stream::ping_summary(&String::from_utf8_lossy(&out.stdout));
    let (frames_a, frames_b) = (cap_a.stop(), cap_b.stop());
    let (survivors_a, survivors_b) = (collisions(a, kind), collisions(b, kind));
    let gaps = gaps((a, b), &counted);
    eprintln!(
        "collision of the {kind} sa: ping every 10 ms: {transmitted} sent, {answered} answered; \
         gap counters moved: {gaps:?}; logged at a {:?}, at b {:?}; before {:?}, after {after:?}",
        &survivors_a[collided_a..],
        &survivors_b[collided_b..],
        before.0
    );
    // Each side logged exactly this one collision; one kept its own SA, the other the peer's.
    let mut outcome = [&survivors_a[collided_a..], &survivors_b[collided_b..]].concat();
    outcome.sort();
    assert_eq!(
        outcome,
        ["ours", "peer"],
        "each side logs the collision once, one keeping its own SA\n{}",
        logs()
    );
    let (frames, pings) = ([frames_a, frames_b], (transmitted, answered));
    let traffic = Traffic {
        total: COLLISION_PACE.total,
        sent,
        got,
        frames,
        pings,
        gaps,
    };
    traffic.assert_undisturbed(&format!("the collision of the {kind} sa"), logs);
}

#[test]
fn simultaneous_rekeys_cross_and_one_survives() {
    as_root("simultaneous_rekeys_cross_and_one_survives", || {
        let (net, a, b) = pair("ikcl", 0x1c6, STILL);
        rekey_refusals(&a);
        let filters = [IkeFilter::new(&net.ns_a), IkeFilter::new(&net.ns_b)];
        collide(&net, (&a, &b), &filters, false);
        collide(&net, (&a, &b), &filters, true);
    });
}

#[test]
fn a_stopping_daemon_deletes_its_ike_sa_at_the_peer() {
    as_root("a_stopping_daemon_deletes_its_ike_sa_at_the_peer", || {
        let (net, mut a, b) = pair("ikst", 0x1c7, STILL);
        let addr_a = net.addr_a.as_str();
        assert_eq!(ike_owned(&b), 2, "b has its CHILD_SA's two SAs");
        assert_timers(&a);
        let cap_b = Capture::start(&net.ns_b, &net.if_b, &a.dir().join("stop-b.pcap"), &[]);
        // b keeps sending to a: first through the CHILD_SA, then into its SP without an SA.
        let pinger = stream::ping(&net.ns_b, addr_a, "0.01", "400");
        thread::sleep(Duration::from_millis(500));
        let no_sa_before = b.stat("esp_no_sa");
        let stopped = std::time::Instant::now();
        a.stop();
        let exited = stopped.elapsed();
        let logs = || format!("a log:\n{}\nb log:\n{}", a.log(), b.log());
        wait_for(
            Duration::from_secs(2),
            "b removes its ike SAs after a's Delete (no dead peer detection)",
            || ike_owned(&b) == 0,
            logs,
        );
        let gone = stopped.elapsed();
        let out = pinger.wait_with_output().expect("ping");
        let (transmitted, answered) = stream::ping_summary(&String::from_utf8_lossy(&out.stdout));
        let frames_b = cap_b.stop();
        let no_sa = b.stat("esp_no_sa") - no_sa_before;
        eprintln!(
            "stop: a exited {exited:?} after SIGTERM; b's ike SAs gone after {gone:?}; b pinged \
             a {transmitted} times, {answered} answered, {no_sa} dropped for want of an SA"
        );
        assert!(
            a.log()
                .contains("ike: stopping: deleting the ike sas with the peers"),
            "{}",
            logs()
        );
        assert!(b.log().contains("ike: ike sa deleted"), "{}", logs());
        assert!(ike_state(&b).is_empty(), "b: {:?}", ike_state(&b));
        refused(
            &b,
            &["--peer-name", "peer"],
            "--peer-name: no established ike sa with peer 'peer'; nothing changed",
        );
        let clear = clear(&frames_b);
        assert!(clear.is_empty(), "clear frames on b's wire: {clear:#?}");
        assert!(
            no_sa > 100,
            "b's flow to a is dropped (esp_no_sa) once the SAs are gone: {no_sa}\n{}",
            logs()
        );
    });
}
