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
//! The SPs cover ICMPv6 and TCP only (SPs over every protocol, which IKE crosses through the
//! datapath's IKE bypass, are in `ike_rekey.rs` and `ike_flood.rs`).

use std::path::Path;
use std::process::Stdio;
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

/// Make a and b peers of each other (b as `to-a`, a as `to-b`), with `a_extra` and `b_extra`
/// appended to their `ike peer add` lines.
fn configure(net: &VethPair, (a, b): (&Node, &Node), a_extra: &str, b_extra: &str) {
    batch(b, &config(&net.addr_b, &net.addr_a, "to-a", b_extra), "b");
    batch(a, &config(&net.addr_a, &net.addr_b, "to-b", a_extra), "a");
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
            .map_or_else(|| panic!("no sa from {src}: {}", context()), |sa| sa.1)
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
    capture::tshark_esp(pcap, table, profile, &["esp.spi", "esp.icv_good"])
        .into_iter()
        .map(|f| {
            let spi = f[0].trim_start_matches("0x");
            (
                u32::from_str_radix(spi, 16).expect("an spi"),
                f[1] == "1" || f[1].eq_ignore_ascii_case("true"),
            )
        })
        .collect()
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
            let started = Instant::now();
            configure(&net, (&a, &b), &psk, &format!("{psk} --initiate never"));
            let spis = established(&a, &b, &net);
            eprintln!(
                "configured and negotiated in {:?} (both batches, IKE_SA_INIT, IKE_AUTH, install)",
                started.elapsed()
            );

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

            // Negotiated keys never reach the disk; the peer does. A change of the operator's
            // while the ike SAs exist writes the state again.
            for node in [&a, &b] {
                node.ok(&[
                    "sp",
                    "add",
                    "--sp-source",
                    "any",
                    "--sp-destination",
                    "fd00:dead::/64",
                    "--source-port",
                    "any",
                    "--destination-port",
                    "any",
                    "--flow-direction",
                    "out",
                    "--action",
                    "discard",
                    "--sp-name",
                    "unrelated",
                ]);
            }
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
                // Nor any sequence reservation or IV epoch of theirs.
                let seq = std::fs::read_to_string(node.sandbox.state_dir().join("esp-seq.json"))
                    .unwrap_or_default();
                assert!(!seq.contains("ike-to-"), "no ike sa reservation: {seq}");
                // Nor their replay state: no ceiling under a negotiated SPI.
                let replay =
                    std::fs::read_to_string(node.sandbox.state_dir().join("esp-replay.json"))
                        .unwrap_or_else(|_| "{}".into());
                let replay: serde_json::Value =
                    serde_json::from_str(&replay).expect("esp-replay.json is JSON");
                let ceilings: Vec<u64> = replay["ceilings"]
                    .as_array()
                    .map(|c| c.iter().filter_map(|e| e["spi"].as_u64()).collect())
                    .unwrap_or_default();
                for (_, spi, _, _) in ike_sas(node) {
                    assert!(
                        !ceilings.contains(&u64::from(spi)),
                        "a replay ceiling of ike sa {spi:#x} on disk: {replay}"
                    );
                }
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

/// ICMPv6 echo frames in `frames` (clear pings; ESP hides them).
fn clear_pings(frames: &Frames, spis: &[u32]) -> usize {
    capture::decode(&frames.file, spis)
        .clear_frames()
        .iter()
        .filter(|f| f.upper == 58 && f.ipv6().get(40).is_some_and(|t| matches!(t, 128 | 129)))
        .count()
}

#[test]
fn a_wrong_psk_installs_nothing_and_the_flow_stays_dropped() {
    as_root(
        "a_wrong_psk_installs_nothing_and_the_flow_stays_dropped",
        || {
            let (net, a, b) = hosts(0x1d2);
            let cap = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("psk.pcap"), &[]);
            let wrong = format!("--psk 0x{}", "ab".repeat(32));
            configure(
                &net,
                (&a, &b),
                &format!("--psk {PSK}"),
                &format!("{wrong} --initiate never"),
            );
            assert!(
                eventually(Duration::from_secs(15), || {
                    a.log().contains("AUTHENTICATION_FAILED")
                        && b.log().contains("AUTHENTICATION_FAILED")
                }),
                "AUTHENTICATION_FAILED logged on both sides\na:\n{}\nb:\n{}",
                a.log(),
                b.log()
            );
            assert!(
                a.log().contains("peer=\"to-b\"") || a.log().contains("peer=to-b"),
                "{}",
                a.log()
            );
            let before = a.stat("esp_no_sa");
            assert!(
                !traffic::ping(&net.ns_a, &net.addr_b, ("3", "1"), None),
                "no sa: the ping must not get through"
            );
            let frames = cap.stop();
            assert!(
                ike_sas(&a).is_empty() && ike_sas(&b).is_empty(),
                "no sa installed"
            );
            assert!(
                a.stat("esp_no_sa") >= before + 3,
                "the dropped pings are counted"
            );
            assert_eq!(clear_pings(&frames, &[]), 0, "no ping left in clear");
            assert_only_esp_and_ike(&frames, &[], "wrong psk");
        },
    );
}

#[test]
fn a_proposal_mismatch_is_logged_as_no_proposal_chosen() {
    as_root(
        "a_proposal_mismatch_is_logged_as_no_proposal_chosen",
        || {
            let (net, a, b) = hosts(0x1d3);
            let psk = format!("--psk {PSK}");
            configure(
                &net,
                (&a, &b),
                &format!("{psk} --ike-proposal aes128-sha256-x25519"),
                &format!("{psk} --initiate never --ike-proposal aes256-sha256-ecp256"),
            );
            assert!(
                eventually(Duration::from_secs(15), || {
                    a.log().contains("NO_PROPOSAL_CHOSEN") && b.log().contains("NO_PROPOSAL_CHOSEN")
                }),
                "NO_PROPOSAL_CHOSEN logged on both sides\na:\n{}\nb:\n{}",
                a.log(),
                b.log()
            );
            assert!(
                ike_sas(&a).is_empty() && ike_sas(&b).is_empty(),
                "no sa installed"
            );
        },
    );
}

#[test]
fn a_dead_peer_is_detected_and_its_flow_fails_closed() {
    as_root("a_dead_peer_is_detected_and_its_flow_fails_closed", || {
        let (net, a, mut b) = hosts(0x1d4);
        let psk = format!("--psk {PSK} --dpd 2");
        configure(&net, (&a, &b), &psk, &format!("{psk} --initiate never"));
        let spis = established(&a, &b, &net);
        assert!(
            traffic::ping(&net.ns_a, &net.addr_b, ("2", "2"), None),
            "ping while up"
        );
        b.kill9();
        let gone = Instant::now();
        assert!(
            eventually(Duration::from_secs(40), || ike_sas(&a).is_empty()),
            "dpd removes the dead peer's sas: {:?}\n{}",
            ike_sas(&a),
            a.log()
        );
        eprintln!("the survivor removed the sas after {:?}", gone.elapsed());
        let cap = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("dpd.pcap"), &spis);
        let before = a.stat("esp_no_sa");
        assert!(!traffic::ping(&net.ns_a, &net.addr_b, ("3", "1"), None));
        let frames = cap.stop();
        assert!(a.stat("esp_no_sa") >= before + 3, "dropped and counted");
        assert_eq!(
            clear_pings(&frames, &spis),
            0,
            "fail closed: no ping in clear"
        );
        assert_eq!(frames.esp_count(), 0, "no ESP under removed sas");
    });
}

#[test]
fn a_restarted_daemon_negotiates_again_and_nothing_leaves_in_clear() {
    as_root(
        "a_restarted_daemon_negotiates_again_and_nothing_leaves_in_clear",
        || {
            let (net, mut a, b) = hosts(0x1d5);
            let psk = format!("--psk {PSK}");
            configure(&net, (&a, &b), &psk, &format!("{psk} --initiate never"));
            let first = established(&a, &b, &net);
            let cap = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("restart.pcap"), &[]);
            // Pings all through the restart: before, while a is down, while it negotiates again.
            let pinger = xipsec_testkit::netns::exec(
                &net.ns_a,
                &[
                    "ping",
                    "-6",
                    "-c",
                    "60",
                    "-i",
                    "0.2",
                    "-W",
                    "1",
                    &net.addr_b,
                ],
            )
            .stdout(Stdio::null())
            .spawn()
            .expect("starting ping");
            std::thread::sleep(Duration::from_secs(2));
            a.stop();
            std::thread::sleep(Duration::from_secs(2));
            a.spawn();
            let again = wait_sas(&a, 2, Duration::from_secs(20));
            assert_eq!(
                again.len(),
                2,
                "a negotiated again after its restart:\n{}",
                a.log()
            );
            let spis: Vec<u32> = again
                .iter()
                .map(|sa| sa.1)
                .chain(first.iter().copied())
                .collect();
            assert!(
                again.iter().all(|sa| !first.contains(&sa.1)),
                "fresh spis after the restart: {first:?} then {again:?}"
            );
            let _ = pinger.wait_with_output();
            assert!(
                traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
                "ping through the new sas:\na:\n{}\nb:\n{}",
                a.log(),
                b.log()
            );
            let frames = cap.stop();
            assert_eq!(
                clear_pings(&frames, &spis),
                0,
                "no ping in clear across the restart"
            );
            assert_only_esp_and_ike(&frames, &spis, "across the restart");
            let state = std::fs::read_to_string(a.sandbox.state_file()).expect("state.json");
            assert!(!state.contains("ike-to-b"), "{state}");
        },
    );
}

#[test]
fn bad_ike_input_is_refused_and_changes_nothing() {
    use xipsec_testkit::daemon::Sandbox;
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    let add = |extra: &[&str]| {
        let mut args = vec![
            "ike",
            "peer",
            "add",
            "--peer-name",
            "p",
            "--local",
            "fd00:1d6::1",
            "--remote",
            "fd00:1d6::2",
            "--auth",
            "psk",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args)
    };
    let before = std::fs::read(sandbox.state_file()).ok();
    for (extra, expect) in [
        (
            &["--psk", "short"][..],
            "--psk: psk: 5 bytes is too short; at least 16 bytes",
        ),
        (
            &["--psk", PSK, "--ike-proposal", "aes128-md5-x25519"][..],
            "--ike-proposal: ",
        ),
        (
            &["--psk", PSK, "--esp-proposal", "aes999"][..],
            "--esp-proposal: ",
        ),
        (
            &["--psk", PSK, "--lifetime", "5"][..],
            "--lifetime: '5' is not valid",
        ),
        (
            &["--psk", PSK, "--initiate", "sometimes"][..],
            "--initiate: 'sometimes' is not valid",
        ),
        (
            &["--psk", "0xabc"][..],
            "--psk: a 0x key needs an even number of hex digits",
        ),
        (&[][..], "--psk: required"),
    ] {
        let run = add(extra);
        let error = xipsec_testkit::cli::single_error_line(&run, "a bad ike peer add");
        assert!(
            error.starts_with(&format!("error: {expect}")),
            "{extra:?}: {error}"
        );
        assert!(!error.contains(PSK), "the psk is never echoed");
        assert_eq!(
            std::fs::read(sandbox.state_file()).ok(),
            before,
            "{extra:?} changed the state"
        );
    }
    let peers = sandbox.ok(&["ike", "peer", "list", "--formatter", "json"]);
    assert_eq!(peers.trim(), "[]");
    // A valid peer, then the rules of SPs that name it.
    assert!(add(&["--psk", PSK]).status.success());
    let sp = |extra: &[&str]| {
        let mut args = vec![
            "sp",
            "add",
            "--sp-source",
            "fd00:1d6::1/128",
            "--sp-destination",
            "fd00:1d6::2/128",
            "--source-port",
            "any",
            "--destination-port",
            "any",
            "--flow-direction",
            "out",
            "--sp-name",
            "s",
        ];
        args.extend_from_slice(extra);
        sandbox.run(&args)
    };
    for (extra, expect) in [
        (
            &["--ike-peer", "nope"][..],
            "--ike-peer: no peer named 'nope'",
        ),
        (
            &["--ike-peer", "p", "--sa-name", "x"][..],
            "--ike-peer: cannot be combined with --sa-name",
        ),
        (
            &["--ike-peer", "p", "--action", "discard"][..],
            "--ike-peer: only with --action ipsec",
        ),
    ] {
        let error = xipsec_testkit::cli::single_error_line(&sp(extra), "a bad sp add");
        assert!(
            error.starts_with(&format!("error: {expect}")),
            "{extra:?}: {error}"
        );
    }
    assert!(sp(&["--ike-peer", "p"]).status.success());
    let error = xipsec_testkit::cli::single_error_line(
        &sandbox.run(&["ike", "peer", "remove", "--peer-name", "p"]),
        "removing a peer in use",
    );
    assert_eq!(
        error,
        "error: --peer-name: peer 'p' is used by sp 's'; remove those policies first"
    );
    let listed = sandbox.ok(&["ike", "peer", "list", "--formatter", "json"]);
    assert!(
        listed.contains("\"in_use_by\": [\n      \"s\"") || listed.contains("\"s\""),
        "{listed}"
    );
    assert!(
        !listed.contains("6b6579"),
        "no psk in the listing: {listed}"
    );
    let exported = sandbox.ok(&["export"]);
    assert!(
        exported.contains("ike peer add --peer-name p"),
        "{exported}"
    );
    assert!(exported.contains("--psk REDACTED"), "{exported}");
    assert!(exported.contains("--ike-peer p"), "{exported}");
}

#[test]
fn an_on_demand_peer_negotiates_when_a_flow_finds_no_sa() {
    as_root(
        "an_on_demand_peer_negotiates_when_a_flow_finds_no_sa",
        || {
            let (net, a, b) = hosts(0x1d7);
            let psk = format!("--psk {PSK}");
            configure(
                &net,
                (&a, &b),
                &format!("{psk} --initiate on-demand"),
                &format!("{psk} --initiate never"),
            );
            std::thread::sleep(Duration::from_secs(3));
            assert!(
                ike_sas(&a).is_empty(),
                "on-demand: nothing negotiated without traffic"
            );
            let cap = Capture::start(&net.ns_a, &net.if_a, &a.dir().join("demand.pcap"), &[]);
            // The first pings find no SA: dropped (counted), and they start the negotiation.
            let _ = traffic::ping(&net.ns_a, &net.addr_b, ("4", "1"), None);
            let spis = established(&a, &b, &net);
            assert!(
                a.stat("esp_no_sa") > 0,
                "the first pings were dropped and counted"
            );
            assert!(a.log().contains("initiating on demand"), "{}", a.log());
            assert!(
                traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
                "then pings pass"
            );
            let frames = cap.stop();
            assert_eq!(
                clear_pings(&frames, &spis),
                0,
                "no ping in clear before the sa existed"
            );
            assert_only_esp_and_ike(&frames, &spis, "on demand");
        },
    );
}
