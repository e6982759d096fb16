//! Bad input to `xipsec daemon`: a missing interface or missing privileges give a clear error,
//! a non-zero exit, and leave nothing attached. When attaching to the second of two interfaces
//! fails (another daemon's XDP link holds it), the start fails and the rollback detaches what
//! it had attached to the first: no XDP and no TC egress program stay, and no link pin.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use ipsec_tests::maps::tc_egress_programs;
use ipsec_user::{
    daemon::XdpMode,
    datapath::{KernelDatapath, LoadOptions},
};
use xipsec_testkit::{
    as_root,
    daemon::{Sandbox, xipsec_bin},
    netns::{VethPair, in_netns, xdp_attached},
    sh,
};

/// Run `cmd` to completion within 30 s.
fn finish(cmd: &mut Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the daemon");
    let start = Instant::now();
    while child.try_wait().expect("polling the daemon").is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("the daemon kept running on bad input");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("daemon output")
}

#[test]
fn missing_interface_is_refused_and_nothing_is_attached() {
    as_root(
        "missing_interface_is_refused_and_nothing_is_attached",
        || {
            let net = VethPair::new("xde", 0x75);
            let sandbox = Sandbox::attached(&net.ns_a, &net.if_a);
            let out = finish(sandbox.daemon_command().args(["--interface", "xnosuch0"]));
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                !out.status.success(),
                "a missing interface must fail the start"
            );
            assert!(
                stderr.contains("no such interface: xnosuch0"),
                "stderr: {stderr}"
            );
            let link = Command::new("ip")
                .args(["-n", &net.ns_a, "-d", "link", "show", "dev", &net.if_a])
                .output()
                .expect("ip link show");
            let link = String::from_utf8_lossy(&link.stdout);
            assert!(!link.contains("xdp"), "XDP left attached: {link}");
            assert_eq!(
                tc_egress_programs(&net.ns_a, &net.if_a),
                Vec::<String>::new(),
                "TC egress left attached"
            );
            assert_eq!(
                link_pins(&sandbox.pin_dir()),
                Vec::<String>::new(),
                "link pins left behind"
            );
        },
    );
}

/// The xipsec programs attached to an interface by this test process (not a daemon: a second
/// daemon in the namespace would collide on the ESP engine's TUN name), detached on drop.
struct Holder {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Holder {
    fn attach(ns: &str, iface: &str) -> Self {
        let (ns, iface) = (ns.to_owned(), iface.to_owned());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (release, release_rx) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            in_netns(&ns, move || {
                let mut dp = KernelDatapath::load(&LoadOptions::default()).expect("loading");
                dp.attach(&iface, XdpMode::Auto)
                    .expect("attaching the holder");
                ready_tx.send(()).expect("signalling the test");
                let _ = release_rx.recv();
                drop(dp);
            });
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the holder attached");
        Self {
            release: Some(release),
            thread: Some(thread),
        }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Link pins (`link_*`) under `dir`.
fn link_pins(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|p| p.starts_with("link_"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_failed_second_attach_rolls_back_the_first() {
    as_root("a_failed_second_attach_rolls_back_the_first", || {
        let net = VethPair::new("xdr", 0x76);
        // A second interface in the same namespace, held by another daemon's XDP link: attaching
        // XDP to it again fails (EBUSY), after the first interface was attached.
        let (held, held_peer) = ("xdrheld", "xdrheldp");
        sh(&[
            "ip", "-n", &net.ns_a, "link", "add", held, "type", "veth", "peer", "name", held_peer,
        ]);
        for i in [held, held_peer] {
            sh(&["ip", "-n", &net.ns_a, "link", "set", i, "up"]);
        }
        let holder = Holder::attach(&net.ns_a, held);
        assert!(xdp_attached(&net.ns_a, held), "the holder attached XDP");
        assert!(
            !xdp_attached(&net.ns_a, &net.if_a),
            "nothing on {} yet",
            net.if_a
        );
        assert!(tc_egress_programs(&net.ns_a, &net.if_a).is_empty());

        // The sandbox's pin dir is a bpffs in the test's own mount namespace, as on a real host:
        // pins made under it outlive the daemon (whose `ip netns exec` mount namespace dies with
        // it), so a rollback that left a link pinned would leave the program attached.
        let sandbox = Sandbox::attached(&net.ns_a, &net.if_a);
        let out = finish(
            sandbox
                .daemon_command()
                .args(["--interface", held])
                .env("RUST_LOG", "info"),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "a failed attach must fail the start: {stderr}"
        );
        assert!(
            stderr.contains(&format!("attaching to {held}")),
            "the error names the interface: {stderr}"
        );
        // The first interface really was attached before the failure (so the rollback ran).
        assert!(
            stderr.contains(&format!("interface=\"{}\"", net.if_a))
                || stderr.contains(&format!("interface={}", net.if_a)),
            "the log shows {} attached first: {stderr}",
            net.if_a
        );
        assert!(
            !xdp_attached(&net.ns_a, &net.if_a),
            "XDP left attached to {} after the rollback",
            net.if_a
        );
        assert_eq!(
            tc_egress_programs(&net.ns_a, &net.if_a),
            Vec::<String>::new(),
            "TC egress left attached to {} after the rollback",
            net.if_a
        );
        assert_eq!(
            link_pins(&sandbox.pin_dir()),
            Vec::<String>::new(),
            "link pins left behind"
        );
        // The holder's attachment is untouched.
        assert!(xdp_attached(&net.ns_a, held), "the holder's XDP is gone");
        assert!(
            !tc_egress_programs(&net.ns_a, held).is_empty(),
            "the holder's TC egress is gone"
        );
        drop(holder);
    });
}

#[test]
fn unprivileged_start_says_it_needs_root() {
    as_root("unprivileged_start_says_it_needs_root", || {
        let sandbox = Sandbox::new();
        let _ = Command::new("chmod")
            .arg("0777")
            .arg(sandbox.path())
            .status();
        let out = finish(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "--inh-caps=-all",
                ])
                .arg(xipsec_bin())
                .args(["daemon", "--interface", "lo"])
                .arg("--state-dir")
                .arg(sandbox.state_dir())
                .arg("--socket")
                .arg(sandbox.socket())
                .arg("--pin-dir")
                .arg(sandbox.pin_dir()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "an unprivileged daemon must not start"
        );
        assert!(stderr.contains("needs root"), "stderr: {stderr}");
        assert_eq!(
            stderr.lines().filter(|l| l.starts_with("error:")).count(),
            1,
            "one error line: {stderr}"
        );
    });
}
