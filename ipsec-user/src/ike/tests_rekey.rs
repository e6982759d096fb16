//! Two endpoints in memory with a clock the tests drive: lifetimes (rekeys by themselves,
//! expiry, dead peer detection), the IKE SA rekey, simultaneous rekeys (§2.8.1, §2.8.2), the
//! §2.25 crossings, and the COOKIE flood.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::dh::DH_OPERATIONS;
use super::message::{ExchangeType, Message};
use super::tests::{A, B, PSK, assert_matching_children, children, failures, ip, peer};
use super::*;

/// Two endpoints and the datagrams in flight between them, each way in order.
struct Net {
    a: Ike,
    b: Ike,
    ea: Vec<Event>,
    eb: Vec<Event>,
    to_a: VecDeque<Datagram>,
    to_b: VecDeque<Datagram>,
    /// Everything in flight is lost (a dead or cut-off peer).
    cut: bool,
    /// What each side sends on and receives on, as the daemon installs the events.
    wire_a: Installed,
    wire_b: Installed,
    /// Moments a side sent on an SPI the other did not receive on (see [`Installed`]).
    gaps: Vec<String>,
}

/// One side's CHILD_SAs as the daemon installs them (`model::spd::ike`'s rule): ESP arrives on
/// any installed inbound SPI; ESP is sent on the outbound SPI of the newest CHILD_SA allowed to
/// send ([`SendFrom::Now`], or `AfterRekeyed` once the CHILD_SA it rekeys is deleted).
#[derive(Default)]
struct Installed {
    /// (inbound SPI, outbound SPI, may send, the inbound SPI of the CHILD_SA it waits for).
    children: Vec<(u32, u32, bool, Option<u32>)>,
}

impl Installed {
    fn apply(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::ChildSaEstablished(c) => {
                    let (now, waits) = match c.send_from {
                        SendFrom::Now => (true, None),
                        SendFrom::AfterRekeyed => (false, c.rekeys),
                        SendFrom::Never => (false, None),
                    };
                    self.children
                        .push((c.inbound_spi, c.outbound_spi, now, waits));
                }
                Event::ChildSaDeleted { inbound_spi, .. } => {
                    self.children.retain(|c| c.0 != *inbound_spi);
                    let present: Vec<u32> = self.children.iter().map(|c| c.0).collect();
                    for c in &mut self.children {
                        if c.3.is_some_and(|old| !present.contains(&old)) {
                            (c.2, c.3) = (true, None);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn sends_on(&self) -> Option<u32> {
        self.children.iter().rev().find(|c| c.2).map(|c| c.1)
    }

    fn receives_on(&self, spi: u32) -> bool {
        self.children.iter().any(|c| c.0 == spi)
    }
}

fn lifetimes(child: u64, ike: u64, margin: u64, dpd: Option<u64>) -> Lifetimes {
    Lifetimes {
        ike_lifetime: Duration::from_secs(ike),
        child_lifetime: Duration::from_secs(child),
        rekey_margin: Duration::from_secs(margin),
        dpd: dpd.map(Duration::from_secs),
    }
}

impl Net {
    /// a and b with `lifetimes` on both sides, established (a initiated) at `now`.
    fn established(lifetimes: Lifetimes, settings: &Settings, now: Instant) -> Self {
        let mut a = Ike::new(settings.clone());
        let mut b = Ike::new(settings.clone());
        let ike = "aes128-sha256-x25519";
        let mut pa = peer("b", A, B, ike, "aes128gcm16", PSK);
        let mut pb = peer("a", B, A, ike, "aes128gcm16", PSK);
        pa.lifetimes = lifetimes;
        pb.lifetimes = lifetimes;
        a.add_peer(pa).expect("peer b");
        b.add_peer(pb).expect("peer a");
        let mut net = Self {
            a,
            b,
            ea: Vec::new(),
            eb: Vec::new(),
            to_a: VecDeque::new(),
            to_b: VecDeque::new(),
            cut: false,
            wire_a: Installed::default(),
            wire_b: Installed::default(),
            gaps: Vec::new(),
        };
        let first = net.a.initiate("b", now).expect("initiating");
        net.take(true, first);
        net.settle(now);
        assert_matching_children(&net.ea, &net.eb);
        net
    }

    /// One side's output: datagrams in flight, events recorded.
    fn take(&mut self, from_a: bool, out: Output) {
        for d in out.datagrams {
            if d.remote.ip() == ip(B) {
                self.to_b.push_back(d);
            } else {
                self.to_a.push_back(d);
            }
        }
        if from_a {
            self.wire_a.apply(&out.events);
            self.ea.extend(out.events);
        } else {
            self.wire_b.apply(&out.events);
            self.eb.extend(out.events);
        }
        // The daemon acts on the events before it sends the datagrams, so the peer's state is
        // as of now: what each side sends on must be something the other receives on, once the
        // other has a CHILD_SA at all (the first one's responder sends before its initiator
        // read the answer: nothing could arrive before it anyway).
        for (name, from, to) in [
            ("a", &self.wire_a, &self.wire_b),
            ("b", &self.wire_b, &self.wire_a),
        ] {
            if let Some(spi) = from.sends_on()
                && !to.children.is_empty()
                && !to.receives_on(spi)
            {
                self.gaps.push(format!(
                    "{name} sends on {spi:#010x}, which the peer does not receive on"
                ));
            }
        }
    }

    /// Delivers the oldest datagram towards b (or a); false when none is in flight.
    fn deliver(&mut self, to_b: bool, now: Instant) -> bool {
        let queue = if to_b { &mut self.to_b } else { &mut self.to_a };
        let Some(d) = queue.pop_front() else {
            return false;
        };
        if self.cut {
            return true;
        }
        let target = if to_b { &mut self.b } else { &mut self.a };
        let out = target.receive(d.remote, d.local, &d.bytes, now);
        self.take(!to_b, out);
        true
    }

    /// Delivers everything in flight, alternating directions, until quiet.
    fn settle(&mut self, now: Instant) {
        for _ in 0..1000 {
            let to_b = self.deliver(true, now);
            let to_a = self.deliver(false, now);
            if !to_b && !to_a {
                return;
            }
        }
        panic!("the endpoints never go quiet");
    }

    /// Runs both clocks to `end`: each due `on_timeout`, then what it sent delivered at once.
    fn run_until(&mut self, end: Instant) {
        let mut last = None;
        let mut repeats = 0;
        loop {
            let due = [self.a.next_deadline(), self.b.next_deadline()]
                .into_iter()
                .flatten()
                .min();
            let Some(now) = due.filter(|d| *d <= end) else {
                return;
            };
            // A timer that stays due after on_timeout ran would spin forever: fail instead.
            repeats = if last == Some(now) { repeats + 1 } else { 0 };
            assert!(
                repeats < 100,
                "a timer stays due at {now:?}: on_timeout ignores it"
            );
            last = Some(now);
            let out = self.a.on_timeout(now);
            self.take(true, out);
            let out = self.b.on_timeout(now);
            self.take(false, out);
            self.settle(now);
        }
    }
}

fn rekeyed_children(events: &[Event]) -> usize {
    children(events)
        .iter()
        .filter(|c| c.rekeys.is_some())
        .count()
}

type Spis = ([u8; 8], [u8; 8]);

/// What `pick` takes from each event it matches.
fn picked<T>(events: &[Event], pick: impl Fn(&Event) -> Option<T>) -> Vec<T> {
    events.iter().filter_map(pick).collect()
}

fn ike_rekeys(events: &[Event]) -> Vec<(Spis, Spis)> {
    picked(events, |e| match e {
        Event::IkeSaRekeyed {
            old_spis, new_spis, ..
        } => Some((*old_spis, *new_spis)),
        _ => None,
    })
}

/// The collisions a side reported: (the IKE SA collided, its own exchange survived).
fn collisions(events: &[Event]) -> Vec<(bool, bool)> {
    picked(events, |e| match e {
        Event::RekeyCollision {
            ike, ours_survives, ..
        } => Some((*ike, *ours_survives)),
        _ => None,
    })
}

fn deleted_children(events: &[Event]) -> Vec<u32> {
    picked(events, |e| match e {
        Event::ChildSaDeleted { inbound_spi, .. } => Some(*inbound_spi),
        _ => None,
    })
}

/// Both sides: one established, non-quiet IKE SA with the same SPIs, and its CHILD_SAs
/// crossed; returns a's (inbound, outbound) pairs.
fn assert_one_ike_sa_each(net: &Net) -> Vec<(u32, u32)> {
    let live = |ike: &Ike| -> Vec<IkeSaInfo> {
        ike.ike_sas()
            .into_iter()
            .filter(|s| s.state == SaState::Established)
            .collect()
    };
    let (sa, sb) = (live(&net.a), live(&net.b));
    assert_eq!((sa.len(), sb.len()), (1, 1), "a: {sa:?}\nb: {sb:?}");
    assert_eq!((sa[0].spi_i, sa[0].spi_r), (sb[0].spi_i, sb[0].spi_r));
    let crossed: Vec<(u32, u32)> = sb[0].children.iter().map(|&(i, o)| (o, i)).collect();
    assert_eq!(sa[0].children, crossed);
    sa[0].children.clone()
}

/// Make before break: every CHILD_SA deleted on a side had a successor installed before.
fn assert_no_gap(events: &[Event]) {
    let mut live = 0usize;
    for e in events {
        match e {
            Event::ChildSaEstablished(_) => live += 1,
            Event::ChildSaDeleted { .. } => {
                live -= 1;
                assert!(live >= 1, "a moment without a child sa: {events:?}");
            }
            _ => {}
        }
    }
}

#[test]
fn lifetimes_rekey_both_sas_by_themselves_before_they_end() {
    let start = Instant::now();
    let mut net = Net::established(lifetimes(10, 30, 3, None), &Settings::default(), start);
    // The first CHILD_SA rekey comes `margin` plus at most a tenth of it before the lifetime.
    net.run_until(start + Duration::from_millis(6600));
    assert_eq!(rekeyed_children(&net.ea) + rekeyed_children(&net.eb), 0);
    net.run_until(start + Duration::from_secs(7));
    assert_eq!(
        rekeyed_children(&net.ea),
        1,
        "one rekey between 6.7 s and 7 s"
    );
    net.run_until(start + Duration::from_secs(65));
    assert!(failures(&net.ea).is_empty() && failures(&net.eb).is_empty());
    // About every 7 s for the CHILD_SA, every ~27 s for the IKE SA, whoever started them.
    let child_rekeys = rekeyed_children(&net.ea);
    assert!((8..=10).contains(&child_rekeys), "{child_rekeys}");
    assert_eq!(rekeyed_children(&net.eb), child_rekeys);
    let (ra, rb) = (ike_rekeys(&net.ea), ike_rekeys(&net.eb));
    assert_eq!(ra.len(), 2, "{ra:?}");
    assert_eq!(ra, rb);
    assert_eq!(
        ra[0].1, ra[1].0,
        "the second rekey starts from the first one's sa"
    );
    let now = assert_one_ike_sa_each(&net);
    assert_eq!(now.len(), 1);
    assert_eq!(net.a.ike_sas().len(), 1, "the old ike sas are gone");
    assert_eq!(net.b.ike_sas().len(), 1, "the old ike sas are gone");
    assert_no_gap(&net.ea);
    assert_no_gap(&net.eb);
    assert!(net.gaps.is_empty(), "{:?}", net.gaps);
    assert!(
        !net.ea
            .iter()
            .chain(&net.eb)
            .any(|e| matches!(e, Event::IkeSaDeleted { .. }))
    );
}

#[test]
fn sas_that_reach_their_lifetime_unrekeyed_are_deleted() {
    let start = Instant::now();
    let mut net = Net::established(lifetimes(10, 30, 3, None), &Settings::default(), start);
    let (child, _) = assert_one_ike_sa_each(&net)[0];
    net.cut = true;
    net.run_until(start + Duration::from_millis(9999));
    assert!(deleted_children(&net.ea).is_empty());
    net.run_until(start + Duration::from_secs(10));
    assert_eq!(deleted_children(&net.ea), [child], "{:?}", net.ea);
    net.run_until(start + Duration::from_millis(29999));
    assert!(
        !net.ea
            .iter()
            .any(|e| matches!(e, Event::IkeSaDeleted { .. }))
    );
    net.run_until(start + Duration::from_secs(30));
    assert!(
        matches!(net.ea.last(), Some(Event::IkeSaDeleted { .. })),
        "{:?}",
        net.ea
    );
    assert!(net.a.ike_sas().is_empty() && net.b.ike_sas().is_empty());
    // Unanswered rekeys ran into the lifetimes, not into a retransmission timeout.
    assert!(failures(&net.ea).is_empty(), "{:?}", net.ea);
}

#[test]
fn dead_peer_detection_declares_a_silent_peer_dead() {
    let start = Instant::now();
    let settings = Settings {
        retransmit_tries: 2,
        ..Settings::default()
    };
    let mut net = Net::established(lifetimes(3600, 14400, 540, Some(5)), &settings, start);
    let (child, _) = assert_one_ike_sa_each(&net)[0];
    // An answering peer stays alive through many checks.
    net.run_until(start + Duration::from_mins(1));
    assert!(failures(&net.ea).is_empty() && failures(&net.eb).is_empty());
    // ESP seen from the peer postpones the check.
    let now = start + Duration::from_mins(1);
    net.a.note_inbound_esp(child, now + Duration::from_secs(4));
    assert!(net.a.next_deadline() >= Some(now + Duration::from_secs(9)));
    // Then the peer goes silent: dead after dpd + 1 + 2 + 4 s of retransmissions.
    net.cut = true;
    let quiet_from = now + Duration::from_secs(4);
    net.run_until(quiet_from + Duration::from_millis(11_999));
    assert!(failures(&net.ea).is_empty(), "{:?}", net.ea);
    net.run_until(quiet_from + Duration::from_secs(13));
    assert_eq!(failures(&net.ea), [&Failure::Timeout(2)]);
    let tail: Vec<&Event> = net.ea.iter().rev().take(2).collect();
    assert!(
        matches!(tail[..], [Event::IkeSaDeleted { .. }, Event::ChildSaDeleted { inbound_spi, .. }] if *inbound_spi == child),
        "{tail:?}"
    );
    assert!(net.a.ike_sas().is_empty());
}

#[test]
fn ike_sa_rekey_moves_the_children_and_restarts_message_ids() {
    let start = Instant::now();
    let mut net = Net::established(Lifetimes::default(), &Settings::default(), start);
    let before = assert_one_ike_sa_each(&net);
    let old = net.a.ike_sas()[0].clone();
    for (round, by_a) in [true, false].into_iter().enumerate() {
        let out = if by_a {
            net.a.rekey_ike_sa("b", start).expect("rekeying")
        } else {
            net.b.rekey_ike_sa("a", start).expect("rekeying")
        };
        net.take(by_a, out);
        net.settle(start);
        let (ra, rb) = (ike_rekeys(&net.ea), ike_rekeys(&net.eb));
        assert_eq!(ra.len(), round + 1);
        assert_eq!(ra, rb);
        // The CHILD_SAs stay as they were: same SPIs, nothing deleted or re-established.
        assert_eq!(assert_one_ike_sa_each(&net), before);
        assert_eq!(net.a.ike_sas().len(), 1, "the old sa is deleted");
        assert!(deleted_children(&net.ea).is_empty() && deleted_children(&net.eb).is_empty());
        assert_eq!(children(&net.ea).len(), 1);
        // The rekey's initiator is the new SA's original initiator.
        assert_eq!(net.a.ike_sas()[0].initiator, by_a);
    }
    let new = net.a.ike_sas()[0].clone();
    assert_ne!((new.spi_i, new.spi_r), (old.spi_i, old.spi_r));
    // Message IDs restart at 0 on the new SA, and its SK_d keys the next CHILD_SA on both sides.
    let out = net.a.rekey_child_sa(before[0].0, start).expect("rekeying");
    let id = Message::parse(&out.datagrams[0].bytes)
        .expect("parsing")
        .header
        .message_id;
    assert_eq!(id, 0);
    let (ea, eb) = (net.ea.len(), net.eb.len());
    net.take(true, out);
    net.settle(start);
    assert_matching_children(&net.ea[ea..], &net.eb[eb..]);
    assert!(net.gaps.is_empty(), "{:?}", net.gaps);
}

/// Both sides rekey the same CHILD_SA at the same moment, the requests crossing: the exchange
/// with the lowest nonce loses, on both sides alike, and the survivor is never interrupted.
#[test]
fn simultaneous_child_rekeys_leave_the_winners_child_on_both_sides() {
    let start = Instant::now();
    let mut winners = [0, 0];
    for _ in 0..24 {
        let mut net = Net::established(Lifetimes::default(), &Settings::default(), start);
        let (old_a, old_b) = assert_one_ike_sa_each(&net)[0];
        let out = net.a.rekey_child_sa(old_a, start).expect("a rekeys");
        net.take(true, out);
        let out = net.b.rekey_child_sa(old_b, start).expect("b rekeys");
        net.take(false, out);
        // The requests cross: each side answers the other's while its own is outstanding.
        assert!(net.deliver(true, start) && net.deliver(false, start));
        let offer = |ike: &Ike| {
            let sa = ike.sas.values().next().expect("the sa");
            let collision = sa.child_collisions.first().expect("a collision noted");
            (sa.rekey[0].spi, collision.lowest.clone())
        };
        let ((spi_a, lowest_of_b), (spi_b, lowest_of_a)) = (offer(&net.a), offer(&net.b));
        net.settle(start);
        let survivor = assert_one_ike_sa_each(&net);
        assert_eq!(survivor.len(), 1, "{:?}\n{:?}", net.ea, net.eb);
        // §2.8.1: the exchange whose lowest nonce is the lowest of the four made the loser.
        let a_wins = lowest_of_a > lowest_of_b;
        let expected = if a_wins { spi_a } else { survivor[0].0 };
        assert_eq!(survivor[0].0, expected);
        if !a_wins {
            assert_eq!(survivor[0].1, spi_b);
        }
        winners[usize::from(a_wins)] += 1;
        assert_eq!(collisions(&net.ea), [(false, a_wins)]);
        assert_eq!(collisions(&net.eb), [(false, !a_wins)]);
        assert!(net.gaps.is_empty(), "{:?}", net.gaps);
        // The loser's own new CHILD_SA never carries ESP; the answered ones wait.
        let sends: Vec<SendFrom> = children(if a_wins { &net.eb } else { &net.ea })
            .iter()
            .map(|c| c.send_from)
            .collect();
        assert_eq!(
            sends,
            [SendFrom::Now, SendFrom::AfterRekeyed, SendFrom::Never]
        );
        for events in [&net.ea, &net.eb] {
            assert_no_gap(events);
            assert_eq!(rekeyed_children(events), 2, "both new ones were installed");
            assert!(failures(events).is_empty(), "{events:?}");
        }
        let gone_a = deleted_children(&net.ea);
        assert!(gone_a.contains(&old_a) && !gone_a.contains(&survivor[0].0));
        let gone_b = deleted_children(&net.eb);
        assert!(gone_b.contains(&old_b) && !gone_b.contains(&survivor[0].1));
    }
    // Random nonces: each side's exchange won some of the runs (the role decides nothing).
    assert!(winners[0] > 0 && winners[1] > 0, "{winners:?}");
}

/// Both sides, established at `start`, rekey the IKE SA at once and each request reaches the
/// other before any answer; the CHILD_SAs before.
fn crossed_ike_rekeys(start: Instant) -> (Net, Vec<(u32, u32)>) {
    let mut net = Net::established(Lifetimes::default(), &Settings::default(), start);
    let before = assert_one_ike_sa_each(&net);
    let out = net.a.rekey_ike_sa("b", start).expect("a rekeys");
    net.take(true, out);
    let out = net.b.rekey_ike_sa("a", start).expect("b rekeys");
    net.take(false, out);
    assert!(net.deliver(true, start) && net.deliver(false, start));
    (net, before)
}

#[test]
fn simultaneous_ike_sa_rekeys_leave_one_new_ike_sa_with_the_children() {
    let start = Instant::now();
    let mut winners = [0, 0];
    for _ in 0..16 {
        let (mut net, before) = crossed_ike_rekeys(start);
        let noted = |ike: &Ike| {
            let sa = ike
                .sas
                .values()
                .find(|sa| sa.ike_rekey.is_some())
                .expect("the old sa with our offer");
            let collision = sa.ike_collision.as_ref().expect("a collision noted");
            (
                sa.ike_rekey.as_ref().expect("offer").spi,
                collision.lowest.clone(),
            )
        };
        let ((spi_a, lowest_of_b), (spi_b, lowest_of_a)) = (noted(&net.a), noted(&net.b));
        net.settle(start);
        assert_eq!(assert_one_ike_sa_each(&net), before, "the children moved");
        assert_eq!(net.a.ike_sas().len(), 1, "{:?}", net.a.ike_sas());
        assert_eq!(net.b.ike_sas().len(), 1, "{:?}", net.b.ike_sas());
        let survivor = net.a.ike_sas()[0].spi_i;
        let a_wins = lowest_of_a > lowest_of_b;
        assert_eq!(survivor, if a_wins { spi_a } else { spi_b });
        assert_eq!(net.a.ike_sas()[0].initiator, a_wins);
        winners[usize::from(a_wins)] += 1;
        assert_eq!(collisions(&net.ea), [(true, a_wins)]);
        assert_eq!(collisions(&net.eb), [(true, !a_wins)]);
        let (ra, rb) = (ike_rekeys(&net.ea), ike_rekeys(&net.eb));
        assert_eq!(ra, rb);
        assert_eq!(ra.len(), 1, "{ra:?}");
        assert_eq!(ra[0].1.0, survivor);
        for events in [&net.ea, &net.eb] {
            assert!(deleted_children(events).is_empty(), "{events:?}");
            assert!(failures(events).is_empty(), "{events:?}");
            assert!(
                !events
                    .iter()
                    .any(|e| matches!(e, Event::IkeSaDeleted { .. }))
            );
        }
    }
    assert!(winners[0] > 0 && winners[1] > 0, "{winners:?}");
}

/// A simultaneous IKE SA rekey where the winner's Delete of the old SA overtakes the loser's
/// answer (lost here): the loser adopts the winner's SA when the Delete comes, and both log the
/// collision; the loser's redundant SA, never completed on its side, stays unused at the
/// winner (`retiring`) until it expires.
#[test]
fn an_old_ike_sa_deleted_before_the_losers_answer_still_settles_the_collision() {
    let start = Instant::now();
    for _ in 0..8 {
        let (mut net, before) = crossed_ike_rekeys(start);
        let lowest = |ike: &Ike| {
            let sa = ike.sas.values().find(|sa| sa.ike_collision.is_some());
            sa.and_then(|sa| sa.ike_collision.as_ref())
                .expect("a collision noted")
                .lowest
                .clone()
        };
        // Each side noted the peer's exchange's lowest nonce.
        let a_wins = lowest(&net.b) > lowest(&net.a);
        // The winner reads its answer and deletes the old SA; the loser's answer is lost.
        assert!(net.deliver(!a_wins, start));
        let lost = if a_wins {
            net.to_b.pop_front()
        } else {
            net.to_a.pop_front()
        };
        assert!(lost.is_some(), "the loser's answer was in flight");
        net.settle(start);
        assert_eq!(collisions(&net.ea), [(true, a_wins)], "{:?}", net.ea);
        assert_eq!(collisions(&net.eb), [(true, !a_wins)], "{:?}", net.eb);
        let winner = if a_wins { &net.a } else { &net.b };
        let retiring: Vec<bool> = winner.ike_sas().iter().map(|s| s.retiring).collect();
        assert_eq!(retiring.iter().filter(|r| **r).count(), 1, "{retiring:?}");
        // Past the retransmission span (64 s by default) the redundant SA is gone; the
        // children never moved.
        net.run_until(start + Duration::from_mins(2));
        assert_eq!(assert_one_ike_sa_each(&net), before);
        assert_eq!((net.a.ike_sas().len(), net.b.ike_sas().len()), (1, 1));
        assert!(net.gaps.is_empty(), "{:?}", net.gaps);
        for events in [&net.ea, &net.eb] {
            assert!(deleted_children(events).is_empty(), "{events:?}");
            assert!(failures(events).is_empty(), "{events:?}");
        }
    }
}

/// §2.25.1: a Delete crossing a rekey of the same CHILD_SA. The deleting side answers the
/// rekey TEMPORARY_FAILURE (still closing) or CHILD_SA_NOT_FOUND (closed): either way the
/// CHILD_SA is gone on both sides, nothing is logged as a failure, and nothing is retried.
#[test]
fn a_delete_crossing_a_rekey_ends_with_the_child_gone() {
    let start = Instant::now();
    for closed_first in [false, true] {
        let mut net = Net::established(Lifetimes::default(), &Settings::default(), start);
        let (child_a, child_b) = assert_one_ike_sa_each(&net)[0];
        let out = net.a.delete_child_sa(child_a, start).expect("a deletes");
        net.take(true, out);
        if closed_first {
            // a's Delete is answered before b's rekey reaches a: CHILD_SA_NOT_FOUND.
            net.settle(start);
            assert_eq!(deleted_children(&net.eb), [child_b]);
            // b still thinks it has the CHILD_SA (say its Delete answer was late): simulate by
            // asking b to rekey one a no longer knows.
            let sa = net.b.sas.values_mut().next().expect("b's sa");
            sa.children.push(sa::Child::new(
                child_b,
                child_a,
                &Lifetimes::default(),
                start,
            ));
        }
        let out = net.b.rekey_child_sa(child_b, start).expect("b rekeys");
        net.take(false, out);
        net.settle(start);
        assert!(failures(&net.ea).is_empty() && failures(&net.eb).is_empty());
        for ike in [&net.a, &net.b] {
            assert!(ike.ike_sas()[0].children.is_empty(), "{:?}", ike.ike_sas());
        }
        assert!(children(&net.eb).len() == 1, "no new child: {:?}", net.eb);
        assert_eq!(deleted_children(&net.eb).last(), Some(&child_b));
        // Nothing left to retry: the next timer is only the liveness check.
        let dpd = Lifetimes::default().dpd.expect("dpd");
        assert_eq!(net.b.next_deadline(), Some(start + dpd));
    }
}

#[test]
fn a_rekey_refused_with_temporary_failure_is_retried_later() {
    let start = Instant::now();
    let mut net = Net::established(lifetimes(20, 3600, 5, None), &Settings::default(), start);
    let (_, child_b) = assert_one_ike_sa_each(&net)[0];
    // a rekeys the IKE SA; b's CHILD_SA rekey crosses it: each refuses the other's (§2.25.2).
    let out = net.a.rekey_ike_sa("b", start).expect("a rekeys");
    net.take(true, out);
    let out = net.b.rekey_child_sa(child_b, start).expect("b rekeys");
    net.take(false, out);
    net.settle(start);
    assert!(failures(&net.ea).is_empty() && failures(&net.eb).is_empty());
    assert_eq!(ike_rekeys(&net.ea).len(), 0);
    assert_eq!(rekeyed_children(&net.eb), 0);
    // Both retry after a short random delay (1 to 4 s) and then succeed, one after the other.
    net.run_until(start + Duration::from_secs(10));
    assert_eq!(ike_rekeys(&net.ea).len(), 1, "{:?}", net.ea);
    assert_eq!(rekeyed_children(&net.eb), 1, "{:?}", net.eb);
    assert_eq!(assert_one_ike_sa_each(&net).len(), 1);
}

/// A flood of IKE_SA_INIT: from unknown addresses it costs no state, no answer and no DH;
/// spoofed from a configured peer's address it fills the half-open bound, then only cookies go
/// out; the real peer still gets in through the cookie exchange, even across a secret rotation.
#[test]
fn an_ike_sa_init_flood_stays_bounded_and_the_peer_still_gets_in() {
    let start = Instant::now();
    let settings = Settings::default();
    let (mut a, mut b) = super::tests::pair(
        "aes128-sha256-x25519",
        "aes128-sha256-x25519",
        "aes128gcm16",
        "aes128gcm16",
    );
    let template = a.initiate("b", start).expect("a template request");
    let bytes = template.datagrams[0].bytes.clone();
    let to: SocketAddr = format!("[{B}]:500").parse().expect("b's address");
    let mut a = Ike::new(settings.clone());
    a.add_peer(peer("b", A, B, "aes128-sha256-x25519", "aes128gcm16", PSK))
        .expect("peer b");
    let dh = || DH_OPERATIONS.with(std::cell::Cell::get);
    let entries = b.stored_entries();
    let cookies = std::cell::Cell::new(0);
    let flood = |b: &mut Ike, from: SocketAddr, n: u32| {
        let mut request = bytes.clone();
        request[..4].copy_from_slice(&n.to_be_bytes());
        request[4] = 0x5a;
        let out = b.receive(to, from, &request, start);
        for e in &out.events {
            if matches!(e, Event::CookieSent { .. }) {
                cookies.set(cookies.get() + 1);
            }
        }
        out.datagrams.len()
    };
    // 50,000 from distinct unknown addresses: dropped unanswered, no DH, nothing stored.
    let before = dh();
    let mut answered = 0;
    for n in 0..50_000u32 {
        let from = SocketAddr::new(
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(
                0xfd00,
                0xf100,
                0,
                0,
                0,
                0,
                u16::try_from(n >> 16).expect("small"),
                u16::try_from(n & 0xffff).expect("small"),
            )),
            500,
        );
        answered += flood(&mut b, from, n);
    }
    assert_eq!((answered, dh() - before), (0, 0));
    assert_eq!(b.stored_entries(), entries);
    // 50,000 spoofed from a's address, each from another port and SPI: the bound fills, then
    // cookies only.
    let before = dh();
    for n in 0..50_000u32 {
        let port = u16::try_from(1024 + n % 60_000).expect("a port");
        let from = SocketAddr::new(ip(A), port);
        assert_eq!(flood(&mut b, from, 1_000_000 + n), 1);
    }
    assert!(b.half_open_count() <= settings.half_open_limit);
    assert_eq!(cookies.get(), 50_000 - settings.half_open_limit);
    // Two DH operations (key pair, agreement) per half-open SA, none for the cookies.
    assert_eq!(dh() - before, 2 * settings.half_open_limit);
    assert!(b.stored_entries() <= entries + 2 * settings.half_open_limit);
    // Over the bound, unknown addresses still cost no DH.
    let before = dh();
    let stranger = SocketAddr::new(ip("fd00:f100::1"), 500);
    assert_eq!(flood(&mut b, stranger, 7), 0);
    assert_eq!(dh(), before);

    // The real peer: a cookie first, then (after the secret rotated) its retry gets in.
    let first = a.initiate("b", start).expect("initiating");
    let d = &first.datagrams[0];
    let answer = b.receive(d.remote, d.local, &d.bytes, start);
    assert!(matches!(answer.events[..], [Event::CookieSent { .. }]));
    let later = start + settings.cookie_rotation + Duration::from_secs(1);
    let d = &answer.datagrams[0];
    let retry = a.receive(d.remote, d.local, &d.bytes, later);
    let mut events = (Vec::new(), Vec::new());
    let mut queue: VecDeque<Datagram> = retry.datagrams.into();
    while let Some(d) = queue.pop_front() {
        let (target, sink) = if d.remote.ip() == ip(B) {
            (&mut b, &mut events.1)
        } else {
            (&mut a, &mut events.0)
        };
        let out = target.receive(d.remote, d.local, &d.bytes, later);
        queue.extend(out.datagrams);
        sink.extend(out.events);
    }
    assert_matching_children(&events.0, &events.1);
    // The flood's half-open SAs go when their time is up; the peer's SA stays.
    let _ = b.on_timeout(later + settings.half_open_timeout);
    assert_eq!(b.half_open_count(), 0);
    assert_eq!(b.ike_sas().len(), 1);
    assert_eq!(b.ike_sas()[0].state, SaState::Established);
}

/// The CREATE_CHILD_SA shapes of this module (an IKE SA proposal with its 8-octet SPI, KE,
/// nonce; a REKEY_SA notify; TEMPORARY_FAILURE) as plain messages: seeds for the fuzz target,
/// written to `$XIPSEC_WRITE_IKE_CORPUS` when set.
#[test]
fn rekey_shapes_round_trip_as_fuzz_seeds() {
    use super::payload::{Notify, NotifyType, Payload, ProtocolId};
    let header = |flags| message::Header {
        spi_i: [1; 8],
        spi_r: [2; 8],
        exchange: ExchangeType::CREATE_CHILD_SA,
        flags,
        message_id: 3,
    };
    let ike = proposal::parse_ike("aes128-sha256-x25519,aes256gcm16-prfsha256-ecp256")
        .expect("proposals");
    let esp = proposal::parse_esp("aes128gcm16-x25519").expect("proposals");
    let seeds = [
        (
            "rekey_ike_request",
            vec![
                Payload::Sa(proposal::to_wire(&ike, &[9; 8], true)),
                Payload::Nonce(vec![4; 32]),
                Payload::Ke {
                    group: 31,
                    data: vec![5; 32],
                },
            ],
            message::flags::INITIATOR,
        ),
        (
            "rekey_child_request",
            vec![
                Payload::Notify(Notify {
                    protocol: ProtocolId::ESP,
                    spi: vec![0xc0, 0, 0, 1],
                    kind: NotifyType::REKEY_SA,
                    data: Vec::new(),
                }),
                Payload::Sa(proposal::to_wire(&esp, &[0xc0, 0, 0, 2], true)),
                Payload::Nonce(vec![6; 32]),
                Payload::TsI(vec![selector::TrafficSelector::any_v6()]),
                Payload::TsR(vec![selector::TrafficSelector::any_v6()]),
            ],
            0,
        ),
        (
            "temporary_failure",
            vec![Payload::Notify(Notify::new(
                NotifyType::TEMPORARY_FAILURE,
                Vec::new(),
            ))],
            message::flags::RESPONSE,
        ),
    ];
    for (name, payloads, flags) in seeds {
        let bytes = Message {
            header: header(flags),
            payloads,
        }
        .emit()
        .expect("emitting");
        let parsed = Message::parse(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed.emit().expect("emitting"), bytes, "{name}");
        if let Ok(dir) = std::env::var("XIPSEC_WRITE_IKE_CORPUS") {
            std::fs::create_dir_all(&dir).expect("creating the corpus directory");
            std::fs::write(std::path::Path::new(&dir).join(name), &bytes).expect("a seed");
        }
    }
}
