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
pub const XSKS: &str = "XIPSEC_XSKS";
pub const XSK_SLOTS: &str = "XIPSEC_XSK_SLOTS";
pub const FRAG_STATE: &str = "XIPSEC_FRAG_STATE";
pub const SA_OUT_BY_SPI: &str = "XIPSEC_SA_OUT_BY_SPI";
pub const ENGINE_SOCKETS: &str = "XIPSEC_ENGINE_SOCKETS";

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
pub const MAX_MASKS: u32 = 64;
pub const MAX_SP: u32 = 262_144;
pub const MAX_SA: u32 = 16_384;
/// Capacity of [`RULES`]: both generations of every rule kind ([`RULE_KINDS`]); each policy has
/// one rule of each kind at most.
pub const RULES_CAPACITY: u32 = 2 * RULE_KINDS * MAX_SP;
pub const FLOW_CACHE_CAPACITY: u32 = 65_536;
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

/// Rule kinds, as stored in [`MaskDesc::kind`] and [`RuleKey::kind`]. A non-first fragment has no
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

/// `MaskDesc::fields` bits: which selector fields are exact in this mask.
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
    /// Stable identity of this mask within its generation and kind, carried in [`RuleKey::tag`];
    /// unlike the mask's position (which follows `min_rank`), it does not change when other
    /// masks come and go, so a policy's rule key stays the same across commits.
    pub id: u8,
    /// `RULE_*`: which rule set this mask searches, carried in [`RuleKey::kind`].
    pub kind: u8,
    pub _pad: [u8; 5],
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
    /// `RULE_*` of the mask.
    pub kind: u8,
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
            kind: mask.kind,
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
/// `CLOCK_MONOTONIC` nanoseconds (what `bpf_ktime_get_ns` reads) of the engine's last sign of
/// life: the daemon writes it every [`ENGINE_HEARTBEAT_NS`] while its engine runs. Older than
/// [`ENGINE_ALIVE_TIMEOUT_NS`], TC egress counts `ipsec` packets as `drop_ipsec_unavailable`
/// and drops them itself rather than redirecting them to a TUN device that may be gone with a
/// killed daemon (where the kernel would drop them uncounted).
pub const CONFIG_ENGINE_ALIVE_NS: u32 = 2;
pub const CONFIG_LEN: u32 = 3;
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

/// Index into [`MASK_COUNT`] and base (in units of [`MAX_MASKS`]) into [`MASKS`] for a rule kind,
/// generation and direction.
#[inline(always)]
pub fn mask_set(kind: u8, generation: u8, dir: u8) -> u32 {
    (u32::from(kind) % RULE_KINDS) * 4 + (u32::from(generation) & 1) * 2 + (u32::from(dir) & 1)
}
pub const MASK_SETS: u32 = 4 * RULE_KINDS;

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
}

impl Counter {
    pub const COUNT: u32 = 19;
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
        )
    }

    /// Whether this counter is an event counted besides a verdict rather than a verdict: every
    /// packet moves exactly one verdict counter, and at most one event counter too.
    pub fn is_event(self) -> bool {
        matches!(self, Counter::FragmentNoState | Counter::FlowCacheHit)
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FragValue {}
}
