//! ESP decapsulation of arbitrary bytes under the fixed SA (aes128-cbc + hmac-sha2-256-128).
//!
//! Input: one mode byte (bit 0: tunnel), then the packet as it would arrive (IPv6 header on).
//! Checks: decapsulation never panics; a packet refused before its ICV is checked leaves the
//! replay window where it was; what is delivered (the seeds are real ESP packets, so mutations
//! outside the ICV's coverage still decapsulate) is a whole IPv6 packet, moves the window to its
//! sequence number and is refused as a replay the second time. When ESP follows the fixed
//! header, `decapsulate_esp` (the raw socket's entry: the header's fields and the ESP bytes)
//! must give the same result and the same bytes as `decapsulate` of the whole packet.
#![no_main]

use ipsec_fuzz::inbound;
use ipsec_user::crypto::{Decapsulated, EspError, OuterHeader};
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
    if let Some(header) = packet.get(..40).and_then(|h| <&[u8; 40]>::try_from(h).ok())
        && header[0] >> 4 == 6
        && header[6] == 50
    {
        let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
        if let Some(esp) = packet.get(40..40 + payload_len) {
            let mut stripped = Vec::new();
            let via_esp = inbound(mode).decapsulate_esp(
                &OuterHeader::of(header),
                esp,
                &mut stripped,
                |_| true,
            );
            assert_eq!(via_esp, result, "decapsulate_esp differs from decapsulate");
            if result.is_ok() {
                assert_eq!(stripped, out, "decapsulate_esp delivered other bytes");
            }
        }
    }
    match result {
        Ok(Decapsulated::Deliver { seq, .. }) => {
            // Only mutations outside what the ICV covers get here (the clear IPv6 header of
            // a seed, bytes past its payload length): what comes out must be a whole IPv6
            // packet, the window must have moved, and the packet must never pass again.
            assert!(
                out.len() >= 40 && out[0] >> 4 == 6,
                "delivered a non-ipv6 packet"
            );
            let payload_len = usize::from(u16::from_be_bytes([out[4], out[5]]));
            assert_eq!(
                payload_len + 40,
                out.len(),
                "payload length of the delivered packet"
            );
            assert!(out.len() < packet.len(), "decapsulation grew the packet");
            assert_eq!(sa.replay_window().highest(), seq);
            let again = sa.decapsulate(packet, &mut out);
            assert!(
                matches!(again, Err(EspError::Replay { .. })),
                "replay not refused: {again:?}"
            );
        }
        Ok(Decapsulated::Dummy { seq }) => {
            assert!(out.is_empty(), "a dummy packet left bytes to deliver");
            assert_eq!(sa.replay_window().highest(), seq);
        }
        // A refusal after the ICV check (padding, next header) has authenticated the packet and
        // moves the window (RFC 4303 §3.4.3); every other refusal leaves it alone.
        Err(
            EspError::BadPadding
            | EspError::UnknownNextHeader { .. }
            | EspError::Malformed { .. }
            | EspError::Truncated { .. },
        ) => {}
        Err(_) => assert_eq!(
            sa.replay_window().highest(),
            0,
            "a refused packet moved the replay window"
        ),
    }
});
