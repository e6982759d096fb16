//! The production object (`ipsec`): what the daemon loads, attaches and pins, and nothing else.
//! Entry points only, each a thin wrapper around its `try_*` module function (in `object.rs`,
//! shared with the benchmark object `bench_main.rs`). Benchmark programs and maps are not here.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

include!("object.rs");
