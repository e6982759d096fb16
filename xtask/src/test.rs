//! `cargo xtask test`: what CI runs. Setup (idempotent), formatting and lints, then every test
//! of the workspace: unit tests, CLI tests, and the kernel tests (veth/netns, BPF_PROG_TEST_RUN),
//! which need root and fail loudly without it under `CI=true`. Last, a fuzz smoke run: every
//! cargo-fuzz target for a few seconds on its seed corpus (see `fuzz`).

use std::process::Command;

use crate::util;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let root = util::root();
    util::run(
        Command::new("cargo")
            .current_dir(&root)
            .args(["fmt", "--all", "--", "--check"]),
    )?;
    util::run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--workspace",
        "--exclude",
        "ipsec-ebpf",
        "--all-targets",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))?;
    if !util::is_root() {
        eprintln!(
            "warning: not root: the kernel tests will fail (run as root: sudo -E cargo xtask test)"
        );
    }
    util::run(
        Command::new("cargo")
            .current_dir(&root)
            .args([
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
