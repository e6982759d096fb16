//! The explain programs: what the live programs would decide for a frame, without changing
//! anything they read or count (the ABI and the contract are in `ipsec_common::explain`).
//!
//! The frame goes through the live parser (`parse`), then the classifier's search
//! (`ipsec_common::abi::Search`) over the live maps, in the generation the current epoch makes
//! active: the same code the live programs run on a flow-cache miss, which is also what a hit
//! returns (an entry is valid only for the epoch it was computed in). Nothing is counted, cached
//! or remembered; the search state lives in this module's own per-CPU map.

use aya_ebpf::{
    bindings::xdp_action,
    cty::c_void,
    helpers::generated::{bpf_loop, bpf_xdp_adjust_head},
    macros::{map, xdp},
    maps::PerCpuArray,
    programs::XdpContext,
};
use ipsec_common::{
    abi::{
        ACTION_NONE, CONFIG_EPOCH, DIR_IN, DIR_OUT, MAX_PROBES, NO_SP, RULE_FLOW, Search, Searched,
    },
    explain::{
        EXPLAIN_MAGIC, ExplainResult, OUTCOME_CLASSIFIED, OUTCOME_ESP, OUTCOME_ESP_FRAGMENT,
        OUTCOME_EXT_LIMIT, OUTCOME_FRAGMENT, OUTCOME_MALFORMED, OUTCOME_NOT_IPV6,
        OUTCOME_OUT_OF_STEPS, OUTCOME_VLAN_DEPTH,
    },
};

use crate::{
    classify::Maps,
    maps::{CONFIG, SA_BY_SPI},
    parse::{Fragment, Frame, Outcome, parse, zeroed_key},
};

#[map(name = "XIPSEC_EXPLAIN_SEARCH")]
/// The explain search's state, one per CPU: never the live programs' `XIPSEC_SEARCH`, so a live
/// packet on this CPU cannot clobber an explain search, nor an explain a live one.
static EXPLAIN_SEARCH: PerCpuArray<Search> = PerCpuArray::with_max_entries(1, 0);

/// Explain a frame arriving.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_explain_in(ctx: XdpContext) -> u32 {
    explain(&ctx, DIR_IN)
}

/// Explain a frame leaving.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_explain_out(ctx: XdpContext) -> u32 {
    explain(&ctx, DIR_OUT)
}

/// `bpf_loop`'s callback: one step of the search in [`EXPLAIN_SEARCH`] (0 goes on, 1 stops).
extern "C" fn explain_step(_index: u64, _ctx: *mut c_void) -> i64 {
    let Some(state) = EXPLAIN_SEARCH.get_ptr_mut(0) else {
        return 1;
    };
    // SAFETY: this CPU's slot of the explain programs' own map; nothing else uses it while
    // this program runs (a test run does not migrate).
    let state = unsafe { &mut *state };
    i64::from(!state.step(&Maps))
}

#[inline(always)]
fn explain(ctx: &XdpContext, dir: u8) -> u32 {
    let len = ctx.data_end() - ctx.data();
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        // Read back through a volatile load: LLVM then cannot derive a packet bound from the
        // length checks on the payload and drop a `data_end` check the verifier needs (the
        // parser's reads after a payload check, e.g. ESP's SPI).
        // SAFETY: a read of a local.
        total_len: unsafe { core::ptr::read_volatile(&raw const len) },
    };
    let mut result = ExplainResult {
        magic: EXPLAIN_MAGIC,
        epoch: CONFIG.get(CONFIG_EPOCH).copied().unwrap_or(0),
        rank: u64::MAX,
        outcome: OUTCOME_CLASSIFIED,
        sp_id: NO_SP,
        sa_id: 0,
        action: ACTION_NONE,
        spi: 0,
        spi_known: 0,
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    // Where the IPv6 header starts matters only to byte counters, which explain leaves alone.
    let mut l3_offset = 0usize;
    match parse(&frame, dir, dir == DIR_IN, flow, &mut l3_offset) {
        Outcome::NotIpv6 => result.outcome = OUTCOME_NOT_IPV6,
        Outcome::Malformed => result.outcome = OUTCOME_MALFORMED,
        Outcome::ExtLimit => result.outcome = OUTCOME_EXT_LIMIT,
        Outcome::VlanDepth => result.outcome = OUTCOME_VLAN_DEPTH,
        Outcome::EspFragment => result.outcome = OUTCOME_ESP_FRAGMENT,
        Outcome::Esp { spi, .. } => {
            result.outcome = OUTCOME_ESP;
            result.spi = spi;
            if let Some(sa) = SA_BY_SPI.get_ptr(spi) {
                result.spi_known = 1;
                // SAFETY: the pointer comes from a successful map lookup; plain data.
                result.sa_id = unsafe { (*sa).sa_id };
            }
        }
        Outcome::Flow(Fragment::Whole) => {
            let generation = (result.epoch & 1) as u8;
            let searched = match EXPLAIN_SEARCH.get_ptr_mut(0) {
                Some(state) => {
                    // SAFETY: this CPU's slot of the explain map (see `explain_step`).
                    unsafe { *state = Search::start(&Maps, flow, RULE_FLOW, generation) };
                    // SAFETY: the callback is as `bpf_loop` expects; it takes no context.
                    unsafe {
                        bpf_loop(
                            MAX_PROBES,
                            explain_step as *mut c_void,
                            core::ptr::null_mut(),
                            0,
                        );
                    }
                    // SAFETY: as above; the loop is over.
                    unsafe { (*state).result() }
                }
                None => Searched::OutOfSteps,
            };
            match searched {
                Searched::Rule(rule) => {
                    result.rank = rule.rank;
                    result.sp_id = rule.sp_id;
                    result.sa_id = rule.sa_id;
                    result.action = rule.action;
                }
                Searched::Nothing => {}
                Searched::OutOfSteps => result.outcome = OUTCOME_OUT_OF_STEPS,
            }
        }
        Outcome::Flow(_) => result.outcome = OUTCOME_FRAGMENT,
    }
    write_result(ctx, &result);
    xdp_action::XDP_PASS
}

/// Writes `result` in front of the frame (into the headroom a test run gives XDP), so the run's
/// output data is the result followed by the frame, however short the frame is.
#[inline(always)]
fn write_result(ctx: &XdpContext, result: &ExplainResult) {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_possible_wrap,
        reason = "48 bytes (asserted in the ABI)"
    )]
    const GROW: i32 = -(size_of::<ExplainResult>() as i32);
    // SAFETY: the helper takes the program's own context; it fails (nothing moves) when the
    // headroom is too small.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, GROW) } != 0 {
        return;
    }
    let start = ctx.data();
    if start + size_of::<ExplainResult>() > ctx.data_end() {
        return;
    }
    // SAFETY: [start, start + size) was just checked to lie inside the packet; an unaligned
    // store of plain data.
    unsafe { core::ptr::write_unaligned(start as *mut ExplainResult, *result) };
}
