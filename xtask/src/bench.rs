//! `cargo xtask bench classify|esp|e2e`: benchmarks, not tests. Each figure is reported beside a
//! baseline measured in the same run; medians are reported.
//!
//! - `classify` and `esp` run the `xipsec-bench-*` binaries of `ipsec-user`.
//! - `e2e`: TCP goodput (iperf3, one stream) over ESP between two xipsec hosts in two namespaces,
//!   beside plaintext on the same veth pair, and the single-core OpenSSL bound of the suite
//!   (aes128-cbc + hmac-sha2-256) from `xipsec-bench-esp`, all in the same run.

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    lab::{Lab, ns},
    util,
};

const E2E_SECONDS: &str = "5";
const E2E_RUNS: usize = 3;

pub fn run(which: &str, json: bool, args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let bin = match which {
        "classify" => "xipsec-bench-classify",
        "esp" => "xipsec-bench-esp",
        "e2e" => return e2e(json),
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

/// Receiver goodput of `E2E_RUNS` single-stream iperf3 runs from a to b, in Gbit/s, sorted.
fn iperf(lab: &Lab) -> anyhow::Result<Vec<f64>> {
    let mut samples = Vec::new();
    for _ in 0..E2E_RUNS {
        let mut server = ns(&lab.ns_b, &["iperf3", "-s", "-1", "-B", &lab.addr_b])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 -s")?;
        sleep(Duration::from_millis(500));
        let out = ns(
            &lab.ns_a,
            &[
                "iperf3",
                "-c",
                &lab.addr_b,
                "-t",
                E2E_SECONDS,
                "-O",
                "1",
                "-J",
            ],
        )
        .output()
        .context("running iperf3 -c")?;
        let _ = server.wait();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
        let bps = report["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .ok_or_else(|| anyhow!("iperf3 reported no goodput: {report}"))?;
        samples.push(bps / 1e9);
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

fn median(sorted: &[f64]) -> f64 {
    sorted[sorted.len() / 2]
}

fn rounded(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// The single-core OpenSSL bound of aes128-cbc + hmac-sha2-256 at 1,400 bytes, in Gbit/s.
fn openssl_bound() -> anyhow::Result<f64> {
    let out = Command::new(util::root().join("target/release/xipsec-bench-esp"))
        .args([
            "--json",
            "--suite",
            "aes128-cbc/hmac-sha2-256",
            "--payloads",
            "1400",
            "--runs",
            "3",
        ])
        .output()
        .context("running xipsec-bench-esp")?;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("bench esp JSON")?;
    let mb_s = report["suites"][0]["openssl_bound_mb_s"]
        .as_f64()
        .ok_or_else(|| anyhow!("no OpenSSL bound in {report}"))?;
    Ok(mb_s * 8.0 / 1000.0)
}

fn e2e(json: bool) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("bench e2e creates network namespaces and loads eBPF: run it as root");
    }
    crate::build::run()?;
    let mut lab = Lab::new("xbench", 0xbe)?;
    let plain_runs = iperf(&lab)?;
    lab.start_daemon("a")?;
    lab.start_daemon("b")?;
    let (a, b) = (format!("{}/128", lab.addr_a), format!("{}/128", lab.addr_b));
    lab.protect(
        "bench",
        "transport",
        (&a, &b),
        ("0x3001", "0x3002"),
        ("aes128-cbc", "0x000102030405060708090a0b0c0d0e0f"),
        (
            "hmac-sha2-256",
            "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
    )?;
    let esp_runs = iperf(&lab)?;
    drop(lab);
    let (plain, esp) = (median(&plain_runs), median(&esp_runs));
    let bound = openssl_bound()?;
    let report = serde_json::json!({
        "suite": "aes128-cbc/hmac-sha2-256",
        "mode": "transport",
        "esp_gbit_s": rounded(esp),
        "plain_gbit_s": rounded(plain),
        "bound_gbit_s": rounded(bound),
        "esp_over_bound": rounded(esp / bound),
        "runs": E2E_RUNS,
        "esp_runs_gbit_s": esp_runs.iter().copied().map(rounded).collect::<Vec<_>>(),
        "plain_runs_gbit_s": plain_runs.iter().copied().map(rounded).collect::<Vec<_>>(),
        "seconds_per_run": E2E_SECONDS,
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "TCP goodput, one iperf3 stream, median of {E2E_RUNS} runs of {E2E_SECONDS} s after a 1 s warm-up:"
        );
        println!("  plaintext on the veth pair      {plain:.3} Gbit/s");
        println!("  ESP aes128-cbc/hmac-sha2-256    {esp:.3} Gbit/s (runs: {esp_runs:.3?})");
        println!("  OpenSSL single-core bound       {bound:.3} Gbit/s");
        println!("  ESP / bound                     {:.2}", esp / bound);
    }
    Ok(())
}
