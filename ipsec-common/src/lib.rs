//! The map ABI shared by the eBPF programs and userspace: every type that crosses the kernel
//! boundary, and the one function both sides use to build a masked rule key.
#![no_std]
#![allow(
    clippy::inline_always,
    reason = "the eBPF programs call these helpers; each must inline into its caller, since a \
              BPF-to-BPF call costs verifier budget and loses the caller's bounds on its arguments"
)]
#![allow(
    clippy::pub_underscore_fields,
    reason = "`_pad` fields make the repr(C) padding explicit (Pod needs it) and stay public so \
              the eBPF programs and the daemon can build map values as struct literals"
)]

pub mod abi;
pub mod explain;
