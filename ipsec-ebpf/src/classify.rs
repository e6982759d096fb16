//! Tuple-space classification with an exact-flow LRU cache in front.
//!
//! Cost per packet: one cache lookup on a hit; on a miss one hash lookup per mask of the active
//! generation, stopping early once the best rule found outranks every rule of the next mask.
//! The cost never depends on the number of policies, only on the number of distinct masks.

use aya_ebpf::maps::Array;
use ipsec_common::abi::{
    ACTION_NONE, CONFIG_EPOCH, CacheValue, FlowKey, MAX_MASKS, NO_SP, RuleKey, mask_set,
};

use crate::maps::{CONFIG, FLOW_CACHE, MASK_COUNT, MASKS, RULES};

/// Set to 1 at load time by the benchmark to measure the miss path: the cache is still written,
/// but never read. The verifier prunes the dead branch when it is 0.
#[unsafe(no_mangle)]
static XIPSEC_FORCE_CACHE_MISS: u8 = 0;

#[inline(always)]
fn array_u64(map: &Array<u64>, index: u32) -> u64 {
    map.get(index).copied().unwrap_or(0)
}

/// The verdict for `flow`: the matched policy (or `NO_SP`) and its action.
#[inline(always)]
pub fn classify(flow: &FlowKey) -> CacheValue {
    let epoch = array_u64(&CONFIG, CONFIG_EPOCH);
    // SAFETY: a volatile read of a load-time constant.
    let force_miss = unsafe { core::ptr::read_volatile(&XIPSEC_FORCE_CACHE_MISS) } != 0;
    if !force_miss {
        if let Some(hit) = FLOW_CACHE.get_ptr(flow) {
            // SAFETY: the pointer comes from a successful map lookup; the value is plain data.
            let hit = unsafe { *hit };
            if hit.epoch == epoch {
                return hit;
            }
        }
    }

    let generation = (epoch & 1) as u8;
    let set = mask_set(generation, flow.dir);
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
            if let Some(rule) = RULES.get_ptr(&key) {
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
    let _ = FLOW_CACHE.insert(flow, &verdict, 0);
    verdict
}
