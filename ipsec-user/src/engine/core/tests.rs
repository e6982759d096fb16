//! Whole outbound and inbound exchanges through the core's public API, without sockets,
//! threads or files: two peers, `a` and `b`, each with its tables and an in-memory "disk" that
//! a test can make fail; the driver here performs the actions as the engine's I/O layer does.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sa::SaIdentity;
use super::*;
use crate::crypto::{ConfigError, OuterHeader};
use crate::engine::RESERVATION_STEP;
use crate::model::{
    Action, Direction, SaAddArgs, SaCount, SaRemoveArgs, Sp, SpAddArgs, SpRemoveArgs, Spd,
};

const A: &str = "fd00:ee::1";
const B: &str = "fd00:ee::2";

#[allow(
    clippy::unnecessary_wraps,
    reason = "fills the Option fields of the model's arguments"
)]
fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn addr(a: &str) -> Ipv6Addr {
    a.parse().expect("a test address")
}

fn sa_args(name: &str, src: &str, dst: &str, spi: &str) -> SaAddArgs {
    SaAddArgs {
        sa_source: s(src),
        sa_destination: s(dst),
        sa_mode: s("transport"),
        sa_spi: s(spi),
        encryption_algorithm: s("aes128-cbc"),
        encryption_key: s("0123456789abcdef"),
        integrity_algorithm: s("hmac-sha2-256"),
        integrity_key: s("0123456789abcdef0123456789abcdef"),
        sa_name: s(name),
        udp_encapsulation: None,
    }
}

fn sp_args(name: &str, src: &str, dst: &str, dir: &str, sa: &str) -> SpAddArgs {
    let any = || s("any");
    SpAddArgs {
        sp_source: s(&format!("{src}/128")),
        sp_destination: s(&format!("{dst}/128")),
        source_port: any(),
        destination_port: any(),
        upper_layer_protocol: any(),
        flow_direction: s(dir),
        action: s("ipsec"),
        sa_name: s(sa),
        sp_name: s(name),
        ..SpAddArgs::default()
    }
}

/// Side a (`local` = A) or b of a mirrored configuration: a2b (SPI 0x1001) and b2a (0x2001).
fn side(local: &str, peer: &str) -> Spd {
    side_with(local, peer, "aes128-cbc", "0123456789abcdef")
}

fn side_with(local: &str, peer: &str, encryption: &str, key: &str) -> Spd {
    side_keyed(
        local,
        peer,
        encryption,
        key,
        "0123456789abcdef0123456789abcdef",
    )
}

/// [`side_with`], with the HMAC-SHA-256 key too.
fn side_keyed(local: &str, peer: &str, encryption: &str, key: &str, integrity_key: &str) -> Spd {
    let mut spd = Spd::new();
    for (name, src, dst, spi) in [("a2b", A, B, "0x1001"), ("b2a", B, A, "0x2001")] {
        let mut args = sa_args(name, src, dst, spi);
        args.encryption_algorithm = s(encryption);
        args.encryption_key = s(key);
        args.integrity_key = s(integrity_key);
        if encryption.ends_with("-gcm") {
            // AES-GCM authenticates by itself and refuses the integrity options, and each SA
            // needs its own key: b2a takes the key reversed.
            args.integrity_algorithm = None;
            args.integrity_key = None;
            if name == "b2a" {
                args.encryption_key = Some(key.chars().rev().collect());
            }
        }
        spd.add_sa(&args).expect("adding an sa");
    }
    let (out_sa, in_sa) = if local == A {
        ("a2b", "b2a")
    } else {
        ("b2a", "a2b")
    };
    spd.add_sp(&sp_args("out", local, peer, "out", out_sa))
        .expect("adding the out sp");
    spd.add_sp(&sp_args("in", peer, local, "in", in_sa))
        .expect("adding the in sp");
    spd
}

fn emptied(spd: &Spd) -> Spd {
    let mut empty = spd.clone();
    empty
        .remove_sp(&SpRemoveArgs {
            sp_name: None,
            remove_all: true,
        })
        .expect("removing sps");
    empty
        .remove_sa(&SaRemoveArgs {
            remove_all: true,
            ..SaRemoveArgs::default()
        })
        .expect("removing sas");
    empty
}

/// What "the disk" holds: reservations and ceilings, written only when `failing` is off.
#[derive(Default, Clone)]
struct Disk {
    seq: HashMap<(String, u32), u32>,
    ceilings: HashMap<(u32, KeyId), u32>,
    failing: bool,
    writes: usize,
}

impl Persisted for Disk {
    fn reservation(&self, name: &str, spi: u32) -> Option<u32> {
        self.seq.get(&(name.to_owned(), spi)).copied()
    }

    fn ceiling(&self, spi: u32, key_id: &KeyId) -> Option<u32> {
        self.ceilings.get(&(spi, *key_id)).copied()
    }
}

/// ESP as the peer's raw socket reports it: the outer header's fields and the ESP bytes.
#[derive(Clone, Debug)]
struct Wire {
    outer: OuterHeader,
    esp: Vec<u8>,
}

impl Wire {
    /// What the peer's raw socket reports of a packet sent as `esp` says, from `buf`.
    fn sent(esp: &crate::crypto::Encapsulated, buf: &[u8]) -> Self {
        Self {
            outer: OuterHeader {
                source: esp.source,
                destination: esp.destination,
                traffic_class: esp.traffic_class,
                flow_label: 0,
                hop_limit: esp.hop_limit,
            },
            esp: buf[esp.esp_offset..].to_vec(),
        }
    }

    fn spi(&self) -> u32 {
        u32::from_be_bytes(self.esp[..4].try_into().expect("4 bytes"))
    }

    fn seq(&self) -> u32 {
        u32::from_be_bytes(self.esp[4..8].try_into().expect("4 bytes"))
    }
}

/// One peer: the core's tables, driven as the engine's I/O layer drives them.
struct Side {
    out: Outbound,
    inb: Inbound,
    stats: Arc<EngineStats>,
    registry: BTreeMap<u32, Arc<SaCells>>,
    disk: Disk,
    now: Instant,
    /// The last action of each direction, for tests that look at it.
    sent: Vec<OutAction>,
}

impl Side {
    fn new(spd: &Spd) -> Self {
        Self::on(spd, Disk::default(), DEFAULT_TDES_BLOCK_LIMIT)
    }

    /// A peer starting from `disk` (a restart when `disk` is another peer's).
    fn on(spd: &Spd, disk: Disk, tdes_block_limit: u64) -> Self {
        let stats = Arc::new(EngineStats::default());
        let (out, inb) = tables(tdes_block_limit, &stats);
        let mut side = Self {
            out,
            inb,
            stats,
            registry: BTreeMap::new(),
            disk,
            now: Instant::now(),
            sent: Vec::new(),
        };
        side.update(spd);
        side
    }

    fn update(&mut self, spd: &Spd) {
        let rebuilt = rebuild(
            spd,
            classify::build(spd).expect("compiling the spd"),
            &mut self.out,
            &mut self.inb,
            &self.disk,
        )
        .expect("rebuilding the tables");
        self.registry = rebuilt.registry;
        self.write_reservations(&rebuilt.reservations);
        for (spi, key_id, value) in rebuilt.settle {
            self.disk.ceilings.insert((spi, key_id), value);
        }
    }

    fn write_reservations(&mut self, reservations: &[SeqReservation]) {
        for r in reservations {
            let written = !self.disk.failing;
            if written {
                self.disk.writes += 1;
                let slot = self.disk.seq.entry((r.sa_name.clone(), r.spi)).or_insert(0);
                *slot = (*slot).max(r.up_to);
            }
            self.out.reservation_written(r, written, self.now);
        }
    }

    /// Protects a plaintext IPv6 packet; returns the core's action and, for a send, the ESP
    /// as the receiver's raw socket would report it.
    fn send(&mut self, packet: &[u8]) -> (OutAction, Option<Wire>) {
        let mut frame = FAKE_ETHERNET.to_vec();
        frame.extend_from_slice(packet);
        let mut buf = Vec::new();
        let action = match self.out.push_fragment(&frame, self.now, &mut buf) {
            Some(action) => action,
            None => self.out.protect(&frame, self.now, &mut buf),
        };
        let mut reservations = Vec::new();
        self.out.take_reservations(&mut reservations);
        self.write_reservations(&reservations);
        self.sent.push(action);
        let wire = match action {
            OutAction::Send(esp) => Some(Wire::sent(&esp, &buf)),
            _ => None,
        };
        (action, wire)
    }

    fn protect(&mut self, packet: &[u8]) -> Option<Wire> {
        self.send(packet).1
    }

    /// Opens ESP as the engine does: a raise is written to the disk (unless failing),
    /// confirmed, and the same packet handed in again. Returns the final action and the
    /// delivered packet.
    fn open(&mut self, wire: &Wire) -> (InAction, Option<Vec<u8>>) {
        let mut frame = Vec::new();
        loop {
            let action = self
                .inb
                .receive(&wire.outer, &wire.esp, self.now, &mut frame);
            match action {
                InAction::Deliver => return (action, Some(frame[14..].to_vec())),
                InAction::Drop(_) => return (action, None),
                InAction::Raise(raise) => {
                    let written = !self.disk.failing;
                    if written {
                        self.disk.writes += 1;
                        self.disk
                            .ceilings
                            .insert((raise.spi, raise.key_id), raise.up_to);
                    }
                    self.inb.ceiling_written(&raise, written, self.now);
                }
            }
        }
    }

    fn receive(&mut self, wire: &Wire) -> Option<Vec<u8>> {
        self.open(wire).1
    }

    fn sa(&self, id: u32) -> SaCount {
        self.registry[&id].snapshot()
    }
}

fn ipv6(src: &str, dst: &str, next_header: u8, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(payload.len()).expect("fits");
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&len.to_be_bytes());
    p.extend_from_slice(&[next_header, 64]);
    p.extend_from_slice(&addr(src).octets());
    p.extend_from_slice(&addr(dst).octets());
    p.extend_from_slice(payload);
    p
}

fn udp(src: &str, dst: &str, dport: u16, payload: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload).expect("fits");
    let mut u = vec![0x30, 0x39];
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&len.to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend((0..payload).map(|i| u8::try_from(i % 251).expect("small")));
    ipv6(src, dst, 17, &u)
}

fn tcp(src: &str, dst: &str, dport: u16, payload: usize) -> Vec<u8> {
    let mut t = vec![0xc3, 0x50];
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend((0..payload).map(|i| u8::try_from(i % 13).expect("small")));
    ipv6(src, dst, 6, &t)
}

/// `packet` (fixed header + upper layer) cut into fragments of `chunk` bytes (a multiple of
/// 8), each with a fragment header of identification `id`.
fn fragments(packet: &[u8], chunk: usize, id: u32) -> Vec<Vec<u8>> {
    let body = &packet[40..];
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < body.len() {
        let end = (offset + chunk).min(body.len());
        let more = u16::from(end < body.len());
        let field = u16::try_from(offset).expect("small") | more;
        let mut payload = vec![packet[6], 0];
        payload.extend_from_slice(&field.to_be_bytes());
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&body[offset..end]);
        let mut p = packet[..40].to_vec();
        p[6] = 44;
        let len = u16::try_from(payload.len()).expect("fits");
        p[4..6].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&payload);
        out.push(p);
        offset = end;
    }
    out
}

#[test]
fn udp_and_tcp_go_out_as_esp_with_the_sa_s_header_and_come_back_whole() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    for (i, packet) in [udp(A, B, 5000, 100), tcp(A, B, 443, 1200)]
        .into_iter()
        .enumerate()
    {
        let wire = a.protect(&packet).expect("a protects");
        let OutAction::Send(esp) = a.sent[i] else {
            panic!("not sent: {:?}", a.sent[i]);
        };
        // The outer header as the raw socket must send it: transport mode, the packet's own
        // addresses and hop limit; ESP right after the fixed header.
        assert_eq!((esp.source, esp.destination), (addr(A), addr(B)));
        assert_eq!(esp.hop_limit, 64);
        assert_eq!(esp.esp_offset, 40);
        assert_eq!(&wire.esp[..4], &0x1001u32.to_be_bytes(), "a2b's spi");
        assert_eq!(wire.seq(), u32::try_from(i + 1).expect("small"));
        assert_eq!(esp.seq, wire.seq());
        let (action, delivered) = b.open(&wire);
        assert_eq!(action, InAction::Deliver);
        assert_eq!(delivered.expect("delivered"), packet, "packet {i}");
    }
    assert_eq!(a.sa(0).packets, 2);
    assert_eq!(b.sa(0).packets, 2);
    assert_eq!(a.stats.get(Stat::EncapOk), 2);
    assert_eq!(b.stats.get(Stat::Delivered), 2);
    assert_eq!(b.stats.get(Stat::DecapOk), 2);
    let hits: Vec<_> = b.inb.sp_hits().collect();
    assert_eq!(hits.len(), 1, "one inbound sp counted: {hits:?}");
    assert_eq!(hits[0].1, 2);
}

#[test]
fn replayed_tampered_and_foreign_esp_are_dropped_for_their_reason() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let wire = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    assert!(b.receive(&wire).is_some());
    assert_eq!(b.open(&wire), (InAction::Drop(Reason::Replay), None));
    assert_eq!(b.sa(0).replay_drops, 1);

    let mut tampered = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    let last = tampered.esp.len() - 1;
    tampered.esp[last] ^= 1;
    assert_eq!(
        b.open(&tampered),
        (InAction::Drop(Reason::AuthFailed), None)
    );
    assert_eq!(b.sa(0).auth_failures, 1);

    let mut foreign = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    foreign.esp[..4].copy_from_slice(&0x9999u32.to_be_bytes());
    assert_eq!(b.open(&foreign), (InAction::Drop(Reason::UnknownSpi), None));
    // Our own outbound SA's SPI is not an inbound one either.
    let mut ours = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    ours.esp[..4].copy_from_slice(&0x2001u32.to_be_bytes());
    assert_eq!(b.open(&ours), (InAction::Drop(Reason::UnknownSpi), None));
    assert_eq!(b.stats.get(Stat::UnknownSpi), 2);
    assert_eq!(
        b.open(&Wire {
            outer: wire.outer,
            esp: vec![0; 7]
        })
        .0,
        InAction::Drop(Reason::Malformed)
    );
    assert_eq!(b.stats.get(Stat::Delivered), 1);
}

#[test]
fn flows_without_an_ipsec_verdict_are_dropped_never_sent() {
    let mut spd = side(A, B);
    let mut discard = sp_args("discard", A, "fd00:ee::4", "out", "a2b");
    discard.action = s("discard");
    discard.sa_name = None;
    spd.add_sp(&discard).expect("adding the discard sp");
    let mut none = sp_args("none", A, "fd00:ee::5", "out", "a2b");
    none.action = s("none");
    none.sa_name = None;
    spd.add_sp(&none).expect("adding the none sp");
    let mut a = Side::new(&spd);
    for dst in ["fd00:ee::4", "fd00:ee::5", "fd00:ee::6"] {
        assert_eq!(
            a.send(&udp(A, dst, 1, 1)).0,
            OutAction::Drop(Reason::NoSa),
            "{dst}"
        );
    }
    assert_eq!(a.stats.get(Stat::NoSa), 3);
    assert_eq!(a.stats.get(Stat::EncapOk), 0);
    // A cut packet: reassembly sees it first and cannot parse it; protect refuses it too.
    let cut = [&FAKE_ETHERNET[..], &[0x60, 0, 0]].concat();
    assert_eq!(
        a.send(&cut[14..]).0,
        OutAction::Drop(Reason::FragDropped),
        "a cut packet"
    );
    assert_eq!(
        a.out.protect(&cut, a.now, &mut Vec::new()),
        OutAction::Drop(Reason::Malformed)
    );
}

#[test]
fn no_sequence_number_leaves_before_its_reservation_is_on_disk() {
    // The disk is full from the start: the new SA's reservation cannot be written.
    let disk = Disk {
        failing: true,
        ..Disk::default()
    };
    let mut a = Side::on(&side(A, B), disk, DEFAULT_TDES_BLOCK_LIMIT);
    for _ in 0..5 {
        assert_eq!(
            a.send(&udp(A, B, 5000, 10)).0,
            OutAction::Drop(Reason::SeqNotReserved),
            "sent without a reservation"
        );
    }
    assert_eq!(a.stats.get(Stat::SeqPersistErrors), 5);
    assert_eq!(a.sa(0).errors, 5);
    assert_eq!(a.disk.writes, 0);
    // The disk has room again; once the back-off ran out, the next packet asks again and the
    // one after it leaves with sequence number 1.
    a.disk.failing = false;
    a.now += Duration::from_secs(2);
    assert_eq!(
        a.send(&udp(A, B, 5000, 10)).0,
        OutAction::Drop(Reason::SeqNotReserved)
    );
    let wire = a.protect(&udp(A, B, 5000, 10)).expect("reserved now");
    assert_eq!(wire.seq(), 1);
    assert_eq!(a.disk.reservation("a2b", 0x1001), Some(RESERVATION_STEP));
}

#[test]
fn reservations_are_asked_ahead_and_a_restart_resumes_above_them() {
    let mut a = Side::new(&side(A, B));
    // Installing the SA reserved its first block; nothing waits for the first packet.
    assert_eq!(a.disk.reservation("a2b", 0x1001), Some(RESERVATION_STEP));
    let writes = a.disk.writes;
    let half = RESERVATION_STEP / 2;
    for _ in 0..half - 1 {
        a.protect(&udp(A, B, 5000, 0)).expect("a protects");
    }
    assert_eq!(a.disk.writes, writes, "no write in the first half");
    let wire = a.protect(&udp(A, B, 5000, 0)).expect("a protects");
    assert_eq!(wire.seq(), half);
    assert_eq!(
        a.disk.writes,
        writes + 1,
        "the next block, asked ahead of need"
    );
    assert_eq!(
        a.disk.reservation("a2b", 0x1001),
        Some(half + RESERVATION_STEP)
    );
    // A write that fails there only costs once the current block is used up.
    a.disk.failing = true;
    let wire = (0..RESERVATION_STEP)
        .map_while(|_| a.protect(&udp(A, B, 5000, 0)))
        .last()
        .expect("packets left");
    assert_eq!(
        wire.seq(),
        half + RESERVATION_STEP,
        "up to the reservation, not beyond"
    );
    assert_eq!(
        a.send(&udp(A, B, 5000, 0)).0,
        OutAction::Drop(Reason::SeqNotReserved)
    );

    // kill -9, restart from the disk: the first number is above anything sent.
    let mut disk = a.disk.clone();
    disk.failing = false;
    let mut a = Side::on(&side(A, B), disk, DEFAULT_TDES_BLOCK_LIMIT);
    let wire = a
        .protect(&udp(A, B, 5000, 0))
        .expect("a protects after the restart");
    assert_eq!(wire.seq(), half + RESERVATION_STEP + 1);
}

#[test]
fn no_esp_above_the_ceiling_is_accepted_before_the_ceiling_is_on_disk() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let wire = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    let mut frame = Vec::new();
    let InAction::Raise(raise) = b.inb.receive(&wire.outer, &wire.esp, b.now, &mut frame) else {
        panic!("the first packet needs a ceiling first");
    };
    assert_eq!(raise.spi, 0x1001);
    assert!(raise.up_to > 1);
    // Not accepted until confirmed: the same packet asks again.
    assert!(matches!(
        b.inb.receive(&wire.outer, &wire.esp, b.now, &mut frame),
        InAction::Raise(_)
    ));
    // The write fails: refused, and no new attempt while the back-off runs.
    b.inb.ceiling_written(&raise, false, b.now);
    assert_eq!(
        b.inb.receive(&wire.outer, &wire.esp, b.now, &mut frame),
        InAction::Drop(Reason::ReplayNotPersisted)
    );
    assert_eq!(b.stats.get(Stat::ReplayPersistErrors), 1);
    assert_eq!(b.stats.get(Stat::Delivered), 0);
    // After the back-off, written: the packet (which never moved the window) is delivered.
    b.now += Duration::from_secs(2);
    assert!(
        b.receive(&wire).is_some(),
        "delivered once the ceiling is on disk"
    );
    assert!(
        b.disk
            .ceiling(0x1001, &raise.key_id)
            .is_some_and(|c| c >= 1)
    );
}

#[test]
fn captured_esp_is_refused_after_a_restart_and_a_re_add_until_reset() {
    let mut a = Side::new(&side(A, B));
    let spd_b = side(B, A);
    let mut b = Side::new(&spd_b);
    let captured: Vec<Wire> = (0..5)
        .map(|_| a.protect(&udp(A, B, 5000, 10)).expect("a protects"))
        .collect();
    for wire in &captured {
        assert!(b.receive(wire).is_some(), "first delivery");
    }
    // kill -9 and a restart from the disk: the captured stream is refused in full.
    let mut b = Side::on(&spd_b, b.disk.clone(), DEFAULT_TDES_BLOCK_LIMIT);
    for wire in &captured {
        assert_eq!(b.open(wire).0, InAction::Drop(Reason::Replay));
    }
    // Removed and added again (same SPI and keys): the ceiling settled at removal still holds.
    b.update(&emptied(&spd_b));
    assert_eq!(
        b.open(&captured[0]).0,
        InAction::Drop(Reason::UnknownSpi),
        "sa removed"
    );
    b.update(&spd_b);
    for wire in &captured {
        assert_eq!(
            b.open(wire).0,
            InAction::Drop(Reason::Replay),
            "after a re-add"
        );
    }
    // The operator's reset (the I/O layer forgets the ceiling on disk first).
    let key_id = b.inb.replay_key(0x1001).expect("the sa");
    b.disk.ceilings.remove(&(0x1001, key_id));
    assert!(b.inb.reset_replay(0x1001, &key_id));
    assert!(!b.inb.reset_replay(0x9999, &key_id), "no such sa");
    assert!(b.receive(&captured[0]).is_some(), "accepted after a reset");
}

#[test]
fn housekeeping_brings_an_idle_sa_s_ceiling_down_to_what_it_accepted() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    for _ in 0..100 {
        let wire = a.protect(&udp(A, B, 5000, 0)).expect("a protects");
        assert!(b.receive(&wire).is_some());
    }
    let t0 = b.now;
    assert!(
        b.inb.tighten_ceilings(t0).is_empty(),
        "the first look has no rate"
    );
    let lowered = b.inb.tighten_ceilings(t0 + Duration::from_secs(2));
    assert_eq!(lowered.len(), 1, "{lowered:?}");
    assert_eq!(lowered[0].0, 0x1001);
    assert_eq!(lowered[0].2, 100, "idle: exactly the highest accepted");
    // The next packet is above the lowered gate: a new ceiling first, then delivered.
    let wire = a.protect(&udp(A, B, 5000, 0)).expect("a protects");
    let writes = b.disk.writes;
    assert!(b.receive(&wire).is_some());
    assert_eq!(b.disk.writes, writes + 1);
    assert_eq!(b.inb.settled(), vec![(0x1001, lowered[0].1, 101)]);
}

#[test]
fn a_fragmented_datagram_is_reassembled_and_encrypted_once() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let datagram = udp(A, B, 5000, 300);
    let pieces = fragments(&datagram, 128, 7);
    assert_eq!(pieces.len(), 3);
    // Out of order, with a duplicate: held until the datagram is whole.
    assert_eq!(a.send(&pieces[2]).0, OutAction::Held);
    assert_eq!(a.send(&pieces[0]).0, OutAction::Held);
    assert_eq!(a.send(&pieces[0]).0, OutAction::Held, "an exact duplicate");
    let (action, wire) = a.send(&pieces[1]);
    assert!(matches!(action, OutAction::Send(_)), "{action:?}");
    assert_eq!(
        a.stats.get(Stat::EncapOk),
        1,
        "one ESP packet for three fragments"
    );
    assert_eq!(a.stats.get(Stat::FragReassembled), 1);
    assert_eq!(a.stats.get(Stat::FragDuplicates), 1);
    assert_eq!(b.receive(&wire.expect("sent")), Some(datagram.clone()));
    // Overlapping fragments drop the whole datagram (RFC 5722): nothing leaves.
    let pieces = fragments(&datagram, 128, 8);
    let mut twice = pieces[0].clone();
    twice[40 + 8 + 20] ^= 0xff; // same offset, other bytes
    assert_eq!(a.send(&pieces[0]).0, OutAction::Held);
    assert_eq!(a.send(&twice).0, OutAction::Drop(Reason::FragOverlap));
    for piece in &pieces[1..] {
        assert!(
            !matches!(a.send(piece).0, OutAction::Send(_)),
            "a piece of a dropped datagram left"
        );
    }
    assert_eq!(a.stats.get(Stat::EncapOk), 1);
}

#[test]
fn sas_removed_or_rekeyed_drop_and_unchanged_ones_keep_their_state() {
    let spd = side(A, B);
    let mut a = Side::new(&spd);
    let mut b = Side::new(&side(B, A));
    for _ in 0..3 {
        let wire = a.protect(&udp(A, B, 1, 1)).expect("a protects");
        b.receive(&wire).expect("b delivers");
    }
    a.update(&spd);
    b.update(&side(B, A));
    let wire = a
        .protect(&udp(A, B, 1, 1))
        .expect("a protects after an update");
    assert_eq!(wire.seq(), 4, "sequence kept");
    b.receive(&wire).expect("b delivers");
    assert_eq!((a.sa(0).packets, b.sa(0).packets), (4, 4), "counters kept");
    let mut old = a.protect(&udp(A, B, 1, 1)).expect("a protects");
    old.esp[4..8].copy_from_slice(&3u32.to_be_bytes());
    assert_eq!(
        b.open(&old).0,
        InAction::Drop(Reason::Replay),
        "window kept"
    );

    // Removed: the flow cache forgets the SA at once (a new generation).
    a.update(&emptied(&spd));
    assert!(a.registry.is_empty());
    assert_eq!(a.send(&udp(A, B, 1, 1)).0, OutAction::Drop(Reason::NoSa));
    // Re-added with the same name and SPI: resumes after the persisted reservation.
    a.update(&spd);
    let wire = a.protect(&udp(A, B, 1, 1)).expect("a protects");
    assert!(wire.seq() > RESERVATION_STEP, "got {}", wire.seq());
    // Rekeyed: a new SA, new counters; the peer with the old key fails its ICV.
    a.update(&side_with(A, B, "aes128-cbc", "fedcba9876543210"));
    assert_eq!(a.sa(0).packets, 0);
    let wire = a.protect(&udp(A, B, 1, 1)).expect("a protects");
    // Same integrity key: authentic, but it decrypts to garbage; never delivered.
    assert!(matches!(b.open(&wire), (InAction::Drop(_), None)));
}

#[test]
fn af_xdp_frames_open_like_raw_socket_packets_and_bad_ones_are_counted() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let packet = udp(A, B, 5000, 100);
    let xsk_frame = |wire: &Wire| {
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        frame.extend_from_slice(&ipv6(A, B, 50, &wire.esp));
        frame.extend_from_slice(&[0xee; 6]); // Ethernet padding
        frame
    };
    let mut out = Vec::new();
    let mut open = |b: &mut Side, frame: &[u8]| loop {
        match b.inb.receive_frame(frame, b.now, &mut out) {
            InAction::Raise(raise) => b.inb.ceiling_written(&raise, true, b.now),
            action => return (action, out.clone()),
        }
    };
    let good = xsk_frame(&a.protect(&packet).expect("a protects"));
    let (action, delivered) = open(&mut b, &good);
    assert_eq!(action, InAction::Deliver);
    assert_eq!(delivered[14..], packet[..], "the padding is not delivered");

    let fresh = xsk_frame(&a.protect(&packet).expect("a protects"));
    let mut bad = vec![
        fresh[..14 + 40 + 7].to_vec(),      // cut inside the ESP header
        fresh[..fresh.len() - 30].to_vec(), // shorter than its payload length says
    ];
    let mut not_ipv6 = fresh.clone();
    not_ipv6[12..14].copy_from_slice(&[0x08, 0x00]);
    bad.push(not_ipv6);
    let mut not_esp = fresh.clone();
    not_esp[14 + 6] = 17;
    bad.push(not_esp);
    for (i, frame) in bad.iter().enumerate() {
        assert_eq!(
            open(&mut b, frame).0,
            InAction::Drop(Reason::Malformed),
            "frame {i}"
        );
    }
    // The intact frame still opens: nothing above consumed its sequence number.
    assert_eq!(open(&mut b, &fresh).0, InAction::Deliver);
    assert_eq!(open(&mut b, &fresh).0, InAction::Drop(Reason::Replay));
}

#[test]
fn esp_from_or_to_the_wrong_address_is_dropped_before_decryption() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let other = addr("fd00:ee::3");
    let packet = udp(A, B, 5000, 100);
    let wire = a.protect(&packet).expect("a protects");
    let mut spoofed = wire.clone();
    spoofed.outer.source = other;
    let mut elsewhere = wire.clone();
    elsewhere.outer.destination = other;
    let mut reflected = wire.clone();
    (reflected.outer.source, reflected.outer.destination) = (addr(B), addr(A));
    for w in [&spoofed, &elsewhere, &reflected] {
        assert_eq!(b.open(w).0, InAction::Drop(Reason::AddressMismatch));
    }
    assert_eq!(b.stats.get(Stat::DecapOk), 0, "nothing was decrypted");
    assert_eq!(b.receive(&wire), Some(packet), "the window did not move");
}

#[test]
fn tunnels_and_esp_inside_transport_mode_and_other_sas_flows_are_refused() {
    let mut a = Side::new(&side(A, B));
    let mut spd_b = side(B, A);
    spd_b
        .add_sa(&sa_args("other", A, B, "0x3001"))
        .expect("adding other");
    let mut port = sp_args("port6000", A, B, "in", "other");
    port.upper_layer_protocol = s("udp");
    port.destination_port = s("6000");
    spd_b.add_sp(&port).expect("adding the port sp");
    let mut b = Side::new(&spd_b);
    for protocol in [4u8, 41, 50, 51] {
        let mut packet = udp(A, B, 5000, 100);
        packet[6] = protocol;
        let wire = a.protect(&packet).expect("a protects any protocol");
        assert_eq!(
            b.open(&wire).0,
            InAction::Drop(Reason::InnerProtocolRefused)
        );
    }
    // Port 6000 belongs to SA `other`: arriving under a2b is a policy mismatch.
    let wire = a.protect(&udp(A, B, 6000, 10)).expect("a protects");
    assert_eq!(b.open(&wire).0, InAction::Drop(Reason::PolicyMismatch));
    assert_eq!(
        b.stats.get(Stat::DecapOk),
        5,
        "authentic, but not deliverable"
    );
    assert_eq!(b.stats.get(Stat::Delivered), 0);
    let wire = a.protect(&udp(A, B, 6001, 10)).expect("a protects");
    assert!(
        b.receive(&wire).is_some(),
        "udp to another port still delivered"
    );
}

#[test]
fn tdes_sas_stop_at_their_block_limit_both_ways() {
    let tdes = |local, peer| side_with(local, peer, "3des-cbc", "0123456789abcdefghijklmn");
    let packet = udp(A, B, 5000, 100);
    let per_packet = sa::Volume::blocks(packet.len());
    let mut a = Side::on(&tdes(A, B), Disk::default(), 3 * per_packet);
    let mut b = Side::new(&tdes(B, A));
    for i in 0..3 {
        let wire = a.protect(&packet).expect("a protects within the limit");
        assert!(b.receive(&wire).is_some(), "packet {i} delivered");
    }
    assert_eq!(a.send(&packet).0, OutAction::Drop(Reason::VolumeLimit));
    assert_eq!(
        a.send(&udp(A, B, 5000, 1)).0,
        OutAction::Drop(Reason::VolumeLimit)
    );

    // Inbound: forged packets do not use up the volume (charged after authentication).
    let mut a = Side::new(&tdes(A, B));
    let esp_len = 40 + a.protect(&packet).expect("a protects").esp.len();
    let mut b = Side::on(
        &tdes(B, A),
        Disk::default(),
        2 * sa::Volume::blocks(esp_len),
    );
    for _ in 0..10 {
        let mut forged = a.protect(&packet).expect("a protects");
        let last = forged.esp.len() - 1;
        forged.esp[last] ^= 1;
        assert_eq!(b.open(&forged).0, InAction::Drop(Reason::AuthFailed));
    }
    for _ in 0..2 {
        let wire = a.protect(&packet).expect("a protects");
        assert!(b.receive(&wire).is_some());
    }
    let wire = a.protect(&packet).expect("a protects");
    assert_eq!(b.open(&wire).0, InAction::Drop(Reason::VolumeLimit));
    // AES SAs are not limited by it.
    let mut a = Side::on(&side(A, B), Disk::default(), 1);
    assert!(a.protect(&packet).is_some());
}

/// Pairs of SPDs (sender a, receiver b) whose verdicts differ by specificity, priority and
/// direction; every selector covers hosts A and B (transport SAs bind those addresses). An SA
/// serves one direction: a sends under `s1`/`s2`, which b receives, and the reverse pair
/// `r1`/`r2` fills the other direction of each SPD.
fn classifier_spds() -> Vec<(Spd, Spd)> {
    // (name, whole /64 or hosts, protocol, destination port, directions, SA number or action)
    type Rule = (
        &'static str,
        bool,
        &'static str,
        &'static str,
        &'static [&'static str],
        &'static str,
    );
    const BOTH: &[&str] = &["out", "in"];
    let specific: &[Rule] = &[
        ("wide", true, "any", "any", BOTH, "1"),
        ("udp6000", false, "udp", "6000", BOTH, "2"),
        ("ssh", false, "tcp", "22", BOTH, "discard"),
        ("dns", false, "udp", "53", BOTH, "none"),
        ("udp5000", false, "udp", "5000", &["in"], "2"),
        ("tcp443", false, "tcp", "443", &["out"], "2"),
    ];
    // An explicit priority goes before every specificity.
    let first: Rule = ("first", false, "udp", "any", BOTH, "1");
    let no_wide: Vec<Rule> = specific.iter().copied().filter(|r| r.0 != "wide").collect();
    let spd = |rules: &[Rule], sender: bool| {
        let mut spd = Spd::new();
        for (name, spi) in [
            ("s1", "0x1001"),
            ("s2", "0x1002"),
            ("r1", "0x2001"),
            ("r2", "0x2002"),
        ] {
            spd.add_sa(&sa_args(name, A, B, spi)).expect("adding an sa");
        }
        for &(name, wide, protocol, port, directions, verdict) in rules {
            for &dir in directions {
                let sa = if (dir == "out") == sender { "s" } else { "r" };
                let mut args = sp_args(
                    &format!("{name}-{dir}"),
                    A,
                    B,
                    dir,
                    &format!("{sa}{verdict}"),
                );
                if wide {
                    args.sp_source = s("fd00:ee::/64");
                    args.sp_destination = s("fd00:ee::/64");
                }
                args.upper_layer_protocol = s(protocol);
                args.destination_port = s(port);
                if matches!(verdict, "discard" | "none") {
                    args.action = s(verdict);
                    args.sa_name = None;
                }
                if name == "first" {
                    args.priority = s("5");
                }
                spd.add_sp(&args).expect("adding an sp");
            }
        }
        spd
    };
    [specific.to_vec(), [specific, &[first]].concat(), no_wide]
        .iter()
        .map(|rules| (spd(rules, true), spd(rules, false)))
        .collect()
}

#[test]
fn the_engine_classifies_as_the_reference_does() {
    let spi_of = |spd: &Spd, sp: Option<&Sp>| {
        let sp = sp.filter(|sp| sp.action == Action::Ipsec)?;
        let name = sp.sa_name.as_deref()?;
        spd.sas().iter().find(|sa| sa.name == name).map(|sa| sa.spi)
    };
    let mut outcomes = HashSet::new();
    for (n, (spd_a, spd_b)) in classifier_spds().iter().enumerate() {
        let mut a = Side::new(spd_a);
        let mut b = Side::new(spd_b);
        for packet in [22, 53, 443, 5000, 6000, 7000]
            .into_iter()
            .flat_map(|port| [udp(A, B, port, 10), tcp(A, B, port, 10)])
        {
            let flow = flow_of(&[&FAKE_ETHERNET[..], &packet].concat()).expect("a flow");
            for spd in [spd_a, spd_b] {
                let compiled = classify::build(spd).expect("compiling the spd");
                for direction in [Direction::Out, Direction::In] {
                    assert_eq!(
                        compiled.classify(direction, &flow).map(|sp| sp.id),
                        spd.classify(direction, &flow).map(|sp| sp.id),
                        "spd {n}, {direction:?} {flow:?}"
                    );
                }
            }
            let out_spi = spi_of(spd_a, spd_a.classify(Direction::Out, &flow));
            let in_spi = spi_of(spd_b, spd_b.classify(Direction::In, &flow));
            let (action, wire) = a.send(&packet);
            let sent = wire.as_ref().map(Wire::spi);
            assert_eq!(sent, out_spi, "spd {n}, out {flow:?}: {action:?}");
            let Some(wire) = wire else {
                assert_eq!(
                    action,
                    OutAction::Drop(Reason::NoSa),
                    "spd {n}, out {flow:?}"
                );
                outcomes.insert(format!("{action:?}"));
                continue;
            };
            let expected = if in_spi == sent {
                InAction::Deliver
            } else {
                InAction::Drop(Reason::PolicyMismatch)
            };
            let (action, _) = b.open(&wire);
            assert_eq!(action, expected, "spd {n}, in {flow:?}");
            outcomes.insert(format!("{action:?}"));
        }
    }
    // Each outcome occurs, so each was compared.
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
}

/// The engine's outbound batch: packets framed one by one (`protect_deferred`), nothing
/// readable as ESP until `seal`, then all sealed together; every one arrives whole, and the
/// counters are `protect`'s. A frame that does not fit its buffer is reported and never sealed.
#[test]
fn a_deferred_batch_is_sealed_together_and_arrives_whole() {
    let mut a = Side::new(&side(A, B));
    let mut b = Side::new(&side(B, A));
    let packets: Vec<Vec<u8>> = (0..21)
        .map(|i| udp(A, B, 5000, [0, 1, 100, 1200, 1400][i % 5]))
        .collect();
    let mut slots: Vec<(Option<PendingSeal>, Vec<u8>)> = Vec::new();
    let mut actions = Vec::new();
    for packet in &packets {
        let mut frame = FAKE_ETHERNET.to_vec();
        frame.extend_from_slice(packet);
        let (mut pending, mut buf) = (None, Vec::new());
        actions.push(
            a.out
                .protect_deferred(&frame, a.now, &mut buf, &mut pending),
        );
        assert!(pending.is_some(), "a send leaves a seal pending");
        slots.push((pending, buf));
    }
    // Still clear: the UDP payload is readable in the framed buffer.
    let clear = &packets[3][48..];
    assert!(slots[3].1.windows(clear.len()).any(|w| w == clear));
    // Break one frame: its buffer no longer ends where its ICV should.
    slots[7].1.pop();
    let mut failed = Vec::new();
    a.out
        .seal(slots.iter_mut().map(|(p, buf)| (p, &mut buf[..])), |i| {
            failed.push(i);
        });
    assert_eq!(failed, vec![7]);
    assert_eq!(a.stats.get(Stat::EncapErrors), 1);
    assert!(
        slots.iter().all(|(p, _)| p.is_none()),
        "every seal is taken"
    );
    for (i, ((action, (_, buf)), packet)) in actions.iter().zip(&slots).zip(&packets).enumerate() {
        if i == 7 {
            continue;
        }
        let OutAction::Send(esp) = action else {
            panic!("packet {i} was not sent: {action:?}");
        };
        let wire = Wire::sent(esp, buf);
        assert_eq!(b.receive(&wire).as_deref(), Some(&packet[..]), "packet {i}");
    }
    assert_eq!(a.stats.get(Stat::EncapOk), 21);
}

/// The engine's inbound batch against `receive`, packet by packet, on one stream with
/// duplicates inside a batch, packets too old for the window, forgeries in the middle, ceiling
/// raises in the middle of a batch (written, confirmed, the packet handed in again) and an
/// update between batches: every action, delivered packet, counter and written ceiling agree.
#[test]
fn an_inbound_burst_gives_each_packet_the_outcome_of_receive() {
    let mut a = Side::new(&side(A, B));
    let sent: Vec<Wire> = (0..400)
        .map(|i| {
            a.protect(&udp(A, B, 5000, (i * 37) % 1300))
                .expect("a protects")
        })
        .collect();
    let mut stream = Vec::new();
    for (i, wire) in sent.iter().enumerate() {
        stream.push(wire.clone());
        match i % 11 {
            3 => stream.push(wire.clone()),
            5 => stream.push(sent[i.saturating_sub(90)].clone()),
            7 => {
                let mut forged = sent[(i + 2).min(sent.len() - 1)].clone();
                let at = 8 + (i * 13) % (forged.esp.len() - 8);
                forged.esp[at] ^= 0x40;
                stream.push(forged);
            }
            _ => {}
        }
    }
    for batch in [1, 2, 7, 32, 33, 128] {
        let mut one = Side::new(&side(B, A));
        let mut burst = Side::new(&side(B, A));
        for (round, chunk) in stream.chunks(batch).enumerate() {
            if round == 5 {
                // The same SPD again: the SAs keep their state.
                one.update(&side(B, A));
                burst.update(&side(B, A));
            }
            let packets: Vec<InPacket<'_>> = chunk
                .iter()
                .map(|w| InPacket {
                    outer: w.outer,
                    esp: &w.esp,
                    encap: None,
                })
                .collect();
            let mut prepared = vec![Prepared::default(); packets.len()];
            burst.inb.prepare_burst(&packets, &mut prepared);
            for (wire, (packet, prepared)) in chunk.iter().zip(packets.iter().zip(&prepared)) {
                let want = one.open(wire);
                let mut frame = Vec::new();
                let got = loop {
                    let action = burst
                        .inb
                        .receive_prepared(packet, prepared, burst.now, &mut frame);
                    let InAction::Raise(raise) = action else {
                        break action;
                    };
                    burst
                        .disk
                        .ceilings
                        .insert((raise.spi, raise.key_id), raise.up_to);
                    burst.inb.ceiling_written(&raise, true, burst.now);
                };
                assert_eq!(got, want.0, "batch {batch}, seq {}", wire.seq());
                if let Some(delivered) = want.1 {
                    assert_eq!(frame[14..], delivered[..]);
                }
            }
        }
        assert_eq!(
            burst.stats.snapshot(),
            one.stats.snapshot(),
            "batch {batch}"
        );
        assert_eq!(burst.disk.ceilings, one.disk.ceilings, "batch {batch}");
        assert!(one.stats.get(Stat::AuthFailures) > 0 && one.stats.get(Stat::ReplayDrops) > 0);
    }
}

/// A verdict is only good for the SA it was computed with: after the SA is re-keyed under the
/// same SPI between the burst's verification and the packet's turn, the packet is verified
/// again under the new keys (and refused), never accepted on the old verdict.
#[test]
fn a_verdict_does_not_outlive_a_rekey() {
    let mut a = Side::new(&side(A, B));
    let wire = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
    let mut b = Side::new(&side(B, A));
    let packet = InPacket {
        outer: wire.outer,
        esp: &wire.esp,
        encap: None,
    };
    let mut prepared = [Prepared::default()];
    b.inb.prepare_burst(&[packet], &mut prepared);
    let rekeyed = "fedcba9876543210fedcba9876543210";
    b.update(&side_keyed(B, A, "aes128-cbc", "0123456789abcdef", rekeyed));
    let mut frame = Vec::new();
    let action = b
        .inb
        .receive_prepared(&packet, &prepared[0], b.now, &mut frame);
    assert_eq!(action, InAction::Drop(Reason::AuthFailed));
}

/// A 20-byte aes128-gcm key: AES key, then the 4-byte salt.
const GCM_KEY: &str = "0123456789abcdefSALT";

/// The 8-byte explicit IV of a GCM ESP packet, as a number (`epoch << 32 | seq`).
fn gcm_iv(wire: &Wire) -> u64 {
    u64::from_be_bytes(wire.esp[8..16].try_into().expect("an 8-byte iv"))
}

/// The IVs of `count` packets `a` protects.
fn send_ivs(a: &mut Side, count: usize) -> Vec<u64> {
    (0..count)
        .map(|_| gcm_iv(&a.protect(&udp(A, B, 5000, 40)).expect("a gcm sa sends")))
        .collect()
}

/// RFC 4106 §8: the IVs a GCM key sends never repeat, and keep rising, across removing and
/// re-adding the SA (same name, then another name and SPI with the same key) and a restart
/// from the same disk; the peer opens every packet.
#[test]
fn gcm_ivs_never_repeat_across_readd_rename_and_restart() {
    let spd = side_with(A, B, "aes128-gcm", GCM_KEY);
    let mut a = Side::new(&spd);
    let mut b = Side::new(&side_with(B, A, "aes128-gcm", GCM_KEY));
    let mut ivs = Vec::new();
    for _ in 0..5 {
        let wire = a.protect(&udp(A, B, 5000, 40)).expect("a gcm sa sends");
        ivs.push(gcm_iv(&wire));
        assert!(b.receive(&wire).is_some(), "the peer opens gcm esp");
    }
    // Removed and re-added with the same name, SPI and key.
    a.update(&emptied(&spd));
    a.update(&spd);
    ivs.extend(send_ivs(&mut a, 2));
    // The same key under another name and SPI.
    let mut renamed = side_with(A, B, "aes128-gcm", GCM_KEY);
    renamed
        .remove_sp(&SpRemoveArgs {
            sp_name: None,
            remove_all: true,
        })
        .expect("removing sps");
    renamed
        .remove_sa(&SaRemoveArgs {
            sa_name: s("a2b"),
            ..SaRemoveArgs::default()
        })
        .expect("removing a2b");
    let mut args = sa_args("other", A, B, "0x3001");
    args.encryption_algorithm = s("aes128-gcm");
    args.encryption_key = s(GCM_KEY);
    args.integrity_algorithm = None;
    args.integrity_key = None;
    renamed.add_sa(&args).expect("adding the renamed sa");
    renamed
        .add_sp(&sp_args("out", A, B, "out", "other"))
        .expect("adding its sp");
    a.update(&renamed);
    ivs.extend(send_ivs(&mut a, 2));
    // A restart (kill -9: nothing saved at exit) from the same disk.
    let mut a = Side::on(&renamed, a.disk.clone(), DEFAULT_TDES_BLOCK_LIMIT);
    ivs.extend(send_ivs(&mut a, 2));
    assert_eq!(ivs.len(), 11);
    assert!(
        ivs.windows(2).all(|w| w[0] < w[1]),
        "ivs rise and never repeat: {ivs:x?}"
    );
    // The high 32 bits of an IV are its epoch: a new one at each keying of the key.
    let epochs: Vec<u64> = ivs.iter().map(|iv| iv >> 32).collect();
    assert_eq!(epochs, [1, 1, 1, 1, 1, 2, 2, 3, 3, 4, 4]);
}

/// An SA kept across an update keeps its epoch; each key counts its own epochs.
#[test]
fn kept_gcm_sas_keep_their_epoch_and_each_key_counts_its_own() {
    let mut spd = side_with(A, B, "aes128-gcm", GCM_KEY);
    let mut a = Side::new(&spd);
    let epochs =
        |side: &Side| -> Vec<u32> { side.out.sas.iter().map(|e| e.sa.iv_epoch()).collect() };
    // a2b and b2a have different keys: epoch 1 each.
    assert_eq!(epochs(&a), [1, 1]);
    let mut args = sa_args("third", A, B, "0x4001");
    args.encryption_algorithm = s("aes128-gcm");
    args.encryption_key = s("another-aes-key!SALT");
    args.integrity_algorithm = None;
    args.integrity_key = None;
    spd.add_sa(&args).expect("adding a third sa");
    a.update(&spd);
    assert_eq!(
        epochs(&a),
        [1, 1, 1],
        "kept sas keep theirs, a new key starts at 1"
    );
    a.update(&emptied(&spd));
    a.update(&spd);
    assert_eq!(
        epochs(&a),
        [2, 2, 2],
        "re-added: the next epoch of each key"
    );
}

/// Fail closed: a GCM SA whose epoch cannot be written sends nothing; a key whose epochs are
/// all used cannot be keyed.
#[test]
fn gcm_sa_sends_only_once_its_epoch_is_on_disk_and_refuses_a_spent_key() {
    let spd = side_with(A, B, "aes128-gcm", GCM_KEY);
    let mut failing = Disk {
        failing: true,
        ..Disk::default()
    };
    let mut a = Side::on(&spd, failing.clone(), DEFAULT_TDES_BLOCK_LIMIT);
    let (action, wire) = a.send(&udp(A, B, 5000, 40));
    assert_eq!(action, OutAction::Drop(Reason::SeqNotReserved));
    assert!(wire.is_none());
    assert!(a.disk.seq.is_empty(), "nothing was written");

    let entry = SaIdentity::of(&spd.sas()[0])
        .iv_entry()
        .expect("a gcm entry");
    failing.failing = false;
    failing
        .seq
        .insert((entry, crate::engine::seq::IV_EPOCH_SPI), u32::MAX);
    let stats = Arc::new(EngineStats::default());
    let (mut out, mut inb) = tables(DEFAULT_TDES_BLOCK_LIMIT, &stats);
    let refused = rebuild(
        &spd,
        classify::build(&spd).expect("compiling the spd"),
        &mut out,
        &mut inb,
        &failing,
    )
    .err()
    .expect("a spent key is refused");
    assert!(
        matches!(refused.source, ConfigError::IvExhausted { .. }),
        "{refused}"
    );
    assert!(out.sas.is_empty(), "nothing changed");
}
