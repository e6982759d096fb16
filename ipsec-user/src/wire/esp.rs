//! The ESP header (RFC 4303 §2): SPI and sequence number, then the protected payload.

use super::{ESP_HEADER_LEN, view};

view! {
    /// A view of an ESP packet (from the SPI on): RFC 4303 §2.1, §2.2.
    EspPacket [ESP_HEADER_LEN, "esp header"] {
        spi: u32 = 0, set_spi;
        sequence_number: u32 = 4, set_sequence_number;
    }
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// IV, ciphertext, ICV: everything after the header.
    pub fn payload(&self) -> &[u8] {
        self.buffer
            .as_ref()
            .get(ESP_HEADER_LEN..)
            .unwrap_or_default()
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
