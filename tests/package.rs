//! The Debian package `cargo xtask dist` builds, taken apart and used as an operator would.
//!
//! - Its contents (`dpkg-deb -c`, `-I`): the binary, the unit, `/etc/default/xipsec` as a
//!   conffile, the wrapper, bash/zsh/fish completions, one man page per visible command (the
//!   same set the packaged binary generates) that `man -l` renders, and the licence notes
//!   naming xdpilone's EUPL-1.2 with its full text.
//! - `systemd-analyze verify` on the unit, inside the unpacked tree (`--root`, with the packaged
//!   man pages on `MANPATH`): no message at all.
//! - Installed with `dpkg --root` into a scratch root (maintainer scripts run, chroot-less, and
//!   leave the machine alone), then purged.
//! - The packaged wrapper and binary, with exactly the unit's `CapabilityBoundingSet` (setpriv)
//!   and `NOTIFY_SOCKET` on a datagram socket this test listens on: `READY=1` (with the
//!   daemon's pid as MAINPID) arrives only when XDP is attached and the control socket answers;
//!   the demo's transport exchange (ping, a TCP stream) then runs between it and a second host
//!   running the packaged binary, with only ESP on the wire; SIGTERM brings `STOPPING=1` and a
//!   clean exit.
//!
//! What cannot be tested here (PID 1 is not systemd): that systemd orders the unit before
//! `network-pre.target` at boot, restarts it on failure, and applies the sandboxing options
//! (ProtectSystem, SystemCallFilter, DeviceAllow, ...). `systemd-analyze verify` checks that it
//! understands every one of them.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use ipsec_tests::transport::{self, SPI_AB, SPI_BA, Transfer};
use xipsec_testkit::{
    as_root,
    capture::Capture,
    daemon::{Node, Sandbox, signal, wait_timeout},
    netns::{self, VethPair},
    traffic,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

/// The package, built once per test run by `cargo xtask dist --binary` from the binary the
/// other kernel tests run (so the test does not rebuild it with other features).
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = Command::new("cargo")
            .args(["xtask", "dist", "--binary"])
            .arg(xipsec_testkit::daemon::xipsec_bin())
            .current_dir(workspace())
            .stderr(Stdio::inherit())
            .output()
            .expect("running cargo xtask dist");
        assert!(out.status.success(), "cargo xtask dist failed");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let deb = PathBuf::from(stdout.lines().last().expect("the .deb path").trim());
        assert!(
            deb.is_file() && deb.extension().is_some_and(|e| e == "deb"),
            "{}",
            deb.display()
        );
        deb
    })
}

fn run(command: &mut Command) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The package unpacked (`dpkg -x`) into a fresh directory.
fn unpacked() -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("xipsec-pkg-")
        .tempdir()
        .expect("a scratch root");
    run(Command::new("dpkg").arg("-x").arg(deb()).arg(root.path()));
    root
}

const MAN8: &str = "usr/share/man/man8";

/// `man`'s output without its overstriking (`X\bX` bold, `_\bX` underline), as `col -b` does.
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

#[test]
fn the_package_holds_the_binary_unit_conffile_completions_man_pages_and_licences() {
    let listing = run(Command::new("dpkg-deb").arg("-c").arg(deb()));
    let has = |path: &str, mode: &str| {
        assert!(
            listing
                .lines()
                .any(|l| l.starts_with(mode) && l.contains(" root/root ") && l.ends_with(path)),
            "{path} ({mode}) not in the package:\n{listing}"
        );
    };
    has("./usr/sbin/xipsec", "-rwxr-xr-x");
    has("./usr/libexec/xipsec/xipsec-daemon", "-rwxr-xr-x");
    has("./lib/systemd/system/xipsec.service", "-rw-r--r--");
    has("./etc/default/xipsec", "-rw-r--r--");
    has(
        "./usr/share/bash-completion/completions/xipsec",
        "-rw-r--r--",
    );
    has("./usr/share/zsh/vendor-completions/_xipsec", "-rw-r--r--");
    has(
        "./usr/share/fish/vendor_completions.d/xipsec.fish",
        "-rw-r--r--",
    );
    has("./usr/share/doc/xipsec/copyright", "-rw-r--r--");
    let info = run(Command::new("dpkg-deb").arg("-I").arg(deb()));
    for field in [
        "Package: xipsec",
        "Architecture: ",
        "Depends: libc6 (>= 2.",
        "Section: net",
    ] {
        assert!(
            info.contains(field),
            "{field} not in the control file:\n{info}"
        );
    }
    let conffiles = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(deb())
        .arg("conffiles"));
    assert_eq!(conffiles, "/etc/default/xipsec\n");

    let root = unpacked();
    let root = root.path();
    let default = std::fs::read_to_string(root.join("etc/default/xipsec")).expect("the default");
    assert!(
        default.contains("XIPSEC_INTERFACES=\"eth0\"\n") && default.contains("XIPSEC_OPTS=\"\"\n")
    );

    // The man pages are the ones the packaged binary generates: one per visible command.
    let generated = tempfile::tempdir().expect("a directory");
    run(Command::new(root.join("usr/sbin/xipsec"))
        .args(["generate", "man"])
        .arg(generated.path()));
    let names = |dir: &Path, suffix: &str| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("a directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .map(|n| n.trim_end_matches(suffix).to_owned())
            .collect();
        names.sort();
        names
    };
    let pages = names(&root.join(MAN8), ".gz");
    assert_eq!(pages, names(generated.path(), ""));
    for page in [
        "xipsec.8",
        "xipsec-daemon.8",
        "xipsec-sa-add.8",
        "xipsec-sp-add.8",
        "xipsec-status.8",
    ] {
        assert!(pages.contains(&page.to_owned()), "{page} in {pages:?}");
    }
    for page in &pages {
        let out = Command::new("man")
            .args(["--warnings", "-l"])
            .arg(root.join(MAN8).join(format!("{page}.gz")))
            .env("MANWIDTH", "100")
            .env("MAN_KEEP_FORMATTING", "0")
            .output()
            .expect("running man");
        let text = plain(&String::from_utf8_lossy(&out.stdout));
        let title = page.trim_end_matches(".8");
        assert!(out.status.success(), "man -l {page}");
        assert!(
            text.contains("NAME") && text.contains(&format!("{title}(8)")),
            "{page}: {text}"
        );
        // The only warning groff may give: an example line wider than the page.
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.lines().all(|l| l.contains("cannot adjust line")),
            "{page}: {stderr}"
        );
    }
    let daemon_page = plain(&run(Command::new("man")
        .arg("-l")
        .arg(root.join(MAN8).join("xipsec-daemon.8.gz"))
        .env("MANWIDTH", "100")));
    assert!(
        daemon_page.contains("--metrics-listen"),
        "the options are in the page"
    );

    let bash = root.join("usr/share/bash-completion/completions/xipsec");
    // What bash offers after `xipsec sa `, through the packaged completion function.
    let offered = run(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p xipsec >/dev/null && COMP_WORDS=(xipsec sa '') COMP_CWORD=2 \
         && _xipsec xipsec '' sa && echo \"${{COMPREPLY[@]}}\"",
        bash.display()
    )));
    for word in ["list", "add", "remove", "reset-replay"] {
        assert!(
            offered.split_whitespace().any(|w| w == word),
            "{word} in {offered}"
        );
    }
    for (shell, file) in [
        ("zsh", "usr/share/zsh/vendor-completions/_xipsec"),
        ("fish", "usr/share/fish/vendor_completions.d/xipsec.fish"),
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(shell);
        assert!(
            text.contains("reset-replay") && text.contains("metrics-listen"),
            "{shell}"
        );
    }

    let copyright =
        std::fs::read_to_string(root.join("usr/share/doc/xipsec/copyright")).expect("copyright");
    let notice = copyright.lines().take(8).collect::<Vec<_>>().join("\n");
    assert!(
        notice.contains("NOTICE: AF_XDP")
            && notice.contains("xdpilone")
            && notice.contains("EUPL-1.2"),
        "the notice comes first:\n{notice}"
    );
    assert!(
        copyright.contains("EUROPEAN UNION PUBLIC LICENCE v. 1.2"),
        "the full text"
    );
    for krate in [
        "aya 0.14.0",
        "tokio ",
        "xdpilone 1.3.0: EUPL-1.2",
        "aya-ebpf ",
    ] {
        assert!(copyright.contains(krate), "{krate} listed");
    }
}

#[test]
fn systemd_analyze_verifies_the_unit_in_the_unpacked_tree() {
    let root = unpacked();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.path().display()))
        .arg("/lib/systemd/system/xipsec.service")
        .env("MANPATH", root.path().join("usr/share/man"))
        .output()
        .expect("running systemd-analyze");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.is_empty(),
        "systemd-analyze verify: {said}"
    );
    let unit = std::fs::read_to_string(root.path().join("lib/systemd/system/xipsec.service"))
        .expect("the unit");
    for line in [
        "DefaultDependencies=no",
        "Wants=network-pre.target",
        "Before=network-pre.target shutdown.target",
        "Type=notify",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/default/xipsec",
        "ExecStart=/usr/libexec/xipsec/xipsec-daemon",
        "StateDirectory=xipsec",
        "RuntimeDirectory=xipsec",
        "ProtectSystem=strict",
        "DeviceAllow=/dev/net/tun rw",
        "RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_PACKET AF_XDP",
    ] {
        assert!(unit.lines().any(|l| l == line), "{line} not in the unit");
    }
}

#[test]
fn the_wrapper_refuses_an_empty_interface_list() {
    let root = unpacked();
    let out = Command::new(root.path().join("usr/libexec/xipsec/xipsec-daemon"))
        .env("XIPSEC_INTERFACES", " ")
        .env("XIPSEC_BIN", "/bin/false")
        .output()
        .expect("running the wrapper");
    assert_eq!(
        out.status.code(),
        Some(78),
        "EX_CONFIG, which the unit does not restart"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("XIPSEC_INTERFACES"));
    // The words become --interface flags, then the options, in order.
    let echoed = run(
        Command::new(root.path().join("usr/libexec/xipsec/xipsec-daemon"))
            .env("XIPSEC_INTERFACES", "eth0  eth1")
            .env(
                "XIPSEC_OPTS",
                "--xdp-mode native --metrics-listen 127.0.0.1:9611",
            )
            .env("XIPSEC_BIN", "/bin/echo"),
    );
    assert_eq!(
        echoed,
        "daemon --interface eth0 --interface eth1 --xdp-mode native --metrics-listen 127.0.0.1:9611\n"
    );
}

/// The unit's `CapabilityBoundingSet` as setpriv's `--bounding-set` argument.
fn unit_capabilities(unit: &str) -> String {
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit bounds the capabilities");
    let mut set = "-all".to_owned();
    for cap in caps.split_whitespace() {
        set.push_str(",+");
        set.push_str(&cap.trim_start_matches("CAP_").to_lowercase());
    }
    set
}

/// The next notification on `socket`, within `timeout`; fails early, with `log`, if `daemon`
/// exits first.
fn notification(
    socket: &UnixDatagram,
    daemon: &mut std::process::Child,
    timeout: Duration,
    log: &dyn Fn() -> String,
) -> String {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("a timeout");
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1024];
    loop {
        match socket.recv(&mut buf) {
            Ok(n) => return String::from_utf8_lossy(&buf[..n]).into_owned(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("receiving a notification: {e}"),
        }
        if let Some(exit) = daemon.try_wait().expect("polling the daemon") {
            panic!("the daemon exited ({exit}) without notifying: {}", log());
        }
        assert!(
            Instant::now() < deadline,
            "no notification within {timeout:?}: {}",
            log()
        );
    }
}

#[test]
fn the_installed_package_runs_the_transport_exchange_under_the_units_limits() {
    as_root(
        "the_installed_package_runs_the_transport_exchange_under_the_units_limits",
        || {
            // dpkg --root into a scratch root: the maintainer scripts run without chroot (the
            // root has no shell) and, seeing DPKG_ROOT, leave the machine alone.
            let root = tempfile::Builder::new()
                .prefix("xipsec-root-")
                .tempdir()
                .expect("a scratch root");
            let admin = root.path().join("var/lib/dpkg");
            std::fs::create_dir_all(admin.join("info")).expect("dpkg's directory");
            std::fs::create_dir_all(admin.join("updates")).expect("dpkg's directory");
            std::fs::write(admin.join("status"), "").expect("dpkg's status");
            let dpkg = |args: &[&str]| {
                run(Command::new("dpkg")
                    .arg(format!("--root={}", root.path().display()))
                    .args(["--force-script-chrootless", "--force-depends"])
                    .args(args))
            };
            let installed = dpkg(&["-i", deb().to_str().expect("utf-8")]);
            assert!(
                installed.contains("systemctl enable --now xipsec"),
                "{installed}"
            );
            let status = dpkg(&["-s", "xipsec"]);
            assert!(status.contains("Status: install ok installed"), "{status}");
            assert!(
                status.contains("Conffiles:\n /etc/default/xipsec "),
                "{status}"
            );
            let bin = root.path().join("usr/sbin/xipsec");
            let wrapper = root.path().join("usr/libexec/xipsec/xipsec-daemon");
            let unit =
                std::fs::read_to_string(root.path().join("lib/systemd/system/xipsec.service"))
                    .expect("the unit");

            let net = VethPair::new("xpkp", 0x7c);
            let a = Sandbox::attached(&net.ns_a, &net.if_a).with_bin(bin.clone());
            // Mounts a's pin dir (the bpffs the daemon pins to); the command is ours.
            let _ = a.daemon_command();
            let notify_path = a.path().join("notify");
            let notify = UnixDatagram::bind(&notify_path).expect("binding the notify socket");
            // `--esp-tx raw`: b runs XDP too, so only ESP sent by the raw socket passes a tap.
            let opts = format!(
                "--esp-tx raw --pin-dir {} --state-dir {} --socket {}",
                a.pin_dir().display(),
                a.state_dir().display(),
                a.socket().display()
            );
            let log = std::fs::File::create(a.log_file()).expect("the log");
            let mut daemon = netns::exec(
                &net.ns_a,
                &[
                    "setpriv",
                    &format!("--bounding-set={}", unit_capabilities(&unit)),
                    "--inh-caps=-all",
                    "--no-new-privs",
                    "--",
                ],
            )
            .arg(&wrapper)
            .env("XIPSEC_BIN", &bin)
            .env("XIPSEC_INTERFACES", &net.if_a)
            .env("XIPSEC_OPTS", &opts)
            .env("NOTIFY_SOCKET", &notify_path)
            .env_remove("XIPSEC_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting the packaged daemon");
            let started = Instant::now();
            let ready = notification(&notify, &mut daemon, Duration::from_secs(30), &|| a.log());
            // At READY=1, and not a moment later (microseconds: a connect, one netlink
            // question): the socket accepts and XDP is attached.
            let connected = std::os::unix::net::UnixStream::connect(a.socket());
            let xdp = netns::in_netns(&net.ns_a, || {
                ipsec_user::datapath::inspect::xdp_state(&net.if_a)
            });
            assert!(
                connected.is_ok(),
                "READY=1 before the control socket accepted: {connected:?}: {}",
                a.log()
            );
            assert!(
                xdp.as_ref()
                    .is_ok_and(|x| x.mode == "generic" && x.program_id != 0),
                "READY=1 before XDP was attached: {xdp:?}"
            );
            let attached = netns::xdp_attached(&net.ns_a, &net.if_a);
            let answered = a.run(&["status", "--formatter", "json"]);
            assert!(
                ready.starts_with("READY=1\n"),
                "{ready} after {:?}: {}",
                started.elapsed(),
                a.log()
            );
            assert!(
                ready.contains(&format!("\nMAINPID={}", daemon.id())),
                "the wrapper execs the daemon, so systemd's main pid is the daemon: {ready}"
            );
            assert!(attached, "READY=1 before XDP was attached: {}", a.log());
            assert!(
                answered.status.success(),
                "READY=1 before the socket answered: {answered:?}"
            );
            let status: serde_json::Value =
                serde_json::from_str(&answered.stdout).expect("status json");
            assert_eq!(status["xdp_in_effect"], serde_json::json!(["generic"]));

            let b = Node::start_in(
                Sandbox::attached(&net.ns_b, &net.if_b)
                    .with_bin(bin.clone())
                    .with_daemon_args(&["--esp-tx", "raw"]),
            );
            for command in transport::commands(&net, true) {
                a.ok(&command.iter().map(String::as_str).collect::<Vec<_>>());
            }
            for command in transport::commands(&net, false) {
                b.ok_args(&command);
            }
            let capture = Capture::start(
                &net.ns_a,
                &net.if_a,
                &a.path().join("wire.pcap"),
                &[SPI_AB, SPI_BA],
            );
            assert!(
                traffic::ping(&net.ns_a, &net.addr_b, ("3", "2"), None),
                "ping over ESP: {}",
                a.log()
            );
            let (sent, received) = Transfer::start(&net, 9700, 5).wait();
            assert!(sent.starts_with("5000000 "), "{sent}: {}", a.log());
            assert_eq!(received, sent, "the stream arrived intact");
            let frames = capture.stop();
            frames.assert_only_esp("the packaged daemon's side");
            assert!(frames.esp_count() > 100, "the exchange went over ESP");

            signal(&daemon, libc::SIGTERM);
            let stopping = notification(&notify, &mut daemon, Duration::from_secs(10), &|| a.log());
            assert!(stopping.starts_with("STOPPING=1"), "{stopping}");
            let exit = wait_timeout(&mut daemon, Duration::from_secs(20));
            assert!(exit.success(), "{exit}: {}", a.log());
            drop(b);

            let purged = dpkg(&["-P", "xipsec"]);
            assert!(!root.path().join("usr/sbin/xipsec").exists(), "{purged}");
            assert!(
                !root.path().join("etc/default/xipsec").exists(),
                "purge removes the conffile"
            );
        },
    );
}
