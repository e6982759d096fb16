//! `cargo xtask demo`: the main job, end to end on one machine.
//!
//! Two namespaces joined by a veth pair, an xipsec daemon in each. The source document's SA/SP
//! examples verbatim; its 3des-cbc/hmac-sha1 keys and SPI 0x1000 protecting the two hosts in
//! transport mode; an aes128-cbc/hmac-sha2-256 pair in tunnel mode between two inner networks;
//! a discard and a none policy. Then ping6, a 10 MB TCP transfer and UDP across the protected
//! flows, a capture of the wire (only ESP), the lists with their counters, and cleanup (also on
//! failure).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util;

const NS_A: &str = "xdemoa";
const NS_B: &str = "xdemob";
const IF_A: &str = "xdemova";
const IF_B: &str = "xdemovb";
const ADDR_A: &str = "fd00:de::1";
const ADDR_B: &str = "fd00:de::2";
const RUN_DIR: &str = "/tmp/xipsec-demo";

struct Demo {
    xipsec: PathBuf,
    traffic: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        for mut d in self.daemons.drain(..) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        for side in ["a", "b"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(format!("{RUN_DIR}/{side}/bpf"))
                .output();
        }
        println!("\ncleaned up: namespaces {NS_A} and {NS_B} deleted, daemons stopped");
    }
}

fn ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

fn quiet(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Demo {
    fn cli(&self, side: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.xipsec)
            .arg("--socket")
            .arg(format!("{RUN_DIR}/{side}/control.sock"))
            .args(args)
            .output()
            .context("running xipsec")?;
        if !out.status.success() {
            bail!(
                "xipsec {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn show(&self, side: &str, args: &[&str]) -> anyhow::Result<()> {
        println!("\n[{side}]$ xipsec {}", args.join(" "));
        print!("{}", self.cli(side, args)?);
        Ok(())
    }

    fn start_daemon(&mut self, side: &str, netns: &str, interface: &str) -> anyhow::Result<()> {
        let dir = format!("{RUN_DIR}/{side}");
        std::fs::create_dir_all(format!("{dir}/bpf"))?;
        // Pins live on a bpffs of this mount namespace, so the programs stay attached (fail
        // closed) even if a daemon dies, as they would under /sys/fs/bpf on a real host.
        util::run(Command::new("mount").args(["-t", "bpf", "bpf", &format!("{dir}/bpf")]))?;
        let log = std::fs::File::create(format!("{dir}/daemon.log"))?;
        self.daemons.push(
            ns(netns, &[])
                .arg(&self.xipsec)
                .args(["daemon", "--interface", interface])
                .args(["--state-dir", &format!("{dir}/state")])
                .args(["--socket", &format!("{dir}/control.sock")])
                .args(["--pin-dir", &format!("{dir}/bpf")])
                .stderr(log)
                .spawn()
                .context("starting a daemon")?,
        );
        let start = Instant::now();
        while self.cli(side, &["status"]).is_err() {
            if start.elapsed() > Duration::from_secs(20) {
                bail!(
                    "daemon {side} did not come up: {}",
                    std::fs::read_to_string(format!("{dir}/daemon.log")).unwrap_or_default()
                );
            }
            sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// A mirrored SA pair and SP pair on both daemons: `out_spi` protects a -> b.
    #[allow(clippy::too_many_arguments)]
    fn protect(
        &self,
        name: &str,
        mode: &str,
        (sel_a, sel_b): (&str, &str),
        (spi_ab, spi_ba): (&str, &str),
        enc: (&str, &str),
        integ: (&str, &str),
    ) -> anyhow::Result<()> {
        for (side, me, peer, sel_me, sel_peer, out_spi, in_spi) in [
            ("a", ADDR_A, ADDR_B, sel_a, sel_b, spi_ab, spi_ba),
            ("b", ADDR_B, ADDR_A, sel_b, sel_a, spi_ba, spi_ab),
        ] {
            for (dir, src, dst, spi) in [("out", me, peer, out_spi), ("in", peer, me, in_spi)] {
                self.cli(
                    side,
                    &[
                        "sa",
                        "add",
                        "-s",
                        src,
                        "-d",
                        dst,
                        "-m",
                        mode,
                        "-p",
                        spi,
                        "-e",
                        enc.0,
                        "-k",
                        enc.1,
                        "-i",
                        integ.0,
                        "-K",
                        integ.1,
                        "-n",
                        &format!("{name}-{dir}"),
                    ],
                )?;
            }
            for (dir, src, dst) in [("out", sel_me, sel_peer), ("in", sel_peer, sel_me)] {
                self.cli(
                    side,
                    &[
                        "sp",
                        "add",
                        "--sp-source",
                        src,
                        "--sp-destination",
                        dst,
                        "--source-port",
                        "any",
                        "--destination-port",
                        "any",
                        "--upper-layer-protocol",
                        "any",
                        "--flow-direction",
                        dir,
                        "--action",
                        "ipsec",
                        "--sa-name",
                        &format!("{name}-{dir}"),
                        "--sp-name",
                        &format!("{name}-{dir}"),
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn udp(&self, from: &str, to: &str, port: &str) -> anyhow::Result<usize> {
        let to_ns = if from == NS_A { NS_B } else { NS_A };
        let recv = ns(to_ns, &["python3"])
            .arg(&self.traffic)
            .args(["udp-recv", to, port, "1.2"])
            .stdout(Stdio::piped())
            .spawn()?;
        sleep(Duration::from_millis(300));
        ns(from, &["python3"])
            .arg(&self.traffic)
            .args(["udp-send", to, port, "5", "demo"])
            .status()?;
        let out = recv.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0))
    }

    /// 10 MB from `from` to `to`: the SHA-256 sent and the SHA-256 received.
    fn transfer(&self, from: &str, to: &str, port: &str) -> anyhow::Result<(String, String)> {
        let to_ns = if from == NS_A { NS_B } else { NS_A };
        let sink = ns(to_ns, &["python3"])
            .arg(&self.traffic)
            .args(["tcp-sink", to, port, "30"])
            .stdout(Stdio::piped())
            .spawn()?;
        sleep(Duration::from_millis(500));
        let sent = ns(from, &["python3"])
            .arg(&self.traffic)
            .args(["tcp-source", to, port, "10"])
            .output()?;
        let got = sink.wait_with_output()?;
        let last = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        };
        Ok((last(&sent.stdout), last(&got.stdout)))
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASSED" } else { "DROPPED" }
}

fn ping(netns: &str, from: &str, to: &str) -> bool {
    quiet(&mut ns(
        netns,
        &[
            "ping", "-6", "-q", "-c", "3", "-i", "0.2", "-W", "2", "-I", from, to,
        ],
    ))
}

pub fn run() -> anyhow::Result<()> {
    if !util::is_root() {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    crate::build::run()?;
    let root = util::root();
    let mut demo = Demo {
        xipsec: root.join("target/release/xipsec"),
        traffic: root.join("tests/fixtures/traffic.py"),
        daemons: Vec::new(),
    };
    for n in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
    }
    for side in ["a", "b"] {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(format!("{RUN_DIR}/{side}/bpf"))
            .output();
    }
    let _ = std::fs::remove_dir_all(RUN_DIR);
    std::fs::create_dir_all(RUN_DIR)?;
    for args in [
        vec!["netns", "add", NS_A],
        vec!["netns", "add", NS_B],
        vec![
            "link", "add", IF_A, "netns", NS_A, "type", "veth", "peer", "name", IF_B, "netns", NS_B,
        ],
        vec![
            "-n",
            NS_A,
            "addr",
            "add",
            "fd00:de::1/64",
            "dev",
            IF_A,
            "nodad",
        ],
        vec![
            "-n",
            NS_B,
            "addr",
            "add",
            "fd00:de::2/64",
            "dev",
            IF_B,
            "nodad",
        ],
        vec!["-n", NS_A, "addr", "add", "fd00:df::1/128", "dev", "lo"],
        vec!["-n", NS_B, "addr", "add", "fd00:df::2/128", "dev", "lo"],
        vec!["-n", NS_A, "link", "set", IF_A, "up"],
        vec!["-n", NS_B, "link", "set", IF_B, "up"],
        vec!["-n", NS_A, "link", "set", "lo", "up"],
        vec!["-n", NS_B, "link", "set", "lo", "up"],
        vec![
            "-n",
            NS_A,
            "-6",
            "route",
            "add",
            "fd00:df::2/128",
            "via",
            ADDR_B,
        ],
        vec![
            "-n",
            NS_B,
            "-6",
            "route",
            "add",
            "fd00:df::1/128",
            "via",
            ADDR_A,
        ],
    ] {
        util::run(Command::new("ip").args(&args))?;
    }
    println!(
        "namespaces {NS_A} ({ADDR_A}, inner fd00:df::1) and {NS_B} ({ADDR_B}, inner fd00:df::2), veth {IF_A}/{IF_B}"
    );
    demo.start_daemon("a", NS_A, IF_A)?;
    demo.start_daemon("b", NS_B, IF_B)?;
    demo.show("a", &["status"])?;

    println!("\n== the source document's examples, verbatim (on a) ==");
    demo.cli(
        "a",
        &[
            "esxcli",
            "network",
            "ip",
            "ipsec",
            "sa",
            "add",
            "--sa-source",
            "3ffe:501:ffff:0::a",
            "--sa-destination",
            "3ffe:501:ffff:0001:0000:0000:0000:0001",
            "--sa-mode",
            "transport",
            "--sa-spi",
            "0x1000",
            "--encryption-algorithm",
            "3des-cbc",
            "--encryption-key",
            "0x6970763672656164796c6f676f336465736362636f757432",
            "--integrity-algorithm",
            "hmac-sha1",
            "--integrity-key",
            "0x6970763672656164796c6f67736861316f757432",
            "--sa-name",
            "sa1",
        ],
    )?;
    demo.cli(
        "a",
        &[
            "sp",
            "add",
            "--sp-source=2001:db8:1::/64",
            "--sp-destination=2002:db8:1::/64",
            "--source-port=23",
            "--destination-port=25",
            "--upper-layer-protocol=tcp",
            "--flow-direction=out",
            "--action=ipsec",
            "--sp-mode=transport",
            "--sa-name=sa1",
            "--sp-name=sp1",
        ],
    )?;

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
    demo.cli(
        "a",
        &[
            "sp",
            "add",
            "--sp-source",
            "fd00:de::2/128",
            "--sp-destination",
            "fd00:de::1/128",
            "--source-port",
            "any",
            "--destination-port",
            "9999",
            "--upper-layer-protocol",
            "udp",
            "--flow-direction",
            "in",
            "--action",
            "discard",
            "--priority",
            "10",
            "--sp-name",
            "block-udp-9999",
        ],
    )?;
    demo.cli(
        "a",
        &[
            "sp",
            "add",
            "--sp-source",
            "fd00:de::/64",
            "--sp-destination",
            "fd00:de::1/128",
            "--source-port",
            "any",
            "--destination-port",
            "128",
            "--upper-layer-protocol",
            "icmp6",
            "--flow-direction",
            "in",
            "--action",
            "none",
            "--sp-name",
            "lan-ping",
        ],
    )?;

    let wire = format!("{RUN_DIR}/wire.pcap");
    let mut capture = ns(
        NS_B,
        &[
            "tcpdump", "-i", IF_B, "-U", "-nn", "-w", &wire, "ip6", "and", "not", "icmp6[0]", ">=",
            "133",
        ],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()?;
    sleep(Duration::from_millis(800));

    println!("\n== traffic ==");
    println!(
        "ping6 a -> b   host, transport ESP        {}",
        verdict(ping(NS_A, ADDR_A, ADDR_B))
    );
    println!(
        "ping6 a -> b   inner, tunnel ESP          {}",
        verdict(ping(NS_A, "fd00:df::1", "fd00:df::2"))
    );
    let (sent, got) = demo.transfer(NS_A, ADDR_B, "5001")?;
    println!(
        "TCP  a -> b:5001  10 MB, transport ESP    {} (sent {sent}, received {got})",
        if sent == got && !sent.is_empty() {
            "INTACT"
        } else {
            "CORRUPT/LOST"
        }
    );
    let (sent, got) = demo.transfer(NS_B, "fd00:df::1", "5002")?;
    println!(
        "TCP  b -> a:5002  10 MB, tunnel ESP       {} (sent {sent}, received {got})",
        if sent == got && !sent.is_empty() {
            "INTACT"
        } else {
            "CORRUPT/LOST"
        }
    );
    println!(
        "UDP  b -> a:9999  discard (priority 10)   {}/5 delivered",
        demo.udp(NS_B, ADDR_A, "9999")?
    );
    println!(
        "UDP  b -> a:9000  transport ESP           {}/5 delivered",
        demo.udp(NS_B, ADDR_A, "9000")?
    );

    sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(capture.id() as i32, libc::SIGINT) };
    let _ = capture.wait();
    let seen = Command::new("tcpdump")
        .args(["-nn", "-r", &wire])
        .output()?;
    let seen = String::from_utf8_lossy(&seen.stdout);
    // Packets between the two hosts (link-local housekeeping such as MLD reports aside).
    let between: Vec<&str> = seen
        .lines()
        .filter(|l| l.contains("fd00:de::1 > fd00:de::2") || l.contains("fd00:de::2 > fd00:de::1"))
        .collect();
    let esp = between
        .iter()
        .filter(|l| l.contains("ESP") || l.contains("frag ("))
        .count();
    println!(
        "\n== the wire: capture on {IF_B} of packets between the hosts, neighbour discovery aside =="
    );
    for line in between.iter().take(4) {
        println!("  {line}");
    }
    println!(
        "  ... {} packets, {esp} of them ESP, {} in clear",
        between.len(),
        between.len() - esp
    );

    demo.show("a", &["sa", "list"])?;
    demo.show("a", &["sp", "list"])?;
    demo.show("b", &["sa", "list"])?;
    demo.show("a", &["stats"])?;
    Ok(())
}
