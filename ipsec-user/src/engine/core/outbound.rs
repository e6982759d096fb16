//! The outbound state machine: one plaintext packet from the TUN in, one action out.
//!
//! Contract:
//! - A packet's flow is classified once ([`super::classify`], through the bounded flow cache)
//!   and only an `ipsec` SP with an SA protects it; any other verdict (`discard`, `none`, no
//!   match, an SA that is gone) is [`Reason::NoSa`]: dropped, never sent in clear.
//! - A packet is sent only with a sequence number at or below the SA's reservation that the I/O
//!   layer confirmed is on disk ([`Outbound::reservation_written`]); otherwise it is dropped
//!   ([`Reason::SeqNotReserved`]). Reservations are asked for ahead of need: a new SA at install
//!   (`rebuild`), a running one once half of its reservation is used
//!   ([`Outbound::take_reservations`]); a failed write backs off (1 s doubling to 60 s).
//! - Fragments of one datagram are reassembled ([`Outbound::push_fragment`]) and the whole
//!   datagram is protected once; a fragment never leaves by itself.
//! - Cryptography in bursts: [`Outbound::protect_deferred`] frames a packet (headers, sequence
//!   number, IV, padding) and leaves a [`PendingSeal`] beside it; [`Outbound::seal`] then
//!   encrypts and authenticates a whole batch together (`crypto::burst`), before anything is
//!   sent. The packets are byte for byte what [`Outbound::protect`] makes of them.
//! - Every outcome is counted here (engine counters and the SA's own); no I/O, no lock.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use tracing::warn;

use super::classify;
use super::flow_cache::FlowCache;
use super::sa::{Backoff, SaIdentity, Volume};
use super::stats::{EngineStats, SaCell, SaCells, Stat};
use super::udp;
use super::{FAKE_ETHERNET, FLOW_CACHE_LIMIT, Reason, flow_of};
use crate::classifier::CompiledSpd;
use crate::crypto::burst::{CHUNK, Framed, SealItem, seal_packets};
use crate::crypto::{Encapsulated, EspError, OutboundSa};
use crate::engine::mss;
use crate::engine::reassembly::{self, Outcome, Reassembler};
use crate::engine::seq::RESERVATION_STEP;
use crate::model::{Action, Direction, Flow};
use smallvec::SmallVec;

/// What to do with one outbound packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutAction {
    /// The caller's buffer holds the ESP packet (a whole IPv6 packet); send
    /// `buf[esp.esp_offset..]` to `esp.destination` from `esp.source` with `esp.hop_limit` and
    /// `esp.traffic_class`.
    Send(Encapsulated),
    /// A fragment kept until its datagram is complete (or an exact duplicate): nothing to do.
    Held,
    /// Dropped (and counted) for this reason.
    Drop(Reason),
}

/// A packet [`Outbound::protect_deferred`] framed and [`Outbound::seal`] must still seal: which
/// SA, and where its parts lie. Only good until the next `rebuild` (the table lock is held from
/// framing to sealing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSeal {
    sa: usize,
    framed: Framed,
}

/// "Write reservation `up_to` for SA `sa_name`/`spi`, then tell me": see the module contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeqReservation {
    pub sa_name: String,
    pub spi: u32,
    pub up_to: u32,
}

pub(super) struct OutSa {
    pub(super) identity: SaIdentity,
    pub(super) name: String,
    pub(super) sa: OutboundSa,
    /// The reservation on disk: this SA may send up to this sequence number.
    pub(super) reserved: u32,
    /// A reservation to hand to the I/O layer at the next [`Outbound::take_reservations`].
    pub(super) wanted: Option<u32>,
    /// A reservation handed out and not confirmed yet.
    pub(super) in_flight: bool,
    /// Exhaustion is logged once per SA.
    pub(super) exhausted_logged: bool,
    /// Cipher blocks encrypted so far (3DES SAs only).
    pub(super) volume: Volume,
    /// Retries of a failed reservation write, spaced out.
    pub(super) seq_backoff: Backoff,
    pub(super) cells: Arc<SaCells>,
}

impl OutSa {
    /// Asks for the next reservation when less than half of the current one is left.
    fn want_more(&mut self, now: Instant) {
        let left = self.reserved.saturating_sub(self.sa.last_sequence());
        if left > RESERVATION_STEP / 2
            || self.reserved == u32::MAX
            || self.wanted.is_some()
            || self.in_flight
            || self.seq_backoff.waiting(now)
        {
            return;
        }
        self.wanted = Some(self.sa.last_sequence().saturating_add(RESERVATION_STEP));
    }

    fn exhausted(&mut self) {
        self.cells.bump(SaCell::Errors);
        if !self.exhausted_logged {
            self.exhausted_logged = true;
            warn!(
                sa = %self.name, spi = format_args!("{:#x}", self.identity.spi),
                "esp sequence numbers exhausted (2^32-1 sent): the sa stops sending and must be replaced"
            );
        }
    }
}

/// Outbound state: SAs, flow cache, reassembly; see the module contract.
pub struct Outbound {
    pub(super) classifier: Arc<CompiledSpd>,
    pub(super) sas: Vec<OutSa>,
    pub(super) by_name: HashMap<String, usize>,
    /// Flow -> index into `sas`, or `None` when the flow must be dropped.
    pub(super) cache: FlowCache<Flow, Option<usize>>,
    /// The last lookup, in front of `cache` (cleared by `rebuild`).
    pub(super) last: Option<(Flow, Option<usize>)>,
    /// What TCP SYNs are clamped to (`mss::for_overheads` of the SAs).
    pub(super) mss: u16,
    pub(super) tdes_block_limit: u64,
    fragments: Reassembler,
    /// [`FAKE_ETHERNET`] + the datagram reassembled last.
    whole: Vec<u8>,
    /// Some SA has a reservation to hand out.
    pub(super) wants: bool,
    pub(super) stats: Arc<EngineStats>,
}

impl Outbound {
    /// No SA: every packet is dropped ([`Reason::NoSa`]) until `rebuild`.
    pub fn new(tdes_block_limit: u64, stats: Arc<EngineStats>) -> Self {
        Self {
            classifier: classify::empty(),
            sas: Vec::new(),
            by_name: HashMap::new(),
            cache: FlowCache::new(NonZeroUsize::new(FLOW_CACHE_LIMIT).unwrap_or(NonZeroUsize::MIN)),
            last: None,
            mss: mss::CLAMPED_MSS,
            tdes_block_limit,
            fragments: Reassembler::new(reassembly::DEFAULT_LIMITS),
            whole: FAKE_ETHERNET.to_vec(),
            wants: false,
            stats,
        }
    }

    /// What the I/O layer clamps TCP SYNs to (see `mss`).
    pub fn mss(&self) -> u16 {
        self.mss
    }

    fn drop(&self, reason: Reason) -> OutAction {
        self.stats.bump(reason.stat());
        OutAction::Drop(reason)
    }

    /// The SA protecting `flow`, from the cache or the classifier.
    fn lookup(&mut self, flow: &Flow) -> Option<usize> {
        // Segments of one TSO packet share their flow: no hashing for the second and later.
        if let Some((last, hit)) = &self.last
            && last == flow
        {
            return *hit;
        }
        let (classifier, by_name) = (&self.classifier, &self.by_name);
        let found = self.cache.get_or_classify(flow, || {
            classifier
                .classify(Direction::Out, flow)
                .filter(|sp| sp.action == Action::Ipsec)
                .and_then(|sp| sp.sa_name.as_deref())
                .and_then(|name| by_name.get(name).copied())
        });
        self.last = Some((*flow, found));
        found
    }

    /// Protects one whole packet: `frame` is [`FAKE_ETHERNET`] followed by the IPv6 packet;
    /// the ESP packet goes to `out` (cleared first). `now` is the caller's clock, read once per
    /// batch.
    pub fn protect(&mut self, frame: &[u8], now: Instant, out: &mut Vec<u8>) -> OutAction {
        let mut pending = None;
        let action = self.protect_deferred(frame, now, out, &mut pending);
        let mut sealed = true;
        self.seal(std::iter::once((&mut pending, &mut out[..])), |_| {
            sealed = false;
        });
        if sealed {
            action
        } else {
            self.drop(Reason::EncapFailed)
        }
    }

    /// [`Self::protect`] up to the cryptography: on [`OutAction::Send`], `out` holds the framed
    /// packet (sequence number, IV, padding, room for the ICV, in clear) and `pending` what
    /// [`Self::seal`] needs to seal it. Nothing may leave before it is sealed.
    pub fn protect_deferred(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
        pending: &mut Option<PendingSeal>,
    ) -> OutAction {
        *pending = None;
        let Some(flow) = flow_of(frame) else {
            return self.drop(Reason::Malformed);
        };
        let Some(index) = self.lookup(&flow) else {
            return self.drop(Reason::NoSa);
        };
        let packet = &frame[FAKE_ETHERNET.len()..];
        let entry = &mut self.sas[index];
        if entry.sa.is_exhausted() {
            entry.exhausted();
            return self.drop(Reason::SequenceExhausted);
        }
        // Fail closed: the next number must be durably reserved before it leaves.
        if u64::from(entry.sa.last_sequence()) >= u64::from(entry.reserved) {
            entry.want_more(now);
            self.wants |= entry.wanted.is_some();
            entry.cells.bump(SaCell::Errors);
            return self.drop(Reason::SeqNotReserved);
        }
        if !entry.volume.charge(packet.len(), &entry.name, "outbound") {
            entry.cells.bump(SaCell::Errors);
            return self.drop(Reason::VolumeLimit);
        }
        match entry.sa.frame(packet, out) {
            Ok(mut framed) => {
                // ESP in UDP (RFC 3948): the UDP header goes in front of ESP now, and is
                // written once the ESP it covers is sealed (`seal`).
                let mut sent = framed.encapsulated;
                if entry.identity.udp_encap.is_some() {
                    sent.esp_offset = udp::make_room(out, &mut framed);
                }
                entry.cells.packet(packet.len());
                entry.want_more(now);
                self.wants |= entry.wanted.is_some();
                self.stats.bump(Stat::EncapOk);
                *pending = Some(PendingSeal { sa: index, framed });
                OutAction::Send(sent)
            }
            Err(EspError::SequenceExhausted) => {
                entry.exhausted();
                self.drop(Reason::SequenceExhausted)
            }
            Err(_) => {
                entry.cells.bump(SaCell::Errors);
                self.drop(Reason::EncapFailed)
            }
        }
    }

    /// Seals every framed packet of `batch` (its [`PendingSeal`], taken, and its buffer), all
    /// together; entries without one are left alone. Calls `failed(i)` for each entry `i` that
    /// could not be sealed (a framing bug, counted as `esp_encap_errors`): the caller must not
    /// send it.
    pub fn seal<'b>(
        &self,
        batch: impl IntoIterator<Item = (&'b mut Option<PendingSeal>, &'b mut [u8])>,
        mut failed: impl FnMut(usize),
    ) {
        let mut batch = batch.into_iter().enumerate().peekable();
        while batch.peek().is_some() {
            let mut items: SmallVec<[SealItem<'_>; CHUNK]> = SmallVec::new();
            // (position in the batch, SA) of each item.
            let mut at: SmallVec<[(usize, usize); CHUNK]> = SmallVec::new();
            for (i, (pending, buf)) in batch.by_ref() {
                let Some(PendingSeal { sa, framed }) = pending.take() else {
                    continue;
                };
                items.push(SealItem {
                    sa: &self.sas[sa].sa,
                    framed,
                    buf,
                });
                at.push((i, sa));
                if items.len() == CHUNK {
                    break;
                }
            }
            let mut results = [Ok(()); CHUNK];
            let results = &mut results[..items.len()];
            seal_packets(&mut items, results);
            for ((item, (i, sa)), result) in items.iter_mut().zip(&at).zip(results.iter()) {
                if let (Ok(()), Some(encap)) = (result, self.sas[*sa].identity.udp_encap) {
                    udp::finish(item.buf, encap);
                }
                if result.is_err() {
                    self.stats.bump(Stat::EncapErrors);
                    self.sas[*sa].cells.bump(SaCell::Errors);
                    failed(*i);
                }
            }
        }
    }

    /// Hands a fragment (`frame` as for [`Self::protect`]) to reassembly. `None`: not a
    /// fragment, the caller protects it as a whole packet. `Some`: the fragment's outcome,
    /// which is the whole datagram's [`Self::protect`] when this fragment completed it.
    pub fn push_fragment(
        &mut self,
        frame: &[u8],
        now: Instant,
        out: &mut Vec<u8>,
    ) -> Option<OutAction> {
        let packet = &frame[FAKE_ETHERNET.len()..];
        let outcome = self.fragments.push(packet, now, &mut self.whole);
        let counts = self.fragments.take_counts();
        self.stats.add(Stat::FragTimeouts, counts.timed_out);
        self.stats.add(Stat::FragEvicted, counts.evicted);
        let action = match outcome {
            Outcome::NotFragment => return None,
            Outcome::Pending => OutAction::Held,
            Outcome::Duplicate => {
                self.stats.bump(Stat::FragDuplicates);
                OutAction::Held
            }
            Outcome::Dropped(reassembly::Drop::Overlap) => self.drop(Reason::FragOverlap),
            Outcome::Dropped(_) => self.drop(Reason::FragDropped),
            Outcome::Complete => {
                self.stats.bump(Stat::FragReassembled);
                let whole = std::mem::take(&mut self.whole);
                let action = self.protect(&whole, now, out);
                self.whole = whole;
                self.whole.truncate(FAKE_ETHERNET.len());
                action
            }
        };
        Some(action)
    }

    /// Moves the reservations the SAs want into `into` (usually nothing): the I/O layer writes
    /// them without holding the table, then calls [`Self::reservation_written`] for each.
    pub fn take_reservations(&mut self, into: &mut Vec<SeqReservation>) {
        if !std::mem::take(&mut self.wants) {
            return;
        }
        for entry in &mut self.sas {
            if let Some(up_to) = entry.wanted.take() {
                entry.in_flight = true;
                into.push(SeqReservation {
                    sa_name: entry.name.clone(),
                    spi: entry.identity.spi,
                    up_to,
                });
            }
        }
    }

    /// The write of `reservation` finished (`written`: it is on disk) at `now`. Returns the
    /// delay before the next attempt after a failure, for the caller's log.
    pub fn reservation_written(
        &mut self,
        reservation: &SeqReservation,
        written: bool,
        now: Instant,
    ) -> Option<std::time::Duration> {
        let index = *self.by_name.get(&reservation.sa_name)?;
        let entry = &mut self.sas[index];
        if entry.identity.spi != reservation.spi {
            return None;
        }
        entry.in_flight = false;
        if written {
            entry.reserved = entry.reserved.max(reservation.up_to);
            entry.seq_backoff.succeeded();
            None
        } else {
            Some(entry.seq_backoff.failed(now))
        }
    }
}
