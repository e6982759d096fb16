//! XDP ingress: parse, steer ESP by SPI, classify everything else against the inbound SPD.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use ipsec_common::abi::{ACTION_DISCARD, ACTION_IPSEC, Counter, DIR_IN, NO_SP};

use crate::{
    classify::classify,
    maps::{SA_BY_SPI, count, count_sp},
    parse::{Frame, Outcome, parse, zeroed_key},
};

#[inline(always)]
pub fn try_xdp_ingress(ctx: &XdpContext) -> u32 {
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        total_len: ctx.data_end() - ctx.data(),
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    match parse(&frame, DIR_IN, true, flow) {
        Outcome::NotIpv6 => pass(Counter::PassNotIpv6),
        Outcome::Malformed => drop(Counter::DropMalformed),
        Outcome::ExtLimit => drop(Counter::DropExtHeaderLimit),
        Outcome::Esp(spi) => {
            if SA_BY_SPI.get_ptr(&spi).is_some() {
                pass(Counter::EspKnownSpi)
            } else {
                drop(Counter::DropUnknownSpi)
            }
        }
        Outcome::EspFragment => pass(Counter::PassEspFragment),
        Outcome::Flow => {
            let verdict = classify(flow);
            if verdict.sp_id == NO_SP {
                return if flow.is_neighbour_discovery() {
                    pass(Counter::PassNeighbourDiscovery)
                } else {
                    pass(Counter::PassNoPolicy)
                };
            }
            count_sp(verdict.sp_id, frame.len() as u64);
            match verdict.action {
                ACTION_DISCARD => drop(Counter::DropDiscard),
                // Clear traffic that policy says must arrive protected is refused.
                ACTION_IPSEC => drop(Counter::DropIpsecClear),
                _ => pass(Counter::PassPolicyNone),
            }
        }
    }
}

#[inline(always)]
fn pass(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn drop(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_DROP
}
