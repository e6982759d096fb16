//! ESP interop against an independent implementation: scapy's `scapy.layers.ipsec`.
//!
//! For all 16 suites (3des-cbc, aes128-cbc, aes256-cbc, null x hmac-sha1, hmac-sha2-256, and
//! aes128-gcm, aes256-gcm (RFC 4106, no separate integrity) x transport, tunnel), in both
//! directions: scapy encrypts `ICMPv6`, UDP and TCP packets (some with extension
//! headers) and `InboundSa::decapsulate` must recover exactly scapy's plaintext; then
//! `OutboundSa::encapsulate` encrypts the same packets and scapy must verify the ICV, decrypt
//! to the same bytes, and find RFC 4303 padding and sequence numbers 1, 2, 3, ...
//!
//! The helper `tests/interop/esp_scapy.py` speaks JSON with hex packets over stdin/stdout. It
//! needs `python3` (or `$PYTHON`) with scapy (`pip install scapy`; scapy's ESP ciphers come
//! from `cryptography`, which pip installs alongside). Without them the tests fail when
//! `CI=true` (or `1`) and otherwise skip with the reason printed.

use ipsec_user::crypto::{Decapsulated, InboundSa, OutboundSa, SaConfig};
use ipsec_user::model::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};
use serde_json::{Value, json};
use std::io::Write;
use std::net::Ipv6Addr;
use std::process::{Command, Stdio};
use xipsec_testkit::keys;

const HELPER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/esp_scapy.py");

/// The spec's example SA: `--sa-source 3ffe:501:ffff:0::a --sa-destination
/// 3ffe:501:ffff:0001:0000:0000:0000:0001 --sa-spi 0x1000`, keys `ipv6readylogo3descbcout2` and
/// `ipv6readylogsha1out2` (the IPv6 Ready Logo test keys: the kit's `keys::SPEC_3DES` and
/// `keys::SPEC_SHA1`; the other algorithms take the kit's fixed keys).
const SPEC_SPI: u32 = 0x1000;
const SPEC_SOURCE: &str = "3ffe:501:ffff:0::a";
const SPEC_DESTINATION: &str = "3ffe:501:ffff:0001:0000:0000:0000:0001";

/// Inner addresses in tunnel mode: the spec's policy example prefixes.
const INNER_SOURCE: &str = "2001:db8:1::1";
const INNER_DESTINATION: &str = "2002:db8:1::1";

/// Keys the kit does not have: AES-256 (32 bytes), and the GCM keys, AES key then a 4-byte
/// salt (RFC 4106 §8.1).
const AES256: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
const AES128_GCM: &str = "000102030405060708090a0b0c0d0e0fcafebabe";
const AES256_GCM: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3fdecaf888";

struct Suite {
    encryption: EncryptionAlgorithm,
    integrity: IntegrityAlgorithm,
    mode: Mode,
}

impl Suite {
    fn name(&self) -> String {
        format!("{:?}/{:?}/{:?}", self.encryption, self.integrity, self.mode)
    }

    /// scapy's names and our keys.
    fn encryption(&self) -> (&'static str, &'static str) {
        match self.encryption {
            EncryptionAlgorithm::TripleDesCbc => ("3DES", keys::SPEC_3DES),
            EncryptionAlgorithm::Aes128Cbc => ("AES-CBC", keys::AES128),
            EncryptionAlgorithm::Aes256Cbc => ("AES-CBC", AES256),
            // scapy takes the salt at the end of the key, as RFC 4106 does.
            EncryptionAlgorithm::Aes128Gcm => ("AES-GCM", AES128_GCM),
            EncryptionAlgorithm::Aes256Gcm => ("AES-GCM", AES256_GCM),
            EncryptionAlgorithm::Null => ("NULL", ""),
        }
    }

    fn integrity(&self) -> (&'static str, &'static str) {
        match self.integrity {
            IntegrityAlgorithm::HmacSha1 => ("HMAC-SHA1-96", keys::SPEC_SHA1),
            IntegrityAlgorithm::HmacSha256 => ("SHA2-256-128", keys::SHA256),
            IntegrityAlgorithm::None => ("NULL", ""),
        }
    }

    /// The SA as the helper takes it.
    fn scapy_sa(&self) -> Value {
        let (crypt_algo, crypt_key) = self.encryption();
        let (auth_algo, auth_key) = self.integrity();
        let (mode, inner_src, inner_dst) = match self.mode {
            Mode::Transport => ("transport", SPEC_SOURCE, SPEC_DESTINATION),
            Mode::Tunnel => ("tunnel", INNER_SOURCE, INNER_DESTINATION),
        };
        json!({
            "spi": SPEC_SPI,
            "crypt_algo": crypt_algo,
            "crypt_key": crypt_key,
            "auth_algo": auth_algo,
            "auth_key": auth_key,
            "mode": mode,
            // scapy compares addresses in its own compressed spelling.
            "tunnel_src": address(SPEC_SOURCE).to_string(),
            "tunnel_dst": address(SPEC_DESTINATION).to_string(),
            "inner_src": inner_src,
            "inner_dst": inner_dst,
        })
    }

    fn keys(&self) -> (Vec<u8>, Vec<u8>) {
        let enc = hex::decode(self.encryption().1).expect("decoding the encryption key");
        let auth = hex::decode(self.integrity().1).expect("decoding the integrity key");
        (enc, auth)
    }
}

fn address(text: &str) -> Ipv6Addr {
    text.parse().expect("parsing a test address")
}

fn all_suites() -> Vec<Suite> {
    let mut suites = Vec::new();
    let composed = [
        EncryptionAlgorithm::TripleDesCbc,
        EncryptionAlgorithm::Aes128Cbc,
        EncryptionAlgorithm::Aes256Cbc,
        EncryptionAlgorithm::Null,
    ]
    .into_iter()
    .flat_map(|e| [IntegrityAlgorithm::HmacSha1, IntegrityAlgorithm::HmacSha256].map(|i| (e, i)));
    let combined = [
        EncryptionAlgorithm::Aes128Gcm,
        EncryptionAlgorithm::Aes256Gcm,
    ]
    .map(|e| (e, IntegrityAlgorithm::None));
    for (encryption, integrity) in composed.chain(combined) {
        for mode in [Mode::Transport, Mode::Tunnel] {
            suites.push(Suite {
                encryption,
                integrity,
                mode,
            });
        }
    }
    suites
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs one helper request; `Err` only when the helper cannot run at all.
fn try_call(request: &Value) -> Result<Value, String> {
    let mut child = Command::new(python())
        .arg(HELPER)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| format!("cannot run {}: {err}", python()))?;
    child
        .stdin
        .take()
        .expect("the helper's stdin is piped")
        .write_all(request.to_string().as_bytes())
        .map_err(|err| format!("writing to the helper: {err}"))?;
    let output = child
        .wait_with_output()
        .map_err(|err| format!("waiting for the helper: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "helper exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let answer: Value = serde_json::from_slice(&output.stdout).map_err(|err| {
        format!(
            "helper answered non-JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })?;
    if answer["ok"] != json!(true) {
        return Err(format!("helper refused: {}", answer["error"]));
    }
    Ok(answer)
}

fn call(request: &Value) -> Value {
    try_call(request).unwrap_or_else(|err| panic!("scapy helper failed: {err}"))
}

/// True when python3 and scapy (with its ESP algorithms) are there. Otherwise fails under
/// `CI=true` (or `1`) and skips, saying why, elsewhere.
fn scapy_available() -> bool {
    let reason = match try_call(&json!({"op": "probe"})) {
        Ok(answer) => {
            let has = |list: &str, name: &str| {
                answer[list]
                    .as_array()
                    .is_some_and(|names| names.iter().any(|n| n == name))
            };
            let missing: Vec<&str> = ["3DES", "AES-CBC", "AES-GCM", "NULL"]
                .iter()
                .filter(|n| !has("crypt", n))
                .chain(
                    ["HMAC-SHA1-96", "SHA2-256-128"]
                        .iter()
                        .filter(|n| !has("auth", n)),
                )
                .copied()
                .collect();
            if missing.is_empty() {
                return true;
            }
            format!("scapy lacks ESP algorithms {missing:?} (is `cryptography` installed?)")
        }
        Err(err) => err,
    };
    xipsec_testkit::skip_unless(
        false,
        "ESP interop",
        &format!("needs python3 with scapy ({reason}): run `pip install scapy`"),
    )
}

fn sa_config<'a>(suite: &Suite, enc_key: &'a [u8], auth_key: &'a [u8]) -> SaConfig<'a> {
    SaConfig {
        spi: SPEC_SPI,
        mode: suite.mode,
        source: address(SPEC_SOURCE),
        destination: address(SPEC_DESTINATION),
        encryption: suite.encryption,
        encryption_key: enc_key,
        integrity: suite.integrity,
        integrity_key: auth_key,
    }
}

fn unhex(value: &Value) -> Vec<u8> {
    hex::decode(value.as_str().expect("a hex string")).expect("decoding helper hex")
}

/// Runs a batch of requests in one helper process (importing scapy costs about a second).
fn call_batch(requests: &[Value]) -> Vec<Value> {
    let count = requests.len();
    let answer = call(&json!({"op": "batch", "requests": requests}));
    let answers = answer["answers"]
        .as_array()
        .expect("the helper lists answers")
        .clone();
    assert_eq!(answers.len(), count, "one answer per request");
    for answer in &answers {
        assert_eq!(answer["ok"], json!(true), "helper refused: {answer}");
    }
    answers
}

/// scapy -> us for one suite: decapsulates scapy's packets, returns the plaintexts (named)
/// and records every mismatch.
fn decapsulate_scapy(
    suite: &Suite,
    encrypted: &Value,
    failures: &mut Vec<String>,
) -> Vec<(Value, Vec<u8>)> {
    let name = suite.name();
    let (enc_key, auth_key) = suite.keys();
    let mut inbound =
        InboundSa::new(&sa_config(suite, &enc_key, &auth_key)).expect("building the inbound sa");
    let packets = encrypted["packets"]
        .as_array()
        .expect("the helper lists packets");
    assert!(
        packets.len() >= 20,
        "{name}: scapy produced too few packets"
    );
    let mut out = Vec::new();
    let mut plaintexts = Vec::new();
    for packet in packets {
        let what = format!("{name} scapy->us {}", packet["name"]);
        let plain = unhex(&packet["plain"]);
        let seq = u32::try_from(packet["seq"].as_u64().expect("a sequence number"))
            .expect("a 32-bit sequence number");
        match inbound.decapsulate(&unhex(&packet["esp"]), &mut out) {
            Ok(Decapsulated::Deliver { seq: got, .. }) if got == seq && out == plain => {}
            Ok(other) => failures.push(format!(
                "{what}: {other:?}\n  got  {}\n  want {}",
                hex::encode(&out),
                hex::encode(&plain)
            )),
            Err(err) => failures.push(format!("{what}: {err}")),
        }
        plaintexts.push((packet["name"].clone(), plain));
    }
    plaintexts
}

/// us -> scapy for one suite: encapsulates the plaintexts into a `decrypt` request.
fn encapsulate_for_scapy(suite: &Suite, plaintexts: &[(Value, Vec<u8>)]) -> Value {
    let name = suite.name();
    let (enc_key, auth_key) = suite.keys();
    let mut outbound =
        OutboundSa::new(&sa_config(suite, &enc_key, &auth_key)).expect("building the outbound sa");
    let mut out = Vec::new();
    let mut ours = Vec::new();
    for (packet_name, plain) in plaintexts {
        let sent = outbound
            .encapsulate(plain, &mut out)
            .unwrap_or_else(|err| panic!("{name}: encapsulating {packet_name}: {err}"));
        // Transport: the packet's own destination; tunnel: the SA's. Both are the spec's.
        assert_eq!(
            sent.destination,
            address(SPEC_DESTINATION),
            "{name} {packet_name}"
        );
        ours.push(json!({"esp": hex::encode(&out)}));
    }
    json!({"op": "decrypt", "sa": suite.scapy_sa(), "packets": ours})
}

/// Checks scapy's decryption of our packets against the plaintexts.
fn check_scapy_decrypted(
    suite: &Suite,
    plaintexts: &[(Value, Vec<u8>)],
    decrypted: &Value,
    failures: &mut Vec<String>,
) {
    let name = suite.name();
    let results = decrypted["results"]
        .as_array()
        .expect("the helper lists results");
    assert_eq!(
        results.len(),
        plaintexts.len(),
        "{name}: one result per packet"
    );
    for ((packet_name, plain), result) in plaintexts.iter().zip(results) {
        let what = format!("{name} us->scapy {packet_name}");
        if result["ok"] != json!(true) {
            failures.push(format!("{what}: scapy says {}", result["error"]));
        } else if unhex(&result["plain"]) != *plain {
            failures.push(format!(
                "{what}: scapy decrypted\n  {}\n  want {}",
                result["plain"],
                hex::encode(plain)
            ));
        }
    }
}

/// Both directions for every suite, in two helper runs; returns every mismatch found.
fn interoperate(suites: &[Suite]) -> Vec<String> {
    let mut failures = Vec::new();
    let encrypt: Vec<Value> = suites
        .iter()
        .map(|suite| json!({"op": "encrypt", "sa": suite.scapy_sa()}))
        .collect();
    let encrypted = call_batch(&encrypt);
    let plaintexts: Vec<_> = suites
        .iter()
        .zip(&encrypted)
        .map(|(suite, answer)| decapsulate_scapy(suite, answer, &mut failures))
        .collect();
    let decrypt: Vec<Value> = suites
        .iter()
        .zip(&plaintexts)
        .map(|(suite, plain)| encapsulate_for_scapy(suite, plain))
        .collect();
    let decrypted = call_batch(&decrypt);
    for ((suite, plain), answer) in suites.iter().zip(&plaintexts).zip(&decrypted) {
        check_scapy_decrypted(suite, plain, answer, &mut failures);
    }
    failures
}

#[test]
fn spec_example_sa1_interoperates_with_scapy() {
    if !scapy_available() {
        return;
    }
    // Exactly the source's `sa add` example: transport, SPI 0x1000, 3des-cbc + hmac-sha1.
    let suite = Suite {
        encryption: EncryptionAlgorithm::TripleDesCbc,
        integrity: IntegrityAlgorithm::HmacSha1,
        mode: Mode::Transport,
    };
    let (enc_key, auth_key) = suite.keys();
    assert_eq!(enc_key, b"ipv6readylogo3descbcout2");
    assert_eq!(auth_key, b"ipv6readylogsha1out2");
    let failures = interoperate(&[suite]);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn all_sixteen_suites_interoperate_with_scapy() {
    if !scapy_available() {
        return;
    }
    let failures = interoperate(&all_suites());
    assert!(
        failures.is_empty(),
        "{} interop failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The reverse check proves scapy's verification is live: it must refuse our packets, on
/// integrity grounds, once a bit of the ICV or the ciphertext is flipped.
#[test]
fn scapy_rejects_our_tampered_packets() {
    if !scapy_available() {
        return;
    }
    // A minimal ICMPv6 echo request; its checksum does not matter to ESP.
    let mut packet = vec![0x60, 0, 0, 0, 0, 8, 58, 64];
    packet.extend_from_slice(&address(INNER_SOURCE).octets());
    packet.extend_from_slice(&address(INNER_DESTINATION).octets());
    packet.extend_from_slice(&[128, 0, 0, 0, 0, 1, 0, 1]);
    let suites = all_suites();
    let requests: Vec<Value> = suites
        .iter()
        .map(|suite| {
            let (enc_key, auth_key) = suite.keys();
            let mut outbound = OutboundSa::new(&sa_config(suite, &enc_key, &auth_key))
                .expect("building the outbound sa");
            let mut out = Vec::new();
            // Sequence numbers 1 and 2, so only the flipped bit can be wrong: one in the ICV,
            // one in the ciphertext (or, for null, the clear payload).
            let mut tampered = Vec::new();
            for from_end in [1, 21] {
                outbound
                    .encapsulate(&packet, &mut out)
                    .expect("encapsulating");
                let at = out.len() - from_end;
                out[at] ^= 0x04;
                tampered.push(json!({"esp": hex::encode(&out)}));
            }
            json!({"op": "decrypt", "sa": suite.scapy_sa(), "packets": tampered})
        })
        .collect();
    for (suite, answer) in suites.iter().zip(call_batch(&requests)) {
        for result in answer["results"].as_array().expect("results") {
            let error = result["error"].as_str().unwrap_or_default();
            assert!(
                result["ok"] == json!(false) && error.starts_with("integrity"),
                "{}: scapy did not refuse a tampered packet on integrity: {result}",
                suite.name()
            );
        }
    }
}
