//! Kernel/userspace ABI: map names, keys, values, actions, counters and limits.
//!
//! Every type here is `#[repr(C)]`, `bytemuck::Pod` (the derive rejects hidden padding) and has a
//! size assertion, so both sides agree byte for byte. Addresses are `[u8; 16]` in network order;
//! ports and SPIs are host-order integers (the eBPF side converts once while parsing).
//!
//! The SPD is classified by tuple-space search with prefix pruning: policies are grouped by
//! *shape* (source and destination prefix lengths, and which of protocol/ports are exact), and a
//! packet probes [`RULES`] only under the shapes it can match. One [`PREFIXES`] (LPM trie)
//! lookup per address yields the set of prefix lengths of every stored prefix containing it
//! ([`LenSet`]); [`LEN_PAIRS`] narrows the destination lengths that occur with each source
//! length, and [`FIELD_SETS`] the field combinations (and best rank) of each length pair. The
//! cost follows the prefixes a packet falls in, never the number of shapes or policies; the
//! compiler refuses an SPD any packet of which could need more than [`MAX_PROBES`] steps.
//! The tables exist twice (generation 0 and 1): userspace fills the inactive one, then flips
//! [`CONFIG_EPOCH`], so a packet never sees a half-applied change.

use bytemuck::{Pod, Zeroable};

/// Map names (as they appear in the object file and under the pin directory).
pub const RULES: &str = "XIPSEC_RULES";
pub const PREFIXES: &str = "XIPSEC_PREFIXES";
pub const LEN_PAIRS: &str = "XIPSEC_LEN_PAIRS";
pub const FIELD_SETS: &str = "XIPSEC_FIELD_SETS";
pub const SEARCH: &str = "XIPSEC_SEARCH";
pub const CONFIG: &str = "XIPSEC_CONFIG";
pub const FLOW_CACHE: &str = "XIPSEC_FLOW_CACHE";
pub const SP_STATS: &str = "XIPSEC_SP_STATS";
pub const COUNTERS: &str = "XIPSEC_COUNTERS";
pub const SA_BY_SPI: &str = "XIPSEC_SA_BY_SPI";
pub const XSKS: &str = "XIPSEC_XSKS";
pub const XSK_SLOTS: &str = "XIPSEC_XSK_SLOTS";
pub const FRAG_STATE: &str = "XIPSEC_FRAG_STATE";
pub const SA_OUT_BY_SPI: &str = "XIPSEC_SA_OUT_BY_SPI";
pub const ENGINE_SOCKETS: &str = "XIPSEC_ENGINE_SOCKETS";
pub const UDP_ENCAP_PORTS: &str = "XIPSEC_UDP_ENCAP_PORTS";
pub const IKE_PEERS: &str = "XIPSEC_IKE_PEERS";

/// Program names.
pub const PROG_XDP_INGRESS: &str = "xdp_ingress";
pub const PROG_TC_EGRESS: &str = "tc_egress";

/// The benchmark object's own programs and maps (`ipsec-ebpf/src/bench.rs`: baselines of
/// `cargo xtask bench classify`; `ipsec-ebpf/src/bench_filter.rs`: the frame generator and the
/// floor of `cargo xtask bench filter`). The production object the daemon loads and pins has
/// none of them.
pub mod bench {
    use bytemuck::{Pod, Zeroable};

    /// Parse and pass.
    pub const PROG_PARSE: &str = "xdp_bench_parse";
    /// Parse plus one exact-match hash lookup of the flow in [`FLOWS`].
    pub const PROG_HASH: &str = "xdp_bench_hash";
    /// The flows the hash baseline finds: `FlowKey` -> `CacheValue`.
    pub const FLOWS: &str = "XIPSEC_BENCH_FLOWS";

    /// The generator (run by `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`): writes flow
    /// `GEN_CONFIG[GEN_CONFIG_BASE] + n % GEN_CONFIG[GEN_CONFIG_FLOWS]` of [`GEN_FLOWS`] into
    /// the `n`th frame (`n` counted per CPU in [`GEN_COUNT`]) and
    /// returns `GEN_CONFIG[GEN_CONFIG_ACTION]` (`XDP_TX`: the frame leaves on the interface
    /// the run names; `XDP_DROP`: the generator's own cost).
    pub const PROG_GEN: &str = "xdp_bench_gen";
    /// The floor: counts the frame in [`FLOOR_COUNT`] and drops it.
    pub const PROG_FLOOR: &str = "xdp_bench_floor";
    /// Passes every frame (the receive path nftables sees behind a native XDP attachment).
    pub const PROG_PASS: &str = "xdp_bench_pass";
    /// The memory floor: parses the frame as xipsec does, hashes its flow as the flow cache
    /// does, reads one word of the slot the hash picks in [`PROBE_SLOTS`] (as large as the flow
    /// cache, `FLOW_CACHE_SLOTS` 64-byte slots), counts the frame in [`PROBE_COUNT`] and drops
    /// it: the least any exact per-flow table of that size costs a frame.
    pub const PROG_PROBE: &str = "xdp_bench_probe";
    /// The memory floor's table (never written: zeroed pages).
    pub const PROBE_SLOTS: &str = "XIPSEC_BENCH_PROBE_SLOTS";
    /// Per-CPU `u64`: frames the memory floor dropped (slot 0).
    pub const PROBE_COUNT: &str = "XIPSEC_BENCH_PROBE_COUNT";
    /// The direct-mapped memory floor: [`PROG_PROBE`] over a table of about as many 64-byte
    /// slots kept in [`PROBE_DIRECT_MAPS`] arrays of [`PROBE_DIRECT_SLOTS`] slots each, which
    /// the kernel allocates with `kmalloc` (an array map of at most 32 KiB), so in its direct
    /// map (1 GiB and 2 MiB pages), not in 4 KiB `vmalloc` pages as any larger array: what the
    /// same read costs without most of its TLB misses. Counts in [`PROBE_DIRECT_COUNT`].
    pub const PROG_PROBE_DIRECT: &str = "xdp_bench_probe_direct";
    /// The array of maps holding the direct-mapped memory floor's arrays (created by the
    /// benchmark before it loads the object, which declares it as a plain array: aya-ebpf has
    /// no map-of-maps definition; see `bench_gen`).
    pub const PROBE_DIRECT_OUTER: &str = "XIPSEC_BENCH_PROBE_OUTER";
    /// Per-CPU `u64`: frames the direct-mapped memory floor dropped (slot 0).
    pub const PROBE_DIRECT_COUNT: &str = "XIPSEC_BENCH_PROBE_DIRECT_COUNT";
    /// Arrays of the direct-mapped memory floor: 1,034 x 507 = 524,238 slots, the flow cache's
    /// 524,288 but 50.
    pub const PROBE_DIRECT_MAPS: u32 = 1034;
    /// 64-byte slots per array: 312 bytes of `struct bpf_array` + 507 x 64 = 32,760 bytes, within
    /// the 32 KiB `kmalloc` limit of array maps.
    pub const PROBE_DIRECT_SLOTS: u32 = 507;
    /// [`GenFlow`] by index, at most [`GEN_FLOWS_CAPACITY`].
    pub const GEN_FLOWS: &str = "XIPSEC_BENCH_GEN_FLOWS";
    /// `u32` settings of the generator, indexed by `GEN_CONFIG_*`.
    pub const GEN_CONFIG: &str = "XIPSEC_BENCH_GEN_CONFIG";
    /// Per-CPU `u64`: frames generated so far (slot 0).
    pub const GEN_COUNT: &str = "XIPSEC_BENCH_GEN_COUNT";
    /// Per-CPU `u64`: frames the floor dropped (slot 0).
    pub const FLOOR_COUNT: &str = "XIPSEC_BENCH_FLOOR_COUNT";
    pub const GEN_FLOWS_CAPACITY: u32 = 1 << 18;
    /// Slot of [`GEN_CONFIG`]: how many flows of [`GEN_FLOWS`] are used (at least 1).
    pub const GEN_CONFIG_FLOWS: u32 = 0;
    /// Slot of [`GEN_CONFIG`]: the XDP action the generator returns.
    pub const GEN_CONFIG_ACTION: u32 = 1;
    /// Slot of [`GEN_CONFIG`]: the index of the first flow used.
    pub const GEN_CONFIG_BASE: u32 = 2;
    pub const GEN_CONFIG_LEN: u32 = 3;
    /// Byte offsets in the generator's frame (Ethernet, IPv6 without extension headers, UDP).
    pub const FRAME_SRC: usize = 14 + 8;
    pub const FRAME_DST: usize = 14 + 24;
    pub const FRAME_SPORT: usize = 14 + 40;
    pub const FRAME_DPORT: usize = 14 + 42;
    /// The frame must hold at least the headers above.
    pub const FRAME_MIN: usize = 14 + 40 + 8;

    /// One generated flow: addresses in network order, ports in host order.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
    pub struct GenFlow {
        pub src: [u8; 16],
        pub dst: [u8; 16],
        pub sport: u16,
        pub dport: u16,
        pub _pad: u32,
    }
    const _: () = assert!(core::mem::size_of::<GenFlow>() == 40);

    // SAFETY: #[repr(C)] and bytemuck::Pod (no padding, any bit pattern valid).
    #[cfg(feature = "user")]
    unsafe impl aya::Pod for GenFlow {}
}

/// Limits.
pub const MAX_SP: u32 = 262_144;
/// Steps of the classifier's probe loop per packet (one table lookup each, plus one to see the
/// work is done). The compiler bounds, for every packet an SPD could see, the steps it needs,
/// and refuses an SPD past this; should a packet still run out, it is dropped (fail closed).
pub const MAX_PROBES: u32 = 256;
/// Prefix lengths 0..=128.
pub const PREFIX_LENS: u32 = 129;
/// Entries of [`PREFIXES`]: every distinct source and destination prefix (but `::/0`) of both
/// generations; a policy brings one of each at most.
pub const PREFIXES_CAPACITY: u32 = 2 * 2 * MAX_SP;
pub const MAX_SA: u32 = 16_384;
/// Capacity of [`RULES`]: both generations of every rule kind ([`RULE_KINDS`]); each policy has
/// one rule of each kind at most.
pub const RULES_CAPACITY: u32 = 2 * RULE_KINDS * MAX_SP;
/// Slots of the flow cache ([`FLOW_CACHE`], [`CacheSlot`]): 32 MiB of one-cache-line slots,
/// preallocated. A flow may sit in any of the [`FLOW_CACHE_WAYS`] slots of either of its two
/// buckets; at the `bench filter` traffic (262,144 flows over both tables, half the slots) every
/// flow finds a place. (The LRU hash map it replaces held 262,144 flows in 29 MiB, but a hit
/// cost a bucket, an element, the LRU bookkeeping and a jhash over the key: 0.46x the XDP
/// floor.)
pub const FLOW_CACHE_SLOTS: u32 = 1 << 19;
/// Slots per bucket: adjacent, so a bucket is 128 aligned bytes.
pub const FLOW_CACHE_WAYS: u32 = 2;
/// Buckets of the flow cache (a power of two).
pub const FLOW_CACHE_BUCKETS: u32 = FLOW_CACHE_SLOTS / FLOW_CACHE_WAYS;
/// At most this many IPv6 extension headers are walked; a longer chain is dropped.
pub const MAX_EXT_HEADERS: usize = 8;
/// The transport header must start within this many bytes of the IPv6 header; beyond, dropped.
pub const MAX_L4_OFFSET: usize = 1024;
/// The ESP engine's raw socket sets this skb mark. It lets test setups route the engine's own
/// ESP (`ip rule fwmark`); it grants nothing: any process with `CAP_NET_RAW` can set a mark, so
/// TC egress lets a packet skip classification only by the engine's socket cookie
/// ([`ENGINE_SOCKETS`]) and only when it is ESP under one of our outbound SPIs.
pub const XIPSEC_MARK: u32 = 0x5850_5345;
/// Entries of [`FRAG_STATE`]: datagrams whose first fragment was seen and whose remaining
/// fragments are still expected. LRU: past it the oldest are forgotten, and their later fragments
/// get the stateless verdict (counted as [`Counter::FragmentNoState`]).
pub const FRAG_STATE_CAPACITY: u32 = 16_384;
/// How long a first fragment's verdict applies to the rest of its datagram: the reassembly
/// timeout of RFC 8200 §4.5.
pub const FRAG_STATE_TIMEOUT_NS: u64 = 60_000_000_000;
/// Sockets of the ESP engine that may send ESP without classification ([`ENGINE_SOCKETS`]).
pub const MAX_ENGINE_SOCKETS: u32 = 16;
/// At most this many VLAN tags (802.1Q or 802.1ad) are parsed; a frame with more tags is dropped
/// (it may hide IPv6 from a parser that stops early).
pub const MAX_VLAN_TAGS: usize = 2;

/// Directions, as stored in keys.
pub const DIR_IN: u8 = 0;
pub const DIR_OUT: u8 = 1;

/// Actions, as stored in rule values.
pub const ACTION_NONE: u32 = 0;
pub const ACTION_DISCARD: u32 = 1;
pub const ACTION_IPSEC: u32 = 2;

/// Rule kinds, as carried in [`RuleKey::tag`] and [`rule_set`]. A non-first fragment has no
/// ports (and, when an extension header follows its fragment header, no visible protocol). When
/// its first fragment was not seen, it gets the strictest verdict (discard over ipsec over none)
/// of every policy that could match it with the invisible fields ignored: those policies are
/// compiled a second time under the `RULE_FRAG_*` kinds, ranked by [`fragment_rank`].
pub const RULE_FLOW: u8 = 0;
/// Ports ignored, protocol exact.
pub const RULE_FRAG_PORTS: u8 = 1;
/// Ports and protocol ignored.
pub const RULE_FRAG_ANY: u8 = 2;
pub const RULE_KINDS: u32 = 3;

/// The rank of a policy among the rules of a `RULE_FRAG_*` kind: strictness first (discard, then
/// ipsec, then none), then age (`seq`, unique), so the search's "lowest rank wins" picks the
/// strictest policy that could match, the oldest among equally strict ones.
#[inline(always)]
pub fn fragment_rank(action: u32, seq: u32) -> u64 {
    let strictness: u64 = match action {
        ACTION_DISCARD => 0,
        ACTION_IPSEC => 1,
        _ => 2,
    };
    (strictness << 32) | u64::from(seq)
}

/// `sp_id` of "no policy matched".
pub const NO_SP: u32 = u32::MAX;

/// Field bits of a shape (in [`RuleKey::tag`], and as the bit index of [`FieldSet::combos`]):
/// which selector fields are exact.
pub const FIELD_PROTO: u8 = 1;
pub const FIELD_SPORT: u8 = 2;
pub const FIELD_DPORT: u8 = 4;

/// `FlowKey::flags` bits.
/// The packet has no visible ports or ICMPv6 type (non-first fragment, or a protocol without ports).
pub const FLOW_OPAQUE: u8 = 1;

/// Whether `nh` is an IPv6 extension header (RFC 8200 §4, plus the later ones IANA lists): after
/// a non-first fragment's fragment header it means the upper-layer protocol is not visible.
#[inline(always)]
pub fn is_extension_header(nh: u8) -> bool {
    matches!(
        nh,
        proto::HOP_BY_HOP
            | proto::ROUTING
            | proto::FRAGMENT
            | proto::AH
            | proto::DEST_OPTS
            | 135
            | 139
            | 140
            | 253
            | 254
    )
}

/// Whether the extension-header walk steps over `nh` (at most [`MAX_EXT_HEADERS`] times): the
/// headers that may precede the upper layer and that a parser must read through (RFC 8200 §4.1).
/// Every other value, AH and ESP included, ends the walk. Both parsers (eBPF and userspace
/// `wire`) use this one definition.
#[inline(always)]
pub fn is_walked_extension_header(nh: u8) -> bool {
    matches!(
        nh,
        proto::HOP_BY_HOP | proto::ROUTING | proto::FRAGMENT | proto::DEST_OPTS
    )
}

/// IPv6 next-header values (IANA "Assigned Internet Protocol Numbers"): the one definition for
/// the eBPF programs and userspace.
pub mod proto {
    /// RFC 8200 §4.3.
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    /// IPv6 in IPv6: the ESP trailer's next header in tunnel mode (RFC 4303 §3.1.2).
    pub const IPV6: u8 = 41;
    /// RFC 8200 §4.4.
    pub const ROUTING: u8 = 43;
    /// RFC 8200 §4.5.
    pub const FRAGMENT: u8 = 44;
    /// RFC 4303.
    pub const ESP: u8 = 50;
    /// RFC 4302.
    pub const AH: u8 = 51;
    /// RFC 4443.
    pub const ICMPV6: u8 = 58;
    /// RFC 8200 §4.7: a dummy packet's ESP next header (RFC 4303 §2.6).
    pub const NO_NEXT_HEADER: u8 = 59;
    /// RFC 8200 §4.6.
    pub const DEST_OPTS: u8 = 60;
}

/// Ethertypes the parsers read: IPv6, and the 802.1Q (customer) and 802.1ad (service, "QinQ")
/// VLAN tags they step over.
pub mod ethertype {
    pub const IPV6: u16 = 0x86dd;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88a8;
}

/// Header lengths the parsers step over: Ethernet without tags, one VLAN tag (TPID and TCI), the
/// fixed IPv6 header (RFC 8200 §3), the fragment header (RFC 8200 §4.5), the ESP header (SPI and
/// sequence number, RFC 4303 §2).
pub const ETH_HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;
pub const IPV6_HEADER_LEN: usize = 40;
pub const FRAGMENT_HEADER_LEN: usize = 8;
pub const ESP_HEADER_LEN: usize = 8;

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
            && self.dport >= u16::from(ND_TYPE_FIRST)
            && self.dport <= u16::from(ND_TYPE_LAST)
    }
}

/// The field combinations (bit `f` for the `FIELD_*` bits `f`) a flow may match at all: no
/// port fields when it shows no ports, and only protocol plus type for neighbour discovery.
#[inline(always)]
pub fn allowed_combos(flow: &FlowKey) -> u32 {
    if flow.flags & FLOW_OPAQUE != 0 {
        // Combinations without a port field: 0 and FIELD_PROTO.
        return 0b11;
    }
    if flow.is_neighbour_discovery() {
        // Combinations with both FIELD_PROTO and FIELD_DPORT: 5 and 7.
        return (1 << 5) | (1 << 7);
    }
    0xff
}

/// A set of prefix lengths 0..=128: bit `len % 64` of word `len / 64`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct LenSet {
    pub words: [u64; 3],
}
const _: () = assert!(size_of::<LenSet>() == 24);

impl LenSet {
    /// The set holding only length 0 (`::/0` contains every address).
    pub const ROOT: LenSet = LenSet { words: [1, 0, 0] };

    #[inline(always)]
    pub fn insert(&mut self, len: u8) {
        let len = u32::from(len);
        if let Some(word) = self.words.get_mut((len / 64) as usize) {
            *word |= 1 << (len % 64);
        }
    }

    #[inline(always)]
    pub fn contains(&self, len: u8) -> bool {
        let len = u32::from(len);
        self.words
            .get((len / 64) as usize)
            .is_some_and(|word| word & (1 << (len % 64)) != 0)
    }

    #[must_use]
    #[inline(always)]
    pub fn and(&self, other: &LenSet) -> LenSet {
        LenSet {
            words: [
                self.words[0] & other.words[0],
                self.words[1] & other.words[1],
                self.words[2] & other.words[2],
            ],
        }
    }

    #[must_use]
    #[inline(always)]
    pub fn or(&self, other: &LenSet) -> LenSet {
        LenSet {
            words: [
                self.words[0] | other.words[0],
                self.words[1] | other.words[1],
                self.words[2] | other.words[2],
            ],
        }
    }

    pub fn len(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.words == [0; 3]
    }

    /// The lengths, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=128u8).filter(|len| self.contains(*len))
    }

    /// Remove and return the shortest length: the classifier's loop step. Branch-light and
    /// without a `ctz` instruction (eBPF has none): the lowest set bit is isolated and counted.
    #[inline(always)]
    pub fn pop(&mut self) -> Option<u32> {
        // One branch per word rather than an index, so the eBPF side keeps constant offsets.
        let [a, b, c] = self.words;
        if a != 0 {
            self.words[0] = a & a.wrapping_sub(1);
            Some(trailing_zeros(a))
        } else if b != 0 {
            self.words[1] = b & b.wrapping_sub(1);
            Some(64 + trailing_zeros(b))
        } else if c != 0 {
            self.words[2] = c & c.wrapping_sub(1);
            Some(128 + trailing_zeros(c))
        } else {
            None
        }
    }
}

/// Trailing zeros of a non-zero word, as population count of the bits below the lowest set one
/// (SWAR, no loop, no table).
#[inline(always)]
pub fn trailing_zeros(word: u64) -> u32 {
    let mut v = (word & word.wrapping_neg()).wrapping_sub(1);
    v = v - ((v >> 1) & 0x5555_5555_5555_5555);
    v = (v & 0x3333_3333_3333_3333) + ((v >> 2) & 0x3333_3333_3333_3333);
    v = (v + (v >> 4)) & 0x0f0f_0f0f_0f0f_0f0f;
    #[allow(clippy::cast_possible_truncation, reason = "at most 64")]
    let count = (v.wrapping_mul(0x0101_0101_0101_0101) >> 56) as u32;
    count
}

/// The data of a [`PREFIXES`] key (an LPM trie key is a prefix length, then this): which table
/// ([`prefix_tag`]), then the address in network order. A stored prefix of length `len` has
/// prefix length `8 + len`; a lookup uses [`PREFIX_LOOKUP_BITS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Pod, Zeroable)]
pub struct PrefixKey {
    pub tag: u8,
    pub addr: [u8; 16],
}
const _: () = assert!(size_of::<PrefixKey>() == 17);

/// The LPM prefix length of a lookup: the tag and the whole address.
pub const PREFIX_LOOKUP_BITS: u32 = 8 + 128;
/// Which address a [`PREFIXES`] entry is a prefix of.
pub const SIDE_SRC: u8 = 0;
pub const SIDE_DST: u8 = 1;

/// The [`PrefixKey::tag`] of the prefixes of one generation, direction and side.
#[inline(always)]
pub fn prefix_tag(generation: u8, dir: u8, side: u8) -> u8 {
    ((generation & 1) << 2) | ((dir & 1) << 1) | (side & 1)
}

/// Value of [`FIELD_SETS`]: the field combinations present among the rules of one length pair,
/// and their best rank (the search skips the pair when it cannot beat what it found).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FieldSet {
    pub min_rank: u64,
    /// Bit `f` set: rules with field bits `f` exist.
    pub combos: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FieldSet>() == 16);

/// Key of [`RULES`]: a flow masked by one shape, tagged with the shape, rule kind, direction and
/// generation, so prefixes of different lengths with equal masked bytes never collide.
/// 8-byte aligned like [`FlowKey`].
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct RuleKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub src_len: u8,
    pub dst_len: u8,
    /// `generation << 6 | kind << 4 | dir << 3 | fields` ([`rule_tag`]).
    pub tag: u8,
}
const _: () = assert!(size_of::<RuleKey>() == 40);

/// [`RuleKey::tag`].
#[inline(always)]
pub fn rule_tag(generation: u8, kind: u8, dir: u8, fields: u8) -> u8 {
    ((generation & 1) << 6) | ((kind & 3) << 4) | ((dir & 1) << 3) | (fields & 7)
}

/// The first `bits` (0..=64) bits of a word read from network-order bytes in native order.
#[inline(always)]
fn top_bits(bits: u32) -> u64 {
    if bits == 0 {
        0
    } else if bits >= 64 {
        u64::MAX
    } else {
        (u64::MAX << (64 - bits)).to_be()
    }
}

#[inline(always)]
fn masked16(a: &[u8; 16], len: u32) -> [u8; 16] {
    let lo = u64::from_ne_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]])
        & top_bits(if len > 64 { 64 } else { len });
    let hi = u64::from_ne_bytes([a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]])
        & top_bits(len.saturating_sub(64));
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&lo.to_ne_bytes());
    out[8..].copy_from_slice(&hi.to_ne_bytes());
    out
}

impl RuleKey {
    /// The rule key a flow looks up under the shape (`src_len`, `dst_len`, `fields`) among the
    /// rules of `kind` in generation `generation`. Userspace builds rule keys with this same
    /// function from the policy's own selector.
    #[inline(always)]
    pub fn probe(
        flow: &FlowKey,
        src_len: u32,
        dst_len: u32,
        fields: u32,
        kind: u8,
        generation: u8,
    ) -> Self {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "prefix lengths are at most 128 and field bits at most 7: masked to fit"
        )]
        let (src_byte, dst_byte, fields_byte) = (
            (src_len & 0xff) as u8,
            (dst_len & 0xff) as u8,
            (fields & 7) as u8,
        );
        RuleKey {
            src: masked16(&flow.src, src_len),
            dst: masked16(&flow.dst, dst_len),
            sport: if fields & u32::from(FIELD_SPORT) != 0 {
                flow.sport
            } else {
                0
            },
            dport: if fields & u32::from(FIELD_DPORT) != 0 {
                flow.dport
            } else {
                0
            },
            proto: if fields & u32::from(FIELD_PROTO) != 0 {
                flow.proto
            } else {
                0
            },
            src_len: src_byte,
            dst_len: dst_byte,
            tag: rule_tag(generation, kind, flow.dir, fields_byte),
        }
    }

    pub fn generation(&self) -> u8 {
        self.tag >> 6
    }

    pub fn kind(&self) -> u8 {
        (self.tag >> 4) & 3
    }

    pub fn dir(&self) -> u8 {
        (self.tag >> 3) & 1
    }

    pub fn fields(&self) -> u8 {
        self.tag & 7
    }
}

/// The address bytes of the first `len` bits of `addr` (the rest zero).
#[inline(always)]
pub fn prefix_of(addr: &[u8; 16], len: u8) -> [u8; 16] {
    masked16(addr, u32::from(len))
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

/// One slot of [`FLOW_CACHE`] (an array, `BPF_F_MMAPABLE` so its values start page-aligned and
/// every slot is exactly one 64-byte cache line): a flow, the epoch its verdict was computed in,
/// and the verdict. A hit reads this one line.
///
/// The array is shared by every CPU, and slots are written without a lock, so a reader may see
/// a slot half-written by another CPU. Every field therefore sits under `check`, a 56-bit keyed
/// hash of the flow's hash, the epoch and the verdict ([`cache_check`]): a reader accepts a slot
/// only if its key equals the flow's, word for word (a bucket shared by several flows never
/// gives one of them another's verdict), its epoch is the current one, and the check matches
/// what it read. A slot torn between two writes fails the check (but with probability 2^-56:
/// the seed is secret, so the collision cannot be aimed) and is a miss, which classifies afresh.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct CacheSlot {
    pub key: FlowKey,
    pub epoch: u64,
    /// `sp_id | sa_id << 32`.
    pub verdict: u64,
    /// `action` in the low 8 bits (every `ACTION_*` fits), the check in the high 56.
    pub tail: u64,
}
const _: () = assert!(size_of::<CacheSlot>() == 64);

/// The key as the five words the cache hashes and compares.
#[inline(always)]
pub fn flow_words(flow: &FlowKey) -> [u64; 5] {
    bytemuck::cast(*flow)
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn mix(h: u64, word: u64) -> u64 {
    let h = (h ^ word).wrapping_mul(MIX);
    h ^ (h >> 32)
}

/// The flow cache's hash of a flow (its [`flow_words`]) under `seed`: the low half picks its
/// first bucket, the high half its second ([`cache_buckets`]).
#[inline(always)]
pub fn flow_hash(words: &[u64; 5], seed: u64) -> u64 {
    let mut h = seed;
    let mut i = 0;
    while i < 5 {
        h = mix(h, words[i]);
        i += 1;
    }
    h
}

/// The two buckets a flow of hash `hash` may sit in.
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "masked to the bucket count, a u32"
)]
pub fn cache_buckets(hash: u64) -> [u32; 2] {
    let mask = u64::from(FLOW_CACHE_BUCKETS - 1);
    [(hash & mask) as u32, ((hash >> 32) & mask) as u32]
}

/// The 56-bit check of a slot holding a flow of hash `hash` ([`CacheSlot`]).
#[inline(always)]
pub fn cache_check(hash: u64, epoch: u64, verdict: u64, action: u64) -> u64 {
    mix(mix(mix(hash, epoch), verdict), action).wrapping_mul(MIX) >> 8
}

impl CacheSlot {
    /// The slot caching `value` (computed in epoch `value.epoch`) for `flow` of hash `hash`.
    #[inline(always)]
    pub fn new(flow: &FlowKey, hash: u64, value: &CacheValue) -> Self {
        let verdict = u64::from(value.sp_id) | u64::from(value.sa_id) << 32;
        let action = u64::from(value.action & 0xff);
        CacheSlot {
            key: *flow,
            epoch: value.epoch,
            verdict,
            tail: action | cache_check(hash, value.epoch, verdict, action) << 8,
        }
    }

    /// The verdict this slot holds for a flow of hash `hash` whose key it holds, if it was
    /// computed in `epoch` and the slot is whole (see the type).
    #[inline(always)]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the halves of the verdict word, and an 8-bit action"
    )]
    pub fn verdict(epoch: u64, verdict: u64, tail: u64, hash: u64) -> Option<CacheValue> {
        let action = tail & 0xff;
        if tail >> 8 != cache_check(hash, epoch, verdict, action) {
            return None;
        }
        Some(CacheValue {
            epoch,
            sp_id: verdict as u32,
            sa_id: (verdict >> 32) as u32,
            action: action as u32,
            _pad: 0,
        })
    }
}

/// [`CONFIG`] is an array of u64; this index holds the SPD epoch. It increments on every commit;
/// its low bit is the active generation, and flow-cache entries of older epochs are ignored.
/// One aligned 8-byte word, so readers see either the old or the new value, never a mix.
pub const CONFIG_EPOCH: u32 = 0;
/// Ifindex of the ESP engine's TUN device: TC egress redirects `ipsec` packets there. 0 means no
/// engine (daemon down): those packets are dropped, never sent in clear.
pub const CONFIG_ESP_IFINDEX: u32 = 1;
/// `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` reads) of the engine's last sign of
/// life: the daemon writes it every [`ENGINE_HEARTBEAT_NS`] while its engine runs. Older than
/// [`ENGINE_ALIVE_TIMEOUT_NS`], TC egress counts `ipsec` packets as `drop_ipsec_unavailable`
/// and drops them itself rather than redirecting them to a TUN device that may be gone with a
/// killed daemon (where the kernel would drop them uncounted).
pub const CONFIG_ENGINE_ALIVE_NS: u32 = 2;
/// The flow cache's hash seed, random, written by the daemon when it loads the programs (and
/// replaced to forget every cached verdict at once: an entry placed and checked under another
/// seed is neither found nor accepted). Where a slot lies and its check depend on it, so an
/// outsider cannot aim flows at one bucket.
pub const CONFIG_FLOW_CACHE_SEED: u32 = 3;
pub const CONFIG_LEN: u32 = 4;
pub const ENGINE_HEARTBEAT_NS: u64 = 200_000_000;
pub const ENGINE_ALIVE_TIMEOUT_NS: u64 = 1_000_000_000;

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
    (u64::from(ifindex) << 32) | u64::from(queue)
}

/// The rule set of a rule kind, generation and direction: the index base of [`LEN_PAIRS`] and
/// [`FIELD_SETS`].
#[inline(always)]
pub fn rule_set(kind: u8, generation: u8, dir: u8) -> u32 {
    (u32::from(kind) % RULE_KINDS) * 4 + (u32::from(generation) & 1) * 2 + (u32::from(dir) & 1)
}
pub const RULE_SETS: u32 = 4 * RULE_KINDS;

/// Index of [`LEN_PAIRS`]: the destination lengths that occur with source length `src_len` in
/// rule set `set`.
#[inline(always)]
pub fn pairs_index(set: u32, src_len: u32) -> u32 {
    set * PREFIX_LENS + src_len
}
pub const LEN_PAIRS_ENTRIES: u32 = RULE_SETS * PREFIX_LENS;

/// Index of [`FIELD_SETS`]: the field combinations of length pair (`src_len`, `dst_len`) in rule
/// set `set`.
#[inline(always)]
pub fn field_set_index(set: u32, src_len: u32, dst_len: u32) -> u32 {
    (set * PREFIX_LENS + src_len) * PREFIX_LENS + dst_len
}
pub const FIELD_SETS_ENTRIES: u32 = RULE_SETS * PREFIX_LENS * PREFIX_LENS;

/// The tables the classifier searches, as each side holds them: the eBPF programs read their
/// maps, userspace (`CompiledSpd`) its hash maps. [`search`] is the one search over them.
pub trait ClassifierTables {
    /// The [`PREFIXES`] value of the longest stored prefix of table `tag` containing `addr`.
    fn prefix_lengths(&self, tag: u8, addr: &[u8; 16]) -> Option<LenSet>;
    /// [`LEN_PAIRS`] at `index` ([`pairs_index`]).
    fn pairs(&self, index: u32) -> Option<LenSet>;
    /// [`FIELD_SETS`] at `index` ([`field_set_index`]).
    fn field_set(&self, index: u32) -> Option<FieldSet>;
    /// [`RULES`] at `key`.
    fn rule(&self, key: &RuleKey) -> Option<RuleValue>;
}

/// What [`search`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Searched {
    /// The best-ranked rule matching the flow.
    Rule(RuleValue),
    /// No rule matches.
    Nothing,
    /// [`MAX_PROBES`] steps were not enough (the compiler makes this unreachable).
    OutOfSteps,
}

/// A search in progress: the best-ranked rule of one kind matching one flow. Each [`Self::step`]
/// does one table lookup, in this order of preference: a pending field combination (a rule
/// lookup), else a pending destination length (its field set, skipped when its best rank cannot
/// win), else the next source length (the destination lengths that occur with it, intersected
/// with the packet's), else done. Length 0 (`::/0`) is a candidate on both sides for every
/// packet; it is not stored in [`PREFIXES`]. The eBPF side runs the steps under `bpf_loop`
/// (verified once, whatever the count), userspace in [`search`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Zeroable)]
pub struct Search {
    flow: FlowKey,
    srcs: LenSet,
    dsts: LenSet,
    pending: LenSet,
    best: RuleValue,
    best_rank: u64,
    set: u32,
    allowed: u32,
    combos: u32,
    src_len: u32,
    dst_len: u32,
    kind: u32,
    generation: u32,
    /// 0 searching, 1 done.
    done: u32,
}

impl Search {
    /// A search of the rules of `kind` for `flow` in generation `generation`: the packet's
    /// candidate lengths looked up.
    #[inline(always)]
    pub fn start<T: ClassifierTables>(
        tables: &T,
        flow: &FlowKey,
        kind: u8,
        generation: u8,
    ) -> Self {
        let mut search: Search = Zeroable::zeroed();
        search.restart(tables, flow, kind, generation);
        search
    }

    /// [`Self::start`] in place: every field written where it lies (the eBPF side keeps its
    /// search in a map value, and a whole `Search` built on its 512-byte stack first would not
    /// fit beside the search callback's frame).
    #[inline(always)]
    pub fn restart<T: ClassifierTables>(
        &mut self,
        tables: &T,
        flow: &FlowKey,
        kind: u8,
        generation: u8,
    ) {
        let lengths = |side: u8, addr: &[u8; 16]| {
            let mut found = tables
                .prefix_lengths(prefix_tag(generation, flow.dir, side), addr)
                .unwrap_or_default();
            found.words[0] |= 1;
            found
        };
        self.flow = *flow;
        self.srcs = lengths(SIDE_SRC, &flow.src);
        self.dsts = lengths(SIDE_DST, &flow.dst);
        self.pending = LenSet::default();
        self.best = RuleValue {
            rank: u64::MAX,
            sp_id: NO_SP,
            sa_id: 0,
            action: ACTION_NONE,
            _pad: 0,
        };
        self.best_rank = u64::MAX;
        self.set = rule_set(kind, generation, flow.dir);
        self.allowed = allowed_combos(flow);
        self.combos = 0;
        self.src_len = 0;
        self.dst_len = 0;
        self.kind = u32::from(kind);
        self.generation = u32::from(generation);
        self.done = 0;
    }

    /// One step; false once the search is done.
    #[inline(always)]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "kind and generation were u8 when stored"
    )]
    pub fn step<T: ClassifierTables>(&mut self, tables: &T) -> bool {
        if self.combos != 0 {
            let fields = trailing_zeros(u64::from(self.combos));
            self.combos &= self.combos - 1;
            let key = RuleKey::probe(
                &self.flow,
                self.src_len,
                self.dst_len,
                fields,
                self.kind as u8,
                self.generation as u8,
            );
            if let Some(rule) = tables.rule(&key)
                && rule.rank < self.best_rank
            {
                self.best_rank = rule.rank;
                self.best = rule;
            }
        } else if let Some(len) = self.pending.pop() {
            self.dst_len = len;
            if let Some(found) = tables.field_set(field_set_index(self.set, self.src_len, len))
                && found.min_rank < self.best_rank
            {
                self.combos = found.combos & self.allowed;
            }
        } else if let Some(len) = self.srcs.pop() {
            self.src_len = len;
            self.pending = match tables.pairs(pairs_index(self.set, len)) {
                Some(found) => found.and(&self.dsts),
                None => LenSet::default(),
            };
        } else {
            self.done = 1;
            return false;
        }
        true
    }

    /// What the search found so far: [`Searched::OutOfSteps`] unless it is done.
    #[inline(always)]
    pub fn result(&self) -> Searched {
        if self.done == 0 {
            Searched::OutOfSteps
        } else if self.best_rank == u64::MAX {
            Searched::Nothing
        } else {
            Searched::Rule(self.best)
        }
    }
}

/// The best-ranked rule of `kind` matching `flow` in generation `generation`, in at most
/// [`MAX_PROBES`] steps of [`Search`].
pub fn search<T: ClassifierTables>(
    tables: &T,
    flow: &FlowKey,
    kind: u8,
    generation: u8,
) -> Searched {
    let mut search = Search::start(tables, flow, kind, generation);
    for _ in 0..MAX_PROBES {
        if !search.step(tables) {
            break;
        }
    }
    search.result()
}

/// The verdict of a packet that ran out of [`MAX_PROBES`] (the compiler makes this unreachable):
/// an action no program knows, so it is dropped and counted as `drop_unknown_action`.
pub const SP_PROBE_BUDGET: u32 = NO_SP - 1;
pub const ACTION_PROBE_BUDGET: u32 = 0xff;

/// Key of [`FRAG_STATE`]: one fragmented datagram (RFC 8200 §4.5: source, destination and
/// fragment identification), per direction.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct FragKey {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// The fragment header's identification, as read (network order bytes).
    pub id: [u8; 4],
    pub dir: u8,
    pub _pad: [u8; 3],
}
const _: () = assert!(size_of::<FragKey>() == 40);

/// Value of [`FRAG_STATE`]: the verdict of the datagram's first fragment, for its other fragments.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct FragValue {
    /// `bpf_ktime_get_ns` after which the entry no longer applies.
    pub expires_ns: u64,
    pub sp_id: u32,
    pub sa_id: u32,
    /// `ACTION_*`.
    pub action: u32,
    pub _pad: u32,
}
const _: () = assert!(size_of::<FragValue>() == 24);

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
    /// ESP the engine's own socket sent (its socket cookie is in [`ENGINE_SOCKETS`]) under one
    /// of our outbound SPIs ([`SA_OUT_BY_SPI`]), or a non-first fragment of such ESP: not
    /// classified again.
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
    /// A rule or cached verdict carried an action the program does not know: dropped (fail
    /// closed), never passed.
    DropUnknownAction = 15,
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    DropVlanDepth = 16,
    /// Not a verdict but an event, counted besides the packet's verdict: a non-first fragment
    /// whose first fragment was not seen (reordered, evicted, expired, or never sent). It got the
    /// stateless verdict (the strictest policy that could match it).
    FragmentNoState = 17,
    /// Not a verdict but an event: the verdict came from the flow cache.
    FlowCacheHit = 18,
    /// IKE (UDP 500, or UDP 4500 behind the non-ESP marker) between a configured pair of IKE
    /// peers ([`IKE_PEERS`]): passed without classification, like neighbour discovery.
    PassIke = 19,
    /// A NAT-keepalive (one 0xFF byte, RFC 3948 §2.3) to a UDP-encapsulation port: dropped.
    DropNatKeepalive = 20,
}

impl Counter {
    pub const COUNT: u32 = 21;
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
        Counter::DropUnknownAction,
        Counter::DropVlanDepth,
        Counter::FragmentNoState,
        Counter::FlowCacheHit,
        Counter::PassIke,
        Counter::DropNatKeepalive,
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
            Counter::DropUnknownAction => "drop_unknown_action",
            Counter::DropVlanDepth => "drop_vlan_depth",
            Counter::FragmentNoState => "fragment_no_state",
            Counter::FlowCacheHit => "flow_cache_hit",
            Counter::PassIke => "pass_ike",
            Counter::DropNatKeepalive => "drop_nat_keepalive",
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
                | Counter::DropUnknownAction
                | Counter::DropVlanDepth
                | Counter::DropNatKeepalive
        )
    }

    /// Whether this counter is an event counted besides a verdict rather than a verdict: every
    /// packet moves exactly one verdict counter, and at most one event counter too.
    pub fn is_event(self) -> bool {
        matches!(self, Counter::FragmentNoState | Counter::FlowCacheHit)
    }
}

/// ESP in UDP (RFC 3948) and the IKE bypass.
///
/// [`UDP_ENCAP_PORTS`] (an array indexed by UDP port, host order: 1 for a port some SA with UDP
/// encapsulation uses, else 0; an array so the lookup every UDP datagram pays is an index, not a
/// hash) marks the local ports of ESP in UDP: a UDP datagram to one of them whose payload starts with a
/// non-zero SPI is ESP and is steered by SPI like plain ESP; one starting with the four zero
/// bytes of the non-ESP marker (RFC 3948 §2.2) is IKE; a lone 0xFF byte is a NAT-keepalive
/// (§2.3), dropped. [`IKE_PEERS`] holds the (local, remote) address pairs of configured IKE
/// peers: their IKE ([`IKE_PORT`], or [`NAT_T_PORT`] behind the marker) is never classified.
/// Both are recognised only with UDP right after the fixed IPv6 header, the shape every RFC 3948
/// and RFC 7296 sender uses; anything else is classified like any UDP.
pub const IKE_PORT: u16 = 500;
pub const NAT_T_PORT: u16 = 4500;
pub const UDP_HEADER_LEN: usize = 8;
/// Entries of [`UDP_ENCAP_PORTS`]: every port.
pub const UDP_ENCAP_PORTS_ENTRIES: u32 = 65_536;
/// Entries of [`IKE_PEERS`].
pub const MAX_IKE_PEERS: u32 = 4_096;

/// Key of [`IKE_PEERS`]: a local and a remote address of a configured IKE peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Pod, Zeroable)]
pub struct IkePeerKey {
    pub local: [u8; 16],
    pub remote: [u8; 16],
}
const _: () = assert!(size_of::<IkePeerKey>() == 32);

/// Whether a UDP datagram between `sport` and `dport` is IKE by its ports: UDP 500 at either
/// end, or UDP 4500 at either end when its payload starts with the non-ESP marker (`marker`:
/// at least four bytes, the first four zero; what follows them on 4500 is IKE, while a non-zero
/// first word is an SPI, ESP). Whether the pair is a configured one is the caller's second
/// question.
#[inline(always)]
pub fn is_ike_datagram(sport: u16, dport: u16, marker: bool) -> bool {
    if sport == IKE_PORT || dport == IKE_PORT {
        return true;
    }
    marker && (sport == NAT_T_PORT || dport == NAT_T_PORT)
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: every type is #[repr(C)] and bytemuck::Pod (no padding, any bit pattern valid).
    unsafe impl aya::Pod for super::FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LenSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FieldSet {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PrefixKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::RuleValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::CacheSlot {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SpStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::SaInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::IkePeerKey {}
}
