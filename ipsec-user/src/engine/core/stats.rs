//! The engine's counters: one [`Stat`] per outcome that is not an SA's own, and [`SaCells`],
//! one SA's counters shared by its outbound and inbound halves.
//!
//! Contract: counters are atomics bumped with relaxed ordering (never a lock), each on its own
//! cache line; the core bumps them as it decides, the I/O layer bumps those of its own I/O
//! (send, TUN and receive errors, AF_XDP), and `stats` reads a snapshot in [`Stat::ALL`] order.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::SaCount;

/// Defines the engine counters once: the enum, the names `stats` reports, in order.
macro_rules! engine_stats {
    ($($variant:ident => $name:literal: $doc:literal,)+) => {
        /// Engine-level counters, one per outcome that is not an SA's own.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Stat {
            $(#[doc = $doc] $variant,)+
        }

        impl Stat {
            /// Every counter, in the order `stats` reports them.
            pub const ALL: &'static [Stat] = &[$(Stat::$variant,)+];

            /// The stable `snake_case` name.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Stat::$variant => $name,)+
                }
            }
        }
    };
}

engine_stats! {
    EncapOk => "esp_encap_ok": "Packets encapsulated (and handed to the raw socket).",
    DecapOk => "esp_decap_ok": "Packets verified and decrypted (before the policy check).",
    Delivered => "esp_delivered": "Decrypted packets that passed the policy check and were written to the TUN.",
    NoSa => "esp_no_sa": "Outbound packets whose flow no longer matches an `ipsec` SP with an SA.",
    PolicyMismatch => "esp_policy_mismatch": "Decrypted packets that fail the inbound policy check (RFC 4301 §5.2).",
    UnknownSpi => "esp_unknown_spi": "Inbound ESP whose SPI belongs to no SA.",
    SequenceExhausted => "esp_sequence_exhausted": "Outbound packets dropped because their SA has sent 2^32-1 packets.",
    SeqPersistErrors => "esp_seq_persist_errors": "Outbound packets dropped because the sequence reservation could not be written.",
    EncapErrors => "esp_encap_errors": "Outbound packets the SA refused (fragment in transport mode, too big, ...).",
    AuthFailures => "esp_auth_failures": "Inbound ESP whose ICV did not verify (all SAs).",
    ReplayDrops => "esp_replay_drops": "Inbound ESP refused by the anti-replay window (all SAs).",
    DecapErrors => "esp_decap_errors": "Inbound ESP dropped for any other reason (bad padding, ...).",
    Dummy => "esp_dummy": "Dummy packets (next header 59), dropped silently (RFC 4303 §2.6).",
    Malformed => "esp_malformed": "Packets that could not be parsed (TUN or raw socket).",
    SendErrors => "esp_send_errors": "ESP packets the kernel refused to send.",
    TunReadErrors => "esp_tun_read_errors": "Failed reads from the TUN device.",
    TunWriteErrors => "esp_tun_write_errors": "Decrypted packets the TUN device refused.",
    RecvErrors => "esp_recv_errors": "Failed receives on the raw ESP socket.",
    XskReceived => "esp_xsk_received": "Inbound ESP frames taken from the AF_XDP sockets (the rest came by the raw socket).",
    XskDrops => "esp_xsk_drops": "Inbound ESP the AF_XDP sockets dropped (receive ring full or no free frame), as the kernel counts them.",
    FragReassembled => "esp_frag_reassembled": "Outbound datagrams put back together from their fragments (then protected as one packet).",
    FragDuplicates => "esp_frag_duplicates": "Outbound fragments that exactly repeat one already held (ignored, RFC 8200 §4.5).",
    FragOverlaps => "esp_frag_overlaps": "Outbound fragments dropped for overlapping another (their whole datagram is dropped, RFC 5722).",
    FragTimeouts => "esp_frag_timeouts": "Outbound datagrams whose fragments did not all arrive within the reassembly timeout (30 s).",
    FragEvicted => "esp_frag_evicted": "Outbound datagrams being reassembled that were evicted to bound the reassembly memory.",
    FragDropped => "esp_frag_dropped": "Outbound fragments dropped as malformed, too big (> 65,535 bytes) or in too many pieces.",
    AddressMismatch => "esp_address_mismatch": "Inbound ESP whose outer source or destination is not its SA's (--sa-source/--sa-destination).",
    InnerProtocolRefused => "esp_inner_protocol_refused": "Decrypted packets carrying IPv6, IPv4, ESP or AH, or a fragment after transport-mode ESP: no policy can check them.",
    ReplayPersistErrors => "esp_replay_persist_errors": "Inbound ESP dropped because the SA's replay ceiling could not be written.",
    VolumeLimit => "esp_volume_limit": "Packets dropped because their 3DES SA reached its block limit (Sweet32, --tdes-block-limit).",
    WorkerDeaths => "esp_worker_deaths": "Engine threads that died (panicked); protected flows then fail closed.",
    TunQueueDrops => "esp_tun_queue_drops": "Packets the kernel dropped at the TUN device (its queue to the engine full), from its tx_dropped + rx_dropped.",
    XskSent => "esp_xsk_sent": "Outbound ESP sent through an AF_XDP socket's transmit ring (the rest went by the raw socket).",
    EncapMismatch => "esp_encap_mismatch": "Inbound ESP in UDP for an SA without --udp-encapsulation (or to another port), or plain ESP for an SA with it (RFC 3948 §3.2).",
    UdpGsoFrames => "esp_udp_gso_frames": "ESP-in-UDP GSO frames sent (one skb carrying a run of ESP packets of one SA, `--esp-gso`).",
    UdpGsoSegments => "esp_udp_gso_segments": "ESP-in-UDP packets sent inside GSO frames.",
    UdpGroReceived => "esp_udp_gro_received": "Datagrams (super-packets or single) taken from the engine's UDP GRO sockets.",
    UdpGroSegments => "esp_udp_gro_segments": "ESP packets cut from those datagrams and handed to the inbound checks.",
}

/// The engine counters, shared by both workers.
#[derive(Debug)]
pub struct EngineStats {
    cells: Vec<PaddedCounter>,
}

/// One counter per cache line: the workers bump different counters for every packet, and
/// counters sharing a line would bounce it between their cores.
#[derive(Debug, Default)]
#[repr(align(64))]
struct PaddedCounter(AtomicU64);

impl Default for EngineStats {
    fn default() -> Self {
        Self {
            cells: Stat::ALL.iter().map(|_| PaddedCounter::default()).collect(),
        }
    }
}

impl EngineStats {
    /// Adds `n` to a counter.
    pub fn add(&self, stat: Stat, n: u64) {
        self.cells[stat as usize].0.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds one to a counter.
    pub fn bump(&self, stat: Stat) {
        self.add(stat, 1);
    }

    /// A counter's value now.
    pub fn get(&self, stat: Stat) -> u64 {
        self.cells[stat as usize].0.load(Ordering::Relaxed)
    }

    /// Every counter by name, in [`Stat::ALL`] order.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        Stat::ALL
            .iter()
            .map(|s| (s.name().to_owned(), self.get(*s)))
            .collect()
    }
}

/// One SA's counters, shared by its outbound and inbound halves.
#[derive(Debug, Default)]
pub struct SaCells {
    packets: AtomicU64,
    bytes: AtomicU64,
    auth_failures: AtomicU64,
    replay_drops: AtomicU64,
    errors: AtomicU64,
}

/// Which of an SA's counters to bump.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SaCell {
    AuthFailures,
    ReplayDrops,
    Errors,
}

impl SaCells {
    pub(crate) fn packet(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn bump(&self, cell: SaCell) {
        let cell = match cell {
            SaCell::AuthFailures => &self.auth_failures,
            SaCell::ReplayDrops => &self.replay_drops,
            SaCell::Errors => &self.errors,
        };
        cell.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> SaCount {
        SaCount {
            packets: self.packets.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            auth_failures: self.auth_failures.load(Ordering::Relaxed),
            replay_drops: self.replay_drops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn stat_names_are_unique_snake_case() {
        let names: HashSet<&str> = Stat::ALL.iter().map(|s| s.name()).collect();
        assert_eq!(names.len(), Stat::ALL.len());
        for name in names {
            assert!(name.starts_with("esp_"), "{name}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{name}"
            );
        }
        for (i, s) in Stat::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }
}
