//! The payload bodies of RFC 7296 §3.3 to §3.13 (everything after the 4-octet generic header),
//! parsed from and emitted to bytes.
//!
//! Contract: [`Payload::parse`] reads one body of untrusted bytes and never panics; every
//! field is checked against the body's length. A payload type this module does not know is kept
//! as [`Payload::Unknown`] with its critical bit, so the state machine can answer
//! `UNSUPPORTED_CRITICAL_PAYLOAD` (§2.5). The SA payload lives in `sa_payload`, the traffic
//! selectors in `selector`.

use super::message::MessageError;
use super::sa_payload::{self, Proposal};
use super::selector::{self, TrafficSelector};

/// The Next Payload / payload type numbers (§3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PayloadType(pub u8);

impl PayloadType {
    pub const NONE: Self = Self(0);
    pub const SA: Self = Self(33);
    pub const KE: Self = Self(34);
    pub const IDI: Self = Self(35);
    pub const IDR: Self = Self(36);
    pub const AUTH: Self = Self(39);
    pub const NONCE: Self = Self(40);
    pub const NOTIFY: Self = Self(41);
    pub const DELETE: Self = Self(42);
    pub const VENDOR: Self = Self(43);
    pub const TSI: Self = Self(44);
    pub const TSR: Self = Self(45);
    pub const SK: Self = Self(46);
}

/// Notify Message Types (§3.10.1): errors below 16384, status types from 16384.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct NotifyType(pub u16);

impl NotifyType {
    pub const UNSUPPORTED_CRITICAL_PAYLOAD: Self = Self(1);
    pub const INVALID_IKE_SPI: Self = Self(4);
    pub const INVALID_SYNTAX: Self = Self(7);
    pub const INVALID_MESSAGE_ID: Self = Self(9);
    pub const INVALID_SPI: Self = Self(11);
    pub const NO_PROPOSAL_CHOSEN: Self = Self(14);
    pub const INVALID_KE_PAYLOAD: Self = Self(17);
    pub const AUTHENTICATION_FAILED: Self = Self(24);
    pub const SINGLE_PAIR_REQUIRED: Self = Self(34);
    pub const NO_ADDITIONAL_SAS: Self = Self(35);
    pub const TS_UNACCEPTABLE: Self = Self(38);
    pub const TEMPORARY_FAILURE: Self = Self(43);
    pub const CHILD_SA_NOT_FOUND: Self = Self(44);
    pub const INITIAL_CONTACT: Self = Self(16384);
    pub const NAT_DETECTION_SOURCE_IP: Self = Self(16388);
    pub const NAT_DETECTION_DESTINATION_IP: Self = Self(16389);
    pub const COOKIE: Self = Self(16390);
    pub const USE_TRANSPORT_MODE: Self = Self(16391);
    pub const REKEY_SA: Self = Self(16393);

    /// True for an error type (§3.10.1: below 16384).
    pub fn is_error(self) -> bool {
        self.0 < 16384
    }

    /// The RFC's name, for logs.
    pub fn name(self) -> &'static str {
        match self {
            Self::UNSUPPORTED_CRITICAL_PAYLOAD => "UNSUPPORTED_CRITICAL_PAYLOAD",
            Self::INVALID_IKE_SPI => "INVALID_IKE_SPI",
            Self::INVALID_SYNTAX => "INVALID_SYNTAX",
            Self::INVALID_MESSAGE_ID => "INVALID_MESSAGE_ID",
            Self::INVALID_SPI => "INVALID_SPI",
            Self::NO_PROPOSAL_CHOSEN => "NO_PROPOSAL_CHOSEN",
            Self::INVALID_KE_PAYLOAD => "INVALID_KE_PAYLOAD",
            Self::AUTHENTICATION_FAILED => "AUTHENTICATION_FAILED",
            Self::SINGLE_PAIR_REQUIRED => "SINGLE_PAIR_REQUIRED",
            Self::NO_ADDITIONAL_SAS => "NO_ADDITIONAL_SAS",
            Self::TS_UNACCEPTABLE => "TS_UNACCEPTABLE",
            Self::TEMPORARY_FAILURE => "TEMPORARY_FAILURE",
            Self::CHILD_SA_NOT_FOUND => "CHILD_SA_NOT_FOUND",
            Self::INITIAL_CONTACT => "INITIAL_CONTACT",
            Self::NAT_DETECTION_SOURCE_IP => "NAT_DETECTION_SOURCE_IP",
            Self::NAT_DETECTION_DESTINATION_IP => "NAT_DETECTION_DESTINATION_IP",
            Self::COOKIE => "COOKIE",
            Self::USE_TRANSPORT_MODE => "USE_TRANSPORT_MODE",
            Self::REKEY_SA => "REKEY_SA",
            _ if self.is_error() => "error notify",
            _ => "status notify",
        }
    }
}

/// Security Protocol IDs (§3.3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProtocolId(pub u8);

impl ProtocolId {
    pub const NONE: Self = Self(0);
    pub const IKE: Self = Self(1);
    pub const AH: Self = Self(2);
    pub const ESP: Self = Self(3);
}

/// Identification types (§3.5) this implementation uses; others are carried as numbers.
pub mod id_type {
    pub const IPV4_ADDR: u8 = 1;
    pub const FQDN: u8 = 2;
    pub const RFC822_ADDR: u8 = 3;
    pub const IPV6_ADDR: u8 = 5;
    pub const KEY_ID: u8 = 11;
}

/// Authentication methods (§3.8).
pub mod auth_method {
    /// Shared Key Message Integrity Code (§2.15).
    pub const SHARED_KEY_MIC: u8 = 2;
}

/// An Identification payload body (IDi or IDr, §3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identification {
    pub id_type: u8,
    pub data: Vec<u8>,
}

impl Identification {
    /// `RestOfInitIDPayload` / `RestOfRespIDPayload` of §2.15: the body as sent (type, three
    /// reserved octets, data).
    pub fn body(&self) -> Vec<u8> {
        let mut out = vec![self.id_type, 0, 0, 0];
        out.extend_from_slice(&self.data);
        out
    }
}

/// A Notify payload body (§3.10).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notify {
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub kind: NotifyType,
    pub data: Vec<u8>,
}

impl Notify {
    /// A notify about the IKE SA (protocol 0, no SPI).
    pub fn new(kind: NotifyType, data: Vec<u8>) -> Self {
        Self {
            protocol: ProtocolId::NONE,
            spi: Vec::new(),
            kind,
            data,
        }
    }
}

/// A Delete payload body (§3.11): the SPIs of SAs of one protocol (none for the IKE SA).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delete {
    pub protocol: ProtocolId,
    pub spis: Vec<[u8; 4]>,
}

/// One payload of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Payload {
    /// Security Association (§3.3).
    Sa(Vec<Proposal>),
    /// Key Exchange (§3.4).
    Ke { group: u16, data: Vec<u8> },
    /// IDi (§3.5).
    IdI(Identification),
    /// IDr (§3.5).
    IdR(Identification),
    /// Authentication (§3.8).
    Auth { method: u8, data: Vec<u8> },
    /// Ni or Nr (§3.9).
    Nonce(Vec<u8>),
    /// Notify (§3.10).
    Notify(Notify),
    /// Delete (§3.11).
    Delete(Delete),
    /// Vendor ID (§3.12).
    Vendor(Vec<u8>),
    /// TSi (§3.13).
    TsI(Vec<TrafficSelector>),
    /// TSr (§3.13).
    TsR(Vec<TrafficSelector>),
    /// Encrypted and Authenticated (§3.14), still sealed: `first` is the type of the first
    /// payload inside, `data` is IV, ciphertext and ICV.
    Encrypted { first: PayloadType, data: Vec<u8> },
    /// A payload type this implementation does not process.
    Unknown {
        kind: PayloadType,
        critical: bool,
        data: Vec<u8>,
    },
}

/// A `Malformed` error about `what`.
pub(crate) fn malformed(what: &'static str, reason: &'static str) -> MessageError {
    MessageError::Malformed { what, reason }
}

/// The first `n` bytes of `body`, or a `Truncated` error about `what`.
pub(crate) fn take<'a>(
    body: &'a [u8],
    n: usize,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), MessageError> {
    if body.len() < n {
        return Err(MessageError::Truncated {
            what,
            need: n,
            have: body.len(),
        });
    }
    Ok(body.split_at(n))
}

impl Payload {
    /// The payload's type number.
    pub fn kind(&self) -> PayloadType {
        match self {
            Self::Sa(_) => PayloadType::SA,
            Self::Ke { .. } => PayloadType::KE,
            Self::IdI(_) => PayloadType::IDI,
            Self::IdR(_) => PayloadType::IDR,
            Self::Auth { .. } => PayloadType::AUTH,
            Self::Nonce(_) => PayloadType::NONCE,
            Self::Notify(_) => PayloadType::NOTIFY,
            Self::Delete(_) => PayloadType::DELETE,
            Self::Vendor(_) => PayloadType::VENDOR,
            Self::TsI(_) => PayloadType::TSI,
            Self::TsR(_) => PayloadType::TSR,
            Self::Encrypted { .. } => PayloadType::SK,
            Self::Unknown { kind, .. } => *kind,
        }
    }

    /// The critical bit to send: set only on unknown payloads that carried it (§2.5: senders set
    /// it on no payload type defined in RFC 7296).
    pub(crate) fn critical(&self) -> bool {
        matches!(self, Self::Unknown { critical: true, .. })
    }

    /// Parses one payload body of type `kind`.
    ///
    /// # Errors
    /// [`MessageError`] when the body does not fit its type.
    pub fn parse(kind: PayloadType, critical: bool, body: &[u8]) -> Result<Self, MessageError> {
        Ok(match kind {
            PayloadType::SA => Self::Sa(sa_payload::parse(body)?),
            PayloadType::KE => {
                let (head, data) = take(body, 4, "key exchange payload")?;
                Self::Ke {
                    group: u16::from_be_bytes([head[0], head[1]]),
                    data: data.to_vec(),
                }
            }
            PayloadType::IDI | PayloadType::IDR => {
                let (head, data) = take(body, 4, "identification payload")?;
                let id = Identification {
                    id_type: head[0],
                    data: data.to_vec(),
                };
                if kind == PayloadType::IDI {
                    Self::IdI(id)
                } else {
                    Self::IdR(id)
                }
            }
            PayloadType::AUTH => {
                let (head, data) = take(body, 4, "authentication payload")?;
                Self::Auth {
                    method: head[0],
                    data: data.to_vec(),
                }
            }
            PayloadType::NONCE => {
                // §3.9: at least 16 and at most 256 octets.
                if !(16..=256).contains(&body.len()) {
                    return Err(malformed("nonce payload", "nonce must be 16 to 256 bytes"));
                }
                Self::Nonce(body.to_vec())
            }
            PayloadType::NOTIFY => Self::Notify(parse_notify(body)?),
            PayloadType::DELETE => Self::Delete(parse_delete(body)?),
            PayloadType::VENDOR => Self::Vendor(body.to_vec()),
            PayloadType::TSI => Self::TsI(selector::parse(body)?),
            PayloadType::TSR => Self::TsR(selector::parse(body)?),
            _ => Self::Unknown {
                kind,
                critical,
                data: body.to_vec(),
            },
        })
    }

    /// Appends the body (without the generic header).
    pub(crate) fn emit_body(&self, out: &mut Vec<u8>) {
        match self {
            Self::Sa(proposals) => sa_payload::emit(proposals, out),
            Self::Ke { group, data } => {
                out.extend_from_slice(&group.to_be_bytes());
                out.extend_from_slice(&[0, 0]);
                out.extend_from_slice(data);
            }
            Self::IdI(id) | Self::IdR(id) => out.extend_from_slice(&id.body()),
            Self::Auth { method, data } => {
                out.extend_from_slice(&[*method, 0, 0, 0]);
                out.extend_from_slice(data);
            }
            Self::Nonce(data) | Self::Vendor(data) => out.extend_from_slice(data),
            Self::Notify(n) => {
                // SPI sizes are 0, 4 or 8 octets, so the cast cannot truncate.
                out.push(n.protocol.0);
                out.push(u8::try_from(n.spi.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(&n.kind.0.to_be_bytes());
                out.extend_from_slice(&n.spi);
                out.extend_from_slice(&n.data);
            }
            Self::Delete(d) => {
                let size = if d.protocol == ProtocolId::IKE { 0 } else { 4 };
                out.push(d.protocol.0);
                out.push(size);
                let count = if size == 0 { 0 } else { d.spis.len() };
                out.extend_from_slice(&u16::try_from(count).unwrap_or(u16::MAX).to_be_bytes());
                for spi in d.spis.iter().take(count) {
                    out.extend_from_slice(spi);
                }
            }
            Self::TsI(ts) | Self::TsR(ts) => selector::emit(ts, out),
            Self::Encrypted { data, .. } | Self::Unknown { data, .. } => {
                out.extend_from_slice(data);
            }
        }
    }
}

fn parse_notify(body: &[u8]) -> Result<Notify, MessageError> {
    let (head, rest) = take(body, 4, "notify payload")?;
    let (spi, data) = take(rest, usize::from(head[1]), "notify spi")?;
    Ok(Notify {
        protocol: ProtocolId(head[0]),
        spi: spi.to_vec(),
        kind: NotifyType(u16::from_be_bytes([head[2], head[3]])),
        data: data.to_vec(),
    })
}

fn parse_delete(body: &[u8]) -> Result<Delete, MessageError> {
    let (head, mut rest) = take(body, 4, "delete payload")?;
    let protocol = ProtocolId(head[0]);
    let count = usize::from(u16::from_be_bytes([head[2], head[3]]));
    match (protocol, head[1]) {
        (ProtocolId::IKE, 0) if count == 0 && rest.is_empty() => Ok(Delete {
            protocol,
            spis: Vec::new(),
        }),
        (ProtocolId::ESP | ProtocolId::AH, 4) if rest.len() == 4 * count => {
            let mut spis = Vec::new();
            while let Some((spi, tail)) = rest.split_first_chunk::<4>() {
                spis.push(*spi);
                rest = tail;
            }
            Ok(Delete { protocol, spis })
        }
        _ => Err(malformed(
            "delete payload",
            "protocol, spi size and count disagree",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::message::{emit_chain, parse_chain};
    use crate::ike::sa_payload::{Attribute, Transform};
    use std::net::Ipv6Addr;

    /// One of each payload type, emitted and parsed back.
    pub(crate) fn every_payload() -> Vec<Payload> {
        vec![
            Payload::Sa(vec![Proposal {
                number: 1,
                protocol: ProtocolId::ESP,
                spi: vec![1, 2, 3, 4],
                transforms: vec![
                    Transform {
                        kind: 1,
                        id: 12,
                        attributes: vec![Attribute::key_length(128)],
                    },
                    Transform {
                        kind: 3,
                        id: 12,
                        attributes: vec![],
                    },
                ],
            }]),
            Payload::Ke {
                group: 31,
                data: vec![9; 32],
            },
            Payload::IdI(Identification {
                id_type: id_type::FQDN,
                data: b"a.example".to_vec(),
            }),
            Payload::IdR(Identification {
                id_type: id_type::IPV6_ADDR,
                data: Ipv6Addr::LOCALHOST.octets().to_vec(),
            }),
            Payload::Auth {
                method: auth_method::SHARED_KEY_MIC,
                data: vec![5; 32],
            },
            Payload::Nonce(vec![3; 32]),
            Payload::Notify(Notify {
                protocol: ProtocolId::ESP,
                spi: vec![1, 2, 3, 4],
                kind: NotifyType::REKEY_SA,
                data: vec![],
            }),
            Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: vec![[1, 2, 3, 4], [5, 6, 7, 8]],
            }),
            Payload::Delete(Delete {
                protocol: ProtocolId::IKE,
                spis: vec![],
            }),
            Payload::Vendor(b"xipsec".to_vec()),
            Payload::TsI(vec![TrafficSelector::ipv6_host(Ipv6Addr::LOCALHOST)]),
            Payload::TsR(vec![TrafficSelector::any_v4(), TrafficSelector::any_v6()]),
            Payload::Unknown {
                kind: PayloadType(200),
                critical: true,
                data: vec![1, 2],
            },
        ]
    }

    #[test]
    fn every_payload_round_trips() {
        let payloads = every_payload();
        let mut bytes = Vec::new();
        let first = emit_chain(&payloads, &mut bytes).expect("emitting");
        assert_eq!(first, PayloadType::SA);
        assert_eq!(parse_chain(first, &bytes).expect("parsing"), payloads);
        // The last payload (unknown, critical) keeps its critical bit on the wire.
        let unknown = bytes.len() - 6;
        assert_eq!(bytes[unknown + 1], 0x80);
    }

    #[test]
    fn bodies_are_bounds_checked() {
        for payload in every_payload() {
            let mut body = Vec::new();
            payload.emit_body(&mut body);
            for cut in 0..body.len() {
                // Never a panic; some prefixes are valid payloads of their own (a shorter
                // vendor id), the point is that none reads past the end.
                let _ = Payload::parse(payload.kind(), false, &body[..cut]);
            }
        }
        assert!(Payload::parse(PayloadType::NONCE, false, &[0; 15]).is_err());
        assert!(Payload::parse(PayloadType::NONCE, false, &[0; 257]).is_err());
        // A delete whose count claims more SPIs than it holds.
        assert!(Payload::parse(PayloadType::DELETE, false, &[3, 4, 0, 2, 1, 2, 3, 4]).is_err());
        // A notify whose SPI size runs past the body.
        assert!(Payload::parse(PayloadType::NOTIFY, false, &[3, 8, 0x40, 0x09, 1, 2]).is_err());
    }
}
