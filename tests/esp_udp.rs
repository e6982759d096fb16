//! ESP in UDP (RFC 3948) on port 4500, both ways.
//!
//! - `udp_scapy_peer_interoperates_over_udp_4500`: scapy's `SecurityAssociation(...,
//!   nat_t_header=UDP(sport=4500, dport=4500))` (`fixtures/udp_esp_peer.py`), an implementation
//!   we did not write, in b; an xipsec daemon (AF_XDP in and out) in a with SAs added with
//!   `--udp-encapsulation 4500`, for aes128-cbc/hmac-sha2-256 and aes128-gcm in transport and
//!   tunnel mode. scapy's ICMPv6 echo requests (three sizes) and a UDP datagram to an echo
//!   server are delivered byte for byte (a's answers carry the same payload), and every answer
//!   comes back as ESP in UDP from 4500 to 4500 with a valid UDP checksum, which scapy verifies
//!   and decrypts. Plain ESP under the encapsulated SA's SPI and ESP in UDP under a plain SA's
//!   SPI get no answer and count `esp_encap_mismatch`; a NAT-keepalive counts
//!   `drop_nat_keepalive`. A capture on b (no xipsec there) sees nothing of the protected flow
//!   but ESP in UDP under the test's SPIs.
//! - `udp_two_xipsec_hosts_ping_and_tcp_over_udp_4500`: two daemons sending by the raw-socket
//!   path (the raw UDP socket and TC egress's engine-socket check), manual SAs with
//!   `--udp-encapsulation 4500`: ping and a 2 MB TCP transfer with matching checksums; each
//!   side's capture of what it sends holds only ESP in UDP under the test's SPIs. `--esp-gso off`
//!   on both: one packet per skb.
//! - `udp_gso_stream_tamper_and_replay_in_super_packets`: the UDP GSO/GRO path (`--esp-gso on`,
//!   the default). a sends tap-visibly (`--esp-tx raw`: its GSO frames leave by a packet socket,
//!   which taps see), b receives by AF_XDP and its GRO socket. A 4 MB TCP stream a -> b arrives
//!   with the same SHA-256; a's capture of what it sends holds not one clear frame of the flow,
//!   only ESP in UDP under the test's SPIs, and at least one GSO frame (a UDP payload longer
//!   than an AF_XDP frame) and at least 4 MB of ESP bytes; a counts GSO frames and segments, b
//!   counts GRO super-packets and segments. Then a super-packet injected past a's TC egress
//!   (`fixtures/gso_inject.py`) carries two replays of captured ESP and two copies whose
//!   sequence number was raised (so the ICV no longer matches): b counts 4 GRO segments, 2
//!   replay drops, 2 ICV failures and delivers nothing more.

use std::time::Duration;

use ipsec_tests::esp_oracle::key_hex;
use serde_json::{Value, json};
use xipsec_testkit::{
    as_root,
    capture::{Capture, Class, Frame, Frames},
    cli::{SpArgs, protect_host_pair},
    daemon::{Node, Sandbox},
    netns::{self, VethPair},
    traffic::{self, Ready, fixture_with_input},
};

const NAT_T_PORT: u16 = 4500;
const INNER_A: &str = "fd00:4561::1";
const INNER_B: &str = "fd00:4561::2";
const UDP_ECHO_PORT: u16 = 7;

fn sh_in(ns: &str, args: &[&str]) {
    let out = netns::exec(ns, args).output().expect("running a command");
    assert!(
        out.status.success(),
        "{args:?} in {ns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(ns: &str, iface: &str) -> String {
    let out = netns::exec(ns, &["cat", &format!("/sys/class/net/{iface}/address")])
        .output()
        .expect("reading a MAC address");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The SPI of ESP in UDP (4500 at either end, right after the fixed IPv6 header, not the
/// non-ESP marker), if `frame` is that.
fn udp_esp_spi(frame: &Frame) -> Option<u32> {
    let ip = frame.ipv6();
    if ip.get(6) != Some(&17) || frame.fragment.is_some() {
        return None;
    }
    let udp = ip.get(40..56)?;
    let port = |at: usize| u16::from_be_bytes([udp[at], udp[at + 1]]);
    let spi = u32::from_be_bytes([udp[8], udp[9], udp[10], udp[11]]);
    ((port(0) == NAT_T_PORT || port(2) == NAT_T_PORT) && spi != 0).then_some(spi)
}

/// Frames that are neither link control nor ESP in UDP under one of `spis`, other than what
/// `allowed` lets through.
fn not_udp_esp<'a>(
    frames: &'a Frames,
    spis: &[u32],
    allowed: impl Fn(&Frame) -> bool,
) -> Vec<&'a Frame> {
    frames
        .frames
        .iter()
        .filter(|f| f.class != Class::Control)
        .filter(|f| !udp_esp_spi(f).is_some_and(|spi| spis.contains(&spi)))
        .filter(|f| !allowed(f))
        .collect()
}

fn describe(frames: &[&Frame]) -> String {
    frames
        .iter()
        .map(|f| f.describe())
        .collect::<Vec<_>>()
        .join("\n")
}

struct Combo {
    enc: &'static str,
    integ: Option<&'static str>,
    mode: &'static str,
}

impl Combo {
    fn enc_key(&self, seed: u8) -> String {
        key_hex(seed, if self.enc == "aes128-gcm" { 20 } else { 16 })
    }

    fn integ_key(&self, seed: u8) -> Option<String> {
        self.integ.map(|_| key_hex(seed.wrapping_add(0x80), 32))
    }

    fn sa_add(
        &self,
        name: &str,
        (src, dst): (&str, &str),
        spi: u32,
        seed: u8,
        udp: bool,
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "sa",
            "add",
            "--sa-name",
            name,
            "--sa-source",
            src,
            "--sa-destination",
            dst,
            "--sa-mode",
            self.mode,
            "--encryption-algorithm",
            self.enc,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(["--sa-spi".into(), format!("{spi:#x}")]);
        args.extend(["--encryption-key".into(), self.enc_key(seed)]);
        if let (Some(integ), Some(key)) = (self.integ, self.integ_key(seed)) {
            args.extend([
                "--integrity-algorithm".into(),
                integ.into(),
                "--integrity-key".into(),
                key,
            ]);
        }
        if udp {
            args.extend(["--udp-encapsulation".into(), NAT_T_PORT.to_string()]);
        }
        args
    }
}

/// Transport-mode SAs "ab" (SPI `spis.0`) and "ba" (`spis.1`), aes128-cbc/hmac-sha2-256 in UDP
/// 4500, and the SPs protecting everything between the two veth addresses, on both nodes;
/// returns the SPIs.
fn protect_over_udp(net: &VethPair, (a, b): (&Node, &Node), spis: (u32, u32)) -> [u32; 2] {
    let combo = Combo {
        enc: "aes128-cbc",
        integ: Some("hmac-sha2-256"),
        mode: "transport",
    };
    let (ab, ba) = (
        (net.addr_a.as_str(), net.addr_b.as_str()),
        (net.addr_b.as_str(), net.addr_a.as_str()),
    );
    for (node, me, peer, out, inn) in [
        (a, &net.addr_a, &net.addr_b, "ab", "ba"),
        (b, &net.addr_b, &net.addr_a, "ba", "ab"),
    ] {
        node.ok_args(&combo.sa_add("ab", ab, spis.0, 1, true));
        node.ok_args(&combo.sa_add("ba", ba, spis.1, 2, true));
        for sp in protect_host_pair(me, peer, out, inn) {
            node.ok_args(&sp);
        }
    }
    [spis.0, spis.1]
}

fn strip(key: Option<String>) -> Option<String> {
    key.map(|k| k.trim_start_matches("0x").to_owned())
}

#[test]
fn udp_scapy_peer_interoperates_over_udp_4500() {
    as_root("udp_scapy_peer_interoperates_over_udp_4500", || {
        let net = VethPair::new("udps", 0x4551);
        for (ns, own, peer_inner, via) in [
            (&net.ns_a, INNER_A, INNER_B, &net.addr_b),
            (&net.ns_b, INNER_B, INNER_A, &net.addr_a),
        ] {
            sh_in(
                ns,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{own}/128"),
                    "dev",
                    "lo",
                ],
            );
            sh_in(
                ns,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    &format!("{peer_inner}/128"),
                    "via",
                    via,
                ],
            );
        }
        let a = Node::start(&net.ns_a, &net.if_a);
        let (mac_a, mac_b) = (mac(&net.ns_a, &net.if_a), mac(&net.ns_b, &net.if_b));
        let responder = traffic::py_fixture(
            &net.ns_a,
            "scapy_peer.py",
            &[
                "respond",
                &format!("{},{INNER_A}", net.addr_a),
                &UDP_ECHO_PORT.to_string(),
                "9000",
                "600",
            ],
        );
        let _responder = Ready::start(responder, "the responder on the xipsec host");

        let combos = [
            Combo {
                enc: "aes128-cbc",
                integ: Some("hmac-sha2-256"),
                mode: "transport",
            },
            Combo {
                enc: "aes128-cbc",
                integ: Some("hmac-sha2-256"),
                mode: "tunnel",
            },
            Combo {
                enc: "aes128-gcm",
                integ: None,
                mode: "transport",
            },
            Combo {
                enc: "aes128-gcm",
                integ: None,
                mode: "tunnel",
            },
        ];
        let spis_of = |i: u32| (0x4500 + 0x10 * i, 0x4501 + 0x10 * i, 0x4502 + 0x10 * i);
        let all_spis: Vec<u32> = (0..4u32)
            .flat_map(|i| {
                let (a, b, c) = spis_of(i);
                [a, b, c]
            })
            .collect();
        let cap = Capture::start(&net.ns_b, &net.if_b, &a.dir().join("udp.pcap"), &all_spis);
        let mut failures = Vec::new();
        for (i, combo) in combos.iter().enumerate() {
            let n = u32::try_from(i).expect("few");
            let seed = u8::try_from(i * 3).expect("few");
            let (spi_in, spi_out, spi_plain) = spis_of(n);
            a.ok(&["sp", "remove", "--remove-all"]);
            a.ok(&["sa", "remove", "--remove-all"]);
            let (ta, tb) = if combo.mode == "tunnel" {
                (INNER_A, INNER_B)
            } else {
                (net.addr_a.as_str(), net.addr_b.as_str())
            };
            let outer = |dir: &str| {
                if dir == "in" {
                    (net.addr_b.as_str(), net.addr_a.as_str())
                } else {
                    (net.addr_a.as_str(), net.addr_b.as_str())
                }
            };
            a.ok_args(&combo.sa_add("u-in", outer("in"), spi_in, seed, true));
            a.ok_args(&combo.sa_add("u-out", outer("out"), spi_out, seed + 1, true));
            // A plain SA (no UDP), which an inbound SP names for other addresses: its SPI is
            // one of ours, its shape plain ESP.
            a.ok_args(&combo.sa_add("plain-in", outer("in"), spi_plain, seed + 2, false));
            for (dir, src, dst, sa, name) in [
                ("in", tb, ta, "u-in", "p-in"),
                ("out", ta, tb, "u-out", "p-out"),
                ("in", "fd00:4559::2", "fd00:4559::1", "plain-in", "p-plain"),
            ] {
                let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
                let sp = SpArgs {
                    sa: Some(sa),
                    ..SpArgs::ipsec(&src, &dst, dir, name)
                };
                a.ok(&sp.args());
            }
            let mismatch_before = a.stat("esp_encap_mismatch");
            let keepalive_before = a.stat("drop_nat_keepalive");
            let params = json!({
                "iface": net.if_b, "src_mac": mac_b, "dst_mac": mac_a,
                "outer_a": net.addr_a, "outer_b": net.addr_b, "inner_a": ta, "inner_b": tb,
                "mode": combo.mode,
                "crypt_algo": if combo.integ.is_some() { "AES-CBC" } else { "AES-GCM" },
                "auth_algo": if combo.integ.is_some() { "SHA2-256-128" } else { "NULL" },
                "crypt_key_b_to_a": strip(Some(combo.enc_key(seed))),
                "auth_key_b_to_a": strip(combo.integ_key(seed)),
                "crypt_key_a_to_b": strip(Some(combo.enc_key(seed + 1))),
                "auth_key_a_to_b": strip(combo.integ_key(seed + 1)),
                "plain_crypt_key": strip(Some(combo.enc_key(seed + 2))),
                "plain_auth_key": strip(combo.integ_key(seed + 2)),
                "spi_b_to_a": format!("{spi_in:#x}"), "spi_a_to_b": format!("{spi_out:#x}"),
                "plain_spi": format!("{spi_plain:#x}"),
                "udp_echo_port": UDP_ECHO_PORT, "timeout": 3.0,
            });
            let out = fixture_with_input(
                Some(&net.ns_b),
                "udp_esp_peer.py",
                &["peer"],
                params.to_string().as_bytes(),
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            let r: Value = serde_json::from_str(stdout.lines().last().unwrap_or_default())
                .unwrap_or_else(|e| {
                    panic!(
                        "udp_esp_peer.py: {e}: {stdout}{}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            let mut bad: Vec<String> = r["errors"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| format!("scapy: {e}"))
                .collect();
            if r["echo"] != json!([true, true, true]) || r["udp"] != true {
                bad.push(format!("answers: echo {} udp {}", r["echo"], r["udp"]));
            }
            if r["answers_to_negatives"] != 0 {
                bad.push(format!(
                    "{} answers to the negative cases",
                    r["answers_to_negatives"]
                ));
            }
            let mismatch = a.stat("esp_encap_mismatch") - mismatch_before;
            let keepalive = a.stat("drop_nat_keepalive") - keepalive_before;
            if (mismatch, keepalive) != (2, 1) {
                bad.push(format!(
                    "esp_encap_mismatch +{mismatch} (want 2), drop_nat_keepalive +{keepalive} (want 1)"
                ));
            }
            for (sa, want) in [("u-in", 4), ("u-out", 4), ("plain-in", 0)] {
                let got = a.sa_counter(sa, "packets");
                if got != want {
                    bad.push(format!("{sa}.packets = {got}, want {want}"));
                }
            }
            eprintln!(
                "{}/{}/{}: {}",
                combo.enc,
                combo.integ.unwrap_or("none"),
                combo.mode,
                if bad.is_empty() {
                    "ok".to_owned()
                } else {
                    bad.join("; ")
                }
            );
            if !bad.is_empty() {
                failures.push(format!(
                    "{} {} {}: {}\nstats: {}",
                    combo.enc,
                    combo.mode,
                    i,
                    bad.join("\n  "),
                    a.ok(&["stats"])
                ));
            }
        }
        let seen = cap.stop();
        // What b sent on purpose in clear: the keepalives and the plain-ESP probes (ESP under a
        // test SPI, protected anyway). Everything a sent must be ESP in UDP.
        let keepalive = |f: &Frame| f.src.to_string() == net.addr_b && f.ipv6().len() == 49;
        let plain_probe =
            |f: &Frame| f.class == Class::Protected && f.src.to_string() == net.addr_b;
        let clear = not_udp_esp(&seen, &all_spis, |f| keepalive(f) || plain_probe(f));
        assert!(
            clear.is_empty(),
            "not ESP in UDP on the wire:\n{}",
            describe(&clear)
        );
        let from_a = seen
            .frames
            .iter()
            .filter(|f| f.src.to_string() == net.addr_a && udp_esp_spi(f).is_some())
            .count();
        assert!(from_a >= 16, "only {from_a} ESP-in-UDP frames from a");
        assert!(
            failures.is_empty(),
            "{}\nlog:\n{}",
            failures.join("\n"),
            a.log()
        );
    });
}

#[test]
fn udp_two_xipsec_hosts_ping_and_tcp_over_udp_4500() {
    as_root("udp_two_xipsec_hosts_ping_and_tcp_over_udp_4500", || {
        let net = VethPair::new("udpe", 0x4552);
        // Packet by packet: the raw UDP socket's path (the GSO path has its own test).
        let raw = |ns: &str, iface: &str| {
            Node::start_in(Sandbox::attached(ns, iface).with_daemon_args(&[
                "--esp-tx",
                "raw",
                "--esp-gso",
                "off",
            ]))
        };
        let (a, b) = (raw(&net.ns_a, &net.if_a), raw(&net.ns_b, &net.if_b));
        let spis = protect_over_udp(&net, (&a, &b), (0x4601, 0x4602));
        let cap_a = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("a.pcap"), &spis);
        let cap_b = Capture::start(&net.ns_b, &net.if_b, &b.dir().join("b.pcap"), &spis);
        assert!(
            traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
            "ping over ESP in UDP failed\na: {}\nb: {}",
            a.ok(&["stats"]),
            b.ok(&["stats"])
        );
        let (sent, received, errors) =
            traffic::tcp_transfer(&net.ns_a, (&net.ns_b, &net.addr_b), "9500", "2");
        assert!(
            sent.starts_with("2000000 "),
            "source: {sent} {errors}\na: {}\nb: {}",
            a.ok(&["stats"]),
            b.ok(&["stats"])
        );
        assert_eq!(received, sent, "2 MB over ESP in UDP must arrive intact");
        let (seen_a, seen_b) = (cap_a.stop(), cap_b.stop());
        // a sends the 2 MB (over 1,400 segments), b mostly acknowledgements (fewer: the
        // engine delivers coalesced segments, which the stack acknowledges together).
        for (seen, me, who, least) in [
            (&seen_a, &net.addr_a, "a", 1_000),
            (&seen_b, &net.addr_b, "b", 20),
        ] {
            let sent_by_me: Vec<&Frame> = not_udp_esp(seen, &spis, |_| false)
                .into_iter()
                .filter(|f| f.src.to_string() == *me)
                .collect();
            assert!(
                sent_by_me.is_empty(),
                "{who} sent not ESP in UDP:\n{}",
                describe(&sent_by_me)
            );
            let esp = seen
                .frames
                .iter()
                .filter(|f| f.src.to_string() == *me && udp_esp_spi(f).is_some())
                .count();
            assert!(esp > least, "{who} sent only {esp} ESP-in-UDP frames");
        }
        for node in [&a, &b] {
            assert_eq!(node.stat("esp_encap_mismatch"), 0);
            assert!(node.sa_counter("ab", "packets") > 0 && node.sa_counter("ba", "packets") > 0);
        }
    });
}

/// Length of the UDP payload of `frame` (ESP in UDP: the ESP packet, or a GSO frame's ESP
/// packets together), from the IPv6 payload length (the capture may be truncated).
fn udp_payload_len(frame: &Frame) -> usize {
    let ip = frame.ipv6();
    usize::from(u16::from_be_bytes([ip[4], ip[5]])).saturating_sub(8)
}

#[test]
fn udp_gso_stream_tamper_and_replay_in_super_packets() {
    as_root("udp_gso_stream_tamper_and_replay_in_super_packets", || {
        let net = VethPair::new("ugso", 0x4553);
        let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
        let b = Node::start(&net.ns_b, &net.if_b);
        let spis = protect_over_udp(&net, (&a, &b), (0x4701, 0x4702));
        let cap_a = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("a.pcap"), &spis);
        // Pings of one size: ESP packets of one length to replay below.
        assert!(
            traffic::ping(&net.ns_a, &net.addr_b, ("2", "2"), None),
            "ping over ESP in UDP failed"
        );
        let (sent, received, errors) =
            traffic::tcp_transfer(&net.ns_a, (&net.ns_b, &net.addr_b), "9501", "4");
        assert!(sent.starts_with("4000000 "), "source: {sent} {errors}");
        assert_eq!(
            received, sent,
            "4 MB over GSO ESP in UDP must arrive intact"
        );
        let seen = cap_a.stop();
        let clear: Vec<&Frame> = not_udp_esp(&seen, &spis, |_| false)
            .into_iter()
            .filter(|f| f.src.to_string() == net.addr_a)
            .collect();
        assert!(
            clear.is_empty(),
            "a sent not ESP in UDP:\n{}",
            describe(&clear)
        );
        let esp: Vec<&Frame> = seen
            .frames
            .iter()
            .filter(|f| f.src.to_string() == net.addr_a && udp_esp_spi(f) == Some(spis[0]))
            .collect();
        let esp_bytes: usize = esp.iter().map(|f| udp_payload_len(f)).sum();
        assert!(
            esp_bytes > 4_000_000,
            "only {esp_bytes} bytes of ESP left a"
        );
        let largest = esp.iter().map(|f| udp_payload_len(f)).max().unwrap_or(0);
        assert!(
            largest > 3_456,
            "no GSO frame left a (largest UDP payload {largest})"
        );
        let (frames, segments) = (a.stat("esp_udp_gso_frames"), a.stat("esp_udp_gso_segments"));
        assert!(
            frames > 0 && segments > 2 * frames,
            "a: {frames} GSO frames carrying {segments} packets"
        );
        let (gro, gro_segments) = (
            b.stat("esp_udp_gro_received"),
            b.stat("esp_udp_gro_segments"),
        );
        assert!(
            gro > 0 && gro_segments > gro,
            "b: {gro} GRO datagrams carrying {gro_segments} packets"
        );
        // Two ESP packets of one length that b accepted (the pings), replayed and tampered
        // inside one super-packet.
        let single: Vec<&[u8]> = esp
            .iter()
            .map(|f| &f.ipv6()[48..])
            .filter(|esp| esp.len() < 1_000)
            .collect();
        let len = single.first().map_or(0, |e| e.len());
        let pair: Vec<&[u8]> = single
            .iter()
            .copied()
            .filter(|e| e.len() == len)
            .take(2)
            .collect();
        assert_eq!(
            pair.len(),
            2,
            "two ESP packets of one length from the pings"
        );
        let raised = |esp: &[u8]| {
            let mut tampered = esp.to_vec();
            tampered[4..8].copy_from_slice(&0x7fff_0000u32.to_be_bytes());
            hex::encode(tampered)
        };
        // Longer than an AF_XDP frame in all, so XDP leaves it to the stack whole.
        let payloads = [
            hex::encode(pair[0]),
            raised(pair[0]),
            hex::encode(pair[1]),
            raised(pair[1]),
        ];
        let copies = 3_500 / (4 * len) + 1;
        let payloads: Vec<String> = (0..copies).flat_map(|_| payloads.clone()).collect();
        let counters = [
            "esp_udp_gro_segments",
            "esp_replay_drops",
            "esp_auth_failures",
            "esp_delivered",
        ];
        let start: Vec<u64> = counters.iter().map(|c| b.stat(c)).collect();
        let injected = fixture_with_input(
            Some(&net.ns_a),
            "gso_inject.py",
            &[
                &net.if_a,
                &mac(&net.ns_b, &net.if_b),
                &mac(&net.ns_a, &net.if_a),
                &net.addr_a,
                &net.addr_b,
                "4500",
                &len.to_string(),
            ],
            payloads.join("\n").as_bytes(),
        );
        assert!(
            injected.status.success(),
            "injecting: {}",
            String::from_utf8_lossy(&injected.stderr)
        );
        std::thread::sleep(Duration::from_millis(500));
        let grew: Vec<u64> = counters
            .iter()
            .zip(&start)
            .map(|(c, start)| b.stat(c) - start)
            .collect();
        let n = u64::try_from(payloads.len()).expect("small");
        assert_eq!(
            grew,
            [n, n / 2, n / 2, 0],
            "{counters:?} grew by {grew:?} after a super-packet of {n} replayed or tampered ESP packets"
        );
    });
}

/// `sa add --udp-encapsulation`: bad values and `any` endpoints are refused with an error naming
/// the option and change nothing; good ones show in every formatter (the last column),
/// in `export` (whose line `apply` takes back unchanged), and survive a restart.
#[test]
fn udp_encapsulation_option_is_checked_kept_and_shown() {
    let mut node = Node::start_in(xipsec_testkit::daemon::Sandbox::new());
    let add = |name: &str, source: &str, ports: &str| {
        node.cli(&[
            "sa",
            "add",
            "--sa-name",
            name,
            "--sa-source",
            source,
            "--sa-destination",
            "2001:db8::2",
            "--sa-mode",
            "transport",
            "--sa-spi",
            "0x4900",
            "--encryption-algorithm",
            "aes128-gcm",
            "--encryption-key",
            "0x00112233445566778899aabbccddeeff01020304",
            "--udp-encapsulation",
            ports,
        ])
    };
    for ports in [
        "0", "70000", "4500:", ":4500", "+4500", "abc", "1:2:3", "4500:0", "",
    ] {
        let out = add("bad", "2001:db8::1", ports);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("error: --udp-encapsulation:"),
            "--udp-encapsulation {ports:?}: {stderr}"
        );
    }
    let out = add("bad", "any", "4500");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("--udp-encapsulation: not allowed with --sa-source any"),
        "any: {stderr}"
    );
    assert_eq!(
        node.ok(&["sa", "list", "--formatter", "json"]).trim(),
        "[]",
        "nothing changed"
    );

    assert!(add("nat", "2001:db8::1", "4500:31000").status.success());
    let check = |node: &Node, when: &str| {
        let list: Value = serde_json::from_str(&node.ok(&["sa", "list", "--formatter", "json"]))
            .expect("sa list json");
        assert_eq!(list[0]["udp_encapsulation"], "4500:31000", "{when}: {list}");
        let xml = node.ok(&["sa", "list", "--formatter", "xml"]);
        assert!(xml.contains("4500:31000"), "{when}: {xml}");
        let table = node.ok(&["sa", "list"]);
        assert!(
            table.contains("UDP Encap") && table.contains("4500:31000"),
            "{when}: {table}"
        );
        let export = node.ok(&["export"]);
        assert!(
            export.contains("--udp-encapsulation 4500:31000"),
            "{when}: {export}"
        );
    };
    check(&node, "after sa add");
    node.stop();
    node.spawn();
    check(&node, "after a restart");

    // `apply` (which parses its lines with `sa add`'s own definitions) compares it: the same
    // SA applies as no change, other ports as a change of that option.
    let file = node.dir().join("apply.conf");
    let line = |ports: &str| {
        format!(
            "sa add --sa-name nat --sa-source 2001:db8::1 --sa-destination 2001:db8::2 \
             --sa-mode transport --sa-spi 0x4900 --encryption-algorithm aes128-gcm \
             --encryption-key 0x00112233445566778899aabbccddeeff01020304 \
             --udp-encapsulation {ports}\n"
        )
    };
    let dry_run = |ports: &str| {
        std::fs::write(&file, line(ports)).expect("writing the apply file");
        node.ok(&["apply", "--dry-run", file.to_str().expect("utf-8")])
    };
    let (same, changed) = (dry_run("4500:31000"), dry_run("4500:4500"));
    assert!(
        !same.contains("udp-encapsulation") && changed.contains("udp-encapsulation"),
        "apply --dry-run of the export:\n{same}\nwith other ports:\n{changed}"
    );
}
