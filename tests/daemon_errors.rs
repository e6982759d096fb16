//! Bad input to `xipsec daemon`: a missing interface or missing privileges give a clear error,
//! a non-zero exit, and leave nothing attached.

use std::{
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use ipsec_tests::{daemon::xipsec_bin, netns::VethPair, require_root};

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
    if !require_root("missing_interface_is_refused_and_nothing_is_attached") {
        return;
    }
    let net = VethPair::new("xde", 0x75);
    let dir = tempdir("missing-interface");
    let out = finish(
        VethPair::exec(&net.ns_a, &[])
            .arg(xipsec_bin())
            .args([
                "daemon",
                "--interface",
                &net.if_a,
                "--interface",
                "xnosuch0",
            ])
            .arg("--state-dir")
            .arg(format!("{dir}/state"))
            .arg("--socket")
            .arg(format!("{dir}/s"))
            .arg("--pin-dir")
            .arg(format!("{dir}/bpf")),
    );
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
    let pins: Vec<_> = std::fs::read_dir(format!("{dir}/bpf"))
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        pins.iter()
            .all(|p| !p.to_string_lossy().starts_with("link_")),
        "link pins left behind: {pins:?}"
    );
    let _ = Command::new("umount")
        .arg("-l")
        .arg(format!("{dir}/bpf"))
        .output();
}

#[test]
fn unprivileged_start_says_it_needs_root() {
    if !require_root("unprivileged_start_says_it_needs_root") {
        return;
    }
    let dir = tempdir("unprivileged");
    let _ = Command::new("chmod").args(["0777", &dir]).status();
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
            .arg(format!("{dir}/state"))
            .arg("--socket")
            .arg(format!("{dir}/s"))
            .arg("--pin-dir")
            .arg(format!("{dir}/bpf")),
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
}

fn tempdir(name: &str) -> String {
    let dir = format!("/tmp/xipsec-test-{name}");
    let _ = Command::new("umount")
        .arg("-l")
        .arg(format!("{dir}/bpf"))
        .output();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
