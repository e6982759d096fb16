//! Network namespaces and veth pairs with unique names, deleted on drop (also when the test
//! panics), commands and threads inside a namespace, and whether XDP is attached. This is the
//! only code of the workspace that creates network namespaces.
//!
//! Names are `{prefix}{pid}{counter}` (hex) plus a suffix: unique among the processes running
//! on the machine, so tests of several checkouts, helpers and test binaries never meet, and at
//! most 15 bytes for an interface (`IFNAMSIZ`). A leftover of a process killed with -9 carries a
//! dead pid: creating a name first deletes whatever still holds it.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::sh;

/// The longest interface name Linux accepts (`IFNAMSIZ` - 1).
pub const IFNAME_MAX: usize = 15;
/// The longest prefix [`unique_name`] accepts: 4 + 7 (pid) + 2 (counter) + 2 (suffix) = 15.
pub const PREFIX_MAX: usize = 4;

/// A name no other live process uses: `{prefix}{pid:x}{n:02x}`, `n` counting this process's
/// names (modulo 256). Leaves two bytes of an interface name for a suffix.
pub fn unique_name(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    assert!(
        prefix.len() <= PREFIX_MAX && prefix.is_ascii(),
        "name prefix {prefix:?}: at most {PREFIX_MAX} ASCII bytes"
    );
    let n = NEXT.fetch_add(1, Ordering::Relaxed) % 0x100;
    format!("{prefix}{:x}{n:02x}", std::process::id())
}

/// A command run inside namespace `ns` (`ip netns exec`, which execs it in place).
pub fn exec(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).args(args);
    cmd
}

/// Runs `args` inside namespace `ns`, which must succeed; its stdout.
pub fn output(ns: &str, args: &[&str]) -> String {
    let mut all = vec!["ip", "netns", "exec", ns];
    all.extend_from_slice(args);
    String::from_utf8_lossy(&sh(&all).stdout).into_owned()
}

/// Runs `f` on a thread that has joined namespace `ns`: sockets and devices it creates live
/// there (and stay there after the thread ends).
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = File::open(format!("/run/netns/{ns}"))
                    .unwrap_or_else(|e| panic!("opening namespace {ns}: {e}"));
                // SAFETY: `file` is an open netns descriptor; setns(CLONE_NEWNET) only changes
                // this short-lived thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(
                    rc,
                    0,
                    "setns into {ns}: {}",
                    std::io::Error::last_os_error()
                );
                f()
            })
            .join()
            .expect("the netns thread panicked")
    })
}

/// `ip -n NS addr add CIDR dev DEV nodad`: an address usable at once (no duplicate address
/// detection to wait for).
pub fn add_address(ns: &str, cidr: &str, dev: &str) {
    sh(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev, "nodad"]);
}

/// True when `ip -d link show` reports an XDP program (any mode) on `iface` in `ns`.
pub fn xdp_attached(ns: &str, iface: &str) -> bool {
    let out = sh(&["ip", "-n", ns, "-d", "link", "show", "dev", iface]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .any(|w| w.starts_with("xdp") || w == "prog/xdp")
}

/// A network namespace of a unique name with its loopback up; deleted on drop.
pub struct Netns {
    name: String,
}

impl Netns {
    /// A fresh namespace named after `prefix` (at most [`PREFIX_MAX`] bytes).
    pub fn new(prefix: &str) -> Self {
        Self::named(unique_name(prefix))
    }

    fn named(name: String) -> Self {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `ip -n NAME ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut all = vec!["ip", "-n", &self.name];
        all.extend_from_slice(args);
        sh(&all);
    }

    /// A command run inside this namespace.
    pub fn exec(&self, args: &[&str]) -> Command {
        exec(&self.name, args)
    }

    /// Runs `args` inside namespace `ns`, which must succeed; its stdout.
    pub fn output(ns: &str, args: &[&str]) -> String {
        let mut all = vec!["ip", "netns", "exec", ns];
        all.extend_from_slice(args);
        String::from_utf8_lossy(&sh(&all).stdout).into_owned()
    }

    /// Runs `f` on a thread inside this namespace (see [`in_netns`]).
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        in_netns(&self.name, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting the namespace deletes the interfaces in it (a veth takes its peer along).
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Two namespaces `{name}a` and `{name}b` (`name` from [`unique_name`]) joined by a veth pair
/// `{name}va`/`{name}vb`, with `fd00:{tag}::1/64` on side a and `fd00:{tag}::2/64` on side b
/// (no duplicate address detection); both deleted on drop.
pub struct VethPair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: String,
    pub if_b: String,
    pub addr_a: String,
    pub addr_b: String,
    // Dropped after the names above: the namespaces themselves.
    _guards: [Netns; 2],
}

impl VethPair {
    pub fn new(prefix: &str, tag: u16) -> Self {
        let name = unique_name(prefix);
        let a = Netns::named(format!("{name}a"));
        let b = Netns::named(format!("{name}b"));
        let (if_a, if_b) = (format!("{name}va"), format!("{name}vb"));
        assert!(
            if_a.len() <= IFNAME_MAX,
            "interface name {if_a} is too long"
        );
        sh(&[
            "ip",
            "link",
            "add",
            &if_a,
            "netns",
            a.name(),
            "type",
            "veth",
            "peer",
            "name",
            &if_b,
            "netns",
            b.name(),
        ]);
        let (addr_a, addr_b) = (format!("fd00:{tag:x}::1"), format!("fd00:{tag:x}::2"));
        for (ns, ifname, addr) in [(&a, &if_a, &addr_a), (&b, &if_b, &addr_b)] {
            ns.ip(&["addr", "add", &format!("{addr}/64"), "dev", ifname, "nodad"]);
            ns.ip(&["link", "set", ifname, "up"]);
        }
        Self {
            ns_a: a.name().to_owned(),
            ns_b: b.name().to_owned(),
            if_a,
            if_b,
            addr_a,
            addr_b,
            _guards: [a, b],
        }
    }

    /// The namespace of the other side than `ns`.
    pub fn other(&self, ns: &str) -> &str {
        if ns == self.ns_a {
            &self.ns_b
        } else {
            &self.ns_a
        }
    }
}
