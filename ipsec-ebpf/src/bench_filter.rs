//! The programs of `cargo xtask bench filter`, in the benchmark object only:
//!
//! - `xdp_bench_gen`: the frame generator. `BPF_PROG_TEST_RUN` with `BPF_F_TEST_XDP_LIVE_FRAMES`
//!   (how xdp-trafficgen works; this kernel has no pktgen) runs it on a template frame; it
//!   writes the next flow of its table into the frame and returns `XDP_TX`, so the frame leaves
//!   the generator's veth and arrives on the peer veth through that interface's real receive
//!   path (or `XDP_DROP`, to measure the generator alone).
//! - `xdp_bench_floor`: counts and drops every frame, the floor any XDP filter is measured
//!   against.
//! - `xdp_bench_pass`: passes every frame (a native XDP attachment on a veth gives it the same
//!   receive path, NAPI and all, for nftables as for XDP programs).
//! - `xdp_bench_probe`: the memory floor: xipsec's parse, the flow cache's hash, and one read of
//!   the slot it picks in a table as large as the flow cache, then count and drop. What an exact
//!   per-flow lookup costs at the least on the machine at hand (a table of 32 MiB does not fit
//!   in any L2), so a run shows how much of xipsec's gap to the floor is the memory system's.
//! - `xdp_bench_probe_direct`: the same over a table of `kmalloc`'d arrays of at most 32 KiB in
//!   an array of maps, so in the kernel's direct map (1 GiB and 2 MiB pages) rather than in the
//!   4 KiB pages of `vmalloc`, where every array larger than 32 KiB lives: the memory floor
//!   without most of its TLB misses.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, xdp_action},
    cty::c_void,
    helpers::generated::bpf_map_lookup_elem,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
    programs::XdpContext,
};
use ipsec_common::abi::{
    CacheSlot, FLOW_CACHE_SLOTS, FlowKey,
    bench::{
        FRAME_DPORT, FRAME_DST, FRAME_MIN, FRAME_SPORT, FRAME_SRC, GEN_CONFIG_ACTION,
        GEN_CONFIG_BASE, GEN_CONFIG_FLOWS, GEN_CONFIG_LEN, GEN_FLOWS_CAPACITY, GenFlow,
        PROBE_DIRECT_MAPS, PROBE_DIRECT_SLOTS,
    },
    flow_hash,
};

use crate::parse::zeroed_key;

#[map(name = "XIPSEC_BENCH_GEN_FLOWS")]
static GEN_FLOWS: Array<GenFlow> = Array::with_max_entries(GEN_FLOWS_CAPACITY, 0);

#[map(name = "XIPSEC_BENCH_GEN_CONFIG")]
static GEN_CONFIG: Array<u32> = Array::with_max_entries(GEN_CONFIG_LEN, 0);

#[map(name = "XIPSEC_BENCH_GEN_COUNT")]
static GEN_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XIPSEC_BENCH_FLOOR_COUNT")]
static FLOOR_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XIPSEC_BENCH_PROBE_SLOTS")]
/// Laid out as the flow cache (`maps::FLOW_CACHE`): page-aligned 64-byte slots.
static PROBE_SLOTS: Array<CacheSlot> = Array::with_max_entries(FLOW_CACHE_SLOTS, BPF_F_MMAPABLE);

#[map(name = "XIPSEC_BENCH_PROBE_COUNT")]
static PROBE_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

#[map(name = "XIPSEC_BENCH_PROBE_OUTER")]
/// In truth an array of maps, each an array of `PROBE_DIRECT_SLOTS` 64-byte slots: the benchmark
/// creates it and hands it to the loader (see `abi::bench::PROBE_DIRECT_OUTER`); declared as a
/// plain array because aya-ebpf has no map-of-maps definition. A lookup returns the inner map.
static PROBE_OUTER: Array<u32> = Array::with_max_entries(PROBE_DIRECT_MAPS, 0);

#[map(name = "XIPSEC_BENCH_PROBE_DIRECT_COUNT")]
static PROBE_DIRECT_COUNT: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// The memory floor's hash seed: any constant (the table is never written).
const PROBE_SEED: u64 = 0x5eed_0ff1_0000_0001;

#[inline(always)]
fn config(slot: u32) -> u32 {
    GEN_CONFIG.get(slot).copied().unwrap_or(0)
}

/// Add one to slot 0 of a per-CPU counter; its value before.
#[inline(always)]
fn bump(counter: &PerCpuArray<u64>) -> u64 {
    match counter.get_ptr_mut(0) {
        // SAFETY: a per-CPU slot: only this CPU writes it, and the pointer is valid for the
        // program's run.
        Some(slot) => unsafe {
            let n = *slot;
            *slot = n + 1;
            n
        },
        None => 0,
    }
}

/// Frame generator (see the module docs).
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_gen(ctx: XdpContext) -> u32 {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + FRAME_MIN > end {
        return xdp_action::XDP_ABORTED;
    }
    let flows = u64::from(config(GEN_CONFIG_FLOWS).max(1));
    let offset = u32::try_from(bump(&GEN_COUNT) % flows).unwrap_or(0);
    let index = config(GEN_CONFIG_BASE).wrapping_add(offset);
    let Some(flow) = GEN_FLOWS.get(index) else {
        return xdp_action::XDP_ABORTED;
    };
    let frame = data as *mut u8;
    // SAFETY: the headers end within the frame (checked against data_end above); the writes
    // are unaligned-safe copies of plain bytes.
    unsafe {
        core::ptr::write_unaligned(frame.add(FRAME_SRC).cast::<[u8; 16]>(), flow.src);
        core::ptr::write_unaligned(frame.add(FRAME_DST).cast::<[u8; 16]>(), flow.dst);
        core::ptr::write_unaligned(frame.add(FRAME_SPORT).cast::<u16>(), flow.sport.to_be());
        core::ptr::write_unaligned(frame.add(FRAME_DPORT).cast::<u16>(), flow.dport.to_be());
    }
    config(GEN_CONFIG_ACTION)
}

/// The floor: count and drop.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_floor(ctx: XdpContext) -> u32 {
    let _ = ctx;
    bump(&FLOOR_COUNT);
    xdp_action::XDP_DROP
}

/// Pass everything.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_pass(ctx: XdpContext) -> u32 {
    let _ = ctx;
    xdp_action::XDP_PASS
}

/// The flow's hash under the memory floors' seed, if the frame is a flow xipsec would classify.
#[inline(always)]
fn probe_hash(ctx: &XdpContext) -> Option<u64> {
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    if !crate::bench::parsed(ctx, flow) {
        return None;
    }
    // SAFETY: `FlowKey` is 40 bytes, 8-byte aligned, plain data: five words.
    let words = unsafe { &*core::ptr::from_ref::<FlowKey>(flow).cast::<[u64; 5]>() };
    Some(flow_hash(words, PROBE_SEED))
}

/// The direct-mapped memory floor: as [`xdp_bench_probe`], the table in `kmalloc`'d arrays
/// (`abi::bench::PROG_PROBE_DIRECT`): the low half of the hash picks the array, the high half
/// the slot in it (multiply-shift: the counts are not powers of two).
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_probe_direct(ctx: XdpContext) -> u32 {
    if let Some(hash) = probe_hash(&ctx) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a 32-bit value times a count, shifted down by 32: below the count"
        )]
        let (outer, inner) = (
            (((hash & 0xffff_ffff) * u64::from(PROBE_DIRECT_MAPS)) >> 32) as u32,
            (((hash >> 32) * u64::from(PROBE_DIRECT_SLOTS)) >> 32) as u32,
        );
        if let Some(map) = PROBE_OUTER.get_ptr(outer) {
            // SAFETY: a lookup in an array of maps yields the inner map, which the helper takes
            // as its map argument (the verifier knows it as such); the key lives for the call.
            let slot = unsafe {
                bpf_map_lookup_elem(
                    map.cast_mut().cast::<c_void>(),
                    core::ptr::from_ref(&inner).cast::<c_void>(),
                )
            };
            if !slot.is_null() {
                // SAFETY: a 64-byte slot of the inner array; a volatile read, so the load is
                // made although its value is not used.
                let _ = unsafe { core::ptr::read_volatile(slot.cast::<u64>()) };
            }
        }
    }
    bump(&PROBE_DIRECT_COUNT);
    xdp_action::XDP_DROP
}

/// The memory floor (see the module docs): parse, hash, one read, count and drop.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_probe(ctx: XdpContext) -> u32 {
    if let Some(hash) = probe_hash(&ctx) {
        #[allow(
            clippy::cast_possible_truncation,
            reason = "masked to the slot count, a u32"
        )]
        let index = (hash & u64::from(FLOW_CACHE_SLOTS - 1)) as u32;
        if let Some(slot) = PROBE_SLOTS.get_ptr(index) {
            // SAFETY: the slot is 64 bytes inside the map; a volatile read, so the load is
            // made although its value is not used.
            let _ = unsafe { core::ptr::read_volatile(slot.cast::<u64>()) };
        }
    }
    bump(&PROBE_COUNT);
    xdp_action::XDP_DROP
}
