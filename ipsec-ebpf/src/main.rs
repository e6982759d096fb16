//! Entry points only: each program is a thin wrapper around its `try_*` module function.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(target_arch = "bpf")]
mod bench;
#[cfg(target_arch = "bpf")]
mod classify;
#[cfg(target_arch = "bpf")]
mod egress;
#[cfg(target_arch = "bpf")]
mod ingress;
#[cfg(target_arch = "bpf")]
mod maps;
#[cfg(target_arch = "bpf")]
mod parse;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    /// Inbound: classify against the inbound SPD (and steer ESP by SPI).
    #[xdp]
    pub fn xdp_ingress(ctx: XdpContext) -> u32 {
        crate::ingress::try_xdp_ingress(&ctx)
    }

    /// Outbound: classify against the outbound SPD; fail closed for `ipsec`.
    #[classifier]
    pub fn tc_egress(ctx: TcContext) -> i32 {
        crate::egress::try_tc_egress(&ctx)
    }

    /// Benchmark baseline: parse and pass.
    #[xdp]
    pub fn xdp_bench_parse(ctx: XdpContext) -> u32 {
        crate::bench::try_parse_only(&ctx)
    }

    /// Benchmark baseline: parse plus one exact-match hash lookup of the flow.
    #[xdp]
    pub fn xdp_bench_hash(ctx: XdpContext) -> u32 {
        crate::bench::try_parse_hash(&ctx)
    }
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // SAFETY: the verifier rejects any program with a reachable panic path, so this is never
    // reached at run time.
    unsafe { core::hint::unreachable_unchecked() }
}

#[cfg(not(target_arch = "bpf"))]
fn main() {}
