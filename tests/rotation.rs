//! Key rotation without a gap, on two hosts (two namespaces, a veth, a daemon on each side),
//! transport mode, aes128-cbc with hmac-sha2-256.
//!
//! The documented procedure (README, "Rotating keys") as `xipsec batch` files per host:
//! 1. add the new SAs (both directions) and replace the inbound SP by one naming the new inbound
//!    SA (`sp remove` + `sp add` of the same name in one batch): the SP keeps accepting ESP under
//!    the old inbound SA, which the peer still sends under;
//! 2. once every host has done 1: replace the outbound SP by one naming the new outbound SA;
//! 3. once every host has done 2: remove the old SAs.
//!
//! A paced TCP stream (4 MB, every byte checked at the far end) and a ping every 10 ms run from
//! a to b across two rotations: the first with the hosts taking phase 1 in the order a, b and
//! phase 2 in the order b, a, the second the other way round, so each phase is taken in either
//! order. Captures on both ends see only ESP under the test's SPIs (0 clear frames), the stream
//! arrives intact, ping loss is printed and must be 0 (nothing is refused at any moment), and
//! after phase 3 ESP under a retired SPI, replayed from a capture, is dropped and counted as an
//! unknown SPI.

use std::{
    net::Ipv6Addr,
    path::Path,
    thread,
    time::{Duration, Instant},
};

use xipsec_testkit::{
    as_root,
    capture::{Capture, describe},
    cli::{SpArgs, sa_line, write_batch},
    daemon::Node,
    netns::{self, VethPair},
    stream::{self, Pace},
};

/// The SPIs of generation `g`: a -> b, then b -> a.
fn spis(g: u32) -> (u32, u32) {
    (0x5000 + 2 * g, 0x5001 + 2 * g)
}

/// The TCP stream: this many bytes, in chunks, paced to last longer than both rotations.
const STREAM_BYTES: usize = 4 << 20;
const CHUNK: usize = 32 << 10;
const CHUNK_PAUSE: Duration = Duration::from_millis(60);
const PORT: u16 = 9611;
/// Pings at 10 ms: 12 s, longer than the stream and both rotations.
const PINGS: &str = "1200";

/// One host's view: its name in SA names, its address and its peer's.
struct Host<'a> {
    node: &'a Node,
    me: &'a str,
    peer: &'a str,
    /// `ab` or `ba`: the SA name stem of its outbound direction.
    out: &'static str,
    inb: &'static str,
}

impl Host<'_> {
    /// SA name of direction `stem` in generation `g`.
    fn sa(stem: &str, g: u32) -> String {
        format!("sa-{stem}-g{g}")
    }

    /// The `sa add` lines of generation `g`: both directions, as on both hosts.
    fn sa_lines(g: u32, a: &str, b: &str) -> Vec<String> {
        let (ab, ba) = spis(g);
        vec![
            sa_line(&Self::sa("ab", g), (a, b), ab),
            sa_line(&Self::sa("ba", g), (b, a), ba),
        ]
    }

    /// `sp remove` + `sp add` of the SP of direction `dir`, now naming `sa`.
    fn replace_sp(&self, dir: &str, sa: &str) -> Vec<String> {
        let (src, dst) = if dir == "out" {
            (self.me, self.peer)
        } else {
            (self.peer, self.me)
        };
        let (src, dst, name) = (
            format!("{src}/128"),
            format!("{dst}/128"),
            format!("protect-{dir}"),
        );
        vec![
            format!("sp remove --sp-name {name}"),
            SpArgs {
                sa: Some(sa),
                ..SpArgs::ipsec(&src, &dst, dir, &name)
            }
            .line(),
        ]
    }

    /// Writes and runs one phase's batch file on this host.
    fn batch(&self, file: &Path, lines: &[String]) -> Duration {
        write_batch(file, lines);
        let started = Instant::now();
        self.node.ok(&["batch", file.to_str().expect("utf-8 path")]);
        started.elapsed()
    }
}

/// Both hosts configured at generation 0: SAs of both directions, one `ipsec` SP per direction.
fn configure(host: &Host<'_>, a: &str, b: &str, dir: &Path) {
    let mut lines = Host::sa_lines(0, a, b);
    for (d, stem) in [("out", host.out), ("in", host.inb)] {
        let sa = Host::sa(stem, 0);
        lines.push(host.replace_sp(d, &sa).pop().expect("an sp add line"));
    }
    host.batch(&dir.join(format!("setup-{}", host.out)), &lines);
}

/// One rotation from generation `g` to `g + 1`: phase 1 on the hosts in `first` order, phase 2
/// in `second` order, then phase 3 on both.
fn rotate(
    hosts: &[Host<'_>; 2],
    g: u32,
    (a, b): (&str, &str),
    order: ([usize; 2], [usize; 2]),
    dir: &Path,
) {
    let next = g + 1;
    let pause = Duration::from_millis(400);
    for &i in &order.0 {
        let h = &hosts[i];
        let mut lines = Host::sa_lines(next, a, b);
        lines.extend(h.replace_sp("in", &Host::sa(h.inb, next)));
        let took = h.batch(&dir.join(format!("g{next}-phase1-{}", h.out)), &lines);
        eprintln!("rotation to g{next}: phase 1 on host {} ({took:?})", h.out);
        thread::sleep(pause);
    }
    for &i in &order.1 {
        let h = &hosts[i];
        let lines = h.replace_sp("out", &Host::sa(h.out, next));
        let took = h.batch(&dir.join(format!("g{next}-phase2-{}", h.out)), &lines);
        eprintln!("rotation to g{next}: phase 2 on host {} ({took:?})", h.out);
        thread::sleep(pause);
    }
    for h in hosts {
        let lines = vec![
            format!("sa remove --sa-name {}", Host::sa("ab", g)),
            format!("sa remove --sa-name {}", Host::sa("ba", g)),
        ];
        h.batch(&dir.join(format!("g{next}-phase3-{}", h.out)), &lines);
    }
    thread::sleep(pause);
}

/// Sends `frame` (a whole Ethernet frame) from `ns` out of `iface` as it is, bypassing the
/// sender's own TC egress (`PACKET_QDISC_BYPASS`): the way a peer's stale packet arrives.
fn resend(ns: &str, iface: &str, frame: &[u8]) {
    const SEND: &str = "import socket, sys\n\
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\n\
        s.setsockopt(263, 20, 1)  # SOL_PACKET, PACKET_QDISC_BYPASS\n\
        s.bind((sys.argv[1], 0))\n\
        s.send(bytes.fromhex(sys.argv[2]))\n";
    let sent = netns::exec(ns, &["python3", "-c", SEND, iface, &hex::encode(frame)])
        .status()
        .expect("python3")
        .success();
    assert!(sent, "re-sending a captured frame failed");
    thread::sleep(Duration::from_millis(300));
}

#[test]
fn keys_rotate_without_a_gap_in_either_order() {
    as_root("keys_rotate_without_a_gap_in_either_order", || {
        let net = VethPair::new("xrot", 0x7a);
        let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
        let b = Node::start_tap_visible(&net.ns_b, &net.if_b);
        let dir = a.dir().to_owned();
        let (addr_a, addr_b) = (net.addr_a.as_str(), net.addr_b.as_str());
        let hosts = [
            Host {
                node: &a,
                me: addr_a,
                peer: addr_b,
                out: "ab",
                inb: "ba",
            },
            Host {
                node: &b,
                me: addr_b,
                peer: addr_a,
                out: "ba",
                inb: "ab",
            },
        ];
        for h in &hosts {
            configure(h, addr_a, addr_b, &dir);
        }
        let all_spis: Vec<u32> = (0..3).flat_map(|g| [spis(g).0, spis(g).1]).collect();
        let cap_a = Capture::start(&net.ns_a, &net.if_a, &dir.join("rot-a.pcap"), &all_spis);
        let cap_b = Capture::start(&net.ns_b, &net.if_b, &dir.join("rot-b.pcap"), &all_spis);

        let b_addr: Ipv6Addr = addr_b.parse().expect("b's address");
        let received = stream::sink(net.ns_b.clone(), b_addr, PORT);
        let pace = Pace {
            chunk: CHUNK,
            pause: CHUNK_PAUSE,
            total: STREAM_BYTES,
        };
        let sent = stream::source(net.ns_a.clone(), b_addr, PORT, pace);
        let pinger = stream::ping(&net.ns_a, addr_b, "0.01", PINGS);
        thread::sleep(Duration::from_millis(800));

        rotate(&hosts, 0, (addr_a, addr_b), ([0, 1], [1, 0]), &dir);
        rotate(&hosts, 1, (addr_a, addr_b), ([1, 0], [0, 1]), &dir);

        let sent = sent.join().expect("the source thread");
        let (got, error) = received.join().expect("the sink thread");
        let out = pinger.wait_with_output().expect("ping");
        let ping_out = String::from_utf8_lossy(&out.stdout);
        let (transmitted, answered) = stream::ping_summary(&ping_out);
        let loss = transmitted - answered;
        eprintln!(
            "rotation: ping every 10 ms: {transmitted} sent, {answered} answered, {loss} lost; \
             TCP: {got} of {STREAM_BYTES} bytes intact"
        );
        let frames_a = cap_a.stop();
        let frames_b = cap_b.stop();
        let stats = || format!("a: {}\nb: {}", a.ok(&["stats"]), b.ok(&["stats"]));

        assert_eq!(
            sent,
            Ok(STREAM_BYTES),
            "the source sent the whole stream\n{}",
            stats()
        );
        assert_eq!(
            (got, error),
            (STREAM_BYTES, None),
            "the stream arrives whole and intact\n{}",
            stats()
        );
        // No ping may be lost: the procedure leaves no moment in which either host refuses what
        // its peer sends (each accepts the old and the new inbound SA from phase 1 until phase
        // 3, and nobody sends under the new SA before every host accepts it), and the veth
        // loses nothing by itself. Without the former-SA acceptance this run loses ~150.
        assert_eq!(loss, 0, "pings lost across the rotations\n{}", stats());
        for (frames, host) in [(&frames_a, "a"), (&frames_b, "b")] {
            frames.assert_only_esp(&format!("everything {host} sent across the rotations"));
            // Every generation carried traffic.
            for g in 0..3 {
                let (ab, ba) = spis(g);
                let under = |spi| frames.frames.iter().filter(|f| f.spi == Some(spi)).count();
                assert!(
                    under(ab) + under(ba) > 0,
                    "{host}'s capture saw no ESP of generation {g}:\n{}",
                    describe(&frames.frames.iter().take(20).collect::<Vec<_>>())
                );
            }
        }

        // After phase 3 the retired SPIs are unknown: ESP under them is dropped and counted.
        for g in 0..2 {
            let (ab, _) = spis(g);
            let stale = frames_a
                .frames
                .iter()
                .find(|f| f.spi == Some(ab) && f.fragment.is_none())
                .unwrap_or_else(|| panic!("no ESP under {ab:#x} captured"));
            let before = b.stat("drop_unknown_spi");
            let delivered = b.stat("esp_xsk_received");
            resend(&net.ns_a, &net.if_a, &stale.ether);
            assert_eq!(
                b.stat("drop_unknown_spi"),
                before + 1,
                "ESP under the retired SPI {ab:#x} is dropped as unknown\n{}",
                stats()
            );
            assert_eq!(
                b.stat("esp_xsk_received"),
                delivered,
                "and never reaches the engine"
            );
        }
    });
}
