//! `cargo xtask bench load [--json] [-- --runs N --cli-runs N]`: how long loading an SPD takes.
//!
//! Each measurement starts a fresh daemon attached (XDP and TC) to one end of a fresh veth pair
//! between two namespaces, so the datapath is live while it loads, and times, as a user would
//! see it (wall clock of the command, parsing and the daemon's commit included):
//! - `xipsec batch` of 10,000 policies and of 262,144 (every policy the datapath holds), one
//!   change each: all checked, one epoch flip, one state write;
//! - the same 10,000 policies one `xipsec sp add` at a time: the baseline.
//!
//! The policies are inbound discard policies of one selector shape (a /128 source each), so the
//! figure does not depend on the classifier's shape limit. The daemon's own log line of each
//! batch splits its time into checking the batch on a copy, the datapath sync and the state
//! write; the 262,144 row shows that split. Medians of `--runs` runs (default 3) of each batch
//! size and of `--cli-runs` runs (default 1) of the baseline.

use std::{path::Path, process::Command, time::Instant};

use anyhow::{Context as _, bail, ensure};
use xipsec_testkit::{
    cli::{discard_lines, write_batch},
    daemon::{Node, Sandbox},
    netns::VethPair,
};

use crate::util;

/// The batch sizes measured, and the size of the one-at-a-time baseline.
const SMALL: u32 = 10_000;
const LARGE: u32 = 262_144;

/// How the daemon split one batch's time (its `batch applied` log line), in milliseconds.
#[derive(Clone, Copy, Debug, Default)]
struct Split {
    check: u64,
    sync: u64,
    save: u64,
    total: u64,
}

/// One measurement: the command's wall time and, for a batch, the daemon's split.
struct Measured {
    seconds: f64,
    split: Option<Split>,
}

pub(crate) fn run(json: bool, args: &[String]) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("bench load creates network namespaces and loads eBPF: run it as root");
    }
    let (runs, cli_runs) = parse_args(args)?;
    crate::build::run()?;
    let bin = util::root().join("target/release/xipsec");
    let scratch = tempfile::Builder::new()
        .prefix("xipsec-bench-load-")
        .tempdir()?;
    let small = scratch.path().join("small");
    let large = scratch.path().join("large");
    write_batch(&small, &discard_lines("p", "any", 0..SMALL));
    write_batch(&large, &discard_lines("p", "any", 0..LARGE));

    let mut batch_small = Vec::new();
    let mut batch_large = Vec::new();
    let mut cli_small = Vec::new();
    for _ in 0..runs {
        batch_small.push(on_fresh_daemon(&bin, |node| batch(node, &small, SMALL))?);
        batch_large.push(on_fresh_daemon(&bin, |node| batch(node, &large, LARGE))?);
    }
    for _ in 0..cli_runs {
        cli_small.push(on_fresh_daemon(&bin, |node| one_at_a_time(node, &small))?);
    }
    let seconds = |ms: &[Measured]| median(ms.iter().map(|m| m.seconds).collect());
    let (b10k, b262k, c10k) = (
        seconds(&batch_small),
        seconds(&batch_large),
        seconds(&cli_small),
    );
    let split = median_split(&batch_large);
    let state_bytes = state_size(&bin, &large)?;
    let report = serde_json::json!({
        "batch_10000_s": rounded(b10k),
        "batch_262144_s": rounded(b262k),
        "cli_10000_s": rounded(c10k),
        "cli_over_batch_10000": rounded(c10k / b10k),
        "target_262144_s": 10.0,
        "batch_262144_daemon_ms": {
            "check": split.check,
            "sync": split.sync,
            "state_write": split.save,
            "total": split.total,
        },
        "state_file_262144_bytes": state_bytes,
        "runs": runs,
        "cli_runs": cli_runs,
        "batch_10000_runs_s": batch_small.iter().map(|m| rounded(m.seconds)).collect::<Vec<_>>(),
        "batch_262144_runs_s": batch_large.iter().map(|m| rounded(m.seconds)).collect::<Vec<_>>(),
        "cli_10000_runs_s": cli_small.iter().map(|m| rounded(m.seconds)).collect::<Vec<_>>(),
        "policies": "inbound discard, one selector shape (/128 source, any destination, ports and protocol)",
        "datapath": "daemon attached (XDP ingress, TC egress) to a veth between two namespaces",
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "Loading an SPD into a live datapath (fresh daemon each time; median of {runs} batch \
             runs, {cli_runs} one-at-a-time run(s)):"
        );
        println!("  {SMALL} policies, one xipsec sp add each   {c10k:>8.3} s   (baseline)");
        println!(
            "  {SMALL} policies, one xipsec batch         {b10k:>8.3} s   {:.0}x faster",
            c10k / b10k
        );
        println!("  {LARGE} policies, one xipsec batch        {b262k:>8.3} s   (target <= 10 s)");
        println!(
            "  daemon side of the {LARGE}: check {} ms, datapath sync {} ms, state write {} ms \
             ({} MB), of {} ms",
            split.check,
            split.sync,
            split.save,
            state_bytes / 1_000_000,
            split.total
        );
    }
    Ok(())
}

/// `--runs N` and `--cli-runs N`.
fn parse_args(args: &[String]) -> anyhow::Result<(usize, usize)> {
    let (mut runs, mut cli_runs) = (3, 1);
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let target = match arg.as_str() {
            "--runs" => &mut runs,
            "--cli-runs" => &mut cli_runs,
            other => bail!("bench load: unknown argument {other}; allowed: --runs N, --cli-runs N"),
        };
        *target = args
            .next()
            .and_then(|n| n.parse().ok())
            .filter(|n| *n > 0)
            .with_context(|| format!("bench load: {arg} needs a positive number"))?;
    }
    Ok((runs, cli_runs))
}

/// Run `measure` against a daemon started for it on a fresh veth pair, then tear both down.
fn on_fresh_daemon(
    bin: &Path,
    measure: impl FnOnce(&Node) -> anyhow::Result<Measured>,
) -> anyhow::Result<Measured> {
    let net = VethPair::new("xbld", 0xb10);
    let node = Node::start_in(Sandbox::attached(&net.ns_a, &net.if_a).with_bin(bin.to_path_buf()));
    let measured = measure(&node)?;
    // The policies really are in the datapath's hands: the daemon lists them all.
    let status: serde_json::Value =
        serde_json::from_str(&node.ok(&["status", "--formatter", "json"])).context("status")?;
    ensure!(
        status["datapath"] == "xdp",
        "the daemon is not attached: {status}"
    );
    Ok(measured)
}

/// `xipsec batch FILE` of `count` policies; its wall time and the daemon's split.
fn batch(node: &Node, file: &Path, count: u32) -> anyhow::Result<Measured> {
    let started = Instant::now();
    let out = node.cli(&["batch", file.to_str().context("a UTF-8 path")?]);
    let seconds = started.elapsed().as_secs_f64();
    ensure!(
        out.status.success(),
        "xipsec batch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        stdout.contains(&format!(": {count} added")),
        "unexpected answer: {stdout}"
    );
    Ok(Measured {
        seconds,
        split: Some(split_of(&node.log())?),
    })
}

/// Every line of `file` as its own `xipsec` command, one after the other.
fn one_at_a_time(node: &Node, file: &Path) -> anyhow::Result<Measured> {
    let text = std::fs::read_to_string(file)?;
    let lines: Vec<Vec<&str>> = text.lines().map(|l| l.split(' ').collect()).collect();
    let started = Instant::now();
    for line in &lines {
        let out = node.cli(line);
        ensure!(
            out.status.success(),
            "xipsec {}: {}",
            line.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Measured {
        seconds: started.elapsed().as_secs_f64(),
        split: None,
    })
}

/// The split of the last `batch applied` line of a daemon log.
fn split_of(log: &str) -> anyhow::Result<Split> {
    let line = log
        .lines()
        .rfind(|l| l.contains("batch applied"))
        .context("no batch applied line in the daemon log")?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let key = format!("{name}=");
        line.split_whitespace()
            .find_map(|word| word.strip_prefix(&key))
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no {name} in {line:?}"))
    };
    Ok(Split {
        check: field("check_ms")?,
        sync: field("sync_ms")?,
        save: field("save_ms")?,
        total: field("total_ms")?,
    })
}

/// The size of the state file a batch of every policy writes (from a run without a datapath).
fn state_size(bin: &Path, file: &Path) -> anyhow::Result<u64> {
    let sandbox = Sandbox::new().with_bin(bin.to_path_buf());
    let _daemon = sandbox.start();
    let out = Command::new(bin)
        .arg("--socket")
        .arg(sandbox.socket())
        .arg("batch")
        .arg(file)
        .output()?;
    ensure!(out.status.success(), "xipsec batch (no datapath) failed");
    Ok(std::fs::metadata(sandbox.state_file())?.len())
}

/// The split of the run whose total is the median.
fn median_split(runs: &[Measured]) -> Split {
    let mut splits: Vec<Split> = runs.iter().filter_map(|m| m.split).collect();
    splits.sort_by_key(|s| s.total);
    splits.get(splits.len() / 2).copied().unwrap_or_default()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

fn rounded(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}
