//! `cargo xtask test`: what CI runs. Setup (idempotent), formatting and lints, then every test
//! of the workspace: unit tests, CLI tests, and the kernel tests (veth/netns, BPF_PROG_TEST_RUN),
//! which need root and fail loudly without it under `CI=true`. Last, a fuzz smoke run: every
//! cargo-fuzz target for a few seconds on its seed corpus (see `fuzz`).
//!
//! Clippy runs twice because one invocation cannot lint both sides: the host crates (every
//! workspace member but `ipsec-ebpf`, all targets: tests, benches and examples too) on the host
//! target, and `ipsec-ebpf` on `bpfel-unknown-none` with nightly and `-Z build-std=core`, as
//! `aya-build` compiles it (it has no host build).

use std::process::Command;

use crate::util;

/// The host half: every crate of the workspace but `ipsec-ebpf`, every target.
const CLIPPY_HOST: &[&str] = &[
    "clippy",
    "--workspace",
    "--exclude",
    "ipsec-ebpf",
    "--all-targets",
    "--release",
    "--",
    "-D",
    "warnings",
];

/// The kernel half: the eBPF programs for their own target (run with `cargo +nightly`).
const CLIPPY_EBPF: &[&str] = &[
    "+nightly",
    "clippy",
    "-p",
    "ipsec-ebpf",
    "--target",
    "bpfel-unknown-none",
    "-Z",
    "build-std=core",
    "--release",
    "--",
    "-D",
    "warnings",
];

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let root = util::root();
    let cargo = |args: &[&str]| {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&root).args(args);
        cmd
    };
    util::run(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
    util::run(&mut cargo(CLIPPY_HOST))?;
    util::run(&mut cargo(CLIPPY_EBPF))?;
    if !util::is_root() {
        eprintln!(
            "warning: not root: the kernel tests will fail (run as root: sudo -E cargo xtask test)"
        );
    }
    util::run(
        cargo(&[
            "test",
            "--release",
            "--workspace",
            "--exclude",
            "ipsec-ebpf",
        ])
        .args(args),
    )?;
    crate::fuzz::smoke()
}
