//! `xipsec batch`: many adds and removes applied as one change, against a real daemon.
//!
//! - A refused item at the start, in the middle or at the end changes nothing: state file,
//!   `sa list`/`sp list` and the pinned kernel maps are byte-for-byte as before, and the error
//!   names the line, the item and the option.
//! - A batch computed against an older configuration generation is refused; generations are
//!   persisted across a restart.
//! - Two batches sent at once are applied one after the other, each whole.
//! - kill -9 of the daemon at several moments of a 20,000-item batch, then a restart, leaves
//!   exactly the old or exactly the new configuration (state file, lists and pinned maps; the
//!   maps are also checked while the daemon is dead).
//! - Packets sent through the XDP datapath while a large batch loads get the old SPD's verdict
//!   or the new one's, never that of a half-applied change (flows are chosen so that any
//!   half-applied state drops a flow both SPDs pass, or passes one both drop).

use std::collections::BTreeSet;
use std::net::{Ipv6Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ipsec_tests::killed::{after_kill9, spawn_change};
use ipsec_tests::maps::{Meaning, pinned_meaning};
use ipsec_user::daemon::state::{Saved, parse_saved};
use xipsec_testkit::{
    as_root,
    cli::{Run, SpArgs, discard_lines, sa_line, single_error_line, without_counters, write_batch},
    daemon::{Node, Sandbox, wait_timeout},
    netns::{VethPair, in_netns},
};

/// `sa list` and `sp list` without their counters (traffic such as neighbour discovery may move
/// them; the test is about configuration).
fn lists(sandbox: &Sandbox) -> (serde_json::Value, serde_json::Value) {
    let (sas, sps) = sandbox.lists();
    (without_counters(sas), without_counters(sps))
}

/// The state file as the daemon left it.
fn saved(sandbox: &Sandbox) -> Saved {
    let bytes = std::fs::read(sandbox.state_file()).expect("reading state.json");
    parse_saved(&bytes).expect("state.json parses")
}

/// What a configuration looks like from outside: state file, lists and, with a datapath, the
/// pinned maps.
#[derive(Debug, PartialEq)]
struct Snapshot {
    state: Vec<u8>,
    lists: (serde_json::Value, serde_json::Value),
    maps: Option<Meaning>,
}

fn snapshot(node: &Node) -> Snapshot {
    Snapshot {
        state: std::fs::read(node.sandbox.state_file()).expect("reading state.json"),
        lists: lists(&node.sandbox),
        maps: Some(pinned_meaning(&node.pin_dir())),
    }
}

/// `xipsec batch FILE ARGS` against `sandbox`'s daemon.
fn batch(sandbox: &Sandbox, file: &Path, args: &[&str]) -> Run {
    let file = file.to_str().expect("a UTF-8 path");
    sandbox.run(&[&["batch", file], args].concat())
}

/// `batch` that must succeed; the generation it reports.
fn batch_ok(sandbox: &Sandbox, file: &Path) -> u64 {
    let run = batch(sandbox, file, &[]);
    assert!(
        run.status.success() && run.stderr.is_empty(),
        "batch failed: {run:?}"
    );
    generation_of(&run.stdout)
}

/// The generation of `generation N: A added, R removed`.
fn generation_of(stdout: &str) -> u64 {
    stdout
        .strip_prefix("generation ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no generation in {stdout:?}"))
}

/// `status --formatter json` field `field`.
fn status(sandbox: &Sandbox, field: &str) -> u64 {
    let status: serde_json::Value =
        serde_json::from_str(&sandbox.ok(&["status", "--formatter", "json"])).expect("status");
    status[field]
        .as_u64()
        .unwrap_or_else(|| panic!("status has no {field}: {status}"))
}

/// One SA a -> b and `n` inbound policies between the pair's addresses (half discard, half
/// protected by the SA), each with its own destination port: the configuration before.
fn base_lines(net: &VethPair, n: u16) -> Vec<String> {
    let (a, b) = (format!("{}/128", net.addr_a), format!("{}/128", net.addr_b));
    let mut lines = vec![
        "# the configuration before".to_owned(),
        sa_line("sa-in", (&net.addr_b, &net.addr_a), 0x4100),
    ];
    for i in 0..n {
        let (port, name) = ((9000 + i).to_string(), format!("base{i}"));
        let sp = SpArgs {
            dport: &port,
            proto: "udp",
            ..SpArgs::ipsec(&b, &a, "in", &name)
        };
        lines.push(if i % 2 == 0 {
            SpArgs {
                action: "discard",
                sa: None,
                ..sp
            }
            .line()
        } else {
            SpArgs {
                sa: Some("sa-in"),
                ..sp
            }
            .line()
        });
    }
    lines
}

#[test]
fn a_refused_item_anywhere_changes_nothing_and_is_named() {
    as_root(
        "a_refused_item_anywhere_changes_nothing_and_is_named",
        || {
            let net = VethPair::new("xbat", 0xba1);
            let node = Node::start(&net.ns_a, &net.if_a);
            let dir = node.dir().to_path_buf();
            write_batch(&dir.join("base"), &base_lines(&net, 40));
            assert_eq!(batch_ok(&node.sandbox, &dir.join("base")), 1);
            let before = snapshot(&node);
            assert_eq!(before.lists.1.as_array().map(Vec::len), Some(40));

            for (position, what) in [(0, "start"), (50, "middle"), (99, "end")] {
                // 100 valid policies (and removals of half the base), one of them replaced by
                // a policy naming an SA that does not exist; a comment first shifts the lines.
                let mut lines = discard_lines("new", "any", 0..100);
                for (i, line) in lines.iter_mut().enumerate().skip(1).step_by(2).take(20) {
                    *line = format!("sp remove --sp-name base{i}");
                }
                lines[position] = SpArgs {
                    sa: Some("missing"),
                    ..SpArgs::ipsec("fd00:ba1::/64", "any", "out", "bad")
                }
                .line();
                lines.insert(0, "# a comment".to_owned());
                let file = dir.join(format!("bad-{what}"));
                write_batch(&file, &lines);
                let run = batch(&node.sandbox, &file, &[]);
                let error = single_error_line(&run, what);
                assert_eq!(
                    error,
                    format!(
                        "error: line {} (item {}): --sa-name: no sa named 'missing'; add it \
                         first with sa add; nothing changed",
                        position + 2,
                        position + 1
                    ),
                    "{what}"
                );
                assert_eq!(
                    snapshot(&node),
                    before,
                    "a refused batch ({what}) changed something"
                );
            }

            // A line the command line parser refuses: nothing reaches the daemon.
            let file = dir.join("bad-option");
            let mut lines = discard_lines("new", "any", 0..10);
            lines[6] = "sa add --sa-name x --spi 0x100".to_owned();
            write_batch(&file, &lines);
            let error = single_error_line(&batch(&node.sandbox, &file, &[]), "unknown option");
            assert!(
                error.starts_with("error: line 7 (item 7): unexpected argument '--spi' found"),
                "{error}"
            );
            assert_eq!(snapshot(&node), before);
            assert_eq!(status(&node.sandbox, "generation"), 1);
        },
    );
}

#[test]
fn errors_name_the_line_and_the_option_as_single_commands_do() {
    let sandbox = Sandbox::new();
    let _daemon = sandbox.start();
    let file = sandbox.path().join("batch");
    // The same mistake as one command and as line 3 of a batch: the same message after the
    // line and item.
    let single = single_error_line(
        &sandbox.run(&[
            "sp",
            "add",
            "--sp-source",
            "2001:db8::/64",
            "--sp-destination",
            "any",
            "--source-port",
            "70000",
            "--destination-port",
            "any",
            "--flow-direction",
            "in",
            "--action",
            "discard",
            "--sp-name",
            "p",
        ]),
        "single",
    );
    std::fs::write(
        &file,
        "\n# ports\nsp add --sp-source 2001:db8::/64 --sp-destination any --source-port 70000 \
         --destination-port any --flow-direction in --action discard --sp-name p\n",
    )
    .expect("writing the batch");
    let batched = single_error_line(&batch(&sandbox, &file, &[]), "batched");
    let reason = single.strip_prefix("error: ").expect("an error line");
    assert_eq!(
        batched,
        format!("error: line 3 (item 1): {reason}; nothing changed")
    );
    assert!(reason.starts_with("--source-port: "), "{reason}");
    // Standard input, and an esxcli line: a reserved SPI is named by its option.
    let mut child = Command::new(sandbox.bin())
        .args(["batch", "-"])
        .env("XIPSEC_SOCKET", sandbox.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running xipsec batch -");
    std::io::Write::write_all(
        child.stdin.as_mut().expect("stdin"),
        format!(
            "esxcli network ip ipsec {}\n",
            sa_line("s", ("2001:db8::1", "2001:db8::2"), 0x10)
        )
        .as_bytes(),
    )
    .expect("writing stdin");
    let run = Run::from(
        child
            .wait_with_output()
            .expect("waiting for xipsec batch -"),
    );
    assert_eq!(
        single_error_line(&run, "stdin"),
        "error: line 1 (item 1): --sa-spi: 0x10 is reserved (0x0-0xff); use 0x100 to \
         0xffffffff; nothing changed"
    );
    assert_eq!(status(&sandbox, "generation"), 0);
    assert!(
        !sandbox.state_file().exists(),
        "a refused batch wrote the state"
    );
}

#[test]
fn a_batch_for_an_older_generation_is_refused() {
    let sandbox = Sandbox::new();
    let daemon = sandbox.start();
    let dir = sandbox.path().to_path_buf();
    write_batch(&dir.join("one"), &discard_lines("one", "any", 0..10));
    write_batch(&dir.join("two"), &discard_lines("two", "any", 10..20));
    assert_eq!(batch_ok(&sandbox, &dir.join("one")), 1);
    // A single command moves the generation on too.
    sandbox.ok(&SpArgs {
        action: "discard",
        sa: None,
        ..SpArgs::ipsec("2001:db8:9::/48", "any", "out", "single")
    }
    .args());
    assert_eq!(status(&sandbox, "generation"), 2);
    let before = std::fs::read(sandbox.state_file()).expect("reading state.json");
    let refused = batch(&sandbox, &dir.join("two"), &["--expect-generation", "1"]);
    assert_eq!(
        single_error_line(&refused, "stale"),
        "error: the configuration is at generation 2, not 1: it changed since the batch was \
         computed; nothing changed (recompute it against generation 2)"
    );
    assert_eq!(
        std::fs::read(sandbox.state_file()).expect("reading state.json"),
        before
    );
    let run = batch(&sandbox, &dir.join("two"), &["--expect-generation", "2"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, "generation 3: 10 added, 0 removed\n");
    // Persisted: a restarted daemon continues from it.
    daemon.stop();
    let _daemon = sandbox.start();
    assert_eq!(status(&sandbox, "generation"), 3);
    assert_eq!(saved(&sandbox).generation, 3);
}

#[test]
fn concurrent_batches_are_applied_one_after_the_other() {
    const EACH: u32 = 5_000;
    let sandbox = Arc::new(Sandbox::new());
    let _daemon = sandbox.start();
    let dir = sandbox.path().to_path_buf();
    write_batch(&dir.join("a"), &discard_lines("a", "any", 0..EACH));
    write_batch(&dir.join("b"), &discard_lines("b", "any", EACH..2 * EACH));
    // An observer counts the SPs as fast as it can meanwhile: only 0, one batch or both.
    let done = Arc::new(AtomicBool::new(false));
    let observer = {
        let (sandbox, done) = (Arc::clone(&sandbox), Arc::clone(&done));
        std::thread::spawn(move || {
            let mut seen = BTreeSet::new();
            while !done.load(Ordering::SeqCst) {
                seen.insert(status(&sandbox, "sps"));
            }
            seen
        })
    };
    let runs: Vec<JoinHandle<Run>> = ["a", "b"]
        .into_iter()
        .map(|name| {
            let (sandbox, file) = (Arc::clone(&sandbox), dir.join(name));
            std::thread::spawn(move || batch(&sandbox, &file, &[]))
        })
        .collect();
    let mut generations: Vec<u64> = runs
        .into_iter()
        .map(|run| {
            let run = run.join().expect("a batch thread");
            assert!(run.status.success(), "{run:?}");
            generation_of(&run.stdout)
        })
        .collect();
    done.store(true, Ordering::SeqCst);
    let seen = observer.join().expect("the observer");
    generations.sort_unstable();
    assert_eq!(generations, [1, 2]);
    let allowed = BTreeSet::from([0, u64::from(EACH), u64::from(2 * EACH)]);
    assert!(
        seen.is_subset(&allowed),
        "half a batch was visible: {seen:?}"
    );
    // In creation order, one batch's policies all come before the other's.
    let (_, sps) = lists(&sandbox);
    let order: Vec<char> = sps
        .as_array()
        .expect("sp list")
        .iter()
        .map(|sp| {
            sp["name"]
                .as_str()
                .expect("a name")
                .chars()
                .next()
                .expect("a letter")
        })
        .collect();
    assert_eq!(order.len(), 2 * EACH as usize);
    let switches = order.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(switches, 1, "the two batches interleaved");
}

/// The batch of the kill -9 test: remove half of the 40 base policies, add 20,000.
fn large_batch(dir: &Path) -> (PathBuf, String) {
    let mut lines: Vec<String> = (0..40)
        .step_by(2)
        .map(|i| format!("sp remove --sp-name base{i}"))
        .collect();
    lines.extend(discard_lines("bulk", "any", 0..20_000));
    let file = dir.join("large");
    write_batch(&file, &lines);
    let text = std::fs::read_to_string(&file).expect("reading the batch back");
    (file, text)
}

#[test]
fn kill9_during_a_large_batch_leaves_the_old_or_the_new_configuration() {
    as_root(
        "kill9_during_a_large_batch_leaves_the_old_or_the_new_configuration",
        || {
            let mut outcomes = Vec::new();
            // The first run completes and times the batch; the others kill the daemon at a
            // fraction of that time (the first at once, the last near the end).
            let mut duration = None;
            for fraction in [None, Some(0.0), Some(0.2), Some(0.45), Some(0.7), Some(0.9)] {
                // A fresh pair each time: a killed daemon's XDP link stays pinned on its own.
                let net = VethPair::new("xbak", 0xba2);
                let mut node = Node::start(&net.ns_a, &net.if_a);
                let dir = node.dir().to_path_buf();
                write_batch(&dir.join("base"), &base_lines(&net, 40));
                batch_ok(&node.sandbox, &dir.join("base"));
                let old = saved(&node.sandbox);
                let (file, text) = large_batch(&dir);
                let items = ipsec_user::cli::batch::parse(&text).expect("the batch parses");
                let (spd, _) =
                    ipsec_user::daemon::batch::apply(&old.spd, &items).expect("the batch applies");
                let new = Saved {
                    spd,
                    generation: old.generation + 1,
                };

                let started = Instant::now();
                let mut child = spawn_change(&node, "batch", &file);
                let when = if let (Some(f), Some(total)) = (fraction, duration) {
                    std::thread::sleep(Duration::mul_f64(total, f));
                    node.kill9();
                    format!("kill -9 at {:?}", started.elapsed())
                } else {
                    let status = wait_timeout(&mut child, Duration::from_mins(2));
                    assert!(status.success(), "the timing run failed");
                    duration = Some(started.elapsed());
                    node.kill9();
                    format!("kill -9 after the batch ({:?})", started.elapsed())
                };
                let (_, is) = after_kill9(&mut node, &mut child, (&old, &new), &when);
                outcomes.push(is);
            }
            assert_eq!(outcomes[0], "new", "the completed batch");
            assert_eq!(
                outcomes[1], "old",
                "killed before the batch reached the daemon"
            );
        },
    );
}

/// Counts datagrams sent to, or received on, one UDP port.
#[derive(Default)]
struct Flow {
    sent: AtomicU64,
    received: AtomicU64,
}

/// Send to ports 7001 and 7002 of `dst` from namespace `ns`, alternately, every 200 µs, until
/// `stop`.
fn sender(
    ns: String,
    dst: Ipv6Addr,
    flows: Arc<[Flow; 2]>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        in_netns(&ns, || {
            let socket = UdpSocket::bind("[::]:0").expect("binding the sender");
            while !stop.load(Ordering::SeqCst) {
                for (flow, port) in flows.iter().zip([7001, 7002]) {
                    let to = SocketAddr::from((dst, port));
                    if socket.send_to(b"batch-verdict", to).is_ok() {
                        flow.sent.fetch_add(1, Ordering::SeqCst);
                    }
                }
                std::thread::sleep(Duration::from_micros(200));
            }
        });
    })
}

/// Receive on ports 7001 and 7002 of `addr` in namespace `ns` until `stop` and a quiet moment;
/// returns once the sockets are bound.
fn receiver(
    ns: String,
    addr: Ipv6Addr,
    flows: Arc<[Flow; 2]>,
    stop: Arc<AtomicBool>,
) -> JoinHandle<()> {
    let bound = Arc::new(std::sync::Barrier::new(2));
    let ready = Arc::clone(&bound);
    let thread = std::thread::spawn(move || {
        in_netns(&ns, || {
            let sockets: Vec<UdpSocket> = [7001, 7002]
                .into_iter()
                .map(|port| {
                    let s = UdpSocket::bind(SocketAddr::from((addr, port))).expect("binding");
                    s.set_nonblocking(true).expect("non-blocking");
                    // Room for seconds of traffic: on a busy machine this thread may not run
                    // for a while, and a full buffer would lose datagrams the policy passed.
                    nix::sys::socket::setsockopt(
                        &s,
                        nix::sys::socket::sockopt::RcvBufForce,
                        &(16 << 20),
                    )
                    .expect("SO_RCVBUFFORCE");
                    s
                })
                .collect();
            ready.wait();
            let mut buf = [0u8; 64];
            let mut quiet_since = None;
            loop {
                let mut got = false;
                for (socket, flow) in sockets.iter().zip(flows.iter()) {
                    while socket.recv(&mut buf).is_ok() {
                        flow.received.fetch_add(1, Ordering::SeqCst);
                        got = true;
                    }
                }
                if stop.load(Ordering::SeqCst) {
                    let since = *quiet_since.get_or_insert_with(Instant::now);
                    if got {
                        quiet_since = Some(Instant::now());
                    } else if since.elapsed() > Duration::from_millis(300) {
                        return;
                    }
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        });
    });
    bound.wait();
    thread
}

#[test]
fn packets_during_a_large_batch_see_the_old_or_the_new_spd() {
    as_root(
        "packets_during_a_large_batch_see_the_old_or_the_new_spd",
        || {
            let net = VethPair::new("xbav", 0xba3);
            // The daemon on b: its XDP classifies what a sends.
            let node = Node::start(&net.ns_b, &net.if_b);
            let dir = node.dir().to_path_buf();
            let (a, b) = (format!("{}/128", net.addr_a), format!("{}/128", net.addr_b));
            let udp = |port: &'static str, action, name| SpArgs {
                dport: port,
                proto: "udp",
                action,
                sa: None,
                ..SpArgs::ipsec(&a, &b, "in", name)
            };
            // Before: 7002 dropped (keep-old), 7001 passes (no policy), 5,000 unrelated.
            let mut before = vec![udp("7002", "discard", "keep-old").line()];
            before.extend(discard_lines("old", "any", 0..5_000));
            write_batch(&dir.join("before"), &before);
            batch_ok(&node.sandbox, &dir.join("before"));
            // After: 7002 still dropped (drop-7002, priority 3), 7001 still passes (the
            // exception, priority 1), any other UDP from a dropped (broad). A half-applied
            // batch would pass 7002 (pass-7002 there, drop-7002 not yet) or drop 7001 (broad
            // there, the exception not yet): 20,000 policies sit between. keep-old goes last,
            // so no policy of the batch reuses its counter slot.
            let prioritised = |port, action, name, priority| SpArgs {
                priority: Some(priority),
                ..udp(port, action, name)
            };
            let mut change = vec![
                udp("any", "discard", "broad").line(),
                prioritised("7002", "none", "pass-7002", "5").line(),
            ];
            change.extend(discard_lines("bulk", "any", 5_000..25_000));
            change.push(prioritised("7002", "discard", "drop-7002", "3").line());
            change.push(prioritised("7001", "none", "exception", "1").line());
            change.push("sp remove --sp-name keep-old".to_owned());
            write_batch(&dir.join("change"), &change);

            let flows: Arc<[Flow; 2]> = Arc::default();
            let (stop_send, stop_recv) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let addr_b: Ipv6Addr = net.addr_b.parse().expect("b's address");
            // Neighbour discovery done before the first datagram, so none waits in its queue.
            assert!(
                xipsec_testkit::traffic::ping(&net.ns_a, &net.addr_b, ("1", "2"), None),
                "a cannot reach b"
            );
            let rx = receiver(
                net.ns_b.clone(),
                addr_b,
                Arc::clone(&flows),
                Arc::clone(&stop_recv),
            );
            let tx = sender(
                net.ns_a.clone(),
                addr_b,
                Arc::clone(&flows),
                Arc::clone(&stop_send),
            );
            // Traffic under the old SPD first, until keep-old has counted some.
            let deadline = Instant::now() + Duration::from_secs(10);
            while node.sp_counter("keep-old", "packets") == 0 {
                assert!(Instant::now() < deadline, "keep-old never saw a packet");
                std::thread::sleep(Duration::from_millis(50));
            }
            let sent_before = flows[0].sent.load(Ordering::SeqCst);
            let started = Instant::now();
            let generation = batch_ok(&node.sandbox, &dir.join("change"));
            let took = started.elapsed();
            let sent_during = flows[0].sent.load(Ordering::SeqCst) - sent_before;
            // And under the new one for a while.
            std::thread::sleep(Duration::from_millis(500));
            stop_send.store(true, Ordering::SeqCst);
            tx.join().expect("the sender");
            stop_recv.store(true, Ordering::SeqCst);
            rx.join().expect("the receiver");

            let [f7001, f7002] = &*flows;
            let (sent1, got1) = (
                f7001.sent.load(Ordering::SeqCst),
                f7001.received.load(Ordering::SeqCst),
            );
            let (sent2, got2) = (
                f7002.sent.load(Ordering::SeqCst),
                f7002.received.load(Ordering::SeqCst),
            );
            println!(
                "batch of {} items took {took:?} (generation {generation}); 7001: {got1}/{sent1} \
                 delivered, 7002: {got2}/{sent2} delivered; {sent_during} per flow sent during \
                 the batch",
                change.len()
            );
            assert!(
                sent_during > 100,
                "too little traffic during the batch: {sent_during}"
            );
            assert_eq!(got2, 0, "7002 is dropped by both SPDs, yet some arrived");
            // Every 7002 datagram discarded once, and nothing else discarded.
            assert_eq!(node.stat("drop_discard"), sent2, "discards");
            assert_eq!(
                got1, sent1,
                "7001 passes under both SPDs, yet some were lost"
            );
            for never in ["broad", "pass-7002"] {
                assert_eq!(
                    node.sp_counter(never, "packets"),
                    0,
                    "{never} matched a flow"
                );
            }
            assert!(
                node.sp_counter("drop-7002", "packets") > 0,
                "7002 never met the new SPD"
            );
            assert!(
                node.sp_counter("exception", "packets") > 0,
                "7001 never met the new SPD"
            );
        },
    );
}
