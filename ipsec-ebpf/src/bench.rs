//! Baselines for `cargo xtask bench classify`, measured in the same run as the real programs:
//! parse only, and parse plus one exact-match hash lookup of the flow (the floor of any per-flow
//! lookup). Built into the benchmark object only, with the one map they use.

use aya_ebpf::{
    bindings::xdp_action,
    macros::{map, xdp},
    maps::HashMap,
    programs::XdpContext,
};
use ipsec_common::abi::{CacheValue, DIR_IN, FlowKey};

use crate::parse::{Frame, Outcome, parse, zeroed_key};

#[map(name = "XIPSEC_BENCH_FLOWS")]
/// The flows the hash baseline finds (the benchmark inserts its one flow).
static BENCH_FLOWS: HashMap<FlowKey, CacheValue> = HashMap::with_max_entries(16, 0);

/// Parse the frame as the ingress program does; whether it is a flow to classify (then in
/// `flow`). Also the memory floor's (`bench_filter`).
#[inline(always)]
pub(crate) fn parsed(ctx: &XdpContext, flow: &mut FlowKey) -> bool {
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        total_len: ctx.data_end() - ctx.data(),
    };
    matches!(parse(&frame, DIR_IN, true, flow, &mut 0), Outcome::Flow(_))
}

/// Benchmark baseline: parse and pass.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_parse(ctx: XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    if parsed(&ctx, flow) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

/// Benchmark baseline: parse plus one exact-match hash lookup of the flow.
#[xdp]
#[allow(
    clippy::needless_pass_by_value,
    reason = "the program macro hands the context over by value"
)]
pub(crate) fn xdp_bench_hash(ctx: XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    if parsed(&ctx, flow) && BENCH_FLOWS.get_ptr(*flow).is_some() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
