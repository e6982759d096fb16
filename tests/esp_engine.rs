//! The ESP engine end to end, without eBPF: two network namespaces joined by a veth pair
//! (`fd00:ee::1/64` on side a, `fd00:ee::2/64` on side b), one engine per namespace
//! with a mirrored pair of SAs and SPs, and the peer's address routed into the TUN device so the
//! stack hands the engine plaintext (the daemon uses TC redirection instead).
//!
//! Routing loop avoidance: the route into the TUN lives in table 100, consulted by a rule after
//! `fwmark XIPSEC_MARK lookup main`. The engine's own ESP carries `SO_MARK = XIPSEC_MARK`, so it
//! is routed by the main table through the veth; everything else to the peer goes into the TUN.
//!
//! What is on the wire is checked with the kit's capture (`ipsec_tests::capture`: confirmed live
//! by markers, decoded from the pcap, every frame classified by the test's SPIs): not one clear
//! frame, and scapy (`ipsec_tests::esp_oracle`) decrypts the captured ESP with the keys the test
//! meant and finds the plaintext markers inside, never outside. `XIPSEC_ENGINE_ENC=null`
//! configures the engines with a null cipher while scapy still expects the real one: the
//! mutation check these tests must fail.
//!
//! Needs root (namespaces, TUN, raw sockets) and `ip`, `ping`, `tcpdump`, `python3` with scapy.
//! Without root the tests fail under CI (`ipsec_tests::ci`) and otherwise print why and pass.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::OwnedFd;
use std::time::Duration;

use rustix::net;

use ipsec_common::abi::XIPSEC_MARK;
use ipsec_tests::args::host_ipsec_sp;
use ipsec_tests::esp_oracle::{EspSa, Expect, assert_confidential};
use ipsec_user::engine::{EngineConfig, EspEngine};
use ipsec_user::model::{SaAddArgs, Spd};
use sha2::{Digest, Sha256};
use xipsec_testkit::{
    as_root,
    capture::{Capture, Frames},
    keys,
    netns::{VethPair, in_netns},
    sh, traffic,
};

const A: &str = "fd00:ee::1";
const B: &str = "fd00:ee::2";
/// The veth's address tag: `VethPair` gives `fd00:ee::1` and `fd00:ee::2`.
const TAG: u16 = 0xee;
const SPI_AB: u32 = 0x1001;
const SPI_BA: u32 = 0x2001;
/// The ping payload pattern (`ping -p`): "xipsecping".
const PING_PATTERN: &str = "78697073656370696e67";
const PING_MARKER: &[u8] = b"xipsecping";
/// Every UDP datagram the tests send is this text repeated (see [`udp_payload`]).
const UDP_MARKER: &[u8] = b"XIPSEC-ENGINE-UDP-PLAINTEXT.";

/// Two namespaces named after `x{tag}` joined by a veth pair (the test kit's, deleted on drop).
fn namespaces(tag: &str) -> VethPair {
    let net = VethPair::new(&format!("x{tag}"), TAG);
    assert_eq!((net.addr_a.as_str(), net.addr_b.as_str()), (A, B));
    net
}

/// Fresh temporary directories: the engines' state directories, and one for the captures.
fn temp_dirs<const N: usize>() -> [tempfile::TempDir; N] {
    std::array::from_fn(|_| tempfile::tempdir().expect("creating a temporary directory"))
}

/// `Some(v)`: the request arguments are all `Option<String>`.
#[allow(
    clippy::unnecessary_wraps,
    reason = "builds the Some of an optional argument"
)]
fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

/// The SA pair a2b / b2a of one suite, as the test means it: what scapy decrypts with, and
/// (unless the mutation check asks otherwise, see [`configured`]) what the engines are given.
fn suite_sas(mode: &'static str) -> [EspSa; 2] {
    let mk = |name: &str, spi: u32, src: &str, dst: &str| -> EspSa {
        let base = EspSa {
            name: name.into(),
            spi,
            src: src.into(),
            dst: dst.into(),
            mode,
            enc: "aes128-cbc",
            enc_key: Some(format!("0x{}", keys::AES128)),
            integ: "hmac-sha2-256",
            integ_key: format!("0x{}", keys::SHA256),
        };
        if mode == "tunnel" {
            // The tunnel suite exercises the other algorithms.
            EspSa {
                enc: "3des-cbc",
                enc_key: Some(format!("0x{}", keys::SPEC_3DES)),
                integ: "hmac-sha1",
                integ_key: format!("0x{}", keys::SPEC_SHA1),
                ..base
            }
        } else {
            base
        }
    };
    [mk("a2b", SPI_AB, A, B), mk("b2a", SPI_BA, B, A)]
}

/// The SA as the engines are configured: `sa` itself, or with a null cipher when
/// `XIPSEC_ENGINE_ENC=null` (the mutation check: scapy still expects `sa`'s cipher).
fn configured(sa: &EspSa) -> EspSa {
    match std::env::var("XIPSEC_ENGINE_ENC").as_deref() {
        Ok("null") => EspSa {
            enc: "null",
            enc_key: None,
            ..sa.clone()
        },
        Ok(other) => panic!("XIPSEC_ENGINE_ENC={other}: only null is known"),
        Err(_) => sa.clone(),
    }
}

fn add_sa(spd: &mut Spd, sa: &EspSa) {
    let sa = configured(sa);
    spd.add_sa(&SaAddArgs {
        sa_source: s(&sa.src),
        sa_destination: s(&sa.dst),
        sa_mode: s(sa.mode),
        sa_spi: s(&format!("{:#x}", sa.spi)),
        encryption_algorithm: s(sa.enc),
        encryption_key: sa.enc_key.clone(),
        integrity_algorithm: s(sa.integ),
        integrity_key: s(&sa.integ_key),
        sa_name: s(&sa.name),
        udp_encapsulation: None,
    })
    .expect("adding a test sa");
}

/// The mirrored configuration: SAs a2b (id 0) and b2a (id 1) on both sides, an out SP on one
/// side for each in SP on the other. `inner_a`/`inner_b` are the protected (inner) addresses.
fn mirrored(sas: &[EspSa; 2], side_a: bool, inner_a: &str, inner_b: &str) -> Spd {
    let mut spd = Spd::new();
    for sa in sas {
        add_sa(&mut spd, sa);
    }
    let (local, peer, out_sa, in_sa) = if side_a {
        (inner_a, inner_b, "a2b", "b2a")
    } else {
        (inner_b, inner_a, "b2a", "a2b")
    };
    spd.add_sp(&host_ipsec_sp("out", (local, peer), "out", out_sa))
        .expect("adding the out sp");
    spd.add_sp(&host_ipsec_sp("in", (peer, local), "in", in_sa))
        .expect("adding the in sp");
    spd
}

/// The engine's configuration: with `xsk_tx`, an AF_XDP socket on that interface through which
/// it sends its ESP (side a in every test: its frames are seen by the capture on side b, which
/// packet taps on a would not); without, the raw socket only (side b: the fallback path).
fn config(state: &tempfile::TempDir, xsk_tx: Option<&str>) -> EngineConfig {
    EngineConfig {
        xsk_interfaces: xsk_tx.map(str::to_owned).into_iter().collect(),
        xsk_tx: xsk_tx.is_some(),
        ..EngineConfig::new(state.path())
    }
}

/// Starts an engine in `ns` (sending by AF_XDP on `xsk_tx`, see [`config`]) and routes `peer`
/// into its TUN (table 100, after the mark rule).
fn engine(
    (ns, xsk_tx): (&str, Option<&str>),
    state: &tempfile::TempDir,
    spd: &Spd,
    peer: &str,
    src: &str,
) -> EspEngine {
    let engine =
        in_netns(ns, || EspEngine::start(config(state, xsk_tx))).expect("starting the engine");
    engine.update(spd).expect("installing the sas and sps");
    assert_eq!(engine.tun_name(), "xipsec0");
    assert!(engine.tun_ifindex() > 0);
    let route = format!("{peer}/128");
    let mark = format!("{XIPSEC_MARK:#x}");
    sh(&[
        "ip", "-n", ns, "-6", "route", "add", &route, "dev", "xipsec0", "src", src, "table", "100",
    ]);
    sh(&[
        "ip", "-n", ns, "-6", "rule", "add", "fwmark", &mark, "lookup", "main", "pref", "100",
    ]);
    sh(&[
        "ip", "-n", ns, "-6", "rule", "add", "lookup", "100", "pref", "200",
    ]);
    engine
}

fn stat(engine: &EspEngine, name: &str) -> u64 {
    engine
        .stats()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no stat {name}"))
        .1
}

/// Three pings whose payload carries [`PING_MARKER`].
fn ping(ns: &str, dst: &str) {
    assert!(
        traffic::ping(ns, dst, ("3", "3"), Some(PING_PATTERN)),
        "ping {dst} from {ns} failed"
    );
}

fn udp_socket(ns: &str, addr: &str, port: u16) -> UdpSocket {
    let addr = SocketAddr::new(addr.parse().expect("address"), port);
    let socket = in_netns(ns, || UdpSocket::bind(addr)).expect("binding a udp socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("setting a timeout");
    socket
}

/// `len` bytes of [`UDP_MARKER`] repeated: every datagram (and every fragment of one) carries
/// the marker whole.
fn udp_payload(len: usize) -> Vec<u8> {
    UDP_MARKER.iter().copied().cycle().take(len).collect()
}

/// Sends one `len`-byte datagram from `ns_from` and says whether `to` received it intact.
fn udp_arrives(ns_from: &str, from: &str, to: &UdpSocket, len: usize) -> bool {
    let sender = udp_socket(ns_from, from, 0);
    let payload = udp_payload(len);
    sender
        .send_to(&payload, to.local_addr().expect("receiver address"))
        .expect("sending a datagram");
    let mut buf = vec![0; 65_536];
    match to.recv(&mut buf) {
        Ok(n) => {
            assert_eq!(&buf[..n], &payload[..], "datagram corrupted");
            true
        }
        Err(_) => false,
    }
}

/// A capture on side b's veth (which sees both directions: nothing attaches XDP here), with
/// the test's SPIs; markers are sent from side a, so frames arriving from a are proven seen.
fn capture(net: &VethPair, dir: &tempfile::TempDir, name: &str) -> Capture {
    Capture::start_with_marker_from(
        &net.ns_b,
        &net.if_b,
        &dir.path().join(format!("{name}.pcap")),
        &[SPI_AB, SPI_BA],
        (&net.ns_a, &net.if_a),
    )
}

/// Under a capture: a pings `dst` and sends it a 1,400-byte datagram from `src` (UDP 5000),
/// which must arrive intact. The wire (`context` in failures) must carry only ESP: at least
/// 4 packets under a -> b's SPI (3 echo requests and the datagram) and 3 under b -> a's (the
/// replies).
fn ping_and_udp(
    net: &VethPair,
    dir: &tempfile::TempDir,
    (name, context): (&str, &str),
    (src, dst): (&str, &str),
) -> Frames {
    let cap = capture(net, dir, name);
    ping(&net.ns_a, dst);
    let receiver = udp_socket(&net.ns_b, dst, 5000);
    assert!(
        udp_arrives(&net.ns_a, src, &receiver, 1400),
        "1400-byte datagram lost"
    );
    let frames = cap.stop();
    frames.assert_only_esp(context);
    assert!(
        frames_with_spi(&frames, SPI_AB) >= 4,
        "{context}: a -> b as esp"
    );
    assert!(
        frames_with_spi(&frames, SPI_BA) >= 3,
        "{context}: replies as esp"
    );
    frames
}

/// How many protected frames carry `spi` (first fragments and whole packets).
fn frames_with_spi(frames: &Frames, spi: u32) -> usize {
    frames
        .esp_frames()
        .iter()
        .filter(|f| f.spi == Some(spi))
        .count()
}

#[test]
fn transport_mode_ping_udp_tcp_counters_and_policy_mismatch() {
    as_root(
        "transport_mode_ping_udp_tcp_counters_and_policy_mismatch",
        || {
            let ns = namespaces("tr");
            let [state_a, state_b, pcap] = temp_dirs();
            let sas = suite_sas("transport");
            let flows = [(A, B), (B, A)];
            let spd_a = mirrored(&sas, true, A, B);
            // Side b also holds an SA "other" and insists that UDP to port 6000 arrive on it.
            let mut spd_b = mirrored(&sas, false, A, B);
            add_sa(
                &mut spd_b,
                &EspSa {
                    name: "other".into(),
                    spi: 0x3001,
                    ..sas[0].clone()
                },
            );
            let mut port = host_ipsec_sp("port6000", (A, B), "in", "other");
            port.upper_layer_protocol = s("udp");
            port.destination_port = s("6000");
            spd_b.add_sp(&port).expect("adding the port sp");
            let engine_a = engine((&ns.ns_a, Some(&ns.if_a)), &state_a, &spd_a, B, A);
            let engine_b = engine((&ns.ns_b, None), &state_b, &spd_b, A, B);

            // Ping a -> b and a 1,400-byte datagram: only ESP on the wire, and it decrypts.
            // 1,400-byte UDP: the ESP packet exceeds 1,500 bytes and travels as two fragments.
            let small = ping_and_udp(&ns, &pcap, ("small", "ping and UDP a -> b"), (A, B));
            let expect = Expect::new(&flows, &[58, 17], &[PING_MARKER, UDP_MARKER]);
            assert_confidential(&small, &sas, 100, &expect, "ping and UDP a -> b");
            let fragments = small.esp_fragment_count();
            assert!(
                fragments >= 2,
                "the 1,400-byte datagram leaves as fragmented ESP: {fragments} fragments seen"
            );

            // 10 MB over TCP, checked end to end, and on the wire only ESP that decrypts.
            let cap = capture(&ns, &pcap, "tcp");
            let listener = in_netns(&ns.ns_b, || {
                TcpListener::bind((B.parse::<Ipv6Addr>().expect("address"), 5001))
            })
            .expect("listening");
            let server = std::thread::spawn(move || {
                let (mut stream, _) = listener.accept().expect("accepting");
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .expect("setting a timeout");
                let mut hasher = Sha256::new();
                let mut buf = vec![0; 65_536];
                let mut total = 0;
                loop {
                    let n = stream.read(&mut buf).expect("reading the transfer");
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    total += n;
                }
                (total, hasher.finalize().to_vec())
            });
            let data: Vec<u8> = (0..10_000_000u32)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let mut client = in_netns(&ns.ns_a, || {
                TcpStream::connect_timeout(
                    &SocketAddr::new(B.parse().expect("address"), 5001),
                    Duration::from_secs(5),
                )
            })
            .expect("connecting");
            client
                .set_write_timeout(Some(Duration::from_secs(20)))
                .expect("setting a timeout");
            client.write_all(&data).expect("sending 10 MB");
            client
                .shutdown(std::net::Shutdown::Write)
                .expect("closing the send side");
            let (total, digest) = server.join().expect("the tcp server panicked");
            assert_eq!(total, data.len());
            assert_eq!(digest, Sha256::digest(&data).to_vec(), "sha-256 differs");
            let tcp = cap.stop();
            tcp.assert_only_esp("10 MB over TCP");
            assert!(
                frames_with_spi(&tcp, SPI_AB) >= 7000,
                "the transfer went a -> b as esp"
            );
            let expect = Expect::new(&flows, &[6], &[]);
            assert_confidential(&tcp, &sas, 40, &expect, "10 MB over TCP");
            // a sent the stream through its AF_XDP socket (what the capture checked above),
            // the oversized datagrams by the raw socket (the fragments seen above); b, without
            // an AF_XDP socket, only by the raw socket.
            let by_xsk = stat(&engine_a, "esp_xsk_sent");
            assert!(by_xsk >= 7000, "a -> b by AF_XDP: {by_xsk} packets");
            assert_eq!(
                stat(&engine_b, "esp_xsk_sent"),
                0,
                "b sends by the raw socket"
            );

            // Policy mismatch: UDP to port 6000 arrives on a2b but b's policy wants "other".
            let mismatch = udp_socket(&ns.ns_b, B, 6000);
            assert!(
                !udp_arrives(&ns.ns_a, A, &mismatch, 100),
                "mismatch delivered"
            );
            assert!(stat(&engine_b, "esp_policy_mismatch") >= 1);

            // Counters: a2b is id 0 on both sides, b2a id 1.
            let a = engine_a.sa_counters();
            let b = engine_b.sa_counters();
            assert!(a[&0].packets >= 3 + 1 + 7000, "a2b sent: {:?}", a[&0]);
            assert!(a[&0].bytes >= 10_000_000, "a2b bytes: {:?}", a[&0]);
            assert!(
                b[&0].packets >= a[&0].packets - 10,
                "a2b received: {:?}",
                b[&0]
            );
            assert!(b[&1].packets >= 3, "b2a sent: {:?}", b[&1]);
            assert_eq!(a[&1].packets, b[&1].packets, "b2a: sent = received");
            assert_eq!(b[&0].auth_failures + b[&0].errors, 0);
            assert!(stat(&engine_a, "esp_encap_ok") >= a[&0].packets);
            assert!(stat(&engine_b, "esp_decap_ok") >= b[&0].packets);
            assert_eq!(stat(&engine_a, "esp_send_errors"), 0);

            burst_tail_arrives(&ns.ns_a, &ns.ns_b);

            // Dropping the engine removes its TUN device (fail closed).
            drop(engine_a);
            assert_tun_removed(&ns.ns_a);
            // A new engine resumes after the reservation: b's window accepts it, and what it sends is
            // still ESP under the configured keys.
            let cap = capture(&ns, &pcap, "restart");
            let engine_a = engine_restart((&ns.ns_a, Some(&ns.if_a)), &state_a, &spd_a);
            ping(&ns.ns_a, B);
            let restarted = cap.stop();
            restarted.assert_only_esp("ping after a restart");
            let expect = Expect::new(&flows, &[58], &[PING_MARKER]);
            assert_confidential(&restarted, &sas, 100, &expect, "ping after a restart");
            assert_eq!(engine_b.sa_counters()[&0].replay_drops, 0);
            drop(engine_a);
        },
    );
}

/// The tail of a TCP burst is delivered as soon as nothing more comes: the receiving engine
/// holds a coalesced super-packet through its receive pause, and must write it before it
/// blocks. a's retransmissions are taken out of the picture (no tail loss probe, a minimum RTO
/// of 5 s on the route into the TUN), so only the engine can deliver the tail within 2 s.
fn burst_tail_arrives(ns_a: &str, ns_b: &str) {
    const BURST: usize = 300_000;
    sh(&[
        "ip",
        "netns",
        "exec",
        ns_a,
        "sysctl",
        "-qw",
        "net.ipv4.tcp_early_retrans=0",
    ]);
    let route = format!("{B}/128");
    sh(&[
        "ip", "-n", ns_a, "-6", "route", "change", &route, "dev", "xipsec0", "src", A, "table",
        "100", "rto_min", "5s",
    ]);
    let listener = in_netns(ns_b, || {
        TcpListener::bind((B.parse::<Ipv6Addr>().expect("address"), 5003))
    })
    .expect("listening");
    let (arrived_tx, arrived) = std::sync::mpsc::channel();
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("accepting");
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("setting a timeout");
        let mut buf = vec![0; BURST];
        // The client keeps the connection open: only the engine can make the tail arrive.
        let burst = stream.read_exact(&mut buf).map(|()| buf);
        arrived_tx.send(burst).expect("reporting the burst");
        // Then a clean close, so no segment of this connection is left to retransmit when the
        // test restarts the engine.
        let mut rest = Vec::new();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("setting a timeout");
        stream.read_to_end(&mut rest).expect("reading the close");
    });
    let mut client = in_netns(ns_a, || {
        TcpStream::connect_timeout(
            &SocketAddr::new(B.parse().expect("address"), 5003),
            Duration::from_secs(5),
        )
    })
    .expect("connecting");
    let data: Vec<u8> = (0..BURST)
        .map(|i| u8::try_from(i % 251).expect("below 251"))
        .collect();
    client.write_all(&data).expect("sending the burst");
    let received = arrived
        .recv()
        .expect("the server's report")
        .expect("the whole burst within 2 s, the connection still open");
    assert_eq!(received, data, "the burst arrived intact");
    client
        .shutdown(std::net::Shutdown::Write)
        .expect("closing the send side");
    client
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("setting a timeout");
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).expect("reading the close");
    server.join().expect("the tcp server panicked");
    // The last ACK of the close crosses the engine before it is dropped.
    std::thread::sleep(Duration::from_millis(200));
}

/// Panics unless the engine's TUN device is gone from `ns` within 5 s of the engine being
/// dropped (the kernel unregisters it when the last descriptor closes, which may finish a
/// moment after the drop returns; a new engine cannot take the name before that).
fn assert_tun_removed(ns: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let links = sh(&["ip", "-n", ns, "link", "show"]);
        if !String::from_utf8_lossy(&links.stdout).contains("xipsec0") {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the dropped engine's TUN device is still in {ns}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Restarts side a's engine with the same state directory (routes re-added for the new TUN).
fn engine_restart(
    (ns, xsk_tx): (&str, Option<&str>),
    state: &tempfile::TempDir,
    spd: &Spd,
) -> EspEngine {
    let engine =
        in_netns(ns, || EspEngine::start(config(state, xsk_tx))).expect("restarting the engine");
    engine.update(spd).expect("installing the sas and sps");
    let route = format!("{B}/128");
    sh(&[
        "ip", "-n", ns, "-6", "route", "add", &route, "dev", "xipsec0", "src", A, "table", "100",
    ]);
    engine
}

#[test]
fn tunnel_mode_carries_inner_addresses() {
    as_root("tunnel_mode_carries_inner_addresses", || {
        const INNER_A: &str = "fd00:ef::1";
        const INNER_B: &str = "fd00:ef::2";
        let ns = namespaces("tu");
        for (name, addr) in [(&ns.ns_a, INNER_A), (&ns.ns_b, INNER_B)] {
            sh(&[
                "ip",
                "-n",
                name,
                "addr",
                "add",
                &format!("{addr}/128"),
                "dev",
                "lo",
            ]);
        }
        let [state_a, state_b, pcap] = temp_dirs();
        let sas = suite_sas("tunnel");
        let (spd_a, spd_b) = (
            mirrored(&sas, true, INNER_A, INNER_B),
            mirrored(&sas, false, INNER_A, INNER_B),
        );
        let engine_a = engine(
            (&ns.ns_a, Some(&ns.if_a)),
            &state_a,
            &spd_a,
            INNER_B,
            INNER_A,
        );
        let engine_b = engine((&ns.ns_b, None), &state_b, &spd_b, INNER_A, INNER_B);
        let context = ("tunnel", "tunnel mode ping and UDP");
        let frames = ping_and_udp(&ns, &pcap, context, (INNER_A, INNER_B));
        let endpoints = [A, B].map(|a| a.parse::<Ipv6Addr>().expect("address"));
        for f in frames.esp_frames() {
            assert!(
                endpoints.contains(&f.src) && endpoints.contains(&f.dst),
                "outer header from the sa endpoints: {}",
                f.describe()
            );
        }
        for inner in [INNER_A, INNER_B] {
            let octets = inner.parse::<Ipv6Addr>().expect("address").octets();
            let leaked = frames.frames.iter().filter(|f| f.contains(&octets)).count();
            assert_eq!(
                leaked, 0,
                "inner address {inner} readable in {leaked} frames"
            );
        }
        let expect = Expect::new(
            &[(INNER_A, INNER_B), (INNER_B, INNER_A)],
            &[58, 17],
            &[PING_MARKER, UDP_MARKER],
        );
        assert_confidential(&frames, &sas, 100, &expect, "tunnel mode ping and UDP");
        assert!(
            stat(&engine_a, "esp_xsk_sent") >= 1,
            "a's tunnel-mode esp left by AF_XDP (own outer header)"
        );
        assert!(engine_a.sa_counters()[&0].packets >= 4);
        assert!(engine_b.sa_counters()[&1].packets >= 3);
    });
}

/// Datagrams the local stack fragments before they reach the TUN (larger than its MTU) are
/// reassembled by the engine and protected whole: they arrive intact, the wire carries only
/// ESP (fragmented after encryption), never a clear fragment, and each reassembled ESP packet
/// decrypts to one whole datagram.
#[test]
fn fragmented_datagrams_are_reassembled_and_protected_whole() {
    as_root(
        "fragmented_datagrams_are_reassembled_and_protected_whole",
        || {
            let sas = suite_sas("transport");
            let ns = namespaces("fr");
            let [state_a, state_b, pcap] = temp_dirs();
            let engine_a = engine(
                (&ns.ns_a, Some(&ns.if_a)),
                &state_a,
                &mirrored(&sas, true, A, B),
                B,
                A,
            );
            let engine_b = engine(
                (&ns.ns_b, None),
                &state_b,
                &mirrored(&sas, false, A, B),
                A,
                B,
            );
            let cap = capture(&ns, &pcap, "fragments");
            let at_b = udp_socket(&ns.ns_b, B, 9000);
            let at_a = udp_socket(&ns.ns_a, A, 9000);
            let lens = [1_600, 4_000, 8_000, 65_000];
            for len in lens {
                assert!(
                    udp_arrives(&ns.ns_a, A, &at_b, len),
                    "{len} bytes a -> b lost"
                );
                assert!(
                    udp_arrives(&ns.ns_b, B, &at_a, len),
                    "{len} bytes b -> a lost"
                );
            }
            let frames = cap.stop();
            frames.assert_only_esp("fragmented datagrams");
            assert!(
                frames_with_spi(&frames, SPI_AB) >= lens.len(),
                "a -> b as esp"
            );
            assert!(
                frames_with_spi(&frames, SPI_BA) >= lens.len(),
                "b -> a as esp"
            );
            // Every datagram is one ESP packet (reassembled from its outer fragments) that decrypts to
            // the whole datagram: 8 packets, all decrypted.
            assert_eq!(
                frames.esp_packets().len(),
                2 * lens.len(),
                "one esp packet per datagram"
            );
            let expect = Expect::new(&[(A, B), (B, A)], &[17], &[UDP_MARKER]);
            assert_confidential(&frames, &sas, 100, &expect, "fragmented datagrams");
            for engine in [&engine_a, &engine_b] {
                assert_eq!(stat(engine, "esp_frag_reassembled"), 4);
                assert_eq!(stat(engine, "esp_encap_errors"), 0);
                assert_eq!(
                    stat(engine, "esp_frag_overlaps") + stat(engine, "esp_frag_dropped"),
                    0
                );
            }
        },
    );
}

/// A raw `IPPROTO_ESP` socket (ESP from its header on, no IPv6 header), opened in `ns`, with
/// `SO_MARK = XIPSEC_MARK` so what it sends takes the main table (the veth), not the TUN, and a
/// 1 s receive timeout.
fn raw_esp_socket(ns: &str) -> OwnedFd {
    in_netns(ns, || {
        let fd = net::socket(
            net::AddressFamily::INET6,
            net::SocketType::RAW,
            Some(net::ipproto::ESP),
        )
        .expect("opening a raw ESP socket");
        nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::Mark, &XIPSEC_MARK)
            .expect("setting SO_MARK");
        net::sockopt::set_socket_timeout(
            &fd,
            net::sockopt::Timeout::Recv,
            Some(Duration::from_secs(1)),
        )
        .expect("setting SO_RCVTIMEO");
        fd
    })
}

/// Every ESP packet `socket` received (copies of what the engine received), until a 1 s lull.
fn captured_esp(socket: &OwnedFd) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 65_536];
    while let Ok((n, _)) = net::recv(socket, &mut buf, net::RecvFlags::empty()) {
        packets.push(buf[..n].to_vec());
    }
    packets
}

/// Sends `esp` (from the ESP header on) to `to` on `socket`.
fn send_esp(socket: &OwnedFd, to: &str, esp: &[u8]) {
    let to = net::SocketAddrV6::new(to.parse().expect("address"), 0, 0, 0);
    let sent = net::sendto(socket, esp, net::SendFlags::empty(), &to).expect("sending ESP");
    assert_eq!(sent, esp.len(), "sent whole");
}

/// Sends every packet of `captured` to `B` again and gives the engine half a second to take them.
fn replay(socket: &OwnedFd, captured: &[Vec<u8>]) {
    for esp in captured {
        send_esp(socket, B, esp);
    }
    std::thread::sleep(Duration::from_millis(500));
}

/// ESP captured on the way in is refused when replayed to a restarted engine (its replay
/// ceiling was on disk before it accepted anything), until the operator resets the window.
#[test]
fn esp_replayed_after_an_engine_restart_is_refused() {
    as_root("esp_replayed_after_an_engine_restart_is_refused", || {
        let ns = namespaces("rp");
        let [state_a, state_b] = temp_dirs();
        let sas = suite_sas("transport");
        let spd_b = mirrored(&sas, false, A, B);
        let _engine_a = engine(
            (&ns.ns_a, Some(&ns.if_a)),
            &state_a,
            &mirrored(&sas, true, A, B),
            B,
            A,
        );
        let engine_b = engine((&ns.ns_b, None), &state_b, &spd_b, A, B);
        let tap = raw_esp_socket(&ns.ns_b);
        let receiver = udp_socket(&ns.ns_b, B, 7000);
        for _ in 0..5 {
            assert!(udp_arrives(&ns.ns_a, A, &receiver, 200), "datagram lost");
        }
        let captured: Vec<Vec<u8>> = captured_esp(&tap)
            .into_iter()
            .filter(|p| p[..4] == 0x1001u32.to_be_bytes())
            .collect();
        assert_eq!(captured.len(), 5, "the tap saw a -> b's ESP");
        let delivered = stat(&engine_b, "esp_delivered");

        // Restart b (kill -9 is no different: nothing is written at exit).
        drop(engine_b);
        assert_tun_removed(&ns.ns_b);
        let engine_b = in_netns(&ns.ns_b, || {
            EspEngine::start(EngineConfig::new(state_b.path()))
        })
        .expect("restarting the engine");
        engine_b.update(&spd_b).expect("installing the sas and sps");
        let replayer = raw_esp_socket(&ns.ns_a);
        replay(&replayer, &captured);
        assert_eq!(
            stat(&engine_b, "esp_replay_drops"),
            5,
            "every replay refused"
        );
        assert_eq!(stat(&engine_b, "esp_delivered"), 0);
        assert!(delivered >= 5);

        // The operator's reset lets the old stream in again: what `sa reset-replay` warns about.
        assert!(engine_b.reset_replay(0x1001).expect("resetting the window"));
        replay(&replayer, &captured);
        assert_eq!(
            stat(&engine_b, "esp_delivered"),
            5,
            "accepted after the reset"
        );
    });
}
