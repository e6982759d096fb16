//! `cargo xtask bench classify|esp|e2e`: benchmarks, not tests. Each figure is a ratio against a
//! baseline measured in the same run; medians are reported.

use std::process::Command;

use anyhow::bail;

use crate::util;

pub fn run(which: &str, json: bool, args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let bin = match which {
        "classify" => "xipsec-bench-classify",
        "esp" => "xipsec-bench-esp",
        "e2e" => bail!(
            "bench e2e needs the ESP datapath between two xipsec hosts, which is not built yet"
        ),
        other => bail!("unknown benchmark {other}; allowed: classify, esp, e2e"),
    };
    let mut cmd = Command::new("cargo");
    cmd.current_dir(util::root())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "ipsec-user",
            "--bin",
            bin,
            "--",
        ])
        .args(args);
    if json {
        cmd.arg("--json");
    }
    util::run(&mut cmd)
}
