//! Kernel/userspace ABI: map names, keys, values, actions, counters and limits.
//!
//! Every type here is `#[repr(C)]`, `bytemuck::Pod` (the derive rejects hidden padding) and has a
//! size assertion, so both sides agree byte for byte. Addresses are `[u8; 16]` in network order;
//! ports and SPIs are host-order integers (the eBPF side converts once while parsing).
//!
//! The SPD is classified by tuple-space search: policies are grouped by *mask* (prefix lengths
//! plus which of protocol/ports are exact), and each mask costs one hash lookup in [`RULES`],
//! whatever the number of policies. The tables exist twice (generation 0 and 1): userspace fills
//! the inactive one, then flips [`CONFIG_EPOCH`], so a packet never sees a half-applied change.

use bytemuck::{Pod, Zeroable};

/// Map names (as they appear in the object file and under the pin directory).
pub const RULES: &str = "XIPSEC_RULES";
pub const MASKS: &str = "XIPSEC_MASKS";
pub const MASK_COUNT: &str = "XIPSEC_MASK_COUNT";
pub const CONFIG: &str = "XIPSEC_CONFIG";
pub const FLOW_CACHE: &str = "XIPSEC_FLOW_CACHE";
pub const SP_STATS: &str = "XIPSEC_SP_STATS";
pub const COUNTERS: &str = "XIPSEC_COUNTERS";
pub const SA_BY_SPI: &str = "XIPSEC_SA_BY_SPI";
pub const BENCH_FLOWS: &str = "XIPSEC_BENCH_FLOWS";
pub const XSKS: &str = "XIPSEC_XSKS";
pub const XSK_SLOTS: &str = "XIPSEC_XSK_SLOTS";

/// Program names.
pub const PROG_XDP_INGRESS: &str = "xdp_ingress";
pub const PROG_TC_EGRESS: &str = "tc_egress";
pub const PROG_BENCH_PARSE: &str = "xdp_bench_parse";
pub const PROG_BENCH_HASH: &str = "xdp_bench_hash";

/// Load-time global: when 1, the flow cache is written but never read (benchmarks of the miss path).
pub const GLOBAL_FORCE_CACHE_MISS: &str = "XIPSEC_FORCE_CACHE_MISS";

/// Limits.
pub const MAX_MASKS: u32 = 64;
pub const MAX_SP: u32 = 262_144;
pub const MAX_SA: u32 = 16_384;
/// Capacity of [`RULES`]: both generations of both directions.
pub const RULES_CAPACITY: u32 = 2 * MAX_SP;
pub const FLOW_CACHE_CAPACITY: u32 = 65_536;
/// At most this many IPv6 extension headers are walked; a longer chain is dropped.
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the IPv6 header; beyond, dropped.
pub const MAX_L4_OFFSET: usize = 1024;
/// Packets xipsec emits itself carry this skb mark, so TC egress never classifies them again.
pub const XIPSEC_MARK: u32 = 0x5850_5345;

/// Directions, as stored in keys.
pub const DIR_IN: u8 = 0;
pub const DIR_OUT: u8 = 1;

/// Actions, as stored in rule values.
pub const ACTION_NONE: u32 = 0;
pub const ACTION_DISCARD: u32 = 1;
pub const ACTION_IPSEC: u32 = 2;

/// `sp_id` of "no policy matched".
pub const NO_SP: u32 = u32::MAX;

/// `MaskDesc::fields` bits: which selector fields are exact in this mask.
pub const FIELD_PROTO: u8 = 1;
pub const FIELD_SPORT: u8 = 2;
pub const FIELD_DPORT: u8 = 4;

/// `FlowKey::flags` bits.
/// The packet has no visible ports or ICMPv6 type (non-first fragment, or a protocol without ports).
pub const FLOW_OPAQUE: u8 = 1;

/// IPv6 next-header values the datapath knows.
pub mod proto {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const ICMPV6: u8 = 58;
    pub const DEST_OPTS: u8 = 60;
}

/// ICMPv6 neighbour discovery types (RFC 4861): pass in clear unless a policy names them.
pub const ND_TYPE_FIRST: u8 = 133;
pub const ND_TYPE_LAST: u8 = 137;

/// What a packet looks like to the classifier: the flow-cache key and the input to masking.
/// 8-byte aligned so the eBPF side zeroes and copies it with word stores, not a byte loop.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FlowKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Host order; 0 when the flow has no ports.
    pub sport: u16,
    /// Host order; the ICMPv6 type for ICMPv6; 0 when opaque.
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    /// `FLOW_*` bits.
    pub flags: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<FlowKey>() == 40);

impl FlowKey {
    /// Neighbour discovery only matches policies that name ICMPv6 and its type.
    #[inline(always)]
    pub fn is_neighbour_discovery(&self) -> bool {
        self.proto == proto::ICMPV6
            && self.flags & FLOW_OPAQUE == 0
            && self.dport >= ND_TYPE_FIRST as u16
            && self.dport <= ND_TYPE_LAST as u16
    }
}

/// One tuple-space mask: prefix masks and which protocol/port fields are exact.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct MaskDesc {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// Lowest rank of any rule under this mask; masks are stored in ascending `min_rank` order,
    /// so the search stops once the best match so far beats the next mask's best possible rule.
    pub min_rank: u64,
    /// `FIELD_*` bits.
    pub fields: u8,
    /// Stable identity of this mask within its generation, carried in [`RuleKey::tag`]; unlike
    /// the mask's position (which follows `min_rank`), it does not change when other masks come
    /// and go, so a policy's rule key stays the same across commits.
    pub id: u8,
    pub _pad: [u8; 6],
}
const _: () = assert!(size_of::<MaskDesc>() == 48);

impl MaskDesc {
    /// Whether a packet may match any rule under this mask at all.
    #[inline(always)]
    pub fn applies_to(&self, flow: &FlowKey) -> bool {
        if flow.flags & FLOW_OPAQUE != 0 && self.fields & (FIELD_SPORT | FIELD_DPORT) != 0 {
            return false;
        }
        if flow.is_neighbour_discovery()
            && self.fields & (FIELD_PROTO | FIELD_DPORT) != (FIELD_PROTO | FIELD_DPORT)
        {
            return false;
        }
        true
    }
}

/// Key of [`RULES`]: a flow masked by one mask, tagged with generation and mask slot.
/// 8-byte aligned like [`FlowKey`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RuleKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub dir: u8,
    /// `(generation << 7) | mask id`.
    pub tag: u8,
    pub _pad: u8,
}
const _: () = assert!(size_of::<RuleKey>() == 40);

#[inline(always)]
fn and16(a: &[u8; 16], m: &[u8; 16]) -> [u8; 16] {
    let lo = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
        & u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[4], m[5], m[6], m[7]]);
    let hi = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]])
        & u64::from_ne_bytes([m[8], m[9], m[10], m[11], m[12], m[13], m[14], m[15]]);
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&lo.to_ne_bytes());
    out[8..].copy_from_slice(&hi.to_ne_bytes());
    out
}

impl RuleKey {
    /// The rule key a flow looks up under `mask` in generation `generation`.
    /// Userspace builds rule keys with this same function from the policy's own selector.
    #[inline(always)]
    pub fn masked(flow: &FlowKey, mask: &MaskDesc, generation: u8) -> Self {
        RuleKey {
            src: and16(&flow.src, &mask.src),
            dst: and16(&flow.dst, &mask.dst),
            sport: if mask.fields & FIELD_SPORT != 0 {
                flow.sport
            } else {
                0
            },
            dport: if mask.fields & FIELD_DPORT != 0 {
                flow.dport
            } else {
                0
            },
            proto: if mask.fields & FIELD_PROTO != 0 {
                flow.proto
            } else {
                0
            },
            dir: flow.dir,
            tag: (generation << 7) | (mask.id & 0x7f),
            _pad: 0,
        }
    }
}

/// Value of [`RULES`]: the best-ranked policy with that masked selector.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct RuleValue {
    /// Precedence: lower wins (the model's `Sp::rank`).
    pub rank: u64,
    pub sp_id: u32,
    pub sa_id: u32,
    /// `ACTION_*`. A whole word rather than a byte and padding: small byte arrays cost the eBPF
    /// side a call into a byte-wise `memset` to initialise.
    pub action: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<RuleValue>() == 24);

/// Value of [`FLOW_CACHE`]: a classification result, valid while `epoch` is current.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheValue {
    pub epoch: u64,
    pub sp_id: u32,
    pub sa_id: u32,
    /// `ACTION_*` (see `RuleValue::action`).
    pub action: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<CacheValue>() == 24);

/// [`CONFIG`] is an array of u64; this index holds the SPD epoch. It increments on every commit;
/// its low bit is the active generation, and flow-cache entries of older epochs are ignored.
/// One aligned 8-byte word, so readers see either the old or the new value, never a mix.
pub const CONFIG_EPOCH: u32 = 0;
/// Ifindex of the ESP engine's TUN device: TC egress redirects `ipsec` packets there. 0 means no
/// engine (daemon down): those packets are dropped, never sent in clear.
pub const CONFIG_ESP_IFINDEX: u32 = 1;
pub const CONFIG_LEN: u32 = 2;

/// AF_XDP sockets of the ESP engine ([`XSKS`], an XSKMAP). XDP hands ESP with a known SPI to
/// the socket bound to the receiving (interface, queue): [`XSK_SLOTS`] maps [`xsk_slot_key`] to
/// the socket's index in [`XSKS`]. No slot, or an empty one (its socket closed with the
/// daemon), and the packet takes the kernel's path to the engine's raw socket instead.
pub const MAX_XSK: u32 = 64;

/// Largest frame XDP hands an AF_XDP socket. The engine's UMEM frames are 4 KiB, less the
/// kernel's 256-byte XDP headroom; the bound stays below what `BPF_PROG_TEST_RUN` keeps linear
/// (3,520 bytes), so the differential test can run frames on both sides of it. Larger frames
/// (jumbo MTUs) take the raw-socket path.
pub const XSK_MAX_FRAME: usize = 3_456;

/// Key of [`XSK_SLOTS`]: the receiving interface and its RX queue.
#[inline(always)]
pub fn xsk_slot_key(ifindex: u32, queue: u32) -> u64 {
    ((ifindex as u64) << 32) | queue as u64
}

/// Index into [`MASK_COUNT`] and base into [`MASKS`] for a generation and direction.
#[inline(always)]
pub fn mask_set(generation: u8, dir: u8) -> u32 {
    (generation as u32 & 1) * 2 + (dir as u32 & 1)
}
pub const MASK_SETS: u32 = 4;

/// Per-policy counters ([`SP_STATS`], per CPU, indexed by `sp_id`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SpStats {
    pub packets: u64,
    pub bytes: u64,
}
const _: () = assert!(size_of::<SpStats>() == 16);

/// Value of [`SA_BY_SPI`] (key: SPI, host order): an inbound SA the daemon can decrypt.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct SaInfo {
    pub sa_id: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<SaInfo>() == 8);

/// Datapath counters ([`COUNTERS`], per CPU): every verdict the programs give is counted once.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Not IPv6: passed untouched.
    PassNotIpv6 = 0,
    /// No policy matched: passed in clear.
    PassNoPolicy = 1,
    /// Neighbour discovery with no explicit policy: passed.
    PassNeighbourDiscovery = 2,
    /// A `none` policy matched.
    PassPolicyNone = 3,
    /// ESP with a known SPI, handed to ESP processing.
    EspKnownSpi = 4,
    /// Our own ESP on egress (marked), not classified again.
    PassOwnEsp = 5,
    /// A `discard` policy matched.
    DropDiscard = 6,
    /// Inbound clear traffic that an `ipsec` policy says must arrive protected.
    DropIpsecClear = 7,
    /// Outbound traffic of an `ipsec` policy that could not be handed to ESP (fail closed).
    DropIpsecUnavailable = 8,
    /// Truncated or inconsistent IPv6/extension/transport headers.
    DropMalformed = 9,
    /// More extension headers than the walk bound, or transport header too deep.
    DropExtHeaderLimit = 10,
    /// ESP whose SPI is not one of ours.
    DropUnknownSpi = 11,
    /// A non-first fragment of ESP (inbound): passed for reassembly; the first fragment carries
    /// the SPI and was checked, and ESP is only decrypted after reassembly.
    PassEspFragment = 12,
    /// Outbound traffic of an `ipsec` policy handed to the ESP engine.
    IpsecToEngine = 13,
    /// ESP with a known SPI handed straight to the engine's AF_XDP socket (skipping the
    /// kernel's IPv6 input); [`Counter::EspKnownSpi`] counts the rest, which reach it by way of
    /// the kernel's raw socket.
    EspKnownSpiXsk = 14,
}

impl Counter {
    pub const COUNT: u32 = 15;
    pub const ALL: [Counter; Self::COUNT as usize] = [
        Counter::PassNotIpv6,
        Counter::PassNoPolicy,
        Counter::PassNeighbourDiscovery,
        Counter::PassPolicyNone,
        Counter::EspKnownSpi,
        Counter::PassOwnEsp,
        Counter::DropDiscard,
        Counter::DropIpsecClear,
        Counter::DropIpsecUnavailable,
        Counter::DropMalformed,
        Counter::DropExtHeaderLimit,
        Counter::DropUnknownSpi,
        Counter::PassEspFragment,
        Counter::IpsecToEngine,
        Counter::EspKnownSpiXsk,
    ];

    /// Stable snake_case name used by `xipsec stats`.
    pub fn name(self) -> &'static str {
        match self {
            Counter::PassNotIpv6 => "pass_not_ipv6",
            Counter::PassNoPolicy => "pass_no_policy",
            Counter::PassNeighbourDiscovery => "pass_neighbour_discovery",
            Counter::PassPolicyNone => "pass_policy_none",
            Counter::EspKnownSpi => "esp_known_spi",
            Counter::PassOwnEsp => "pass_own_esp",
            Counter::DropDiscard => "drop_discard",
            Counter::DropIpsecClear => "drop_ipsec_clear",
            Counter::DropIpsecUnavailable => "drop_ipsec_unavailable",
            Counter::DropMalformed => "drop_malformed",
            Counter::DropExtHeaderLimit => "drop_ext_header_limit",
            Counter::DropUnknownSpi => "drop_unknown_spi",
            Counter::PassEspFragment => "pass_esp_fragment",
            Counter::IpsecToEngine => "ipsec_to_engine",
            Counter::EspKnownSpiXsk => "esp_known_spi_xsk",
        }
    }

    pub fn is_drop(self) -> bool {
        matches!(
            self,
            Counter::DropDiscard
                | Counter::DropIpsecClear
                | Counter::DropIpsecUnavailable
                | Counter::DropMalformed
                | Counter::DropExtHeaderLimit
                | Counter::DropUnknownSpi
        )
    }
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is #[repr(C)] and bytemuck::Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::MaskDesc {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SpStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SaInfo {}
}
