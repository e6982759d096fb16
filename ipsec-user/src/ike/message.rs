//! The IKEv2 message (RFC 7296 §3.1, §3.2): the fixed header and the chain of generic payloads,
//! parsed from and emitted to bytes.
//!
//! Contract:
//! - [`Message::parse`] takes untrusted bytes. It never panics, and never allocates more than
//!   the datagram holds: every length is checked against what is left before it is used, counts
//!   in the bytes (transforms, selectors, SPIs) only bound loops that consume input, and nothing
//!   is preallocated from them. The header's length must equal the datagram's.
//! - The Encrypted payload (SK, §3.14) stays opaque here ([`Payload::Encrypted`]): `sk` decrypts
//!   its body and parses the inner chain with [`parse_chain`].
//! - [`Message::emit`] writes the header's Next Payload and Length and each payload's generic
//!   header; `parse(emit(m)) == m` for every message this module builds.

use super::payload::{Payload, PayloadType};

/// RFC 7296 §3.1: the fixed header is 28 octets.
pub const HEADER_LEN: usize = 28;
/// RFC 7296 §3.2: the generic payload header is 4 octets.
pub const GENERIC_HEADER_LEN: usize = 4;
/// Major version 2, minor 0 (§3.1).
const VERSION: u8 = 0x20;

/// The Exchange Type field (§3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExchangeType(pub u8);

impl ExchangeType {
    pub const IKE_SA_INIT: Self = Self(34);
    pub const IKE_AUTH: Self = Self(35);
    pub const CREATE_CHILD_SA: Self = Self(36);
    pub const INFORMATIONAL: Self = Self(37);
}

/// The flags octet (§3.1).
pub mod flags {
    /// Set by the original initiator of the IKE SA.
    pub const INITIATOR: u8 = 0x08;
    /// The sender could speak a higher major version.
    pub const VERSION: u8 = 0x10;
    /// This message is a response.
    pub const RESPONSE: u8 = 0x20;
}

/// The header's fields other than Next Payload and Length, which `emit` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub exchange: ExchangeType,
    pub flags: u8,
    pub message_id: u32,
}

impl Header {
    /// True for a response (R flag).
    pub fn is_response(&self) -> bool {
        self.flags & flags::RESPONSE != 0
    }

    /// True when the sender is the IKE SA's original initiator (I flag).
    pub fn from_initiator(&self) -> bool {
        self.flags & flags::INITIATOR != 0
    }

    /// Writes the 28-octet header with `next` and the total `length`.
    pub(crate) fn emit(&self, next: PayloadType, length: u32, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.spi_i);
        out.extend_from_slice(&self.spi_r);
        out.push(next.0);
        out.push(VERSION);
        out.push(self.exchange.0);
        out.push(self.flags);
        out.extend_from_slice(&self.message_id.to_be_bytes());
        out.extend_from_slice(&length.to_be_bytes());
    }

    /// Reads the header of `bytes`; with the Next Payload type. Checks the version and that the
    /// Length field is the datagram's length.
    ///
    /// # Errors
    /// [`MessageError`] for a short datagram, another major version or a wrong length.
    pub fn parse(bytes: &[u8]) -> Result<(Self, PayloadType), MessageError> {
        let Some(h) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(MessageError::Truncated {
                what: "ike header",
                need: HEADER_LEN,
                have: bytes.len(),
            });
        };
        if h[17] >> 4 != 2 {
            return Err(MessageError::Version { version: h[17] });
        }
        let length = u32::from_be_bytes([h[24], h[25], h[26], h[27]]);
        if usize::try_from(length).ok() != Some(bytes.len()) {
            return Err(MessageError::Length {
                header: length,
                datagram: bytes.len(),
            });
        }
        let mut spi_i = [0; 8];
        let mut spi_r = [0; 8];
        spi_i.copy_from_slice(&h[0..8]);
        spi_r.copy_from_slice(&h[8..16]);
        let header = Self {
            spi_i,
            spi_r,
            exchange: ExchangeType(h[18]),
            flags: h[19],
            message_id: u32::from_be_bytes([h[20], h[21], h[22], h[23]]),
        };
        Ok((header, PayloadType(h[16])))
    }
}

/// An IKE message: the header and its payloads, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub header: Header,
    pub payloads: Vec<Payload>,
}

/// Why bytes are not an IKE message (or a payload is not what its type says).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    #[error("{what}: truncated, needs {need} bytes, has {have}")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    #[error("unsupported ike version {version:#04x} (only major version 2)")]
    Version { version: u8 },
    #[error("header length {header} is not the datagram's {datagram} bytes")]
    Length { header: u32, datagram: usize },
    #[error("{what}: {reason}")]
    Malformed {
        what: &'static str,
        reason: &'static str,
    },
    #[error("the encrypted payload must be the last one")]
    EncryptedNotLast,
    #[error("message too long to emit ({len} bytes)")]
    TooLong { len: usize },
}

/// Reads a 16-bit big-endian length at `at` (the caller checked the bounds).
fn be16(bytes: &[u8], at: usize) -> usize {
    usize::from(u16::from_be_bytes([bytes[at], bytes[at + 1]]))
}

/// Parses a chain of generic payloads that starts with type `first` and fills `bytes`
/// exactly. An Encrypted payload must be the last of the chain (§3.14); its Next Payload names
/// the first payload inside it and is kept with it.
///
/// # Errors
/// [`MessageError`] when a length leaves the bytes, the chain ends early or late, or a payload
/// body does not parse.
pub fn parse_chain(first: PayloadType, bytes: &[u8]) -> Result<Vec<Payload>, MessageError> {
    let mut payloads = Vec::new();
    let mut next = first;
    let mut rest = bytes;
    while next != PayloadType::NONE {
        if rest.len() < GENERIC_HEADER_LEN {
            return Err(MessageError::Truncated {
                what: "payload header",
                need: GENERIC_HEADER_LEN,
                have: rest.len(),
            });
        }
        let len = be16(rest, 2);
        if len < GENERIC_HEADER_LEN || len > rest.len() {
            return Err(MessageError::Malformed {
                what: "payload header",
                reason: "payload length outside the message",
            });
        }
        let critical = rest[1] & 0x80 != 0;
        let following = PayloadType(rest[0]);
        let body = &rest[GENERIC_HEADER_LEN..len];
        if next == PayloadType::SK {
            if len != rest.len() {
                return Err(MessageError::EncryptedNotLast);
            }
            payloads.push(Payload::Encrypted {
                first: following,
                data: body.to_vec(),
            });
            return Ok(payloads);
        }
        payloads.push(Payload::parse(next, critical, body)?);
        next = following;
        rest = &rest[len..];
    }
    if rest.is_empty() {
        Ok(payloads)
    } else {
        Err(MessageError::Malformed {
            what: "payload chain",
            reason: "bytes after the last payload",
        })
    }
}

/// Emits `payloads` as a chain of generic payloads; the type of the first. An Encrypted payload
/// must be the last.
///
/// # Errors
/// [`MessageError::EncryptedNotLast`], or [`MessageError::TooLong`] for a payload over 64 KiB.
pub fn emit_chain(payloads: &[Payload], out: &mut Vec<u8>) -> Result<PayloadType, MessageError> {
    for (i, payload) in payloads.iter().enumerate() {
        let last = i + 1 == payloads.len();
        let next = match payload {
            Payload::Encrypted { first, .. } if last => *first,
            Payload::Encrypted { .. } => return Err(MessageError::EncryptedNotLast),
            _ => payloads.get(i + 1).map_or(PayloadType::NONE, Payload::kind),
        };
        let start = out.len();
        out.extend_from_slice(&[next.0, u8::from(payload.critical()) << 7, 0, 0]);
        payload.emit_body(out);
        let len = out.len() - start;
        let len16 = u16::try_from(len).map_err(|_| MessageError::TooLong { len })?;
        out[start + 2..start + 4].copy_from_slice(&len16.to_be_bytes());
    }
    Ok(payloads.first().map_or(PayloadType::NONE, Payload::kind))
}

impl Message {
    /// Parses a whole datagram (without the non-ESP marker of port 4500).
    ///
    /// # Errors
    /// [`MessageError`] for anything that is not a well-formed IKEv2 message.
    pub fn parse(bytes: &[u8]) -> Result<Self, MessageError> {
        let (header, first) = Header::parse(bytes)?;
        let payloads = parse_chain(first, &bytes[HEADER_LEN..])?;
        Ok(Self { header, payloads })
    }

    /// The message as bytes.
    ///
    /// # Errors
    /// [`MessageError`] when a payload cannot be emitted (see [`emit_chain`]).
    pub fn emit(&self) -> Result<Vec<u8>, MessageError> {
        let mut body = Vec::new();
        let first = emit_chain(&self.payloads, &mut body)?;
        let len = HEADER_LEN + body.len();
        let len32 = u32::try_from(len).map_err(|_| MessageError::TooLong { len })?;
        let mut out = Vec::with_capacity(len);
        self.header.emit(first, len32, &mut out);
        out.extend_from_slice(&body);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::payload::{Notify, NotifyType};

    fn header() -> Header {
        Header {
            spi_i: [1, 2, 3, 4, 5, 6, 7, 8],
            spi_r: [0; 8],
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::INITIATOR,
            message_id: 0,
        }
    }

    #[test]
    fn header_fixture_deconstructs_and_round_trips() {
        // An IKE_SA_INIT request with one payload: N(COOKIE) carrying "ab".
        let bytes = [
            1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 0, // SPIs
            41, 0x20, 34, 0x08, 0, 0, 0, 0, 0, 0, 0,
            38, // next N, version, exchange, flags, id, len
            0, 0, 0, 10, 0, 0, 0x40, 0x06, b'a', b'b', // N: proto 0, spi size 0, COOKIE
        ];
        let message = Message::parse(&bytes).expect("parsing the fixture");
        assert_eq!(message.header, header());
        assert_eq!(
            message.payloads,
            vec![Payload::Notify(Notify::new(
                NotifyType::COOKIE,
                b"ab".to_vec()
            ))]
        );
        assert_eq!(message.emit().expect("emitting"), bytes);
    }

    #[test]
    fn length_and_version_are_checked() {
        let message = Message {
            header: header(),
            payloads: vec![Payload::Nonce(vec![7; 32])],
        };
        let mut bytes = message.emit().expect("emitting");
        bytes.push(0);
        assert!(matches!(
            Message::parse(&bytes),
            Err(MessageError::Length { .. })
        ));
        bytes.pop();
        bytes[17] = 0x30;
        assert!(matches!(
            Message::parse(&bytes),
            Err(MessageError::Version { .. })
        ));
        for cut in 0..bytes.len() {
            assert!(Message::parse(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn payload_lengths_must_stay_inside() {
        let message = Message {
            header: header(),
            payloads: vec![Payload::Nonce(vec![7; 32]), Payload::Nonce(vec![8; 16])],
        };
        let good = message.emit().expect("emitting");
        assert_eq!(Message::parse(&good).expect("parsing"), message);
        for (at, value) in [(31, 0xff), (31, 3), (28, 0)] {
            let mut bad = good.clone();
            bad[at] = value;
            assert!(Message::parse(&bad).is_err(), "byte {at} = {value}");
        }
    }

    #[test]
    fn encrypted_payload_must_be_last() {
        let message = Message {
            header: header(),
            payloads: vec![
                Payload::Encrypted {
                    first: PayloadType::NONCE,
                    data: vec![1; 20],
                },
                Payload::Nonce(vec![7; 16]),
            ],
        };
        assert_eq!(message.emit(), Err(MessageError::EncryptedNotLast));
    }
}
