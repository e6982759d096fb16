//! `cargo xtask demo`: the main job, end to end on one machine.
//!
//! Two namespaces joined by a veth pair; a daemon on side a; the source document's SA/SP
//! examples verbatim, plus one policy of each action on the demo addresses; traffic from both
//! sides; what passed, what was dropped, and the per-policy counters; then cleanup (also on
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
    daemon: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut d) = self.daemon.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        for ns in [NS_A, NS_B] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
        println!("cleaned up: namespaces {NS_A} and {NS_B} deleted, daemon stopped");
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
    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.xipsec)
            .arg("--socket")
            .arg(format!("{RUN_DIR}/control.sock"))
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

    fn show(&self, args: &[&str]) -> anyhow::Result<()> {
        println!("\n$ xipsec {}", args.join(" "));
        print!("{}", self.cli(args)?);
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

    fn tcp(&self, from: &str, to: &str, port: &str) -> anyhow::Result<bool> {
        let to_ns = if from == NS_A { NS_B } else { NS_A };
        let mut server = ns(to_ns, &["python3"])
            .arg(&self.traffic)
            .args(["tcp-serve", to, port, "4"])
            .stdout(Stdio::null())
            .spawn()?;
        sleep(Duration::from_millis(400));
        let mut client = ns(from, &["python3"]);
        client
            .arg(&self.traffic)
            .args(["tcp-check", to, port, "demo"]);
        let ok = quiet(&mut client);
        let _ = server.kill();
        let _ = server.wait();
        Ok(ok)
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASSED" } else { "DROPPED" }
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
        daemon: None,
    };
    for n in [NS_A, NS_B] {
        let _ = Command::new("ip").args(["netns", "del", n]).output();
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
        vec!["-n", NS_A, "link", "set", IF_A, "up"],
        vec!["-n", NS_B, "link", "set", IF_B, "up"],
        vec!["-n", NS_A, "link", "set", "lo", "up"],
        vec!["-n", NS_B, "link", "set", "lo", "up"],
    ] {
        util::run(Command::new("ip").args(&args))?;
    }
    println!("namespaces {NS_A} ({ADDR_A}) and {NS_B} ({ADDR_B}) joined by {IF_A}/{IF_B}");

    let log = std::fs::File::create(format!("{RUN_DIR}/daemon.log"))?;
    demo.daemon = Some(
        ns(NS_A, &[])
            .arg(&demo.xipsec)
            .args(["daemon", "--interface", IF_A, "--state-dir"])
            .arg(format!("{RUN_DIR}/state"))
            .args(["--socket", &format!("{RUN_DIR}/control.sock")])
            .args(["--pin-dir", "/sys/fs/bpf/xipsec-demo"])
            .stderr(log)
            .spawn()
            .context("starting the daemon")?,
    );
    let start = Instant::now();
    while demo.cli(&["status"]).is_err() {
        if start.elapsed() > Duration::from_secs(20) {
            bail!(
                "the daemon did not come up: {}",
                std::fs::read_to_string(format!("{RUN_DIR}/daemon.log")).unwrap_or_default()
            );
        }
        sleep(Duration::from_millis(100));
    }
    demo.show(&["status"])?;

    println!("\n== the source document's examples, verbatim ==");
    demo.cli(&[
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
    ])?;
    demo.cli(&[
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
    ])?;

    println!("\n== one policy of each action on the demo addresses ==");
    let from_b = [
        "--sp-source",
        "fd00:de::2/128",
        "--sp-destination",
        "fd00:de::1/128",
    ];
    for extra in [
        vec![
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
            "allow-ping",
        ],
        vec![
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
            "--sp-name",
            "block-udp-9999",
        ],
        vec![
            "--source-port",
            "any",
            "--destination-port",
            "22",
            "--upper-layer-protocol",
            "tcp",
            "--flow-direction",
            "in",
            "--action",
            "discard",
            "--sp-name",
            "block-ssh",
        ],
    ] {
        demo.cli(&[&["sp", "add"][..], &from_b, &extra].concat())?;
    }
    demo.cli(&[
        "sa",
        "add",
        "-s",
        ADDR_A,
        "-d",
        ADDR_B,
        "-m",
        "transport",
        "-p",
        "0x2000",
        "-e",
        "aes128-cbc",
        "-k",
        "0x000102030405060708090a0b0c0d0e0f",
        "-i",
        "hmac-sha2-256",
        "-K",
        "0x000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "-n",
        "sa-demo",
    ])?;
    demo.cli(&[
        "sp",
        "add",
        "--sp-source",
        "fd00:de::1/128",
        "--sp-destination",
        "fd00:de::2/128",
        "--source-port",
        "any",
        "--destination-port",
        "5001",
        "--upper-layer-protocol",
        "tcp",
        "--flow-direction",
        "out",
        "--action",
        "ipsec",
        "--sa-name",
        "sa-demo",
        "--sp-name",
        "protect-5001",
    ])?;

    println!("\n== traffic ==");
    let mut ping = ns(
        NS_B,
        &[
            "ping", "-6", "-q", "-c", "3", "-i", "0.2", "-W", "1", ADDR_A,
        ],
    );
    println!(
        "ping6 b -> a     (none)           {}",
        verdict(quiet(&mut ping))
    );
    let udp_blocked = demo.udp(NS_B, ADDR_A, "9999")?;
    println!(
        "UDP  b -> a:9999 (discard)        {}/5 delivered",
        udp_blocked
    );
    let udp_open = demo.udp(NS_B, ADDR_A, "9000")?;
    println!("UDP  b -> a:9000 (no policy)      {}/5 delivered", udp_open);
    println!(
        "TCP  b -> a:22   (discard)        {}",
        verdict(demo.tcp(NS_B, ADDR_A, "22")?)
    );
    println!(
        "TCP  b -> a:8080 (no policy)      {}",
        verdict(demo.tcp(NS_B, ADDR_A, "8080")?)
    );
    println!(
        "TCP  a -> b:5001 (ipsec)          {}",
        verdict(demo.tcp(NS_A, ADDR_B, "5001")?)
    );

    demo.show(&["sa", "list"])?;
    demo.show(&["sp", "list"])?;
    demo.show(&["stats"])?;
    Ok(())
}
