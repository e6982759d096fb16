//! A real `xipsec daemon` child process in a temporary state directory of its own (never a fixed
//! `/tmp` name), with or without its datapath, killed on drop; and the CLI pointed at it.
//!
//! - [`Sandbox`]: the directory (state dir, control socket, log, bpffs pin dir) and how to start
//!   a daemon on it, as often as a test likes. [`Sandbox::new`] runs `--no-datapath` (no root);
//!   [`Sandbox::attached`] runs inside a network namespace on an interface, its pins on a bpffs
//!   mounted in the test's own mount namespace, so pinned programs outlive a killed daemon (whose
//!   `ip netns exec` mount namespace dies with it), as `/sys/fs/bpf` does on a real host.
//! - [`Daemon`]: one running process: SIGTERM with a checked clean exit, or SIGKILL.
//! - [`Node`]: a sandbox and its current daemon, as the kernel tests and the lab use them.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    time::{Duration, Instant},
};

use crate::cli::{Run, run_with};

/// How long a daemon may take to answer its first `status`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `xipsec` binary: `$XIPSEC_BIN`, or the one in the cargo profile directory of the running
/// executable (`target/release/deps/test-…` → `target/release/xipsec`). Tests do not build it:
/// `cargo build --release -p ipsec-user --bins` first (`cargo xtask test` does).
pub fn xipsec_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("XIPSEC_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("the running executable's path");
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("xipsec"))
        .collect();
    candidates
        .iter()
        .find(|bin| bin.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "no xipsec binary in {candidates:?}: build it first \
                 (cargo build --release -p ipsec-user --bins)"
            )
        })
}

/// Where a daemon attaches: an interface of a network namespace.
#[derive(Clone, Debug)]
struct Attach {
    ns: String,
    interface: String,
}

/// A temporary directory holding one daemon's state dir, socket, log and pin dir; removed on
/// drop (the pin dir's bpffs unmounted first).
pub struct Sandbox {
    /// The temporary directory itself.
    pub dir: tempfile::TempDir,
    attach: Option<Attach>,
    /// The binary, when not [`xipsec_bin`].
    bin: Option<PathBuf>,
    /// Extra `xipsec daemon` arguments (e.g. `--xdp-mode native`).
    daemon_args: Vec<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox for `xipsec daemon --no-datapath`: no root needed.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("xipsec-test-")
                .tempdir()
                .expect("creating a temporary directory"),
            attach: None,
            bin: None,
            daemon_args: Vec::new(),
        }
    }

    /// A sandbox for a daemon with its datapath on `interface` of namespace `ns` (needs root).
    pub fn attached(ns: &str, interface: &str) -> Self {
        let mut sandbox = Self::new();
        sandbox.attach = Some(Attach {
            ns: ns.into(),
            interface: interface.into(),
        });
        sandbox
    }

    /// Use `bin` as the `xipsec` binary.
    #[must_use]
    pub fn with_bin(mut self, bin: PathBuf) -> Self {
        self.bin = Some(bin);
        self
    }

    /// Give every daemon of this sandbox `args` too.
    #[must_use]
    pub fn with_daemon_args(mut self, args: &[&str]) -> Self {
        self.daemon_args = args.iter().map(ToString::to_string).collect();
        self
    }

    /// The `xipsec` binary this sandbox runs.
    pub fn bin(&self) -> PathBuf {
        self.bin.clone().unwrap_or_else(xipsec_bin)
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.path().join("s")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.path().join("state")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The daemon's stderr, appended to by every daemon [`Self::start`] runs.
    pub fn log_file(&self) -> PathBuf {
        self.path().join("daemon.log")
    }

    /// The bpffs the attached daemon pins to (see the module doc).
    pub fn pin_dir(&self) -> PathBuf {
        self.path().join("bpf")
    }

    /// Everything the daemons of this sandbox logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    /// The daemon command line for this sandbox (stderr piped, so `.output()` captures it).
    /// An attached daemon runs under `ip netns exec`, which execs it in place (same pid); its
    /// pin dir is mounted here first.
    pub fn daemon_command(&self) -> Command {
        let mut command = match &self.attach {
            None => {
                let mut command = Command::new(self.bin());
                command.args(["daemon", "--no-datapath"]);
                // Quiet unless asked: the CLI tests read the daemon's stderr.
                command.env("RUST_LOG", "warn");
                command
            }
            Some(attach) => {
                self.mount_pin_dir();
                let mut command = crate::netns::exec(&attach.ns, &[]);
                command
                    .arg(self.bin())
                    .args(["daemon", "--interface", &attach.interface, "--pin-dir"])
                    .arg(self.pin_dir());
                command
            }
        };
        command
            .args(&self.daemon_args)
            .arg("--state-dir")
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .env_remove("XIPSEC_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Runs a daemon that must refuse to start (and exit); what it printed on stderr.
    pub fn refused(&self) -> String {
        refused(self.daemon_command())
    }

    fn mount_pin_dir(&self) {
        let pin = self.pin_dir();
        std::fs::create_dir_all(&pin).expect("creating the pin dir");
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == pin.to_str());
        if !mounted {
            crate::sh(&[
                "mount",
                "-t",
                "bpf",
                "bpf",
                pin.to_str().expect("utf-8 path"),
            ]);
        }
    }

    /// Start a daemon (stderr appended to [`Self::log_file`]) and wait until it answers.
    pub fn start(&self) -> Daemon {
        self.start_command(self.daemon_command())
    }

    /// Start `command` (from [`Self::daemon_command`], perhaps with extra environment) and wait
    /// until it answers.
    pub fn start_command(&self, mut command: Command) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())
            .expect("opening the daemon log");
        let child = command.stderr(log).spawn().expect("spawning xipsec daemon");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
            log_file: self.log_file(),
        };
        daemon.wait_ready(&self.bin());
        daemon
    }

    /// Run `xipsec ARGS` against this sandbox's daemon.
    pub fn run(&self, args: &[&str]) -> Run {
        run_with(&self.bin(), &self.socket(), args)
    }

    /// Run `xipsec ARGS` and expect success with nothing on stderr; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.status.success() && run.stderr.is_empty(),
            "xipsec {args:?} failed: {run:?}"
        );
        run.stdout
    }

    /// `sa list` and `sp list` as JSON values.
    pub fn lists(&self) -> (serde_json::Value, serde_json::Value) {
        let parse = |args: &[&str]| -> serde_json::Value {
            serde_json::from_str(&self.ok(args)).expect("list --formatter json output parses")
        };
        (
            parse(&["sa", "list", "--formatter", "json"]),
            parse(&["sp", "list", "--formatter", "json"]),
        )
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.attach.is_some() {
            // Lazily: a pinned program may still hold it; the directory goes next.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.pin_dir())
                .output();
        }
    }
}

/// A running daemon child process; SIGKILLed on drop unless stopped.
pub struct Daemon {
    child: Option<Child>,
    /// Its control socket.
    pub socket: PathBuf,
    log_file: PathBuf,
}

impl Daemon {
    fn wait_ready(&mut self, bin: &Path) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if run_with(bin, &self.socket, &["status"]).status.success() {
                return;
            }
            let child = self.child.as_mut().expect("daemon child");
            if let Some(status) = child.try_wait().expect("polling the daemon") {
                panic!(
                    "the daemon exited before answering ({status}): {}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within {READY_TIMEOUT:?}: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon child").id()
    }

    /// What the sandbox's daemons logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }

    /// SIGTERM and wait; the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon child");
        signal(&child, libc::SIGTERM);
        wait_timeout(&mut child, READY_TIMEOUT)
    }

    /// SIGTERM, and expect a clean exit that removes the socket.
    pub fn stop(self) {
        let (socket, log_file) = (self.socket.clone(), self.log_file.clone());
        let status = self.terminate();
        let log = std::fs::read_to_string(log_file).unwrap_or_default();
        assert!(
            status.success(),
            "the daemon exited with {status} on SIGTERM: {log}"
        );
        assert!(!socket.exists(), "the daemon left its socket behind");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("daemon child");
        signal(&child, libc::SIGKILL);
        let _ = wait_timeout(&mut child, READY_TIMEOUT);
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `command`, a daemon that must refuse to start (and exit); what it printed on stderr.
pub fn refused(mut command: Command) -> String {
    let output = command.output().expect("running the daemon");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(!output.status.success(), "the daemon started: {stderr}");
    stderr
}

/// Send `sig` to our own, not yet reaped, child.
pub fn signal(child: &Child, sig: libc::c_int) {
    let pid = i32::try_from(child.id()).expect("pid fits in i32");
    // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}) failed");
}

/// Wait for `child` to exit, killing it (and failing) after `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("polling a child") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {timeout:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sandbox and its current daemon: a host of the kernel tests and the lab, restartable on
/// the same state.
pub struct Node {
    daemon: Option<Daemon>,
    /// The state, socket and pin dir (dropped after the daemon).
    pub sandbox: Sandbox,
}

impl Node {
    /// Start a daemon with its datapath on `interface` of namespace `ns`.
    pub fn start(ns: &str, interface: &str) -> Self {
        Self::start_in(Sandbox::attached(ns, interface))
    }

    /// As [`Self::start`], but sending ESP by the raw socket (`--esp-tx raw`) so the sending
    /// interface's packet taps see it. For tests where both hosts run xipsec: XDP hides
    /// received ESP from taps on the receiving side and AF_XDP transmission (the default)
    /// hides it on the sending side, so only a raw-socket sender leaves ESP a capture can see.
    pub fn start_tap_visible(ns: &str, interface: &str) -> Self {
        Self::start_in(Sandbox::attached(ns, interface).with_daemon_args(&["--esp-tx", "raw"]))
    }

    /// Start a daemon on `sandbox`.
    pub fn start_in(sandbox: Sandbox) -> Self {
        let mut node = Self {
            daemon: None,
            sandbox,
        };
        node.spawn();
        node
    }

    /// Start (again) on the same state.
    pub fn spawn(&mut self) {
        self.daemon = Some(self.sandbox.start());
    }

    /// SIGTERM and wait (the exit status is not checked).
    pub fn stop(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            let _ = daemon.terminate();
        }
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(daemon) = self.daemon.take() {
            daemon.kill9();
        }
    }

    /// The daemon's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.daemon.as_ref().map(Daemon::pid)
    }

    pub fn dir(&self) -> &Path {
        self.sandbox.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.sandbox.socket()
    }

    pub fn pin_dir(&self) -> PathBuf {
        self.sandbox.pin_dir()
    }

    pub fn log(&self) -> String {
        self.sandbox.log()
    }

    /// `xipsec ARGS` against this node's daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(self.sandbox.bin())
            .arg("--socket")
            .arg(self.socket())
            .args(args)
            .output()
            .expect("running xipsec")
    }

    /// Run the CLI and insist it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "xipsec {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Node {
    /// [`Self::ok`] for owned arguments (as argument builders return them).
    pub fn ok_args(&self, args: &[String]) -> String {
        self.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    }

    /// Field `field` (a number) of the entry whose `key` is `value` in `xipsec COMMAND
    /// --formatter json` (a JSON array), e.g. `(&["sa", "list"], ("name", "sa1"), "packets")`.
    pub fn listed(&self, command: &[&str], (key, value): (&str, &str), field: &str) -> u64 {
        let args = [command, &["--formatter", "json"]].concat();
        let out = self.ok(&args);
        let list: serde_json::Value = serde_json::from_str(&out).expect("parsing a JSON list");
        list.as_array()
            .expect("a JSON array")
            .iter()
            .find(|entry| entry[key] == value)
            .and_then(|entry| entry[field].as_u64())
            .unwrap_or_else(|| panic!("{value}.{field} not listed by {command:?}: {out}"))
    }

    /// Counter `field` of SA `sa` (`sa list`).
    pub fn sa_counter(&self, sa: &str, field: &str) -> u64 {
        self.listed(&["sa", "list"], ("name", sa), field)
    }

    /// Counter `field` of SP `sp` (`sp list`).
    pub fn sp_counter(&self, sp: &str, field: &str) -> u64 {
        self.listed(&["sp", "list"], ("name", sp), field)
    }

    /// The packets counted for drop or pass reason `reason` (`stats`).
    pub fn stat(&self, reason: &str) -> u64 {
        self.listed(&["stats"], ("reason", reason), "packets")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // The daemon first, then the sandbox (field order would do it too; say it).
        self.kill9();
    }
}
