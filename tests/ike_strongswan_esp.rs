//! xipsec's daemon against strongSwan's charon with traffic: IKEv2 with a PSK negotiates a
//! tunnel-mode CHILD_SA between an xipsec host (namespace a: `ike peer add`, SPs with
//! `--ike-peer`) and charon (namespace b, `kernel-libipsec`: userspace ESP, always inside UDP
//! 4500), then ping and a 10 MB TCP transfer cross the tunnel both ways with matching checksums.
//!
//! Both roles (xipsec initiates; charon initiates), the three IKE groups (31, 19, 14) and two ESP
//! suites (AES-GCM and AES-CBC with HMAC-SHA-256). Both sides must list the same ESP SPIs,
//! crossed. A capture on charon's side of the wire (the far side of xipsec's XDP) must hold only
//! IKE (UDP 500/4500 with the non-ESP marker) and ESP inside UDP 4500 between the two hosts:
//! no frame carries an inner address in clear. After the transfers xipsec rekeys the CHILD_SA
//! over UDP 4500, which its ESP engine's GRO socket shares with IKE (the answer must reach IKE),
//! and ping crosses the tunnel again.
//!
//! Needs root (namespaces) and Debian's charon; fails under `CI=true` when it cannot run.

use std::{
    net::Ipv6Addr,
    process::{Output, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use xipsec_testkit::{
    as_root,
    capture::{Capture, Class, Frames},
    cli::{self, SpArgs},
    daemon::Node,
    netns::{VethPair, exec},
    strongswan::Charon,
    traffic::py,
};

const PSK_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const IKE_PORT: u16 = 500;
const NATT_PORT: u16 = 4500;
/// Bytes of each TCP transfer.
const TRANSFER_MB: &str = "10";

/// One interop case: who initiates and what is negotiated.
struct Case {
    xipsec_initiates: bool,
    ike: &'static str,
    esp: &'static str,
    tag: u16,
}

const CASES: [Case; 3] = [
    Case {
        xipsec_initiates: true,
        ike: "aes128-sha256-x25519",
        esp: "aes128gcm16",
        tag: 0x5e1,
    },
    Case {
        xipsec_initiates: false,
        ike: "aes256-sha256-ecp256",
        esp: "aes128-sha256",
        tag: 0x5e2,
    },
    Case {
        xipsec_initiates: true,
        ike: "aes128-sha256-modp2048",
        esp: "aes128-sha256",
        tag: 0x5e3,
    },
];

/// The two hosts, their inner (tunnelled) addresses and the daemons.
struct Lab {
    net: VethPair,
    inner_a: String,
    inner_b: String,
    xipsec: Node,
    charon: Charon,
    scratch: tempfile::TempDir,
}

impl Lab {
    fn new(case: &Case) -> Self {
        let net = VethPair::new("swe", case.tag);
        let inner_a = format!("fd00:{:x}:a::1", case.tag);
        let inner_b = format!("fd00:{:x}:b::1", case.tag);
        for (ns, me) in [(&net.ns_a, &inner_a), (&net.ns_b, &inner_b)] {
            xipsec_testkit::netns::add_address(ns, &format!("{me}/128"), "lo");
        }
        // a reaches b's inner address over the wire (xipsec's TC program takes it from there);
        // charon routes a's inner address through its TUN itself (table 220).
        xipsec_testkit::sh(&[
            "ip",
            "-n",
            &net.ns_a,
            "-6",
            "route",
            "add",
            &format!("{inner_b}/128"),
            "via",
            &net.addr_b,
        ]);
        let scratch = tempfile::Builder::new()
            .prefix("xipsec-swesp-")
            .tempdir()
            .expect("a scratch directory");
        let charon = Charon::start(
            &net.ns_b,
            &scratch.path().join("charon"),
            "retransmit_tries = 3\n  retransmit_timeout = 1",
        );
        let xipsec = Node::start(&net.ns_a, &net.if_a);
        Self {
            net,
            inner_a,
            inner_b,
            xipsec,
            charon,
            scratch,
        }
    }

    fn configure(&self, case: &Case) {
        let net = &self.net;
        self.charon.load(&format!(
            "connections {{\n  xi {{\n    version = 2\n    local_addrs = {b}\n    \
             remote_addrs = {a}\n    proposals = {ike}\n    mobike = no\n    local {{\n      \
             auth = psk\n      id = {b}\n    }}\n    remote {{\n      auth = psk\n      \
             id = {a}\n    }}\n    children {{\n      net {{\n        local_ts = {ib}/128\n        \
             remote_ts = {ia}/128\n        esp_proposals = {esp}\n        mode = tunnel\n      \
             }}\n    }}\n  }}\n}}\nsecrets {{\n  ike-xi {{\n    id-a = {a}\n    id-b = {b}\n    \
             secret = 0x{PSK_HEX}\n  }}\n}}\n",
            a = net.addr_a,
            b = net.addr_b,
            ia = self.inner_a,
            ib = self.inner_b,
            ike = case.ike,
            esp = case.esp,
        ));
        let initiate = if case.xipsec_initiates {
            "always"
        } else {
            "never"
        };
        let psk = format!("0x{PSK_HEX}");
        self.xipsec.ok(&cli::ike_peer_add(
            "swan",
            (&net.addr_a, &net.addr_b),
            (&psk, initiate),
            &["--ike-proposal", case.ike, "--esp-proposal", case.esp],
        ));
        for (name, src, dst, dir) in [
            ("swan-out", &self.inner_a, &self.inner_b, "out"),
            ("swan-in", &self.inner_b, &self.inner_a, "in"),
        ] {
            let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
            let sp = SpArgs::ike((&src, &dst), dir, "tunnel", "swan", name);
            self.xipsec.ok(&sp.args());
        }
    }

    /// Waits until charon has the CHILD_SA installed and xipsec lists the same SPIs, crossed.
    fn established(&self, case: &Case) {
        if !case.xipsec_initiates {
            let out = self
                .charon
                .command(&["--initiate", "--child", "net", "--timeout", "15"])
                .stdout(Stdio::null())
                .output()
                .expect("running swanctl --initiate");
            assert!(
                out.status.success(),
                "swanctl --initiate failed: {}\ncharon log:\n{}\nxipsec log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.charon.log(),
                self.xipsec.log()
            );
        }
        let (sas, installed) = self
            .charon
            .wait_for_sas(Duration::from_secs(20), |sas| sas.contains("INSTALLED"));
        assert!(
            installed,
            "{} / {}: no CHILD_SA installed at charon: {sas}\ncharon log:\n{}\nxipsec log:\n{}",
            case.ike,
            case.esp,
            self.charon.log(),
            self.xipsec.log()
        );
        let (charon_in, charon_out) = xipsec_testkit::strongswan::child_spis(&sas);
        assert_eq!((charon_in.len(), charon_out.len()), (1, 1), "{sas}");
        // xipsec installs its SAs once IKE_AUTH completes on its side: give it a moment.
        let started = Instant::now();
        loop {
            let ours = self.xipsec_spis();
            if ours.contains(&charon_in[0]) && ours.contains(&charon_out[0]) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "xipsec lists SPIs {ours:x?}, charon {charon_in:x?} in / {charon_out:x?} out\n\
                 sa list: {}\nxipsec log:\n{}",
                self.xipsec.ok(&["sa", "list"]),
                self.xipsec.log()
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// The SPIs of the SAs xipsec lists.
    fn xipsec_spis(&self) -> Vec<u32> {
        let out = self.xipsec.ok(&["sa", "list", "--formatter", "json"]);
        let list: serde_json::Value = serde_json::from_str(&out).expect("parsing sa list");
        list.as_array()
            .expect("a JSON array")
            .iter()
            .filter_map(|sa| sa["spi"].as_str())
            .filter_map(|spi| u32::from_str_radix(spi.trim_start_matches("0x"), 16).ok())
            .collect()
    }

    /// Pings `to` from `from` in namespace `ns`; whether all 5 came back.
    fn ping(ns: &str, from: &str, to: &str) -> bool {
        exec(
            ns,
            &[
                "ping", "-6", "-c", "5", "-i", "0.2", "-W", "2", "-I", from, to,
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running ping")
        .success()
    }

    /// A 10 MB TCP transfer from `src` in `from_ns` to `dst` in `to_ns`; (sent, received) as
    /// `traffic.py` prints them: byte count and SHA-256.
    fn transfer(from_ns: &str, src: &str, to_ns: &str, dst: &str, port: &str) -> (String, String) {
        let sink = py(to_ns, &["tcp-sink", dst, port, "30"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the TCP sink");
        sleep(Duration::from_millis(500));
        let source: Output = py(from_ns, &["tcp-source", dst, port, TRANSFER_MB, src])
            .output()
            .expect("running the TCP source");
        let sent = String::from_utf8_lossy(&source.stdout).trim().to_owned();
        let received = String::from_utf8_lossy(&sink.wait_with_output().expect("sink").stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_owned();
        (sent, received)
    }

    fn run(&self, case: &Case) {
        let capture = Capture::start(
            &self.net.ns_b,
            &self.net.if_b,
            &self.scratch.path().join("wire.pcap"),
            &[],
        );
        self.configure(case);
        self.established(case);
        let what = format!(
            "{} / {} (xipsec initiates: {})",
            case.ike, case.esp, case.xipsec_initiates
        );
        let diagnostics = || {
            format!(
                "xipsec stats: {}\nsa list: {}\ncharon sas: {}\ncharon log:\n{}",
                self.xipsec.ok(&["stats"]),
                self.xipsec.ok(&["sa", "list"]),
                self.charon.swanctl(&["--list-sas"]),
                self.charon.log()
            )
        };
        let (a, b) = (&self.net.ns_a, &self.net.ns_b);
        assert!(
            Self::ping(a, &self.inner_a, &self.inner_b),
            "{what}: ping a -> b failed\n{}",
            diagnostics()
        );
        assert!(
            Self::ping(b, &self.inner_b, &self.inner_a),
            "{what}: ping b -> a failed\n{}",
            diagnostics()
        );
        for (from, src, to, dst, port) in [
            (a, &self.inner_a, b, &self.inner_b, "9601"),
            (b, &self.inner_b, a, &self.inner_a, "9602"),
        ] {
            let (sent, received) = Self::transfer(from, src, to, dst, port);
            assert!(
                sent.starts_with("10000000 "),
                "{what}: TCP {src} -> {dst} did not send 10 MB: {sent}\n{}",
                diagnostics()
            );
            assert_eq!(
                received, sent,
                "{what}: TCP {src} -> {dst} must arrive intact"
            );
        }
        self.rekeyed(&what, diagnostics);
        assert!(
            Self::ping(a, &self.inner_a, &self.inner_b),
            "{what}: ping a -> b failed after the rekey\n{}",
            diagnostics()
        );
        let frames = capture.stop();
        self.assert_only_ike_and_udp_esp(&frames, &what);
    }

    /// xipsec rekeys the CHILD_SA (CREATE_CHILD_SA over UDP 4500, where the ESP engine's GRO
    /// socket shares the port with IKE's: charon's answer must reach IKE, not the engine), and
    /// installs SAs it did not have before (which it does only on charon's answer).
    fn rekeyed(&self, what: &str, diagnostics: impl Fn() -> String) {
        let before = self.xipsec_spis();
        self.xipsec
            .ok(&["ike", "sa", "rekey", "--peer-name", "swan"]);
        let started = Instant::now();
        while !self.xipsec_spis().iter().any(|spi| !before.contains(spi)) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{what}: xipsec installed no new CHILD_SA after ike sa rekey (SPIs before \
                 {before:x?})\n{}",
                diagnostics()
            );
            sleep(Duration::from_millis(200));
        }
    }

    /// Every frame on the wire between the hosts is IKE or ESP in UDP 4500 (or link control),
    /// none names an inner address, and the tunnel carried the transfers (at least 2 x 10 MB of
    /// UDP-encapsulated ESP, counted in bytes: xipsec's UDP GSO frames carry many ESP packets
    /// each, which a capture on a veth sees as one frame).
    fn assert_only_ike_and_udp_esp(&self, frames: &Frames, what: &str) {
        let inner: [Ipv6Addr; 2] = [
            self.inner_a.parse().expect("inner a"),
            self.inner_b.parse().expect("inner b"),
        ];
        let hosts: [Ipv6Addr; 2] = [
            self.net.addr_a.parse().expect("addr a"),
            self.net.addr_b.parse().expect("addr b"),
        ];
        let (mut esp, mut ike) = (0usize, 0usize);
        let ip = |frame: &xipsec_testkit::capture::Frame| {
            let ip = frame.ipv6();
            usize::from(u16::from_be_bytes([ip[4], ip[5]]))
        };
        for frame in &frames.frames {
            if frame.class == Class::Control {
                continue;
            }
            assert!(
                !inner.contains(&frame.src) && !inner.contains(&frame.dst),
                "{what}: an inner packet in clear on the wire: {}",
                frame.describe()
            );
            assert!(
                hosts.contains(&frame.src) && hosts.contains(&frame.dst),
                "{what}: a frame between other addresses: {}",
                frame.describe()
            );
            match udp_kind(frame.ipv6()) {
                Some(UdpKind::Esp) => esp += ip(frame),
                Some(UdpKind::Ike) => ike += 1,
                None => panic!("{what}: neither IKE nor ESP in UDP: {}", frame.describe()),
            }
        }
        assert!(ike >= 2, "{what}: only {ike} IKE frames captured");
        assert!(
            esp >= 2 * 10_000_000,
            "{what}: only {esp} bytes of UDP-encapsulated ESP for two 10 MB transfers"
        );
    }
}

enum UdpKind {
    Ike,
    Esp,
}

/// What a UDP datagram directly after the IPv6 header is: IKE on port 500, or on 4500 with the
/// non-ESP marker (RFC 3948 §2.2); ESP on 4500 without it; `None` for anything else.
fn udp_kind(ip: &[u8]) -> Option<UdpKind> {
    const UDP: u8 = 17;
    if ip.get(6) != Some(&UDP) || ip.len() < 40 + 8 {
        return None;
    }
    let port = |at: usize| u16::from_be_bytes([ip[at], ip[at + 1]]);
    let (sport, dport) = (port(40), port(42));
    let payload = &ip[48..];
    match (sport, dport) {
        (IKE_PORT, IKE_PORT) => Some(UdpKind::Ike),
        (NATT_PORT, NATT_PORT) if payload.len() >= 4 && payload[..4] == [0; 4] => {
            Some(UdpKind::Ike)
        }
        // A one-byte 0xff payload is a NAT keepalive (RFC 3948 §2.3): count it with IKE.
        (NATT_PORT, NATT_PORT) if payload == [0xff] => Some(UdpKind::Ike),
        (NATT_PORT, NATT_PORT) if payload.len() >= 8 => Some(UdpKind::Esp),
        _ => None,
    }
}

fn run_case(case: &Case) {
    let lab = Lab::new(case);
    lab.run(case);
}

#[test]
fn xipsec_initiates_tunnel_to_strongswan_x25519_gcm() {
    as_root("xipsec_initiates_tunnel_to_strongswan_x25519_gcm", || {
        run_case(&CASES[0]);
    });
}

#[test]
fn strongswan_initiates_tunnel_to_xipsec_ecp256_cbc() {
    as_root("strongswan_initiates_tunnel_to_xipsec_ecp256_cbc", || {
        run_case(&CASES[1]);
    });
}

#[test]
fn xipsec_initiates_tunnel_to_strongswan_modp2048_cbc() {
    as_root("xipsec_initiates_tunnel_to_strongswan_modp2048_cbc", || {
        run_case(&CASES[2]);
    });
}
