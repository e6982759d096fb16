//! `xipsec-bench-esp`: single-core ESP throughput of every suite, next to an OpenSSL bound.
//!
//! For each suite the model knows (every `--encryption-algorithm` with every integrity algorithm
//! it takes, so new suites appear here without editing a list; tunnel mode) and each payload
//! size, it measures on one thread the burst (multi-buffer) path, `OutboundSa::encapsulate_burst`
//! and `InboundSa::decapsulate_burst` over batches of 128 packets as the engine hands them over,
//! and the sequential path, `OutboundSa::encapsulate` and `InboundSa::decapsulate` one packet at
//! a time. Each run lasts at least `--min-run-secs`; the figure is the median of `--runs` runs.
//! The payload is the inner IPv6 packet ESP protects, so 1400 bytes become 1408 bytes of AES-CBC
//! ciphertext, and the ICV covers the ESP header, the IV and that ciphertext: 8 + 16 + 1408 =
//! 1432 bytes (RFC 4303 §3.3.4).
//!
//! In the same run it asks `openssl speed -elapsed -seconds 1 -bytes N` for the cipher
//! (`-evp aes-128-cbc`, ...) at the ciphertext's size and for the MAC (`-hmac sha1`,
//! `-hmac sha256`) at the size the ICV covers, and reports the bound a perfect pipeline of the
//! two could reach one packet after another: 1 / (1/cipher + 1/mac) bytes per second (the MAC
//! alone for null, the AEAD alone for GCM). MB = 10^6 bytes.
//!
//! Both sides are timed by the CPU time they use (this thread's `CLOCK_THREAD_CPUTIME_ID`;
//! `openssl speed` without `-elapsed`), so other work on a shared machine does not skew the
//! ratio; `--wall-clock` times both by the wall clock instead.
//!
//! The AES-GCM suites are also given as ratios against [`CBC_HMAC`] at the same payload, in the
//! same run (issue 10's target: AES-GCM at least twice that suite's burst figure).
//!
//! `--json` prints `{"backend", "suites": [{"suite", "payload", "encap_mb_s", "decap_mb_s",
//! "sequential_encap_mb_s", "sequential_decap_mb_s", "openssl_bound_mb_s"}], "gcm_over_cbc":
//! [{"suite", "payload", "encap", "decap"}], ...}` (the burst path's figures in
//! `encap_mb_s`/`decap_mb_s`); without it, a table.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipsec_user::crypto::burst::Backend;
use ipsec_user::crypto::{EspError, InboundSa, OutboundSa, SaConfig};
use ipsec_user::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
use serde::Serialize;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::Ipv6Addr;
use std::process::Command;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(about = "Single-core ESP encap/decap throughput per suite, with an OpenSSL bound")]
struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Runs per measurement; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    runs: u32,
    /// Minimum duration of one run, in seconds.
    #[arg(long, default_value_t = 0.3)]
    min_run_secs: f64,
    /// Payload sizes (inner IPv6 packet bytes).
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1400])]
    payloads: Vec<usize>,
    /// Time with the wall clock (and `openssl speed -elapsed`) instead of CPU time.
    #[arg(long)]
    wall_clock: bool,
    /// Skip OpenSSL (the bound is then null).
    #[arg(long)]
    no_openssl: bool,
    /// Only suites whose name contains this (e.g. `aes128-cbc/hmac-sha2-256`), for profiling.
    #[arg(long)]
    suite: Option<String>,
}

/// The suite the AES-GCM suites are compared with.
const CBC_HMAC: &str = "aes128-cbc/hmac-sha2-256";

/// Packets per timed batch: the engine's batch (a TUN read round, an AF_XDP ring round),
/// small enough (with 1400-byte packets, about 190 KB for decap) to stay in L2 like OpenSSL's
/// single buffer mostly does.
const BATCH: usize = 128;

/// Every suite the model accepts: each encryption algorithm with each integrity algorithm the
/// command line offers, or with `none` for a combined-mode cipher (AES-GCM).
fn suites() -> Vec<(EncryptionAlgorithm, IntegrityAlgorithm)> {
    let mut suites = Vec::new();
    for &(encryption, _) in EncryptionAlgorithm::ALL {
        if encryption.is_combined() {
            suites.push((encryption, IntegrityAlgorithm::None));
            continue;
        }
        // SHA-256 first, as the targets name it.
        for &(integrity, _) in IntegrityAlgorithm::SELECTABLE.iter().rev() {
            suites.push((encryption, integrity));
        }
    }
    suites
}

/// `len` key bytes, all different (so the three 3DES keys differ, RFC 2451 §2.2).
fn key(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 1).to_le_bytes()[0]).collect()
}

fn config(
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    keys: &(Vec<u8>, Vec<u8>),
) -> SaConfig<'_> {
    SaConfig {
        spi: 0x1000,
        mode: Mode::Tunnel,
        source: Ipv6Addr::new(0x3ffe, 0x501, 0xffff, 0, 0, 0, 0, 0xa),
        destination: Ipv6Addr::new(0x3ffe, 0x501, 0xffff, 1, 0, 0, 0, 1),
        encryption,
        encryption_key: &keys.0,
        integrity,
        integrity_key: &keys.1,
    }
}

fn keys(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm) -> (Vec<u8>, Vec<u8>) {
    (key(encryption.key_len()), key(integrity.key_len()))
}

/// A UDP-in-IPv6 packet of exactly `len` bytes (at least 48).
fn packet(len: usize) -> Result<Vec<u8>> {
    if !(48..=65535).contains(&len) {
        bail!("payload {len} is outside 48..=65535 (an IPv6 + UDP packet)");
    }
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&u16::try_from(len - 40)?.to_be_bytes());
    p.extend_from_slice(&[17, 64]);
    p.extend_from_slice(&Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1).octets());
    p.extend_from_slice(&Ipv6Addr::new(0x2002, 0xdb8, 1, 0, 0, 0, 0, 1).octets());
    p.extend_from_slice(&[0x13, 0x88, 0x00, 0x35]);
    p.extend_from_slice(&u16::try_from(len - 40)?.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend((48..len).map(|i| i.to_le_bytes()[0]));
    Ok(p)
}

/// Median throughput in bytes/s of `batch`, which processes and returns a byte count; each
/// run repeats it until `min_run` has passed.
fn measure(args: &Args, mut batch: impl FnMut() -> Result<u64>) -> Result<f64> {
    let min_run = Duration::from_secs_f64(args.min_run_secs);
    // Warm caches, branch predictors and the output buffers first.
    batch()?;
    let mut rates = Vec::new();
    for _ in 0..args.runs {
        let start = now(args.wall_clock);
        let mut bytes = 0;
        while now(args.wall_clock).saturating_sub(start) < min_run {
            bytes += batch()?;
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "byte counts stay far below 2^52"
        )]
        rates.push(bytes as f64 / now(args.wall_clock).saturating_sub(start).as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

/// The wall clock, or the CPU time this thread used (the default: on a machine shared with
/// other work, time spent waiting for the CPU is nobody's throughput).
fn now(wall: bool) -> Duration {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    if wall {
        return START.get_or_init(Instant::now).elapsed();
    }
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map_or(Duration::ZERO, Duration::from)
}

/// The first error of a burst's results, if any.
fn all_ok<T>(results: &[Result<T, EspError>]) -> Result<()> {
    match results.iter().find_map(|r| r.as_ref().err()) {
        Some(error) => Err(anyhow::anyhow!("{error}")),
        None => Ok(()),
    }
}

/// Which path a measurement takes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Path {
    Burst,
    Sequential,
}

fn bench_encap(
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    payload: usize,
    path: Path,
    args: &Args,
) -> Result<f64> {
    let keys = keys(encryption, integrity);
    let mut sa = OutboundSa::new(&config(encryption, integrity, &keys))?;
    let plain = vec![packet(payload)?; BATCH];
    let mut outs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(payload + 128))
        .collect();
    let mut results = vec![Err(EspError::AuthFailed); BATCH];
    measure(args, || {
        match path {
            Path::Burst => {
                sa.encapsulate_burst(black_box(&plain), &mut outs, &mut results);
                all_ok(&results)?;
            }
            Path::Sequential => {
                for (packet, out) in plain.iter().zip(&mut outs) {
                    sa.encapsulate(black_box(packet), out)?;
                }
            }
        }
        black_box(&outs);
        Ok((BATCH * payload) as u64)
    })
}

fn bench_decap(
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    payload: usize,
    path: Path,
    args: &Args,
) -> Result<f64> {
    let keys = keys(encryption, integrity);
    let config = config(encryption, integrity, &keys);
    let mut sender = OutboundSa::new(&config)?;
    let plain = packet(payload)?;
    // Distinct sequence numbers 1..=BATCH; a fresh inbound SA per batch keeps the replay
    // window from refusing the second pass (its setup cost is included, amortised over BATCH).
    let sealed: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| {
            let mut out = Vec::new();
            sender.encapsulate(&plain, &mut out).map(|_| out)
        })
        .collect::<Result<_, _>>()?;
    let mut outs: Vec<Vec<u8>> = (0..BATCH)
        .map(|_| Vec::with_capacity(payload + 128))
        .collect();
    let mut results = vec![Err(EspError::AuthFailed); BATCH];
    measure(args, || {
        let mut sa = InboundSa::new(&config)?;
        match path {
            Path::Burst => {
                sa.decapsulate_burst(black_box(&sealed), &mut outs, &mut results);
                all_ok(&results)?;
            }
            Path::Sequential => {
                for (packet, out) in sealed.iter().zip(&mut outs) {
                    sa.decapsulate(black_box(packet), out)?;
                }
            }
        }
        black_box(&outs);
        Ok((BATCH * payload) as u64)
    })
}

/// `openssl speed` for one algorithm at one size, in bytes/s, from its `-mr` output line
/// `+F:<n>:<name>:<bytes per second>`.
fn openssl_speed(algorithm: &[&str], bytes: usize, wall_clock: bool) -> Result<f64> {
    let output = Command::new("openssl")
        .arg("speed")
        // Without `-elapsed`, openssl times by the CPU time it used, as `measure` does.
        .args(wall_clock.then_some("-elapsed"))
        .args(["-seconds", "1", "-mr", "-bytes"])
        .arg(bytes.to_string())
        .args(algorithm)
        .output()
        .context("running openssl speed")?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.starts_with("+F:"))
        .find_map(|line| line.rsplit(':').next()?.trim().parse::<f64>().ok())
        .with_context(|| {
            format!(
                "no +F line from openssl speed {algorithm:?}: {}{}",
                stdout,
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

/// The ciphertext length for a payload: payload + Pad Length + Next Header, padded to the
/// cipher's block (16 for AES-CBC, 8 for 3DES) or to 4 bytes for null and GCM (RFC 4303 §2.4);
/// AES-CBC at 1400 bytes: 1408. The size OpenSSL's cipher is asked to process.
fn cipher_bytes(encryption: EncryptionAlgorithm, payload: usize) -> usize {
    (payload + 2).next_multiple_of(encryption.block_size().max(4))
}

/// What the ICV covers (RFC 4303 §3.3.4): ESP header (8), IV (none for null) and ciphertext;
/// AES-CBC at 1400 bytes: 8 + 16 + 1408 = 1432. The size OpenSSL's MAC is asked to process.
fn mac_bytes(encryption: EncryptionAlgorithm, payload: usize) -> usize {
    8 + encryption.iv_len() + cipher_bytes(encryption, payload)
}

/// `openssl speed` arguments for a cipher (by its model spelling, so a suite OpenSSL has no
/// name for here just gets no bound).
fn cipher_args(algorithm: EncryptionAlgorithm) -> Option<&'static [&'static str]> {
    Some(match algorithm.as_str() {
        "aes128-cbc" => &["-evp", "aes-128-cbc"],
        "aes256-cbc" => &["-evp", "aes-256-cbc"],
        "3des-cbc" => &["-evp", "des-ede3-cbc"],
        "aes128-gcm" => &["-evp", "aes-128-gcm"],
        "aes256-gcm" => &["-evp", "aes-256-gcm"],
        _ => return None,
    })
}

fn mac_args(algorithm: IntegrityAlgorithm) -> Option<&'static [&'static str]> {
    Some(match algorithm.as_str() {
        "hmac-sha1" => &["-hmac", "sha1"],
        "hmac-sha2-256" => &["-hmac", "sha256"],
        // GCM authenticates by itself: no separate MAC to time.
        _ => return None,
    })
}

#[derive(Serialize)]
struct SuiteResult {
    suite: String,
    payload: usize,
    /// The burst (multi-buffer) path.
    encap_mb_s: f64,
    decap_mb_s: f64,
    /// One packet at a time.
    sequential_encap_mb_s: f64,
    sequential_decap_mb_s: f64,
    openssl_bound_mb_s: Option<f64>,
}

/// A combined-mode suite's burst figures over [`CBC_HMAC`]'s at the same payload.
#[derive(Serialize)]
struct GcmRatio {
    suite: String,
    payload: usize,
    encap: f64,
    decap: f64,
}

/// The [`GcmRatio`]s of every combined-mode suite measured beside [`CBC_HMAC`].
fn gcm_ratios(suites: &[SuiteResult]) -> Vec<GcmRatio> {
    let ratio = |x: f64, base: f64| (x / base * 100.0).round() / 100.0;
    suites
        .iter()
        .filter(|s| s.suite.ends_with("-gcm"))
        .filter_map(|gcm| {
            let base = suites
                .iter()
                .find(|b| b.suite == CBC_HMAC && b.payload == gcm.payload)?;
            Some(GcmRatio {
                suite: gcm.suite.clone(),
                payload: gcm.payload,
                encap: ratio(gcm.encap_mb_s, base.encap_mb_s),
                decap: ratio(gcm.decap_mb_s, base.decap_mb_s),
            })
        })
        .collect()
}

#[derive(Serialize)]
struct Report {
    /// What the burst path runs on here (`Backend::name`).
    backend: &'static str,
    suites: Vec<SuiteResult>,
    /// AES-GCM over `aes128-cbc/hmac-sha2-256`, burst path, same payload, same run.
    gcm_over_cbc: Vec<GcmRatio>,
    /// The raw OpenSSL rates behind the bounds, MB/s, keyed `"<args> @ <bytes>"`.
    openssl: BTreeMap<String, f64>,
    openssl_version: Option<String>,
    mode: &'static str,
    runs: u32,
    min_run_secs: f64,
}

fn mb(bytes_per_sec: f64) -> f64 {
    (bytes_per_sec / 1e4).round() / 100.0
}

fn main() -> Result<()> {
    let args = Args::parse();
    let openssl_version = if args.no_openssl {
        None
    } else {
        Command::new("openssl")
            .arg("version")
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    if !args.no_openssl && openssl_version.is_none() {
        eprintln!("openssl not found: bounds will be null (install openssl to get them)");
    }

    // OpenSSL first, each (algorithm, size) pair the suites need once.
    let mut openssl = BTreeMap::new();
    if openssl_version.is_some() {
        let mut wanted = std::collections::BTreeSet::new();
        for &payload in &args.payloads {
            for (encryption, integrity) in suites() {
                if let Some(cipher) = cipher_args(encryption) {
                    wanted.insert((cipher, cipher_bytes(encryption, payload)));
                }
                if let Some(mac) = mac_args(integrity) {
                    wanted.insert((mac, mac_bytes(encryption, payload)));
                }
            }
        }
        for (algorithm, bytes) in wanted {
            let key = format!("{} @ {bytes}", algorithm.join(" "));
            match openssl_speed(algorithm, bytes, args.wall_clock) {
                Ok(rate) => {
                    openssl.insert(key, rate);
                }
                Err(err) => eprintln!("openssl {key}: {err:#}"),
            }
        }
    }
    let rate = |algorithm: &[&str], bytes: usize| {
        let key = format!("{} @ {bytes}", algorithm.join(" "));
        openssl.get(&key).copied()
    };

    let mut results = Vec::new();
    for &payload in &args.payloads {
        for (encryption, integrity) in suites() {
            // The model's spellings: `aes128-cbc/hmac-sha2-256`, `aes128-gcm`.
            let name = if integrity == IntegrityAlgorithm::None {
                encryption.to_string()
            } else {
                format!("{encryption}/{integrity}")
            };
            if args
                .suite
                .as_ref()
                .is_some_and(|only| !name.contains(only.as_str()))
            {
                continue;
            }
            let encap = bench_encap(encryption, integrity, payload, Path::Burst, &args)?;
            let decap = bench_decap(encryption, integrity, payload, Path::Burst, &args)?;
            let seq_encap = bench_encap(encryption, integrity, payload, Path::Sequential, &args)?;
            let seq_decap = bench_decap(encryption, integrity, payload, Path::Sequential, &args)?;
            let cipher =
                cipher_args(encryption).map(|c| rate(c, cipher_bytes(encryption, payload)));
            let mac = mac_args(integrity).map(|m| rate(m, mac_bytes(encryption, payload)));
            let bound = match (cipher, mac) {
                (Some(Some(c)), Some(Some(m))) => Some(1.0 / (1.0 / c + 1.0 / m)),
                (Some(Some(c)), None) => Some(c),
                (None, Some(Some(m))) => Some(m),
                _ => None,
            };
            results.push(SuiteResult {
                suite: name,
                payload,
                encap_mb_s: mb(encap),
                decap_mb_s: mb(decap),
                sequential_encap_mb_s: mb(seq_encap),
                sequential_decap_mb_s: mb(seq_decap),
                openssl_bound_mb_s: bound.map(mb),
            });
        }
    }

    let report = Report {
        backend: Backend::active().name(),
        gcm_over_cbc: gcm_ratios(&results),
        suites: results,
        openssl: openssl.into_iter().map(|(k, v)| (k, mb(v))).collect(),
        openssl_version,
        mode: "tunnel",
        runs: args.runs,
        min_run_secs: args.min_run_secs,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

fn print_table(report: &Report) {
    println!(
        "ESP throughput, one core, tunnel mode, median of {} runs of >= {} s (MB = 10^6 bytes);\n\
         burst path on {}, batches of {BATCH}; ratios against the OpenSSL sequential bound",
        report.runs, report.min_run_secs, report.backend
    );
    println!(
        "{:<26} {:>7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}",
        "suite", "payload", "encap", "decap", "seq enc", "seq dec", "bound", "encap/bd", "decap/bd"
    );
    for s in &report.suites {
        let ratio = |x: f64| {
            s.openssl_bound_mb_s
                .map_or_else(|| "n/a".to_owned(), |b| format!("{:.2}", x / b))
        };
        let bound = s
            .openssl_bound_mb_s
            .map_or_else(|| "n/a".to_owned(), |b| format!("{b:.1}"));
        println!(
            "{:<26} {:>7} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9} {:>8} {:>8}",
            s.suite,
            s.payload,
            s.encap_mb_s,
            s.decap_mb_s,
            s.sequential_encap_mb_s,
            s.sequential_decap_mb_s,
            bound,
            ratio(s.encap_mb_s),
            ratio(s.decap_mb_s)
        );
    }
    if !report.gcm_over_cbc.is_empty() {
        println!("\nburst path over {CBC_HMAC} at the same payload:");
        for r in &report.gcm_over_cbc {
            println!(
                "  {:<12} {:>7}  encap {:.2}x  decap {:.2}x",
                r.suite, r.payload, r.encap, r.decap
            );
        }
    }
    if let Some(version) = &report.openssl_version {
        println!("\n{version}; raw rates (MB/s):");
        for (what, rate) in &report.openssl {
            println!("  openssl speed {what}: {rate:.1}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openssl_sizes_are_what_esp_processes() {
        assert_eq!(cipher_bytes(EncryptionAlgorithm::Aes128Cbc, 1400), 1408);
        assert_eq!(mac_bytes(EncryptionAlgorithm::Aes128Cbc, 1400), 1432);
        assert_eq!(cipher_bytes(EncryptionAlgorithm::TripleDesCbc, 1400), 1408);
        assert_eq!(mac_bytes(EncryptionAlgorithm::TripleDesCbc, 1400), 1424);
        assert_eq!(mac_bytes(EncryptionAlgorithm::Null, 1400), 1412);
        assert_eq!(cipher_bytes(EncryptionAlgorithm::Aes128Gcm, 1400), 1404);
    }

    /// GCM is compared with the CBC + HMAC suite at its own payload only.
    #[test]
    fn gcm_ratios_pair_suites_by_payload() {
        let row = |suite: &str, payload, encap, decap| SuiteResult {
            suite: suite.to_owned(),
            payload,
            encap_mb_s: encap,
            decap_mb_s: decap,
            sequential_encap_mb_s: 0.0,
            sequential_decap_mb_s: 0.0,
            openssl_bound_mb_s: None,
        };
        let suites = [
            row(CBC_HMAC, 64, 100.0, 100.0),
            row(CBC_HMAC, 1400, 1000.0, 2000.0),
            row("aes128-cbc/hmac-sha1", 1400, 1.0, 1.0),
            row("aes128-gcm", 1400, 3000.0, 3000.0),
            row("aes256-gcm", 1400, 2500.0, 1000.0),
            row("aes256-gcm", 9000, 1.0, 1.0),
        ];
        let ratios = gcm_ratios(&suites);
        let ratios: Vec<(&str, usize, f64, f64)> = ratios
            .iter()
            .map(|r| (r.suite.as_str(), r.payload, r.encap, r.decap))
            .collect();
        assert_eq!(
            ratios,
            [
                ("aes128-gcm", 1400, 3.0, 1.5),
                ("aes256-gcm", 1400, 2.5, 0.5)
            ]
        );
    }

    /// Every suite the model accepts is benchmarked, and each keys an SA.
    #[test]
    fn every_suite_is_listed_once() {
        for (encryption, integrity) in suites() {
            let keys = keys(encryption, integrity);
            OutboundSa::new(&config(encryption, integrity, &keys)).expect("a valid suite");
        }
        let expected = EncryptionAlgorithm::ALL
            .iter()
            .map(|(e, _)| {
                if e.is_combined() {
                    1
                } else {
                    IntegrityAlgorithm::SELECTABLE.len()
                }
            })
            .sum::<usize>();
        assert_eq!(suites().len(), expected);
    }
}
