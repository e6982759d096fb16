//! The engine's packet logic without I/O: outbound and inbound state machines over the SA/SP
//! model that take bytes and a clock value and return what to do.
//!
//! Contract:
//! - No sockets, threads, files or locks in here. The I/O layer (`engine`'s workers) owns the
//!   tables behind its mutexes, calls exactly these functions and performs the actions:
//!   [`Outbound::protect`] / [`Outbound::push_fragment`] -> [`OutAction`] (send this ESP with
//!   this outer header, hold, drop for a [`Reason`]); [`Outbound::take_reservations`] ->
//!   [`SeqReservation`] (write a sequence reservation, then [`Outbound::reservation_written`]);
//!   [`Inbound::receive`] / [`Inbound::receive_frame`] -> [`InAction`] (deliver, raise the
//!   replay ceiling first via [`CeilingRaise`], drop); [`rebuild`] -> [`Rebuilt`] (what to
//!   write after an SPD change).
//! - Fail closed: a packet leaves only encrypted under an `ipsec` SP's SA with a sequence number
//!   that is durably reserved; ESP is delivered only when authentic, fresh, below a durable
//!   replay ceiling and allowed by an inbound SP naming its SA.
//! - Classification goes through one door, [`classify::build`] (the flow caches' miss path),
//!   and the caches are bounded (LRU) and invalidated by generation on every rebuild.
//! - Every outcome is counted in [`EngineStats`] (shared atomics) and the SA's [`SaCells`].
//! - Nothing allocates per packet once the caches and buffers are warm.

pub mod ceiling;
pub mod classify;
mod flow_cache;
mod inbound;
mod outbound;
mod rebuild;
mod sa;
mod stats;
#[cfg(test)]
mod tests;
pub mod udp;

use std::sync::Arc;

pub use ceiling::{KeyId, TIGHTEN_EVERY};
pub use inbound::{CeilingRaise, InAction, InPacket, Inbound, Prepared};
pub use outbound::{OutAction, Outbound, PendingSeal, SeqReservation};
pub use rebuild::{KeyError, Persisted, Rebuilt, rebuild};
pub use sa::DEFAULT_TDES_BLOCK_LIMIT;
pub use stats::{EngineStats, SaCells, Stat};

use crate::model::Flow;
use crate::model::packet::{Parsed, parse_frame};
use crate::wire::{ETH_HEADER_LEN, ethertype};

/// A fake Ethernet header (zero MACs, `EtherType` IPv6) so `parse_frame`, which reads Ethernet
/// frames, can parse the bare IPv6 packets of the TUN device and the raw socket. The core's
/// packet buffers are this header followed by the IPv6 packet.
pub const FAKE_ETHERNET: [u8; ETH_HEADER_LEN] = {
    let mut header = [0; ETH_HEADER_LEN];
    let [high, low] = ethertype::IPV6.to_be_bytes();
    header[ETH_HEADER_LEN - 2] = high;
    header[ETH_HEADER_LEN - 1] = low;
    header
};

/// Flow-cache entries per direction; past it the least recently used flow is evicted.
pub const FLOW_CACHE_LIMIT: usize = 65_536;

/// Why the core dropped a packet; each reason is one engine counter ([`Reason::stat`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The packet could not be parsed.
    Malformed,
    /// Outbound: the flow matches no `ipsec` SP with an SA (`discard`, `none`, no match).
    NoSa,
    /// Outbound: the SA has sent 2^32-1 packets.
    SequenceExhausted,
    /// Outbound: the next sequence number is not durably reserved (the write failed or is
    /// still pending).
    SeqNotReserved,
    /// Outbound: the SA refused the packet (too big, ...).
    EncapFailed,
    /// A 3DES SA reached its block limit.
    VolumeLimit,
    /// Outbound: a fragment overlapping another (the whole datagram is dropped).
    FragOverlap,
    /// Outbound: a malformed or excess fragment.
    FragDropped,
    /// Inbound: no SA has this SPI.
    UnknownSpi,
    /// Inbound: the outer addresses are not the SA's.
    AddressMismatch,
    /// Inbound: the ICV did not verify.
    AuthFailed,
    /// Inbound: refused by the anti-replay window.
    Replay,
    /// Inbound: above the replay ceiling, and the new ceiling could not be written.
    ReplayNotPersisted,
    /// Inbound: any other ESP error (padding, next header, ...).
    DecapFailed,
    /// Inbound: a dummy packet (next header 59), dropped silently.
    Dummy,
    /// Inbound: decrypted, but carrying what no policy can check.
    InnerProtocolRefused,
    /// Inbound: decrypted, but no inbound `ipsec` SP naming its SA lets it in.
    PolicyMismatch,
    /// Inbound: ESP in UDP for an SA without UDP encapsulation, plain ESP for one with, or ESP
    /// in UDP to another local port than the SA's (see `udp`).
    EncapMismatch,
}

impl Reason {
    /// The counter this reason bumps.
    pub const fn stat(self) -> Stat {
        match self {
            Self::Malformed => Stat::Malformed,
            Self::NoSa => Stat::NoSa,
            Self::SequenceExhausted => Stat::SequenceExhausted,
            Self::SeqNotReserved => Stat::SeqPersistErrors,
            Self::EncapFailed => Stat::EncapErrors,
            Self::VolumeLimit => Stat::VolumeLimit,
            Self::FragOverlap => Stat::FragOverlaps,
            Self::FragDropped => Stat::FragDropped,
            Self::UnknownSpi => Stat::UnknownSpi,
            Self::AddressMismatch => Stat::AddressMismatch,
            Self::AuthFailed => Stat::AuthFailures,
            Self::Replay => Stat::ReplayDrops,
            Self::ReplayNotPersisted => Stat::ReplayPersistErrors,
            Self::DecapFailed => Stat::DecapErrors,
            Self::Dummy => Stat::Dummy,
            Self::InnerProtocolRefused => Stat::InnerProtocolRefused,
            Self::PolicyMismatch => Stat::PolicyMismatch,
            Self::EncapMismatch => Stat::EncapMismatch,
        }
    }

    /// Whether the packet was verified and decrypted before it was dropped (`esp_decap_ok`).
    pub const fn after_decryption(self) -> bool {
        matches!(self, Self::InnerProtocolRefused | Self::PolicyMismatch)
    }
}

/// Empty tables of both directions sharing `stats`, whose 3DES SAs stop after
/// `tdes_block_limit` blocks.
pub fn tables(tdes_block_limit: u64, stats: &Arc<EngineStats>) -> (Outbound, Inbound) {
    (
        Outbound::new(tdes_block_limit, Arc::clone(stats)),
        Inbound::new(tdes_block_limit, Arc::clone(stats)),
    )
}

/// The flow of a frame ([`FAKE_ETHERNET`] + IPv6 packet), or `None` if it cannot be parsed.
fn flow_of(frame: &[u8]) -> Option<Flow> {
    match parse_frame(frame, false) {
        Parsed::Flow(flow) => Some(flow),
        _ => None,
    }
}
