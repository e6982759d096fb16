//! The README's main command, `cargo xtask demo`, run as CI runs the tests: it must finish with
//! exit 0, and its own checks are part of that: every action's traffic does what the policy says,
//! only ESP crosses the wire for the protected flows, the discard policy counts its 5 datagrams
//! once each with their bytes, and a protected TCP stream's policy and SA count the same packets
//! (packets on the wire: a GSO super-packet as its segments). Forcing the egress policy count to
//! 1 per super-packet turns it red ("the policy counted 548 packets, its SA 7520").

use std::path::PathBuf;
use std::process::Command;

use xipsec_testkit::as_root;

#[test]
fn the_demo_runs_and_its_checks_pass() {
    as_root("the_demo_runs_and_its_checks_pass", || {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the workspace")
            .to_path_buf();
        // The binary the other kernel tests run (target/release/xipsec), not a rebuild with
        // other features.
        let out = Command::new("cargo")
            .args(["xtask", "demo", "--no-build"])
            .current_dir(&workspace)
            .output()
            .expect("running cargo xtask demo");
        assert!(
            out.status.success(),
            "cargo xtask demo failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}
