//! The map ABI shared by the eBPF programs and userspace: every type that crosses the kernel
//! boundary, and the one function both sides use to build a masked rule key.
#![no_std]

pub mod abi;
