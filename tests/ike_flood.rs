//! A flood of IKE_SA_INIT requests for 30 s at an xipsec daemon with one configured peer
//! (RFC 7296 §2.6). Half the requests come from 64 addresses that are not peers: the daemon
//! keeps no state for them and does not answer (the core drops IKE_SA_INIT from an address no
//! peer has, before any Diffie-Hellman). The other half spoof the configured peer's own address
//! (what an attacker on the path can do): the daemon answers them with COOKIE challenges once
//! its half-open SAs reach their bound. Its resident memory stays under 64 MiB throughout
//! (sampled every 250 ms), and the real peer (a second xipsec host, which starts initiating
//! 10 s into the flood) still establishes, through the cookie exchange, and carries a ping
//! before the flood ends.
//!
//! The requests are real ones (our own IKE core's IKE_SA_INIT: x25519 KE, nonce, the daemon's
//! default proposal), each with a fresh initiator SPI, about 10,000 per second: without the
//! defences each would cost the daemon a Diffie-Hellman and a half-open entry.
//!
//! Needs root; fails under `CI=true` when it cannot run.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    sync::atomic::{AtomicBool, AtomicUsize, Ordering},
    thread,
    time::{Duration, Instant},
};

use ipsec_user::ike::{
    Identity, Ike, Lifetimes, PeerConfig, Psk, Settings,
    message::Message,
    payload::{NotifyType, Payload},
    proposal::{parse_esp, parse_ike},
    selector::TrafficSelector,
};
use ipsec_user::model::Mode;
use xipsec_testkit::{
    as_root,
    cli::{self, SpArgs},
    daemon::Node,
    netns, traffic,
};

const PSK: &str = "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
const FLOOD: Duration = Duration::from_secs(30);
const SOURCES: u16 = 64;
/// Requests per 10 ms tick: about 10,000 a second.
const PER_TICK: usize = 100;
const RSS_LIMIT_KIB: u64 = 64 * 1024;

/// An IKE_SA_INIT from `from` to `to`, as our core's initiator builds it.
fn ike_sa_init(from: Ipv6Addr, to: Ipv6Addr) -> Vec<u8> {
    let mut ike = Ike::new(Settings::default());
    ike.add_peer(PeerConfig {
        name: "flood".into(),
        local: IpAddr::V6(from),
        remote: IpAddr::V6(to),
        local_id: Identity::address(IpAddr::V6(from)),
        remote_id: None,
        psk: Psk::new(&[7; 32]).expect("a psk"),
        ike_proposals: parse_ike("aes128-sha256-x25519").expect("ike proposals"),
        esp_proposals: parse_esp("aes128-sha256").expect("esp proposals"),
        mode: Mode::Transport,
        local_ts: vec![TrafficSelector::any_v6()],
        remote_ts: vec![TrafficSelector::any_v6()],
        lifetimes: Lifetimes::default(),
    })
    .expect("adding the flood's peer");
    let out = ike.initiate("flood", Instant::now()).expect("initiating");
    out.datagrams
        .into_iter()
        .next()
        .expect("an IKE_SA_INIT to send")
        .bytes
}

/// Whether `bytes` is an IKE message carrying a COOKIE notify.
fn is_cookie(bytes: &[u8]) -> bool {
    Message::parse(bytes).is_ok_and(|m| {
        m.payloads
            .iter()
            .any(|p| matches!(p, Payload::Notify(n) if n.kind == NotifyType::COOKIE))
    })
}

/// The flooders' addresses: `fd00:1c3::1:{i}`, on b's side of the wire.
fn source(i: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0x1c3, 0, 0, 0, 0, 1, i)
}

/// What the flooders sent and got back.
#[derive(Debug, Default)]
struct Flooded {
    sent: usize,
    /// COOKIE challenges to requests from the peer's (spoofed) address.
    cookies: usize,
    /// Any answer to requests from the unknown addresses.
    answered_unknown: usize,
}

/// Sends the flood from namespace `ns` to `victim` until `stop`: even requests from `peer`'s
/// address (an ephemeral port: the real peer's daemon holds 500), odd ones from the unknown
/// addresses.
fn flood(ns: &str, victim: Ipv6Addr, peer: Ipv6Addr, stop: &AtomicBool) -> Flooded {
    netns::in_netns(ns, || {
        let bind = |addr: Ipv6Addr| {
            let s = UdpSocket::bind(SocketAddr::from((addr, 0))).expect("binding");
            s.set_nonblocking(true).expect("non-blocking");
            s
        };
        let spoofed = bind(peer);
        let sockets: Vec<UdpSocket> = (0..SOURCES).map(|i| bind(source(i))).collect();
        let template = ike_sa_init(source(0), victim);
        let to = SocketAddr::from((victim, 500));
        let (mut flooded, mut n) = (Flooded::default(), 0u64);
        let mut buf = [0u8; 2048];
        while !stop.load(Ordering::Relaxed) {
            for _ in 0..PER_TICK {
                let mut message = template.clone();
                // A fresh initiator SPI: a new half-open SA for the responder each time.
                n += 1;
                message[..8].copy_from_slice(&(n ^ 0x5a5a_0000_0000_0000).to_be_bytes());
                #[allow(clippy::cast_possible_truncation, reason = "n / 2 % SOURCES fits")]
                let socket = if n % 2 == 0 {
                    &spoofed
                } else {
                    &sockets[(n / 2 % u64::from(SOURCES)) as usize]
                };
                if socket.send_to(&message, to).is_ok() {
                    flooded.sent += 1;
                }
            }
            while let Ok(len) = spoofed.recv(&mut buf) {
                flooded.cookies += usize::from(is_cookie(&buf[..len]));
            }
            for socket in &sockets {
                while socket.recv(&mut buf).is_ok() {
                    flooded.answered_unknown += 1;
                }
            }
            thread::sleep(Duration::from_millis(10));
        }
        flooded
    })
}

/// The resident set of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("reading status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}

fn configure(node: &Node, (me, peer): (&str, &str), initiate: &str) {
    node.ok(&cli::ike_peer_add("peer", (me, peer), (PSK, initiate), &[]));
    for (name, src, dst, dir) in [("to-peer", me, peer, "out"), ("from-peer", peer, me, "in")] {
        let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
        node.ok(&SpArgs::ike((&src, &dst), dir, "transport", "peer", name).args());
    }
}

#[test]
fn ike_sa_init_flood_engages_cookies_and_spares_the_peer() {
    as_root(
        "ike_sa_init_flood_engages_cookies_and_spares_the_peer",
        || {
            let net = netns::VethPair::new("ikfl", 0x1c3);
            for i in 0..SOURCES {
                net_b_addr(&net, source(i));
            }
            let a = Node::start(&net.ns_a, &net.if_a);
            let b = Node::start(&net.ns_b, &net.if_b);
            let (addr_a, addr_b) = (net.addr_a.as_str(), net.addr_b.as_str());
            configure(&a, (addr_a, addr_b), "never");
            let pid = a.pid().expect("a's daemon runs");
            let victim: Ipv6Addr = addr_a.parse().expect("a's address");
            let peer: Ipv6Addr = addr_b.parse().expect("b's address");
            let stop = AtomicBool::new(false);
            let most_rss = AtomicUsize::new(0);
            let (flooded, established_after) = thread::scope(|s| {
                let flooder = s.spawn(|| flood(&net.ns_b, victim, peer, &stop));
                let sampler = s.spawn(|| {
                    while !stop.load(Ordering::Relaxed) {
                        let rss = usize::try_from(rss_kib(pid)).expect("a size");
                        most_rss.fetch_max(rss, Ordering::Relaxed);
                        thread::sleep(Duration::from_millis(250));
                    }
                });
                let started = Instant::now();
                thread::sleep(Duration::from_secs(10));
                configure(&b, (addr_b, addr_a), "always");
                let mut established_after = None;
                while started.elapsed() < FLOOD {
                    if traffic::ping(&net.ns_b, addr_a, ("1", "1"), None) {
                        established_after = Some(started.elapsed());
                        break;
                    }
                }
                // The rest of the flood, then stop.
                thread::sleep(FLOOD.saturating_sub(started.elapsed()));
                stop.store(true, Ordering::Relaxed);
                sampler.join().expect("the sampler");
                (flooder.join().expect("the flooder"), established_after)
            });
            let most_rss = most_rss.load(Ordering::Relaxed);
            eprintln!(
                "ike flood: {flooded:?}, daemon RSS at most {most_rss} KiB, the peer established \
                 after {established_after:?}"
            );
            assert!(
                flooded.sent > 100_000,
                "the flood sent only {} requests",
                flooded.sent
            );
            assert!(
                flooded.cookies > 0,
                "no COOKIE challenge answered the flood from the peer's address\n{}",
                a.log()
            );
            assert_eq!(
                flooded.answered_unknown, 0,
                "requests from addresses no peer has were answered"
            );
            assert!(
                u64::try_from(most_rss).expect("a size") < RSS_LIMIT_KIB,
                "the daemon's RSS reached {most_rss} KiB under the flood"
            );
            assert!(
                established_after.is_some(),
                "the configured peer did not establish during the flood\na: {}\nb: {}",
                a.log(),
                b.log()
            );
            assert!(
                rss_kib(pid) > 0 && traffic::ping(&net.ns_b, addr_a, ("3", "2"), None),
                "the daemon survived the flood and the peer's SA still works"
            );
        },
    );
}

/// Adds `addr` to b's side of the wire (no duplicate address detection).
fn net_b_addr(net: &netns::VethPair, addr: Ipv6Addr) {
    netns::add_address(&net.ns_b, &format!("{addr}/64"), &net.if_b);
}
