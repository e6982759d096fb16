//! A two-host lab for the demo and the end-to-end benchmark, built from the workspace's test kit
//! (`xipsec_testkit`): two network namespaces of unique names joined by a veth pair, an xipsec
//! daemon in each (pins on a bpffs of our own mount namespace, so the programs stay attached if
//! a daemon dies, as under /sys/fs/bpf on a real host), the CLI pointed at either side, and small
//! traffic helpers. Everything is removed on drop, also when a step fails.

use std::{process::Stdio, thread::sleep, time::Duration};

use anyhow::bail;
use xipsec_testkit::{
    cli::SpArgs,
    daemon::{Node, Sandbox},
    netns::{self, VethPair},
    traffic,
};

use crate::util;

pub(crate) struct Lab {
    /// The namespaces, interfaces and addresses.
    pub net: VethPair,
    /// Scratch files (captures) of this run.
    pub scratch: tempfile::TempDir,
    nodes: [Option<Node>; 2],
}

impl Lab {
    /// Namespaces `{prefix}…a`/`{prefix}…b` (unique names, see `xipsec_testkit::netns`), veth
    /// between them, addresses `fd00:{tag}::1/64` and `fd00:{tag}::2/64`.
    pub(crate) fn new(prefix: &str, tag: u16) -> anyhow::Result<Self> {
        Ok(Self {
            net: VethPair::new(prefix, tag),
            scratch: tempfile::Builder::new().prefix("xipsec-lab-").tempdir()?,
            nodes: [None, None],
        })
    }

    fn index(side: &str) -> usize {
        usize::from(side != "a")
    }

    fn node(&self, side: &str) -> anyhow::Result<&Node> {
        match &self.nodes[Self::index(side)] {
            Some(node) => Ok(node),
            None => bail!("the daemon of side {side} is not running"),
        }
    }

    /// The CLI against the daemon of side `a` or `b`; its stdout, or the error it printed.
    pub(crate) fn cli(&self, side: &str, args: &[&str]) -> anyhow::Result<String> {
        let out = self.node(side)?.cli(args);
        if !out.status.success() {
            bail!(
                "xipsec {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Where the daemon of side `a` or `b` pins its maps.
    pub(crate) fn pin_dir(&self, side: &str) -> anyhow::Result<std::path::PathBuf> {
        Ok(self.node(side)?.sandbox.pin_dir())
    }

    /// Print a CLI command and its output.
    pub(crate) fn show(&self, side: &str, args: &[&str]) -> anyhow::Result<()> {
        println!("\n[{side}]$ xipsec {}", args.join(" "));
        print!("{}", self.cli(side, args)?);
        Ok(())
    }

    /// Start the daemon of side `a` or `b` on its veth end and wait until it answers (the kit's
    /// `Node::start_in` panics with the daemon's log if it does not).
    pub(crate) fn start_daemon(&mut self, side: &str) {
        self.start_daemon_with(side, &[]);
    }

    /// [`Self::start_daemon`] with extra daemon options.
    pub(crate) fn start_daemon_with(&mut self, side: &str, args: &[&str]) {
        let sandbox = self.sandbox(side).with_daemon_args(args);
        self.nodes[Self::index(side)] = Some(Node::start_in(sandbox));
    }

    /// Like [`Self::start_daemon`], the daemon finding `state` (a `state.json`) in its state
    /// directory (how a benchmark installs 100,000 policies without 100,000 CLI calls), and
    /// attaching XDP in native mode.
    pub(crate) fn start_daemon_with_state(
        &mut self,
        side: &str,
        state: &str,
    ) -> anyhow::Result<()> {
        use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
        // Native XDP: a veth's peer hands XDP frames over only to a veth with a native program.
        let sandbox = self
            .sandbox(side)
            .with_daemon_args(&["--xdp-mode", "native"]);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(sandbox.state_dir())?;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(sandbox.state_file())?;
        std::io::Write::write_all(&mut file, state.as_bytes())?;
        drop(file);
        self.nodes[Self::index(side)] = Some(Node::start_in(sandbox));
        Ok(())
    }

    fn sandbox(&self, side: &str) -> Sandbox {
        let (ns, interface) = if side == "a" {
            (&self.net.ns_a, &self.net.if_a)
        } else {
            (&self.net.ns_b, &self.net.if_b)
        };
        // `XIPSEC_BIN` (as the test kit reads it) runs another build: A/B of two binaries.
        let bin = std::env::var_os("XIPSEC_BIN").map_or_else(
            || util::root().join("target/release/xipsec"),
            std::path::PathBuf::from,
        );
        Sandbox::attached(ns, interface).with_bin(bin)
    }

    /// A mirrored pair of SAs and SPs on both daemons, protecting everything between selector
    /// `sel_a` (a's side) and `sel_b`; `spi_ab` carries a -> b.
    pub(crate) fn protect(
        &self,
        name: &str,
        mode: &str,
        selectors: (&str, &str),
        spis: (&str, &str),
        enc: (&str, &str),
        integ: (&str, &str),
    ) -> anyhow::Result<()> {
        self.protect_with(name, mode, selectors, spis, (enc, integ), &[])
    }

    /// [`Self::protect`] with `sa_extra` added to every `sa add` (e.g. `--udp-encapsulation`).
    pub(crate) fn protect_with(
        &self,
        name: &str,
        mode: &str,
        (sel_a, sel_b): (&str, &str),
        (spi_ab, spi_ba): (&str, &str),
        (enc, integ): ((&str, &str), (&str, &str)),
        sa_extra: &[&str],
    ) -> anyhow::Result<()> {
        let (a, b) = (self.net.addr_a.as_str(), self.net.addr_b.as_str());
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
                self.cli(side, &[&args[..], sa_extra].concat())?;
            }
            for (dir, src, dst) in [("out", sel_me, sel_peer), ("in", sel_peer, sel_me)] {
                let name = format!("{name}-{dir}");
                let sp = SpArgs::ipsec(src, dst, dir, &name);
                self.cli(side, &sp.args())?;
            }
        }
        Ok(())
    }

    /// How many of 5 datagrams sent from namespace `from` to `to`:`port` arrive.
    pub(crate) fn udp(&self, from: &str, to: &str, port: u16) -> usize {
        traffic::udp_delivered((from, self.net.other(from)), to, port, (5, "demo"), "1.2")
    }

    /// 10 MB from namespace `from` (source address `src`, or the kernel's choice) to
    /// `to`:`port`: what was sent and what arrived (byte count and SHA-256 of each).
    pub(crate) fn transfer(
        &self,
        from: &str,
        src: Option<&str>,
        to: &str,
        port: &str,
    ) -> anyhow::Result<(String, String)> {
        let sink = traffic::py(self.net.other(from), &["tcp-sink", to, port, "30"])
            .stdout(Stdio::piped())
            .spawn()?;
        sleep(Duration::from_millis(500));
        let sent = traffic::py(from, &["tcp-source", to, port, "10"])
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

    /// A command run inside namespace `ns`.
    pub(crate) fn exec(ns: &str, args: &[&str]) -> std::process::Command {
        netns::exec(ns, args)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().flatten() {
            node.stop();
        }
        // stderr: `bench e2e --json` keeps stdout for the JSON.
        eprintln!(
            "cleaned up: daemons stopped, namespaces {} and {} deleted",
            self.net.ns_a, self.net.ns_b
        );
    }
}
