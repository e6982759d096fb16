//! `xipsec apply` and `xipsec export` against real daemons.
//!
//! - A 2,000-line file applied, then a changed copy: only the difference changes. The state
//!   file shows every untouched SP with the same slot and creation number (not removed and
//!   added again), every changed one renewed, and the pinned kernel maps equal the model's.
//! - An invalid line first, in the middle or last leaves state file, lists and pinned maps
//!   byte-for-byte as they were; the error names the line and the option. So does a `remove`
//!   line.
//! - `--dry-run` prints exactly the difference (fields named, keys never shown) and changes
//!   nothing; `export | apply --dry-run -` finds no difference; an exported file with its keys
//!   rebuilds the configuration on an empty daemon; a redacted one is refused there.
//! - kill -9 of the daemon at several moments of a 20,000-policy apply, then a restart, leaves
//!   exactly the old or exactly the new configuration (state file, lists and pinned maps, also
//!   while the daemon is dead).
//! - Two applies sent at once are applied one after the other, each whole: an observer never
//!   sees a mix, and the end state is exactly the later one's file.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ipsec_tests::killed::{self, after_kill9, spawn_change};
use ipsec_tests::maps::{Meaning, model_meaning, pinned_meaning};
use ipsec_user::daemon::state::{Saved, parse_saved};
use xipsec_testkit::{
    as_root,
    cli::{Run, sa_line, single_error_line, without_counters, write_batch},
    daemon::{Node, Sandbox, wait_timeout},
    netns::VethPair,
};

const SA_OUT_KEY: &str = "0x000102030405060708090a0b0c0d0e0f";

/// The configuration of the tests: two SAs between `fd00:a9::1` and `fd00:a9::2` and `n`
/// policies (every 10th protected by an SA, the rest inbound discards of one source each),
/// with `sa-out`'s encryption key `key`. `change` edits policy `i`'s destination port (as
/// `Some(port)`) or drops it (`None`).
fn config(n: u32, key: &str, change: impl Fn(u32) -> Option<Option<u16>>) -> Vec<String> {
    let (a, b) = ("fd00:a9::1", "fd00:a9::2");
    let mut lines = vec![
        "# the whole configuration".to_owned(),
        sa_line("sa-in", (b, a), 0x4100),
        sa_line("sa-out", (a, b), 0x4101).replace(
            &format!("--encryption-key 0x{}", xipsec_testkit::keys::AES128),
            &format!("--encryption-key {key}"),
        ),
    ];
    for i in 0..n {
        let port = match change(i) {
            None => 1000 + (i % 60_000),
            Some(Some(port)) => u32::from(port),
            Some(None) => continue,
        };
        lines.push(if i % 10 == 0 {
            let (dir, src, dst, sa) = if i % 20 == 0 {
                ("out", a, b, "sa-out")
            } else {
                ("in", b, a, "sa-in")
            };
            format!(
                "esxcli network ip ipsec sp add --sp-name p{i} --sp-source {src}/128 \
                 --sp-destination {dst}/128 --source-port any --destination-port {port} \
                 --upper-layer-protocol tcp --flow-direction {dir} --sa-name {sa}"
            )
        } else {
            format!(
                "sp add --sp-name p{i} --sp-source fd00:ffff::{:x}:{:x}/128 --sp-destination \
                 any --source-port any --destination-port {port} --upper-layer-protocol udp \
                 --flow-direction in --action discard",
                i >> 16,
                i & 0xffff
            )
        });
    }
    lines
}

/// `apply ARGS` on `sandbox`.
fn apply(sandbox: &Sandbox, args: &[&str]) -> Run {
    sandbox.run(&[&["apply"], args].concat())
}

/// `apply FILE` that must succeed; its stdout.
fn apply_ok(sandbox: &Sandbox, file: &Path) -> String {
    let run = apply(sandbox, &[file.to_str().expect("a UTF-8 path")]);
    assert!(
        run.status.success() && run.stderr.is_empty(),
        "apply failed: {run:?}"
    );
    run.stdout
}

/// `xipsec ARGS` on `sandbox` with `input` on standard input.
fn with_stdin(sandbox: &Sandbox, args: &[&str], input: &str) -> Run {
    let mut child = Command::new(sandbox.bin())
        .args(args)
        .env("XIPSEC_SOCKET", sandbox.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running xipsec");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("writing stdin");
    Run::from(child.wait_with_output().expect("waiting for xipsec"))
}

fn saved(sandbox: &Sandbox) -> Saved {
    parse_saved(&std::fs::read(sandbox.state_file()).expect("reading state.json"))
        .expect("state.json parses")
}

/// Per SP name: its slot and creation number, which only an add gives.
fn sp_identities(saved: &Saved) -> std::collections::BTreeMap<String, (u32, u32)> {
    saved
        .spd
        .sps()
        .iter()
        .map(|sp| (sp.name.clone(), (sp.id, sp.seq)))
        .collect()
}

/// Everything a configuration shows outside: state file, lists without counters, and the
/// pinned maps when there is a datapath.
#[derive(Debug, PartialEq)]
struct Seen {
    state: Vec<u8>,
    sas: serde_json::Value,
    sps: serde_json::Value,
    maps: Option<Meaning>,
}

fn seen(sandbox: &Sandbox, pin_dir: Option<&Path>) -> Seen {
    let (sas, sps) = sandbox.lists();
    Seen {
        state: std::fs::read(sandbox.state_file()).expect("reading state.json"),
        sas: without_counters(sas),
        sps: without_counters(sps),
        maps: pin_dir.map(pinned_meaning),
    }
}

#[test]
fn a_changed_copy_changes_only_the_difference() {
    as_root("a_changed_copy_changes_only_the_difference", || {
        let net = VethPair::new("xapd", 0xa91);
        let node = Node::start(&net.ns_a, &net.if_a);
        let sandbox = &node.sandbox;
        let dir = node.dir().to_path_buf();
        // 3 comment/SA lines and 1,997 policies: 2,000 lines.
        let first = config(1_997, SA_OUT_KEY, |_| None);
        assert_eq!(first.len(), 2_000);
        write_batch(&dir.join("first"), &first);
        let out = apply_ok(sandbox, &dir.join("first"));
        assert!(
            out.starts_with("generation 1: 1999 added, 0 removed, 0 changed\n"),
            "{out}"
        );
        let before = saved(sandbox);
        assert_eq!(pinned_meaning(&node.pin_dir()), model_meaning(&before.spd));

        // The copy: every 97th policy gets another port, every 101st goes, 30 are new, and
        // sa-out gets a new key (its 100 outbound policies go with it).
        let edit = |i: u32| match i {
            _ if i % 101 == 5 => Some(None),
            _ if i % 97 == 3 => Some(Some(7)),
            _ => None,
        };
        let mut second = config(2_027, "0xffeeddccbbaa99887766554433221100", |i| {
            if i >= 1_997 { None } else { edit(i) }
        });
        second.insert(1, "   # a comment moves the lines".to_owned());
        write_batch(&dir.join("second"), &second);
        let removed: BTreeSet<u32> = (0..1_997).filter(|&i| edit(i) == Some(None)).collect();
        let ported: BTreeSet<u32> = (0..1_997).filter(|&i| edit(i) == Some(Some(7))).collect();
        let readded: BTreeSet<u32> = (0..1_997)
            .filter(|i| i % 20 == 0 && !removed.contains(i) && !ported.contains(i))
            .collect();

        // The dry run names each difference and changes nothing.
        let dry = apply(
            sandbox,
            &["--dry-run", dir.join("second").to_str().expect("utf-8")],
        );
        assert!(dry.status.success(), "{dry:?}");
        let lines: Vec<&str> = dry.stdout.lines().collect();
        assert_eq!(
            lines[0],
            format!(
                "dry run at generation 1: 30 to add, {} to remove, {} to change",
                removed.len(),
                1 + ported.len() + readded.len()
            )
        );
        assert_eq!(lines[1], "~ sa sa-out: encryption-key");
        assert!(lines.contains(&"+ sp p2000"), "{}", dry.stdout);
        assert!(lines.contains(&"- sp p5"), "{}", dry.stdout);
        assert!(
            lines.contains(&"~ sp p3: destination-port"),
            "{}",
            dry.stdout
        );
        assert!(
            lines.contains(&"~ sp p20: re-added (its sa sa-out changes)"),
            "{}",
            dry.stdout
        );
        assert_eq!(
            lines.len(),
            1 + 30 + removed.len() + 1 + ported.len() + readded.len()
        );
        assert!(!dry.stdout.contains("ffeedd") && !dry.stdout.contains("00010203"));
        assert_eq!(saved(sandbox), before, "the dry run changed the state");

        let out = apply_ok(sandbox, &dir.join("second"));
        assert!(out.starts_with("generation 2: 30 added, "), "{out}");
        let after = saved(sandbox);
        assert_eq!(after.generation, 2, "one apply, one generation");
        let (old, new) = (sp_identities(&before), sp_identities(&after));
        let mut kept = 0;
        for (name, identity) in &old {
            let i: u32 = name[1..].parse().expect("p{i}");
            if removed.contains(&i) {
                assert!(!new.contains_key(name), "{name} was not removed");
            } else if ported.contains(&i) || readded.contains(&i) {
                assert!(new[name].1 > identity.1, "{name} was not renewed");
            } else {
                assert_eq!(new.get(name), Some(identity), "{name} was re-added");
                kept += 1;
            }
        }
        assert_eq!(kept, 1_997 - removed.len() - ported.len() - readded.len());
        assert_eq!(new.len(), 1_997 - removed.len() + 30);
        assert_eq!(pinned_meaning(&node.pin_dir()), model_meaning(&after.spd));
        // Applying it again finds nothing to do and leaves the generation.
        assert_eq!(
            apply_ok(sandbox, &dir.join("second")),
            "no difference at generation 2: nothing to do\n"
        );
        assert_eq!(saved(sandbox), after);
    });
}

#[test]
fn an_invalid_line_anywhere_changes_nothing() {
    as_root("an_invalid_line_anywhere_changes_nothing", || {
        let net = VethPair::new("xapi", 0xa92);
        let node = Node::start(&net.ns_a, &net.if_a);
        let sandbox = &node.sandbox;
        let dir = node.dir().to_path_buf();
        write_batch(&dir.join("base"), &config(300, SA_OUT_KEY, |_| None));
        apply_ok(sandbox, &dir.join("base"));
        let before = seen(sandbox, Some(&node.pin_dir()));
        // A changed copy (half the policies go) with one bad line first, in the middle, last.
        let good = config(150, "0xffeeddccbbaa99887766554433221100", |_| None);
        let last = good.len() - 1;
        for (at, what) in [(1, "first"), (80, "middle"), (last, "last")] {
            let mut lines = good.clone();
            lines[at] = "sp add --sp-name bad --sp-source fd00::/64 --sp-destination any \
                         --source-port any --destination-port 70000 --flow-direction in \
                         --action discard"
                .to_owned();
            let file = dir.join(format!("bad-{what}"));
            write_batch(&file, &lines);
            let run = apply(sandbox, &[file.to_str().expect("utf-8")]);
            let error = single_error_line(&run, what);
            assert!(
                error.starts_with(&format!(
                    "error: line {} (item {}): --destination-port: '70000' is not valid",
                    at + 1,
                    at
                )),
                "{what}: {error}"
            );
            assert!(error.ends_with("; nothing changed"), "{error}");
            assert_eq!(seen(sandbox, Some(&node.pin_dir())), before, "{what}");
        }
        // A remove line, and a line the command line parser refuses.
        let file = dir.join("remove");
        let mut lines = good.clone();
        lines[40] = "sp remove --sp-name p1".to_owned();
        write_batch(&file, &lines);
        let error = single_error_line(&apply(sandbox, &[file.to_str().expect("utf-8")]), "remove");
        assert_eq!(
            error,
            "error: line 41 (item 40): sp remove cannot be in an apply file: it lists the whole \
             configuration, so leave the sp out to remove it (or use xipsec batch); nothing changed"
        );
        lines[40] = "sp add --sp-name x --port 1".to_owned();
        write_batch(&file, &lines);
        let error = single_error_line(&apply(sandbox, &[file.to_str().expect("utf-8")]), "parse");
        assert!(
            error.starts_with("error: line 41 (item 40): unexpected argument '--port'"),
            "{error}"
        );
        assert_eq!(seen(sandbox, Some(&node.pin_dir())), before);
    });
}

#[test]
fn export_round_trips_through_apply() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    let dir = sandbox.path().to_path_buf();
    write_batch(&dir.join("base"), &config(40, SA_OUT_KEY, |_| None));
    apply_ok(&sandbox, &dir.join("base"));
    let exported = sandbox.ok(&["export"]);
    assert_eq!(exported.lines().count(), 42, "{exported}");
    assert!(
        exported.starts_with("sa add --sa-name sa-in "),
        "{exported}"
    );
    assert!(
        !exported.contains(xipsec_testkit::keys::AES128),
        "{exported}"
    );
    assert_eq!(exported.matches("REDACTED").count(), 4);
    let before = saved(&sandbox);
    let dry = with_stdin(&sandbox, &["apply", "--dry-run", "-"], &exported);
    assert_eq!(
        dry.stdout, "no difference at generation 1: nothing to do\n",
        "{dry:?}"
    );
    let real = with_stdin(&sandbox, &["apply", "-"], &exported);
    assert_eq!(
        real.stdout, "no difference at generation 1: nothing to do\n",
        "{real:?}"
    );
    assert_eq!(saved(&sandbox), before);
    // Edited export: a changed port applies; the redacted keys stay the running ones.
    let edited = exported.replacen("--destination-port 1001 ", "--destination-port 9 ", 1);
    let run = with_stdin(&sandbox, &["apply", "-"], &edited);
    assert_eq!(
        run.stdout, "generation 2: 0 added, 0 removed, 1 changed\n~ sp p1: destination-port\n",
        "{run:?}"
    );
    let keys = |s: &Saved| {
        s.spd
            .sas()
            .iter()
            .map(|sa| {
                (
                    sa.encryption_key.as_bytes().to_vec(),
                    sa.integrity_key.as_bytes().to_vec(),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(&saved(&sandbox)), keys(&before));
    // A reviewed dry run pins its generation: the configuration has moved on since.
    let stale = with_stdin(
        &sandbox,
        &["apply", "--expect-generation", "1", "-"],
        &exported,
    );
    assert_eq!(
        single_error_line(&stale, "stale"),
        "error: the configuration is at generation 2, not 1: it changed since; nothing changed \
         (run apply --dry-run again to see the difference now)"
    );
    // The esxcli namespace without `esxcli`.
    let listed = sandbox.ok(&[
        "network",
        "ip",
        "ipsec",
        "sa",
        "list",
        "--formatter",
        "json",
    ]);
    assert!(listed.contains("\"sa-in\""), "{listed}");
    // A redacted key on a changed SA is refused, naming the line and option.
    let respi = edited.replacen("--sa-spi 0x4100", "--sa-spi 0x4102", 1);
    let error = single_error_line(&with_stdin(&sandbox, &["apply", "-"], &respi), "redacted");
    assert!(
        error.starts_with(
            "error: line 1 (item 1): --encryption-key: REDACTED is the placeholder xipsec export \
             prints instead of a key; it keeps the running key of sa 'sa-in' only while that sa \
             is otherwise unchanged, but it differs in sa-spi"
        ),
        "{error}"
    );

    // With keys (root only): a new 0600 file that rebuilds the configuration elsewhere.
    if !xipsec_testkit::is_root() {
        let file = dir.join("keys");
        let error = single_error_line(
            &sandbox.run(&["export", "--with-keys", file.to_str().expect("utf-8")]),
            "not root",
        );
        assert!(error.contains("root"), "{error}");
        return;
    }
    let file = dir.join("with-keys");
    let out = sandbox.ok(&["export", "--with-keys", file.to_str().expect("utf-8")]);
    assert_eq!(
        out,
        format!(
            "wrote 2 sas and 40 sps with their keys to {} (mode 0600)\n",
            file.display()
        )
    );
    let mode = std::fs::metadata(&file)
        .expect("the key file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let text = std::fs::read_to_string(&file).expect("the key file");
    assert!(text.contains(xipsec_testkit::keys::AES128) && !text.contains("REDACTED"));
    let again = sandbox.run(&["export", "--with-keys", file.to_str().expect("utf-8")]);
    assert!(single_error_line(&again, "exists").contains("exists"));
    let other = Sandbox::new();
    let _other_daemon = other.start();
    let refused = with_stdin(&other, &["apply", "-"], &exported);
    assert!(single_error_line(&refused, "elsewhere").contains("no sa of that name is running"));
    let rebuilt = with_stdin(&other, &["apply", "-"], &text);
    assert!(rebuilt.status.success(), "{rebuilt:?}");
    let (sas, sps) = sandbox.lists();
    let (other_sas, other_sps) = other.lists();
    assert_eq!(without_counters(other_sas), without_counters(sas));
    assert_eq!(without_counters(other_sps), without_counters(sps));
    let dry = with_stdin(&sandbox, &["apply", "--dry-run", "-"], &text);
    assert_eq!(dry.stdout, "no difference at generation 2: nothing to do\n");
}

#[test]
fn concurrent_applies_do_not_interleave() {
    let sandbox = Arc::new(Sandbox::new());
    let _daemon = sandbox.start();
    let dir = sandbox.path().to_path_buf();
    // Two whole configurations of different sizes: which one is seen tells them apart.
    write_batch(&dir.join("a"), &config(4_000, SA_OUT_KEY, |_| None));
    write_batch(
        &dir.join("b"),
        &config(3_000, "0xffeeddccbbaa99887766554433221100", |i| {
            // Discards only: the protected policies' selectors would collide on one port.
            (i % 10 != 0 && i % 2 == 0).then_some(Some(9))
        }),
    );
    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let (sandbox, done) = (Arc::clone(&sandbox), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                let status: serde_json::Value =
                    serde_json::from_str(&sandbox.ok(&["status", "--formatter", "json"]))
                        .expect("status");
                seen.insert(status["sps"].as_u64().expect("sps"));
            }
            seen
        })
    };
    let runs: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let (sandbox, file) = (Arc::clone(&sandbox), dir.join(name));
            std::thread::spawn(move || (name, apply_ok(&sandbox, &file)))
        })
        .collect();
    let mut results: Vec<(u64, &str)> = runs
        .into_iter()
        .map(|run| {
            let (name, out) = run.join().expect("an apply thread");
            let generation = out
                .strip_prefix("generation ")
                .and_then(|r| r.split(':').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("{out}"));
            (generation, name)
        })
        .collect();
    done.store(true, Ordering::SeqCst);
    let seen = observer.join().expect("the observer");
    results.sort_unstable();
    assert_eq!(results.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2]);
    assert!(
        seen.is_subset(&BTreeSet::from([0, 4_000, 3_000])),
        "a mix was visible: {seen:?}"
    );
    // The later one's file is what runs, exactly.
    let later = dir.join(results[1].1);
    let dry = apply(&sandbox, &["--dry-run", later.to_str().expect("utf-8")]);
    assert_eq!(
        dry.stdout, "no difference at generation 2: nothing to do\n",
        "{dry:?}"
    );
}

/// The old and new state of the kill -9 test's apply, computed as the daemon computes them.
fn expected_states(old: &Saved, text: &str) -> Saved {
    let items = ipsec_user::cli::batch::parse(text).expect("the file parses");
    let plan = ipsec_user::daemon::apply::plan(&old.spd, &items).expect("the file plans");
    let (spd, _) =
        ipsec_user::daemon::batch::apply(&old.spd, &plan.items).expect("the plan applies");
    Saved {
        spd,
        generation: old.generation + 1,
    }
}

/// When the kill -9 test kills the daemon.
#[derive(Clone, Copy, Debug)]
enum Moment {
    /// After the apply returned (and timed it).
    Completed,
    /// At this fraction of the completed run's time: before the daemon has the request, or
    /// while the file is parsed and the difference checked.
    At(f64),
    /// As soon as the datapath's epoch flips, before the state is written.
    Flipped,
    /// As soon as the state write has begun (`state.json.tmp` exists): written, not renamed.
    Writing,
    /// As soon as the new `state.json` is in place, perhaps before the answer.
    Written,
}

/// The datapath's active epoch, read from the pinned config map.
fn epoch(config: &aya::maps::Array<aya::maps::MapData, u64>) -> u64 {
    config
        .get(&ipsec_common::abi::CONFIG_EPOCH, 0)
        .expect("reading the epoch")
}

/// Wait (polling without pause, for at most a minute) until `happened`.
fn until(mut happened: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_mins(1);
    while !happened() {
        assert!(Instant::now() < deadline, "the moment never came");
        std::hint::spin_loop();
    }
}

#[test]
fn kill9_during_a_large_apply_leaves_the_old_or_the_new_configuration() {
    as_root(
        "kill9_during_a_large_apply_leaves_the_old_or_the_new_configuration",
        || {
            use std::os::unix::fs::MetadataExt;
            let mut outcomes = Vec::new();
            let mut duration = None;
            for moment in [
                Moment::Completed,
                Moment::At(0.0),
                Moment::At(0.5),
                Moment::Flipped,
                Moment::Writing,
                Moment::Written,
            ] {
                let net = VethPair::new("xapk", 0xa93);
                let mut node = Node::start(&net.ns_a, &net.if_a);
                let dir = node.dir().to_path_buf();
                write_batch(&dir.join("base"), &config(2_000, SA_OUT_KEY, |_| None));
                apply_ok(&node.sandbox, &dir.join("base"));
                let old = killed::saved(&node);
                // Half the base goes, 20,000 come, sa-out's key changes.
                let lines = config(22_000, "0xffeeddccbbaa99887766554433221100", |i| {
                    (i < 2_000 && i % 2 == 1).then_some(None)
                });
                let file: PathBuf = dir.join("large");
                write_batch(&file, &lines);
                let new = expected_states(&old, &std::fs::read_to_string(&file).expect("the file"));
                let config_map = aya::maps::Array::<_, u64>::try_from(aya::maps::Map::Array(
                    aya::maps::MapData::from_pin(node.pin_dir().join(ipsec_common::abi::CONFIG))
                        .expect("opening the pinned config map"),
                ))
                .expect("the config map");
                let (old_epoch, state_file) = (epoch(&config_map), node.sandbox.state_file());
                let old_inode = std::fs::metadata(&state_file).expect("state.json").ino();
                let tmp = state_file.with_extension("json.tmp");

                let started = Instant::now();
                let mut child = spawn_change(&node, "apply", &file);
                match (moment, duration) {
                    (Moment::Completed, _) => {
                        let status = wait_timeout(&mut child, Duration::from_mins(3));
                        assert!(status.success(), "the timing run failed: {}", node.log());
                        duration = Some(started.elapsed());
                    }
                    (Moment::At(f), Some(total)) => std::thread::sleep(Duration::mul_f64(total, f)),
                    (Moment::At(_), None) => unreachable!("the completed run comes first"),
                    (Moment::Flipped, _) => until(|| epoch(&config_map) != old_epoch),
                    (Moment::Writing, _) => until(|| tmp.exists()),
                    (Moment::Written, _) => {
                        until(|| {
                            std::fs::metadata(&state_file).is_ok_and(|m| m.ino() != old_inode)
                        });
                    }
                }
                node.kill9();
                let when = format!("kill -9 {moment:?} ({:?})", started.elapsed());
                let (dead_is, is) = after_kill9(&mut node, &mut child, (&old, &new), &when);
                outcomes.push((dead_is, is));
            }
            // Completed: new everywhere. Before the daemon had it: old everywhere. Flipped: the
            // maps were new while dead, the restarted daemon restores its (old) state. Written:
            // new on disk.
            assert_eq!(outcomes[0], (1, "new"), "the completed apply");
            assert_eq!(
                outcomes[1],
                (0, "old"),
                "killed before the apply reached the daemon"
            );
            assert_eq!(
                outcomes[3].0, 1,
                "killed at the flip: the maps hold the new epoch"
            );
            assert_eq!(outcomes[5].1, "new", "killed once the state was written");
        },
    );
}
