//! `cargo xtask bench classify|esp|e2e|filter|load`: benchmarks, not tests. Each figure is
//! reported beside a baseline measured in the same run; medians are reported.
//!
//! - `classify` and `esp` run the `xipsec-bench-*` binaries of `ipsec-user`.
//! - `filter`: `bench_filter`; `load`: `bench_load`.
//! - `e2e`: TCP goodput (iperf3, one stream) over ESP between two xipsec hosts in two namespaces,
//!   beside plaintext in the same conditions (both daemons attached, the same SPD; only the
//!   port differs: the policies protect iperf3 on one port and not on the other), runs
//!   alternating, and the single-core OpenSSL bound of the suite (aes128-cbc + hmac-sha2-256)
//!   from `xipsec-bench-esp`, all in the same run. The SA counters (`xipsec sa list`) must show
//!   that every ESP run went through the SA (its bytes grow by at least the goodput's bytes) and
//!   that no plaintext run did (unchanged), or the benchmark fails. In the same invocation,
//!   xipsec in tunnel mode (between an inner address on each host) and strongSwan's
//!   kernel-libipsec (`bench_strongswan`; it only does tunnel mode, ESP in UDP), same suite,
//!   runs alternating, each run checked against the bytes that went into ESP. xipsec's tunnel
//!   row sends ESP in UDP 4500 as strongSwan does (`--udp-encapsulation 4500`: like for like,
//!   and the UDP GSO/GRO path of `--esp-gso on`), and is the headline `esp_over_strongswan`; the
//!   same tunnel with plain ESP (between other inner addresses) is measured in the same
//!   alternation and reported beside it (`tunnel_esp_*`).

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use xipsec_testkit::cli::SpArgs;

use crate::{bench_strongswan::Strongswan, lab::Lab, util};

const E2E_SECONDS: &str = "5";
const E2E_RUNS: usize = 3;
/// iperf3 on this port is protected; on [`PLAIN_PORT`] it is not.
const ESP_PORT: &str = "5201";
const PLAIN_PORT: &str = "5202";
/// The SA carrying a -> b (the measured direction) on host a.
const SA_AB: &str = "bench-ab";
/// The tunnel-mode SA pair (`{SA_TUNNEL}-out` carries a -> b on host a): ESP in UDP 4500 (RFC
/// 3948), as strongSwan's libipsec always sends it, so the headline compares like with like.
const SA_TUNNEL: &str = "bench-tun";
/// The tunnel-mode SA pair with plain ESP, between other inner addresses, reported beside it.
const SA_TUNNEL_ESP: &str = "bench-tunesp";

pub(crate) fn run(which: &str, json: bool, args: &[String]) -> anyhow::Result<()> {
    crate::setup::ensure()?;
    let bin = match which {
        "classify" => "xipsec-bench-classify",
        "esp" => "xipsec-bench-esp",
        "e2e" => return e2e(json),
        "filter" => return crate::bench_filter::run(json, args),
        "load" => return crate::bench_load::run(json, args),
        other => bail!("unknown benchmark {other}; allowed: classify, esp, e2e, filter, load"),
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

/// One iperf3 run: receiver goodput, bytes received, and the CPU time it cost.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Run {
    pub gbit: f64,
    pub bytes: u64,
    /// User + system CPU seconds of iperf3 (client and server, as iperf3 reports them) and of
    /// every long-lived process in both namespaces (the daemons or charons, with the softirq
    /// work the kernel ran in their context), over the whole run including the warm-up.
    pub cpu_s: f64,
}

impl Run {
    /// CPU seconds per Gbit moved: what a run costs, whatever share of the (busy) machine it
    /// got. Lower is better.
    fn cpu_per_gbit(&self) -> f64 {
        let seconds: f64 = E2E_SECONDS.parse().unwrap_or(5.0) + 1.0;
        self.cpu_s / (self.gbit * seconds)
    }
}

/// One single-stream iperf3 run from a to b on `port`.
fn iperf_once(lab: &Lab, port: &str) -> anyhow::Result<Run> {
    iperf(
        (&lab.net.ns_a, None),
        (&lab.net.ns_b, &lab.net.addr_b),
        port,
    )
}

/// The processes now in namespace `name` (`ip netns pids`).
pub(crate) fn namespace_pids(name: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// User + system CPU seconds used so far by the processes now in the namespaces `names`
/// (`ip netns pids`, `/proc/PID/stat` fields 14 and 15).
fn namespace_cpu_seconds(names: &[&str]) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[allow(clippy::cast_precision_loss, reason = "clock ticks per second")]
    let ticks = if ticks > 0 { ticks as f64 } else { 100.0 };
    let mut total = 0u64;
    for name in names {
        for pid in namespace_pids(name) {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name may hold spaces: the fields after it follow the last ')'.
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // utime and stime are fields 14 and 15, so 11 and 12 after the state (field 3).
            for index in [11, 12] {
                total += fields
                    .get(index)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    #[allow(clippy::cast_precision_loss, reason = "clock ticks of one benchmark")]
    let total = total as f64;
    total / ticks
}

/// One single-stream iperf3 run from namespace `client.0` (bound to address `client.1` if
/// given) to `server.1` in namespace `server.0`.
pub(crate) fn iperf(
    client: (&str, Option<&str>),
    server: (&str, &str),
    port: &str,
) -> anyhow::Result<Run> {
    let namespaces = [client.0, server.0];
    let probe =
        crate::bench_probe::enabled().then(|| crate::bench_probe::Snapshot::take(&namespaces));
    let cpu_before = namespace_cpu_seconds(&namespaces);
    let mut listener = Lab::exec(
        server.0,
        &["iperf3", "-s", "-1", "-B", server.1, "-p", port],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .context("starting iperf3 -s")?;
    sleep(Duration::from_millis(500));
    let mut args = vec![
        "iperf3",
        "-c",
        server.1,
        "-p",
        port,
        "-t",
        E2E_SECONDS,
        "-O",
        "1",
        "-J",
    ];
    if let Some(bind) = client.1 {
        args.extend(["-B", bind]);
    }
    let out = Lab::exec(client.0, &args)
        .output()
        .context("running iperf3 -c")?;
    let _ = listener.kill();
    let _ = listener.wait();
    let cpu_after = namespace_cpu_seconds(&namespaces);
    if let Some(before) = probe {
        let what = format!("{} -> {} port {port}", client.0, server.1);
        crate::bench_probe::Snapshot::take(&namespaces).print_since(
            &before,
            &what,
            E2E_SECONDS.parse::<f64>().unwrap_or(5.0) + 1.5,
            client.0,
        );
    }
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    let received = &report["end"]["sum_received"];
    let bps = received["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 reported no goodput: {report}"))?;
    let bytes = received["bytes"]
        .as_u64()
        .ok_or_else(|| anyhow!("iperf3 reported no byte count: {report}"))?;
    // iperf3's own CPU, in percent of one CPU over the run (warm-up included).
    let cpu = &report["end"]["cpu_utilization_percent"];
    let iperf_percent =
        cpu["host_total"].as_f64().unwrap_or(0.0) + cpu["remote_total"].as_f64().unwrap_or(0.0);
    let seconds: f64 = E2E_SECONDS.parse().unwrap_or(5.0) + 1.0;
    Ok(Run {
        gbit: bps / 1e9,
        bytes,
        cpu_s: cpu_after - cpu_before + iperf_percent / 100.0 * seconds,
    })
}

/// The `bytes` counter of SA `name` on host `side`.
fn sa_bytes(lab: &Lab, side: &str, name: &str) -> anyhow::Result<u64> {
    let list: serde_json::Value =
        serde_json::from_str(&lab.cli(side, &["sa", "list", "--formatter", "json"])?)
            .context("sa list JSON")?;
    list.as_array()
        .and_then(|sas| sas.iter().find(|sa| sa["name"] == name))
        .and_then(|sa| sa["bytes"].as_u64())
        .ok_or_else(|| anyhow!("no bytes counter for SA {name} on {side}: {list}"))
}

/// On both hosts: the SA pair, and `ipsec` policies for TCP to and from [`ESP_PORT`] on b only.
fn protect_esp_port(lab: &Lab) -> anyhow::Result<()> {
    let (a, b) = (lab.net.addr_a.as_str(), lab.net.addr_b.as_str());
    let (enc, enc_key) = ("aes128-cbc", "0x000102030405060708090a0b0c0d0e0f");
    let (integ, integ_key) = (
        "hmac-sha2-256",
        "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
    );
    for side in ["a", "b"] {
        for (name, src, dst, spi) in [(SA_AB, a, b, "0x3001"), ("bench-ba", b, a, "0x3002")] {
            lab.cli(
                side,
                &[
                    "sa",
                    "add",
                    "-s",
                    src,
                    "-d",
                    dst,
                    "-m",
                    "transport",
                    "-p",
                    spi,
                    "-e",
                    enc,
                    "-k",
                    enc_key,
                    "-i",
                    integ,
                    "-K",
                    integ_key,
                    "-n",
                    name,
                ],
            )?;
        }
        // a -> b carries the destination port, b -> a the source port.
        let (to_b, to_a) = if side == "a" {
            ("out", "in")
        } else {
            ("in", "out")
        };
        for (dir, src, dst, sport, dport, sa, sp) in [
            (to_b, a, b, "any", ESP_PORT, SA_AB, "bench-to-b"),
            (to_a, b, a, ESP_PORT, "any", "bench-ba", "bench-to-a"),
        ] {
            let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
            let policy = SpArgs {
                sport,
                dport,
                proto: "tcp",
                sa: Some(sa),
                ..SpArgs::ipsec(&src, &dst, dir, sp)
            };
            lab.cli(side, &policy.args())?;
        }
    }
    Ok(())
}

/// Profiling aid: with `XIPSEC_BENCH_E2E_PERF=DIR`, the first run of each kind is recorded
/// system-wide with call graphs (`perf record -a -g`) into `DIR/{what}.data`; `None` otherwise.
fn perf_start(what: &str) -> anyhow::Result<Option<std::process::Child>> {
    let Some(dir) = std::env::var_os(PERF_ENV) else {
        return Ok(None);
    };
    let file = std::path::Path::new(&dir).join(format!("{what}.data"));
    let child = Command::new("perf")
        .args(["record", "-a", "-g", "-q", "-o"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    sleep(Duration::from_millis(300));
    Ok(Some(child))
}

/// Stops a recording [`perf_start`] began (SIGINT, so perf writes its file).
fn perf_stop(child: Option<std::process::Child>) -> anyhow::Result<()> {
    if let Some(mut child) = child {
        let pid = child.id().to_string();
        Command::new("kill").args(["-INT", &pid]).status()?;
        child.wait()?;
    }
    Ok(())
}

/// Where [`perf_start`] writes its recordings.
const PERF_ENV: &str = "XIPSEC_BENCH_E2E_PERF";

/// With `XIPSEC_BENCH_E2E_ONLY=xipsec`, plaintext and strongSwan are skipped (a quick A/B of
/// xipsec alone; the JSON then reports 0 for what was skipped).
fn xipsec_only() -> bool {
    std::env::var("XIPSEC_BENCH_E2E_ONLY").as_deref() == Ok("xipsec")
}

/// The runs of one kind: goodput and CPU cost, each sorted once all are in.
#[derive(Default)]
struct Series {
    gbit: Vec<f64>,
    cpu_per_gbit: Vec<f64>,
}

impl Series {
    fn push(&mut self, run: &Run) {
        self.gbit.push(run.gbit);
        self.cpu_per_gbit.push(run.cpu_per_gbit());
    }

    /// A run left out (`XIPSEC_BENCH_E2E_ONLY=xipsec`).
    fn skipped(&mut self) {
        self.gbit.push(0.0);
        self.cpu_per_gbit.push(0.0);
    }

    fn sorted(mut self) -> Self {
        self.gbit.sort_by(f64::total_cmp);
        self.cpu_per_gbit.sort_by(f64::total_cmp);
        self
    }

    fn median(&self) -> f64 {
        median(&self.gbit)
    }

    fn cpu_median(&self) -> f64 {
        median(&self.cpu_per_gbit)
    }

    fn runs(&self) -> Vec<f64> {
        self.gbit.iter().copied().map(rounded).collect()
    }
}

/// `E2E_RUNS` alternating ESP and plaintext runs, each checked against the SA's byte counter.
fn iperf_pairs(lab: &Lab) -> anyhow::Result<(Series, Series)> {
    let (mut esp, mut plain) = (Series::default(), Series::default());
    for run in 0..E2E_RUNS {
        let before = sa_bytes(lab, "a", SA_AB)?;
        let perf = if run == 0 {
            perf_start("transport")?
        } else {
            None
        };
        let run = iperf_once(lab, ESP_PORT)?;
        perf_stop(perf)?;
        let (grew, bytes) = (sa_bytes(lab, "a", SA_AB)? - before, run.bytes);
        if grew < bytes {
            bail!(
                "the ESP run moved {bytes} bytes but SA {SA_AB} counted only {grew}: the measured \
                 traffic did not go over ESP"
            );
        }
        esp.push(&run);
        if xipsec_only() {
            plain.skipped();
            continue;
        }
        let before = sa_bytes(lab, "a", SA_AB)?;
        let run = iperf_once(lab, PLAIN_PORT)?;
        let grew = sa_bytes(lab, "a", SA_AB)? - before;
        if grew != 0 {
            bail!("the plaintext run went through SA {SA_AB} ({grew} bytes)");
        }
        plain.push(&run);
    }
    Ok((esp.sorted(), plain.sorted()))
}

/// Inner addresses on both hosts' loopbacks (`fd00:be:a::{host}`, `fd00:be:b::{host}`), routed
/// over the veth, and an xipsec tunnel-mode SA pair `name` (SPIs `0x31{host}1`/`0x31{host}2`,
/// `sa_extra` added to its `sa add`) protecting everything between them; the inner addresses
/// (a, b).
fn tunnel(lab: &Lab, name: &str, host: u8, sa_extra: &[&str]) -> anyhow::Result<(String, String)> {
    let (a, b) = (format!("fd00:be:a::{host}"), format!("fd00:be:b::{host}"));
    for (ns, me, peer, via) in [
        (&lab.net.ns_a, &a, &b, &lab.net.addr_b),
        (&lab.net.ns_b, &b, &a, &lab.net.addr_a),
    ] {
        xipsec_testkit::netns::add_address(ns, &format!("{me}/128"), "lo");
        xipsec_testkit::sh(&[
            "ip",
            "-n",
            ns,
            "-6",
            "route",
            "add",
            &format!("{peer}/128"),
            "via",
            via,
        ]);
    }
    lab.protect_with(
        name,
        "tunnel",
        (&format!("{a}/128"), &format!("{b}/128")),
        (&format!("0x31{host}1"), &format!("0x31{host}2")),
        (
            ("aes128-cbc", "0x000102030405060708090a0b0c0d0e0f"),
            (
                "hmac-sha2-256",
                "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
            ),
        ),
        sa_extra,
    )?;
    Ok((a, b))
}

/// One xipsec tunnel-mode run between `inner` over SA pair `name`, checked against the bytes
/// that went into ESP; recorded by perf as `what` on the first run.
fn tunnel_run(
    lab: &Lab,
    (a, b): &(String, String),
    name: &str,
    (run, what): (usize, &str),
) -> anyhow::Result<Run> {
    let sa = format!("{name}-out");
    let before = sa_bytes(lab, "a", &sa)?;
    let perf = if run == 0 { perf_start(what)? } else { None };
    let run = iperf((&lab.net.ns_a, Some(a)), (&lab.net.ns_b, b), ESP_PORT)?;
    perf_stop(perf)?;
    let (grew, bytes) = (sa_bytes(lab, "a", &sa)? - before, run.bytes);
    if grew < bytes {
        bail!("the tunnel run moved {bytes} bytes but SA {sa} counted only {grew}");
    }
    Ok(run)
}

/// `E2E_RUNS` alternating runs of xipsec in tunnel mode (ESP in UDP, then plain ESP) and of
/// strongSwan, each checked against the bytes that went into ESP.
fn tunnel_pairs(
    lab: &Lab,
    (inner, inner_esp): (&(String, String), &(String, String)),
    swan: Option<&Strongswan>,
) -> anyhow::Result<(Series, Series, Series)> {
    let (mut xipsec, mut strongswan) = (Series::default(), Series::default());
    let mut xipsec_esp = Series::default();
    for run in 0..E2E_RUNS {
        xipsec.push(&tunnel_run(lab, inner, SA_TUNNEL, (run, "tunnel"))?);
        xipsec_esp.push(&tunnel_run(
            lab,
            inner_esp,
            SA_TUNNEL_ESP,
            (run, "tunnel-esp"),
        )?);
        let Some(swan) = swan else {
            strongswan.skipped();
            continue;
        };
        let before = swan.tun_bytes()?;
        let run = iperf(
            (&swan.lab.net.ns_a, Some(&swan.inner.0)),
            (&swan.lab.net.ns_b, &swan.inner.1),
            ESP_PORT,
        )?;
        let (grew, bytes) = (swan.tun_bytes()? - before, run.bytes);
        if grew < bytes {
            bail!("the strongSwan run moved {bytes} bytes but its TUN device took only {grew}");
        }
        strongswan.push(&run);
    }
    Ok((xipsec.sorted(), xipsec_esp.sorted(), strongswan.sorted()))
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
    let mut lab = Lab::new("xbn", 0xbe)?;
    // Extra daemon options for an A/B (`XIPSEC_BENCH_E2E_DAEMON_ARGS="--xdp-mode native"`).
    let extra = std::env::var("XIPSEC_BENCH_E2E_DAEMON_ARGS").unwrap_or_default();
    let extra: Vec<&str> = extra.split_whitespace().collect();
    for side in ["a", "b"] {
        if extra.is_empty() {
            lab.start_daemon(side);
        } else {
            lab.start_daemon_with(side, &extra);
        }
    }
    protect_esp_port(&lab)?;
    let inner = tunnel(&lab, SA_TUNNEL, 1, &["--udp-encapsulation", "4500"])?;
    let inner_esp = tunnel(&lab, SA_TUNNEL_ESP, 2, &[])?;
    let (esp_runs, plain_runs) = iperf_pairs(&lab)?;
    let swan = if xipsec_only() {
        None
    } else {
        Some(Strongswan::new("xbss", 0xbf7)?)
    };
    let (tunnel_runs, tunnel_esp_runs, swan_runs) =
        tunnel_pairs(&lab, (&inner, &inner_esp), swan.as_ref())?;
    drop(swan);
    drop(lab);
    let (plain, esp) = (plain_runs.median(), esp_runs.median());
    let (tunnel, swan) = (tunnel_runs.median(), swan_runs.median());
    let tunnel_esp = tunnel_esp_runs.median();
    let bound = openssl_bound()?;
    let report = serde_json::json!({
        "suite": "aes128-cbc/hmac-sha2-256",
        "mode": "transport",
        "tunnel_gbit_s": rounded(tunnel),
        "strongswan_gbit_s": rounded(swan),
        "esp_over_strongswan": rounded(tunnel / swan),
        "tunnel_over_bound": rounded(tunnel / bound),
        "tunnel_runs_gbit_s": tunnel_runs.runs(),
        "tunnel_encapsulation": "ESP in UDP 4500 (RFC 3948, --udp-encapsulation 4500), as \
                                 strongSwan's libipsec sends it; the tunnel_esp_* fields are the \
                                 same tunnel with plain ESP (IP protocol 50)",
        "tunnel_esp_gbit_s": rounded(tunnel_esp),
        "tunnel_esp_over_strongswan": rounded(tunnel_esp / swan),
        "tunnel_esp_over_bound": rounded(tunnel_esp / bound),
        "tunnel_esp_runs_gbit_s": tunnel_esp_runs.runs(),
        "tunnel_esp_cpu_s_per_gbit": rounded(tunnel_esp_runs.cpu_median()),
        "strongswan_runs_gbit_s": swan_runs.runs(),
        "strongswan": "5.9 charon, kernel-libipsec (userspace ESP over TUN, ESP in UDP), tunnel \
                       mode, IKEv2 PSK, aesni and openssl plugins",
        "tunnel_confirmed_by": "xipsec: the tunnel SA's bytes counter; strongSwan: its TUN \
                                device's bytes; each grew by at least the goodput bytes",
        "esp_gbit_s": rounded(esp),
        "plain_gbit_s": rounded(plain),
        "bound_gbit_s": rounded(bound),
        "esp_over_bound": rounded(esp / bound),
        "runs": E2E_RUNS,
        "esp_runs_gbit_s": esp_runs.runs(),
        "plain_runs_gbit_s": plain_runs.runs(),
        "esp_cpu_s_per_gbit": rounded(esp_runs.cpu_median()),
        "tunnel_cpu_s_per_gbit": rounded(tunnel_runs.cpu_median()),
        "strongswan_cpu_s_per_gbit": rounded(swan_runs.cpu_median()),
        "plain_cpu_s_per_gbit": rounded(plain_runs.cpu_median()),
        "cpu_s_per_gbit": "median CPU seconds (iperf3 both ends, and every process in the two \
                           namespaces: daemons or charons, with the softirq work run in their \
                           context) per Gbit moved, warm-up included: the cost of a run whatever \
                           share of a busy machine it got",
        "seconds_per_run": E2E_SECONDS,
        "plain_conditions": "both daemons attached, same SPD, unprotected port",
        "esp_confirmed_by": "SA bytes counter grew by at least the goodput bytes of each ESP run",
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "TCP goodput, one iperf3 stream, median of {E2E_RUNS} runs of {E2E_SECONDS} s after a 1 s warm-up, ESP and plaintext alternating:"
        );
        println!(
            "  plaintext (daemons attached)    {plain:.3} Gbit/s (runs: {:.3?})",
            plain_runs.gbit
        );
        println!(
            "  ESP aes128-cbc/hmac-sha2-256    {esp:.3} Gbit/s (runs: {:.3?})",
            esp_runs.gbit
        );
        println!("  OpenSSL single-core bound       {bound:.3} Gbit/s");
        println!("  ESP / bound                     {:.2}", esp / bound);
        println!(
            "Tunnel mode, same suite, alternating (strongSwan's libipsec only does tunnel mode, ESP in UDP):"
        );
        println!(
            "  xipsec tunnel, ESP in UDP       {tunnel:.3} Gbit/s (runs: {:.3?})",
            tunnel_runs.gbit
        );
        println!(
            "  xipsec tunnel, plain ESP        {tunnel_esp:.3} Gbit/s (runs: {:.3?})",
            tunnel_esp_runs.gbit
        );
        println!(
            "  strongSwan kernel-libipsec      {swan:.3} Gbit/s (runs: {:.3?})",
            swan_runs.gbit
        );
        println!(
            "CPU seconds per Gbit (lower is better): ESP {:.3}, tunnel (ESP in UDP) {:.3}, tunnel (plain ESP) {:.3}, strongSwan {:.3}, plaintext {:.3}",
            esp_runs.cpu_median(),
            tunnel_runs.cpu_median(),
            tunnel_esp_runs.cpu_median(),
            swan_runs.cpu_median(),
            plain_runs.cpu_median()
        );
        println!("  xipsec tunnel / strongSwan      {:.2}", tunnel / swan);
        println!("  xipsec tunnel / bound           {:.2}", tunnel / bound);
    }
    Ok(())
}
