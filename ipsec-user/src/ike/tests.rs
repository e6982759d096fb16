//! Two endpoints in memory, initiator and responder, exchanging datagrams: every group and SK
//! suite reaches matching CHILD_SA keys; the negative paths end with the failure events the
//! daemon logs.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::model::{EncryptionAlgorithm, Mode};

use super::proposal::{parse_esp, parse_ike};
use super::selector::TrafficSelector;
use super::*;

pub(super) const A: &str = "fd00:1c::1";
pub(super) const B: &str = "fd00:1c::2";

pub(super) fn ip(s: &str) -> IpAddr {
    s.parse().expect("an address")
}

pub(super) fn peer(
    name: &str,
    local: &str,
    remote: &str,
    ike: &str,
    esp: &str,
    psk: &[u8],
) -> PeerConfig {
    PeerConfig {
        name: name.into(),
        local: ip(local),
        remote: ip(remote),
        local_id: Identity::address(ip(local)),
        remote_id: Some(Identity::address(ip(remote))),
        psk: Psk::new(psk).expect("a psk"),
        ike_proposals: parse_ike(ike).expect("ike proposals"),
        esp_proposals: parse_esp(esp).expect("esp proposals"),
        mode: Mode::Tunnel,
        local_ts: vec![TrafficSelector::prefix(
            format!("fd00:{}::/64", if local == A { "a" } else { "b" })
                .parse()
                .expect("a prefix"),
        )],
        remote_ts: vec![TrafficSelector::prefix(
            format!("fd00:{}::/64", if local == A { "b" } else { "a" })
                .parse()
                .expect("a prefix"),
        )],
        lifetimes: Lifetimes::default(),
    }
}

pub(super) const PSK: &[u8] = b"0123456789abcdef0123456789abcdef";

/// Endpoints a (initiator) and b (responder), each with the other as its peer.
pub(super) fn pair(ike_a: &str, ike_b: &str, esp_a: &str, esp_b: &str) -> (Ike, Ike) {
    let mut a = Ike::new(Settings::default());
    let mut b = Ike::new(Settings::default());
    a.add_peer(peer("b", A, B, ike_a, esp_a, PSK))
        .expect("peer b");
    b.add_peer(peer("a", B, A, ike_b, esp_b, PSK))
        .expect("peer a");
    (a, b)
}

/// The usual pair (aes128-sha256-x25519, aes128gcm16 on both sides) with a's IKE_SA_INIT out.
fn started(now: Instant) -> (Ike, Ike, Output) {
    let (mut a, b) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = a.initiate("b", now).expect("initiating");
    (a, b, first)
}

/// Delivers datagrams back and forth until both are quiet; every event, by side.
pub(super) fn pump(
    a: &mut Ike,
    b: &mut Ike,
    first: Output,
    now: Instant,
) -> (Vec<Event>, Vec<Event>) {
    pump_with(a, b, first, now, Some)
}

/// As [`pump`], with `filter` applied to each datagram in flight (drop it, or rewrite it).
pub(super) fn pump_with(
    a: &mut Ike,
    b: &mut Ike,
    first: Output,
    now: Instant,
    mut filter: impl FnMut(Datagram) -> Option<Datagram>,
) -> (Vec<Event>, Vec<Event>) {
    let mut events = (first.events, Vec::new());
    let mut queue: Vec<Datagram> = first.datagrams;
    let mut rounds = 0;
    while let Some(d) = queue.pop() {
        rounds += 1;
        assert!(rounds < 100, "the endpoints never go quiet");
        let Some(d) = filter(d) else { continue };
        let to_b = d.remote.ip() == ip(B);
        let target = if to_b { &mut *b } else { &mut *a };
        let out = target.receive(d.remote, d.local, &d.bytes, now);
        queue.extend(out.datagrams);
        if to_b {
            events.1.extend(out.events);
        } else {
            events.0.extend(out.events);
        }
    }
    events
}

pub(super) fn children(events: &[Event]) -> Vec<&ChildSa> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::ChildSaEstablished(c) => Some(&**c),
            _ => None,
        })
        .collect()
}

pub(super) fn failures(events: &[Event]) -> Vec<&Failure> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Failed { failure, .. } => Some(failure),
            _ => None,
        })
        .collect()
}

/// One child each side, with crossed SPIs and keys.
pub(super) fn assert_matching_children(ea: &[Event], eb: &[Event]) -> (u32, u32) {
    let (ca, cb) = (children(ea), children(eb));
    assert_eq!((ca.len(), cb.len()), (1, 1), "a: {ea:?}\nb: {eb:?}");
    let (ca, cb) = (ca[0], cb[0]);
    assert_eq!(ca.outbound_spi, cb.inbound_spi);
    assert_eq!(ca.inbound_spi, cb.outbound_spi);
    assert_eq!(ca.suite, cb.suite);
    assert_eq!(*ca.outbound.encryption, *cb.inbound.encryption);
    assert_eq!(*ca.outbound.integrity, *cb.inbound.integrity);
    assert_eq!(*ca.inbound.encryption, *cb.outbound.encryption);
    assert_eq!(*ca.inbound.integrity, *cb.outbound.integrity);
    assert_ne!(*ca.inbound.encryption, *ca.outbound.encryption);
    assert_eq!(ca.local_ts, cb.remote_ts);
    assert_eq!(ca.remote_ts, cb.local_ts);
    (ca.inbound_spi, ca.outbound_spi)
}

#[test]
fn every_group_and_sk_suite_reaches_matching_child_keys() {
    let now = Instant::now();
    for group in ["x25519", "ecp256", "modp2048"] {
        for (cipher, esp) in [
            ("aes128-sha256", "aes128-sha256"),
            ("aes256gcm16", "aes128gcm16"),
        ] {
            let ike = format!("{cipher}-{group}");
            let (mut a, mut b) = pair(&ike, &ike, esp, esp);
            let first = a.initiate("b", now).expect("initiating");
            let (ea, eb) = pump(&mut a, &mut b, first, now);
            assert_matching_children(&ea, &eb);
            let child = children(&ea)[0];
            assert_eq!(child.mode, Mode::Tunnel);
            assert!(!child.encapsulated, "no nat between a and b");
            let key_len = if esp == "aes128gcm16" { 20 } else { 16 };
            assert_eq!(child.outbound.encryption.len(), key_len, "{ike} {esp}");
            for side in [&a, &b] {
                let sas = side.ike_sas();
                assert_eq!(sas.len(), 1);
                assert_eq!(sas[0].state, SaState::Established, "{ike}");
                assert_eq!(sas[0].suite.map(|s| s.group.name()), Some(group));
            }
            assert_eq!(a.ike_sas()[0].spi_r, b.ike_sas()[0].spi_r);
            // Nothing outstanding: the next timer is the liveness check, `dpd` from now.
            let dpd = Lifetimes::default().dpd.expect("dpd on by default");
            assert_eq!(a.next_deadline(), Some(now + dpd));
            assert_eq!(b.next_deadline(), Some(now + dpd));
        }
    }
}

#[test]
fn wrong_psk_fails_on_both_sides_without_a_child() {
    let now = Instant::now();
    let mut a = Ike::new(Settings::default());
    let mut b = Ike::new(Settings::default());
    a.add_peer(peer(
        "b",
        A,
        B,
        "aes128-sha256-x25519",
        "aes128gcm16",
        b"not the psk at all, sorry",
    ))
    .expect("peer b");
    b.add_peer(peer("a", B, A, "aes128-sha256-x25519", "aes128gcm16", PSK))
        .expect("peer a");
    let first = a.initiate("b", now).expect("initiating");
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    assert_eq!(failures(&eb), [&Failure::PeerAuthentication]);
    assert_eq!(failures(&ea), [&Failure::AuthenticationRefused]);
    assert!(children(&ea).is_empty() && children(&eb).is_empty());
    assert!(a.ike_sas().is_empty() && b.ike_sas().is_empty());
}

#[test]
fn proposal_mismatch_is_no_proposal_chosen() {
    let now = Instant::now();
    let (mut a, mut b) = pair(
        "aes128-sha256-x25519",
        "aes256-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = a.initiate("b", now).expect("initiating");
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    assert_eq!(failures(&ea), [&Failure::NoIkeProposal]);
    assert_eq!(failures(&eb), [&Failure::NoIkeProposal]);
    assert!(a.ike_sas().is_empty() && b.ike_sas().is_empty());

    // ESP mismatch: the IKE SA stands, the CHILD_SA fails on both sides.
    let (mut a, mut b) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes256gcm16",
    );
    let first = a.initiate("b", now).expect("initiating");
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    assert_eq!(failures(&ea), [&Failure::NoEspProposal]);
    assert_eq!(failures(&eb), [&Failure::NoEspProposal]);
    assert_eq!(a.ike_sas()[0].state, SaState::Established);
    assert!(children(&ea).is_empty() && children(&eb).is_empty());
}

#[test]
fn invalid_ke_payload_retries_with_the_requested_group() {
    let now = Instant::now();
    let (mut a, mut b) = pair(
        "aes128-sha256-x25519-ecp256",
        "aes128-sha256-ecp256",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = a.initiate("b", now).expect("initiating");
    let mut ke_groups = Vec::new();
    let (ea, eb) = pump_with(&mut a, &mut b, first, now, |d| {
        if let Ok(m) = message::Message::parse(&d.bytes)
            && m.header.exchange == message::ExchangeType::IKE_SA_INIT
        {
            for p in &m.payloads {
                match p {
                    payload::Payload::Ke { group, .. } => ke_groups.push(*group),
                    payload::Payload::Notify(n) => ke_groups.push(n.kind.0),
                    _ => {}
                }
            }
        }
        Some(d)
    });
    assert_matching_children(&ea, &eb);
    // x25519 first; INVALID_KE_PAYLOAD (17); then ecp256 (19).
    assert_eq!(ke_groups[0], 31);
    assert!(ke_groups.contains(&17), "{ke_groups:?}");
    assert!(ke_groups.contains(&19), "{ke_groups:?}");
    assert_eq!(b.ike_sas()[0].suite.map(|s| s.group.id()), Some(19));
}

#[test]
fn cookies_are_demanded_over_the_half_open_bound() {
    let now = Instant::now();
    let (mut a, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let mut b = Ike::new(Settings {
        half_open_limit: 0,
        ..Settings::default()
    });
    b.add_peer(peer("a", B, A, "aes128-sha256-x25519", "aes128gcm16", PSK))
        .expect("peer a");
    let first = a.initiate("b", now).expect("initiating");
    // The bare request gets only a cookie, and no state.
    let d = &first.datagrams[0];
    let answer = b.receive(d.remote, d.local, &d.bytes, now);
    assert!(matches!(answer.events[..], [Event::CookieSent { .. }]));
    assert_eq!(b.half_open_count(), 0);
    let (ea, eb) = pump(&mut a, &mut b, answer_to(answer), now);
    assert_matching_children(&ea, &eb);

    // A forged cookie is answered with a fresh cookie again, never with state.
    let (mut c, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = c.initiate("b", now).expect("initiating");
    let mut forged = message::Message::parse(&first.datagrams[0].bytes).expect("parsing");
    forged.payloads.insert(
        0,
        payload::Payload::Notify(payload::Notify::new(
            payload::NotifyType::COOKIE,
            vec![1; 17],
        )),
    );
    let bytes = forged.emit().expect("emitting");
    let before = b.ike_sas().len();
    let answer = b.receive(
        first.datagrams[0].remote,
        first.datagrams[0].local,
        &bytes,
        now,
    );
    assert!(matches!(answer.events[..], [Event::CookieSent { .. }]));
    assert_eq!(b.ike_sas().len(), before);
}

/// The responder's answer as if the initiator had produced it (to resume pumping at a).
pub(super) fn answer_to(out: Output) -> Output {
    Output {
        datagrams: out.datagrams,
        events: Vec::new(),
    }
}

#[test]
fn unknown_addresses_and_garbage_get_no_answer() {
    let now = Instant::now();
    let (_, mut b) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let (mut stranger, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = stranger.initiate("b", now).expect("initiating");
    let from: SocketAddr = "[fd00:1c::99]:500".parse().expect("an address");
    let out = b.receive(
        first.datagrams[0].remote,
        from,
        &first.datagrams[0].bytes,
        now,
    );
    assert!(out.datagrams.is_empty());
    assert!(matches!(out.events[..], [Event::Dropped { .. }]));
    let to: SocketAddr = format!("[{B}]:500").parse().expect("an address");
    for junk in [&b""[..], &[0; 27], &[0xff; 100]] {
        let out = b.receive(to, from, junk, now);
        assert!(out.datagrams.is_empty());
    }
    assert!(b.ike_sas().is_empty());
}

#[test]
fn retransmissions_back_off_and_give_up() {
    let start = Instant::now();
    let (mut a, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = a.initiate("b", start).expect("initiating");
    assert_eq!(first.datagrams.len(), 1);
    let settings = Settings::default();
    let mut now = start;
    let mut gaps = Vec::new();
    loop {
        let due = a.next_deadline().expect("a retransmission is due");
        gaps.push(due - now);
        now = due;
        let out = a.on_timeout(now);
        if let Some(Event::Failed { failure, .. }) = out.events.first() {
            assert_eq!(*failure, Failure::Timeout(settings.retransmit_tries));
            break;
        }
        assert_eq!(out.datagrams.len(), 1, "one retransmission");
        assert_eq!(
            out.datagrams[0].bytes, first.datagrams[0].bytes,
            "the same request"
        );
    }
    let base = settings.retransmit_base;
    let expected: Vec<Duration> = (0..=settings.retransmit_tries)
        .map(|n| base * (1 << n))
        .collect();
    assert_eq!(gaps, expected);
    assert!(a.ike_sas().is_empty());
}

#[test]
fn a_lost_response_is_retransmitted_from_the_responders_memory() {
    let now = Instant::now();
    let (mut a, mut b, first) = started(now);
    // Lose the first IKE_AUTH response once: the initiator's retransmission gets the same one.
    let mut lost = false;
    let mut responses = Vec::new();
    let (ea, eb) = pump_with(&mut a, &mut b, first, now, |d| {
        if let Ok(m) = message::Message::parse(&d.bytes)
            && m.header.exchange == message::ExchangeType::IKE_AUTH
            && m.header.is_response()
        {
            responses.push(d.bytes.clone());
            if !lost {
                lost = true;
                return None;
            }
        }
        Some(d)
    });
    assert!(children(&ea).is_empty(), "the response was lost");
    assert_eq!(children(&eb).len(), 1);
    let retry = a.on_timeout(now + Duration::from_secs(1));
    let (ea, eb) = pump_with(&mut a, &mut b, retry, now, |d| {
        if let Ok(m) = message::Message::parse(&d.bytes)
            && m.header.is_response()
        {
            responses.push(d.bytes.clone());
        }
        Some(d)
    });
    assert_eq!(children(&ea).len(), 1);
    assert!(
        children(&eb).is_empty(),
        "the responder did not negotiate twice"
    );
    assert_eq!(responses.len(), 2);
    assert_eq!(responses[0], responses[1]);
}

#[test]
fn delete_removes_the_sas_on_both_sides() {
    let now = Instant::now();
    let (mut a, mut b, first) = started(now);
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    let (inbound, _) = assert_matching_children(&ea, &eb);

    let out = a.delete_child_sa(inbound, now).expect("deleting the child");
    let (ea, eb) = pump(&mut a, &mut b, out, now);
    for events in [&ea, &eb] {
        assert!(
            matches!(events[..], [Event::ChildSaDeleted { .. }]),
            "{events:?}"
        );
    }
    let out = b.delete_ike_sa("a", now).expect("deleting the ike sa");
    let (ea, eb) = pump(&mut a, &mut b, answer_to(out), now);
    assert!(matches!(ea[..], [Event::IkeSaDeleted { .. }]), "{ea:?}");
    assert!(matches!(eb[..], [Event::IkeSaDeleted { .. }]), "{eb:?}");
    assert!(a.ike_sas().is_empty() && b.ike_sas().is_empty());
}

#[test]
fn transport_mode_and_narrowing() {
    let now = Instant::now();
    let mut a = Ike::new(Settings::default());
    let mut b = Ike::new(Settings::default());
    let mut pa = peer("b", A, B, "aes128-sha256-x25519", "aes128gcm16", PSK);
    pa.mode = Mode::Transport;
    // The initiator asks for everything; the responder allows only the hosts.
    pa.local_ts = vec![TrafficSelector::any_v6()];
    pa.remote_ts = vec![TrafficSelector::any_v6()];
    let mut pb = peer("a", B, A, "aes128-sha256-x25519", "aes128gcm16", PSK);
    pb.mode = Mode::Transport;
    pb.local_ts = vec![TrafficSelector::ipv6_host(B.parse().expect("b"))];
    pb.remote_ts = vec![TrafficSelector::ipv6_host(A.parse().expect("a"))];
    a.add_peer(pa).expect("peer b");
    b.add_peer(pb.clone()).expect("peer a");
    let first = a.initiate("b", now).expect("initiating");
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    assert_matching_children(&ea, &eb);
    let child = children(&ea)[0];
    assert_eq!(child.mode, Mode::Transport);
    assert_eq!(child.local_ts, pb.remote_ts);
    assert_eq!(child.remote_ts, pb.local_ts);
    assert_eq!(child.suite.encryption, EncryptionAlgorithm::Aes128Gcm);

    // A responder that wants transport refuses a tunnel request.
    let (mut a, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let mut b = Ike::new(Settings::default());
    let mut transport_only = peer("a", B, A, "aes128-sha256-x25519", "aes128gcm16", PSK);
    transport_only.mode = Mode::Transport;
    b.add_peer(transport_only).expect("peer a");
    let first = a.initiate("b", now).expect("initiating");
    let (ea, eb) = pump(&mut a, &mut b, first, now);
    assert!(matches!(failures(&eb)[..], [Failure::Mode(_)]), "{eb:?}");
    assert_eq!(failures(&ea), [&Failure::NoEspProposal]);
}

#[test]
fn nat_moves_ike_to_port_4500_with_the_marker() {
    let now = Instant::now();
    let (mut a, mut b, first) = started(now);
    let mut ports = Vec::new();
    // A NAT in front of a: its source ports are rewritten (500 -> 1500, 4500 -> 14500) on the
    // way to b, and back on the way to a.
    let (ea, eb) = pump_with(&mut a, &mut b, first, now, |mut d| {
        ports.push((d.local.port(), d.remote.port(), d.bytes[..4] == [0; 4]));
        if d.remote.ip() == ip(B) {
            d.local
                .set_port(d.local.port() + 1000 * if d.local.port() == 500 { 2 } else { 10 });
        } else {
            d.remote
                .set_port(if d.remote.port() == 2500 { 500 } else { 4500 });
        }
        Some(d)
    });
    assert_matching_children(&ea, &eb);
    assert!(children(&ea)[0].encapsulated && children(&eb)[0].encapsulated);
    // IKE_SA_INIT on 500 without a marker, IKE_AUTH on 4500 with it.
    assert_eq!(ports[0], (500, 500, false));
    assert!(ports[2..].iter().all(|&(_, _, marker)| marker), "{ports:?}");
    assert!(ports[2..].iter().any(|&(l, _, _)| l == 4500), "{ports:?}");
}

/// The datagrams of one exchange (IKE_SA_INIT both ways, IKE_AUTH both ways with CBC and GCM,
/// a COOKIE, INVALID_KE_PAYLOAD, an INFORMATIONAL delete) parse and round-trip: they are the
/// fuzz target's seeds, written to `$XIPSEC_WRITE_IKE_CORPUS` when set (`fuzz/corpus/ike_message`).
#[test]
fn seed_corpus_messages_round_trip() {
    let now = Instant::now();
    let mut seeds: Vec<(String, Vec<u8>)> = Vec::new();
    for (ike_a, ike_b) in [
        ("aes128-sha256-x25519-ecp256", "aes128-sha256-ecp256"),
        ("aes128gcm16-x25519", "aes128gcm16-x25519"),
    ] {
        let (mut a, mut b) = pair(ike_a, ike_b, "aes128gcm16", "aes128gcm16");
        let first = a.initiate("b", now).expect("initiating");
        let mut n = 0;
        let record = |d: Datagram, seeds: &mut Vec<(String, Vec<u8>)>, n: &mut usize| {
            let bytes = if d.local.port() == 4500 || d.remote.port() == 4500 {
                d.bytes[4..].to_vec()
            } else {
                d.bytes.clone()
            };
            seeds.push((format!("{}-{n}", ike_b.replace('-', "_")), bytes));
            *n += 1;
            Some(d)
        };
        let (ea, eb) = pump_with(&mut a, &mut b, first, now, |d| {
            record(d, &mut seeds, &mut n)
        });
        assert_matching_children(&ea, &eb);
        let out = a.delete_ike_sa("b", now).expect("deleting");
        pump_with(&mut a, &mut b, out, now, |d| record(d, &mut seeds, &mut n));
    }
    let mut b = Ike::new(Settings {
        half_open_limit: 0,
        ..Settings::default()
    });
    b.add_peer(peer("a", B, A, "aes128-sha256-x25519", "aes128gcm16", PSK))
        .expect("peer a");
    let (mut a, _) = pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let first = a.initiate("b", now).expect("initiating");
    let d = &first.datagrams[0];
    let cookie = b.receive(d.remote, d.local, &d.bytes, now);
    seeds.push(("cookie".into(), cookie.datagrams[0].bytes.clone()));
    assert!(seeds.len() >= 12, "{}", seeds.len());
    for (name, bytes) in &seeds {
        let message = message::Message::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(&message.emit().expect("emitting"), bytes, "{name}");
    }
    if let Ok(dir) = std::env::var("XIPSEC_WRITE_IKE_CORPUS") {
        std::fs::create_dir_all(&dir).expect("creating the corpus directory");
        for (name, bytes) in &seeds {
            std::fs::write(std::path::Path::new(&dir).join(name), bytes).expect("writing a seed");
        }
    }
}

#[test]
fn child_sa_rekey_makes_before_it_breaks() {
    let now = Instant::now();
    for (esp, pfs) in [("aes128gcm16", false), ("aes128-sha256-ecp256", true)] {
        let (mut a, mut b) = pair("aes128-sha256-x25519", "aes128-sha256-x25519", esp, esp);
        let first = a.initiate("b", now).expect("initiating");
        let (ea, eb) = pump(&mut a, &mut b, first, now);
        let (old_a, _) = assert_matching_children(&ea, &eb);
        let old_b = children(&eb)[0].inbound_spi;
        // Either side may rekey: b (the IKE SA's responder) does it here for the PFS suite.
        let (ea, eb) = if pfs {
            let out = b.rekey_child_sa(old_b, now).expect("rekeying");
            pump(&mut a, &mut b, answer_to(out), now)
        } else {
            let out = a.rekey_child_sa(old_a, now).expect("rekeying");
            pump(&mut a, &mut b, out, now)
        };
        let (new_a, _) = assert_matching_children(&ea, &eb);
        assert_ne!(new_a, old_a);
        for (events, old) in [(&ea, old_a), (&eb, old_b)] {
            let child = children(events)[0];
            assert_eq!(child.rekeys, Some(old), "{esp}");
            // Make before break: the new CHILD_SA is reported before the old one is deleted.
            let new_at = events
                .iter()
                .position(|e| matches!(e, Event::ChildSaEstablished(_)))
                .expect("a new child");
            let old_at = events
                .iter()
                .position(|e| matches!(e, Event::ChildSaDeleted { inbound_spi, .. } if *inbound_spi == old))
                .expect("the old child deleted");
            assert!(new_at < old_at, "{events:?}");
        }
        assert_eq!(a.ike_sas()[0].children.len(), 1);
        assert_eq!(b.ike_sas()[0].children.len(), 1);
    }
}
