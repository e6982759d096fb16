//! Every map the programs use; names, keys and values come from `ipsec_common::abi`.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, XskMap},
};
use ipsec_common::abi::{
    CONFIG_LEN, CacheSlot, Counter, FIELD_SETS_ENTRIES, FLOW_CACHE_SLOTS,
    FRAG_STATE_CAPACITY, FieldSet, FragKey, FragValue, LEN_PAIRS_ENTRIES, LenSet,
    MAX_ENGINE_SOCKETS, MAX_SA, MAX_SP, MAX_XSK, PREFIXES_CAPACITY, PrefixKey, RULES_CAPACITY,
    RuleKey, RuleValue, SaInfo, Search, SpStats,
};

#[map(name = "XIPSEC_RULES")]
/// Allocated on insert (`BPF_F_NO_PREALLOC`): memory follows the SPD size, and a rule removed
/// while a packet reads it is freed only after an RCU grace period.
pub(crate) static RULES: HashMap<RuleKey, RuleValue> =
    HashMap::with_max_entries(RULES_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "XIPSEC_PREFIXES")]
/// Every source and destination prefix of the SPD but `::/0`, per generation, direction and side
/// (the key's tag): the lengths of all stored prefixes containing it (itself included). An LPM
/// trie, so always allocated on insert.
pub(crate) static PREFIXES: LpmTrie<PrefixKey, LenSet> =
    LpmTrie::with_max_entries(PREFIXES_CAPACITY, 0);

#[map(name = "XIPSEC_LEN_PAIRS")]
/// Per rule set and source length: the destination lengths that occur with it.
pub(crate) static LEN_PAIRS: Array<LenSet> = Array::with_max_entries(LEN_PAIRS_ENTRIES, 0);

#[map(name = "XIPSEC_FIELD_SETS")]
/// Per rule set and length pair: the field combinations that occur, and their best rank.
pub(crate) static FIELD_SETS: Array<FieldSet> = Array::with_max_entries(FIELD_SETS_ENTRIES, 0);

#[map(name = "XIPSEC_SEARCH")]
/// The classifier's search state, one per direction (the program that classifies it) and CPU: a
/// map value rather than the stack, so the verifier checks the search step once (see
/// `classify::search_step`).
pub(crate) static SEARCH: PerCpuArray<Search> = PerCpuArray::with_max_entries(2, 0);

#[map(name = "XIPSEC_CONFIG")]
pub(crate) static CONFIG: Array<u64> = Array::with_max_entries(CONFIG_LEN, 0);

#[map(name = "XIPSEC_FLOW_CACHE")]
/// The flow cache (see `abi::CacheSlot` and `classify`): mmapable, so the kernel page-aligns
/// its values and every 64-byte slot is one cache line.
pub(crate) static FLOW_CACHE: Array<CacheSlot> =
    Array::with_max_entries(FLOW_CACHE_SLOTS, BPF_F_MMAPABLE);

#[map(name = "XIPSEC_SP_STATS")]
pub(crate) static SP_STATS: PerCpuArray<SpStats> = PerCpuArray::with_max_entries(MAX_SP, 0);

#[map(name = "XIPSEC_COUNTERS")]
pub(crate) static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Counter::COUNT, 0);

#[map(name = "XIPSEC_SA_BY_SPI")]
pub(crate) static SA_BY_SPI: HashMap<u32, SaInfo> = HashMap::with_max_entries(MAX_SA, 0);

#[map(name = "XIPSEC_XSKS")]
pub(crate) static XSKS: XskMap = XskMap::with_max_entries(MAX_XSK, 0);

#[map(name = "XIPSEC_XSK_SLOTS")]
pub(crate) static XSK_SLOTS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_XSK, 0);

#[map(name = "XIPSEC_SA_OUT_BY_SPI")]
/// Outbound SAs by SPI (host order): the only ESP the engine's socket may send unclassified.
pub(crate) static SA_OUT_BY_SPI: HashMap<u32, SaInfo> = HashMap::with_max_entries(MAX_SA, 0);

#[map(name = "XIPSEC_ENGINE_SOCKETS")]
/// Socket cookies of the ESP engine's sending sockets (value unused).
pub(crate) static ENGINE_SOCKETS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_ENGINE_SOCKETS, 0);

#[map(name = "XIPSEC_FRAG_STATE")]
/// The first fragment's verdict of each fragmented datagram, for its other fragments.
pub(crate) static FRAG_STATE: LruHashMap<FragKey, FragValue> =
    LruHashMap::with_max_entries(FRAG_STATE_CAPACITY, 0);

/// Count one verdict.
#[inline(always)]
pub(crate) fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *slot += 1 };
    }
}

/// Count `packets` packets of `bytes` IPv6 bytes in all against policy `sp_id`.
#[inline(always)]
pub(crate) fn count_sp(sp_id: u32, packets: u64, bytes: u64) {
    if let Some(stats) = SP_STATS.get_ptr_mut(sp_id) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe {
            (*stats).packets += packets;
            (*stats).bytes += bytes;
        }
    }
}
