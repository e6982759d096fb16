//! The ESP engine end to end, without eBPF: two network namespaces joined by a veth pair
//! (`fd00:ee::1/64` in `xee*a`, `fd00:ee::2/64` in `xee*b`), one engine per namespace with a
//! mirrored pair of SAs and SPs, and the peer's address routed into the TUN device so the stack
//! hands the engine plaintext (the daemon uses TC redirection instead).
//!
//! Routing loop avoidance: the route into the TUN lives in table 100, consulted by a rule after
//! `fwmark XIPSEC_MARK lookup main`. The engine's own ESP carries `SO_MARK = XIPSEC_MARK`, so it
//! is routed by the main table through the veth; everything else to the peer goes into the TUN.
//!
//! Needs root (namespaces, TUN, raw sockets) and `ip`, `ping`, `tcpdump`. Without root the tests
//! fail when `CI=true` and otherwise print why and pass.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use ipsec_user::daemon::esp_engine::{EngineConfig, EspEngine};
use ipsec_user::model::{SaAddArgs, SpAddArgs, Spd};
use sha2::{Digest, Sha256};

const MARK: &str = "0x58505345";
const A: &str = "fd00:ee::1";
const B: &str = "fd00:ee::2";

/// True when the test can run; see the module docs for what happens otherwise.
fn have_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: run as root (sudo -E cargo test -p ipsec-user --test esp_engine)"
    );
    eprintln!("{test}: skipped: needs root for namespaces, TUN and raw sockets; run as root");
    false
}

fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `xee{tag}a` and `xee{tag}b` joined by `xee{tag}va`/`xee{tag}vb`; deleted on drop.
struct Namespaces {
    a: String,
    b: String,
    veth_b: String,
}

impl Namespaces {
    fn new(tag: &str) -> Self {
        let ns = Self {
            a: format!("xee{tag}a"),
            b: format!("xee{tag}b"),
            veth_b: format!("xee{tag}vb"),
        };
        ns.cleanup();
        let veth_a = format!("xee{tag}va");
        sh(&["ip", "netns", "add", &ns.a]);
        sh(&["ip", "netns", "add", &ns.b]);
        sh(&[
            "ip", "link", "add", &veth_a, "netns", &ns.a, "type", "veth", "peer", "name",
            &ns.veth_b, "netns", &ns.b,
        ]);
        for (name, veth, addr) in [(&ns.a, &veth_a, A), (&ns.b, &ns.veth_b, B)] {
            sh(&["ip", "-n", name, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                name,
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                veth,
                "nodad",
            ]);
            sh(&["ip", "-n", name, "link", "set", veth, "up"]);
        }
        ns
    }

    fn cleanup(&self) {
        for name in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Runs `f` on a thread that has joined namespace `ns`: sockets and devices it creates live
/// there (and stay there after the thread ends).
fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/var/run/netns/{ns}")).expect("opening the netns");
                // SAFETY: `file` is an open netns descriptor; setns(CLONE_NEWNET) only changes
                // this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .expect("the netns thread panicked")
    })
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

struct Suite {
    mode: &'static str,
    encryption: &'static str,
    encryption_key: &'static str,
    integrity: &'static str,
    integrity_key: &'static str,
}

const TRANSPORT: Suite = Suite {
    mode: "transport",
    encryption: "aes128-cbc",
    encryption_key: "0x000102030405060708090a0b0c0d0e0f",
    integrity: "hmac-sha2-256",
    integrity_key: "0xa0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf",
};

const TUNNEL: Suite = Suite {
    mode: "tunnel",
    encryption: "3des-cbc",
    encryption_key: "0x6970763672656164796c6f676f336465736362636f757432",
    integrity: "hmac-sha1",
    integrity_key: "0x6970763672656164796c6f67736861316f757432",
};

fn add_sa(spd: &mut Spd, suite: &Suite, name: &str, src: &str, dst: &str, spi: &str) {
    spd.add_sa(&SaAddArgs {
        sa_source: s(src),
        sa_destination: s(dst),
        sa_mode: s(suite.mode),
        sa_spi: s(spi),
        encryption_algorithm: s(suite.encryption),
        encryption_key: s(suite.encryption_key),
        integrity_algorithm: s(suite.integrity),
        integrity_key: s(suite.integrity_key),
        sa_name: s(name),
    })
    .expect("adding a test sa");
}

fn sp(name: &str, src: &str, dst: &str, direction: &str, sa: &str) -> SpAddArgs {
    SpAddArgs {
        sp_source: s(&format!("{src}/128")),
        sp_destination: s(&format!("{dst}/128")),
        source_port: s("any"),
        destination_port: s("any"),
        upper_layer_protocol: s("any"),
        flow_direction: s(direction),
        action: s("ipsec"),
        sp_mode: None,
        sa_name: s(sa),
        sp_name: s(name),
        priority: None,
    }
}

/// The mirrored configuration: SAs a2b (id 0) and b2a (id 1) on both sides, an out SP on one
/// side for each in SP on the other. `local`/`peer` are the protected (inner) addresses.
fn mirrored(suite: &Suite, side_a: bool, inner_a: &str, inner_b: &str) -> Spd {
    let mut spd = Spd::new();
    add_sa(&mut spd, suite, "a2b", A, B, "0x1001");
    add_sa(&mut spd, suite, "b2a", B, A, "0x2001");
    let (local, peer, out_sa, in_sa) = if side_a {
        (inner_a, inner_b, "a2b", "b2a")
    } else {
        (inner_b, inner_a, "b2a", "a2b")
    };
    spd.add_sp(&sp("out", local, peer, "out", out_sa))
        .expect("adding the out sp");
    spd.add_sp(&sp("in", peer, local, "in", in_sa))
        .expect("adding the in sp");
    spd
}

/// Starts an engine in `ns` and routes `peer` into its TUN (table 100, after the mark rule).
fn engine(ns: &str, state: &tempfile::TempDir, spd: &Spd, peer: &str, src: &str) -> EspEngine {
    let engine = in_netns(ns, || EspEngine::start(EngineConfig::new(state.path())))
        .expect("starting the engine");
    engine.update(spd).expect("installing the sas and sps");
    assert_eq!(engine.tun_name(), "xipsec0");
    assert!(engine.tun_ifindex() > 0);
    let route = format!("{peer}/128");
    sh(&[
        "ip", "-n", ns, "-6", "route", "add", &route, "dev", "xipsec0", "src", src, "table", "100",
    ]);
    sh(&[
        "ip", "-n", ns, "-6", "rule", "add", "fwmark", MARK, "lookup", "main", "pref", "100",
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

fn ping(ns: &str, dst: &str) {
    sh(&[
        "ip", "netns", "exec", ns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "3", dst,
    ]);
}

fn udp_socket(ns: &str, addr: &str, port: u16) -> UdpSocket {
    let addr = SocketAddr::new(addr.parse().expect("address"), port);
    let socket = in_netns(ns, || UdpSocket::bind(addr)).expect("binding a udp socket");
    socket
        .set_read_timeout(Some(Duration::from_secs(3)))
        .expect("setting a timeout");
    socket
}

/// Sends one `len`-byte datagram from `ns_from` and says whether `to` received it intact.
fn udp_arrives(ns_from: &str, from: &str, to: &UdpSocket, len: usize) -> bool {
    let sender = udp_socket(ns_from, from, 0);
    let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 7) as u8).collect();
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

/// A packet capture on `iface` in `ns`, stopped and decoded by `finish`.
struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    fn start(ns: &str, iface: &str, dir: &tempfile::TempDir) -> Self {
        let file = dir.path().join("capture.pcap");
        let mut child = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "tcpdump",
                "--immediate-mode",
                "-i",
                iface,
                "-nn",
                "-U",
                "-w",
            ])
            .arg(&file)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting tcpdump");
        // tcpdump says "listening on ..." once the capture is open.
        let mut line = String::new();
        BufReader::new(child.stderr.take().expect("tcpdump stderr"))
            .read_line(&mut line)
            .expect("reading tcpdump's first line");
        assert!(line.contains("listening on"), "tcpdump: {line}");
        Self { child, file }
    }

    /// Stops the capture and returns tcpdump's one-line decoding of each packet.
    fn finish(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        let pid = i32::try_from(self.child.id()).expect("pid fits");
        // SAFETY: `pid` is our own tcpdump child (ip netns exec execs it), not yet reaped.
        unsafe { libc::kill(pid, libc::SIGINT) };
        self.child.wait().expect("waiting for tcpdump");
        let out = sh(&[
            "tcpdump",
            "-nn",
            "-r",
            self.file.to_str().expect("utf-8 path"),
        ]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

#[test]
fn transport_mode_ping_udp_tcp_counters_and_policy_mismatch() {
    if !have_root("transport_mode_ping_udp_tcp_counters_and_policy_mismatch") {
        return;
    }
    let ns = Namespaces::new("");
    let (state_a, state_b, pcap) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let spd_a = mirrored(&TRANSPORT, true, A, B);
    // Side b also holds an SA "other" and insists that UDP to port 6000 arrive on it.
    let mut spd_b = mirrored(&TRANSPORT, false, A, B);
    add_sa(&mut spd_b, &TRANSPORT, "other", A, B, "0x3001");
    let mut port = sp("port6000", A, B, "in", "other");
    port.upper_layer_protocol = s("udp");
    port.destination_port = s("6000");
    spd_b.add_sp(&port).expect("adding the port sp");
    let engine_a = engine(&ns.a, &state_a, &spd_a, B, A);
    let engine_b = engine(&ns.b, &state_b, &spd_b, A, B);

    // Ping a -> b: only ESP on the wire.
    let capture = Capture::start(&ns.b, &ns.veth_b, &pcap);
    ping(&ns.a, B);
    // 1,400-byte UDP: the ESP packet exceeds 1,500 bytes and travels as two fragments.
    let receiver = udp_socket(&ns.b, B, 5000);
    assert!(
        udp_arrives(&ns.a, A, &receiver, 1400),
        "1400-byte datagram lost"
    );
    let decoded = capture.finish();
    assert!(decoded.contains("ESP(spi=0x00001001"), "{decoded}");
    assert!(
        decoded.contains("ESP(spi=0x00002001"),
        "replies protected: {decoded}"
    );
    assert!(decoded.contains("frag"), "outer esp fragmented: {decoded}");
    for line in decoded.lines() {
        assert!(
            !line.contains("echo") && !line.contains("UDP"),
            "clear traffic on the wire: {line}"
        );
    }

    // 10 MB over TCP, checked end to end.
    let listener = in_netns(&ns.b, || {
        TcpListener::bind((B.parse::<Ipv6Addr>().unwrap(), 5001))
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
    let mut client = in_netns(&ns.a, || {
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

    // Policy mismatch: UDP to port 6000 arrives on a2b but b's policy wants "other".
    let mismatch = udp_socket(&ns.b, B, 6000);
    assert!(!udp_arrives(&ns.a, A, &mismatch, 100), "mismatch delivered");
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

    // Dropping the engine removes its TUN device (fail closed).
    drop(engine_a);
    let links = sh(&["ip", "-n", &ns.a, "link", "show"]);
    assert!(!String::from_utf8_lossy(&links.stdout).contains("xipsec0"));
    // A new engine resumes after the reservation: b's window accepts it.
    let engine_a = engine_restart(&ns.a, &state_a, &spd_a);
    ping(&ns.a, B);
    assert_eq!(engine_b.sa_counters()[&0].replay_drops, 0);
    drop(engine_a);
}

/// Restarts side a's engine with the same state directory (routes re-added for the new TUN).
fn engine_restart(ns: &str, state: &tempfile::TempDir, spd: &Spd) -> EspEngine {
    let engine = in_netns(ns, || EspEngine::start(EngineConfig::new(state.path())))
        .expect("restarting the engine");
    engine.update(spd).expect("installing the sas and sps");
    let route = format!("{B}/128");
    sh(&[
        "ip", "-n", ns, "-6", "route", "add", &route, "dev", "xipsec0", "src", A, "table", "100",
    ]);
    engine
}

#[test]
fn tunnel_mode_carries_inner_addresses() {
    if !have_root("tunnel_mode_carries_inner_addresses") {
        return;
    }
    const INNER_A: &str = "fd00:ef::1";
    const INNER_B: &str = "fd00:ef::2";
    let ns = Namespaces::new("t");
    for (name, addr) in [(&ns.a, INNER_A), (&ns.b, INNER_B)] {
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
    let (state_a, state_b, pcap) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let engine_a = engine(
        &ns.a,
        &state_a,
        &mirrored(&TUNNEL, true, INNER_A, INNER_B),
        INNER_B,
        INNER_A,
    );
    let engine_b = engine(
        &ns.b,
        &state_b,
        &mirrored(&TUNNEL, false, INNER_A, INNER_B),
        INNER_A,
        INNER_B,
    );
    let capture = Capture::start(&ns.b, &ns.veth_b, &pcap);
    ping(&ns.a, INNER_B);
    let receiver = udp_socket(&ns.b, INNER_B, 5000);
    assert!(
        udp_arrives(&ns.a, INNER_A, &receiver, 1400),
        "1400-byte datagram lost"
    );
    let decoded = capture.finish();
    assert!(
        decoded.contains(&format!("{A} > {B}: ESP(spi=0x00001001")),
        "outer header from the sa endpoints: {decoded}"
    );
    assert!(
        !decoded.contains("fd00:ef::"),
        "inner addresses leaked: {decoded}"
    );
    assert!(engine_a.sa_counters()[&0].packets >= 4);
    assert!(engine_b.sa_counters()[&1].packets >= 3);
}

/// Datagrams the local stack fragments before they reach the TUN (larger than its MTU) are
/// reassembled by the engine and protected whole: they arrive intact, and the wire carries only
/// ESP (fragmented after encryption), never a clear fragment.
#[test]
fn fragmented_datagrams_are_reassembled_and_protected_whole() {
    if !have_root("fragmented_datagrams_are_reassembled_and_protected_whole") {
        return;
    }
    let ns = Namespaces::new("fr");
    let (state_a, state_b, pcap) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let engine_a = engine(&ns.a, &state_a, &mirrored(&TRANSPORT, true, A, B), B, A);
    let engine_b = engine(&ns.b, &state_b, &mirrored(&TRANSPORT, false, A, B), A, B);
    let capture = Capture::start(&ns.b, &ns.veth_b, &pcap);
    let at_b = udp_socket(&ns.b, B, 9000);
    let at_a = udp_socket(&ns.a, A, 9000);
    for len in [1_600, 4_000, 8_000, 65_000] {
        assert!(udp_arrives(&ns.a, A, &at_b, len), "{len} bytes a -> b lost");
        assert!(udp_arrives(&ns.b, B, &at_a, len), "{len} bytes b -> a lost");
    }
    let decoded = capture.finish();
    assert!(decoded.contains("ESP(spi=0x00001001"), "{decoded}");
    // Neighbour discovery and MLD of the veth itself are the only clear packets allowed.
    for line in decoded.lines().filter(|l| !l.contains(" ICMP6, ")) {
        assert!(
            line.contains("ESP") || (line.contains("frag") && !line.contains("UDP")),
            "not esp on the wire: {line}"
        );
        assert!(!line.contains("UDP"), "clear traffic on the wire: {line}");
    }
    for engine in [&engine_a, &engine_b] {
        assert_eq!(stat(engine, "esp_frag_reassembled"), 4);
        assert_eq!(stat(engine, "esp_encap_errors"), 0);
        assert_eq!(
            stat(engine, "esp_frag_overlaps") + stat(engine, "esp_frag_dropped"),
            0
        );
    }
}

/// A raw `IPPROTO_ESP` socket (ESP from its header on, no IPv6 header), opened in `ns`, with
/// `SO_MARK = XIPSEC_MARK` so what it sends takes the main table (the veth), not the TUN.
fn raw_esp_socket(ns: &str) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    in_netns(ns, || {
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_RAW, libc::IPPROTO_ESP) };
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
        let mark: libc::c_int = 0x5850_5345;
        let timeout = libc::timeval {
            tv_sec: 1,
            tv_usec: 0,
        };
        // SAFETY: valid option values of the sizes given, on an open socket.
        unsafe {
            assert_eq!(
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_MARK,
                    (&raw const mark).cast(),
                    4
                ),
                0
            );
            assert_eq!(
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&raw const timeout).cast(),
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t
                ),
                0
            );
        }
        fd
    })
}

/// Every ESP packet `socket` received (copies of what the engine received), until a 1 s lull.
fn captured_esp(socket: &std::os::fd::OwnedFd) -> Vec<Vec<u8>> {
    let mut packets = Vec::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(socket.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(n) = usize::try_from(n) else {
            return packets;
        };
        packets.push(buf[..n].to_vec());
    }
}

/// Sends `esp` (from the ESP header on) to `to` on `socket`.
fn send_esp(socket: &std::os::fd::OwnedFd, to: &str, esp: &[u8]) {
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    addr.sin6_family = libc::AF_INET6 as libc::sa_family_t;
    addr.sin6_addr.s6_addr = to.parse::<Ipv6Addr>().expect("address").octets();
    // SAFETY: `esp` and `addr` are valid for reads of the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            esp.as_ptr().cast(),
            esp.len(),
            0,
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    };
    assert_eq!(
        sent,
        esp.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

/// ESP captured on the way in is refused when replayed to a restarted engine (its replay
/// ceiling was on disk before it accepted anything), until the operator resets the window.
#[test]
fn esp_replayed_after_an_engine_restart_is_refused() {
    if !have_root("esp_replayed_after_an_engine_restart_is_refused") {
        return;
    }
    let ns = Namespaces::new("rp");
    let (state_a, state_b) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let spd_b = mirrored(&TRANSPORT, false, A, B);
    let _engine_a = engine(&ns.a, &state_a, &mirrored(&TRANSPORT, true, A, B), B, A);
    let engine_b = engine(&ns.b, &state_b, &spd_b, A, B);
    let tap = raw_esp_socket(&ns.b);
    let receiver = udp_socket(&ns.b, B, 7000);
    for _ in 0..5 {
        assert!(udp_arrives(&ns.a, A, &receiver, 200), "datagram lost");
    }
    let captured: Vec<Vec<u8>> = captured_esp(&tap)
        .into_iter()
        .filter(|p| p[..4] == 0x1001u32.to_be_bytes())
        .collect();
    assert_eq!(captured.len(), 5, "the tap saw a -> b's ESP");
    let delivered = stat(&engine_b, "esp_delivered");

    // Restart b (kill -9 is no different: nothing is written at exit).
    drop(engine_b);
    let engine_b = in_netns(&ns.b, || {
        EspEngine::start(EngineConfig::new(state_b.path()))
    })
    .expect("restarting the engine");
    engine_b.update(&spd_b).expect("installing the sas and sps");
    let replayer = raw_esp_socket(&ns.a);
    for esp in &captured {
        send_esp(&replayer, B, esp);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stat(&engine_b, "esp_replay_drops"),
        5,
        "every replay refused"
    );
    assert_eq!(stat(&engine_b, "esp_delivered"), 0);
    assert!(delivered >= 5);

    // The operator's reset lets the old stream in again: what `sa reset-replay` warns about.
    assert!(engine_b.reset_replay(0x1001).expect("resetting the window"));
    for esp in &captured {
        send_esp(&replayer, B, esp);
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        stat(&engine_b, "esp_delivered"),
        5,
        "accepted after the reset"
    );
}
