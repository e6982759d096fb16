//! The daemon in-process (`daemon::serve`) with a scripted datapath: counters reach `list` and
//! `stats`; a change the datapath refuses, or that cannot be persisted, changes nothing (the
//! datapath is synced back to the old state) and the client gets the error; shutdown removes the
//! socket.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipsec_user::daemon::{
    self, Counters, DaemonConfig, Datapath, PacketCount, PortError, SaCount, XdpMode,
};
use ipsec_user::datapath::DatapathError;
use ipsec_user::model::Spd;
use serde_json::json;
use xipsec_testkit::cli::{SA_EXAMPLE, SP_EXAMPLE, run_on, single_error_line};

/// What the scripted datapath saw, and whether it refuses the next syncs.
#[derive(Default)]
struct Script {
    refuse: AtomicBool,
    /// Names of the SPs of every sync, in order.
    syncs: Mutex<Vec<Vec<String>>>,
}

struct Scripted(Arc<Script>);

impl Datapath for Scripted {
    fn sync(&mut self, spd: &Spd) -> Result<(), PortError> {
        let names = spd.sps().iter().map(|sp| sp.name.clone()).collect();
        self.0.syncs.lock().expect("syncs lock").push(names);
        if self.0.refuse.load(Ordering::SeqCst) {
            return Err(DatapathError::MapIo {
                name: "XIPSEC_RULES",
                source: aya::maps::MapError::IoError(std::io::Error::other("out of memory")),
            }
            .into());
        }
        Ok(())
    }

    fn counters(&self) -> Result<Counters, PortError> {
        let mut counters = Counters::default();
        counters.sp.insert(
            0,
            PacketCount {
                packets: 7,
                bytes: 700,
            },
        );
        counters.sa.insert(
            0,
            SaCount {
                packets: 5,
                bytes: 500,
                auth_failures: 1,
                replay_drops: 2,
                errors: 3,
            },
        );
        counters.reasons.push(("esp_unknown_spi".to_owned(), 9));
        Ok(counters)
    }
}

#[test]
fn serve_in_process_with_a_scripted_datapath() {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let socket = dir.path().join("run/s");
    let state_dir = dir.path().join("state");
    let script = Arc::new(Script::default());
    let runtime = tokio::runtime::Runtime::new().expect("starting a runtime");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = DaemonConfig {
        socket: socket.clone(),
        state_dir: state_dir.clone(),
        interfaces: vec!["veth0".to_owned()],
        xdp_mode: XdpMode::Generic,
        pin_dir: dir.path().join("pin"),
        datapath_attached: true,
        control: ipsec_user::daemon::ControlLimits::default(),
    };
    let server = runtime.spawn(daemon::serve(
        config,
        Box::new(Scripted(Arc::clone(&script))),
        stopped,
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while run_on(&socket, &["status"]).status.code() != Some(0) {
        assert!(
            Instant::now() < deadline,
            "the in-process daemon did not answer"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let ok = |args: &[&str]| {
        let run = run_on(&socket, args);
        assert!(run.status.success(), "{args:?}: {run:?}");
        run.stdout
    };
    let lists = || {
        (
            ok(&["sa", "list", "--formatter", "json"]),
            ok(&["sp", "list", "--formatter", "json"]),
        )
    };

    // Restore synced the (empty) saved state before serving.
    assert_eq!(
        script.syncs.lock().expect("syncs").first(),
        Some(&Vec::new())
    );
    ok(SA_EXAMPLE);
    ok(SP_EXAMPLE);

    // Counters reach the listings and stats.
    let sas: serde_json::Value = serde_json::from_str(&lists().0).expect("sa list parses");
    assert_eq!(
        (
            &sas[0]["packets"],
            &sas[0]["bytes"],
            &sas[0]["auth_failures"],
            &sas[0]["replay_drops"],
            &sas[0]["errors"]
        ),
        (&json!(5), &json!(500), &json!(1), &json!(2), &json!(3))
    );
    let sps: serde_json::Value = serde_json::from_str(&lists().1).expect("sp list parses");
    assert_eq!(
        (&sps[0]["packets"], &sps[0]["bytes"]),
        (&json!(7), &json!(700))
    );
    let stats: serde_json::Value =
        serde_json::from_str(&ok(&["stats", "--formatter", "json"])).expect("stats parses");
    assert_eq!(stats, json!([{"reason": "esp_unknown_spi", "packets": 9}]));
    let status: serde_json::Value =
        serde_json::from_str(&ok(&["status", "--formatter", "json"])).expect("status parses");
    assert_eq!(
        (
            &status["datapath"],
            &status["interfaces"],
            &status["xdp_mode"]
        ),
        (&json!("xdp"), &json!(["veth0"]), &json!("generic"))
    );

    // The datapath refuses: the client gets the error, nothing changes, the old state is re-synced.
    let before = lists();
    let file_before = std::fs::read(state_dir.join("state.json")).expect("reading state.json");
    script.refuse.store(true, Ordering::SeqCst);
    let run = run_on(&socket, &["sp", "remove", "--sp-name", "sp1"]);
    let line = single_error_line(&run, "refused sync");
    assert!(
        line.contains("datapath refused the change") && line.contains("out of memory"),
        "{line}"
    );
    // The typed cause is chained, not repeated: once per failure reported (the refused change,
    // and the refused restore after it), never twice in a row.
    assert_eq!(
        line.matches("out of memory").count(),
        line.matches("cannot access map XIPSEC_RULES").count(),
        "{line}"
    );
    assert!(!line.contains("out of memory: out of memory"), "{line}");
    script.refuse.store(false, Ordering::SeqCst);
    assert_eq!(lists(), before);
    assert_eq!(
        std::fs::read(state_dir.join("state.json")).expect("reading state.json"),
        file_before
    );
    {
        let syncs = script.syncs.lock().expect("syncs");
        let n = syncs.len();
        assert_eq!(
            syncs[n - 2],
            Vec::<String>::new(),
            "the refused change was offered"
        );
        assert_eq!(
            syncs[n - 1],
            vec!["sp1".to_owned()],
            "the old state was re-synced"
        );
    }

    // The state cannot be persisted: same outcome.
    std::fs::create_dir(state_dir.join("state.json.tmp")).expect("blocking the temporary file");
    let run = run_on(&socket, &["sp", "remove", "--sp-name", "sp1"]);
    let line = single_error_line(&run, "failed save");
    assert!(
        line.contains("cannot save the state, nothing changed"),
        "{line}"
    );
    assert_eq!(lists(), before);
    assert_eq!(
        std::fs::read(state_dir.join("state.json")).expect("reading state.json"),
        file_before
    );
    assert_eq!(
        script.syncs.lock().expect("syncs").last(),
        Some(&vec!["sp1".to_owned()])
    );
    std::fs::remove_dir(state_dir.join("state.json.tmp")).expect("unblocking");

    // And once the cause is gone, the same change goes through.
    ok(&["sp", "remove", "--sp-name", "sp1"]);
    assert_eq!(
        script.syncs.lock().expect("syncs").last(),
        Some(&Vec::new())
    );

    stop.send(()).expect("stopping the daemon");
    runtime
        .block_on(server)
        .expect("the daemon task")
        .expect("serve returns Ok on shutdown");
    assert!(!socket.exists(), "the socket was left behind");
}
