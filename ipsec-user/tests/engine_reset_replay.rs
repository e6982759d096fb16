//! `xipsec sa reset-replay` through a real daemon (`--no-datapath`: the command's plumbing, its
//! errors and its help; the engine's side is unit-tested in `engine::core`).

use xipsec_testkit::{
    cli::{SA_EXAMPLE, single_error_line},
    daemon::Sandbox,
};

#[test]
fn reset_replay_names_an_existing_sa_and_changes_no_policy() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    sandbox.ok(SA_EXAMPLE);
    let before = sandbox.lists();
    assert_eq!(
        sandbox.ok(&["sa", "reset-replay", "--sa-name", "sa1"]),
        "",
        "silent on success, like add and remove"
    );
    assert_eq!(sandbox.lists(), before, "the SPD is untouched");

    let missing = sandbox.run(&["sa", "reset-replay", "--sa-name", "nope"]);
    let line = single_error_line(&missing, "reset-replay of a missing sa");
    assert!(
        line.contains("nope") && line.contains("nothing changed"),
        "{line}"
    );
    let unnamed = sandbox.run(&["sa", "reset-replay"]);
    let line = single_error_line(&unnamed, "reset-replay without a name");
    assert!(line.contains("--sa-name"), "{line}");
    daemon.stop();
}

#[test]
fn reset_replay_help_says_what_it_costs() {
    let sandbox = Sandbox::new();
    let help = sandbox.run(&["sa", "reset-replay", "--help"]);
    assert!(help.status.success(), "{help:?}");
    for needed in ["captured", "replay", "esp-replay.json", "--sa-name"] {
        assert!(
            help.stdout.contains(needed),
            "help lacks {needed:?}: {}",
            help.stdout
        );
    }
}
