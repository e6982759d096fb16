//! The control protocol's request parsing (one JSON line -> `protocol::Request`), then the change
//! it asks for applied to an SPD holding the README's examples, as the daemon's control loop does.
//!
//! Checks: parsing never panics; a parsed request serialises and parses back to itself; a change
//! the model accepts leaves a valid SPD that survives the state file (save, load, same SPD); a
//! change the model refuses leaves the SPD exactly as it was.
#![no_main]

use std::sync::LazyLock;

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

    let mut spd = BASE.clone();
    let accepted = match &request {
        Request::SaAdd(args) => spd.add_sa(args).map(|_| ()),
        Request::SaRemove(args) => spd.remove_sa(args).map(|_| ()),
        Request::SpAdd(args) => spd.add_sp(args).map(|_| ()),
        Request::SpRemove(args) => spd.remove_sp(args).map(|_| ()),
        _ => return,
    };
    match accepted {
        Ok(()) => {
            spd.validate()
                .expect("an accepted change leaves a valid spd");
            let loaded = parse_state_file(&ipsec_fuzz::state_file(&spd))
                .expect("the state file of an accepted change loads");
            assert_eq!(loaded, spd, "the state file does not give back the spd");
        }
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
