//! `xipsec-bench-esp`: single-core ESP throughput of every suite, next to an OpenSSL bound.
//!
//! For each encryption x integrity suite (tunnel mode) and each payload size, it measures
//! `OutboundSa::encapsulate` and `InboundSa::decapsulate` on one thread: each run lasts at least
//! `--min-run-secs`, and the figure is the median of `--runs` runs. The payload is the inner
//! IPv6 packet ESP protects, so 1400 bytes become 1408 bytes of AES-CBC ciphertext, and the ICV
//! covers the ESP header, the IV and that ciphertext: 8 + 16 + 1408 = 1432 bytes
//! (RFC 4303 §3.3.4).
//!
//! In the same run it asks `openssl speed -elapsed -seconds 1 -bytes N` for the cipher
//! (`-evp aes-128-cbc`, `-evp des-ede3-cbc`) at the ciphertext's size and for the MAC
//! (`-hmac sha1`, `-hmac sha256`) at the size the ICV covers, and reports the bound a perfect
//! pipeline of the two could reach:
//! 1 / (1/cipher + 1/mac) bytes per second (the MAC alone for null). MB = 10^6 bytes.
//!
//! `--json` prints `{"suites": [{"suite", "payload", "encap_mb_s", "decap_mb_s",
//! "openssl_bound_mb_s"}], ...}`; without it, a table.

use anyhow::{Context, Result, bail};
use clap::Parser;
use ipsec_user::crypto::{InboundSa, OutboundSa, SaConfig};
use ipsec_user::model::{EncryptionAlgorithm as Enc, IntegrityAlgorithm as Int};
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
    /// Skip OpenSSL (the bound is then null).
    #[arg(long)]
    no_openssl: bool,
    /// Only suites whose name contains this (e.g. `aes128-cbc/hmac-sha2-256`), for profiling.
    #[arg(long)]
    suite: Option<String>,
}

/// Packets per timed batch: large enough to amortise the clock, small enough (with 1400-byte
/// packets, about 370 KB for decap) to stay in L2 like OpenSSL's single buffer mostly does.
const BATCH: usize = 256;

/// The suites, in the order of the table: AES before 3DES, SHA-256 before SHA-1.
const ENCRYPTIONS: [EncryptionAlgorithm; 3] = [Enc::Aes128Cbc, Enc::TripleDesCbc, Enc::Null];
const INTEGRITIES: [IntegrityAlgorithm; 2] = [Int::HmacSha256, Int::HmacSha1];

fn config(encryption: EncryptionAlgorithm, integrity: IntegrityAlgorithm) -> SaConfig<'static> {
    SaConfig {
        spi: 0x1000,
        mode: Mode::Tunnel,
        source: Ipv6Addr::new(0x3ffe, 0x501, 0xffff, 0, 0, 0, 0, 0xa),
        destination: Ipv6Addr::new(0x3ffe, 0x501, 0xffff, 1, 0, 0, 0, 1),
        encryption,
        encryption_key: match encryption {
            EncryptionAlgorithm::TripleDesCbc => b"ipv6readylogo3descbcout2",
            EncryptionAlgorithm::Aes128Cbc => b"0123456789abcdef",
            EncryptionAlgorithm::Aes256Cbc => b"0123456789abcdef0123456789abcdef",
            EncryptionAlgorithm::Aes128Gcm => b"0123456789abcdefSALT",
            EncryptionAlgorithm::Aes256Gcm => b"0123456789abcdef0123456789abcdefSALT",
            EncryptionAlgorithm::Null => b"",
        },
        integrity,
        integrity_key: match integrity {
            IntegrityAlgorithm::HmacSha1 => b"ipv6readylogsha1out2",
            IntegrityAlgorithm::HmacSha256 => b"0123456789abcdef0123456789abcdef",
            IntegrityAlgorithm::None => b"",
        },
    }
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
fn measure(runs: u32, min_run: Duration, mut batch: impl FnMut() -> Result<u64>) -> Result<f64> {
    // Warm caches, branch predictors and the output buffers first.
    batch()?;
    let mut rates = Vec::new();
    for _ in 0..runs {
        let start = Instant::now();
        let mut bytes = 0;
        while start.elapsed() < min_run {
            bytes += batch()?;
        }
        #[allow(
            clippy::cast_precision_loss,
            reason = "byte counts stay far below 2^52"
        )]
        rates.push(bytes as f64 / start.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(rates[rates.len() / 2])
}

fn bench_encap(
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    payload: usize,
    args: &Args,
) -> Result<f64> {
    let mut sa = OutboundSa::new(&config(encryption, integrity))?;
    let plain = packet(payload)?;
    let mut out = Vec::with_capacity(payload + 128);
    measure(
        args.runs,
        Duration::from_secs_f64(args.min_run_secs),
        || {
            for _ in 0..BATCH {
                sa.encapsulate(black_box(&plain), &mut out)?;
                black_box(&out);
            }
            Ok((BATCH * payload) as u64)
        },
    )
}

fn bench_decap(
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    payload: usize,
    args: &Args,
) -> Result<f64> {
    let config = config(encryption, integrity);
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
    let mut out = Vec::with_capacity(payload + 128);
    measure(
        args.runs,
        Duration::from_secs_f64(args.min_run_secs),
        || {
            let mut sa = InboundSa::new(&config)?;
            for packet in &sealed {
                sa.decapsulate(black_box(packet), &mut out)?;
                black_box(&out);
            }
            Ok((BATCH * payload) as u64)
        },
    )
}

/// `openssl speed` for one algorithm at one size, in bytes/s, from its `-mr` output line
/// `+F:<n>:<name>:<bytes per second>`.
fn openssl_speed(algorithm: &[&str], bytes: usize) -> Result<f64> {
    let output = Command::new("openssl")
        .args(["speed", "-elapsed", "-seconds", "1", "-mr", "-bytes"])
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
/// cipher's block (16 for AES, 8 for 3DES) or to 4 bytes for null (RFC 4303 §2.4); AES at 1400
/// bytes: 1408. The size OpenSSL's cipher is asked to process.
fn cipher_bytes(encryption: EncryptionAlgorithm, payload: usize) -> usize {
    let block = match encryption {
        EncryptionAlgorithm::Aes128Cbc | EncryptionAlgorithm::Aes256Cbc => 16,
        EncryptionAlgorithm::TripleDesCbc => 8,
        EncryptionAlgorithm::Null
        | EncryptionAlgorithm::Aes128Gcm
        | EncryptionAlgorithm::Aes256Gcm => 4,
    };
    (payload + 2).div_ceil(block) * block
}

/// What the ICV covers (RFC 4303 §3.3.4): ESP header (8), IV (the cipher's block; none for
/// null) and ciphertext; AES at 1400 bytes: 8 + 16 + 1408 = 1432. The size OpenSSL's MAC is
/// asked to process.
fn mac_bytes(encryption: EncryptionAlgorithm, payload: usize) -> usize {
    let iv = match encryption {
        EncryptionAlgorithm::Aes128Cbc | EncryptionAlgorithm::Aes256Cbc => 16,
        EncryptionAlgorithm::TripleDesCbc
        | EncryptionAlgorithm::Aes128Gcm
        | EncryptionAlgorithm::Aes256Gcm => 8,
        EncryptionAlgorithm::Null => 0,
    };
    8 + iv + cipher_bytes(encryption, payload)
}

fn cipher_args(algorithm: EncryptionAlgorithm) -> Option<&'static [&'static str]> {
    match algorithm {
        EncryptionAlgorithm::Aes128Cbc => Some(&["-evp", "aes-128-cbc"]),
        EncryptionAlgorithm::TripleDesCbc => Some(&["-evp", "des-ede3-cbc"]),
        EncryptionAlgorithm::Aes256Cbc => Some(&["-evp", "aes-256-cbc"]),
        EncryptionAlgorithm::Aes128Gcm => Some(&["-evp", "aes-128-gcm"]),
        EncryptionAlgorithm::Aes256Gcm => Some(&["-evp", "aes-256-gcm"]),
        EncryptionAlgorithm::Null => None,
    }
}

fn mac_args(algorithm: IntegrityAlgorithm) -> &'static [&'static str] {
    match algorithm {
        IntegrityAlgorithm::HmacSha1 => &["-hmac", "sha1"],
        IntegrityAlgorithm::HmacSha256 => &["-hmac", "sha256"],
        // GCM authenticates by itself: no separate MAC to time.
        IntegrityAlgorithm::None => &[],
    }
}

#[derive(Serialize)]
struct SuiteResult {
    suite: String,
    payload: usize,
    encap_mb_s: f64,
    decap_mb_s: f64,
    openssl_bound_mb_s: Option<f64>,
}

#[derive(Serialize)]
struct Report {
    suites: Vec<SuiteResult>,
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
            for encryption in ENCRYPTIONS {
                if let Some(cipher) = cipher_args(encryption) {
                    wanted.insert((cipher, cipher_bytes(encryption, payload)));
                }
                for integrity in INTEGRITIES {
                    wanted.insert((mac_args(integrity), mac_bytes(encryption, payload)));
                }
            }
        }
        for (algorithm, bytes) in wanted {
            let key = format!("{} @ {bytes}", algorithm.join(" "));
            match openssl_speed(algorithm, bytes) {
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

    let mut suites = Vec::new();
    for &payload in &args.payloads {
        for encryption in ENCRYPTIONS {
            for integrity in INTEGRITIES {
                // The model's spellings: `aes128-cbc/hmac-sha2-256`.
                let name = format!("{encryption}/{integrity}");
                if args
                    .suite
                    .as_ref()
                    .is_some_and(|only| !name.contains(only.as_str()))
                {
                    continue;
                }
                let encap = bench_encap(encryption, integrity, payload, &args)?;
                let decap = bench_decap(encryption, integrity, payload, &args)?;
                let mac = rate(mac_args(integrity), mac_bytes(encryption, payload));
                let bound = match cipher_args(encryption) {
                    None => mac,
                    Some(cipher) => rate(cipher, cipher_bytes(encryption, payload))
                        .zip(mac)
                        .map(|(c, m)| 1.0 / (1.0 / c + 1.0 / m)),
                };
                suites.push(SuiteResult {
                    suite: name,
                    payload,
                    encap_mb_s: mb(encap),
                    decap_mb_s: mb(decap),
                    openssl_bound_mb_s: bound.map(mb),
                });
            }
        }
    }

    let report = Report {
        suites,
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
        "ESP throughput, one core, tunnel mode, median of {} runs of >= {} s (MB = 10^6 bytes)",
        report.runs, report.min_run_secs
    );
    println!(
        "{:<26} {:>7} {:>11} {:>11} {:>13} {:>9}",
        "suite", "payload", "encap MB/s", "decap MB/s", "openssl bound", "encap/bd"
    );
    for s in &report.suites {
        let (bound, ratio) = match s.openssl_bound_mb_s {
            Some(b) => (format!("{b:.1}"), format!("{:.2}", s.encap_mb_s / b)),
            None => ("n/a".to_owned(), "n/a".to_owned()),
        };
        println!(
            "{:<26} {:>7} {:>11.1} {:>11.1} {:>13} {:>9}",
            s.suite, s.payload, s.encap_mb_s, s.decap_mb_s, bound, ratio
        );
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
    }
}
