//! XDP ingress: parse, steer ESP by SPI (plain, or in UDP to an encapsulation port: RFC 3948),
//! pass IKE between configured peers and drop NAT-keepalives (see `udp`), classify everything
//! else against the inbound SPD (fragments by their datagram's first fragment, see `classify`).
//! Any action value the program does not know drops.

use aya_ebpf::{bindings::xdp_action, programs::XdpContext};
use ipsec_common::abi::{
    ACTION_DISCARD, ACTION_IPSEC, ACTION_NONE, Counter, DIR_IN, NO_SP, XSK_MAX_FRAME, proto,
    xsk_slot_key,
};

use crate::{
    classify::classify,
    maps::{SA_BY_SPI, XSK_SLOTS, XSKS, count, count_sp},
    parse::{Fragment, Frame, Outcome, parse, zeroed_key},
    udp::{self, Udp},
};

#[inline(always)]
pub(crate) fn try_xdp_ingress(ctx: &XdpContext) -> u32 {
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        total_len: ctx.data_end() - ctx.data(),
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    let mut l3 = 0;
    match parse(&frame, DIR_IN, true, flow, &mut l3) {
        Outcome::NotIpv6 => pass(Counter::PassNotIpv6),
        Outcome::Malformed => drop(Counter::DropMalformed),
        Outcome::ExtLimit => drop(Counter::DropExtHeaderLimit),
        Outcome::VlanDepth => drop(Counter::DropVlanDepth),
        Outcome::Esp { spi, plain } => steer(ctx, &frame, spi, plain),
        Outcome::EspFragment => pass(Counter::PassEspFragment),
        Outcome::Flow(fragment) => {
            // ESP in UDP goes where plain ESP goes, and the engine's core accepts each shape
            // only for SAs of that shape; IKE between configured peers is never classified.
            if fragment == Fragment::Whole && flow.proto == proto::UDP {
                match udp::inspect(&frame, l3, flow, DIR_IN) {
                    Udp::Esp { spi, plain } => return steer(ctx, &frame, spi, plain),
                    Udp::Keepalive => return drop(Counter::DropNatKeepalive),
                    Udp::Ike => return pass(Counter::PassIke),
                    Udp::Other => {}
                }
            }
            let verdict = classify(flow, fragment);
            if verdict.sp_id == NO_SP {
                return if flow.is_neighbour_discovery() {
                    pass(Counter::PassNeighbourDiscovery)
                } else {
                    pass(Counter::PassNoPolicy)
                };
            }
            // One frame is one packet; its bytes are the IPv6 packet's, as the SA counters'.
            count_sp(verdict.sp_id, 1, (frame.len() - l3) as u64);
            match verdict.action {
                ACTION_DISCARD => drop(Counter::DropDiscard),
                // Clear traffic that policy says must arrive protected is refused.
                ACTION_IPSEC => drop(Counter::DropIpsecClear),
                ACTION_NONE => pass(Counter::PassPolicyNone),
                _ => drop(Counter::DropUnknownAction),
            }
        }
    }
}

/// ESP under `spi`: an SPI of ours goes to the engine's AF_XDP socket when the frame has the
/// plain shape and fits a UMEM frame, else to the kernel's path; any other SPI is dropped.
#[inline(always)]
fn steer(ctx: &XdpContext, frame: &Frame, spi: u32, plain: bool) -> u32 {
    if SA_BY_SPI.get_ptr(spi).is_none() {
        return drop(Counter::DropUnknownSpi);
    }
    if plain && frame.len() <= XSK_MAX_FRAME && to_engine_socket(ctx) {
        count(Counter::EspKnownSpiXsk);
        return xdp_action::XDP_REDIRECT;
    }
    pass(Counter::EspKnownSpi)
}

/// Redirect to the engine's AF_XDP socket on this interface and queue, if it has one. Only a
/// socket bound to exactly this (interface, queue) may take the packet (any other drops it), so
/// the slot is looked up by both.
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "an interface index is a u32 in `xdp_md`; aya widens it to usize"
)]
fn to_engine_socket(ctx: &XdpContext) -> bool {
    let key = xsk_slot_key(ctx.ingress_ifindex() as u32, ctx.rx_queue_index());
    // SAFETY: a plain value read from the map; entries are only replaced whole.
    let Some(&slot) = (unsafe { XSK_SLOTS.get(key) }) else {
        return false;
    };
    // An empty slot (the socket closed) falls back to XDP_PASS: the raw-socket path.
    XSKS.redirect(slot, u64::from(xdp_action::XDP_PASS)).is_ok()
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
