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

/// A running `tcpdump` writing what it sees to a file; killed if dropped before [`Self::stop`].
pub struct Capture {
    child: std::process::Child,
    file: PathBuf,
}

impl Capture {
    /// Captures packets matching the tcpdump `filter` on `iface` of namespace `ns` into `file`;
    /// returns once tcpdump had time to start listening.
    pub fn start(ns: &str, iface: &str, file: &std::path::Path, filter: &str) -> Self {
        let child = VethPair::exec(ns, &["tcpdump", "-i", iface, "-U", "-nn", "-w"])
            .arg(file)
            .args(filter.split(' '))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting tcpdump");
        std::thread::sleep(Duration::from_millis(800));
        Self {
            child,
            file: file.to_path_buf(),
        }
    }

    /// Stops the capture (SIGINT, so tcpdump flushes the file) and returns it as `tcpdump -nn -r`
    /// prints it.
    pub fn stop(mut self) -> String {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let out = Command::new("tcpdump")
            .args(["-nn", "-r"])
            .arg(&self.file)
            .output()
            .expect("tcpdump -r");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        // A no-op after `stop` (the child was reaped); otherwise a failing test leaves no
        // tcpdump behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
