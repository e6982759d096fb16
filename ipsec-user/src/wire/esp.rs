//! The ESP header (RFC 4303 §2): SPI and sequence number, then the protected payload.

use super::{ESP_HEADER_LEN, WireError, be32, put};

/// Field offsets (RFC 4303 §2.1, §2.2).
mod field {
    pub(super) const SPI: usize = 0;
    pub(super) const SEQUENCE: usize = 4;
}

/// A view of an ESP packet (from the SPI on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// Wraps bytes known to hold the 8-byte header (an ESP buffer being built).
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps untrusted bytes: the 8-byte header is present.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        if buffer.as_ref().len() < ESP_HEADER_LEN {
            return Err(WireError::Truncated { what: "esp header" });
        }
        Ok(Self { buffer })
    }

    pub fn spi(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SPI)
    }

    pub fn sequence_number(&self) -> u32 {
        be32(self.buffer.as_ref(), field::SEQUENCE)
    }

    /// IV, ciphertext, ICV: everything after the header.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(ESP_HEADER_LEN..)
            .unwrap_or_default()
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    pub fn set_spi(&mut self, spi: u32) {
        put(self.buffer.as_mut(), field::SPI, &spi.to_be_bytes());
    }

    pub fn set_sequence_number(&mut self, seq: u32) {
        put(self.buffer.as_mut(), field::SEQUENCE, &seq.to_be_bytes());
    }
}

/// The ESP header for `spi` and `seq`, as bytes.
pub fn esp_header(spi: u32, seq: u32) -> [u8; ESP_HEADER_LEN] {
    let mut header = [0; ESP_HEADER_LEN];
    let mut view = EspPacket::new_unchecked(&mut header);
    view.set_spi(spi);
    view.set_sequence_number(seq);
    header
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_truncations_and_emit() {
        let bytes = [0, 0, 0x10, 0, 0, 0, 0, 9, 0xaa, 0xbb];
        let esp = EspPacket::new_checked(&bytes[..]).expect("a header");
        assert_eq!((esp.spi(), esp.sequence_number()), (0x1000, 9));
        assert_eq!(esp.payload(), &[0xaa, 0xbb]);
        for len in 0..8 {
            assert!(EspPacket::new_checked(&bytes[..len]).is_err(), "{len}");
        }
        assert_eq!(esp_header(0x1000, 9), bytes[..8]);
    }
}
