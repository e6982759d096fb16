//! The one test kit of the workspace, used by `ipsec-user`'s integration tests, the kernel tests
//! in `tests/` and `xtask`'s lab (demo, end-to-end benchmark). A second copy of any of this is a
//! bug.
//!
//! - [`require_root`], [`as_root`] and [`ci`]: the privilege rule. A test that needs root fails under
//!   `CI=true` and skips, saying why, only outside CI.
//! - [`netns`]: network namespaces and veth pairs with unique names (so concurrent runs never
//!   meet), deleted on drop, also when the test panics. The only code of the workspace that
//!   creates network namespaces.
//! - [`daemon`]: an `xipsec daemon` child process (with or without the datapath) in its own
//!   temporary state directory, its log, and the CLI pointed at it.
//! - [`capture`]: a packet capture proven live by marker frames, decoded from the pcap.
//! - [`cli`]: running the CLI and the source document's examples.
//! - [`keys`]: the fixed test keys (the source document's example keys and one per other
//!   algorithm).
//! - [`traffic`]: the Python traffic fixtures (`tests/fixtures/traffic.py`) run in a namespace.
//!
//! It does not depend on `ipsec-user` (whose own tests use it): it drives the `xipsec` binary.

pub mod capture;
pub mod cli;
pub mod daemon;
pub mod keys;
pub mod netns;
pub mod stream;
pub mod strongswan;
pub mod traffic;

use std::{
    path::PathBuf,
    process::{Command, Output},
};

/// True when running under CI: `CI=true` or `CI=1`. A test that cannot run (not root, no BPF)
/// fails under CI and may skip, saying why, only outside it. The one rule of the workspace.
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Kernel tests need root. Under CI (see [`ci`]) a missing privilege fails the test loudly;
/// elsewhere the test prints why it did not run and returns `false`.
pub fn require_root(test: &str) -> bool {
    skip_unless(
        is_root(),
        test,
        "needs root (BPF, netns); run the tests as root: sudo -E cargo xtask test",
    )
}

/// Runs the kernel test `test`'s `body` when the process is root; otherwise applies
/// [`require_root`]'s rule (fail under CI, print why and skip elsewhere).
pub fn as_root(test: &str, body: impl FnOnce()) {
    if require_root(test) {
        body();
    }
}

/// The skip rule for any missing capability: `true` when `available`; otherwise a failure under
/// CI and, outside it, a printed `{test}: not run: {reason}` and `false`.
pub fn skip_unless(available: bool, test: &str, reason: &str) -> bool {
    if available {
        return true;
    }
    assert!(!ci(), "{test}: {reason}");
    eprintln!("{test}: not run: {reason}");
    false
}

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

/// The workspace root (the kit lives one level below it).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the kit has a parent directory")
        .to_path_buf()
}

/// A file under `tests/fixtures` (the Python traffic, scapy and decryption helpers).
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("tests/fixtures").join(name)
}
