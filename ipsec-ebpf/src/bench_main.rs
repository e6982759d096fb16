//! The benchmark object (`ipsec-bench`): the production programs (`object.rs`, the same source
//! as `main.rs`) plus the baselines of `cargo xtask bench classify` and their map (`bench`), and
//! the frame generator, floor and pass programs of `cargo xtask bench filter` (`bench_filter`).
//! Only the benchmarks load it; the daemon never does.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]
#![allow(
    clippy::inline_always,
    reason = "every helper must inline into its program: a BPF-to-BPF call costs verifier budget \
              and loses the caller's bounds on its arguments"
)]

include!("object.rs");

#[cfg(target_arch = "bpf")]
mod bench;

#[cfg(target_arch = "bpf")]
mod bench_filter;
