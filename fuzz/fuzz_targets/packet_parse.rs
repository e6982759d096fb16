//! The userspace reference packet parser (`model::packet::parse_frame`) on arbitrary frames,
//! egress (`esp_is_terminal` false) and ingress (true).
//!
//! Checks: it never panics; egress never reports ESP; the two readings differ only where ESP is
//! terminal on ingress; a flow's addresses are the frame's; bytes after the IPv6 payload never
//! change the verdict (parsing never looks past the payload); `plain` ESP is untagged with ESP
//! right after the IPv6 header.
#![no_main]

use ipsec_user::fuzzing::{Parsed, parse_frame};
use libfuzzer_sys::fuzz_target;

/// Offset of the IPv6 header in an untagged frame.
const L3: usize = 14;

fuzz_target!(|frame: &[u8]| {
    let egress = parse_frame(frame, false);
    let ingress = parse_frame(frame, true);
    assert!(
        !matches!(egress, Parsed::Esp { .. } | Parsed::EspFragment),
        "egress reported esp: {egress:?}"
    );
    if egress != ingress {
        assert!(
            matches!(&egress, Parsed::Flow(flow) if flow.next_header == 50),
            "readings differ on a non-esp frame: egress {egress:?}, ingress {ingress:?}"
        );
        assert!(
            matches!(
                ingress,
                Parsed::Esp { .. } | Parsed::EspFragment | Parsed::Malformed
            ),
            "ingress made {ingress:?} of esp"
        );
    }
    for parsed in [&egress, &ingress] {
        if let Parsed::Flow(flow) = parsed {
            // Up to two VLAN tags (802.1ad, 802.1Q) come before IPv6.
            let mut tagged = 0;
            while tagged < 8
                && matches!(frame[12 + tagged..14 + tagged], [0x81, 0x00] | [0x88, 0xa8])
            {
                tagged += 4;
            }
            let ip = &frame[L3 + tagged..];
            assert_eq!(
                flow.src.octets(),
                ip[8..24],
                "flow source is not the frame's"
            );
            assert_eq!(
                flow.dst.octets(),
                ip[24..40],
                "flow destination is not the frame's"
            );
        }
    }
    if let Parsed::Esp { plain: true, .. } = ingress {
        assert_eq!(frame[12..14], [0x86, 0xdd], "plain esp behind a vlan tag");
        assert_eq!(frame[L3 + 6], 50, "plain esp behind an extension header");
    }
    // Trailing bytes (Ethernet padding, garbage) after the IPv6 payload change nothing.
    if !matches!(ingress, Parsed::NotIpv6 | Parsed::Malformed) {
        for fill in [0x00, 0xff] {
            let mut longer = frame.to_vec();
            longer.resize(frame.len() + 64, fill);
            assert_eq!(
                parse_frame(&longer, true),
                ingress,
                "trailing bytes changed ingress"
            );
            assert_eq!(
                parse_frame(&longer, false),
                egress,
                "trailing bytes changed egress"
            );
        }
    }
});
