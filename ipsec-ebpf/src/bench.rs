//! Baselines for `cargo xtask bench classify`, measured in the same run as the real programs:
//! parse only, and parse plus one exact-match hash lookup of the flow (the floor of any per-flow
//! lookup).

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use ipsec_common::abi::{DIR_IN, FlowKey};

use crate::{
    maps::BENCH_FLOWS,
    parse::{Frame, Outcome, parse, zeroed_key},
};

#[inline(always)]
fn parsed(ctx: &XdpContext, flow: &mut FlowKey) -> bool {
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        total_len: ctx.data_end() - ctx.data(),
    };
    matches!(parse(&frame, DIR_IN, true, flow), Outcome::Flow(_))
}

#[inline(always)]
pub fn try_parse_only(ctx: &XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    if parsed(ctx, flow) {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

#[inline(always)]
pub fn try_parse_hash(ctx: &XdpContext) -> u32 {
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    if parsed(ctx, flow) && BENCH_FLOWS.get_ptr(&*flow).is_some() {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}
