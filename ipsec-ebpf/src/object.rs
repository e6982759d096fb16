// The modules and programs both objects carry: `main.rs` (the production object, `ipsec`) and
// `bench_main.rs` (the benchmark object, `ipsec-bench`) each include this file, so the programs
// the benchmark measures are compiled from the same source as the ones the daemon loads. An
// included file cannot open with a `//!` module contract: see `main.rs` for it.

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
mod udp;

#[cfg(target_arch = "bpf")]
mod programs {
    use aya_ebpf::{
        macros::{classifier, xdp},
        programs::{TcContext, XdpContext},
    };

    /// Inbound: classify against the inbound SPD (and steer ESP by SPI).
    #[xdp]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the program macro hands the context over by value"
    )]
    pub(crate) fn xdp_ingress(ctx: XdpContext) -> u32 {
        crate::ingress::try_xdp_ingress(&ctx)
    }

    /// Outbound: classify against the outbound SPD; fail closed for `ipsec`.
    #[classifier]
    #[allow(
        clippy::needless_pass_by_value,
        reason = "the program macro hands the context over by value"
    )]
    pub(crate) fn tc_egress(ctx: TcContext) -> i32 {
        crate::egress::try_tc_egress(&ctx)
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
