//! TC egress: classify against the outbound SPD. `ipsec` verdicts are redirected to the ESP
//! engine's TUN device, or dropped when there is none: the plaintext of a protected flow never
//! leaves, whatever happens to the ESP path (a dead engine's TUN device is gone, and a full TUN
//! queue drops).

use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect,
    programs::TcContext,
};
use ipsec_common::abi::{
    ACTION_DISCARD, ACTION_IPSEC, CONFIG_ESP_IFINDEX, Counter, DIR_OUT, MAX_L4_OFFSET, NO_SP,
    XIPSEC_MARK,
};

use crate::{
    classify::classify,
    maps::{CONFIG, count, count_sp},
    parse::{Frame, Outcome, parse, zeroed_key},
};

/// Enough linear bytes for Ethernet, one VLAN tag and the deepest transport header we read.
const PULL_LEN: u32 = (MAX_L4_OFFSET + 18 + 16) as u32;

#[inline(always)]
pub fn try_tc_egress(ctx: &TcContext) -> i32 {
    // SAFETY: `skb` points at the context the kernel passed in; `mark` is a readable field.
    let mark = unsafe { (*ctx.skb.skb).mark };
    if mark == XIPSEC_MARK {
        return ok(Counter::PassOwnEsp);
    }
    let len = ctx.len();
    if ((ctx.data_end() - ctx.data()) as u32) < len {
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
    match parse(&frame, DIR_OUT, false, flow) {
        Outcome::NotIpv6 => ok(Counter::PassNotIpv6),
        Outcome::Malformed => shot(Counter::DropMalformed),
        Outcome::ExtLimit => shot(Counter::DropExtHeaderLimit),
        // Unreachable with `esp_is_terminal == false`; fail closed all the same.
        Outcome::Esp { .. } | Outcome::EspFragment => shot(Counter::DropMalformed),
        Outcome::Flow => {
            let verdict = classify(flow);
            if verdict.sp_id == NO_SP {
                return if flow.is_neighbour_discovery() {
                    ok(Counter::PassNeighbourDiscovery)
                } else {
                    ok(Counter::PassNoPolicy)
                };
            }
            count_sp(verdict.sp_id, len as u64);
            match verdict.action {
                ACTION_DISCARD => shot(Counter::DropDiscard),
                ACTION_IPSEC => to_engine(),
                _ => ok(Counter::PassPolicyNone),
            }
        }
    }
}

/// Hand the packet to the ESP engine's TUN device; without an engine, drop it (fail closed).
#[inline(always)]
fn to_engine() -> i32 {
    let ifindex = CONFIG.get(CONFIG_ESP_IFINDEX).copied().unwrap_or(0);
    if ifindex == 0 || ifindex > u64::from(u32::MAX) {
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
