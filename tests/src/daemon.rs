//! A real `xipsec daemon` in a namespace, with its own state dir, socket and pin dir, killed
//! on drop; and the CLI pointed at it.

use std::{
    path::PathBuf,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

/// The `xipsec` binary next to the running test (cargo builds it with the workspace).
pub fn xipsec_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target profile dir");
    let bin = dir.join("xipsec");
    assert!(
        bin.exists(),
        "{} is missing: build it first (cargo xtask test builds the whole workspace)",
        bin.display()
    );
    bin
}

pub struct Daemon {
    pub name: String,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub ns: String,
    pub interface: String,
    child: Option<Child>,
}

impl Daemon {
    /// Start a daemon in `ns` on `interface`; state under /tmp/xipsec-test-{name}.
    pub fn start(name: &str, ns: &str, interface: &str) -> Self {
        let dir = PathBuf::from(format!("/tmp/xipsec-test-{name}"));
        let _ = Command::new("umount")
            .arg("-l")
            .arg(dir.join("bpf"))
            .output();
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating the test state dir");
        let mut d = Self {
            name: name.into(),
            socket: dir.join("control.sock"),
            dir,
            ns: ns.into(),
            interface: interface.into(),
            child: None,
        };
        d.spawn();
        d
    }

    /// The pin directory: a bpffs mounted in the test's own mount namespace, so pinned links
    /// outlive a killed daemon (whose `ip netns exec` mount namespace dies with it), as
    /// `/sys/fs/bpf` does on a real host.
    pub fn pin_dir(&self) -> PathBuf {
        self.dir.join("bpf")
    }

    /// Start (again) on the same state.
    pub fn spawn(&mut self) {
        let pin = self.pin_dir();
        std::fs::create_dir_all(&pin).expect("creating the pin dir");
        let mounted = std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|l| l.split(' ').nth(1) == pin.to_str());
        if !mounted {
            crate::netns::sh(&[
                "mount",
                "-t",
                "bpf",
                "bpf",
                pin.to_str().expect("utf-8 path"),
            ]);
        }
        let log = std::fs::File::create(self.dir.join("daemon.log")).expect("daemon log");
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(xipsec_bin())
            .args(["daemon", "--interface", &self.interface, "--state-dir"])
            .arg(self.dir.join("state"))
            .arg("--socket")
            .arg(&self.socket)
            .arg("--pin-dir")
            .arg(self.pin_dir())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting xipsec daemon");
        self.child = Some(child);
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if self.cli(&["status"]).status.success() {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("daemon exited early ({status}): {}", self.log());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("daemon did not answer within 20 s: {}", self.log());
    }

    /// The daemon's process id while it runs (`ip netns exec` execs the daemon in place).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(xipsec_bin())
            .arg("--socket")
            .arg(&self.socket)
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

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }

    /// SIGKILL and wait.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.pin_dir())
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The sum over CPUs of datapath counter `counter` in the maps pinned under `pin_dir`: readable
/// while the daemon is dead, from the maps of the programs that are still attached.
pub fn pinned_counter(pin_dir: &std::path::Path, counter: ipsec_common::abi::Counter) -> u64 {
    use aya::maps::{Map, MapData, PerCpuArray};
    let path = pin_dir.join(ipsec_common::abi::COUNTERS);
    let map = MapData::from_pin(&path)
        .unwrap_or_else(|e| panic!("opening the pinned counters {}: {e}", path.display()));
    let counters: PerCpuArray<_, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(map)).expect("the counters are a per-CPU array");
    counters
        .get(&(counter as u32), 0)
        .expect("reading a counter")
        .iter()
        .sum()
}
