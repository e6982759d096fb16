//! The production object (`ipsec`): what the daemon loads, attaches and pins, and nothing else.
//! Entry points only, each a thin wrapper around its `try_*` module function (in `object.rs`,
//! shared with the benchmark object `bench_main.rs`). Benchmark programs and maps are not here.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    clippy::inline_always,
    reason = "every helper must inline into its program: a BPF-to-BPF call costs verifier budget \
              and loses the caller's bounds on its arguments"
)]

include!("object.rs");

// `xipsec explain`: production object only (the benchmark object has no use for it).
#[cfg(target_arch = "bpf")]
mod explain;
