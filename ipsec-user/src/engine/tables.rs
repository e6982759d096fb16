//! The engine's packet logic without I/O: the SA tables of each direction, the flow caches, the
//! counters, and what happens to one packet ([`OutTable::protect`], [`InTable::receive`]).
//!
//! Contract:
//! - [`rebuild`] makes both tables equal an [`Spd`]: an SA whose identity (SPI, mode, endpoints,
//!   algorithms, keys) is unchanged keeps its `OutboundSa` (sequence number, reservation),
//!   `InboundSa` (replay window) and counters; other SAs are keyed afresh (resuming after their
//!   persisted reservation); removed ones are dropped. It either applies completely or, on a key
//!   error, changes nothing. Flow caches are cleared.
//! - Outbound, a packet's flow is classified once against the outbound SPD and the answer cached
//!   per flow (5-tuple), so the steady-state cost is one hash lookup. Only an `ipsec` SP with an
//!   SA protects; anything else is dropped (fail closed) and counted as `esp_no_sa`.
//! - Inbound, the SA is found by SPI (RFC 4303 §2.1 lets a receiver do so for unicast), the
//!   outer addresses must be the SA's (`esp_address_mismatch`, unless `any`), the packet is
//!   verified and decrypted (the replay ceiling persisted first when it must rise, see
//!   `replay_store`), and the result must match an inbound `ipsec` SP naming that SA
//!   (RFC 4301 §5.2), else `esp_policy_mismatch`; tunnels, ESP and AH inside are refused.
//! - 3DES SAs stop after their block limit in each direction (`esp_volume_limit`).
//! - Nothing here allocates per packet once the caches and buffers are warm.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv6Addr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::warn;

use super::EngineError;
use super::mss;
use super::reassembly;
use super::replay_store::{self, Ceiling, KeyId, Refused, ReplayStore};
use super::seq::SeqStore;
use super::sys::{Incoming, Outgoing};
use crate::crypto::{Decapsulated, EspError, InboundSa, OutboundSa, SaConfig};
use crate::model::SaCount;
use crate::model::packet::{Parsed, parse_frame};
use crate::model::{
    Action, Direction, EncryptionAlgorithm, Flow, IntegrityAlgorithm, Key, Mode, Sa, Spd,
};

/// A fake Ethernet header (zero MACs, `EtherType` IPv6) so `parse_frame`, which reads Ethernet
/// frames, can parse the bare IPv6 packets of the TUN device and the raw socket.
pub const FAKE_ETHERNET: [u8; 14] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x86, 0xdd];

/// Flow-cache entries per direction; past it the cache starts over (a port scan must not grow
/// it without bound).
pub const FLOW_CACHE_LIMIT: usize = 65_536;

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
    pub fn add(&self, stat: Stat, n: u64) {
        self.cells[stat as usize].0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn bump(&self, stat: Stat) {
        self.add(stat, 1);
    }

    pub fn get(&self, stat: Stat) -> u64 {
        self.cells[stat as usize].0.load(Ordering::Relaxed)
    }

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

impl SaCells {
    fn packet(&self, bytes: usize) {
        self.packets.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn bump(cell: &AtomicU64) {
        cell.fetch_add(1, Ordering::Relaxed);
    }

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

/// What makes two SAs "the same" for keeping state: everything that shapes the packets. The
/// name and slot id are not part of it.
#[derive(Clone, PartialEq, Eq)]
struct SaIdentity {
    spi: u32,
    mode: Mode,
    source: Ipv6Addr,
    destination: Ipv6Addr,
    encryption: EncryptionAlgorithm,
    encryption_key: Key,
    integrity: IntegrityAlgorithm,
    integrity_key: Key,
}

/// Upper-layer protocols a decrypted packet may not carry (either mode): IPv4 (4) and IPv6 (41)
/// in IP, ESP (50), AH (51). Whatever they hold was never matched against a policy.
const UNCHECKABLE: [u8; 4] = [4, 41, 50, 51];

impl SaIdentity {
    /// Whether `packet` (an IPv6 header, ESP after it) travels between this SA's endpoints;
    /// `::` (`any`) matches every address.
    fn binds(&self, packet: &[u8]) -> bool {
        let matches = |want: Ipv6Addr, got: &[u8]| want.is_unspecified() || want.octets() == got;
        matches(self.source, &packet[8..24]) && matches(self.destination, &packet[24..40])
    }

    fn of(sa: &Sa) -> Self {
        Self {
            spi: sa.spi,
            mode: sa.mode,
            source: sa.source.unwrap_or(Ipv6Addr::UNSPECIFIED),
            destination: sa.destination.unwrap_or(Ipv6Addr::UNSPECIFIED),
            encryption: sa.encryption,
            encryption_key: sa.encryption_key.clone(),
            integrity: sa.integrity,
            integrity_key: sa.integrity_key.clone(),
        }
    }

    /// Which persisted replay ceiling belongs to this SA (see `replay_store`).
    fn key_id(&self) -> KeyId {
        replay_store::key_id(
            self.spi,
            self.encryption.as_str(),
            self.encryption_key.as_bytes(),
            self.integrity.as_str(),
            self.integrity_key.as_bytes(),
        )
    }

    fn config(&self) -> SaConfig<'_> {
        SaConfig {
            spi: self.spi,
            mode: self.mode,
            source: self.source,
            destination: self.destination,
            encryption: self.encryption,
            encryption_key: self.encryption_key.as_bytes(),
            integrity: self.integrity,
            integrity_key: self.integrity_key.as_bytes(),
        }
    }
}

struct OutEntry {
    identity: SaIdentity,
    name: String,
    sa: OutboundSa,
    /// The persisted reservation: this SA may send up to this sequence number.
    reserved: u32,
    /// Exhaustion is logged once per SA.
    exhausted_logged: bool,
    /// Cipher blocks encrypted so far (3DES SAs only; see [`Volume`]).
    volume: Volume,
    /// Retries of a failed reservation write, spaced out.
    seq_backoff: Backoff,
    cells: Arc<SaCells>,
}

struct InEntry {
    identity: SaIdentity,
    name: String,
    sa: InboundSa,
    /// The persisted replay ceiling and the policy for raising it.
    key_id: KeyId,
    ceiling: Ceiling,
    /// Cipher blocks decrypted so far (3DES SAs only).
    volume: Volume,
    cells: Arc<SaCells>,
}

/// Spaces out retries of a failed state write (a full disk): 1 s, doubling up to 60 s. Each
/// failed attempt is logged by the caller, so the log is rate-limited too.
#[derive(Debug, Default)]
struct Backoff {
    retry_at: Option<Instant>,
    delay: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_secs(1);
    const MAX: Duration = Duration::from_secs(60);

    /// True while the last failure's delay runs (reads the clock only then).
    fn waiting(&mut self) -> bool {
        match self.retry_at {
            Some(at) if Instant::now() < at => true,
            Some(_) => {
                self.retry_at = None;
                false
            }
            None => false,
        }
    }

    /// Records a failure; returns the delay before the next attempt.
    fn failed(&mut self) -> Duration {
        self.delay = if self.delay.is_zero() {
            Self::FIRST
        } else {
            (self.delay * 2).min(Self::MAX)
        };
        self.retry_at = Some(Instant::now() + self.delay);
        self.delay
    }

    fn succeeded(&mut self) {
        self.delay = Duration::ZERO;
    }
}

/// Sweet32 (CVE-2016-2183): a 64-bit block cipher leaks plaintext after about 2^32 blocks under
/// one key (the birthday bound). A 3DES SA stops protecting, and accepting, once it has
/// encrypted (or decrypted) this many blocks, far below that bound.
pub const DEFAULT_TDES_BLOCK_LIMIT: u64 = 1 << 30;

/// One direction's block count of one SA, with the limit that applies to it (`u64::MAX` for
/// ciphers with 128-bit blocks, which this limit does not concern).
#[derive(Debug, Clone, Copy)]
struct Volume {
    blocks: u64,
    limit: u64,
    logged: bool,
}

impl Volume {
    fn new(encryption: EncryptionAlgorithm, tdes_limit: u64) -> Self {
        let limit = if encryption == EncryptionAlgorithm::TripleDesCbc {
            tdes_limit
        } else {
            u64::MAX
        };
        Self {
            blocks: 0,
            limit,
            logged: false,
        }
    }

    /// 8-byte blocks the cipher processes for a packet of `bytes` (an upper bound).
    fn blocks(bytes: usize) -> u64 {
        (bytes as u64).div_ceil(8) + 1
    }

    /// Whether a packet of `bytes` stays within the limit; logs (once) when it does not.
    fn allows(&mut self, bytes: usize, name: &str, direction: &str) -> bool {
        if self.limit == u64::MAX {
            return true;
        }
        if self.blocks.saturating_add(Self::blocks(bytes)) > self.limit {
            if !self.logged {
                self.logged = true;
                warn!(
                    sa = %name, direction, limit = self.limit,
                    "3des sa reached its block limit (sweet32): it no longer protects or accepts traffic; replace it, preferably with aes128-cbc"
                );
            }
            return false;
        }
        true
    }

    /// Counts a packet of `bytes` as processed.
    fn add(&mut self, bytes: usize) {
        if self.limit != u64::MAX {
            self.blocks = self.blocks.saturating_add(Self::blocks(bytes));
        }
    }

    /// [`Self::allows`], then [`Self::add`] if it does.
    fn charge(&mut self, bytes: usize, name: &str, direction: &str) -> bool {
        let allowed = self.allows(bytes, name, direction);
        if allowed {
            self.add(bytes);
        }
        allowed
    }
}

/// Outbound state: owned by the outbound worker, replaced by [`rebuild`].
pub struct OutTable {
    spd: Arc<Spd>,
    sas: Vec<OutEntry>,
    by_name: HashMap<String, usize>,
    /// Flow -> index into `sas`, or `None` when the flow must be dropped.
    cache: HashMap<Flow, Option<usize>>,
    /// The last lookup, in front of `cache`.
    last: Option<(Flow, Option<usize>)>,
    /// What TCP SYNs are clamped to (`mss::for_overheads` of the SAs).
    mss: u16,
    /// Block limit of 3DES SAs ([`DEFAULT_TDES_BLOCK_LIMIT`]).
    tdes_block_limit: u64,
}

/// Inbound state: owned by the inbound worker, replaced by [`rebuild`].
pub struct InTable {
    spd: Arc<Spd>,
    sas: Vec<InEntry>,
    by_spi: HashMap<u32, usize>,
    /// (inner flow, SA index) -> the inbound SP (id, seq) that lets it in, if one does.
    cache: HashMap<(Flow, usize), Option<(u32, u32)>>,
    /// Packets and bytes delivered per inbound SP, keyed by (id, seq): the kernel counts what
    /// XDP matched, but ESP is matched to its SP only here, after decryption.
    sp_hits: HashMap<(u32, u32), (u64, u64)>,
    /// What TCP SYNs are clamped to (`mss::for_overheads` of the SAs).
    mss: u16,
    /// Block limit of 3DES SAs ([`DEFAULT_TDES_BLOCK_LIMIT`]).
    tdes_block_limit: u64,
}

impl Default for OutTable {
    fn default() -> Self {
        Self {
            spd: Arc::new(Spd::new()),
            sas: Vec::new(),
            by_name: HashMap::new(),
            cache: HashMap::new(),
            last: None,
            mss: mss::CLAMPED_MSS,
            tdes_block_limit: DEFAULT_TDES_BLOCK_LIMIT,
        }
    }
}

impl Default for InTable {
    fn default() -> Self {
        Self {
            spd: Arc::new(Spd::new()),
            sas: Vec::new(),
            by_spi: HashMap::new(),
            cache: HashMap::new(),
            sp_hits: HashMap::new(),
            mss: mss::CLAMPED_MSS,
            tdes_block_limit: DEFAULT_TDES_BLOCK_LIMIT,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Makes `out` and `inb` equal `spd` (see the module contract) and returns the counters by
/// `Sa::id`. The caller holds both tables.
///
/// # Errors
/// [`EngineError::SaConfig`] when an SA cannot be keyed; nothing changed then.
pub fn rebuild(
    spd: &Spd,
    out: &mut OutTable,
    inb: &mut InTable,
    store: &Mutex<SeqStore>,
    replay: &Mutex<ReplayStore>,
) -> Result<BTreeMap<u32, Arc<SaCells>>, EngineError> {
    // Pass 1: key every SA that cannot keep its state; fail before touching anything.
    let old_out: HashMap<u32, usize> = out
        .sas
        .iter()
        .enumerate()
        .map(|(i, e)| (e.identity.spi, i))
        .collect();
    let old_in: HashMap<u32, usize> = inb
        .sas
        .iter()
        .enumerate()
        .map(|(i, e)| (e.identity.spi, i))
        .collect();
    let identities: Vec<SaIdentity> = spd.sas().iter().map(SaIdentity::of).collect();
    let mut fresh = Vec::with_capacity(identities.len());
    for (sa, identity) in spd.sas().iter().zip(&identities) {
        let kept_out = old_out
            .get(&sa.spi)
            .is_some_and(|i| out.sas[*i].identity == *identity);
        let kept_in = old_in
            .get(&sa.spi)
            .is_some_and(|i| inb.sas[*i].identity == *identity);
        if kept_out && kept_in {
            fresh.push(None);
        } else {
            let config = identity.config();
            let keyed = |source| EngineError::SaConfig {
                name: sa.name.clone(),
                source,
            };
            fresh.push(Some((
                OutboundSa::new(&config).map_err(keyed)?,
                InboundSa::new(&config).map_err(keyed)?,
            )));
        }
    }

    // Pass 2: commit.
    let mut old_out: HashMap<u32, OutEntry> =
        out.sas.drain(..).map(|e| (e.identity.spi, e)).collect();
    let mut old_in: HashMap<u32, InEntry> =
        inb.sas.drain(..).map(|e| (e.identity.spi, e)).collect();
    let mut store = lock(store);
    let mut replay = lock(replay);
    let mut registry = BTreeMap::new();
    for ((sa, identity), fresh) in spd.sas().iter().zip(identities).zip(fresh) {
        let (out_entry, in_entry) = match fresh {
            None => {
                let mut o = old_out.remove(&sa.spi).expect("checked in pass 1");
                let mut i = old_in.remove(&sa.spi).expect("checked in pass 1");
                o.name.clone_from(&sa.name);
                i.name.clone_from(&sa.name);
                (o, i)
            }
            Some((mut tx, mut rx)) => {
                let reserved = store.reservation(&sa.name, sa.spi).unwrap_or(0);
                tx.resume_after(reserved);
                // Nothing at or below the persisted ceiling was ever accepted for the last time:
                // refuse it all (see `replay_store`).
                let key_id = identity.key_id();
                let ceiling = replay.ceiling(sa.spi, &key_id).unwrap_or(0);
                rx.start_above(ceiling);
                let cells = Arc::new(SaCells::default());
                (
                    OutEntry {
                        identity: identity.clone(),
                        name: sa.name.clone(),
                        sa: tx,
                        reserved,
                        exhausted_logged: false,
                        volume: Volume::new(sa.encryption, out.tdes_block_limit),
                        seq_backoff: Backoff::default(),
                        cells: Arc::clone(&cells),
                    },
                    InEntry {
                        identity,
                        name: sa.name.clone(),
                        sa: rx,
                        key_id,
                        ceiling: Ceiling::new(ceiling),
                        volume: Volume::new(sa.encryption, inb.tdes_block_limit),
                        cells,
                    },
                )
            }
        };
        registry.insert(sa.id, Arc::clone(&out_entry.cells));
        out.sas.push(out_entry);
        inb.sas.push(in_entry);
    }
    let live: HashSet<(String, u32)> = spd.sas().iter().map(|s| (s.name.clone(), s.spi)).collect();
    store.prune_if_over(&live);
    // Removed (or rekeyed) inbound SAs accept nothing any more: their ceilings can come down to
    // what they accepted, so a re-add refuses nothing the peer has not sent yet.
    let gone = old_in.values().filter_map(|e| {
        let highest = e.sa.replay_window().highest();
        (highest > 0).then_some((e.identity.spi, e.key_id, highest))
    });
    if let Err(error) = replay.settle(gone) {
        warn!(%error, "cannot settle the replay ceilings of removed sas");
    }
    let live: HashSet<(u32, KeyId)> = inb.sas.iter().map(|e| (e.identity.spi, e.key_id)).collect();
    replay.prune_if_over(&live);

    let snapshot = Arc::new(spd.clone());
    out.spd = Arc::clone(&snapshot);
    out.by_name = out
        .sas
        .iter()
        .enumerate()
        .map(|(i, e)| (e.name.clone(), i))
        .collect();
    out.cache.clear();
    out.last = None;
    inb.spd = snapshot;
    // Only SAs an inbound ipsec SP names receive; ESP under another SPI of ours (say, an
    // outbound SA's) is unknown, as it is to XDP.
    inb.by_spi = inb
        .sas
        .iter()
        .enumerate()
        .filter(|(_, e)| spd.is_inbound_sa(&e.name))
        .map(|(i, e)| (e.identity.spi, i))
        .collect();
    inb.cache.clear();
    let mss = mss::for_overheads(out.sas.iter().map(|e| e.sa.max_overhead()));
    out.mss = mss;
    inb.mss = mss;
    // A policy's counters end with it (its id may be reused by a newer policy).
    let live: HashSet<(u32, u32)> = spd.sps().iter().map(|sp| (sp.id, sp.seq)).collect();
    inb.sp_hits.retain(|key, _| live.contains(key));
    Ok(registry)
}

/// The flow of a frame (fake Ethernet header + IPv6 packet), or `None` if it cannot be parsed.
fn flow_of(frame: &[u8]) -> Option<Flow> {
    match parse_frame(frame, false) {
        Parsed::Flow(flow) => Some(flow),
        _ => None,
    }
}

/// Where ESP starts in a packet `encapsulate` built (after the headers transport mode keeps).
fn esp_offset(packet: &[u8]) -> Option<usize> {
    let mut next_header = *packet.get(6)?;
    let mut offset = 40;
    for _ in 0..=crate::model::packet::MAX_EXT_HEADERS {
        match next_header {
            50 => return Some(offset),
            0 | 43 | 60 => {
                let h = packet.get(offset..offset + 2)?;
                next_header = h[0];
                offset += (usize::from(h[1]) + 1) * 8;
            }
            44 => {
                next_header = *packet.get(offset)?;
                offset += 8;
            }
            _ => return None,
        }
    }
    None
}

fn address(bytes: &[u8]) -> Ipv6Addr {
    let mut octets = [0; 16];
    octets.copy_from_slice(&bytes[..16]);
    Ipv6Addr::from(octets)
}

/// Empty tables of both directions whose 3DES SAs stop after `tdes_block_limit` blocks.
pub fn tables(tdes_block_limit: u64) -> (OutTable, InTable) {
    let out = OutTable {
        tdes_block_limit,
        ..OutTable::default()
    };
    let inb = InTable {
        tdes_block_limit,
        ..InTable::default()
    };
    (out, inb)
}

impl OutTable {
    /// What the outbound worker clamps TCP SYNs to (see `mss`).
    pub fn mss(&self) -> u16 {
        self.mss
    }

    /// The SA protecting `flow`, from the cache or the outbound SPD.
    fn lookup(&mut self, flow: &Flow) -> Option<usize> {
        // Segments of one TSO packet share their flow: no hashing for the second and later.
        if let Some((last, hit)) = &self.last
            && last == flow
        {
            return *hit;
        }
        let found = self.lookup_cached(flow);
        self.last = Some((*flow, found));
        found
    }

    fn lookup_cached(&mut self, flow: &Flow) -> Option<usize> {
        if let Some(hit) = self.cache.get(flow) {
            return *hit;
        }
        let found = self
            .spd
            .classify(Direction::Out, flow)
            .filter(|sp| sp.action == Action::Ipsec)
            .and_then(|sp| sp.sa_name.as_deref())
            .and_then(|name| self.by_name.get(name).copied());
        if self.cache.len() >= FLOW_CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert(*flow, found);
        found
    }

    /// Protects one packet read from the TUN. `frame` is [`FAKE_ETHERNET`] followed by the IPv6
    /// packet. Returns `true` when `out` holds an ESP packet to send; every other outcome is
    /// counted.
    pub fn protect(
        &mut self,
        frame: &[u8],
        out: &mut Outgoing,
        stats: &EngineStats,
        store: &Mutex<SeqStore>,
    ) -> bool {
        let Some(flow) = flow_of(frame) else {
            stats.bump(Stat::Malformed);
            return false;
        };
        let Some(index) = self.lookup(&flow) else {
            stats.bump(Stat::NoSa);
            return false;
        };
        let packet = &frame[FAKE_ETHERNET.len()..];
        let entry = &mut self.sas[index];
        if entry.sa.is_exhausted() {
            entry.exhausted(stats);
            return false;
        }
        if !entry.volume.charge(packet.len(), &entry.name, "outbound") {
            stats.bump(Stat::VolumeLimit);
            SaCells::bump(&entry.cells.errors);
            return false;
        }
        if entry.seq_backoff.waiting() {
            // A reservation write failed a moment ago (disk full?): drop without retrying.
            stats.bump(Stat::SeqPersistErrors);
            SaCells::bump(&entry.cells.errors);
            return false;
        }
        let covered = lock(store).cover(
            &entry.name,
            entry.identity.spi,
            &mut entry.reserved,
            entry.sa.last_sequence(),
        );
        match covered {
            Ok(true) => entry.seq_backoff.succeeded(),
            Ok(false) => {}
            Err(e) => {
                stats.bump(Stat::SeqPersistErrors);
                SaCells::bump(&entry.cells.errors);
                let retry = entry.seq_backoff.failed();
                warn!(
                    sa = %entry.name, error = %e, retry_in = ?retry,
                    "cannot persist the esp sequence reservation; dropping this sa's packets until a retry succeeds"
                );
                return false;
            }
        }
        match entry.sa.encapsulate(packet, &mut out.buf) {
            Ok(sent) => {
                let Some(offset) = esp_offset(&out.buf) else {
                    // encapsulate always ends the chain in ESP; a miss is a bug, not a panic.
                    stats.bump(Stat::EncapErrors);
                    return false;
                };
                out.esp_offset = offset;
                out.source = address(&out.buf[8..24]);
                out.destination = sent.destination;
                out.hop_limit = out.buf[7];
                out.traffic_class = (out.buf[0] << 4) | (out.buf[1] >> 4);
                entry.cells.packet(packet.len());
                stats.bump(Stat::EncapOk);
                true
            }
            Err(EspError::SequenceExhausted) => {
                entry.exhausted(stats);
                false
            }
            Err(_) => {
                SaCells::bump(&entry.cells.errors);
                stats.bump(Stat::EncapErrors);
                false
            }
        }
    }
}

impl OutEntry {
    fn exhausted(&mut self, stats: &EngineStats) {
        stats.bump(Stat::SequenceExhausted);
        SaCells::bump(&self.cells.errors);
        if !self.exhausted_logged {
            self.exhausted_logged = true;
            warn!(
                sa = %self.name, spi = format_args!("{:#x}", self.identity.spi),
                "esp sequence numbers exhausted (2^32-1 sent): the sa stops sending and must be replaced"
            );
        }
    }
}

impl InTable {
    /// The inbound SP (id, seq) that lets `flow` arrive on SA `index` (RFC 4301 §5.2): the
    /// first SP it matches must be `ipsec` and name this SA.
    fn allowed(&mut self, flow: &Flow, index: usize) -> Option<(u32, u32)> {
        if let Some(hit) = self.cache.get(&(*flow, index)) {
            return *hit;
        }
        let name = &self.sas[index].name;
        let sp = self
            .spd
            .classify(Direction::In, flow)
            .filter(|sp| sp.action == Action::Ipsec && sp.sa_name.as_ref() == Some(name))
            .map(|sp| (sp.id, sp.seq));
        if self.cache.len() >= FLOW_CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert((*flow, index), sp);
        sp
    }

    /// Empties the replay window of the SA with `spi` and removes its persisted ceiling (the
    /// file first: on a write error nothing changed). Returns whether the SA exists.
    pub fn reset_replay(
        &mut self,
        spi: u32,
        replay: &Mutex<ReplayStore>,
    ) -> Result<bool, EngineError> {
        let Some(entry) = self.sas.iter_mut().find(|e| e.identity.spi == spi) else {
            return Ok(false);
        };
        let mut store = lock(replay);
        store
            .reset(spi, &entry.key_id)
            .map_err(|source| EngineError::ReplayFile {
                path: store.path().to_path_buf(),
                op: "write",
                source,
            })?;
        entry.sa.reset_replay();
        entry.ceiling = Ceiling::new(0);
        Ok(true)
    }

    /// On a clean stop (no worker runs any more): persists each inbound SA's highest accepted
    /// sequence number as its ceiling (see `replay_store`).
    ///
    /// # Errors
    /// The I/O error of the write; the larger ceilings on disk then stay (still safe).
    pub fn settle_ceilings(&self, replay: &Mutex<ReplayStore>) -> std::io::Result<()> {
        let values = self.sas.iter().filter_map(|e| {
            let highest = e.sa.replay_window().highest();
            (highest > 0).then_some((e.identity.spi, e.key_id, highest))
        });
        lock(replay).settle(values)
    }

    /// The housekeeping pass (every `replay_store::TIGHTEN_EVERY`, never per packet): lowers the
    /// ceiling of each inbound SA that is further ahead of what it accepted than its recent rate
    /// needs ([`Ceiling::tighten`]), in memory here and in the store, without I/O. The caller
    /// releases the inbound table and then writes the store ([`ReplayStore::flush`]). Returns
    /// how many ceilings came down.
    pub fn tighten_ceilings(&mut self, now: Instant, replay: &Mutex<ReplayStore>) -> usize {
        let mut lowered = 0;
        let mut store = None;
        for e in &mut self.sas {
            let highest = e.sa.replay_window().highest();
            if let Some(value) = e.ceiling.tighten(highest, now) {
                // Lock order: inbound table, then replay store (as the packet path).
                store
                    .get_or_insert_with(|| lock(replay))
                    .lower(e.identity.spi, &e.key_id, value);
                lowered += 1;
            }
        }
        lowered
    }

    /// Packets and bytes delivered per inbound SP id.
    pub fn sp_hits(&self) -> impl Iterator<Item = (u32, u64, u64)> + '_ {
        self.sp_hits
            .iter()
            .map(|((id, _), (packets, bytes))| (*id, *packets, *bytes))
    }

    /// Processes one received ESP packet. Returns `true` when `frame[14..]` holds the packet to
    /// write to the TUN (`frame` is reused: [`FAKE_ETHERNET`] + the packet); every other outcome
    /// is counted. `plain` is scratch space.
    pub fn receive(
        &mut self,
        slot: &mut Incoming,
        plain: &mut Vec<u8>,
        frame: &mut Vec<u8>,
        stats: &EngineStats,
        replay: &Mutex<ReplayStore>,
    ) -> bool {
        let (Some(destination), Ok(payload_len)) = (slot.destination, u16::try_from(slot.len))
        else {
            stats.bump(Stat::Malformed);
            return false;
        };
        if slot.len < 8 {
            stats.bump(Stat::Malformed);
            return false;
        }
        // Rebuild the IPv6 header the raw socket stripped: version, traffic class, payload
        // length, next header ESP, hop limit, addresses. Transport mode restores it as the
        // delivered packet's header.
        let header = &mut slot.buf[..40];
        header[0] = 0x60 | (slot.traffic_class >> 4);
        header[1] = slot.traffic_class << 4;
        header[2] = 0;
        header[3] = 0;
        header[4..6].copy_from_slice(&payload_len.to_be_bytes());
        header[6] = 50;
        header[7] = slot.hop_limit;
        header[8..24].copy_from_slice(&slot.source.octets());
        header[24..40].copy_from_slice(&destination.octets());
        self.open(&slot.buf[..40 + slot.len], plain, frame, stats, replay)
    }

    /// Processes one ESP frame from an AF_XDP socket: Ethernet, an IPv6 header with next
    /// header ESP (the only shape XDP redirects), then ESP. Same result as [`Self::receive`].
    pub fn receive_frame(
        &mut self,
        ethernet: &[u8],
        plain: &mut Vec<u8>,
        frame: &mut Vec<u8>,
        stats: &EngineStats,
        replay: &Mutex<ReplayStore>,
    ) -> bool {
        stats.bump(Stat::XskReceived);
        let eth = FAKE_ETHERNET.len();
        let well_formed = ethernet.len() >= eth + 40 + 8
            && ethernet[12..14] == FAKE_ETHERNET[12..14]
            && ethernet[eth] >> 4 == 6
            && ethernet[eth + 6] == 50;
        if !well_formed {
            stats.bump(Stat::Malformed);
            return false;
        }
        // Ethernet may pad a frame; the IPv6 payload length says where the packet ends.
        let payload_len = usize::from(u16::from_be_bytes([ethernet[eth + 4], ethernet[eth + 5]]));
        let Some(packet) = ethernet.get(eth..eth + 40 + payload_len) else {
            stats.bump(Stat::Malformed);
            return false;
        };
        self.open(packet, plain, frame, stats, replay)
    }

    /// Decrypts and checks `packet` (an IPv6 header with next header ESP, then ESP); see
    /// [`Self::receive`].
    fn open(
        &mut self,
        packet: &[u8],
        plain: &mut Vec<u8>,
        frame: &mut Vec<u8>,
        stats: &EngineStats,
        replay: &Mutex<ReplayStore>,
    ) -> bool {
        if packet.len() < 40 + 8 {
            stats.bump(Stat::Malformed);
            return false;
        }
        let spi = u32::from_be_bytes([packet[40], packet[41], packet[42], packet[43]]);
        let Some(&index) = self.by_spi.get(&spi) else {
            stats.bump(Stat::UnknownSpi);
            return false;
        };
        let entry = &mut self.sas[index];
        // The SA is bound to its endpoints (unless `any`): ESP under the right SPI from or to
        // another address, our own outbound ESP reflected back among them, is not its traffic.
        // Checked before any cryptography, so it never moves the replay window.
        if !entry.identity.binds(packet) {
            SaCells::bump(&entry.cells.errors);
            stats.bump(Stat::AddressMismatch);
            return false;
        }
        let InEntry {
            sa,
            ceiling,
            identity,
            key_id,
            name,
            volume,
            cells,
        } = entry;
        let transport = identity.mode == Mode::Transport;
        let admit = |seq| match ceiling.admit(seq, Instant::now, |value| {
            lock(replay).raise(identity.spi, key_id, value)
        }) {
            Ok(()) => true,
            Err(Refused::WriteFailed(error)) => {
                warn!(
                    sa = %name, %error,
                    "cannot persist the replay ceiling; refusing new esp on this sa (retrying with back-off)"
                );
                false
            }
            Err(Refused::BackingOff) => false,
        };
        // Checked before, charged after decryption: forged packets cannot use up the volume.
        if !volume.allows(packet.len(), name, "inbound") {
            SaCells::bump(&cells.errors);
            stats.bump(Stat::VolumeLimit);
            return false;
        }
        match sa.decapsulate_gated(packet, plain, admit) {
            Ok(Decapsulated::Deliver { .. }) => {
                volume.add(packet.len());
                cells.packet(plain.len());
                stats.bump(Stat::DecapOk);
            }
            Ok(Decapsulated::Dummy { .. }) => {
                volume.add(packet.len());
                stats.bump(Stat::Dummy);
                return false;
            }
            Err(EspError::AuthFailed) => {
                SaCells::bump(&cells.auth_failures);
                stats.bump(Stat::AuthFailures);
                return false;
            }
            Err(EspError::Replay { .. }) => {
                SaCells::bump(&cells.replay_drops);
                stats.bump(Stat::ReplayDrops);
                return false;
            }
            Err(EspError::NotPersisted { .. }) => {
                SaCells::bump(&cells.errors);
                stats.bump(Stat::ReplayPersistErrors);
                return false;
            }
            Err(_) => {
                SaCells::bump(&cells.errors);
                stats.bump(Stat::DecapErrors);
                return false;
            }
        }
        frame.clear();
        frame.extend_from_slice(&FAKE_ETHERNET);
        frame.extend_from_slice(plain);
        let Some(flow) = flow_of(frame) else {
            stats.bump(Stat::PolicyMismatch);
            return false;
        };
        // A policy selects on the upper-layer header; behind these it would check the wrong
        // one (an inner packet, or a header it cannot see), so they are never delivered. A
        // fragment is refused in transport mode only: ESP there protects whole datagrams
        // (RFC 4303 §3.3.4), while a tunnel may carry fragments of a host behind its peer.
        if UNCHECKABLE.contains(&flow.next_header)
            || (transport && reassembly::has_fragment_header(&frame[FAKE_ETHERNET.len()..]))
        {
            stats.bump(Stat::InnerProtocolRefused);
            return false;
        }
        let Some(sp) = self.allowed(&flow, index) else {
            stats.bump(Stat::PolicyMismatch);
            return false;
        };
        let hits = self.sp_hits.entry(sp).or_default();
        hits.0 += 1;
        hits.1 += plain.len() as u64;
        // The local stack answers a SYN with segments no larger than its MSS (see `mss`).
        mss::clamp(&mut frame[FAKE_ETHERNET.len()..], self.mss);
        stats.bump(Stat::Delivered);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{SaAddArgs, SaRemoveArgs, SpAddArgs, SpRemoveArgs};

    const A: &str = "fd00:ee::1";
    const B: &str = "fd00:ee::2";

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
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
        }
    }

    fn sp_args(name: &str, src: &str, dst: &str, dir: &str, sa: &str) -> SpAddArgs {
        SpAddArgs {
            sp_source: s(&format!("{src}/128")),
            sp_destination: s(&format!("{dst}/128")),
            source_port: s("any"),
            destination_port: s("any"),
            upper_layer_protocol: s("any"),
            flow_direction: s(dir),
            action: s("ipsec"),
            sp_mode: None,
            sa_name: s(sa),
            sp_name: s(name),
            priority: None,
        }
    }

    /// Side a (`local` = A) or b of the mirrored configuration the integration test uses.
    fn side(local: &str, peer: &str) -> Spd {
        let mut spd = Spd::new();
        spd.add_sa(&sa_args("a2b", A, B, "0x1001"))
            .expect("adding a2b");
        spd.add_sa(&sa_args("b2a", B, A, "0x2001"))
            .expect("adding b2a");
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

    struct Side {
        out: OutTable,
        inb: InTable,
        store: Mutex<SeqStore>,
        replay: Mutex<ReplayStore>,
        stats: EngineStats,
        registry: BTreeMap<u32, Arc<SaCells>>,
        dir: Arc<tempfile::TempDir>,
    }

    impl Side {
        fn new(spd: &Spd) -> Self {
            Self::in_dir(
                spd,
                Arc::new(tempfile::tempdir().expect("creating a temp dir")),
            )
        }

        /// A side whose state lives in `dir`: a second one on the same `dir` is a restart.
        fn in_dir(spd: &Spd, dir: Arc<tempfile::TempDir>) -> Self {
            let store = Mutex::new(SeqStore::open(dir.path()).expect("opening the store"));
            let replay = Mutex::new(ReplayStore::open(dir.path()).expect("opening the store"));
            let mut side = Self {
                out: OutTable::default(),
                inb: InTable::default(),
                store,
                replay,
                stats: EngineStats::default(),
                registry: BTreeMap::new(),
                dir,
            };
            side.update(spd);
            side
        }

        fn update(&mut self, spd: &Spd) {
            self.registry = rebuild(spd, &mut self.out, &mut self.inb, &self.store, &self.replay)
                .expect("rebuilding the tables");
        }

        /// Protects `packet`; returns what the raw socket would send, as the receiver's raw
        /// socket would deliver it.
        fn protect(&mut self, packet: &[u8]) -> Option<Incoming> {
            let mut frame = FAKE_ETHERNET.to_vec();
            frame.extend_from_slice(packet);
            let mut out = Outgoing::new();
            if !self.out.protect(&frame, &mut out, &self.stats, &self.store) {
                return None;
            }
            let esp = &out.buf[out.esp_offset..];
            let mut slot = Incoming::new();
            slot.buf[40..40 + esp.len()].copy_from_slice(esp);
            slot.len = esp.len();
            slot.source = out.source;
            slot.destination = Some(out.destination);
            slot.hop_limit = out.hop_limit;
            Some(slot)
        }

        fn receive(&mut self, slot: &mut Incoming) -> Option<Vec<u8>> {
            let (mut plain, mut frame) = (Vec::new(), Vec::new());
            self.inb
                .receive(slot, &mut plain, &mut frame, &self.stats, &self.replay)
                .then(|| frame[14..].to_vec())
        }

        fn sa(&self, id: u32) -> SaCount {
            self.registry[&id].snapshot()
        }
    }

    fn udp(src: &str, dst: &str, dport: u16, payload: usize) -> Vec<u8> {
        let len = u16::try_from(8 + payload).expect("fits");
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&src.parse::<Ipv6Addr>().expect("addr").octets());
        p.extend_from_slice(&dst.parse::<Ipv6Addr>().expect("addr").octets());
        p.extend_from_slice(&[0x30, 0x39]);
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 0]);
        p.extend((0..payload).map(|i| i as u8));
        p
    }

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

    #[test]
    fn a_to_b_round_trip_counts_both_sides() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        let packet = udp(A, B, 5000, 100);
        let mut wire = a.protect(&packet).expect("a protects");
        assert_eq!(wire.destination, Some(B.parse().expect("addr")));
        let got = b.receive(&mut wire).expect("b delivers");
        assert_eq!(got, packet);
        // Sa ids: a2b is 0 on both sides.
        assert_eq!(a.sa(0).packets, 1);
        assert_eq!(a.sa(0).bytes, packet.len() as u64);
        assert_eq!(b.sa(0).packets, 1);
        assert_eq!(b.stats.get(Stat::Delivered), 1);
        // Replaying the same packet is refused by b's window.
        let mut again = Incoming::new();
        again.buf[..].copy_from_slice(&wire.buf[..]);
        again.len = wire.len;
        again.source = wire.source;
        again.destination = wire.destination;
        assert!(b.receive(&mut again).is_none());
        assert_eq!(b.sa(0).replay_drops, 1);
    }

    /// `slot` as XDP would hand it to AF_XDP: Ethernet, IPv6 header, ESP, Ethernet padding.
    fn xsk_frame(slot: &Incoming) -> Vec<u8> {
        let mut frame = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x86, 0xdd];
        let mut header = [0u8; 40];
        header[0] = 0x60;
        header[4..6].copy_from_slice(&u16::try_from(slot.len).expect("fits").to_be_bytes());
        header[6] = 50;
        header[7] = slot.hop_limit;
        header[8..24].copy_from_slice(&slot.source.octets());
        header[24..40].copy_from_slice(&slot.destination.expect("destination").octets());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(&slot.buf[40..40 + slot.len]);
        frame.extend_from_slice(&[0xee; 6]);
        frame
    }

    #[test]
    fn af_xdp_frames_are_opened_like_raw_socket_packets_and_bad_ones_counted() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        let (mut plain, mut out) = (Vec::new(), Vec::new());
        let packet = udp(A, B, 5000, 100);
        let good = xsk_frame(&a.protect(&packet).expect("a protects"));
        assert!(
            b.inb
                .receive_frame(&good, &mut plain, &mut out, &b.stats, &b.replay)
        );
        assert_eq!(
            out[14..],
            packet[..],
            "the padding after the packet is not delivered"
        );
        assert_eq!(b.sa(0).packets, 1);

        let fresh = xsk_frame(&a.protect(&packet).expect("a protects"));
        let mut bad_frames = vec![
            fresh[..14 + 40 + 7].to_vec(),      // cut inside the ESP header
            fresh[..fresh.len() - 30].to_vec(), // shorter than its payload length says
        ];
        let mut not_ipv6 = fresh.clone();
        not_ipv6[12..14].copy_from_slice(&[0x08, 0x00]);
        bad_frames.push(not_ipv6);
        let mut not_esp = fresh.clone();
        not_esp[14 + 6] = 17;
        bad_frames.push(not_esp);
        for (i, bad) in bad_frames.iter().enumerate() {
            assert!(
                !b.inb
                    .receive_frame(bad, &mut plain, &mut out, &b.stats, &b.replay),
                "bad frame {i} was delivered"
            );
        }
        assert_eq!(b.stats.get(Stat::Malformed), bad_frames.len() as u64);
        assert_eq!(b.stats.get(Stat::XskReceived), 1 + bad_frames.len() as u64);
        // The intact frame still opens: nothing above consumed its sequence number.
        assert!(
            b.inb
                .receive_frame(&fresh, &mut plain, &mut out, &b.stats, &b.replay)
        );
        assert!(
            !b.inb
                .receive_frame(&fresh, &mut plain, &mut out, &b.stats, &b.replay),
            "a replayed frame is refused"
        );
        assert_eq!(b.sa(0).replay_drops, 1);
    }

    #[test]
    fn unknown_spi_forged_icv_and_no_sa_are_counted() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        // No outbound SP for this destination: dropped, not sent in clear.
        assert!(a.protect(&udp(A, "fd00:ee::3", 1, 1)).is_none());
        assert_eq!(a.stats.get(Stat::NoSa), 1);

        let mut wire = a.protect(&udp(A, B, 1, 10)).expect("a protects");
        let last = 40 + wire.len - 1;
        wire.buf[last] ^= 1;
        assert!(b.receive(&mut wire).is_none());
        assert_eq!(b.sa(0).auth_failures, 1);

        let mut wire = a.protect(&udp(A, B, 1, 10)).expect("a protects");
        wire.buf[40..44].copy_from_slice(&0x9999u32.to_be_bytes());
        assert!(b.receive(&mut wire).is_none());
        assert_eq!(b.stats.get(Stat::UnknownSpi), 1);
    }

    fn copy(slot: &Incoming) -> Incoming {
        let mut c = Incoming::new();
        c.buf[..].copy_from_slice(&slot.buf[..]);
        c.len = slot.len;
        c.source = slot.source;
        c.destination = slot.destination;
        c.hop_limit = slot.hop_limit;
        c
    }

    fn seq_of(slot: &Incoming) -> u32 {
        u32::from_be_bytes(slot.buf[44..48].try_into().expect("4 bytes"))
    }

    #[test]
    fn captured_esp_is_refused_after_a_restart_and_a_re_add_until_reset() {
        let mut a = Side::new(&side(A, B));
        let spd_b = side(B, A);
        let mut b = Side::new(&spd_b);
        let captured: Vec<Incoming> = (0..5)
            .map(|_| a.protect(&udp(A, B, 5000, 10)).expect("a protects"))
            .collect();
        for slot in &captured {
            assert!(b.receive(&mut copy(slot)).is_some(), "first delivery");
        }
        let text = std::fs::read_to_string(b.dir.path().join(replay_store::FILE_NAME))
            .expect("the ceiling is on disk before the first packet is accepted");
        assert!(text.contains("\"ceiling\""), "{text}");

        // Restart (kill -9: nothing saved at exit): the captured stream is refused in full.
        let mut b = Side::in_dir(&spd_b, Arc::clone(&b.dir));
        for slot in &captured {
            assert!(
                b.receive(&mut copy(slot)).is_none(),
                "replayed after a restart"
            );
        }
        assert_eq!(b.stats.get(Stat::ReplayDrops), 5);
        // The sender's later packets get through once they pass the ceiling (the price of a
        // restart: the numbers between what was accepted and the ceiling).
        let mut delivered = 0;
        for _ in 0..replay_store::MIN_STEP + 2 {
            let mut slot = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
            delivered += usize::from(b.receive(&mut slot).is_some());
        }
        assert!(delivered >= 1, "traffic resumes above the ceiling");

        // Removing the SA and adding it again (same SPI and keys) keeps the ceiling.
        let mut empty = spd_b.clone();
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
        b.update(&empty);
        b.update(&spd_b);
        let before = b.stats.get(Stat::ReplayDrops);
        for slot in &captured {
            assert!(
                b.receive(&mut copy(slot)).is_none(),
                "replayed after a re-add"
            );
        }
        assert_eq!(b.stats.get(Stat::ReplayDrops), before + 5);

        // The operator's reset: the window and the ceiling are gone, so the old stream is
        // accepted again (what `xipsec sa reset-replay` warns about), also after a restart.
        assert!(b.inb.reset_replay(0x1001, &b.replay).expect("resetting"));
        assert!(
            !b.inb.reset_replay(0x9999, &b.replay).expect("resetting"),
            "no such sa"
        );
        let mut b = Side::in_dir(&spd_b, Arc::clone(&b.dir));
        assert_eq!(seq_of(&captured[0]), 1);
        assert!(
            b.receive(&mut copy(&captured[0])).is_some(),
            "accepted after a reset"
        );
    }

    #[test]
    fn a_reservation_that_cannot_be_written_drops_and_backs_off() {
        let mut a = Side::new(&side(A, B));
        std::fs::create_dir(a.dir.path().join("esp-seq.json.tmp")).expect("blocking writes");
        for _ in 0..50 {
            assert!(
                a.protect(&udp(A, B, 5000, 10)).is_none(),
                "sent without a reservation"
            );
        }
        assert_eq!(a.stats.get(Stat::SeqPersistErrors), 50);
        let entry = &a.out.sas[0];
        assert_eq!(
            entry.seq_backoff.delay,
            Backoff::FIRST,
            "one attempt, then backing off"
        );
        assert!(entry.seq_backoff.retry_at.is_some());
        // Once the disk has room again and the back-off ran out, packets flow.
        std::fs::remove_dir(a.dir.path().join("esp-seq.json.tmp")).expect("unblocking");
        a.out.sas[0].seq_backoff.retry_at = Some(Instant::now());
        assert!(a.protect(&udp(A, B, 5000, 10)).is_some());
        assert_eq!(a.out.sas[0].seq_backoff.delay, Duration::ZERO);
    }

    #[test]
    fn after_a_clean_stop_the_peer_s_next_packet_is_accepted_at_once() {
        let mut a = Side::new(&side(A, B));
        let spd_b = side(B, A);
        let mut b = Side::new(&spd_b);
        let captured: Vec<Incoming> = (0..5)
            .map(|_| a.protect(&udp(A, B, 5000, 10)).expect("a protects"))
            .collect();
        for slot in &captured {
            assert!(b.receive(&mut copy(slot)).is_some());
        }
        b.inb.settle_ceilings(&b.replay).expect("settling");
        let mut b = Side::in_dir(&spd_b, Arc::clone(&b.dir));
        for slot in &captured {
            assert!(
                b.receive(&mut copy(slot)).is_none(),
                "replayed after a clean stop"
            );
        }
        let mut next = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
        assert_eq!(seq_of(&next), 6);
        assert!(
            b.receive(&mut next).is_some(),
            "the next packet costs nothing"
        );
    }

    #[test]
    fn a_crash_after_a_burst_then_slow_traffic_refuses_only_a_few_numbers() {
        let mut a = Side::new(&side(A, B));
        let spd_b = side(B, A);
        let mut b = Side::new(&spd_b);
        let on_disk = |b: &Side| {
            ReplayStore::open(b.dir.path())
                .expect("reloading")
                .ceiling(0x1001, &b.inb.sas[0].key_id)
                .unwrap_or(0)
        };
        // The housekeeping pass, as the engine's thread runs it, on a clock of its own.
        let t0 = Instant::now();
        let pass = |b: &mut Side, at: Duration| {
            b.inb.tighten_ceilings(t0 + at, &b.replay);
            b.replay
                .lock()
                .expect("the store")
                .flush()
                .expect("writing");
        };
        let mut send = |b: &mut Side| {
            let mut slot = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
            (seq_of(&slot), b.receive(&mut slot).is_some())
        };
        pass(&mut b, Duration::ZERO);
        // A burst: 5,000 packets within the first 500 ms.
        for _ in 0..5000 {
            assert!(send(&mut b).1, "burst delivered");
        }
        pass(&mut b, Duration::from_millis(500));
        let highest = b.inb.sas[0].sa.replay_window().highest();
        assert_eq!(highest, 5000);
        assert!(
            on_disk(&b) - highest > 1000,
            "the burst wrote far ahead: {}",
            on_disk(&b)
        );
        // Then one packet a second; after the next passes the ceiling is near the top.
        for second in 1..=3u64 {
            assert!(send(&mut b).1, "slow packet delivered");
            pass(&mut b, Duration::from_millis(500 + 1000 * second));
        }
        let highest = b.inb.sas[0].sa.replay_window().highest();
        let ceiling = on_disk(&b);
        assert!(
            ceiling >= highest && ceiling - highest <= 4,
            "at most a few seconds of the slow rate ahead: {ceiling} vs {highest}"
        );

        // kill -9 (nothing settled) and a restart from the file.
        let mut b = Side::in_dir(&spd_b, Arc::clone(&b.dir));
        let mut refused = 0;
        loop {
            let (seq, delivered) = send(&mut b);
            if delivered {
                assert_eq!(
                    seq,
                    ceiling + 1,
                    "the first number above the ceiling is accepted"
                );
                break;
            }
            assert!(seq <= ceiling, "{seq} above the ceiling {ceiling} refused");
            refused += 1;
        }
        assert_eq!(refused, ceiling - highest, "only the margin is lost");

        // Idle for a second: the ceiling comes down to the highest accepted, so a crash then
        // costs the slow peer nothing.
        let highest = b.inb.sas[0].sa.replay_window().highest();
        for half in 0..4 {
            pass(&mut b, Duration::from_millis(10_000 + 500 * half));
        }
        assert_eq!(on_disk(&b), highest);
        let mut b = Side::in_dir(&spd_b, Arc::clone(&b.dir));
        assert_eq!(send(&mut b), (highest + 1, true), "accepted at once");
    }

    #[test]
    fn a_ceiling_that_cannot_be_written_refuses_new_esp() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        // The temporary file's name taken by a directory: every write fails, as on a full disk.
        std::fs::create_dir(b.dir.path().join("esp-replay.json.tmp")).expect("blocking writes");
        for _ in 0..3 {
            let mut slot = a.protect(&udp(A, B, 5000, 10)).expect("a protects");
            assert!(
                b.receive(&mut slot).is_none(),
                "accepted without a ceiling on disk"
            );
        }
        assert_eq!(b.stats.get(Stat::ReplayPersistErrors), 3);
        assert_eq!(b.stats.get(Stat::Delivered), 0);
        assert_eq!(b.sa(0).errors, 3);
        assert!(!b.dir.path().join(replay_store::FILE_NAME).exists());
    }

    /// The mirrored configuration with 3DES SAs.
    fn tdes_side(local: &str, peer: &str) -> Spd {
        let mut spd = Spd::new();
        for (name, src, dst, spi) in [("a2b", A, B, "0x1001"), ("b2a", B, A, "0x2001")] {
            let mut args = sa_args(name, src, dst, spi);
            args.encryption_algorithm = s("3des-cbc");
            args.encryption_key = s("0123456789abcdefghijklmn");
            spd.add_sa(&args).expect("adding a 3des sa");
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

    fn with_limit(spd: &Spd, limit: u64) -> Side {
        let mut side = Side::new(&Spd::new());
        (side.out, side.inb) = tables(limit);
        side.update(spd);
        side
    }

    #[test]
    fn tdes_sas_stop_at_their_block_limit_both_ways() {
        // A 100-byte UDP payload is a 148-byte packet: at most 20 blocks charged.
        let packet = udp(A, B, 5000, 100);
        let per_packet = Volume::blocks(packet.len());
        let mut a = with_limit(&tdes_side(A, B), 3 * per_packet);
        let mut b = Side::new(&tdes_side(B, A));
        for i in 0..3 {
            let mut wire = a.protect(&packet).expect("a protects within the limit");
            assert!(b.receive(&mut wire).is_some(), "packet {i} delivered");
        }
        assert!(a.protect(&packet).is_none(), "protected past the limit");
        assert!(a.protect(&udp(A, B, 5000, 1)).is_none(), "a small one too");
        assert_eq!(a.stats.get(Stat::VolumeLimit), 2);
        assert_eq!(a.stats.get(Stat::EncapOk), 3);

        // Inbound: b accepts as much as its own limit allows, then refuses authentic ESP.
        let mut a = Side::new(&tdes_side(A, B));
        let esp_len = {
            let wire = a.protect(&packet).expect("a protects");
            40 + wire.len
        };
        let mut b = with_limit(&tdes_side(B, A), 2 * Volume::blocks(esp_len));
        for _ in 0..2 {
            let mut wire = a.protect(&packet).expect("a protects");
            assert!(b.receive(&mut wire).is_some());
        }
        let mut wire = a.protect(&packet).expect("a protects");
        assert!(b.receive(&mut wire).is_none(), "accepted past the limit");
        assert_eq!(b.stats.get(Stat::VolumeLimit), 1);
        // Forged packets do not use up the volume: it is charged after authentication.
        let mut b = with_limit(&tdes_side(B, A), 2 * Volume::blocks(esp_len));
        for _ in 0..10 {
            let mut forged = a.protect(&packet).expect("a protects");
            forged.buf[40 + forged.len - 1] ^= 1;
            assert!(b.receive(&mut forged).is_none());
        }
        let mut wire = a.protect(&packet).expect("a protects");
        assert!(
            b.receive(&mut wire).is_some(),
            "forgeries used up the volume"
        );
        // AES SAs are not limited by it.
        let mut a = with_limit(&side(A, B), 1);
        assert!(a.protect(&packet).is_some());
    }

    #[test]
    fn esp_from_or_to_the_wrong_address_is_dropped_before_decryption() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        let other: Ipv6Addr = "fd00:ee::3".parse().expect("addr");
        let packet = udp(A, B, 5000, 100);
        let wire = a.protect(&packet).expect("a protects");
        // Right SPI and ICV, wrong source.
        let mut spoofed = copy(&wire);
        spoofed.source = other;
        assert!(b.receive(&mut spoofed).is_none());
        // Right SPI and ICV, wrong destination.
        let mut elsewhere = copy(&wire);
        elsewhere.destination = Some(other);
        assert!(b.receive(&mut elsewhere).is_none());
        // Reflected: the addresses swapped, as if bounced back to its sender.
        let mut reflected = copy(&wire);
        reflected.source = B.parse().expect("addr");
        reflected.destination = Some(A.parse().expect("addr"));
        assert!(b.receive(&mut reflected).is_none());
        assert_eq!(b.stats.get(Stat::AddressMismatch), 3);
        assert_eq!(b.stats.get(Stat::DecapOk), 0, "nothing was decrypted");
        // None of them moved the replay window: the genuine packet still opens.
        let mut genuine = copy(&wire);
        assert_eq!(b.receive(&mut genuine), Some(packet));
        // `any` binds nothing: the same spoofed source is then accepted by address.
        let mut any = Spd::new();
        let mut args = sa_args("a2b", "any", "any", "0x1001");
        args.sa_mode = s("transport");
        any.add_sa(&args).expect("adding a2b");
        any.add_sp(&sp_args("in", A, B, "in", "a2b"))
            .expect("adding the in sp");
        let mut c = Side::new(&any);
        let mut fresh = a.protect(&udp(A, B, 5000, 100)).expect("a protects");
        fresh.source = A.parse().expect("addr");
        assert!(c.receive(&mut fresh).is_some());
        assert_eq!(c.stats.get(Stat::AddressMismatch), 0);
    }

    #[test]
    fn tunnels_and_esp_inside_transport_mode_are_refused() {
        let mut a = Side::new(&side(A, B));
        let mut b = Side::new(&side(B, A));
        for protocol in [4u8, 41, 50, 51] {
            let mut packet = udp(A, B, 5000, 100);
            packet[6] = protocol;
            let mut wire = a.protect(&packet).expect("a protects any protocol");
            assert!(
                b.receive(&mut wire).is_none(),
                "protocol {protocol} delivered"
            );
        }
        assert_eq!(b.stats.get(Stat::InnerProtocolRefused), 4);
        assert_eq!(
            b.stats.get(Stat::DecapOk),
            4,
            "authentic, but not deliverable"
        );
        assert_eq!(b.stats.get(Stat::Delivered), 0);
        let mut wire = a.protect(&udp(A, B, 5000, 100)).expect("a protects");
        assert!(b.receive(&mut wire).is_some(), "udp still delivered");
    }

    #[test]
    fn policy_mismatch_when_the_inner_flow_belongs_to_another_sa() {
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
        let mut wire = a.protect(&udp(A, B, 6000, 10)).expect("a protects");
        assert!(b.receive(&mut wire).is_none());
        assert_eq!(b.stats.get(Stat::PolicyMismatch), 1);
        assert_eq!(b.stats.get(Stat::DecapOk), 1);
        let mut wire = a.protect(&udp(A, B, 6001, 10)).expect("a protects");
        assert!(b.receive(&mut wire).is_some());
    }

    #[test]
    fn update_keeps_state_of_unchanged_sas_and_drops_removed_ones() {
        let spd = side(A, B);
        let mut a = Side::new(&spd);
        let mut b = Side::new(&side(B, A));
        for _ in 0..3 {
            let mut wire = a.protect(&udp(A, B, 1, 1)).expect("a protects");
            b.receive(&mut wire).expect("b delivers");
        }
        a.update(&spd);
        b.update(&side(B, A));
        let mut wire = a
            .protect(&udp(A, B, 1, 1))
            .expect("a protects after update");
        assert_eq!(&wire.buf[44..48], &4u32.to_be_bytes(), "sequence kept");
        b.receive(&mut wire).expect("b delivers");
        assert_eq!(a.sa(0).packets, 4, "counters kept");
        assert_eq!(b.sa(0).packets, 4);
        // The replay window was kept too: the third packet again is a replay.
        let mut old = a.protect(&udp(A, B, 1, 1)).expect("a protects");
        old.buf[44..48].copy_from_slice(&3u32.to_be_bytes());
        assert!(b.receive(&mut old).is_none());

        // Removing the SPs and SAs drops them; the flow cache forgets them.
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
        a.update(&empty);
        assert!(a.registry.is_empty());
        assert!(a.protect(&udp(A, B, 1, 1)).is_none());
        assert_eq!(a.stats.get(Stat::NoSa), 1);

        // Re-added with the same name and SPI: resumes after the persisted reservation.
        a.update(&spd);
        let wire = a.protect(&udp(A, B, 1, 1)).expect("a protects");
        let seq = u32::from_be_bytes(wire.buf[44..48].try_into().expect("4 bytes"));
        assert!(seq > super::super::seq::RESERVATION_STEP, "got {seq}");
    }

    #[test]
    fn changed_keys_start_a_new_sa() {
        let spd = side(A, B);
        let mut a = Side::new(&spd);
        a.protect(&udp(A, B, 1, 1)).expect("a protects");
        let mut rekeyed = Spd::new();
        let mut args = sa_args("a2b", A, B, "0x1001");
        args.encryption_key = s("fedcba9876543210");
        rekeyed.add_sa(&args).expect("adding a2b");
        rekeyed
            .add_sa(&sa_args("b2a", B, A, "0x2001"))
            .expect("adding b2a");
        rekeyed
            .add_sp(&sp_args("out", A, B, "out", "a2b"))
            .expect("adding out");
        a.update(&rekeyed);
        assert_eq!(a.sa(0).packets, 0, "new sa, new counters");
    }

    #[test]
    fn esp_offset_skips_kept_extension_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 60, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[50, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[0; 8]);
        assert_eq!(esp_offset(&p), Some(48));
        p[40] = 17;
        assert_eq!(esp_offset(&p), None);
        assert_eq!(esp_offset(&p[..3]), None);
    }
}
