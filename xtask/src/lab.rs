//! A two-host lab for the demo and the end-to-end benchmark: two network namespaces joined by a
//! veth pair, an xipsec daemon in each (pins on a bpffs of our own mount namespace, so the
//! programs stay attached if a daemon dies, as under /sys/fs/bpf on a real host), the CLI
//! pointed at either side, and small traffic helpers. Everything is removed on drop.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util;

pub struct Lab {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub addr_a: String,
    pub addr_b: String,
    pub dir: String,
    xipsec: PathBuf,
    traffic: PathBuf,
    daemons: Vec<Child>,
}

/// A command run inside namespace `netns`.
pub fn ns(netns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", netns]).args(args);
    c
}

/// Run quietly; whether it succeeded.
pub fn quiet(c: &mut Command) -> bool {
    c.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Lab {
    /// Namespaces `{name}a`/`{name}b`, veth `{name}va`/`{name}vb`, addresses
    /// `fd00:{tag}::1/64` and `fd00:{tag}::2/64`, state under `/tmp/xipsec-{name}`.
    pub fn new(name: &str, tag: u16) -> anyhow::Result<Self> {
        let root = util::root();
        let lab = Self {
            ns_a: format!("{name}a"),
            ns_b: format!("{name}b"),
            if_a: format!("{name}va"),
            if_b: format!("{name}vb"),
            addr_a: format!("fd00:{tag:x}::1"),
            addr_b: format!("fd00:{tag:x}::2"),
            dir: format!("/tmp/xipsec-{name}"),
            xipsec: root.join("target/release/xipsec"),
            traffic: root.join("tests/fixtures/traffic.py"),
            daemons: Vec::new(),
        };
        lab.remove();
        let _ = std::fs::remove_dir_all(&lab.dir);
        std::fs::create_dir_all(&lab.dir)?;
        let (a, b, if_a, if_b) = (&lab.ns_a, &lab.ns_b, &lab.if_a, &lab.if_b);
        let (addr_a, addr_b) = (format!("{}/64", lab.addr_a), format!("{}/64", lab.addr_b));
        for args in [
            vec!["netns", "add", a],
            vec!["netns", "add", b],
            vec![
                "link", "add", if_a, "netns", a, "type", "veth", "peer", "name", if_b, "netns", b,
            ],
            vec!["-n", a, "addr", "add", &addr_a, "dev", if_a, "nodad"],
            vec!["-n", b, "addr", "add", &addr_b, "dev", if_b, "nodad"],
            vec!["-n", a, "link", "set", if_a, "up"],
            vec!["-n", b, "link", "set", if_b, "up"],
            vec!["-n", a, "link", "set", "lo", "up"],
            vec!["-n", b, "link", "set", "lo", "up"],
        ] {
            util::run(Command::new("ip").args(&args))?;
        }
        Ok(lab)
    }

    fn remove(&self) {
        for netns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", netns]).output();
        }
        for side in ["a", "b"] {
            let _ = Command::new("umount")
                .arg("-l")
                .arg(format!("{}/{side}/bpf", self.dir))
                .output();
        }
    }

    fn netns(&self, side: &str) -> &str {
        if side == "a" { &self.ns_a } else { &self.ns_b }
    }

    /// The CLI against the daemon of side `a` or `b`; its stdout, or the error it printed.
    pub fn cli(&self, side: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = Command::new(&self.xipsec)
            .arg("--socket")
            .arg(format!("{}/{side}/control.sock", self.dir))
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

    /// Print a CLI command and its output.
    pub fn show(&self, side: &str, args: &[&str]) -> anyhow::Result<()> {
        println!("\n[{side}]$ xipsec {}", args.join(" "));
        print!("{}", self.cli(side, args)?);
        Ok(())
    }

    /// Start the daemon of side `a` or `b` on its veth end and wait until it answers.
    pub fn start_daemon(&mut self, side: &str) -> anyhow::Result<()> {
        let interface = if side == "a" { &self.if_a } else { &self.if_b };
        let dir = format!("{}/{side}", self.dir);
        std::fs::create_dir_all(format!("{dir}/bpf"))?;
        util::run(Command::new("mount").args(["-t", "bpf", "bpf", &format!("{dir}/bpf")]))?;
        let log = std::fs::File::create(format!("{dir}/daemon.log"))?;
        let child = ns(self.netns(side), &[])
            .arg(&self.xipsec)
            .args(["daemon", "--interface", interface])
            .args(["--state-dir", &format!("{dir}/state")])
            .args(["--socket", &format!("{dir}/control.sock")])
            .args(["--pin-dir", &format!("{dir}/bpf")])
            .stderr(log)
            .spawn()
            .context("starting a daemon")?;
        self.daemons.push(child);
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

    /// A mirrored pair of SAs and SPs on both daemons, protecting everything between selector
    /// `sel_a` (a's side) and `sel_b`; `spi_ab` carries a -> b.
    pub fn protect(
        &self,
        name: &str,
        mode: &str,
        (sel_a, sel_b): (&str, &str),
        (spi_ab, spi_ba): (&str, &str),
        enc: (&str, &str),
        integ: (&str, &str),
    ) -> anyhow::Result<()> {
        let (a, b) = (self.addr_a.as_str(), self.addr_b.as_str());
        for (side, me, peer, sel_me, sel_peer, out_spi, in_spi) in [
            ("a", a, b, sel_a, sel_b, spi_ab, spi_ba),
            ("b", b, a, sel_b, sel_a, spi_ba, spi_ab),
        ] {
            for (dir, src, dst, spi) in [("out", me, peer, out_spi), ("in", peer, me, in_spi)] {
                let sa = format!("{name}-{dir}");
                let args = [
                    "sa", "add", "-s", src, "-d", dst, "-m", mode, "-p", spi, "-e", enc.0, "-k",
                    enc.1, "-i", integ.0, "-K", integ.1, "-n", &sa,
                ];
                self.cli(side, &args)?;
            }
            for (dir, src, dst) in [("out", sel_me, sel_peer), ("in", sel_peer, sel_me)] {
                let name = format!("{name}-{dir}");
                let args = [
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
                    &name,
                    "--sp-name",
                    &name,
                ];
                self.cli(side, &args)?;
            }
        }
        Ok(())
    }

    fn other(&self, from: &str) -> &str {
        if from == self.ns_a {
            &self.ns_b
        } else {
            &self.ns_a
        }
    }

    /// How many of 5 datagrams sent from namespace `from` to `to`:`port` arrive.
    pub fn udp(&self, from: &str, to: &str, port: &str) -> anyhow::Result<usize> {
        let recv = ns(self.other(from), &["python3"])
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

    /// 10 MB from namespace `from` (source address `src`, or the kernel's choice) to
    /// `to`:`port`: what was sent and what arrived (byte count and SHA-256 of each).
    pub fn transfer(
        &self,
        from: &str,
        src: Option<&str>,
        to: &str,
        port: &str,
    ) -> anyhow::Result<(String, String)> {
        let sink = ns(self.other(from), &["python3"])
            .arg(&self.traffic)
            .args(["tcp-sink", to, port, "30"])
            .stdout(Stdio::piped())
            .spawn()?;
        sleep(Duration::from_millis(500));
        let sent = ns(from, &["python3"])
            .arg(&self.traffic)
            .args(["tcp-source", to, port, "10"])
            .args(src)
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

impl Drop for Lab {
    fn drop(&mut self) {
        for mut d in self.daemons.drain(..) {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(d.id() as i32, libc::SIGTERM) };
            let _ = d.wait();
        }
        self.remove();
        // stderr: `bench e2e --json` keeps stdout for the JSON.
        eprintln!(
            "cleaned up: namespaces {} and {} deleted, daemons stopped",
            self.ns_a, self.ns_b
        );
    }
}
