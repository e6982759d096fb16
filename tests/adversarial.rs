//! The adversarial wire suite: xipsec's first promise tried as an attacker would. Host a runs
//! `xipsec daemon` on its veth; host b has no xipsec and captures on its end of the wire (XDP
//! hides packets from taps on its own interface, so captures are never taken on a). Every probe
//! counts clear frames of protected flows in b's capture, decoded by the capture helper (which
//! proves with marker frames that it was listening), and that count must be 0; every discard
//! probe must deliver nothing; fragmented `none` traffic must be delivered, in order and
//! reordered; replayed, reflected and wrong-address ESP must not be delivered and must be
//! counted; protected datagrams at the boundary sizes must decrypt intact under scapy's ESP.
//!
//! Addresses (all on the veth pair fd00:ad::/64 unless said otherwise):
//! - a: `A` (the SA endpoint) and `A2` (a host address with an inbound `none` policy only);
//!   tunnel inner `TA` on a's loopback.
//! - b: `B1` (the protected peer), `B2` (`none` only), `B3` (`discard` only), `B_FORGED` (an
//!   address no SA names); tunnel inner `TB` on b's loopback.

use std::{
    collections::BTreeSet,
    process::{Child, Stdio},
    time::Duration,
};

use ipsec_tests::esp_oracle::{EspSa, decrypt};
use xipsec_testkit::{
    as_root,
    capture::{Capture, Class, Frame, Frames, describe},
    cli::SpArgs,
    daemon::{Node, Sandbox},
    netns::{self, VethPair},
    traffic::{self, UdpReceiver, py},
};

const TAG: u16 = 0xad;
const A: &str = "fd00:ad::1";
const A2: &str = "fd00:ad::11";
const B1: &str = "fd00:ad::2";
const B2: &str = "fd00:ad::3";
const B3: &str = "fd00:ad::4";
const B_FORGED: &str = "fd00:ad::5";
const TA: &str = "fd00:ae::1";
const TB: &str = "fd00:ae::2";
/// Ports: protected, discarded, passed.
const P_IPSEC: u16 = 9000;
const P_DISCARD: u16 = 9100;
const P_NONE: u16 = 9200;
/// The marker every crafted or sent datagram carries (`fixtures/adversary.py`, and the text
/// `traffic.py udp-send` repeats): found in any captured frame, it is plaintext that leaked.
const MARK: &[u8] = b"XIPSEC-CLEARTEXT-MARK-";
const MARK_TEXT: &str = "XIPSEC-CLEARTEXT-MARK-";

const SPI_OUT: u32 = 0x3001;
const SPI_IN: u32 = 0x3002;
const SPI_OUT_TUNNEL: u32 = 0x3003;
/// The SPIs a's protected traffic leaves under: what b's captures count as protected.
const PROTECTED_SPIS: [u32; 2] = [SPI_OUT, SPI_OUT_TUNNEL];

/// Every way `adversary.py frags` cuts a datagram.
const SHAPES: [&str; 9] = [
    "inorder",
    "reverse",
    "overlap",
    "tiny",
    "lone",
    "ext-before",
    "ext-after",
    "vlan",
    "qinq",
];

struct Lab {
    pair: VethPair,
    daemon: Node,
    mac_a: String,
    mac_b: String,
    out: EspSa,
    inbound: EspSa,
    tunnel: EspSa,
    scratch: tempfile::TempDir,
    /// Holds a raw ESP socket open on b, so b's kernel (which has no ESP) does not answer our
    /// ESP with ICMPv6 errors.
    _absorb: Child,
}

fn mac(ns: &str, iface: &str) -> String {
    netns::output(ns, &["cat", &format!("/sys/class/net/{iface}/address")])
        .trim()
        .to_owned()
}

/// A policy of the lab: name, direction, (source, destination), protocol, destination port,
/// action, and for `ipsec` (SA, mode).
type Policy<'a> = (
    &'a str,
    &'a str,
    (&'a str, &'a str),
    &'a str,
    &'a str,
    &'a str,
    Option<(&'a str, &'a str)>,
);

/// An `ipsec` policy in transport mode for UDP to `port` between two hosts.
fn protect_udp(
    daemon: &Node,
    name: &str,
    dir: &str,
    (src, dst): (&str, &str),
    port: &str,
    sa: &str,
) {
    let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
    let sp = SpArgs {
        sport: "any",
        dport: port,
        proto: "udp",
        sa: Some(sa),
        ..SpArgs::ipsec(&src, &dst, dir, name)
    };
    let mut args = sp.args();
    args.extend(["--sp-mode", "transport"]);
    daemon.ok(&args);
}

impl Lab {
    fn new() -> Self {
        let pair = VethPair::new("xadv", TAG);
        assert_eq!((pair.addr_a.as_str(), pair.addr_b.as_str()), (A, B1));
        let (na, nb) = (pair.ns_a.clone(), pair.ns_b.clone());
        for (ns, iface, addr) in [
            (&na, &pair.if_a, A2),
            (&nb, &pair.if_b, B2),
            (&nb, &pair.if_b, B3),
            (&nb, &pair.if_b, B_FORGED),
        ] {
            netns::output(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{addr}/64"),
                    "dev",
                    iface,
                    "nodad",
                    // Deprecated at once: reachable, but never picked as a source address.
                    "preferred_lft",
                    "0",
                ],
            );
        }
        netns::output(
            &na,
            &["ip", "addr", "add", &format!("{TA}/128"), "dev", "lo"],
        );
        // The interface bounce below must not take a's addresses with it.
        for scope in ["all", pair.if_a.as_str()] {
            netns::output(
                &na,
                &[
                    "sysctl",
                    "-qw",
                    &format!("net.ipv6.conf.{scope}.keep_addr_on_down=1"),
                ],
            );
        }
        netns::output(
            &nb,
            &["ip", "addr", "add", &format!("{TB}/128"), "dev", "lo"],
        );
        netns::output(&na, &["ip", "-6", "route", "add", TB, "via", B1, "src", TA]);
        netns::output(&nb, &["ip", "-6", "route", "add", TA, "via", A]);
        let absorb = py(&nb, &["esp-absorb", "600"])
            .stdout(Stdio::null())
            .spawn()
            .expect("starting the ESP absorber on b");
        let daemon = Node::start(&na, &pair.if_a);
        let out = EspSa::aes_sha256("o-t", SPI_OUT, (A, B1), 0x11);
        let inbound = EspSa::aes_sha256("i-t", SPI_IN, (B1, A), 0x22);
        let mut tunnel = EspSa::aes_sha256("o-tun", SPI_OUT_TUNNEL, (A, B1), 0x33);
        tunnel.mode = "tunnel";
        for sa in [&out, &inbound, &tunnel] {
            daemon.ok_args(&sa.sa_add_args());
        }
        let (a128, b1_128) = (format!("{A}/128"), format!("{B1}/128"));
        let (ta, tb) = (format!("{TA}/128"), format!("{TB}/128"));
        let (a2, b2, b3) = (
            format!("{A2}/128"),
            format!("{B2}/128"),
            format!("{B3}/128"),
        );
        let (ipsec, discard, none) = (
            P_IPSEC.to_string(),
            P_DISCARD.to_string(),
            P_NONE.to_string(),
        );
        // name, direction, (source, destination), protocol, destination port, action, (SA, mode)
        #[rustfmt::skip]
        let policies: [Policy; 10] = [
            ("p-udp", "out", (&a128, &b1_128), "udp", &ipsec, "ipsec", Some(("o-t", "transport"))),
            ("p-icmp", "out", (&a128, &b1_128), "icmp6", "128", "ipsec", Some(("o-t", "transport"))),
            ("p-tun", "out", (&ta, &tb), "udp", &ipsec, "ipsec", Some(("o-tun", "tunnel"))),
            ("p-tun-icmp", "out", (&ta, &tb), "icmp6", "128", "ipsec", Some(("o-tun", "tunnel"))),
            ("d-udp", "out", ("any", &b3), "udp", &discard, "discard", None),
            ("d-icmp", "out", ("any", &b3), "icmp6", "any", "discard", None),
            ("n-udp", "out", ("any", &b2), "udp", &none, "none", None),
            ("pi-udp", "in", (&b1_128, &a128), "udp", &ipsec, "ipsec", Some(("i-t", "transport"))),
            ("di-udp", "in", ("any", &a128), "udp", &discard, "discard", None),
            ("ni-udp", "in", ("any", &a2), "udp", &none, "none", None),
        ];
        for (name, dir, (src, dst), proto, dport, action, sa) in policies {
            let sp = SpArgs {
                sport: "any",
                dport,
                proto,
                action,
                sa: sa.map(|(sa, _)| sa),
                ..SpArgs::ipsec(src, dst, dir, name)
            };
            let mut args = sp.args();
            if let Some((_, mode)) = sa {
                args.extend(["--sp-mode", mode]);
            }
            daemon.ok(&args);
        }
        let scratch = tempfile::Builder::new()
            .prefix("xipsec-adversarial-")
            .tempdir()
            .expect("creating the scratch dir");
        let (mac_a, mac_b) = (mac(&na, &pair.if_a), mac(&nb, &pair.if_b));
        Self {
            pair,
            daemon,
            mac_a,
            mac_b,
            out,
            inbound,
            tunnel,
            scratch,
            _absorb: absorb,
        }
    }

    /// A capture on b's end of the wire, its liveness proven by markers sent from a.
    fn capture(&self, name: &str) -> Capture {
        Capture::start_with_marker_from(
            &self.pair.ns_b,
            &self.pair.if_b,
            &self.scratch.path().join(format!("{name}.pcap")),
            &PROTECTED_SPIS,
            (&self.pair.ns_a, &self.pair.if_a),
        )
    }

    /// `adversary.py esp`: `count` ESP datagrams to UDP 9000 on a under the inbound SA (keys
    /// in hex), sequence numbers from `first`, sent from b with source address `src`; also
    /// written to `pcap`.
    fn inbound_esp(
        &self,
        src: &str,
        (enc_key, auth_key): (&str, &str),
        (first, count): (&str, &str),
        pcap: &std::path::Path,
    ) {
        adversary(
            &self.pair.ns_b,
            &[
                "esp",
                &self.pair.if_b,
                &self.mac_b,
                &self.mac_a,
                src,
                A,
                &format!("{SPI_IN:#x}"),
                enc_key,
                auth_key,
                first,
                count,
                "9000",
                pcap.to_str().expect("utf-8"),
            ],
        );
    }

    /// Crafted fragment jobs sent out of a (through TC egress) towards b.
    fn frags_from_a(&self, jobs: &[String]) -> usize {
        let mut args = vec!["frags", &self.pair.if_a, &self.mac_a, &self.mac_b, A];
        args.extend(jobs.iter().map(String::as_str));
        adversary(&self.pair.ns_a, &args)
    }

    /// Crafted fragment jobs sent from `src` on b towards a (into a's XDP).
    fn frags_from_b(&self, src: &str, jobs: &[String]) -> usize {
        let mut args = vec!["frags", &self.pair.if_b, &self.mac_b, &self.mac_a, src];
        args.extend(jobs.iter().map(String::as_str));
        adversary(&self.pair.ns_b, &args)
    }

    fn counter(&self, name: &str) -> u64 {
        let text = self.daemon.ok(&["stats", "--formatter", "json"]);
        let json: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
        find_counter(&json, name).unwrap_or_else(|| panic!("no counter {name} in {text}"))
    }
}

/// `adversary.py ARGS` in `ns`; the number it prints (frames or datagrams sent).
fn adversary(ns: &str, args: &[&str]) -> usize {
    traffic::fixture_output(ns, "adversary.py", args)
        .trim()
        .parse()
        .expect("adversary.py prints a count")
}

fn udp_send(ns: &str, dst: &str, port: u16, count: usize, size: usize) {
    let status = py(
        ns,
        &[
            "udp-send",
            dst,
            &port.to_string(),
            &count.to_string(),
            MARK_TEXT,
            &size.to_string(),
        ],
    )
    .status()
    .expect("sending UDP");
    assert!(status.success(), "udp-send to {dst}");
}

fn ping(ns: &str, from: &str, dst: &str, size: usize) {
    // Replies never come (b cannot decrypt, or the flow is discarded): only the sending
    // matters, so the exit status is not.
    let _ = netns::exec(
        ns,
        &[
            "ping",
            "-6",
            "-c",
            "2",
            "-i",
            "0.2",
            "-W",
            "1",
            "-I",
            from,
            "-s",
            &size.to_string(),
            "-p",
            "58495053",
            dst,
        ],
    )
    .output()
    .expect("running ping");
}

/// A UDP listener on `addr`:`port` in `ns` for `seconds`, bound when this returns;
/// [`received`] collects its count.
fn listen(ns: &str, addr: &str, port: u16, seconds: u32) -> UdpReceiver {
    UdpReceiver::start(ns, addr, port, &seconds.to_string())
}

/// The value of counter `name` in the stats JSON (rows `{"reason": NAME, "packets": N}`).
fn find_counter(v: &serde_json::Value, name: &str) -> Option<u64> {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(n) = map.get(name).and_then(serde_json::Value::as_u64) {
                return Some(n);
            }
            let named = ["name", "reason", "counter"]
                .iter()
                .any(|k| map.get(*k).and_then(|x| x.as_str()) == Some(name));
            if named {
                for k in ["value", "count", "packets"] {
                    if let Some(n) = map.get(k).and_then(serde_json::Value::as_u64) {
                        return Some(n);
                    }
                }
            }
            map.values().find_map(|x| find_counter(x, name))
        }
        serde_json::Value::Array(items) => items.iter().find_map(|x| find_counter(x, name)),
        _ => None,
    }
}

fn received(listener: UdpReceiver) -> usize {
    listener.count()
}

/// Frames of the capture that went to `dst` and are not link control (ND, MLD).
fn to(frames: &Frames, dst: &str) -> Vec<String> {
    let dst: std::net::Ipv6Addr = dst.parse().expect("address");
    frames
        .frames
        .iter()
        .filter(|f| f.dst == dst && f.class != Class::Control)
        .map(Frame::describe)
        .collect()
}

/// The promise for protected flows: not one clear frame, and the plaintext nowhere.
fn assert_no_clear(frames: &Frames, probe: &str) {
    let clear = frames.clear_frames();
    assert!(
        clear.is_empty(),
        "{probe}: {} clear frames on the wire:\n{}",
        clear.len(),
        describe(&clear)
    );
    let leaked: Vec<_> = frames.frames.iter().filter(|f| f.contains(MARK)).collect();
    assert!(
        leaked.is_empty(),
        "{probe}: plaintext readable in {} frames:\n{}",
        leaked.len(),
        describe(&leaked)
    );
}

/// UDP payload lengths of the decrypted inner packets (IPv6 + UDP, no extension headers).
fn inner_udp_sizes(frames: &Frames, sas: &[EspSa], probe: &str) -> BTreeSet<usize> {
    let packets = frames.esp_packets();
    let mut sizes = BTreeSet::new();
    for (i, inner) in decrypt(sas, &packets).into_iter().enumerate() {
        let inner =
            inner.unwrap_or_else(|e| panic!("{probe}: ESP packet {i} does not decrypt: {e}"));
        assert!(inner.len() >= 48, "{probe}: inner packet {i} too short");
        if inner[6] == 17 {
            let len = usize::from(u16::from_be_bytes([inner[44], inner[45]]));
            assert_eq!(len + 40, inner.len(), "{probe}: inner UDP {i} cut short");
            let payload = &inner[48..];
            assert!(
                payload.len() < MARK.len() || payload.starts_with(MARK),
                "{probe}: inner payload {i} is not what was sent"
            );
            sizes.insert(payload.len());
        }
    }
    sizes
}

/// Something that happens to host a while a protected stream flows.
type Disruption = dyn Fn(&mut Lab);

#[test]
fn adversarial_wire_suite() {
    as_root("adversarial_wire_suite", || {
        let mut lab = Lab::new();
        let (na, nb) = (lab.pair.ns_a.clone(), lab.pair.ns_b.clone());

        // --- Oversized datagrams the stack fragments (2 and 3 fragments), protected and discarded.
        let cap = lab.capture("stack-fragments");
        for size in [2000, 4000] {
            udp_send(&na, B1, P_IPSEC, 3, size);
            ping(&na, A, B1, size);
            udp_send(&na, B3, P_DISCARD, 3, size);
            ping(&na, A, B3, size);
        }
        let frames = cap.stop();
        assert_no_clear(&frames, "stack-fragmented datagrams");
        assert!(
            to(&frames, B3).is_empty(),
            "discarded datagrams reached b: {:?}",
            to(&frames, B3)
        );
        let sizes = inner_udp_sizes(&frames, std::slice::from_ref(&lab.out), "stack-fragmented");
        assert_eq!(
            sizes,
            BTreeSet::from([2000, 4000]),
            "protected UDP arrives whole"
        );

        // --- Crafted fragments out of a: every shape, protected and discarded, UDP and ICMPv6.
        let cap = lab.capture("crafted-out");
        let mut jobs = Vec::new();
        for (i, shape) in SHAPES.iter().enumerate() {
            for (dst, proto, port) in [
                (B1, "udp", P_IPSEC),
                (B1, "icmp", 0),
                (B3, "udp", P_DISCARD),
                (B3, "icmp", 0),
            ] {
                jobs.push(format!(
                    "{dst},{proto},{port},3000,{shape},{}",
                    1000 + i * 10 + jobs.len()
                ));
            }
        }
        let sent = lab.frags_from_a(&jobs);
        let frames = cap.stop();
        assert!(sent > jobs.len(), "crafted fragments sent: {sent}");
        assert_no_clear(&frames, "crafted fragments out of a");
        assert!(
            to(&frames, B3).is_empty(),
            "discarded fragments reached b: {:?}",
            to(&frames, B3)
        );

        // --- Fragmented `none` traffic is delivered, in order and reordered, both directions.
        let listener = listen(&nb, B2, P_NONE, 4);
        udp_send(&na, B2, P_NONE, 2, 4000);
        let crafted = ["inorder", "reverse"]
            .iter()
            .enumerate()
            .map(|(i, shape)| format!("{B2},udp,{P_NONE},3000,{shape},{}", 2000 + i))
            .collect::<Vec<_>>();
        lab.frags_from_a(&crafted);
        assert_eq!(
            received(listener),
            4,
            "none traffic out of a, fragmented, is delivered"
        );
        let listener = listen(&na, A2, P_NONE, 4);
        udp_send(&nb, A2, P_NONE, 2, 4000);
        let crafted: Vec<String> = ["inorder", "reverse"]
            .iter()
            .enumerate()
            .map(|(i, shape)| format!("{A2},udp,{P_NONE},3000,{shape},{}", 3000 + i))
            .collect();
        lab.frags_from_b(B1, &crafted);
        assert_eq!(
            received(listener),
            4,
            "none traffic into a, fragmented, is delivered"
        );

        // --- Clear fragments into a of flows that must arrive as ESP, or be discarded.
        let protected = listen(&na, A, P_IPSEC, 6);
        let discarded = listen(&na, A, P_DISCARD, 6);
        udp_send(&nb, A, P_IPSEC, 3, 4000);
        udp_send(&nb, A, P_DISCARD, 3, 4000);
        let mut jobs = Vec::new();
        for (i, shape) in SHAPES.iter().take(7).enumerate() {
            jobs.push(format!("{A},udp,{P_IPSEC},3000,{shape},{}", 4000 + i));
            jobs.push(format!("{A},udp,{P_DISCARD},3000,{shape},{}", 4100 + i));
        }
        lab.frags_from_b(B1, &jobs);
        assert_eq!(
            received(protected),
            0,
            "clear fragments of a protected flow delivered"
        );
        assert_eq!(
            received(discarded),
            0,
            "fragments of a discarded flow delivered"
        );

        // --- A marked socket: neither the engine's mark nor any other lets plaintext out.
        let cap = lab.capture("marks");
        let marks: Vec<String> = [
            "0x58505345",
            "0x1",
            "0xffffffff",
            "0x12345678",
            "0x58505344",
        ]
        .iter()
        .map(|m| (*m).to_owned())
        .collect();
        let mut args = vec!["marked", B1, "9000"];
        args.extend(marks.iter().map(String::as_str));
        adversary(&na, &args);
        let frames = cap.stop();
        assert_no_clear(&frames, "marked sockets");
        assert!(
            frames.esp_count() >= marks.len(),
            "marked datagrams are protected, not dropped"
        );

        // --- Replays: captured ESP accepted once, never again after a restart, kill -9 or re-add.
        let pcap = lab.scratch.path().join("replay.pcap");
        let key = |k: &Option<String>| {
            k.as_deref()
                .unwrap_or_default()
                .trim_start_matches("0x")
                .to_owned()
        };
        let enc_key = key(&lab.inbound.enc_key);
        let auth_key = lab.inbound.integ_key.trim_start_matches("0x").to_owned();
        let listener = listen(&na, A, P_IPSEC, 4);
        lab.inbound_esp(B1, (&enc_key, &auth_key), ("1", "5"), &pcap);
        assert_eq!(received(listener), 5, "fresh ESP is delivered");
        let replay = |lab: &Lab, when: &str| {
            let drops = lab.counter("esp_replay_drops");
            let listener = listen(&na, A, P_IPSEC, 4);
            adversary(
                &nb,
                &["resend", &lab.pair.if_b, pcap.to_str().expect("utf-8")],
            );
            assert_eq!(received(listener), 0, "replayed ESP delivered {when}");
            assert!(
                lab.counter("esp_replay_drops") >= drops + 5,
                "replays counted {when}"
            );
        };
        replay(&lab, "while running");
        lab.daemon.stop();
        lab.daemon.spawn();
        replay(&lab, "after a clean restart");
        lab.daemon.kill9();
        lab.daemon.spawn();
        replay(&lab, "after kill -9");
        lab.daemon.ok(&["sp", "remove", "--sp-name", "pi-udp"]);
        lab.daemon.ok(&["sa", "remove", "--sa-name", "i-t"]);
        lab.daemon.ok_args(&lab.inbound.sa_add_args());
        protect_udp(&lab.daemon, "pi-udp", "in", (B1, A), "9000", "i-t");
        replay(&lab, "after the SA was re-added");

        // --- Our own ESP reflected back, and ESP under the right SPI from the wrong address.
        let cap = lab.capture("to-reflect");
        udp_send(&na, B1, P_IPSEC, 3, 100);
        let own = cap.stop();
        assert!(own.esp_count() >= 3, "a's ESP captured for the reflection");
        let unknown = lab.counter("drop_unknown_spi");
        let listener = listen(&na, A, P_IPSEC, 4);
        let reflected = adversary(
            &nb,
            &[
                "reflect",
                &lab.pair.if_b,
                &lab.mac_b,
                &lab.mac_a,
                own.file.to_str().expect("utf-8"),
                &format!("{SPI_OUT:#x}"),
            ],
        );
        assert!(reflected >= 3, "reflected {reflected}");
        assert_eq!(received(listener), 0, "reflected ESP delivered");
        assert!(
            lab.counter("drop_unknown_spi") >= unknown + 3,
            "reflected ESP counted"
        );
        let mismatch = lab.counter("esp_address_mismatch");
        let listener = listen(&na, A, P_IPSEC, 4);
        let forged = lab.scratch.path().join("forged.pcap");
        lab.inbound_esp(B_FORGED, (&enc_key, &auth_key), ("1000", "3"), &forged);
        assert_eq!(
            received(listener),
            0,
            "ESP from an address the SA does not name delivered"
        );
        assert!(
            lab.counter("esp_address_mismatch") >= mismatch + 3,
            "wrong-address ESP counted"
        );

        // --- Protected traffic while the daemon dies, its TUN vanishes, the interface bounces.
        let disruptions: [(&str, &Disruption); 3] = [
            ("kill -9", &|lab: &mut Lab| {
                lab.daemon.kill9();
            }),
            ("TUN deleted", &|lab: &mut Lab| {
                let _ =
                    netns::exec(&lab.pair.ns_a.clone(), &["ip", "link", "del", "xipsec0"]).output();
            }),
            ("interface down/up", &|lab: &mut Lab| {
                let (ns, iface) = (lab.pair.ns_a.clone(), lab.pair.if_a.clone());
                netns::output(&ns, &["ip", "link", "set", &iface, "down"]);
                std::thread::sleep(Duration::from_millis(300));
                netns::output(&ns, &["ip", "link", "set", &iface, "up"]);
                // Routes through the interface went with it; the tunnel's comes back by hand.
                netns::output(
                    &ns,
                    &["ip", "-6", "route", "replace", TB, "via", B1, "src", TA],
                );
            }),
        ];
        for (what, disrupt) in disruptions {
            let cap = lab.capture(&what.replace([' ', '/'], "-"));
            let sender = py(&na, &["udp-send", B1, "9000", "200", MARK_TEXT, "3000"])
                .spawn()
                .expect("starting a protected stream");
            std::thread::sleep(Duration::from_millis(500));
            disrupt(&mut lab);
            let _ = sender.wait_with_output();
            let frames = cap.stop();
            assert_no_clear(&frames, what);
            if lab.daemon.cli(&["status"]).status.success() {
                lab.daemon.stop();
            }
            lab.daemon.spawn();
        }

        // --- An engine thread dies: the daemon exits non-zero, protected traffic stays off the wire.
        lab.daemon.stop();
        let cap = lab.capture("engine-thread-death");
        let sender = py(&na, &["udp-send", B1, "9000", "150", MARK_TEXT, "3000"])
            .spawn()
            .expect("starting a protected stream");
        let dying = lab
            .daemon
            .sandbox
            .daemon_command()
            .env("XIPSEC_TEST_PANIC_ENGINE", "outbound")
            .output()
            .expect("running a daemon whose outbound worker dies");
        let _ = sender.wait_with_output();
        let frames = cap.stop();
        assert!(
            !dying.status.success(),
            "a dead engine thread makes the daemon exit non-zero"
        );
        assert!(
            String::from_utf8_lossy(&dying.stderr).contains("died"),
            "and it says so: {}",
            String::from_utf8_lossy(&dying.stderr)
        );
        assert_no_clear(&frames, "engine thread death");
        lab.daemon.spawn();

        // --- Boundary sizes arrive intact at scapy's ESP, transport and tunnel mode.
        // aes128-cbc + hmac-sha2-256: 8 (SPI, sequence) + 16 (IV) + padded(payload + 2) + 16 (ICV)
        // after the 40-byte IPv6 header; transport carries UDP (8), tunnel IPv6 + UDP (48).
        let largest =
            |inner_overhead: usize| (1500 - 40 - 8 - 16 - 16) / 16 * 16 - 2 - inner_overhead;
        for (mode, from, dst, sa, inner_overhead) in [
            ("transport", A, B1, lab.out.clone(), 8),
            ("tunnel", TA, TB, lab.tunnel.clone(), 48),
        ] {
            let fit = largest(inner_overhead);
            let sizes = [fit, fit + 1, 1280, 3000, 8000];
            let cap = lab.capture(&format!("boundary-{mode}"));
            for size in sizes {
                udp_send(&na, dst, P_IPSEC, 1, size);
            }
            ping(&na, from, dst, 8000);
            let frames = cap.stop();
            assert_no_clear(&frames, &format!("boundary sizes, {mode}"));
            let got = inner_udp_sizes(&frames, std::slice::from_ref(&sa), mode);
            assert_eq!(
                got,
                BTreeSet::from(sizes),
                "{mode}: every size arrives whole"
            );
            // The largest that fits leaves unfragmented (1,488 bytes: the cipher block leaves 12 of
            // the link's 1,500 unused), one byte more does not.
            let whole: Vec<usize> = frames
                .esp_frames()
                .iter()
                .filter(|f| f.fragment.is_none())
                .map(|f| f.ipv6().len())
                .collect();
            assert!(
                whole.contains(&1488),
                "{mode}: the largest datagram leaves whole: {whole:?}"
            );
            assert!(
                !whole.iter().any(|len| *len > 1500),
                "{mode}: no ESP frame over the link MTU: {whole:?}"
            );
            let pings = decrypt(std::slice::from_ref(&sa), &frames.esp_packets())
                .into_iter()
                .filter_map(Result::ok)
                .filter(|p| p.len() > 48 && p[6] == 58 && p[40] == 128)
                .map(|p| p.len() - 48)
                .collect::<Vec<_>>();
            assert!(
                pings.contains(&8000),
                "{mode}: the 8,000-byte ping arrives whole: {pings:?}"
            );
        }
    });
}

#[test]
fn a_non_ethernet_interface_is_refused() {
    as_root("a_non_ethernet_interface_is_refused", || {
        let guard = netns::Netns::new("xat");
        let ns = guard.name();
        netns::output(
            ns,
            &["ip", "tuntap", "add", "dev", "xadvtun0", "mode", "tun"],
        );
        netns::output(ns, &["ip", "link", "set", "xadvtun0", "up"]);
        let out = Sandbox::attached(ns, "xadvtun0")
            .daemon_command()
            .output()
            .expect("running the daemon");
        let attached = netns::output(ns, &["ip", "-d", "link", "show", "xadvtun0"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "the daemon started on a TUN device");
        assert!(
            stderr.contains("xadvtun0 is not an Ethernet interface"),
            "the refusal names the interface and why: {stderr}"
        );
        assert!(!attached.contains("xdp"), "nothing attached: {attached}");
    });
}

/// Resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("reading the daemon's status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS")
}

#[test]
fn a_flood_keeps_memory_flat_and_every_drop_counted() {
    as_root("a_flood_keeps_memory_flat_and_every_drop_counted", || {
        let pair = VethPair::new("xfl", 0xaf);
        let (na, nb) = (pair.ns_a.clone(), pair.ns_b.clone());
        let _absorb = xipsec_testkit::traffic::EspAbsorb::start(&nb);
        let daemon = Node::start(&na, &pair.if_a);
        let sa = EspSa::aes_sha256("o-flood", 0x3101, (&pair.addr_a, &pair.addr_b), 0x44);
        daemon.ok_args(&sa.sa_add_args());
        protect_udp(
            &daemon,
            "flood",
            "out",
            (&pair.addr_a, &pair.addr_b),
            "9000",
            "o-flood",
        );
        let pid = daemon.pid().expect("the daemon runs");
        let counter = |name: &str| {
            let text = daemon.ok(&["stats", "--formatter", "json"]);
            let json: serde_json::Value = serde_json::from_str(&text).expect("stats JSON");
            find_counter(&json, name).unwrap_or_else(|| panic!("no counter {name}"))
        };
        let before_rss = rss_kib(pid);
        // Two senders, each as fast as a core sends 1,200-byte datagrams to the protected port, on
        // a VM of two cores the engine shares with them: more than it can encrypt.
        let floods: Vec<_> = (0..2)
            .map(|_| {
                py(&na, &["udp-flood", &pair.addr_b, "9000", "1200", "4"])
                    .spawn()
                    .expect("starting a flood")
            })
            .collect();
        for mut flood in floods {
            assert!(flood.wait().expect("a flood").success(), "the flood ran");
        }
        std::thread::sleep(Duration::from_secs(2));
        let during_rss = rss_kib(pid);
        let to_engine = daemon
            .ok(&["stats", "--formatter", "json"])
            .contains("esp_encap_ok");
        assert!(to_engine, "stats lists the engine");
        let encrypted = counter("esp_encap_ok");
        let queue_drops = counter("esp_tun_queue_drops");
        let other = counter("esp_encap_errors") + counter("esp_send_errors") + counter("esp_no_sa");
        let redirected = ipsec_tests::maps::pinned_counter(
            &daemon.pin_dir(),
            ipsec_common::abi::Counter::IpsecToEngine,
        );
        assert!(
            redirected > 20_000,
            "a real flood: {redirected} packets to the engine"
        );
        assert!(
            queue_drops > 0,
            "twice what the engine handles must overflow its queue: {encrypted} encrypted of {redirected}"
        );
        let accounted = encrypted + queue_drops + other;
        eprintln!(
            "flood: {redirected} to the engine, {encrypted} encrypted, {queue_drops} dropped at the \
             TUN queue, {other} other; RSS {before_rss} -> {during_rss} KiB"
        );
        let missing = redirected.abs_diff(accounted);
        assert!(
            missing * 100 <= redirected,
            "every packet handed to the engine is encrypted or counted: {redirected} redirected, \
             {encrypted} encrypted, {queue_drops} dropped at the TUN queue, {other} other"
        );
        assert!(
            during_rss < before_rss + 32 * 1024,
            "memory stays flat under the flood: {before_rss} KiB before, {during_rss} KiB after"
        );
    });
}

/// A datagram a local process sends, and whether it may leave in clear.
type Probe<'a> = (&'a str, u16, &'a str, u16, Vec<u8>, bool);

/// Sends one UDP datagram `src`:`sport` -> `dst`:`dport` carrying `payload` from namespace `ns`
/// (a local process: no xipsec socket, no mark). `SO_REUSEPORT`: the engine's `UDP_GRO` socket
/// holds 4500 on the address of an encapsulated SA (shared that way with IKE), and a root
/// process can join that group too; what it sends must still get no bypass.
fn udp_datagram(ns: &str, (src, sport): (&str, u16), (dst, dport): (&str, u16), payload: &[u8]) {
    let script = "import socket,sys\n\
                  s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
                  s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEPORT,1)\n\
                  s.bind((sys.argv[1],int(sys.argv[2])))\n\
                  s.sendto(bytes.fromhex(sys.argv[5]),(sys.argv[3],int(sys.argv[4])))";
    let (sport, dport, hex) = (sport.to_string(), dport.to_string(), hex::encode(payload));
    let out = netns::exec(
        ns,
        &["python3", "-c", script, src, &sport, dst, &dport, &hex],
    )
    .output()
    .expect("sending a datagram");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(Duration::from_millis(200));
}

/// ESP in UDP and the IKE bypass tried as an attacker would, on a host whose `ipsec` SPs cover
/// everything to its peer (SAs with `--udp-encapsulation 4500`) and whose IKE peer pair is
/// configured (written into the pinned `XIPSEC_IKE_PEERS` as the IKE daemon would). A local
/// process wrapping a marker in UDP 4500 behind a forged SPI, on 4501 behind the non-ESP marker,
/// or on 500 to an unconfigured peer gets it protected (the marker never shows on the wire);
/// only IKE between the pair (500, and 4500 behind the marker) leaves in clear, counted
/// `pass_ike`. Inbound, IKE from the configured peer reaches a socket, the same from another
/// address on the link is dropped as clear traffic for an `ipsec` policy.
#[test]
fn udp_wrapping_grants_nothing_but_ike_between_configured_peers() {
    use aya::maps::{HashMap as BpfHashMap, Map, MapData};
    use ipsec_common::abi::{self, IkePeerKey};
    as_root(
        "udp_wrapping_grants_nothing_but_ike_between_configured_peers",
        || {
            let net = VethPair::new("udpa", 0x4553);
            let (a, b, b2) = (net.addr_a.as_str(), net.addr_b.as_str(), "fd00:4553::3");
            netns::exec(
                &net.ns_b,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{b2}/64"),
                    "dev",
                    &net.if_b,
                    "nodad",
                ],
            )
            .status()
            .expect("adding an address");
            let node = Node::start(&net.ns_a, &net.if_a);
            let key = |seed: u8| format!("0x{}", hex::encode([seed; 16]));
            for (name, src, dst, spi, seed) in
                [("ab", a, b, 0x4a01u32, 1u8), ("ba", b, a, 0x4a02, 2)]
            {
                node.ok(&[
                    "sa",
                    "add",
                    "--sa-name",
                    name,
                    "--sa-source",
                    src,
                    "--sa-destination",
                    dst,
                    "--sa-mode",
                    "transport",
                    "--sa-spi",
                    &format!("{spi:#x}"),
                    "--encryption-algorithm",
                    "aes128-cbc",
                    "--encryption-key",
                    &key(seed),
                    "--integrity-algorithm",
                    "hmac-sha2-256",
                    "--integrity-key",
                    &format!("0x{}", hex::encode([seed; 32])),
                    "--udp-encapsulation",
                    "4500",
                ]);
            }
            let net64 = "fd00:4553::/64";
            for (dir, sa, name) in [("out", "ab", "all-out"), ("in", "ba", "all-in")] {
                let sp = SpArgs {
                    sa: Some(sa),
                    ..SpArgs::ipsec(net64, net64, dir, name)
                };
                node.ok(&sp.args());
            }
            let peers = MapData::from_pin(node.pin_dir().join(abi::IKE_PEERS))
                .expect("the pinned ike peers");
            let mut peers: BpfHashMap<_, IkePeerKey, u32> =
                BpfHashMap::try_from(Map::HashMap(peers)).expect("a hash map");
            let pair = IkePeerKey {
                local: a.parse::<std::net::Ipv6Addr>().expect("a").octets(),
                remote: b.parse::<std::net::Ipv6Addr>().expect("b").octets(),
            };
            peers
                .insert(pair, 1, 0)
                .expect("configuring the ike peer pair");

            let cap = Capture::start(
                &net.ns_b,
                &net.if_b,
                &node.dir().join("udp-adv.pcap"),
                &[0x4a01, 0x4a02],
            );
            let pass_ike =
                || ipsec_tests::maps::pinned_counter(&node.pin_dir(), abi::Counter::PassIke);
            let ike_before = pass_ike();
            // (what, source port, destination, destination port, payload, leaves in clear)
            let probes: [Probe<'_>; 5] = [
                (
                    "forged spi to 4500",
                    40_000,
                    b,
                    4500,
                    [
                        &0x4a01u32.to_be_bytes()[..],
                        &[0, 0, 0, 9],
                        b"UDPADV-FORGED-ESP",
                    ]
                    .concat(),
                    false,
                ),
                (
                    "marker on 4501",
                    4501,
                    b,
                    4501,
                    [&[0u8; 4][..], b"UDPADV-NOT-IKE-4501"].concat(),
                    false,
                ),
                (
                    "ike to a stranger",
                    500,
                    b2,
                    500,
                    b"UDPADV-IKE-STRANGER".to_vec(),
                    false,
                ),
                (
                    "ike on 4500",
                    4500,
                    b,
                    4500,
                    [&[0u8; 4][..], b"UDPADV-IKE-NATT"].concat(),
                    true,
                ),
                ("ike on 500", 500, b, 500, b"UDPADV-IKE-500".to_vec(), true),
            ];
            for (_, sport, dst, dport, payload, _) in &probes {
                udp_datagram(&net.ns_a, (a, *sport), (dst, *dport), payload);
            }
            // Inbound: IKE from the configured peer reaches a's socket; from b2 it does not.
            let listener = UdpReceiver::start(&net.ns_a, a, 500, "2");
            udp_datagram(&net.ns_b, (b, 500), (a, 500), b"UDPADV-IKE-IN");
            udp_datagram(&net.ns_b, (b2, 500), (a, 500), b"UDPADV-IKE-IN-STRANGER");
            let clear_before = node.stat("drop_ipsec_clear");
            let received = listener.count();
            let seen = cap.stop();
            for (what, _, _, _, payload, clear) in &probes {
                let marker = &payload[payload.len() - 10..];
                let shown: Vec<&Frame> =
                    seen.frames.iter().filter(|f| f.contains(marker)).collect();
                assert_eq!(
                    !shown.is_empty(),
                    *clear,
                    "{what}: in clear on the wire:\n{}",
                    describe(&shown)
                );
            }
            assert_eq!(pass_ike() - ike_before, 3, "two ike datagrams out, one in");
            assert_eq!(received, 1, "ike from the configured peer only");
            assert!(
                node.stat("drop_ipsec_clear") >= clear_before,
                "the stranger's ike is dropped"
            );
        },
    );
}
