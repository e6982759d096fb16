//! `cargo xtask build`: the workspace in release mode; `ipsec-user`'s build script builds the
//! eBPF programs with nightly and bpf-linker.

use std::process::Command;

use crate::util;

pub(crate) fn run() -> anyhow::Result<()> {
    crate::setup::ensure()?;
    util::run(Command::new("cargo").current_dir(util::root()).args([
        "build",
        "--release",
        "--workspace",
        "--exclude",
        "ipsec-ebpf",
    ]))
}
