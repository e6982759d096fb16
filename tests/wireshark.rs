//! `xipsec sa export --wireshark`: Wireshark's ESP dissector (tshark, an ESP implementation we
//! did not write) decrypts and ICV-checks what two xipsec hosts put on the wire, given the
//! exported `esp_sa` table and nothing else (a fresh profile directory holding only that file).
//!
//! - The demo's flows: transport mode between the hosts (the source document's 3des-cbc /
//!   hmac-sha1 keys) and tunnel mode between two inner addresses (aes128-cbc /
//!   hmac-sha2-256), captured at both ends: every ESP frame's ICV is good and its decrypted
//!   payload is the inner ICMPv6 (transport) or inner IPv6 between the inner addresses
//!   (tunnel). The same capture with one key changed in the table turns that SA's frames bad:
//!   tshark really checks.
//! - Every suite an SA can have (each encryption with each integrity the model accepts), in
//!   both modes: every ESP frame decrypts and its ICV verifies.
//! - The table file is mode 0600, refused when it exists, and refused to non-root callers.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use xipsec_testkit::{
    as_root,
    capture::{self, Capture, Frames},
    cli::{SpArgs, single_error_line},
    daemon::Node,
    netns::VethPair,
    traffic,
};

/// Inner (tunnel-mode) addresses, on `lo` of each side, as in the demo.
const INNER_A: &str = "fd00:df5::1";
const INNER_B: &str = "fd00:df5::2";

/// One suite: xipsec's algorithm names.
#[derive(Clone, Copy, Debug)]
struct Suite {
    enc: &'static str,
    integ: Option<&'static str>,
}

impl Suite {
    fn name(self) -> String {
        format!("{}/{}", self.enc, self.integ.unwrap_or("none"))
    }
}

/// Every suite the model accepts: each CBC or NULL cipher with each HMAC, and AES-GCM alone.
fn all_suites() -> Vec<Suite> {
    let mut suites = Vec::new();
    for enc in ["3des-cbc", "aes128-cbc", "aes256-cbc", "null"] {
        for integ in ["hmac-sha1", "hmac-sha2-256"] {
            suites.push(Suite {
                enc,
                integ: Some(integ),
            });
        }
    }
    for enc in ["aes128-gcm", "aes256-gcm"] {
        suites.push(Suite { enc, integ: None });
    }
    suites
}

/// `len` key bytes as `0x` hex, distinct per `seed` (and 3DES's three keys distinct).
fn key(seed: u8, len: usize) -> String {
    let bytes: Vec<u8> = (0..len)
        .map(|i| {
            seed.wrapping_mul(31)
                .wrapping_add(u8::try_from(i).expect("a short key"))
        })
        .collect();
    format!("0x{}", hex::encode(bytes))
}

fn key_len(algorithm: &str) -> usize {
    match algorithm {
        "3des-cbc" => 24,
        "aes128-cbc" => 16,
        "aes256-cbc" | "hmac-sha2-256" => 32,
        "aes128-gcm" | "hmac-sha1" => 20,
        "aes256-gcm" => 36,
        _ => 0,
    }
}

/// The `sa add` line of SA `name`.
fn sa_line(name: &str, (src, dst): (&str, &str), mode: &str, spi: u32, suite: Suite) -> String {
    let seed = u8::try_from(spi & 0xff).expect("a byte");
    let mut line = format!(
        "sa add --sa-name {name} --sa-source {src} --sa-destination {dst} --sa-mode {mode} \
         --sa-spi {spi:#x} --encryption-algorithm {}",
        suite.enc
    );
    if suite.enc != "null" {
        let _ = write!(line, " --encryption-key {}", key(seed, key_len(suite.enc)));
    }
    if let Some(integ) = suite.integ {
        let _ = write!(
            line,
            " --integrity-algorithm {integ} --integrity-key {}",
            key(seed.wrapping_add(0x55), key_len(integ))
        );
    }
    line
}

/// One protected pair of flows: SA and SP names start with `name`; `sel` are the selector
/// addresses of a and b (empty: the hosts' own, as in transport mode).
#[derive(Clone, Copy)]
struct Flow {
    name: &'static str,
    mode: &'static str,
    sel: (&'static str, &'static str),
    spis: (u32, u32),
    suite: Suite,
}

/// The apply file of one side (`a` true for side a) for `flows`.
fn config(net: &VethPair, flows: &[Flow], a: bool) -> String {
    let (me, peer) = if a {
        (net.addr_a.as_str(), net.addr_b.as_str())
    } else {
        (net.addr_b.as_str(), net.addr_a.as_str())
    };
    let mut lines = vec!["# written by tests/wireshark.rs".to_owned()];
    for flow in flows {
        let (spi_out, spi_in) = if a {
            flow.spis
        } else {
            (flow.spis.1, flow.spis.0)
        };
        let (sel_me, sel_peer) = if a {
            flow.sel
        } else {
            (flow.sel.1, flow.sel.0)
        };
        let (sel_me, sel_peer) = (
            if sel_me.is_empty() { me } else { sel_me },
            if sel_peer.is_empty() { peer } else { sel_peer },
        );
        let (out, in_) = (format!("{}-out", flow.name), format!("{}-in", flow.name));
        lines.push(sa_line(&out, (me, peer), flow.mode, spi_out, flow.suite));
        lines.push(sa_line(&in_, (peer, me), flow.mode, spi_in, flow.suite));
        for (dir, src, dst, sa) in [
            ("out", sel_me, sel_peer, &out),
            ("in", sel_peer, sel_me, &in_),
        ] {
            let (src, dst) = (format!("{src}/128"), format!("{dst}/128"));
            lines.push(SpArgs::ipsec(&src, &dst, dir, sa).line());
        }
    }
    lines.join("\n") + "\n"
}

/// `xipsec apply FILE` of `text` on `node`, which must succeed.
fn apply(node: &Node, text: &str, tag: &str) {
    let file = node.dir().join(format!("apply-{tag}"));
    std::fs::write(&file, text).expect("writing the apply file");
    node.ok(&["apply", file.to_str().expect("a UTF-8 path")]);
}

/// Two hosts with inner addresses routed through each other, as in the demo.
fn hosts(prefix: &str, tag: u16) -> (VethPair, Node, Node) {
    let net = VethPair::new(prefix, tag);
    for (ns, inner, peer_inner, peer) in [
        (&net.ns_a, INNER_A, INNER_B, &net.addr_b),
        (&net.ns_b, INNER_B, INNER_A, &net.addr_a),
    ] {
        let ip = |args: &[&str]| {
            let status = xipsec_testkit::netns::exec(ns, &[&["ip"], args].concat())
                .status()
                .expect("running ip");
            assert!(status.success(), "ip {args:?} in {ns}");
        };
        ip(&["addr", "add", &format!("{inner}/128"), "dev", "lo"]);
        ip(&[
            "-6",
            "route",
            "add",
            &format!("{peer_inner}/128"),
            "via",
            peer,
        ]);
    }
    let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
    let b = Node::start_tap_visible(&net.ns_b, &net.if_b);
    (net, a, b)
}

/// What tshark made of one ESP frame.
#[derive(Debug)]
struct Dissected {
    frame: u64,
    spi: u32,
    icv_good: bool,
    icv_bad: bool,
    /// The decrypted inner packet's protocols (`frame.protocols` after `esp`).
    inner: String,
    /// Inner IPv6 source addresses, if a second IPv6 header was decoded (tunnel mode).
    ipv6_src: String,
}

/// Run tshark over `pcap` with a profile directory holding only `esp_sa` (`table`), ESP
/// decryption and authentication checking on; one entry per ESP frame.
fn tshark(pcap: &Path, table: &Path, profile: &Path) -> Vec<Dissected> {
    const FIELDS: [&str; 6] = [
        "frame.number",
        "esp.spi",
        "esp.icv_good",
        "esp.icv_bad",
        "frame.protocols",
        "ipv6.src",
    ];
    capture::tshark_esp(pcap, table, profile, &FIELDS)
        .into_iter()
        .map(|f| {
            let flag = |s: &str| s == "1" || s.eq_ignore_ascii_case("true");
            let spi = f[1].trim_start_matches("0x");
            Dissected {
                frame: f[0].parse().expect("a frame number"),
                spi: u32::from_str_radix(spi, 16)
                    .or_else(|_| spi.parse())
                    .unwrap_or_else(|_| panic!("an spi in {f:?}")),
                icv_good: flag(&f[2]),
                icv_bad: flag(&f[3]),
                inner: f[4]
                    .split_once(":esp:")
                    .map(|(_, inner)| inner.to_owned())
                    .unwrap_or_default(),
                ipv6_src: f[5].clone(),
            }
        })
        .collect()
}

/// `sa export --wireshark` on `node` to a new file `name` in its directory.
fn export_table(node: &Node, name: &str) -> PathBuf {
    let file = node.dir().join(name);
    let _ = std::fs::remove_file(&file);
    node.ok(&[
        "sa",
        "export",
        "--wireshark",
        file.to_str().expect("a UTF-8 path"),
    ]);
    file
}

/// Check that tshark decrypted and authenticated every ESP frame of `frames` under `spis`;
/// `inner` is what each SPI's payload must decode as (`icmpv6` in transport mode, `ipv6` in
/// tunnel mode). The number of ESP frames checked.
fn assert_decrypted(
    frames: &Frames,
    table: &Path,
    profile: &Path,
    expect: &[(u32, &str)],
    context: &str,
) -> usize {
    let dissected = tshark(&frames.file, table, profile);
    let esp = frames.esp_count();
    assert!(esp > 0, "{context}: no ESP captured");
    assert_eq!(
        dissected.len(),
        esp,
        "{context}: tshark saw {} ESP frames, the capture holds {esp}: {dissected:?}",
        dissected.len()
    );
    for d in &dissected {
        let (_, inner) = expect
            .iter()
            .find(|(spi, _)| *spi == d.spi)
            .unwrap_or_else(|| {
                panic!(
                    "{context}: frame {} under unknown spi {:#x}",
                    d.frame, d.spi
                )
            });
        assert!(
            d.icv_good && !d.icv_bad,
            "{context}: frame {} (spi {:#x}): the ICV did not verify: {d:?}",
            d.frame,
            d.spi
        );
        assert!(
            d.inner.starts_with(inner),
            "{context}: frame {} (spi {:#x}) decrypted to {:?}, not {inner}: {d:?}",
            d.frame,
            d.spi,
            d.inner
        );
        if *inner == "ipv6" {
            assert!(
                d.ipv6_src.contains(INNER_A) || d.ipv6_src.contains(INNER_B),
                "{context}: frame {}: no inner address decoded: {d:?}",
                d.frame
            );
        }
    }
    dissected.len()
}

/// `table` with the authentication key (or, without one, the encryption key) of the SA with
/// `spi` changed in its first hex digit.
fn tamper(table: &str, spi: u32) -> String {
    let spi = format!("\"0x{spi:08x}\"");
    table
        .lines()
        .map(|line| {
            let mut fields: Vec<String> = line.split(',').map(str::to_owned).collect();
            if fields.get(3) == Some(&spi) {
                let at = if fields[7].len() > 4 { 7 } else { 5 };
                let digit = fields[at].as_bytes()[3];
                fields[at].replace_range(3..4, if digit == b'0' { "1" } else { "0" });
            }
            fields.join(",")
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// With `spis.0`'s key changed in `table`, tshark finds every frame under it bad and still
/// every frame under `spis.1` good.
fn assert_tampering_detected(
    frames: &Frames,
    table: &str,
    profile: &Path,
    spis: (u32, u32),
    context: &str,
) {
    let broken = profile.with_extension("broken");
    std::fs::write(&broken, tamper(table, spis.0)).expect("writing the tampered table");
    let dissected = tshark(&frames.file, &broken, profile);
    let under = |spi| dissected.iter().filter(move |d: &&Dissected| d.spi == spi);
    assert!(
        under(spis.0).count() > 0,
        "{context}: no frame under {:#x}",
        spis.0
    );
    assert!(
        under(spis.0).all(|d| d.icv_bad && !d.icv_good),
        "{context}: a wrong key still verified: {dissected:?}"
    );
    assert!(
        under(spis.1).all(|d| d.icv_good),
        "{context}: {dissected:?}"
    );
}

/// Ping across both flows while capturing at both ends; the two captures.
fn exchange(
    net: &VethPair,
    a: &Node,
    spis: &[u32],
    tag: &str,
    tunnel: bool,
    transport: bool,
) -> [Frames; 2] {
    let dir = a.dir().to_owned();
    let cap_a = Capture::start(
        &net.ns_a,
        &net.if_a,
        &dir.join(format!("{tag}-a.pcap")),
        spis,
    );
    let cap_b = Capture::start(
        &net.ns_b,
        &net.if_b,
        &dir.join(format!("{tag}-b.pcap")),
        spis,
    );
    if transport {
        assert!(
            traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
            "{tag}: transport ping a -> b failed"
        );
    }
    if tunnel {
        let ok = xipsec_testkit::netns::exec(
            &net.ns_a,
            &[
                "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-I", INNER_A, INNER_B,
            ],
        )
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running ping")
        .success();
        assert!(ok, "{tag}: tunnel ping a -> b (inner) failed");
    }
    let (fa, fb) = (cap_a.stop(), cap_b.stop());
    fa.assert_only_esp(&format!("{tag}: sent by a"));
    fb.assert_only_esp(&format!("{tag}: sent by b"));
    [fa, fb]
}

#[test]
fn tshark_decrypts_the_demo_flows_with_the_exported_table() {
    as_root(
        "tshark_decrypts_the_demo_flows_with_the_exported_table",
        || {
            let (net, a, b) = hosts("xwsd", 0x5d1);
            let demo = [
                Flow {
                    name: "host",
                    mode: "transport",
                    sel: ("", ""),
                    spis: (0x1001, 0x1002),
                    suite: Suite {
                        enc: "3des-cbc",
                        integ: Some("hmac-sha1"),
                    },
                },
                Flow {
                    name: "net",
                    mode: "tunnel",
                    sel: (INNER_A, INNER_B),
                    spis: (0x2001, 0x2002),
                    suite: Suite {
                        enc: "aes128-cbc",
                        integ: Some("hmac-sha2-256"),
                    },
                },
            ];
            apply(&a, &config(&net, &demo, true), "demo");
            apply(&b, &config(&net, &demo, false), "demo");
            let spis = [0x1001, 0x1002, 0x2001, 0x2002];
            let frames = exchange(&net, &a, &spis, "demo", true, true);
            let table = export_table(&a, "esp_sa");
            let mode = std::fs::metadata(&table)
                .expect("the table")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "the table's mode");
            let text = std::fs::read_to_string(&table).expect("reading the table");
            assert_eq!(text.lines().count(), 4, "{text}");
            let expect = [
                (0x1001, "icmpv6"),
                (0x1002, "icmpv6"),
                (0x2001, "ipv6"),
                (0x2002, "ipv6"),
            ];
            let profile = a.dir().join("profile");
            let mut checked = 0;
            for (f, side) in frames.iter().zip(["a", "b"]) {
                checked += assert_decrypted(
                    f,
                    &table,
                    &profile,
                    &expect,
                    &format!("demo, {side}'s capture"),
                );
            }
            println!("tshark decrypted and authenticated {checked} ESP frames of the demo's flows");

            // Negative control: one key changed in the table, and tshark finds those frames'
            // ICVs bad (so the good ones above were checked, not assumed).
            assert_tampering_detected(&frames[0], &text, &profile, (0x1001, 0x2001), "demo");

            // The file is never overwritten, and keys are root's only.
            let again = a.sandbox.run(&[
                "sa",
                "export",
                "--wireshark",
                table.to_str().expect("utf-8"),
            ]);
            let error = single_error_line(&again, "an existing file");
            assert!(error.contains("exists"), "{error}");
            assert_eq!(std::fs::read_to_string(&table).expect("the table"), text);
            drop(b);
        },
    );
}

#[test]
fn tshark_decrypts_every_suite_in_both_modes() {
    as_root("tshark_decrypts_every_suite_in_both_modes", || {
        let (net, a, b) = hosts("xwss", 0x5d2);
        let mut report = Vec::new();
        for (i, suite) in all_suites().into_iter().enumerate() {
            for (m, mode) in ["transport", "tunnel"].into_iter().enumerate() {
                let n = u32::try_from(i * 2 + m).expect("a small index");
                let spis = (0x3000 + 2 * n, 0x3001 + 2 * n);
                let flow = Flow {
                    name: "f",
                    mode,
                    sel: if mode == "tunnel" {
                        (INNER_A, INNER_B)
                    } else {
                        ("", "")
                    },
                    spis,
                    suite,
                };
                // apply replaces the previous suite's SAs and SPs in one change.
                let tag = format!("{}-{mode}", suite.name().replace('/', "-"));
                apply(&a, &config(&net, &[flow], true), &tag);
                apply(&b, &config(&net, &[flow], false), &tag);
                let frames = exchange(
                    &net,
                    &a,
                    &[spis.0, spis.1],
                    &tag,
                    mode == "tunnel",
                    mode == "transport",
                );
                let table = export_table(&a, &format!("esp_sa-{tag}"));
                let inner = if mode == "tunnel" { "ipv6" } else { "icmpv6" };
                let expect = [(spis.0, inner), (spis.1, inner)];
                let profile = a.dir().join("profile");
                let checked: usize = frames
                    .iter()
                    .map(|f| assert_decrypted(f, &table, &profile, &expect, &tag))
                    .sum();
                let text = std::fs::read_to_string(&table).expect("reading the table");
                // a's capture holds what a sent: under spis.0 only; the other SA's frames are
                // in b's capture, checked good above.
                assert_tampering_detected(&frames[0], &text, &profile, (spis.0, spis.1), &tag);
                report.push(format!("{} {mode}: {checked} frames", suite.name()));
            }
        }
        println!(
            "tshark decrypted and authenticated:\n  {}",
            report.join("\n  ")
        );
        assert_eq!(report.len(), 20);
        drop(b);
    });
}

/// Send one raw request line to `socket` as uid/gid 65534 (nobody/nogroup); the answer line.
fn as_nobody(socket: &Path, request: &str) -> String {
    let script = "import socket, sys\n\
        s = socket.socket(socket.AF_UNIX)\n\
        s.connect(sys.argv[1])\n\
        s.sendall(sys.argv[2].encode() + b'\\n')\n\
        print(s.makefile().readline(), end='')\n";
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            script,
        ])
        .arg(socket)
        .arg(request)
        .output()
        .expect("running setpriv python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("a UTF-8 answer")
}

#[test]
fn keys_are_for_root_only() {
    as_root("keys_are_for_root_only", || {
        // Members of the control group may use the socket, but never read keys.
        let sandbox = xipsec_testkit::daemon::Sandbox::new()
            .with_daemon_args(&["--control-group", "nogroup"]);
        let _daemon = sandbox.start();
        std::fs::set_permissions(sandbox.path(), std::fs::Permissions::from_mode(0o755))
            .expect("opening the sandbox directory");
        std::os::unix::fs::chown(sandbox.socket(), None, Some(65534)).expect("chgrp the socket");
        std::fs::set_permissions(sandbox.socket(), std::fs::Permissions::from_mode(0o660))
            .expect("chmod the socket");
        sandbox.ok(&[
            "sa",
            "add",
            "--sa-name",
            "s",
            "--sa-source",
            "fd00::1",
            "--sa-destination",
            "fd00::2",
            "--sa-mode",
            "transport",
            "--sa-spi",
            "0x100",
            "--encryption-algorithm",
            "null",
            "--integrity-algorithm",
            "hmac-sha1",
            "--integrity-key",
            "0x0102030405060708090a0b0c0d0e0f1011121314",
        ]);
        let redacted = as_nobody(&sandbox.socket(), r#"{"export":{"with_keys":false}}"#);
        assert!(redacted.starts_with(r#"{"configuration":"#), "{redacted}");
        assert!(!redacted.contains("0102030405"), "{redacted}");
        let refused = as_nobody(&sandbox.socket(), r#"{"export":{"with_keys":true}}"#);
        assert_eq!(
            refused.trim_end(),
            r#"{"error":{"message":"permission denied: only root (uid 0) may read keys, not uid 65534"}}"#
        );
        // The CLI says so before asking.
        let file = sandbox.path().join("esp_sa");
        let out = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(sandbox.bin())
            .arg("--socket")
            .arg(sandbox.socket())
            .args(["sa", "export", "--wireshark"])
            .arg(&file)
            .output()
            .expect("running setpriv xipsec");
        let error = single_error_line(&xipsec_testkit::cli::Run::from(out), "as nobody");
        assert_eq!(
            error,
            "error: sa export --wireshark writes keys and is for root only: run it as root"
        );
        assert!(!file.exists());
    });
}
