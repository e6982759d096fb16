//! TC egress: classify against the outbound SPD (fragments by their datagram's first fragment,
//! see `classify`). `ipsec` verdicts are redirected to the ESP engine's TUN device, or dropped
//! when there is none: the plaintext of a protected flow never leaves, whatever happens to the
//! ESP path (a dead engine's TUN device is gone, and a full TUN queue drops). Any action value
//! the program does not know drops.
//!
//! The only packets that skip classification are the engine's own ESP: sent by a socket whose
//! cookie is in `ENGINE_SOCKETS` (a socket cookie cannot be forged by another process, unlike a
//! mark) and ESP under one of our outbound SPIs, plain or in UDP (RFC 3948: the SPI follows the
//! UDP header right after the fixed IPv6 header), or a later fragment of such ESP (a fragment of
//! the engine's UDP, whose SPI is not visible, passes on the cookie alone: those sockets send
//! nothing else); and IKE between a configured pair of peers (`udp`). Anything else an engine
//! socket sends in UDP is dropped. Another process's UDP to port 4500, whatever it carries, is
//! classified like any UDP: wrapping clear traffic in UDP grants nothing.

use aya_ebpf::{
    EbpfContext,
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::{bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_redirect},
    programs::TcContext,
};
use ipsec_common::abi::{
    ACTION_DISCARD, ACTION_IPSEC, ACTION_NONE, CONFIG_ENGINE_ALIVE_NS, CONFIG_ESP_IFINDEX, Counter,
    DIR_OUT, ENGINE_ALIVE_TIMEOUT_NS, MAX_L4_OFFSET, NO_SP, proto,
};

use crate::{
    classify::classify,
    maps::{CONFIG, ENGINE_SOCKETS, SA_OUT_BY_SPI, count, count_sp},
    parse::{Fragment, Frame, Outcome, parse, zeroed_key},
    udp::{self, Udp},
};

/// Enough linear bytes for Ethernet, two VLAN tags and the deepest transport header we read.
#[allow(clippy::cast_possible_truncation, reason = "a few hundred bytes")]
const PULL_LEN: u32 = (MAX_L4_OFFSET + 22 + 16) as u32;

#[inline(always)]
pub(crate) fn try_tc_egress(ctx: &TcContext) -> i32 {
    let len = ctx.len();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "linear packet data is far below 4 GiB; a checked conversion costs verifier branches"
    )]
    let linear = (ctx.data_end() - ctx.data()) as u32;
    if linear < len {
        let want = if len < PULL_LEN { len } else { PULL_LEN };
        let _ = ctx.pull_data(want);
    }
    let frame = Frame {
        data: ctx.data(),
        data_end: ctx.data_end(),
        total_len: len as usize,
    };
    let mut slot = core::mem::MaybeUninit::uninit();
    let flow = zeroed_key(&mut slot);
    // The engine's own ESP is parsed with ESP as terminal (to see the SPI); everything else
    // classifies ESP like any protocol without ports.
    let engine = from_engine_socket(ctx);
    let mut l3 = 0;
    match parse(&frame, DIR_OUT, engine, flow, &mut l3) {
        Outcome::NotIpv6 => ok(Counter::PassNotIpv6),
        Outcome::Malformed => shot(Counter::DropMalformed),
        Outcome::ExtLimit => shot(Counter::DropExtHeaderLimit),
        Outcome::VlanDepth => shot(Counter::DropVlanDepth),
        Outcome::Esp { spi, .. } => {
            if SA_OUT_BY_SPI.get_ptr(spi).is_some() {
                ok(Counter::PassOwnEsp)
            } else {
                // Our socket sends only ESP of our SAs: anything else is refused.
                shot(Counter::DropUnknownSpi)
            }
        }
        Outcome::EspFragment => ok(Counter::PassOwnEsp),
        Outcome::Flow(fragment) if engine && flow.proto == proto::UDP => {
            if fragment != Fragment::Whole {
                return ok(Counter::PassOwnEsp);
            }
            match udp::own_esp_spi(&frame, l3) {
                Some(spi) if SA_OUT_BY_SPI.get_ptr(spi).is_some() => ok(Counter::PassOwnEsp),
                _ => shot(Counter::DropUnknownSpi),
            }
        }
        Outcome::Flow(fragment) => {
            if fragment == Fragment::Whole
                && flow.proto == proto::UDP
                && udp::inspect(&frame, l3, flow, DIR_OUT) == Udp::Ike
            {
                return ok(Counter::PassIke);
            }
            let verdict = classify(flow, fragment);
            if verdict.sp_id == NO_SP {
                return if flow.is_neighbour_discovery() {
                    ok(Counter::PassNeighbourDiscovery)
                } else {
                    ok(Counter::PassNoPolicy)
                };
            }
            let (packets, bytes) = on_the_wire(ctx, l3);
            count_sp(verdict.sp_id, packets, bytes);
            match verdict.action {
                ACTION_DISCARD => shot(Counter::DropDiscard),
                ACTION_IPSEC => to_engine(),
                ACTION_NONE => ok(Counter::PassPolicyNone),
                _ => shot(Counter::DropUnknownAction),
            }
        }
    }
}

/// The packets this skb leaves as and their IPv6 bytes: a GSO (TSO/USO) super-packet becomes
/// `gso_segs` packets on the wire, each with its own headers. `wire_len` is the kernel's count of
/// their bytes (`qdisc_pkt_len_init`, done before the egress hook: the skb's length plus the
/// headers of every segment but the first), link-layer headers included; those (`l3` bytes per
/// packet) are left out, so policy counters count what the SA counters count: IPv6 packets.
#[inline(always)]
fn on_the_wire(ctx: &TcContext, l3: usize) -> (u64, u64) {
    // SAFETY: reads of two `__sk_buff` fields TC programs may read; the kernel rewrites them
    // into reads of the skb.
    let (segs, wire_len) = unsafe { ((*ctx.skb.skb).gso_segs, (*ctx.skb.skb).wire_len) };
    let packets = u64::from(segs.max(1));
    let wire = u64::from(wire_len.max(ctx.len()));
    (packets, wire.saturating_sub(packets * l3 as u64))
}

/// Whether the packet was sent by one of the ESP engine's sockets. A socket cookie is assigned
/// by the kernel and cannot be set by a process; a packet without a socket has cookie 0, which
/// is never registered.
#[inline(always)]
fn from_engine_socket(ctx: &TcContext) -> bool {
    // SAFETY: a helper call on the context the kernel passed in.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    cookie != 0 && ENGINE_SOCKETS.get_ptr(cookie).is_some()
}

/// Hand the packet to the ESP engine's TUN device; without an engine, or one not heard from for
/// `ENGINE_ALIVE_TIMEOUT_NS`, drop it (fail closed) and count it.
#[inline(always)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "`ifindex` is checked to fit a u32; bpf_redirect returns TC_ACT_REDIRECT or TC_ACT_SHOT"
)]
fn to_engine() -> i32 {
    let ifindex = CONFIG.get(CONFIG_ESP_IFINDEX).copied().unwrap_or(0);
    let alive = CONFIG.get(CONFIG_ENGINE_ALIVE_NS).copied().unwrap_or(0);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    if ifindex == 0 || ifindex > u64::from(u32::MAX) || now > alive + ENGINE_ALIVE_TIMEOUT_NS {
        return shot(Counter::DropIpsecUnavailable);
    }
    count(Counter::IpsecToEngine);
    // SAFETY: a helper call with plain integer arguments.
    unsafe { bpf_redirect(ifindex as u32, 0) as i32 }
}

#[inline(always)]
fn ok(counter: Counter) -> i32 {
    count(counter);
    TC_ACT_OK
}

#[inline(always)]
fn shot(counter: Counter) -> i32 {
    count(counter);
    TC_ACT_SHOT
}
