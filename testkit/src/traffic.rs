//! The traffic fixtures (`fixtures/*.py`) run inside a namespace.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, ChildStdout, Command, Output, Stdio},
};

use crate::{fixture, netns::exec};

/// `python3 tests/fixtures/{script} ARGS` run in namespace `ns`.
pub fn py_fixture(ns: &str, script: &str, args: &[&str]) -> Command {
    let mut c = exec(ns, &["python3"]);
    c.arg(fixture(script)).args(args);
    c
}

/// `traffic.py ARGS` run in namespace `ns`.
pub fn py(ns: &str, args: &[&str]) -> Command {
    py_fixture(ns, "traffic.py", args)
}

/// Whether `ping -6 -c {count} -i 0.2 -W {wait} [-p {pattern}] {dst}` from namespace `ns` got
/// its answers (ping's exit status; its output is discarded).
pub fn ping(ns: &str, dst: &str, (count, wait): (&str, &str), pattern: Option<&str>) -> bool {
    let mut args = vec!["ping", "-6", "-c", count, "-i", "0.2", "-W", wait];
    if let Some(pattern) = pattern {
        args.extend(["-p", pattern]);
    }
    args.push(dst);
    exec(ns, &args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("running ping")
        .success()
}

/// `megabytes` MB of deterministic bytes over TCP from namespace `from` to `to_addr`:`port` in
/// namespace `to` (`tcp-sink` there, up to 30 s; `tcp-source` here): the source's and the
/// sink's last report lines (`{bytes} {sha256}`), and the source's stderr.
pub fn tcp_transfer(
    from: &str,
    (to, to_addr): (&str, &str),
    port: &str,
    megabytes: &str,
) -> (String, String, String) {
    let sink = py(to, &["tcp-sink", to_addr, port, "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the sink");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let source = py(from, &["tcp-source", to_addr, port, megabytes])
        .output()
        .expect("running the source");
    let sent = String::from_utf8_lossy(&source.stdout).trim().to_string();
    let received = String::from_utf8_lossy(&sink.wait_with_output().expect("sink").stdout)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string();
    (
        sent,
        received,
        String::from_utf8_lossy(&source.stderr).into_owned(),
    )
}

/// `python3 tests/fixtures/{script} ARGS` run in namespace `ns`, which must succeed; its stdout.
pub fn fixture_output(ns: &str, script: &str, args: &[&str]) -> String {
    let out = exec(ns, &["python3"])
        .arg(fixture(script))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} {args:?} in {ns} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How many of `count` datagrams carrying `text`, sent from namespace `from_ns` to
/// `to_addr`:`port`, reach a receiver in `to_ns` listening for `window` seconds.
pub fn udp_delivered(
    (from_ns, to_ns): (&str, &str),
    to_addr: &str,
    port: u16,
    (count, text): (usize, &str),
    window: &str,
) -> usize {
    let recv = UdpReceiver::start(to_ns, to_addr, port, window);
    let sent = py(
        from_ns,
        &[
            "udp-send",
            to_addr,
            &port.to_string(),
            &count.to_string(),
            text,
        ],
    )
    .status()
    .expect("sending UDP");
    assert!(sent.success(), "UDP sender failed");
    recv.count()
}

/// A `traffic.py udp-recv` listener in a namespace, counting the datagrams that reach its
/// address and port within its window.
pub struct UdpReceiver {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl UdpReceiver {
    /// Listens on `addr`:`port` in namespace `ns` for `window` seconds; returns once the
    /// listener has bound (its `ready` line), so traffic sent next is counted.
    pub fn start(ns: &str, addr: &str, port: u16, window: &str) -> Self {
        Self::spawn(py(ns, &["udp-recv", addr, &port.to_string(), window]))
    }

    /// Like [`Self::start`], and the listener also reports each datagram's size ([`Self::report`]).
    pub fn with_sizes(ns: &str, addr: &str, port: u16, window: &str) -> Self {
        Self::spawn(py(
            ns,
            &["udp-recv", addr, &port.to_string(), window, "sizes"],
        ))
    }

    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the UDP receiver");
        let mut stdout = BufReader::new(child.stdout.take().expect("a piped stdout"));
        let mut ready = String::new();
        stdout
            .read_line(&mut ready)
            .expect("reading the UDP receiver's ready line");
        assert_eq!(ready.trim(), "ready", "the UDP receiver did not bind");
        Self { child, stdout }
    }

    /// What the listener printed when its window ended: the count, then the sizes if asked.
    pub fn report(mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("reading the UDP receiver's count");
        let status = self.child.wait().expect("waiting for the UDP receiver");
        assert!(status.success(), "the UDP receiver failed: {status}");
        line.trim().to_owned()
    }

    /// How many datagrams arrived: waits for the window to end.
    pub fn count(self) -> usize {
        self.report()
            .parse()
            .expect("the UDP receiver prints a count")
    }
}

/// A fixture process that prints `ready` once it listens; killed on drop.
pub struct Ready(Child);

impl Ready {
    /// Spawns `command` (its stdout piped) and waits for its `ready` line; `what` names it.
    pub fn start(mut command: Command, what: &str) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("a piped stdout"))
            .read_line(&mut ready)
            .unwrap_or_else(|e| panic!("reading the ready line of {what}: {e}"));
        let process = Self(child);
        assert_eq!(ready.trim(), "ready", "{what} did not start");
        process
    }
}

impl Drop for Ready {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A raw ESP socket held open in a namespace (`traffic.py esp-absorb`), so that host's kernel,
/// which has no SA, does not answer ESP with ICMPv6 parameter problems (in clear); killed on
/// drop.
pub struct EspAbsorb(#[allow(dead_code, reason = "held for its drop")] Ready);

impl EspAbsorb {
    pub fn start(ns: &str) -> Self {
        Self(Ready::start(py(ns, &["esp-absorb", "600"]), "esp-absorb"))
    }
}

/// `python3 tests/fixtures/{script} ARGS`, in namespace `ns` if given, with `input` on its
/// stdin; its output once it exits (the caller judges the status).
pub fn fixture_with_input(ns: Option<&str>, script: &str, args: &[&str], input: &[u8]) -> Output {
    let mut command = match ns {
        Some(ns) => exec(ns, &["python3"]),
        None => Command::new("python3"),
    };
    let mut child = command
        .arg(fixture(script))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {script}: {e}"));
    child
        .stdin
        .take()
        .expect("a piped stdin")
        .write_all(input)
        .unwrap_or_else(|e| panic!("writing to {script}: {e}"));
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {script}: {e}"))
}
