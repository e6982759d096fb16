//! ESP decapsulation of arbitrary bytes under the fixed SA (aes128-cbc + hmac-sha2-256-128).
//!
//! Input: one mode byte (bit 0: tunnel), then the packet as it would arrive (IPv6 header on).
//! Checks: decapsulation never panics; arbitrary bytes never carry a valid ICV, so nothing is
//! ever delivered, and a refused packet leaves the replay window where it was.
#![no_main]

use ipsec_fuzz::inbound;
use ipsec_user::model::Mode;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, packet)) = data.split_first() else {
        return;
    };
    let mode = if selector & 1 == 0 {
        Mode::Transport
    } else {
        Mode::Tunnel
    };
    let mut sa = inbound(mode);
    let mut out = Vec::new();
    let result = sa.decapsulate(packet, &mut out);
    // Without the key, an ICV is a 2^-128 guess: anything accepted is a bug in the checks.
    assert!(result.is_err(), "random bytes decapsulated: {result:?}");
    assert_eq!(
        sa.replay_window().highest(),
        0,
        "a refused packet moved the replay window"
    );
});
