//! The traffic fixtures (`fixtures/*.py`) run inside a namespace.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use crate::netns::VethPair;

/// A file under `tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// `traffic.py ARGS` run in namespace `ns`.
pub fn py(ns: &str, args: &[&str]) -> Command {
    let mut c = VethPair::exec(ns, &["python3"]);
    c.arg(fixture("traffic.py")).args(args);
    c
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
