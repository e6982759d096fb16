//! The traffic fixtures (`fixtures/*.py`) run inside a namespace.

use std::{
    io::{BufRead, BufReader, Write},
    process::{Child, Command, Output, Stdio},
    time::Duration,
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
pub struct UdpReceiver(Child);

impl UdpReceiver {
    /// Listens on `addr`:`port` in namespace `ns` for `window` seconds; returns once the
    /// listener has had 300 ms to bind, so traffic sent next is counted.
    pub fn start(ns: &str, addr: &str, port: u16, window: &str) -> Self {
        let child = py(ns, &["udp-recv", addr, &port.to_string(), window])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting the UDP receiver");
        std::thread::sleep(Duration::from_millis(300));
        Self(child)
    }

    /// How many datagrams arrived: waits for the window to end.
    pub fn count(self) -> usize {
        let out = self.0.wait_with_output().expect("UDP receiver output");
        String::from_utf8_lossy(&out.stdout)
            .trim()
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
