//! Tuple-space classification with an exact-flow LRU cache in front, and the verdicts of
//! fragments.
//!
//! Cost per packet: one cache lookup on a hit; on a miss one hash lookup per mask of the active
//! generation, stopping early once the best rule found outranks every rule of the next mask.
//! The cost never depends on the number of policies, only on the number of distinct masks.
//!
//! Fragments (RFC 4301 §7): a first fragment is classified like any packet and its verdict is
//! remembered under (source, destination, identification) for [`FRAG_STATE_TIMEOUT_NS`]; a later
//! fragment takes that verdict. Without one it takes the strictest verdict of every policy that
//! could match it with ports (and, when not visible, protocol) ignored: the `RULE_FRAG_*` rule
//! sets, searched like the flow rules but ranked by strictness.

use aya_ebpf::{helpers::bpf_ktime_get_ns, maps::Array};
use ipsec_common::abi::{
    ACTION_NONE, CONFIG_EPOCH, CacheValue, Counter, FRAG_STATE_TIMEOUT_NS, FlowKey, FragKey,
    FragValue, MAX_MASKS, NO_SP, RULE_FLOW, RULE_FRAG_ANY, RULE_FRAG_PORTS, RuleKey, mask_set,
};

use crate::{
    maps::{CONFIG, FLOW_CACHE, FRAG_STATE, MASK_COUNT, MASKS, RULES, count},
    parse::Fragment,
};

#[inline(always)]
fn array_u64(map: &Array<u64>, index: u32) -> u64 {
    map.get(index).copied().unwrap_or(0)
}

/// The verdict for `flow` given what its fragment header said: the matched policy (or `NO_SP`)
/// and its action.
#[inline(always)]
pub(crate) fn classify(flow: &FlowKey, fragment: Fragment) -> CacheValue {
    match fragment {
        Fragment::Whole => classify_flow(flow),
        Fragment::First { id } => {
            let verdict = classify_flow(flow);
            remember(flow, id, &verdict);
            verdict
        }
        Fragment::NonFirst { id, proto_known } => {
            let key = frag_key(flow, id);
            if let Some(state) = FRAG_STATE.get_ptr(key) {
                // SAFETY: the pointer comes from a successful map lookup; plain data.
                let state = unsafe { *state };
                // SAFETY: a helper without arguments.
                if unsafe { bpf_ktime_get_ns() } < state.expires_ns {
                    return CacheValue {
                        epoch: 0,
                        sp_id: state.sp_id,
                        sa_id: state.sa_id,
                        action: state.action,
                        _pad: 0,
                    };
                }
            }
            count(Counter::FragmentNoState);
            let kind = if proto_known {
                RULE_FRAG_PORTS
            } else {
                RULE_FRAG_ANY
            };
            let epoch = array_u64(&CONFIG, CONFIG_EPOCH);
            search(flow, kind, epoch)
        }
    }
}

/// Classify a whole packet or first fragment: the flow cache, then the flow rules.
#[inline(always)]
fn classify_flow(flow: &FlowKey) -> CacheValue {
    let epoch = array_u64(&CONFIG, CONFIG_EPOCH);
    if let Some(hit) = FLOW_CACHE.get_ptr(flow) {
        // SAFETY: the pointer comes from a successful map lookup; the value is plain data.
        let hit = unsafe { *hit };
        if hit.epoch == epoch {
            count(Counter::FlowCacheHit);
            return hit;
        }
    }
    let verdict = search(flow, RULE_FLOW, epoch);
    let _ = FLOW_CACHE.insert(flow, verdict, 0);
    verdict
}

/// Tuple-space search of the rules of `kind` in the generation `epoch` makes active.
#[inline(always)]
fn search(flow: &FlowKey, kind: u8, epoch: u64) -> CacheValue {
    let generation = (epoch & 1) as u8;
    let set = mask_set(kind, generation, flow.dir);
    let count = MASK_COUNT.get(set).copied().unwrap_or(0);
    let base = set * MAX_MASKS;
    let mut best_rank = u64::MAX;
    let mut verdict = CacheValue {
        epoch,
        sp_id: NO_SP,
        sa_id: 0,
        action: ACTION_NONE,
        _pad: 0,
    };
    let mut slot = 0u32;
    while slot < MAX_MASKS {
        if slot >= count {
            break;
        }
        let Some(mask) = MASKS.get(base + slot) else {
            break;
        };
        if mask.min_rank >= best_rank {
            break;
        }
        if mask.applies_to(flow) {
            let key = RuleKey::masked(flow, mask, generation);
            if let Some(rule) = RULES.get_ptr(key) {
                // SAFETY: the pointer comes from a successful map lookup; plain data.
                let rule = unsafe { *rule };
                if rule.rank < best_rank {
                    best_rank = rule.rank;
                    verdict.sp_id = rule.sp_id;
                    verdict.sa_id = rule.sa_id;
                    verdict.action = rule.action;
                }
            }
        }
        slot += 1;
    }
    verdict
}

/// Remember a first fragment's verdict for the rest of its datagram.
#[inline(always)]
fn remember(flow: &FlowKey, id: [u8; 4], verdict: &CacheValue) {
    let key = frag_key(flow, id);
    let value = FragValue {
        // SAFETY: a helper without arguments.
        expires_ns: unsafe { bpf_ktime_get_ns() } + FRAG_STATE_TIMEOUT_NS,
        sp_id: verdict.sp_id,
        sa_id: verdict.sa_id,
        action: verdict.action,
        _pad: 0,
    };
    let _ = FRAG_STATE.insert(key, value, 0);
}

/// The fragment-state key of `flow`'s datagram, built with five 8-byte stores: the addresses are
/// the first four words of both `FlowKey` and `FragKey` (both 8-byte aligned), so no byte-wise
/// `memset`/`memcpy` call is emitted.
#[inline(always)]
fn frag_key(flow: &FlowKey, id: [u8; 4]) -> FragKey {
    let mut slot = core::mem::MaybeUninit::<FragKey>::uninit();
    let to = slot.as_mut_ptr().cast::<u64>();
    let from = core::ptr::from_ref(flow).cast::<u64>();
    let mut i = 0;
    while i < 4 {
        // SAFETY: both types are 40 bytes, 8-byte aligned, with the addresses in bytes 0..32.
        unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read(from.add(i))) };
        i += 1;
    }
    // Bytes 32..36 the identification as read, 36 the direction, 37..40 zero (little endian).
    let last = u64::from(u32::from_ne_bytes(id)) | u64::from(flow.dir) << 32;
    // SAFETY: word 4 of the 40-byte key.
    unsafe { core::ptr::write_volatile(to.add(4), last) };
    // SAFETY: every byte was written above; any bit pattern is a valid `FragKey` (Pod).
    unsafe { slot.assume_init() }
}
