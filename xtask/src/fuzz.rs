//! `cargo xtask fuzz [--seconds N] [--runs N] [TARGET] [-- LIBFUZZER_ARGS]`: builds the
//! cargo-fuzz targets of `fuzz/` (nightly, sanitizers, release) and runs one or all of them, one
//! at a time, for N seconds each.
//!
//! - Each run reads the committed seed corpus `fuzz/corpus/<target>/` but writes what it finds to
//!   a scratch directory emptied first (`fuzz/target/xtask-corpus/<target>/`), so runs never grow
//!   the committed corpus; its full libFuzzer log goes to `fuzz/target/xtask-logs/<target>.log`.
//! - The executions per target come from libFuzzer's final statistics
//!   (`-print_final_stats=1`: `stat::number_of_executed_units`, `stat::average_exec_per_sec`).
//! - A crash, a failed assertion, a leak or a timeout fails the command and prints the input
//!   libFuzzer wrote (`fuzz/artifacts/<target>/crash-...`); reproduce it with
//!   `cargo +nightly fuzz run -O <target> <that file>`.
//! - The eBPF object is not built for fuzzing (`AYA_BUILD_SKIP=1`): no target loads programs,
//!   and the fuzz crate builds with its own flags in its own target directory.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{Context as _, bail};

use crate::util;

/// Default seconds per target for `cargo xtask fuzz`.
pub(crate) const DEFAULT_SECONDS: u64 = 60;
/// Seconds per target of the smoke run in `cargo xtask test`.
pub(crate) const SMOKE_SECONDS: u64 = 3;

/// JSON-aware mutations: the targets whose input is JSON get the token dictionary.
const JSON_TARGETS: [&str; 2] = ["control_request", "state_file"];
/// The triple cargo-fuzz builds for (it always passes `--target`).
const TRIPLE: &str = "x86_64-unknown-linux-gnu";

/// What one target's run did.
struct Outcome {
    target: String,
    executions: Option<u64>,
    exec_per_sec: Option<u64>,
    seconds: f64,
    /// The input that failed, when the run found one.
    failure: Option<String>,
}

/// Options of one invocation.
pub(crate) struct Options<'a> {
    pub seconds: u64,
    /// Stop after this many executions (libFuzzer `-runs`), whichever comes first.
    pub runs: Option<u64>,
    /// One target, or all of them.
    pub target: Option<&'a str>,
    /// Passed to libFuzzer as they are.
    pub extra: &'a [String],
}

pub(crate) fn run(options: &Options<'_>) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let dir = util::root().join("fuzz");
    let targets = list(&dir)?;
    let selected: Vec<String> = match options.target {
        Some(target) if targets.iter().any(|t| t == target) => vec![target.to_owned()],
        Some(target) => bail!(
            "unknown fuzz target {target:?}; the targets are: {}",
            targets.join(", ")
        ),
        None => targets,
    };
    build(&dir, options.target)?;

    let mut outcomes = Vec::new();
    for target in &selected {
        outcomes.push(run_target(&dir, target, options)?);
    }
    report(&outcomes);
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.failure.is_some()).collect();
    if !failed.is_empty() {
        for outcome in &failed {
            eprintln!(
                "fuzz: {} FAILED on {}\n  reproduce: cd fuzz && cargo +nightly fuzz run -O {} {}",
                outcome.target,
                outcome.failure.as_deref().unwrap_or("?"),
                outcome.target,
                outcome.failure.as_deref().unwrap_or("?"),
            );
        }
        bail!("{} fuzz target(s) failed", failed.len());
    }
    Ok(())
}

/// The smoke run of `cargo xtask test`: every target, a few seconds each.
pub(crate) fn smoke() -> anyhow::Result<()> {
    run(&Options {
        seconds: SMOKE_SECONDS,
        runs: None,
        target: None,
        extra: &[],
    })
}

/// The targets `fuzz/Cargo.toml` declares (`cargo fuzz list`).
fn list(dir: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("cargo")
        .current_dir(dir)
        .args(["+nightly", "fuzz", "list"])
        .stderr(Stdio::inherit())
        .output()
        .context("cargo fuzz list")?;
    if !out.status.success() {
        bail!("cargo fuzz list failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

fn build(dir: &Path, target: Option<&str>) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut cmd = Command::new("cargo");
    cmd.current_dir(dir)
        .args(["+nightly", "fuzz", "build", "-O"])
        .args(target)
        .env("AYA_BUILD_SKIP", "1");
    util::run(&mut cmd)?;
    eprintln!("fuzz: build took {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn run_target(dir: &Path, target: &str, options: &Options<'_>) -> anyhow::Result<Outcome> {
    let binary = dir.join("target").join(TRIPLE).join("release").join(target);
    let scratch = fresh_dir(&dir.join("target").join("xtask-corpus").join(target))?;
    let artifacts = dir.join("artifacts").join(target);
    fs::create_dir_all(&artifacts).with_context(|| format!("create {}", artifacts.display()))?;
    let logs = dir.join("target").join("xtask-logs");
    fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;
    let log_path = logs.join(format!("{target}.log"));
    let log =
        fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;

    let mut cmd = Command::new(&binary);
    cmd.arg(format!("-max_total_time={}", options.seconds))
        .arg("-print_final_stats=1")
        .arg(format!("-artifact_prefix={}/", artifacts.display()));
    if let Some(runs) = options.runs {
        cmd.arg(format!("-runs={runs}"));
    }
    if JSON_TARGETS.contains(&target) {
        cmd.arg(format!("-dict={}", dir.join("json.dict").display()));
    }
    // New units go to the first directory (scratch); the committed seeds are only read.
    cmd.args(options.extra)
        .arg(&scratch)
        .arg(dir.join("corpus").join(target))
        .stdout(Stdio::null())
        .stderr(log);
    eprintln!("+ {cmd:?}");
    let started = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("start {}", binary.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    let text =
        fs::read_to_string(&log_path).with_context(|| format!("read {}", log_path.display()))?;
    let stat = |name: &str| {
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.trim().parse().ok())
            .next_back()
    };
    let failure = (!status.success()).then(|| {
        // libFuzzer names the input it saved: "Test unit written to <path>".
        text.lines()
            .filter_map(|l| l.split_once("Test unit written to ").map(|(_, p)| p.trim()))
            .next_back()
            .map_or_else(
                || {
                    format!(
                        "(no input saved; exit {status}, see {})",
                        log_path.display()
                    )
                },
                str::to_owned,
            )
    });
    if failure.is_some() {
        // The sanitizer's report and the panic message are in the log's tail.
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        for line in tail.iter().rev() {
            eprintln!("  | {line}");
        }
    }
    Ok(Outcome {
        target: target.to_owned(),
        executions: stat("stat::number_of_executed_units:").or_else(|| done_line(&text)),
        exec_per_sec: stat("stat::average_exec_per_sec:"),
        seconds,
        failure,
    })
}

/// The count of libFuzzer's last `#N DONE` line, should the final statistics be missing.
fn done_line(text: &str) -> Option<u64> {
    text.lines()
        .filter(|l| l.contains("DONE"))
        .filter_map(|l| l.strip_prefix('#')?.split_whitespace().next()?.parse().ok())
        .next_back()
}

fn fresh_dir(path: &Path) -> anyhow::Result<PathBuf> {
    match fs::remove_dir_all(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("remove {}", path.display()));
        }
        _ => {}
    }
    fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    Ok(path.to_owned())
}

fn report(outcomes: &[Outcome]) {
    let count = |n: Option<u64>| n.map_or_else(|| "?".to_owned(), |n| n.to_string());
    println!(
        "{:<18} {:>14} {:>9} {:>9}  result",
        "target", "executions", "seconds", "exec/s"
    );
    for o in outcomes {
        println!(
            "{:<18} {:>14} {:>9.0} {:>9}  {}",
            o.target,
            count(o.executions),
            o.seconds,
            count(o.exec_per_sec),
            o.failure
                .as_deref()
                .map_or_else(|| "ok".to_owned(), |f| format!("FAILED: {f}")),
        );
    }
}
