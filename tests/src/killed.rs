//! After a kill -9 in the middle of a change: the checks the batch and apply tests share.
//!
//! A change from an old to a new configuration is interrupted by killing the daemon. While it
//! is dead, the pinned programs enforce the pinned maps, which must hold exactly the old or the
//! new policies; after a restart, the state file, `sp list`, `status` and the maps must all hold
//! exactly one of the two (the same one).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ipsec_user::daemon::state::{Saved, parse_saved};
use xipsec_testkit::daemon::{Node, wait_timeout};

use crate::maps::{model_meaning, pinned_meaning};

/// Start `xipsec COMMAND FILE` (`batch`, `apply`) against `node` without waiting for it.
pub fn spawn_change(node: &Node, command: &str, file: &Path) -> Child {
    Command::new(node.sandbox.bin())
        .arg("--socket")
        .arg(node.socket())
        .arg(command)
        .arg(file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting xipsec {command}: {e}"))
}

/// The state file as `node`'s daemon left it.
pub fn saved(node: &Node) -> Saved {
    let bytes = std::fs::read(node.sandbox.state_file()).expect("reading state.json");
    parse_saved(&bytes).expect("state.json parses")
}

/// Once `node`'s daemon has been killed (`when` says when, for messages) while `client` was
/// changing its configuration from `old` to `new`: check the maps while it is dead, restart it
/// and check what it restored. Returns which configuration (0 old, 1 new) the maps held while
/// dead, and which one (`"old"` or `"new"`) the restarted daemon holds.
pub fn after_kill9(
    node: &mut Node,
    client: &mut Child,
    (old, new): (&Saved, &Saved),
    when: &str,
) -> (usize, &'static str) {
    let _ = wait_timeout(client, Duration::from_mins(3));
    let meanings = [model_meaning(&old.spd), model_meaning(&new.spd)];
    let dead = pinned_meaning(&node.pin_dir());
    let dead_is = meanings
        .iter()
        .position(|m| *m == dead)
        .unwrap_or_else(|| panic!("{when}: the pinned maps hold a mix"));
    node.spawn();
    let state = saved(node);
    let is = if state == *old {
        "old"
    } else if state == *new {
        "new"
    } else {
        panic!(
            "{when}: the state is neither the old nor the new configuration ({} sps, generation \
             {})",
            state.spd.sps().len(),
            state.generation
        );
    };
    let (_, sps) = node.sandbox.lists();
    assert_eq!(
        sps.as_array().map(Vec::len),
        Some(state.spd.sps().len()),
        "{when}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&node.ok(&["status", "--formatter", "json"])).expect("status");
    assert_eq!(
        status["generation"].as_u64(),
        Some(state.generation),
        "{when}"
    );
    assert_eq!(
        pinned_meaning(&node.pin_dir()),
        model_meaning(&state.spd),
        "{when}: the restarted daemon's maps are not its state"
    );
    println!("{when}: maps while dead {dead_is}, state after restart {is}");
    (dead_is, is)
}
