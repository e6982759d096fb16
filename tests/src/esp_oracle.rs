//! Confidentiality checked, not assumed: captured ESP is decrypted with the keys the test
//! configured by an implementation we did not write (scapy's `SecurityAssociation`, run by
//! `fixtures/esp_decrypt.py`), and the inner packets are checked.
//!
//! [`EspSa`] is one SA as the test means it: it gives both the `xipsec sa add` arguments and
//! the parameters scapy decrypts with, so the two cannot drift apart. A daemon that used another
//! cipher or key than configured (a null cipher where aes128-cbc was meant, a garbled key after a
//! restart) fails [`assert_confidential`]: the ICV does not verify or the inner packet is
//! garbage, and plaintext markers show up in the raw ESP bytes.

use std::net::Ipv6Addr;

use serde_json::{Value, json};

use xipsec_testkit::{capture::Frames, traffic::fixture_with_input};

/// One SA: what `xipsec sa add` is told and what scapy decrypts with.
#[derive(Clone, Debug)]
pub struct EspSa {
    pub name: String,
    pub spi: u32,
    pub src: String,
    pub dst: String,
    /// `transport` or `tunnel`.
    pub mode: &'static str,
    /// xipsec's names: `aes128-cbc`, `3des-cbc`, `null`.
    pub enc: &'static str,
    /// `0x` hex; `None` with `null`.
    pub enc_key: Option<String>,
    /// `hmac-sha1` or `hmac-sha2-256`.
    pub integ: &'static str,
    pub integ_key: String,
}

impl EspSa {
    /// A transport-mode aes128-cbc / hmac-sha2-256 SA with keys derived from `seed`.
    pub fn aes_sha256(name: &str, spi: u32, (src, dst): (&str, &str), seed: u8) -> Self {
        Self {
            name: name.into(),
            spi,
            src: src.into(),
            dst: dst.into(),
            mode: "transport",
            enc: "aes128-cbc",
            enc_key: Some(key_hex(seed, 16)),
            integ: "hmac-sha2-256",
            integ_key: key_hex(seed.wrapping_add(0x80), 32),
        }
    }

    /// The `xipsec sa add` command line (without the binary).
    pub fn sa_add_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "sa",
            "add",
            "--sa-source",
            &self.src,
            "--sa-destination",
            &self.dst,
            "--sa-mode",
            self.mode,
            "--sa-spi",
            &format!("{:#x}", self.spi),
            "--encryption-algorithm",
            self.enc,
            "--integrity-algorithm",
            self.integ,
            "--integrity-key",
            &self.integ_key,
            "--sa-name",
            &self.name,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if let Some(k) = &self.enc_key {
            args.extend(["--encryption-key".to_owned(), k.clone()]);
        }
        args
    }

    fn scapy(&self) -> Value {
        let crypt = match self.enc {
            "aes128-cbc" => "AES-CBC",
            "3des-cbc" => "3DES",
            "null" => "NULL",
            other => panic!("no scapy name for encryption {other}"),
        };
        let auth = match self.integ {
            "hmac-sha1" => "HMAC-SHA1-96",
            "hmac-sha2-256" => "SHA2-256-128",
            other => panic!("no scapy name for integrity {other}"),
        };
        let hex = |k: &str| k.trim_start_matches("0x").to_owned();
        json!({
            "spi": format!("{:#x}", self.spi),
            "src": self.src,
            "dst": self.dst,
            "mode": self.mode,
            "crypt_algo": crypt,
            "crypt_key": self.enc_key.as_deref().map(hex),
            "auth_algo": auth,
            "auth_key": hex(&self.integ_key),
        })
    }
}

/// `len` bytes from `seed` (`seed`, `seed + 37`, `seed + 74`, ... modulo 256: distinct for up
/// to 256 bytes, so the three 3DES keys differ), as `0x` hex.
pub fn key_hex(seed: u8, len: usize) -> String {
    let bytes: Vec<u8> = std::iter::successors(Some(seed), |b| Some(b.wrapping_add(37)))
        .take(len)
        .collect();
    format!("0x{}", hex::encode(bytes))
}

/// Decrypts each IPv6/ESP `packet` with scapy under `sas`: the inner IPv6 packet, or why not.
pub fn decrypt(sas: &[EspSa], packets: &[Vec<u8>]) -> Vec<Result<Vec<u8>, String>> {
    let request = json!({
        "sas": sas.iter().map(EspSa::scapy).collect::<Vec<_>>(),
        "packets": packets.iter().map(hex::encode).collect::<Vec<_>>(),
    });
    let out = fixture_with_input(None, "esp_decrypt.py", &[], request.to_string().as_bytes());
    assert!(
        out.status.success(),
        "esp_decrypt.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answers: Vec<Value> =
        serde_json::from_slice(&out.stdout).expect("esp_decrypt.py prints a JSON array");
    assert_eq!(answers.len(), packets.len(), "one answer per packet");
    answers
        .iter()
        .map(|a| {
            if a["ok"] == true {
                Ok(hex::decode(a["inner"].as_str().unwrap_or_default()).expect("inner hex"))
            } else {
                Err(a["error"].as_str().unwrap_or("?").to_owned())
            }
        })
        .collect()
}

/// What the inner packets of a capture must look like.
pub struct Expect<'a> {
    /// Inner source and destination of every decrypted packet must be one of these pairs.
    pub flows: &'a [(&'a str, &'a str)],
    /// Upper-layer protocols allowed inside (58, 17, 6, ...).
    pub protocols: &'a [u8],
    /// Plaintext markers: each must be found in some decrypted packet of the sample, and none
    /// may be found in any raw captured frame.
    pub markers: &'a [&'a [u8]],
}

impl<'a> Expect<'a> {
    /// Inner packets of `flows` carrying one of `protocols`, and every marker of `markers` found
    /// in some decrypted packet and in no raw frame (the fields, in order).
    pub const fn new(
        flows: &'a [(&'a str, &'a str)],
        protocols: &'a [u8],
        markers: &'a [&'a [u8]],
    ) -> Self {
        Self {
            flows,
            protocols,
            markers,
        }
    }
}

/// Every captured ESP packet, or an evenly spread sample of at most `sample` of them, decrypts
/// and authenticates under `sas`; the inner packets match `expect` (so every marker must be in
/// the sample: keep captures that look for one small, or make the marker common); and no
/// marker appears in clear in any captured frame.
pub fn assert_confidential(
    frames: &Frames,
    sas: &[EspSa],
    sample: usize,
    expect: &Expect,
    context: &str,
) {
    for marker in expect.markers {
        let leaked = frames.frames.iter().filter(|f| f.contains(marker)).count();
        assert_eq!(
            leaked,
            0,
            "{context}: marker {:?} readable in {leaked} captured frames",
            String::from_utf8_lossy(marker)
        );
    }
    let packets = frames.esp_packets();
    assert!(
        !packets.is_empty(),
        "{context}: no whole ESP packet to decrypt"
    );
    let step = packets.len().div_ceil(sample.max(1));
    let chosen: Vec<Vec<u8>> = packets.into_iter().step_by(step.max(1)).collect();
    let results = decrypt(sas, &chosen);
    let mut found = vec![false; expect.markers.len()];
    for (i, r) in results.iter().enumerate() {
        let inner = r.as_ref().unwrap_or_else(|e| {
            panic!(
                "{context}: scapy could not decrypt ESP packet {i} of {} ({} bytes) with the \
                 configured keys: {e}",
                chosen.len(),
                chosen[i].len()
            )
        });
        let (src, dst, upper) = inner_summary(inner).unwrap_or_else(|| {
            panic!(
                "{context}: decrypted packet {i} is not IPv6: {}",
                hex::encode(&inner[..inner.len().min(96)])
            )
        });
        assert!(
            expect
                .flows
                .iter()
                .any(|(s, d)| s.parse() == Ok(src) && d.parse() == Ok(dst)),
            "{context}: decrypted packet {i} is {src} -> {dst}, not a configured flow"
        );
        assert!(
            expect.protocols.contains(&upper),
            "{context}: decrypted packet {i} carries protocol {upper}, expected one of {:?}: {}",
            expect.protocols,
            hex::encode(&inner[..inner.len().min(96)])
        );
        for (m, marker) in expect.markers.iter().enumerate() {
            found[m] |= inner.windows(marker.len()).any(|w| w == *marker);
        }
    }
    for (m, marker) in expect.markers.iter().enumerate() {
        assert!(
            found[m],
            "{context}: no decrypted packet of the {} sampled carries {:?}",
            chosen.len(),
            String::from_utf8_lossy(marker)
        );
    }
}

/// Source, destination and next header of an IPv6 packet (the fixed header's, which is the
/// upper layer for the packets the tests send).
fn inner_summary(ip: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr, u8)> {
    if ip.len() < 40 || ip[0] >> 4 != 6 {
        return None;
    }
    let a = |at: usize| -> Ipv6Addr {
        let b: [u8; 16] = ip[at..at + 16].try_into().expect("16 bytes");
        Ipv6Addr::from(b)
    };
    Some((a(8), a(24), ip[6]))
}
