//! The traffic fixtures (`fixtures/*.py`) run inside a namespace.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{fixture, netns::exec};

/// `traffic.py ARGS` run in namespace `ns`.
pub fn py(ns: &str, args: &[&str]) -> Command {
    let mut c = exec(ns, &["python3"]);
    c.arg(fixture("traffic.py")).args(args);
    c
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
    let port = port.to_string();
    let recv = py(to_ns, &["udp-recv", to_addr, &port, window])
        .stdout(Stdio::piped())
        .spawn()
        .expect("starting the UDP receiver");
    std::thread::sleep(Duration::from_millis(300));
    let sent = py(
        from_ns,
        &["udp-send", to_addr, &port, &count.to_string(), text],
    )
    .status()
    .expect("sending UDP");
    assert!(sent.success(), "UDP sender failed");
    let out = recv.wait_with_output().expect("UDP receiver output");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a count")
}

/// A raw ESP socket held open in a namespace (`traffic.py esp-absorb`), so that host's kernel,
/// which has no SA, does not answer ESP with ICMPv6 parameter problems (in clear); killed on
/// drop.
pub struct EspAbsorb(Child);

impl EspAbsorb {
    pub fn start(ns: &str) -> Self {
        let mut child = py(ns, &["esp-absorb", "600"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("starting esp-absorb");
        let mut ready = String::new();
        BufReader::new(child.stdout.take().expect("esp-absorb stdout"))
            .read_line(&mut ready)
            .expect("reading esp-absorb's ready line");
        assert_eq!(ready.trim(), "ready", "esp-absorb did not start");
        Self(child)
    }
}

impl Drop for EspAbsorb {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
