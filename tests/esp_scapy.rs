//! Interoperability with an ESP implementation we did not write: scapy's
//! `scapy.layers.ipsec.SecurityAssociation` (`fixtures/scapy_peer.py`) in its own namespace,
//! against an `xipsec daemon` in the other.
//!
//! For every combination of encryption (3des-cbc, aes128-cbc, null), integrity (hmac-sha1,
//! hmac-sha2-256) and mode (transport, tunnel), plus aes256-cbc/hmac-sha2-256 and the AES-GCM
//! suites aes128-gcm and aes256-gcm (RFC 4106, no integrity option) in both modes, the daemon
//! gets a fresh pair of SAs and SPs (the previous combination's are removed first); the 3des-cbc/hmac-sha1/transport combination uses
//! the source document's keys and SPI 0x1000. The scapy peer then sends ESP-protected ICMPv6
//! echo, UDP (to an echo server and to a closed port) and TCP SYN (to a listening and to a
//! closed port) from b to a, and verifies each reply xipsec protected: ICV, RFC 4303 §2.4
//! padding, alignment, SPI, inner addresses, sequence numbers 1, 2, 3, ... and the reply itself
//! (echo reply, UDP echo, ICMPv6 port unreachable, SYN-ACK, RST). One more packet with a
//! flipped ICV must get no reply and count as an auth failure. On the xipsec side the SA
//! counters must show every packet scapy sent as accepted. A capture on the veth over the whole
//! run must see only ESP (and neighbour discovery, which passes in clear by design).

use std::time::Instant;

use ipsec_tests::esp_oracle::key_hex;
use serde_json::{Value, json};
use xipsec_testkit::{
    as_root,
    capture::{Capture, describe},
    cli::SpArgs,
    daemon::Node,
    netns::{self, VethPair},
    traffic::{self, Ready, fixture_with_input},
};

/// Inner (tunnel-mode) addresses, on `lo` of each namespace.
const INNER_A: &str = "fd00:75::1";
const INNER_B: &str = "fd00:75::2";
/// Responder ports on the xipsec host; the closed ports have no socket.
const UDP_ECHO_PORT: u16 = 7;
const UDP_CLOSED_PORT: u16 = 9;
const TCP_OPEN_PORT: u16 = 9000;
const TCP_CLOSED_PORT: u16 = 9001;

/// The source document's keys: `ipv6readylogo3descbcout2` and `ipv6readylogsha1out2`.
const DOC_3DES_KEY: &str = "0x6970763672656164796c6f676f336465736362636f757432";
const DOC_SHA1_KEY: &str = "0x6970763672656164796c6f67736861316f757432";
const DOC_SPI: u32 = 0x1000;

/// Packets the peer sends with a good ICV (echo, udp, udp-closed, tcp SYN, its RST, tcp-closed
/// SYN) and replies it expects (one per request but the RST).
const GOOD_SENT: u64 = 6;
const REPLIES: u64 = 5;
const REPLY_KINDS: [&str; 5] = ["echo", "udp", "udp-closed", "tcp", "tcp-closed"];

fn sh_in(ns: &str, args: &[&str]) {
    let out = netns::exec(ns, args)
        .output()
        .expect("running a command in a namespace");
    assert!(
        out.status.success(),
        "{args:?} in {ns} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn mac(ns: &str, iface: &str) -> String {
    let out = netns::exec(ns, &["cat", &format!("/sys/class/net/{iface}/address")])
        .output()
        .expect("reading a MAC address");
    let mac = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert_eq!(mac.len(), 17, "MAC of {iface} in {ns}: {mac:?}");
    mac
}

/// One algorithm combination, with the names each side uses for it.
struct Combo {
    enc: &'static str,
    integ: &'static str,
    mode: &'static str,
}

impl Combo {
    fn label(&self) -> String {
        format!("{}/{}/{}", self.enc, self.integ, self.mode)
    }

    fn scapy_crypt(&self) -> &'static str {
        match self.enc {
            "3des-cbc" => "3DES",
            "aes128-cbc" | "aes256-cbc" => "AES-CBC",
            "aes128-gcm" | "aes256-gcm" => "AES-GCM",
            "null" => "NULL",
            other => unreachable!("encryption {other}"),
        }
    }

    fn scapy_auth(&self) -> &'static str {
        match self.integ {
            "hmac-sha1" => "HMAC-SHA1-96",
            "hmac-sha2-256" => "SHA2-256-128",
            "none" => "NULL",
            other => unreachable!("integrity {other}"),
        }
    }

    /// AES-GCM authenticates by itself: no integrity algorithm or key on either side.
    fn is_gcm(&self) -> bool {
        self.integ == "none"
    }

    fn is_doc(&self) -> bool {
        self.enc == "3des-cbc" && self.integ == "hmac-sha1" && self.mode == "transport"
    }

    /// Encryption key for one direction (`None` for null), as `0x` hex.
    fn enc_key(&self, seed: u8) -> Option<String> {
        if self.is_doc() {
            return Some(DOC_3DES_KEY.to_owned());
        }
        match self.enc {
            "3des-cbc" => Some(key_hex(seed, 24)),
            "aes128-cbc" => Some(key_hex(seed, 16)),
            "aes256-cbc" => Some(key_hex(seed, 32)),
            // The AES key, then the 4-byte salt (RFC 4106).
            "aes128-gcm" => Some(key_hex(seed, 20)),
            "aes256-gcm" => Some(key_hex(seed, 36)),
            _ => None,
        }
    }

    /// Integrity key for one direction (`None` for AES-GCM), as `0x` hex.
    fn integ_key(&self, seed: u8) -> Option<String> {
        (!self.is_gcm()).then(|| self.hmac_key(seed))
    }

    fn hmac_key(&self, seed: u8) -> String {
        if self.is_doc() {
            return DOC_SHA1_KEY.to_owned();
        }
        key_hex(
            seed.wrapping_add(0x80),
            if self.integ == "hmac-sha1" { 20 } else { 32 },
        )
    }
}

/// The key seeds of combination `i`: 2i for xipsec's inbound SA (b -> a), 2i + 1 for its
/// outbound SA (a -> b).
fn seeds(i: usize) -> (u8, u8) {
    let inbound = u8::try_from(2 * i).expect("fewer than 128 combinations");
    (inbound, inbound + 1)
}

fn combos() -> Vec<Combo> {
    let mut v = Vec::new();
    for enc in ["3des-cbc", "aes128-cbc", "null"] {
        for integ in ["hmac-sha1", "hmac-sha2-256"] {
            for mode in ["transport", "tunnel"] {
                v.push(Combo { enc, integ, mode });
            }
        }
    }
    // Beyond ESXi's three ciphers.
    for (enc, integ) in [
        ("aes256-cbc", "hmac-sha2-256"),
        ("aes128-gcm", "none"),
        ("aes256-gcm", "none"),
    ] {
        for mode in ["transport", "tunnel"] {
            v.push(Combo { enc, integ, mode });
        }
    }
    v
}

fn sa_list(d: &Node) -> Vec<Value> {
    let v: Value = serde_json::from_str(&d.ok(&["sa", "list", "--formatter", "json"]))
        .expect("parsing sa list JSON");
    v.as_array().expect("sa list is an array").clone()
}

fn sa_field(list: &[Value], sa: &str, field: &str) -> u64 {
    list.iter()
        .find(|s| s["name"] == sa)
        .and_then(|s| s[field].as_u64())
        .unwrap_or_else(|| panic!("{sa}.{field} missing from {list:?}"))
}

fn stat(d: &Node, reason: &str) -> u64 {
    d.stat(reason)
}

/// Configure `combo` on the xipsec host (a): an inbound SA b -> a with `spi_in`, an outbound
/// SA a -> b with `spi_out`, and an `ipsec` SP per direction for the traffic addresses.
fn configure(d: &Node, net: &VethPair, combo: &Combo, i: usize, spi_in: u32, spi_out: u32) {
    let (ta, tb) = if combo.mode == "tunnel" {
        (INNER_A, INNER_B)
    } else {
        (net.addr_a.as_str(), net.addr_b.as_str())
    };
    let (seed_in, seed_out) = seeds(i);
    for (dir, src, dst, spi, seed) in [
        ("in", &net.addr_b, &net.addr_a, spi_in, seed_in),
        ("out", &net.addr_a, &net.addr_b, spi_out, seed_out),
    ] {
        let name = format!("c{i}-{dir}");
        let spi = format!("{spi:#x}");
        let mut args = vec![
            "sa",
            "add",
            "--sa-source",
            src,
            "--sa-destination",
            dst,
            "--sa-mode",
            combo.mode,
            "--sa-spi",
            &spi,
            "--encryption-algorithm",
            combo.enc,
            "--sa-name",
            &name,
        ];
        let integ_key = combo.integ_key(seed);
        if let Some(k) = &integ_key {
            args.extend(["--integrity-algorithm", combo.integ, "--integrity-key", k]);
        }
        let enc_key = combo.enc_key(seed);
        if let Some(k) = &enc_key {
            args.extend(["--encryption-key", k]);
        }
        d.ok(&args);
    }
    for (dir, src, dst) in [("in", tb, ta), ("out", ta, tb)] {
        let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
        let (sa, name) = (format!("c{i}-{dir}"), format!("c{i}-protect-{dir}"));
        let sp = SpArgs {
            sa: Some(&sa),
            ..SpArgs::ipsec(&src, &dst, dir, &name)
        };
        d.ok(&sp.args());
    }
}

/// The peer's parameters for `combo` (see `scapy_peer.py`).
fn peer_params(
    net: &VethPair,
    combo: &Combo,
    i: usize,
    spi_in: u32,
    spi_out: u32,
    mac_a: &str,
    mac_b: &str,
) -> Value {
    let hex = |k: Option<String>| k.map(|k| k.trim_start_matches("0x").to_owned());
    // The peer's b -> a SA is xipsec's inbound SA (keys from seed 2i), its a -> b SA xipsec's
    // outbound SA (seed 2i+1), as in `configure`.
    let (inner_a, inner_b) = if combo.mode == "tunnel" {
        (INNER_A, INNER_B)
    } else {
        (net.addr_a.as_str(), net.addr_b.as_str())
    };
    let (seed_in, seed_out) = seeds(i);
    json!({
        "iface": net.if_b,
        "src_mac": mac_b,
        "dst_mac": mac_a,
        "outer_a": net.addr_a,
        "outer_b": net.addr_b,
        "inner_a": inner_a,
        "inner_b": inner_b,
        "mode": combo.mode,
        "crypt_algo": combo.scapy_crypt(),
        "crypt_key_b_to_a": hex(combo.enc_key(seed_in)),
        "crypt_key_a_to_b": hex(combo.enc_key(seed_out)),
        "auth_algo": combo.scapy_auth(),
        "auth_key_b_to_a": hex(combo.integ_key(seed_in)),
        "auth_key_a_to_b": hex(combo.integ_key(seed_out)),
        "spi_b_to_a": format!("{spi_in:#x}"),
        "spi_a_to_b": format!("{spi_out:#x}"),
        "udp_echo_port": UDP_ECHO_PORT,
        "udp_closed_port": UDP_CLOSED_PORT,
        "tcp_open_port": TCP_OPEN_PORT,
        "tcp_closed_port": TCP_CLOSED_PORT,
        "timeout": 3.0,
    })
}

fn run_peer(ns: &str, params: &Value) -> Value {
    let out = fixture_with_input(
        Some(ns),
        "scapy_peer.py",
        &["peer"],
        params.to_string().as_bytes(),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scapy_peer.py failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "scapy_peer.py printed no JSON ({e}): {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

/// Every check of one combination; the failures, each naming what went wrong.
fn check_combo(d: &Node, i: usize, r: &Value) -> Vec<String> {
    let mut bad = Vec::new();
    for e in r["errors"].as_array().into_iter().flatten() {
        bad.push(format!("scapy: {}", e.as_str().unwrap_or_default()));
    }
    if r["sent"].as_u64() != Some(GOOD_SENT) {
        bad.push(format!(
            "scapy sent {} good packets, expected {GOOD_SENT}",
            r["sent"]
        ));
    }
    for kind in REPLY_KINDS {
        if r["replies"][kind] != true {
            bad.push(format!("no valid {kind} reply decrypted by scapy"));
        }
    }
    let seqs = u64s(&r["seqs"]);
    let want: Vec<u64> = (1..=REPLIES).collect();
    if seqs != want {
        bad.push(format!(
            "xipsec's sequence numbers {seqs:?}, expected {want:?}"
        ));
    }
    if r["decrypted"].as_u64() != Some(REPLIES) {
        bad.push(format!(
            "scapy decrypted {} replies, expected {REPLIES}",
            r["decrypted"]
        ));
    }
    if r["tamper_reply"] != false {
        bad.push("a packet with a bad ICV was answered".to_owned());
    }
    let list = sa_list(d);
    let name_in = format!("c{i}-in");
    let name_out = format!("c{i}-out");
    for (sa, field, want) in [
        (&name_in, "packets", GOOD_SENT),
        (&name_in, "auth_failures", 1),
        (&name_in, "replay_drops", 0),
        (&name_in, "errors", 0),
        (&name_out, "packets", REPLIES),
        (&name_out, "errors", 0),
    ] {
        let got = sa_field(&list, sa, field);
        if got != want {
            bad.push(format!("xipsec {sa}.{field} = {got}, expected {want}"));
        }
    }
    bad
}

/// The (inbound, outbound) SPIs of combination `i`.
fn spis(combo: &Combo, i: usize) -> (u32, u32) {
    if combo.is_doc() {
        (DOC_SPI + 1, DOC_SPI)
    } else {
        let i = u32::try_from(i).expect("few combinations");
        (0x2000 + 0x10 * i, 0x2001 + 0x10 * i)
    }
}

#[test]
fn scapy_peer_interoperates_for_every_algorithm_and_mode() {
    as_root(
        "scapy_peer_interoperates_for_every_algorithm_and_mode",
        || {
            let started = Instant::now();
            let net = VethPair::new("xsc", 0x74);
            // Tunnel mode's inner addresses, and the routes that take them over the veth.
            sh_in(
                &net.ns_a,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{INNER_A}/128"),
                    "dev",
                    "lo",
                ],
            );
            sh_in(
                &net.ns_b,
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{INNER_B}/128"),
                    "dev",
                    "lo",
                ],
            );
            sh_in(
                &net.ns_a,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    &format!("{INNER_B}/128"),
                    "via",
                    &net.addr_b,
                ],
            );
            sh_in(
                &net.ns_b,
                &[
                    "ip",
                    "-6",
                    "route",
                    "add",
                    &format!("{INNER_A}/128"),
                    "via",
                    &net.addr_a,
                ],
            );
            // Every combination expects one ICMPv6 port unreachable; the default rate limit of a would
            // make that depend on timing.
            sh_in(&net.ns_a, &["sysctl", "-qw", "net.ipv6.icmp.ratelimit=0"]);

            let a = Node::start(&net.ns_a, &net.if_a);
            let mac_a = mac(&net.ns_a, &net.if_a);
            let mac_b = mac(&net.ns_b, &net.if_b);

            let responder = traffic::py_fixture(
                &net.ns_a,
                "scapy_peer.py",
                &[
                    "respond",
                    &format!("{},{INNER_A}", net.addr_a),
                    &UDP_ECHO_PORT.to_string(),
                    &TCP_OPEN_PORT.to_string(),
                    "600",
                ],
            );
            let _responder = Ready::start(responder, "the responder on the xipsec host");

            let wire = a.dir().join("wire.pcap");
            let all_spis: Vec<u32> = combos()
                .iter()
                .enumerate()
                .flat_map(|(i, c)| {
                    let (a, b) = spis(c, i);
                    [a, b]
                })
                .collect();
            let cap = Capture::start(&net.ns_b, &net.if_b, &wire, &all_spis);
            let clear_before = stat(&a, "drop_ipsec_clear");

            let mut failures = Vec::new();
            for (i, combo) in combos().iter().enumerate() {
                let label = combo.label();
                let (spi_in, spi_out) = spis(combo, i);
                a.ok(&["sp", "remove", "--remove-all"]);
                a.ok(&["sa", "remove", "--remove-all"]);
                configure(&a, &net, combo, i, spi_in, spi_out);
                let mismatch_before = stat(&a, "esp_policy_mismatch");
                let t = Instant::now();
                let r = run_peer(
                    &net.ns_b,
                    &peer_params(&net, combo, i, spi_in, spi_out, &mac_a, &mac_b),
                );
                let mut bad = check_combo(&a, i, &r);
                let mismatch = stat(&a, "esp_policy_mismatch") - mismatch_before;
                if mismatch != 0 {
                    bad.push(format!(
                        "xipsec refused {mismatch} decrypted packets by policy"
                    ));
                }
                eprintln!(
                    "{label:<34} spi in {spi_in:#x} out {spi_out:#x}: {} in {:.1} s; seqs {}, pad lengths {}",
                    if bad.is_empty() { "ok" } else { "FAILED" },
                    t.elapsed().as_secs_f64(),
                    r["seqs"],
                    r["padlens"]
                );
                if !bad.is_empty() {
                    eprintln!("    {}", bad.join("\n    "));
                    failures.push(format!(
                        "{label} (spi in {spi_in:#x}, out {spi_out:#x}):\n    {}\n    sa list: {}",
                        bad.join("\n    "),
                        a.ok(&["sa", "list"])
                    ));
                }
            }

            let seen = cap.stop();
            let clear = seen.clear_frames();
            assert!(
                clear.is_empty(),
                "plaintext for the protected addresses on the wire:\n{}",
                describe(&clear)
            );
            let esp = seen.esp_count();
            assert!(
                u64::try_from(esp).expect("a count")
                    >= u64::try_from(combos().len()).expect("a count") * (GOOD_SENT + 1 + REPLIES),
                "the capture saw only {esp} ESP packets"
            );
            assert_eq!(
                stat(&a, "drop_ipsec_clear"),
                clear_before,
                "scapy sends only ESP for the protected addresses, yet xipsec dropped clear traffic"
            );
            assert!(
                failures.is_empty(),
                "{} of {} combinations failed to interoperate with scapy:\n{}\ndaemon log:\n{}",
                failures.len(),
                combos().len(),
                failures.join("\n"),
                a.log()
            );
            eprintln!(
                "{} combinations in {:.1} s",
                combos().len(),
                started.elapsed().as_secs_f64()
            );
        },
    );
}
