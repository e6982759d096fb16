//! IKEv2 in the daemon: two xipsec hosts configured with `ike peer add` and `sp add --ike-peer`
//! negotiate their ESP SAs with each other, and the datapath carries them like manual ones.
//!
//! - Transport mode (what strongSwan's libipsec cannot do): ping and a TCP transfer with
//!   matching checksums through the negotiated SAs; the captures hold only ESP and IKE (0
//!   clear frames of the protected flows); `sa list` shows the two `ike` SAs on each host with
//!   mirrored SPIs; tshark decrypts every ESP frame, ICV good, with the keys `sa export
//!   --wireshark` wrote; state.json holds the peer and none of the negotiated keys; `sa remove`
//!   of an `ike` SA is refused.
//! - Negative: a wrong PSK (no SA, AUTHENTICATION_FAILED logged, the flow stays dropped and
//!   counted); a proposal mismatch (NO_PROPOSAL_CHOSEN logged); the peer's daemon killed (with
//!   `--dpd 2` the survivor removes the SAs and the flow fails closed); a restart of one daemon
//!   (re-established, no clear frame in between); bad `ike peer add` input changes nothing.
//!
//! The SPs cover ICMPv6 and TCP only: IKE (UDP 500) must not be subject to them, and the IKE
//! bypass of the datapath is another helper's work (see `daemon::ike::bypass_pairs`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use xipsec_testkit::{
    as_root,
    capture::{self, Capture, Frame, Frames},
    daemon::Node,
    netns::VethPair,
    traffic::{self, py},
};

const PSK: &str = "0x6b6579206f662074686520696b65642074657374732c2033322062797465732e";
const TCP_PORT: &str = "9611";

/// The batch file that makes `me` a peer of `them`: the peer and four SPs (ICMPv6 and TCP,
/// out and in) naming it.
fn config(me: &str, them: &str, peer: &str, extra: &str) -> String {
    let mut lines = vec![format!(
        "ike peer add --peer-name {peer} --local {me} --remote {them} --auth psk {extra}"
    )];
    for proto in ["icmp6", "tcp"] {
        for (dir, src, dst) in [("out", me, them), ("in", them, me)] {
            lines.push(format!(
                "sp add --sp-source {src}/128 --sp-destination {dst}/128 --source-port any \
                 --destination-port any --upper-layer-protocol {proto} --flow-direction {dir} \
                 --action ipsec --sp-mode transport --ike-peer {peer} --sp-name {proto}-{dir}"
            ));
        }
    }
    lines.join("\n") + "\n"
}

fn batch(node: &Node, text: &str, tag: &str) {
    let file = node.dir().join(format!("batch-{tag}"));
    std::fs::write(&file, text).expect("writing the batch file");
    node.ok(&["batch", file.to_str().expect("a UTF-8 path")]);
}

/// The `ike` SAs `node` lists: (name, spi, source, destination).
fn ike_sas(node: &Node) -> Vec<(String, u32, String, String)> {
    let out = node.ok(&["sa", "list", "--formatter", "json"]);
    let list: serde_json::Value = serde_json::from_str(&out).expect("a JSON list");
    list.as_array()
        .expect("an array")
        .iter()
        .filter(|sa| sa["owner"] == "ike")
        .map(|sa| {
            let spi = sa["spi"].as_str().expect("an spi");
            (
                sa["name"].as_str().expect("a name").to_owned(),
                u32::from_str_radix(spi.trim_start_matches("0x"), 16).expect("a hex spi"),
                sa["source"].as_str().unwrap_or_default().to_owned(),
                sa["destination"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Wait until `node` has exactly `count` `ike` SAs (or `timeout` passes); what it has then.
fn wait_sas(node: &Node, count: usize, timeout: Duration) -> Vec<(String, u32, String, String)> {
    let start = Instant::now();
    loop {
        let sas = ike_sas(node);
        if sas.len() == count || start.elapsed() > timeout {
            return sas;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Both hosts' (inbound SPI, outbound SPI) once each has one CHILD_SA; they must mirror.
fn established(a: &Node, b: &Node, net: &VethPair) -> Vec<u32> {
    let (sas_a, sas_b) = (
        wait_sas(a, 2, Duration::from_secs(20)),
        wait_sas(b, 2, Duration::from_secs(20)),
    );
    let context = || {
        format!(
            "a: {sas_a:?}\nb: {sas_b:?}\na log:\n{}\nb log:\n{}",
            a.log(),
            b.log()
        )
    };
    assert_eq!((sas_a.len(), sas_b.len()), (2, 2), "{}", context());
    let spi = |sas: &[(String, u32, String, String)], src: &str| {
        sas.iter()
            .find(|sa| sa.2 == src)
            .map(|sa| sa.1)
            .unwrap_or_else(|| panic!("no sa from {src}: {}", context()))
    };
    let (a_out, a_in) = (spi(&sas_a, &net.addr_a), spi(&sas_a, &net.addr_b));
    let (b_out, b_in) = (spi(&sas_b, &net.addr_b), spi(&sas_b, &net.addr_a));
    assert_eq!((a_out, a_in), (b_in, b_out), "mirrored spis: {}", context());
    for (name, spi, _, _) in sas_a.iter().chain(&sas_b) {
        assert!(
            name.starts_with("ike-") && name.ends_with(&format!("{spi:08x}")),
            "generated name {name} for spi {spi:#x}"
        );
    }
    vec![a_out, a_in]
}

/// Two hosts with xipsec attached, ESP sent by the raw socket so each side's capture sees it.
fn hosts(tag: u16) -> (VethPair, Node, Node) {
    let net = VethPair::new("xikd", tag);
    let a = Node::start_tap_visible(&net.ns_a, &net.if_a);
    let b = Node::start_tap_visible(&net.ns_b, &net.if_b);
    (net, a, b)
}

/// IKE between the two hosts: UDP to or from port 500 or 4500.
fn is_ike(frame: &Frame) -> bool {
    let ip = frame.ipv6();
    frame.upper == 17
        && ip.len() >= 44
        && [&ip[40..42], &ip[42..44]]
            .iter()
            .any(|port| matches!(u16::from_be_bytes([port[0], port[1]]), 500 | 4500))
}

/// Every clear frame of `frames` (classified with `spis`) is IKE; how many IKE frames there
/// were.
fn assert_only_esp_and_ike(frames: &Frames, spis: &[u32], context: &str) -> usize {
    let frames = capture::decode(&frames.file, spis);
    let clear = frames.clear_frames();
    let not_ike: Vec<&Frame> = clear.iter().copied().filter(|f| !is_ike(f)).collect();
    assert!(
        not_ike.is_empty(),
        "{context}: {} clear frames that are not IKE:\n{}",
        not_ike.len(),
        capture::describe(&not_ike)
    );
    clear.len()
}

/// 2 MB from a to b over TCP; the (sent, received) `bytes sha256` lines.
fn tcp_transfer(net: &VethPair) -> (String, String) {
    let sink = py(&net.ns_b, &["tcp-sink", &net.addr_b, TCP_PORT, "20"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the sink");
    std::thread::sleep(Duration::from_millis(500));
    let source = py(&net.ns_a, &["tcp-source", &net.addr_b, TCP_PORT, "2"])
        .output()
        .expect("running the source");
    let sent = String::from_utf8_lossy(&source.stdout).trim().to_owned();
    let received = String::from_utf8_lossy(&sink.wait_with_output().expect("the sink").stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_owned();
    (sent, received)
}

/// tshark over `pcap` with only `table` as its ESP SA table: (spi, icv good) per ESP frame.
fn tshark(pcap: &Path, table: &Path, profile: &Path) -> Vec<(u32, bool)> {
    let _ = std::fs::remove_dir_all(profile);
    std::fs::create_dir_all(profile).expect("creating the profile directory");
    std::fs::copy(table, profile.join("esp_sa")).expect("copying the esp_sa table");
    let out = Command::new("tshark")
        .env("WIRESHARK_CONFIG_DIR", profile)
        .env("HOME", profile)
        .args(["-n", "-r"])
        .arg(pcap)
        .args([
            "-o",
            "esp.enable_encryption_decode:TRUE",
            "-o",
            "esp.enable_authentication_check:TRUE",
            "-Y",
            "esp",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-e",
            "esp.spi",
            "-e",
            "esp.icv_good",
        ])
        .output()
        .expect("running tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let (spi, good) = line.split_once('|').expect("two fields");
            let spi = spi.trim_start_matches("0x");
            (
                u32::from_str_radix(spi, 16).expect("an spi"),
                good == "1" || good.eq_ignore_ascii_case("true"),
            )
        })
        .collect()
}

fn count_in_log(node: &Node, needle: &str) -> usize {
    node.log().matches(needle).count()
}

/// Poll `what` until it holds or `timeout` passes.
fn eventually(timeout: Duration, mut what: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    what()
}

#[test]
fn negotiated_transport_sas_carry_ping_and_tcp_and_tshark_decrypts_them() {
    as_root(
        "negotiated_transport_sas_carry_ping_and_tcp_and_tshark_decrypts_them",
        || {
            let (net, a, b) = hosts(0x1d1);
            let dir = a.dir().to_owned();
            let cap_a = Capture::start(&net.ns_a, &net.if_a, &dir.join("ike-a.pcap"), &[]);
            let cap_b = Capture::start(&net.ns_b, &net.if_b, &dir.join("ike-b.pcap"), &[]);
            let psk = format!("--psk {PSK}");
            batch(
                &b,
                &config(
                    &net.addr_b,
                    &net.addr_a,
                    "to-a",
                    &format!("{psk} --initiate never"),
                ),
                "b",
            );
            batch(&a, &config(&net.addr_a, &net.addr_b, "to-b", &psk), "a");
            let spis = established(&a, &b, &net);

            assert!(
                traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
                "ping through the negotiated sas"
            );
            let (sent, received) = tcp_transfer(&net);
            assert!(sent.starts_with("2000000 "), "source: {sent}");
            assert_eq!(
                received, sent,
                "2 MB over negotiated ESP must arrive intact"
            );
            let (fa, fb) = (cap_a.stop(), cap_b.stop());
            let ike_frames = assert_only_esp_and_ike(&fa, &spis, "sent by a")
                + assert_only_esp_and_ike(&fb, &spis, "sent by b");
            assert!(
                ike_frames >= 4,
                "the IKE exchanges were captured: {ike_frames}"
            );

            // tshark decrypts every ESP frame with the exported (negotiated) keys.
            let table = a.dir().join("esp_sa");
            a.ok(&[
                "sa",
                "export",
                "--wireshark",
                table.to_str().expect("a UTF-8 path"),
            ]);
            let text = std::fs::read_to_string(&table).expect("reading the table");
            assert_eq!(text.lines().count(), 2, "both ike sas exported: {text}");
            let mut checked = 0;
            for (frames, side) in [(&fa, "a"), (&fb, "b")] {
                let dissected = tshark(
                    &frames.file,
                    &table,
                    &a.dir().join(format!("profile-{side}")),
                );
                let esp = capture::decode(&frames.file, &spis).esp_count();
                assert!(esp > 0, "ESP sent by {side}");
                assert_eq!(
                    dissected.len(),
                    esp,
                    "tshark saw every ESP frame sent by {side}"
                );
                assert!(
                    dissected
                        .iter()
                        .all(|(spi, good)| *good && spis.contains(spi)),
                    "every frame sent by {side} verifies: {dissected:?}"
                );
                checked += dissected.len();
            }
            assert!(checked > 100, "{checked} ESP frames checked");

            // Negotiated keys never reach the disk; the peer does.
            for node in [&a, &b] {
                let state =
                    std::fs::read_to_string(node.sandbox.state_file()).expect("reading state.json");
                assert!(
                    state.contains("\"peers\""),
                    "the peer is persisted: {state}"
                );
                assert!(
                    !state.contains("ike-to-"),
                    "no ike sa in state.json: {state}"
                );
                for line in text.lines() {
                    for field in line.split(',').filter(|f| f.len() > 20) {
                        let key = field.trim_matches('"').trim_start_matches("0x");
                        assert!(!state.contains(key), "a negotiated key is in state.json");
                    }
                }
            }

            // An SA IKE negotiated is not the operator's to remove.
            let name = &ike_sas(&a)[0].0;
            let out = a.cli(&["sa", "remove", "--sa-name", name]);
            assert!(!out.status.success());
            let error = String::from_utf8_lossy(&out.stderr);
            assert!(
                error.contains("negotiated by ike with peer 'to-b'"),
                "{error}"
            );
            assert_eq!(ike_sas(&a).len(), 2, "nothing removed");
            let listed = a.ok(&["ike", "sa", "list", "--formatter", "json"]);
            assert!(listed.contains("\"established\""), "{listed}");
        },
    );
}
