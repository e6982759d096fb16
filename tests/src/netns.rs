//! Network namespaces and veth pairs created by name for one test and deleted on drop.

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
