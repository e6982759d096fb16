//! The ICMPv6 header (RFC 4443 §2.1): type, code, checksum.

use super::{WireError, be16, byte};

/// Length of the header the classifier needs: type, code and checksum.
const HEADER_LEN: usize = 4;

/// A view of an ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmpv6Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps untrusted bytes: type, code and checksum are present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated {
                what: "icmpv6 header",
            });
        }
        Ok(Self { buffer })
    }

    pub fn msg_type(&self) -> u8 {
        byte(self.buffer.as_ref(), 0)
    }

    pub fn msg_code(&self) -> u8 {
        byte(self.buffer.as_ref(), 1)
    }

    pub fn checksum(&self) -> u16 {
        be16(self.buffer.as_ref(), 2)
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
