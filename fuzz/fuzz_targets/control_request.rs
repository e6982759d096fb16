//! The control protocol's request parsing (one JSON line -> `protocol::Request`), then the change
//! it asks for applied to an SPD holding the README's examples, as the daemon's control loop does.
//!
//! Checks: parsing never panics; a parsed request serialises and parses back to itself; a change
//! the model accepts leaves a valid SPD that survives the state file (save, load, same SPD); a
//! change the model refuses leaves the SPD exactly as it was. A batch is all or nothing: accepted,
//! it equals its items applied one at a time (and survives the state file); refused, it names
//! the first item that fails one at a time, with that item's line and the model's message. An
//! apply file the planner accepts is reached by its plan (the plan applies, and planning the
//! same file again against the result finds nothing to do); a refused one names one line.
#![no_main]

use std::sync::LazyLock;

use ipsec_user::daemon::protocol::{Apply, Batch, Change};
use ipsec_user::daemon::{apply, batch};
use ipsec_user::fuzzing::{Request, parse_state_file};
use ipsec_user::model::Spd;
use libfuzzer_sys::fuzz_target;

static BASE: LazyLock<Spd> = LazyLock::new(ipsec_fuzz::example_spd);

fuzz_target!(|line: &[u8]| {
    let Ok(request) = serde_json::from_slice::<Request>(line) else {
        return;
    };
    let text = serde_json::to_vec(&request).expect("serialising a parsed request");
    let back: Request = serde_json::from_slice(&text).expect("parsing a serialised request");
    assert_eq!(
        serde_json::to_vec(&back).expect("serialising again"),
        text,
        "request round trip"
    );

    let single = match request {
        Request::Batch(b) => return check_batch(&b),
        Request::Apply(a) => return check_apply(&a),
        Request::SaAdd(args) => Change::SaAdd(args),
        Request::SaRemove(args) => Change::SaRemove(args),
        Request::SpAdd(args) => Change::SpAdd(args),
        Request::SpRemove(args) => Change::SpRemove(args),
        Request::PeerAdd(args) => Change::PeerAdd(args),
        Request::PeerRemove(args) => Change::PeerRemove(args),
        Request::SpAddIke(args) => Change::SpAddIke(args),
        _ => return,
    };
    let mut spd = BASE.clone();
    match batch::change(&mut spd, &single).map(|_| ()) {
        Ok(()) => survives(&spd),
        Err(e) => {
            assert!(spd == *BASE, "a refused change ({e}) changed the spd");
            let message = e.to_string();
            assert!(
                !message.is_empty() && !message.contains('\n'),
                "error: {message:?}"
            );
        }
    }
});

/// An accepted SPD is valid and comes back unchanged from its state file.
fn survives(spd: &Spd) {
    spd.validate()
        .expect("an accepted change leaves a valid spd");
    let loaded = parse_state_file(&ipsec_fuzz::state_file(spd))
        .expect("the state file of an accepted change loads");
    assert_eq!(&loaded, spd, "the state file does not give back the spd");
}

/// A batch against the base SPD: all or nothing, and the same as its items one at a time.
fn check_batch(b: &Batch) {
    let mut one_by_one = BASE.clone();
    let first_refused = b.items.iter().enumerate().find_map(|(i, item)| {
        batch::change(&mut one_by_one, &item.change)
            .err()
            .map(|e| (i, e))
    });
    match (batch::apply(&BASE, &b.items), first_refused) {
        (Ok((next, _)), None) => {
            assert_eq!(
                next, one_by_one,
                "a batch differs from its items one at a time"
            );
            survives(&next);
        }
        (Err(e), Some((i, source))) => {
            assert_eq!(e.index, i + 1, "the refused item");
            assert_eq!(e.line, b.items[i].line, "the refused item's line");
            assert_eq!(e.source, source, "the refused item's reason");
            assert!(!e.to_string().contains('\n'), "error: {e}");
        }
        (Ok(_), Some((i, e))) => panic!("a batch was accepted though item {i} fails: {e}"),
        (Err(e), None) => panic!("a batch was refused ({e}) though every item applies"),
    }
}

/// An apply file against the base SPD: its plan applies as one batch, and the result is the
/// file's configuration (planning again finds no difference).
fn check_apply(a: &Apply) {
    match apply::plan(&BASE, &a.items) {
        Ok(plan) => {
            let (next, _) = batch::apply(&BASE, &plan.items)
                .unwrap_or_else(|e| panic!("the plan of an accepted apply file fails: {e}"));
            survives(&next);
            let again = apply::plan(&next, &a.items).expect("the same file against its result");
            assert!(
                again.items.is_empty() && again.differences.is_empty(),
                "applying a file leaves differences: {:?}",
                again.differences
            );
        }
        Err(e) => assert!(!e.to_string().contains('\n'), "error: {e}"),
    }
}
