//! Shared by the `cli_*` tests: a `xipsec daemon --no-datapath` child process in a temporary
//! directory (killed on drop), a runner for `xipsec` commands, and the source document's examples.
//!
//! No root needed: the daemon attaches nothing and its socket and state live in the test's own
//! temporary directory.

#![allow(dead_code)] // Each test binary uses a different part of this module.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use ipsec_user::cli::client;
use ipsec_user::daemon::protocol::{Request, Response};

pub const XIPSEC: &str = env!("CARGO_BIN_EXE_xipsec");

/// True when running under CI (`ipsec_user::testing::ci`, the one rule of the workspace).
pub fn ci() -> bool {
    ipsec_user::testing::ci()
}

/// The source document's `sa add` example, verbatim.
pub const SA_EXAMPLE: &[&str] = &[
    "sa",
    "add",
    "--sa-source",
    "3ffe:501:ffff:0::a",
    "--sa-destination",
    "3ffe:501:ffff:0001:0000:0000:0000:0001",
    "--sa-mode",
    "transport",
    "--sa-spi",
    "0x1000",
    "--encryption-algorithm",
    "3des-cbc",
    "--encryption-key",
    "0x6970763672656164796c6f676f336465736362636f757432",
    "--integrity-algorithm",
    "hmac-sha1",
    "--integrity-key",
    "0x6970763672656164796c6f67736861316f757432",
    "--sa-name",
    "sa1",
];

/// The source document's `sp add` example, verbatim (with `sp`, which the source omits).
pub const SP_EXAMPLE: &[&str] = &[
    "sp",
    "add",
    "--sp-source=2001:db8:1::/64",
    "--sp-destination=2002:db8:1::/64",
    "--source-port=23",
    "--destination-port=25",
    "--upper-layer-protocol=tcp",
    "--flow-direction=out",
    "--action=ipsec",
    "--sp-mode=transport",
    "--sa-name=sa1",
    "--sp-name=sp1",
];

/// A temporary directory holding one daemon's state dir and socket.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("creating a temporary directory"),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("s")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("state.json")
    }

    /// The daemon command line for this sandbox.
    pub fn daemon_command(&self) -> Command {
        let mut command = Command::new(XIPSEC);
        command
            .args(["daemon", "--no-datapath", "--state-dir"])
            .arg(self.state_dir())
            .arg("--socket")
            .arg(self.socket())
            .env_remove("XIPSEC_SOCKET")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        command
    }

    /// Start a daemon and wait until it answers.
    pub fn start(&self) -> Daemon {
        let child = self
            .daemon_command()
            .spawn()
            .expect("spawning xipsec daemon");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
        };
        daemon.wait_ready();
        daemon
    }

    /// Run `xipsec ARGS` against this sandbox's daemon.
    pub fn run(&self, args: &[&str]) -> Run {
        run_on(&self.socket(), args)
    }

    /// Run `xipsec ARGS` and expect success; returns stdout.
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

/// A finished `xipsec` command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `xipsec ARGS` with `XIPSEC_SOCKET=socket`.
pub fn run_on(socket: &Path, args: &[&str]) -> Run {
    let output: Output = Command::new(XIPSEC)
        .args(args)
        .env("XIPSEC_SOCKET", socket)
        .stdin(Stdio::null())
        .output()
        .expect("running xipsec");
    Run {
        status: output.status,
        stdout: String::from_utf8(output.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(output.stderr).expect("stderr is UTF-8"),
    }
}

/// A running daemon child process; SIGKILLed on drop unless stopped.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
}

impl Daemon {
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Response::Status(_)) = client::call(&self.socket, &Request::Status) {
                return;
            }
            let child = self.child.as_mut().expect("daemon child");
            if let Some(status) = child.try_wait().expect("polling the daemon") {
                let stderr = read_stderr(child);
                panic!("the daemon exited before answering ({status}): {stderr}");
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> i32 {
        let id = self.child.as_ref().expect("daemon child").id();
        i32::try_from(id).expect("pid fits in i32")
    }

    /// SIGTERM, and expect a clean exit that removes the socket.
    pub fn stop(mut self) {
        let mut child = self.child.take().expect("daemon child");
        signal(&child, libc::SIGTERM);
        let status = wait_timeout(&mut child, Duration::from_secs(20));
        let stderr = read_stderr(&mut child);
        assert!(
            status.success(),
            "the daemon exited with {status} on SIGTERM: {stderr}"
        );
        assert!(!self.socket.exists(), "the daemon left its socket behind");
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        let mut child = self.child.take().expect("daemon child");
        signal(&child, libc::SIGKILL);
        let _ = wait_timeout(&mut child, Duration::from_secs(20));
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

fn signal(child: &Child, sig: libc::c_int) {
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

fn read_stderr(child: &mut Child) -> String {
    use std::io::Read;
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_string(&mut stderr);
    }
    stderr
}

/// Assert `run` failed with exactly one stderr line starting `error:`, and return that line.
pub fn single_error_line(run: &Run, what: &str) -> String {
    assert!(
        !run.status.success(),
        "{what}: expected failure, got {run:?}"
    );
    let lines: Vec<&str> = run.stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one stderr line, got {:?}",
        run.stderr
    );
    assert!(lines[0].starts_with("error: "), "{what}: {:?}", lines[0]);
    lines[0].to_owned()
}
