//! Tuple-space classification with prefix pruning, an exact-flow cache in front, and the
//! verdicts of fragments.
//!
//! The flow cache ([`FLOW_CACHE`], `abi::CacheSlot`) is an array of one-cache-line slots: a flow
//! hashes (keyed by a secret seed) to two buckets of two adjacent slots, and a hit reads one
//! slot, compares the whole key and checks the epoch and the slot's check word. A miss writes
//! the verdict into a free slot of the flow's buckets (empty, or of an older epoch); when all
//! four hold current verdicts, it displaces one and moves that flow to a free slot of its own
//! buckets if it has one (one step of cuckoo hashing), else forgets it.
//!
//! Cost per packet: one cache line read on a hit. On a miss, one LPM trie lookup per address gives
//! the lengths of every stored prefix containing it (`::/0` is implied, not stored); then one
//! flat, bounded loop walks the candidate shapes: per source length the destination lengths that
//! occur with it (one array lookup, intersected with the packet's), per length pair the field
//! combinations present (one array lookup, skipped when its best rank cannot win), per
//! combination one rule lookup. The cost follows how many stored prefixes the packet falls in,
//! never the number of shapes or policies; the compiler refuses an SPD that could need more than
//! `MAX_PROBES` steps, and a packet that still ran out would be dropped.
//!
//! Fragments (RFC 4301 §7): a first fragment is classified like any packet and its verdict is
//! remembered under (source, destination, identification) for [`FRAG_STATE_TIMEOUT_NS`]; a later
//! fragment takes that verdict. Without one it takes the strictest verdict of every policy that
//! could match it with ports (and, when not visible, protocol) ignored: the `RULE_FRAG_*` rule
//! sets, searched like the flow rules but ranked by strictness.

use aya_ebpf::{
    cty::c_void,
    helpers::{bpf_ktime_get_ns, generated::bpf_loop},
    maps::{Array, lpm_trie::Key},
};
use ipsec_common::abi::{
    ACTION_NONE, ACTION_PROBE_BUDGET, CONFIG_EPOCH, CONFIG_FLOW_CACHE_SEED, CacheSlot,
    CacheValue, ClassifierTables, Counter, FLOW_CACHE_WAYS, FRAG_STATE_TIMEOUT_NS, FieldSet,
    FlowKey, FragKey, FragValue, LenSet, NO_SP, cache_buckets, flow_hash,
    PREFIX_LOOKUP_BITS, PrefixKey, RULE_FLOW, RULE_FRAG_ANY, RULE_FRAG_PORTS, RuleKey, RuleValue,
    SP_PROBE_BUDGET, Searched, MAX_PROBES,
};

use crate::{
    maps::{
        CONFIG, FIELD_SETS, FLOW_CACHE, FRAG_STATE, LEN_PAIRS, PREFIXES, RULES, SEARCH, count,
    },
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
    let seed = array_u64(&CONFIG, CONFIG_FLOW_CACHE_SEED);
    let words = key_words(flow);
    let hash = flow_hash(words, seed);
    let slots = candidates(hash);
    let mut i = 0;
    while i < slots.len() {
        if let Some(hit) = probe(slots[i], words, hash, epoch) {
            count(Counter::FlowCacheHit);
            return hit;
        }
        i += 1;
    }
    let verdict = search(flow, RULE_FLOW, epoch);
    insert(&slots, words, &CacheSlot::new(flow, hash, &verdict), epoch, seed, hash >> 62);
    verdict
}

/// The flow's key as the five words the cache hashes and compares, in place (no copy: the
/// stack is tight, see `insert`).
#[inline(always)]
fn key_words(flow: &FlowKey) -> &[u64; 5] {
    // SAFETY: `FlowKey` is 40 bytes, 8-byte aligned, plain data: five words.
    unsafe { &*core::ptr::from_ref(flow).cast::<[u64; 5]>() }
}

/// The four slots a flow of hash `hash` may sit in: both slots of its first bucket, then both
/// of its second.
#[inline(always)]
fn candidates(hash: u64) -> [u32; 4] {
    let [a, b] = cache_buckets(hash);
    let (a, b) = (a * FLOW_CACHE_WAYS, b * FLOW_CACHE_WAYS);
    [a, a + 1, b, b + 1]
}

/// The verdict slot `index` holds for the flow of `words` and `hash` in `epoch`, if any.
#[inline(always)]
fn probe(index: u32, words: &[u64; 5], hash: u64, epoch: u64) -> Option<CacheValue> {
    let slot = slot_words(index)?;
    let mut i = 0;
    while i < 5 {
        // SAFETY: the slot is 64 bytes, 64-byte aligned, inside the map; another CPU may be
        // writing it (the check catches a torn slot, see `abi::CacheSlot`).
        if unsafe { core::ptr::read_volatile(slot.add(i)) } != words[i] {
            return None;
        }
        i += 1;
    }
    // SAFETY: as above.
    let (slot_epoch, verdict, tail) = unsafe {
        (
            core::ptr::read_volatile(slot.add(5)),
            core::ptr::read_volatile(slot.add(6)),
            core::ptr::read_volatile(slot.add(7)),
        )
    };
    if slot_epoch != epoch {
        return None;
    }
    CacheSlot::verdict(slot_epoch, verdict, tail, hash)
}

/// A slot's words: the key's five, then epoch, verdict and tail (`abi::CacheSlot`).
const SLOT_WORDS: usize = 8;

/// The words of the slot at `index`, for volatile word loads and stores.
#[inline(always)]
fn slot_words(index: u32) -> Option<*mut u64> {
    FLOW_CACHE.get_ptr_mut(index).map(<*mut CacheSlot>::cast)
}

/// The first of `slots` other than `except` free in `epoch` (never written, or holding an
/// older epoch's verdict).
#[inline(always)]
fn free_slot(slots: &[u32; 4], epoch: u64, except: u32) -> Option<u32> {
    let mut i = 0;
    while i < slots.len() {
        let index = slots[i];
        if index != except
            && let Some(slot) = slot_words(index)
            // SAFETY: word 5 of the slot (64 bytes inside the map) is its epoch.
            && unsafe { core::ptr::read_volatile(slot.add(5)) } != epoch
        {
            return Some(index);
        }
        i += 1;
    }
    None
}

/// Cache `new` (for the flow of `words`) in one of `slots`: a free one, else displace slot
/// `victim % 4`, first moving its flow to a free slot of its own buckets if it has one.
/// Word by word, never through a 64-byte copy on the stack (the stack is tight: the search
/// callback's frame adds to this program's).
#[inline(always)]
fn insert(slots: &[u32; 4], words: &[u64; 5], new: &CacheSlot, epoch: u64, seed: u64, victim: u64) {
    let index = if let Some(index) = free_slot(slots, epoch, u32::MAX) {
        index
    } else {
        let index = match victim & 3 {
            0 => slots[0],
            1 => slots[1],
            2 => slots[2],
            _ => slots[3],
        };
        let Some(from) = slot_words(index) else {
            return;
        };
        // SAFETY: the slot's first five words (inside the map) are its key; a torn read
        // only misplaces a slot whose check then fails.
        let theirs = unsafe { &*from.cast::<[u64; 5]>() };
        if let Some(to) = free_slot(&candidates(flow_hash(theirs, seed)), epoch, index)
            .and_then(slot_words)
        {
            let mut i = 0;
            while i < SLOT_WORDS {
                // SAFETY: both slots are 64 bytes inside the map.
                unsafe { core::ptr::write_volatile(to.add(i), core::ptr::read_volatile(from.add(i))) };
                i += 1;
            }
        }
        index
    };
    let Some(to) = slot_words(index) else {
        return;
    };
    let tail = [new.epoch, new.verdict, new.tail];
    let mut i = 0;
    while i < SLOT_WORDS {
        let word = if i < 5 { words[i] } else { tail[i - 5] };
        // SAFETY: the slot is 64 bytes inside the map.
        unsafe { core::ptr::write_volatile(to.add(i), word) };
        i += 1;
    }
}

/// The maps, as the tables [`search`] reads (the explain programs read them the same way).
pub(crate) struct Maps;

impl ClassifierTables for Maps {
    #[inline(always)]
    fn prefix_lengths(&self, tag: u8, addr: &[u8; 16]) -> Option<LenSet> {
        let key = Key::new(PREFIX_LOOKUP_BITS, PrefixKey { tag, addr: *addr });
        PREFIXES.get(&key).copied()
    }

    #[inline(always)]
    fn pairs(&self, index: u32) -> Option<LenSet> {
        LEN_PAIRS.get(index).copied()
    }

    #[inline(always)]
    fn field_set(&self, index: u32) -> Option<FieldSet> {
        FIELD_SETS.get(index).copied()
    }

    #[inline(always)]
    fn rule(&self, key: &RuleKey) -> Option<RuleValue> {
        // SAFETY: the pointer comes from a successful map lookup; plain data.
        RULES.get_ptr(key).map(|rule| unsafe { *rule })
    }
}

/// One step of the search in the [`SEARCH`] slot `ctx` points to: `bpf_loop`'s callback (0 goes
/// on, 1 stops). A separate function the verifier checks until its states converge, which they
/// do at once: the search state lives in a map value, whose contents the verifier does not
/// track, so every call starts from the same abstract state and the step count costs no
/// verifier budget.
extern "C" fn search_step(_index: u64, ctx: *mut c_void) -> i64 {
    // SAFETY: `search` passes a pointer to its slot index, live for the whole `bpf_loop`.
    let slot = unsafe { *ctx.cast::<u32>() };
    let Some(state) = SEARCH.get_ptr_mut(slot) else {
        return 1;
    };
    // SAFETY: a per-CPU slot of this program's direction; nothing else runs on this CPU
    // with it while the program runs.
    let state = unsafe { &mut *state };
    i64::from(!state.step(&Maps))
}

/// The verdict of the rules of `kind` in the generation `epoch` makes active.
#[inline(always)]
fn search(flow: &FlowKey, kind: u8, epoch: u64) -> CacheValue {
    let generation = (epoch & 1) as u8;
    let mut slot = u32::from(flow.dir & 1);
    let searched = match SEARCH.get_ptr_mut(slot) {
        Some(state) => {
            // SAFETY: a per-CPU slot of this program's direction (see `search_step`).
            unsafe { (*state).restart(&Maps, flow, kind, generation) };
            // SAFETY: the callback and its context are as `bpf_loop` expects; the context
            // outlives the call.
            unsafe {
                bpf_loop(
                    MAX_PROBES,
                    search_step as *mut c_void,
                    core::ptr::from_mut(&mut slot).cast(),
                    0,
                );
            }
            // SAFETY: as above; the loop is over.
            unsafe { (*state).result() }
        }
        None => Searched::OutOfSteps,
    };
    let (sp_id, sa_id, action) = match searched {
        Searched::Rule(rule) => (rule.sp_id, rule.sa_id, rule.action),
        Searched::Nothing => (NO_SP, 0, ACTION_NONE),
        // Unreachable for an SPD the compiler accepted: fail closed rather than guess.
        Searched::OutOfSteps => (SP_PROBE_BUDGET, 0, ACTION_PROBE_BUDGET),
    };
    CacheValue {
        epoch,
        sp_id,
        sa_id,
        action,
        _pad: 0,
    }
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
