//! The state-file loader (`daemon::state`'s parse and check of `state.json`) on arbitrary bytes.
//!
//! Checks: it never panics; whatever it accepts is a valid SPD, and saving it and loading the
//! result gives the same SPD and the same bytes (save and load are inverse, so a restart never
//! changes the policy).
#![no_main]

use ipsec_user::fuzzing::parse_state_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(spd) = parse_state_file(bytes) else {
        return;
    };
    spd.validate().expect("a loaded spd is valid");
    let saved = ipsec_fuzz::state_file(&spd);
    let reloaded = parse_state_file(&saved).expect("a saved state file loads");
    assert_eq!(reloaded, spd, "save then load changed the spd");
    assert_eq!(
        ipsec_fuzz::state_file(&reloaded),
        saved,
        "save is not stable"
    );
});
