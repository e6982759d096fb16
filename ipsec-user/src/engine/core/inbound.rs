//! The inbound state machine: one ESP packet in, one action out.
//!
//! Contract:
//! - The SA is found by SPI (RFC 4303 §2.1 lets a receiver do so for unicast); only SAs an
//!   inbound `ipsec` SP names, or named before and still accepts, are candidates. The outer addresses must be the SA's
//!   ([`Reason::AddressMismatch`], unless `any`), checked before any cryptography.
//! - Replay ceilings (`replay_store`): an authentic packet whose sequence number is above the
//!   SA's ceiling is not accepted; [`Inbound::receive`] returns [`InAction::Raise`] instead,
//!   leaving the window untouched. The I/O layer writes the new ceiling without holding the
//!   table, calls [`Inbound::ceiling_written`], and hands the same packet in again: the packet
//!   waits for the write and is never accepted before it. While a failed write backs off, such
//!   packets are dropped ([`Reason::ReplayNotPersisted`]).
//! - The decrypted packet must match an inbound `ipsec` SP naming that SA, or having named it
//!   before (`model::Former`: the old SA of a key rotation, until it is removed; RFC 4301 §5.2), else
//!   [`Reason::PolicyMismatch`]; IPv4/IPv6-in-IP, ESP and AH inside, and fragments inside
//!   transport mode, are [`Reason::InnerProtocolRefused`].
//! - Bursts: [`Inbound::prepare_burst`] verifies the ICVs of a whole batch together
//!   (`crypto::burst`, counting nothing); [`Inbound::receive_prepared`] then takes each packet
//!   through every step of [`Inbound::receive`], in arrival order, with that verdict, so each
//!   packet gets exactly the outcome `receive` would give it. A verdict is used only for the SA
//!   (index and keys) it was computed with: after an update in between, the packet is verified
//!   again, one at a time.
//! - Every outcome but `Raise` is counted here; no I/O, no lock.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Instant;

use super::ceiling::{Ceiling, KeyId};
use super::classify;
use super::flow_cache::FlowCache;
use super::sa::{SaIdentity, Volume};
use super::stats::{EngineStats, SaCell, SaCells, Stat};
use super::udp;
use super::{FAKE_ETHERNET, FLOW_CACHE_LIMIT, Reason, flow_of};
use crate::classifier::CompiledSpd;
use crate::crypto::burst::{CHUNK, OpenItem, verify_packets};
use crate::crypto::{Decapsulated, EspError, InboundSa, OuterHeader};
use crate::engine::{mss, reassembly};
use crate::model::{Action, Direction, Flow, Mode, UdpEncap};
use crate::wire::{
    ETH_HEADER_LEN, EspPacket, EthernetFrame, IPV6_HEADER_LEN, Ipv6Packet, ethertype, proto,
};
use foldhash::{HashMap, HashMapExt as _};
use smallvec::SmallVec;

/// Upper-layer protocols a decrypted packet may not carry (either mode): IPv4 (4) and IPv6
/// in IP, ESP, AH. Whatever they hold was never matched against a policy.
const UNCHECKABLE: [u8; 4] = [4, proto::IPV6, proto::ESP, proto::AH];

/// What to do with one inbound ESP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InAction {
    /// The caller's `frame` holds [`FAKE_ETHERNET`] + the packet to write to the TUN.
    Deliver,
    /// Persist this ceiling, confirm with [`Inbound::ceiling_written`], then hand the same
    /// packet in again.
    Raise(CeilingRaise),
    /// Dropped (and counted) for this reason.
    Drop(Reason),
}

/// One received ESP packet: the fields of its outer header and the ESP bytes (SPI to ICV).
#[derive(Debug, Clone, Copy)]
pub struct InPacket<'a> {
    pub outer: OuterHeader,
    pub esp: &'a [u8],
    /// The UDP ports of ESP in UDP (RFC 3948: source, destination as received), `None` for
    /// plain ESP. An SA accepts only its own shape (`udp::accepts`).
    pub encap: Option<UdpEncap>,
}

/// What [`Inbound::prepare_burst`] found out about one packet: the ICV verdict, and the SA
/// (index and keys) it holds for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prepared {
    verdict: Option<(usize, KeyId, bool)>,
}

/// "Write ceiling `up_to` for SA `spi`/`key_id` (`ReplayStore::raise`), then tell me".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CeilingRaise {
    pub spi: u32,
    pub key_id: KeyId,
    pub up_to: u32,
}

pub(super) struct InSa {
    pub(super) identity: SaIdentity,
    pub(super) name: String,
    pub(super) sa: InboundSa,
    pub(super) key_id: KeyId,
    pub(super) ceiling: Ceiling,
    /// Cipher blocks decrypted so far (3DES SAs only).
    pub(super) volume: Volume,
    pub(super) cells: Arc<SaCells>,
}

/// Inbound state: SAs by SPI, the policy cache, per-SP delivery counters.
pub struct Inbound {
    pub(super) classifier: Arc<CompiledSpd>,
    pub(super) sas: Vec<InSa>,
    /// Under a fast hash (foldhash, seeded per process): only configured SAs insert keys, so a
    /// flood of made-up SPIs can only miss. Looked up twice per packet.
    pub(super) by_spi: HashMap<u32, usize>,
    /// (inner flow, SA index) -> the inbound SP (id, seq) that lets it in, if one does.
    pub(super) cache: FlowCache<(Flow, usize), Option<(u32, u32)>>,
    /// Packets and bytes delivered per inbound SP, keyed by (id, seq): the kernel counts what
    /// XDP matched, but ESP is matched to its SP only here, after decryption.
    /// Fast hash as `by_spi`: only configured SPs are keys.
    pub(super) sp_hits: HashMap<(u32, u32), (u64, u64)>,
    pub(super) mss: u16,
    pub(super) tdes_block_limit: u64,
    pub(super) stats: Arc<EngineStats>,
}

impl Inbound {
    /// The (local address, local port) pairs ESP in UDP of the inbound SAs (those an inbound
    /// SP names: the SPI lookup's) arrives at, without repeats (the address unspecified for an
    /// SA whose destination is `any`). An outbound SA's destination is the peer's: never here.
    pub fn udp_endpoints(&self) -> Vec<(std::net::Ipv6Addr, u16)> {
        let mut endpoints: Vec<_> = self
            .by_spi
            .values()
            .filter_map(|&i| self.sas.get(i)?.identity.udp_endpoint())
            .collect();
        endpoints.sort_unstable();
        endpoints.dedup();
        endpoints
    }

    /// No SA: every packet is [`Reason::UnknownSpi`] until `rebuild`.
    pub fn new(tdes_block_limit: u64, stats: Arc<EngineStats>) -> Self {
        Self {
            classifier: classify::empty(),
            sas: Vec::new(),
            by_spi: HashMap::new(),
            cache: FlowCache::new(NonZeroUsize::new(FLOW_CACHE_LIMIT).unwrap_or(NonZeroUsize::MIN)),
            sp_hits: HashMap::new(),
            mss: mss::CLAMPED_MSS,
            tdes_block_limit,
            stats,
        }
    }

    fn drop(&self, reason: Reason) -> InAction {
        self.stats.bump(reason.stat());
        if reason.after_decryption() {
            self.stats.bump(Stat::DecapOk);
        }
        InAction::Drop(reason)
    }

    /// The inbound SP (id, seq) that lets `flow` arrive on SA `index` (RFC 4301 §5.2): the
    /// first SP it matches must be `ipsec` and name this SA, or have named it before (a key
    /// rotation in progress: `model::Former`).
    fn allowed(&mut self, flow: &Flow, index: usize) -> Option<(u32, u32)> {
        let (classifier, name) = (&self.classifier, &self.sas[index].name);
        self.cache.get_or_classify(&(*flow, index), || {
            classifier
                .classify(Direction::In, flow)
                .filter(|sp| sp.action == Action::Ipsec && classifier.spd().accepts_sa(sp, name))
                .map(|sp| (sp.id, sp.seq))
        })
    }

    /// Processes one ESP packet whose IPv6 header the raw socket stripped: `esp` from the SPI
    /// to the ICV, `outer` the header's fields. On [`InAction::Deliver`], `frame` holds
    /// [`FAKE_ETHERNET`] + the packet to write to the TUN (the packet is decrypted straight
    /// into it); `now` is the caller's clock, read once per batch.
    pub fn receive(
        &mut self,
        outer: &OuterHeader,
        esp: &[u8],
        now: Instant,
        frame: &mut Vec<u8>,
    ) -> InAction {
        self.receive_with(outer, esp, None, None, now, frame)
    }

    /// The SA index for an ESP packet's SPI, if its outer addresses are the SA's; counts
    /// nothing.
    fn bound_sa(&self, packet: &InPacket<'_>) -> Option<usize> {
        let spi = EspPacket::new_checked(packet.esp).ok()?.spi();
        let index = *self.by_spi.get(&spi)?;
        let identity = &self.sas[index].identity;
        (identity.binds(&packet.outer) && udp::accepts(identity.udp_encap, packet.encap))
            .then_some(index)
    }

    /// Verifies the ICVs of `packets` together (multi-buffer) into `prepared` (one entry per
    /// packet), for [`Self::receive_prepared`]. Counts nothing and moves no window: a packet
    /// that fails a check before the ICV gets no verdict and is refused there by
    /// `receive_prepared`, as `receive` would refuse it.
    pub fn prepare_burst(&self, packets: &[InPacket<'_>], prepared: &mut [Prepared]) {
        for (packets, prepared) in packets.chunks(CHUNK).zip(prepared.chunks_mut(CHUNK)) {
            let mut items: SmallVec<[OpenItem<'_>; CHUNK]> = SmallVec::new();
            let mut at: SmallVec<[(usize, usize); CHUNK]> = SmallVec::new();
            for (i, (packet, entry)) in packets.iter().zip(prepared.iter_mut()).enumerate() {
                *entry = Prepared::default();
                let Some(index) = self.bound_sa(packet) else {
                    continue;
                };
                let sa = &self.sas[index].sa;
                if let Ok(sealed) = sa.check(packet.esp) {
                    items.push(OpenItem {
                        sa,
                        esp: packet.esp,
                        sealed,
                        verified: false,
                    });
                    at.push((i, index));
                }
            }
            verify_packets(&mut items);
            for ((i, index), item) in at.iter().zip(&items) {
                prepared[*i].verdict = Some((*index, self.sas[*index].key_id, item.verified));
            }
        }
    }

    /// [`Self::receive`] of `packet` with the verdict [`Self::prepare_burst`] left in
    /// `prepared`: the same steps and outcome.
    pub fn receive_prepared(
        &mut self,
        packet: &InPacket<'_>,
        prepared: &Prepared,
        now: Instant,
        frame: &mut Vec<u8>,
    ) -> InAction {
        self.receive_with(
            &packet.outer,
            packet.esp,
            packet.encap,
            Some(prepared),
            now,
            frame,
        )
    }

    /// `receive`, with the ICV verdict of a burst when there is one for this packet's SA.
    fn receive_with(
        &mut self,
        outer: &OuterHeader,
        esp: &[u8],
        encap: Option<UdpEncap>,
        prepared: Option<&Prepared>,
        now: Instant,
        frame: &mut Vec<u8>,
    ) -> InAction {
        let Ok(header) = EspPacket::new_checked(esp) else {
            return self.drop(Reason::Malformed);
        };
        let spi = header.spi();
        let Some(&index) = self.by_spi.get(&spi) else {
            return self.drop(Reason::UnknownSpi);
        };
        let entry = &mut self.sas[index];
        // ESP under the right SPI from or to another address (our own outbound ESP reflected
        // back among them) is not this SA's traffic; checked before any cryptography, so it
        // never moves the replay window.
        if !entry.identity.binds(outer) {
            entry.cells.bump(SaCell::Errors);
            return self.drop(Reason::AddressMismatch);
        }
        // ESP in UDP for a plain SA, or plain ESP for an encapsulated one: not this SA's
        // traffic (RFC 3948 §3.2), refused before any cryptography.
        if !udp::accepts(entry.identity.udp_encap, encap) {
            entry.cells.bump(SaCell::Errors);
            return self.drop(Reason::EncapMismatch);
        }
        let InSa {
            sa,
            ceiling,
            identity,
            key_id,
            name,
            volume,
            cells,
        } = entry;
        let transport = identity.mode == Mode::Transport;
        let bytes = IPV6_HEADER_LEN + esp.len();
        // Checked before, charged after decryption: forged packets cannot use up the volume.
        if !volume.allows(bytes, name, "inbound") {
            cells.bump(SaCell::Errors);
            return self.drop(Reason::VolumeLimit);
        }
        let mut above = None;
        let gate = |seq| {
            let admitted = ceiling.admits(seq);
            if !admitted {
                above = Some(seq);
            }
            admitted
        };
        // The burst's verdict, if it was computed for this very SA (index and keys).
        let verdict = prepared
            .and_then(|p| p.verdict)
            .filter(|(i, k, _)| *i == index && k == key_id)
            .map(|(_, _, verified)| verified);
        // Decrypted straight behind the TUN frame's fake Ethernet header: no copy afterwards.
        let opened = sa.open_behind(outer, esp, verdict, &FAKE_ETHERNET, frame, gate);
        let delivered = frame.len().saturating_sub(FAKE_ETHERNET.len());
        match opened {
            Ok(Decapsulated::Deliver { .. }) => {
                volume.add(bytes);
                cells.packet(delivered);
            }
            Ok(Decapsulated::Dummy { .. }) => {
                volume.add(bytes);
                return self.drop(Reason::Dummy);
            }
            Err(EspError::AuthFailed) => {
                cells.bump(SaCell::AuthFailures);
                return self.drop(Reason::AuthFailed);
            }
            Err(EspError::Replay { .. }) => {
                cells.bump(SaCell::ReplayDrops);
                return self.drop(Reason::Replay);
            }
            Err(EspError::NotPersisted { seq }) => {
                // Authentic and new, above the ceiling: the ceiling goes to disk first.
                if let Some(up_to) = ceiling.request(above.unwrap_or(seq), now) {
                    return InAction::Raise(CeilingRaise {
                        spi,
                        key_id: *key_id,
                        up_to,
                    });
                }
                cells.bump(SaCell::Errors);
                return self.drop(Reason::ReplayNotPersisted);
            }
            Err(_) => {
                cells.bump(SaCell::Errors);
                return self.drop(Reason::DecapFailed);
            }
        }
        let Some(flow) = flow_of(frame) else {
            return self.drop(Reason::PolicyMismatch);
        };
        // A policy selects on the upper-layer header; behind these it would check the wrong
        // one (an inner packet, or a header it cannot see), so they are never delivered. A
        // fragment is refused in transport mode only: ESP there protects whole datagrams
        // (RFC 4303 §3.3.4), while a tunnel may carry fragments of a host behind its peer.
        if UNCHECKABLE.contains(&flow.next_header)
            || (transport && reassembly::has_fragment_header(&frame[FAKE_ETHERNET.len()..]))
        {
            return self.drop(Reason::InnerProtocolRefused);
        }
        let Some(sp) = self.allowed(&flow, index) else {
            if let Some(sp) = classify::discarding_sp(&self.classifier, &flow) {
                let hits = self.sp_hits.entry(sp).or_default();
                hits.0 += 1;
                hits.1 += u64::try_from(delivered).unwrap_or(u64::MAX);
            }
            return self.drop(Reason::PolicyMismatch);
        };
        let hits = self.sp_hits.entry(sp).or_default();
        hits.0 += 1;
        hits.1 += u64::try_from(delivered).unwrap_or(u64::MAX);
        // The local stack answers a SYN with segments no larger than its MSS (see `mss`).
        mss::clamp(&mut frame[FAKE_ETHERNET.len()..], self.mss);
        self.stats.bump(Stat::DecapOk);
        self.stats.bump(Stat::Delivered);
        InAction::Deliver
    }

    /// Processes one ESP frame from an AF_XDP socket: Ethernet, an IPv6 header with next
    /// header ESP (the only shape XDP redirects), ESP, maybe Ethernet padding. As
    /// [`Self::receive`].
    pub fn receive_frame(
        &mut self,
        ethernet: &[u8],
        now: Instant,
        frame: &mut Vec<u8>,
    ) -> InAction {
        match Self::parse_frame(ethernet) {
            Some(packet) => {
                self.receive_with(&packet.outer, packet.esp, packet.encap, None, now, frame)
            }
            None => self.drop(Reason::Malformed),
        }
    }

    /// The ESP packet in an AF_XDP frame: Ethernet, an IPv6 header with next header ESP, or
    /// UDP whose Length agrees with the IPv6 payload length and whose payload starts with an
    /// SPI (RFC 3948; the only shapes XDP redirects), ESP, maybe Ethernet padding. `None`:
    /// malformed (the caller counts it, e.g. through [`Self::malformed`]).
    pub fn parse_frame(ethernet: &[u8]) -> Option<InPacket<'_>> {
        // Untagged: XDP redirects no other shape (a tagged frame would be malformed here).
        let untagged = EthernetFrame::new_checked(ethernet)
            .is_ok_and(|link| link.ethertype() == ethertype::IPV6);
        let ip = Ipv6Packet::new_checked(ethernet.get(ETH_HEADER_LEN..)?).ok()?;
        if !untagged {
            return None;
        }
        let outer = OuterHeader::of_packet(&ip);
        // Ethernet may pad a frame; the IPv6 payload length says where the packet ends.
        match ip.next_header() {
            proto::ESP => Some(InPacket {
                outer,
                esp: ip.payload_bytes(),
                encap: None,
            }),
            proto::UDP => {
                let (encap, esp) = udp::split(ip.payload_bytes())?;
                Some(InPacket {
                    outer,
                    esp,
                    encap: Some(encap),
                })
            }
            _ => None,
        }
    }

    /// Counts a packet the I/O layer found malformed before the core saw it.
    pub fn malformed(&self) {
        self.stats.bump(Stat::Malformed);
    }

    /// The write of `raise` finished (`written`: on disk) at `now`: the SA's gate rises to it,
    /// or backs off. An SA replaced meanwhile is left alone.
    pub fn ceiling_written(&mut self, raise: &CeilingRaise, written: bool, now: Instant) {
        let Some(&index) = self.by_spi.get(&raise.spi) else {
            return;
        };
        let entry = &mut self.sas[index];
        if entry.key_id != raise.key_id {
            return;
        }
        if written {
            entry.ceiling.written(raise.up_to, now);
        } else {
            entry.ceiling.failed(now);
        }
    }

    /// Which persisted ceiling belongs to the inbound SA with `spi`, if there is one.
    pub fn replay_key(&self, spi: u32) -> Option<KeyId> {
        self.sas
            .iter()
            .find(|e| e.identity.spi == spi)
            .map(|e| e.key_id)
    }

    /// Empties the replay window of the SA (`spi`, `key_id`) and its gate (the operator's
    /// reset; the caller removed the persisted ceiling first). Returns whether it exists.
    pub fn reset_replay(&mut self, spi: u32, key_id: &KeyId) -> bool {
        let Some(entry) = self
            .sas
            .iter_mut()
            .find(|e| e.identity.spi == spi && e.key_id == *key_id)
        else {
            return false;
        };
        entry.sa.reset_replay();
        entry.ceiling = if entry.ceiling.is_persisted() {
            Ceiling::new(0)
        } else {
            Ceiling::in_memory()
        };
        true
    }

    /// Each inbound SA's highest accepted sequence number, for a clean stop (no packet is
    /// accepted any more): the ceilings can come down to them (`ReplayStore::settle`).
    pub fn settled(&self) -> Vec<(u32, KeyId, u32)> {
        self.sas
            .iter()
            .filter(|e| e.ceiling.is_persisted())
            .filter_map(|e| {
                let highest = e.sa.replay_window().highest();
                (highest > 0).then_some((e.identity.spi, e.key_id, highest))
            })
            .collect()
    }

    /// The housekeeping pass (every `TIGHTEN_EVERY`, never per packet): lowers the gate of each
    /// SA further ahead of what it accepted than its recent rate needs, and returns the lowered
    /// ceilings. The caller lowers the store's entries to them (`ReplayStore::lower`, memory
    /// only) before releasing this table, then writes the store.
    pub fn tighten_ceilings(&mut self, now: Instant) -> Vec<(u32, KeyId, u32)> {
        self.sas
            .iter_mut()
            .filter_map(|e| {
                let highest = e.sa.replay_window().highest();
                e.ceiling
                    .tighten(highest, now)
                    .map(|value| (e.identity.spi, e.key_id, value))
            })
            .collect()
    }

    /// Packets and bytes delivered per inbound SP id.
    pub fn sp_hits(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.sp_hits
            .iter()
            .map(|((id, _), (packets, bytes))| (*id, *packets, *bytes))
    }
}
