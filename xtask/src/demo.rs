//! `cargo xtask demo`: the main job, end to end on one machine.
//!
//! Two namespaces joined by a veth pair, an xipsec daemon in each. The source document's SA/SP
//! examples verbatim; its 3des-cbc/hmac-sha1 keys protecting the two hosts in transport mode;
//! an aes128-cbc/hmac-sha2-256 pair in tunnel mode between two inner addresses; a discard and a
//! none policy. Then ping6, 10 MB TCP transfers and UDP across the protected flows, a capture of
//! the wire (only ESP), the lists with their counters, and cleanup (also on failure).

use std::{
    process::{Command, Stdio},
    thread::sleep,
    time::Duration,
};

use anyhow::bail;

use xipsec_testkit::{
    cli::{SA_EXAMPLE, SP_EXAMPLE, SpArgs},
    netns::exec,
};

use crate::{lab::Lab, util};

fn verdict(ok: bool) -> &'static str {
    if ok { "PASSED" } else { "DROPPED" }
}

fn ping(netns: &str, from: &str, to: &str) -> bool {
    exec(
        netns,
        &[
            "ping", "-6", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", from, to,
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .is_ok_and(|s| s.success())
}

pub(crate) fn run(no_build: bool) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    if !no_build {
        crate::build::run()?;
    }
    let mut demo = Lab::new("xdm", 0xde)?;
    let (ns_a, ns_b) = (demo.net.ns_a.clone(), demo.net.ns_b.clone());
    let (if_a, if_b) = (demo.net.if_a.clone(), demo.net.if_b.clone());
    let (addr_a, addr_b) = (demo.net.addr_a.clone(), demo.net.addr_b.clone());
    for args in [
        vec!["-n", &ns_a, "addr", "add", "fd00:df::1/128", "dev", "lo"],
        vec!["-n", &ns_b, "addr", "add", "fd00:df::2/128", "dev", "lo"],
        vec![
            "-n",
            &ns_a,
            "-6",
            "route",
            "add",
            "fd00:df::2/128",
            "via",
            &addr_b,
        ],
        vec![
            "-n",
            &ns_b,
            "-6",
            "route",
            "add",
            "fd00:df::1/128",
            "via",
            &addr_a,
        ],
    ] {
        util::run(Command::new("ip").args(&args))?;
    }
    println!(
        "namespaces {ns_a} ({addr_a}, inner fd00:df::1) and {ns_b} ({addr_b}, inner fd00:df::2), veth {if_a}/{if_b}"
    );
    // ESP by the raw socket (`--esp-tx raw`), so the captures below see what each host sends:
    // AF_XDP transmission, the default, passes no packet tap.
    demo.start_daemon_with("a", &["--esp-tx", "raw"]);
    demo.start_daemon_with("b", &["--esp-tx", "raw"]);
    demo.show("a", &["status"])?;

    println!("\n== the source document's examples, verbatim (on a) ==");
    // The SA example with the source document's `esxcli network ip ipsec` prefix, which the
    // CLI accepts too.
    let esxcli = ["esxcli", "network", "ip", "ipsec"];
    demo.cli("a", &[&esxcli[..], SA_EXAMPLE].concat())?;
    demo.cli("a", SP_EXAMPLE)?;

    println!("== protection: transport (source document keys) and tunnel (aes128/sha256) ==");
    demo.protect(
        "host",
        "transport",
        ("fd00:de::1/128", "fd00:de::2/128"),
        ("0x1001", "0x1002"),
        (
            "3des-cbc",
            "0x6970763672656164796c6f676f336465736362636f757432",
        ),
        ("hmac-sha1", "0x6970763672656164796c6f67736861316f757432"),
    )?;
    demo.protect(
        "net",
        "tunnel",
        ("fd00:df::1/128", "fd00:df::2/128"),
        ("0x2001", "0x2002"),
        ("aes128-cbc", "0x000102030405060708090a0b0c0d0e0f"),
        (
            "hmac-sha2-256",
            "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        ),
    )?;
    // A higher-priority discard for one port, and a none policy for ICMPv6 echo of a third
    // address, show the other two actions.
    let block = SpArgs {
        sport: "any",
        dport: "9999",
        proto: "udp",
        action: "discard",
        sa: None,
        priority: Some("10"),
        ..SpArgs::ipsec("fd00:de::2/128", "fd00:de::1/128", "in", "block-udp-9999")
    };
    demo.cli("a", &block.args())?;
    let lan_ping = SpArgs {
        dport: "128",
        proto: "icmp6",
        action: "none",
        sa: None,
        ..SpArgs::ipsec("fd00:de::/64", "fd00:de::1/128", "in", "lan-ping")
    };
    demo.cli("a", &lan_ping.args())?;

    // A capture at each end: it sees what that host sends, but not the ESP its XDP hands
    // straight to the engine (XDP runs before packet taps).
    let mut captures = Vec::new();
    for (side, namespace, interface) in [("a", &ns_a, &if_a), ("b", &ns_b, &if_b)] {
        let wire = demo.scratch.path().join(format!("wire-{side}.pcap"));
        let child = exec(namespace, &["tcpdump", "-i", interface, "-U", "-nn", "-w"])
            .arg(&wire)
            .args(["ip6", "and", "not", "icmp6[0]", ">=", "133"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        captures.push((child, wire));
    }
    sleep(Duration::from_millis(800));

    println!("\n== traffic ==");
    println!(
        "ping6 a -> b   host, transport ESP        {}",
        verdict(ping(&ns_a, &addr_a, &addr_b))
    );
    println!(
        "ping6 a -> b   inner, tunnel ESP          {}",
        verdict(ping(&ns_a, "fd00:df::1", "fd00:df::2"))
    );
    for (label, from, src, to, port) in [
        (
            "a -> b:5001  10 MB, transport ESP ",
            &ns_a,
            None,
            addr_b.as_str(),
            "5001",
        ),
        (
            "b -> a:5002  10 MB, tunnel ESP    ",
            &ns_b,
            Some("fd00:df::2"),
            "fd00:df::1",
            "5002",
        ),
    ] {
        let (sent, got) = demo.transfer(from, src, to, port)?;
        let intact = sent == got && !sent.is_empty();
        let verdict = if intact { "INTACT" } else { "CORRUPT/LOST" };
        println!("TCP  {label}   {verdict} (sent {sent}, received {got})");
    }
    println!(
        "UDP  b -> a:9999  discard (priority 10)   {}/5 delivered",
        demo.udp(&ns_b, &addr_a, 9999)
    );
    println!(
        "UDP  b -> a:9000  transport ESP           {}/5 delivered",
        demo.udp(&ns_b, &addr_a, 9000)
    );

    sleep(Duration::from_millis(300));
    let mut seen = String::new();
    for (mut capture, wire) in captures {
        xipsec_testkit::daemon::signal(&capture, libc::SIGINT);
        let _ = capture.wait();
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&wire)
            .output()?;
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    // Packets of the demo's addresses (link-local housekeeping such as MLD reports aside).
    let between: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains(" fd00:") && !l.contains("ICMP6, neighbor"))
        .collect();
    let esp = between
        .iter()
        .filter(|l| l.contains("ESP") || l.contains("frag ("))
        .count();
    println!(
        "\n== the wire: what {if_a} and {if_b} sent, the demo's addresses, neighbour discovery aside =="
    );
    for line in between.iter().take(4) {
        println!("  {line}");
    }
    println!(
        "  ... {} packets, {esp} of them ESP, {} in clear",
        between.len(),
        between.len() - esp
    );
    for line in between
        .iter()
        .filter(|l| !l.contains("ESP") && !l.contains("frag ("))
        .take(5)
    {
        println!("  in clear: {line}");
    }

    demo.show("a", &["sa", "list"])?;
    demo.show("a", &["sp", "list"])?;
    demo.show("b", &["sa", "list"])?;
    demo.show("a", &["stats"])?;
    check_counters(&demo)
}

/// Packets and bytes of the entry named `name` in `list` (`sp` or `sa`) of host `side`.
fn counted(demo: &Lab, side: &str, list: &str, name: &str) -> anyhow::Result<(u64, u64)> {
    let json: serde_json::Value =
        serde_json::from_str(&demo.cli(side, &[list, "list", "--formatter", "json"])?)?;
    let entry = json
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == name)
        .ok_or_else(|| anyhow::anyhow!("{list} list of {side} has no {name}"))?;
    Ok((
        entry["packets"].as_u64().unwrap_or(0),
        entry["bytes"].as_u64().unwrap_or(0),
    ))
}

/// Policy and SA counters count the same unit, packets on the wire and their IPv6 bytes: the 5
/// datagrams `block-udp-9999` refused (after decryption: they came as ESP) count 5 packets and
/// their bytes, and `host-out`, whose TCP stream left as TSO
/// super-packets, counts within 1% (plus 8) of the ESP packets its SA sealed (each packet the
/// policy passes to the engine becomes one ESP packet; the few sent before the engine saw a
/// stream's first packet, or dropped by a full queue, make the difference).
fn check_counters(demo: &Lab) -> anyhow::Result<()> {
    let (packets, bytes) = counted(demo, "a", "sp", "block-udp-9999")?;
    // Each datagram is an IPv6 and a UDP header (48 bytes) and a short payload.
    if packets != 5 || bytes <= 5 * 48 || bytes > 5 * 200 {
        bail!("block-udp-9999 counted {packets} packets and {bytes} bytes for 5 short datagrams");
    }
    let (sp, _) = counted(demo, "a", "sp", "host-out")?;
    let (sa, _) = counted(demo, "a", "sa", "host-out")?;
    if sp.abs_diff(sa) > sa / 100 + 8 {
        bail!("host-out: the policy counted {sp} packets, its SA {sa}");
    }
    println!(
        "\ncounters: block-udp-9999 {packets} packets, {bytes} bytes; host-out {sp} packets, its SA {sa}"
    );
    Ok(())
}
