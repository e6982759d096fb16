//! The ICMPv6 header (RFC 4443 §2.1): type, code, checksum.

use super::view;

view! {
    /// A view of an ICMPv6 message: type, code and checksum are what the classifier needs.
    Icmpv6Packet [4, "icmpv6 header"] {
        /// The type: what a selector's "port" names for ICMPv6 (RFC 4301 §4.4.1.1).
        msg_type: u8 = 0;
        msg_code: u8 = 1;
        /// Over the pseudo-header and the message (RFC 4443 §2.3).
        checksum: u16 = 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_and_truncations() {
        let bytes = [135, 0, 0x12, 0x34];
        let icmp = Icmpv6Packet::new_checked(&bytes[..]).expect("a header");
        assert_eq!((icmp.msg_type(), icmp.msg_code()), (135, 0));
        assert_eq!(icmp.checksum(), 0x1234);
        for len in 0..4 {
            assert!(Icmpv6Packet::new_checked(&bytes[..len]).is_err(), "{len}");
        }
    }
}
