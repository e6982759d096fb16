//! Network namespaces and veth pairs created by name for one test and deleted on drop, and what
//! is attached to an interface in one (XDP, TC egress).

use std::process::{Command, Output};

/// Run a command, panicking with its output if it fails.
pub fn sh(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("starting {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces `{prefix}a` and `{prefix}b` joined by a veth pair `{prefix}va`/`{prefix}vb`,
/// with `fd00:{tag}::1/64` on side a and `fd00:{tag}::2/64` on side b.
pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub addr_a: String,
    pub addr_b: String,
}

impl VethPair {
    pub fn new(prefix: &str, tag: u16) -> Self {
        let p = Self {
            ns_a: format!("{prefix}a"),
            ns_b: format!("{prefix}b"),
            if_a: format!("{prefix}va"),
            if_b: format!("{prefix}vb"),
            addr_a: format!("fd00:{tag:x}::1"),
            addr_b: format!("fd00:{tag:x}::2"),
        };
        p.cleanup();
        sh(&["ip", "netns", "add", &p.ns_a]);
        sh(&["ip", "netns", "add", &p.ns_b]);
        sh(&[
            "ip", "link", "add", &p.if_a, "netns", &p.ns_a, "type", "veth", "peer", "name",
            &p.if_b, "netns", &p.ns_b,
        ]);
        for (ns, ifname, addr) in [(&p.ns_a, &p.if_a, &p.addr_a), (&p.ns_b, &p.if_b, &p.addr_b)] {
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/64"),
                "dev",
                ifname,
                "nodad",
            ]);
            sh(&["ip", "-n", ns, "link", "set", ifname, "up"]);
        }
        p
    }

    /// A command run inside namespace `ns`.
    pub fn exec(ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(args);
        cmd
    }

    fn cleanup(&self) {
        for ns in [&self.ns_a, &self.ns_b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

impl Drop for VethPair {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// True when `ip -d link show` reports an XDP program (any mode) on `iface` in `ns`.
pub fn xdp_attached(ns: &str, iface: &str) -> bool {
    let out = sh(&["ip", "-n", ns, "-d", "link", "show", "dev", iface]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .any(|w| w.starts_with("xdp") || w == "prog/xdp")
}

/// Names of the programs on `iface`'s TC egress in `ns`: TCX programs (queried with
/// `BPF_PROG_QUERY` from a thread that joined the namespace) and classic `tc` filters.
pub fn tc_egress_programs(ns: &str, iface: &str) -> Vec<String> {
    let (ns_owned, iface_owned) = (ns.to_owned(), iface.to_owned());
    let mut names = std::thread::spawn(move || {
        let file = std::fs::File::open(format!("/run/netns/{ns_owned}"))
            .unwrap_or_else(|e| panic!("opening namespace {ns_owned}: {e}"));
        // SAFETY: setns(2) on a valid namespace fd; it moves only this short-lived thread.
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "setns into {ns_owned}: {}",
            std::io::Error::last_os_error()
        );
        let (_, programs) = aya::programs::SchedClassifier::query_tcx(
            &iface_owned,
            aya::programs::tc::TcAttachType::Egress,
        )
        .unwrap_or_else(|e| panic!("querying TCX egress of {iface_owned}: {e}"));
        programs
            .iter()
            .map(|p| format!("tcx:{}", p.name_as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
    })
    .join()
    .expect("the TCX query thread");
    let out = Command::new("tc")
        .args(["-n", ns, "filter", "show", "dev", iface, "egress"])
        .output()
        .expect("running tc filter show");
    names.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("bpf"))
            .map(|l| format!("tc:{l}")),
    );
    names
}
