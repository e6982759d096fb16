//! The Security Association payload body (RFC 7296 §3.3): proposals, their transforms and the
//! transforms' attributes, as numbers on the wire. What the numbers mean (and which set of them
//! a peer may choose) is `proposal`'s business.
//!
//! Contract: [`parse`] never panics and never trusts a count: the Num Transforms field and
//! the Last Substruc octets must agree with what the lengths hold, proposals are numbered from 1
//! in order (§3.3.1), and the SPI size is 0, 4 or 8.

use super::message::MessageError;
use super::payload::{ProtocolId, malformed, take};

/// Transform types (§3.3.2).
pub mod transform_type {
    pub const ENCR: u8 = 1;
    pub const PRF: u8 = 2;
    pub const INTEG: u8 = 3;
    pub const DH: u8 = 4;
    pub const ESN: u8 = 5;
}

/// The Key Length attribute type (§3.3.5), always in TV form.
pub const KEY_LENGTH: u16 = 14;

/// A transform attribute (§3.3.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attribute {
    /// Type/Value: a 16-bit value (the AF bit set on the wire).
    Tv { kind: u16, value: u16 },
    /// Type/Length/Value.
    Tlv { kind: u16, value: Vec<u8> },
}

impl Attribute {
    /// The Key Length attribute, in bits.
    pub fn key_length(bits: u16) -> Self {
        Self::Tv {
            kind: KEY_LENGTH,
            value: bits,
        }
    }
}

/// One transform (§3.3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transform {
    pub kind: u8,
    pub id: u16,
    pub attributes: Vec<Attribute>,
}

impl Transform {
    /// The Key Length attribute, when present.
    pub fn key_length(&self) -> Option<u16> {
        self.attributes.iter().find_map(|a| match a {
            Attribute::Tv { kind, value } if *kind == KEY_LENGTH => Some(*value),
            _ => None,
        })
    }
}

/// One proposal (§3.3.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub number: u8,
    pub protocol: ProtocolId,
    pub spi: Vec<u8>,
    pub transforms: Vec<Transform>,
}

/// Reads the substructure header shared by proposals and transforms: (last flag, length,
/// rest of this substructure, what follows it).
fn substructure<'a>(
    body: &'a [u8],
    more: u8,
    what: &'static str,
) -> Result<(bool, &'a [u8], &'a [u8]), MessageError> {
    let (head, _) = take(body, 4, what)?;
    let last = match head[0] {
        0 => true,
        x if x == more => false,
        _ => return Err(malformed(what, "bad last-substructure octet")),
    };
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    if len < 4 || len > body.len() {
        return Err(malformed(what, "length outside the payload"));
    }
    Ok((last, &body[4..len], &body[len..]))
}

fn parse_attributes(mut rest: &[u8]) -> Result<Vec<Attribute>, MessageError> {
    let mut attributes = Vec::new();
    while !rest.is_empty() {
        let (head, tail) = take(rest, 4, "transform attribute")?;
        let raw = u16::from_be_bytes([head[0], head[1]]);
        let field = u16::from_be_bytes([head[2], head[3]]);
        let kind = raw & 0x7fff;
        if raw & 0x8000 != 0 {
            attributes.push(Attribute::Tv { kind, value: field });
            rest = tail;
        } else {
            let (value, tail) = take(tail, usize::from(field), "transform attribute value")?;
            attributes.push(Attribute::Tlv {
                kind,
                value: value.to_vec(),
            });
            rest = tail;
        }
    }
    Ok(attributes)
}

fn parse_proposal(body: &[u8], expected_number: u8) -> Result<Proposal, MessageError> {
    let (head, rest) = take(body, 4, "proposal")?;
    if head[0] != expected_number {
        return Err(malformed(
            "proposal",
            "proposals must be numbered 1, 2, ...",
        ));
    }
    let spi_size = usize::from(head[2]);
    if ![0, 4, 8].contains(&spi_size) {
        return Err(malformed("proposal", "spi size must be 0, 4 or 8"));
    }
    let (spi, mut rest) = take(rest, spi_size, "proposal spi")?;
    let mut transforms = Vec::new();
    loop {
        let (last, body, tail) = substructure(rest, 3, "transform")?;
        let (head, attrs) = take(body, 4, "transform")?;
        transforms.push(Transform {
            kind: head[0],
            id: u16::from_be_bytes([head[2], head[3]]),
            attributes: parse_attributes(attrs)?,
        });
        rest = tail;
        if last {
            break;
        }
    }
    if !rest.is_empty() || transforms.len() != usize::from(head[3]) {
        return Err(malformed(
            "proposal",
            "transform count disagrees with the transforms",
        ));
    }
    Ok(Proposal {
        number: head[0],
        protocol: ProtocolId(head[1]),
        spi: spi.to_vec(),
        transforms,
    })
}

/// Parses an SA payload body.
///
/// # Errors
/// [`MessageError`] for lengths, counts, numbering or SPI sizes that do not agree.
pub fn parse(mut body: &[u8]) -> Result<Vec<Proposal>, MessageError> {
    let mut proposals = Vec::new();
    loop {
        let (last, proposal, tail) = substructure(body, 2, "proposal")?;
        let number = u8::try_from(proposals.len() + 1)
            .map_err(|_| malformed("proposal", "more than 255 proposals"))?;
        // The proposal's own header is the 4 octets of `substructure` plus what follows; hand
        // `parse_proposal` the fields after the generic part.
        proposals.push(parse_proposal(proposal, number)?);
        body = tail;
        if last {
            break;
        }
    }
    if body.is_empty() {
        Ok(proposals)
    } else {
        Err(malformed("sa payload", "bytes after the last proposal"))
    }
}

fn put_len(out: &mut [u8], start: usize) {
    let len = out.len() - start;
    let len = u16::try_from(len).unwrap_or(u16::MAX);
    out[start + 2..start + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends an SA payload body. Proposal numbers are written as they are in `proposals`.
pub fn emit(proposals: &[Proposal], out: &mut Vec<u8>) {
    for (i, proposal) in proposals.iter().enumerate() {
        let start = out.len();
        let more = if i + 1 == proposals.len() { 0 } else { 2 };
        out.extend_from_slice(&[more, 0, 0, 0]);
        out.push(proposal.number);
        out.push(proposal.protocol.0);
        out.push(u8::try_from(proposal.spi.len()).unwrap_or(u8::MAX));
        out.push(u8::try_from(proposal.transforms.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(&proposal.spi);
        for (j, transform) in proposal.transforms.iter().enumerate() {
            let t_start = out.len();
            let more = if j + 1 == proposal.transforms.len() {
                0
            } else {
                3
            };
            out.extend_from_slice(&[more, 0, 0, 0, transform.kind, 0]);
            out.extend_from_slice(&transform.id.to_be_bytes());
            for attribute in &transform.attributes {
                match attribute {
                    Attribute::Tv { kind, value } => {
                        out.extend_from_slice(&(kind | 0x8000).to_be_bytes());
                        out.extend_from_slice(&value.to_be_bytes());
                    }
                    Attribute::Tlv { kind, value } => {
                        out.extend_from_slice(&(kind & 0x7fff).to_be_bytes());
                        let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
                        out.extend_from_slice(&len.to_be_bytes());
                        out.extend_from_slice(value);
                    }
                }
            }
            put_len(out, t_start);
        }
        put_len(out, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7296 §3.3's example shape: an IKE proposal with AES-CBC-128, PRF-HMAC-SHA2-256,
    /// HMAC-SHA2-256-128 and group 31, as bytes.
    const IKE_PROPOSAL: [u8; 44] = [
        0, 0, 0, 44, 1, 1, 0, 4, // last proposal, length 44, #1, IKE, no SPI, 4 transforms
        3, 0, 0, 12, 1, 0, 0, 12, 0x80, 14, 0, 128, // ENCR AES_CBC, key length 128
        3, 0, 0, 8, 2, 0, 0, 5, // PRF_HMAC_SHA2_256
        3, 0, 0, 8, 3, 0, 0, 12, // AUTH_HMAC_SHA2_256_128
        0, 0, 0, 8, 4, 0, 0, 31, // DH group 31
    ];

    fn fixture() -> Vec<Proposal> {
        vec![Proposal {
            number: 1,
            protocol: ProtocolId::IKE,
            spi: vec![],
            transforms: vec![
                Transform {
                    kind: transform_type::ENCR,
                    id: 12,
                    attributes: vec![Attribute::key_length(128)],
                },
                Transform {
                    kind: transform_type::PRF,
                    id: 5,
                    attributes: vec![],
                },
                Transform {
                    kind: transform_type::INTEG,
                    id: 12,
                    attributes: vec![],
                },
                Transform {
                    kind: transform_type::DH,
                    id: 31,
                    attributes: vec![],
                },
            ],
        }]
    }

    #[test]
    fn fixture_deconstructs_and_round_trips() {
        let proposals = parse(&IKE_PROPOSAL).expect("parsing the fixture");
        assert_eq!(proposals, fixture());
        assert_eq!(proposals[0].transforms[0].key_length(), Some(128));
        let mut out = Vec::new();
        emit(&proposals, &mut out);
        assert_eq!(out, IKE_PROPOSAL);
    }

    #[test]
    fn counts_and_flags_must_agree() {
        let cases: [(usize, u8, &str); 5] = [
            (7, 5, "transform count larger than the transforms"),
            (7, 3, "transform count smaller than the transforms"),
            (36, 3, "last transform claims more"),
            (0, 2, "last proposal claims more"),
            (4, 2, "proposal numbered 2 first"),
        ];
        for (at, value, why) in cases {
            let mut bad = IKE_PROPOSAL;
            bad[at] = value;
            assert!(parse(&bad).is_err(), "{why}");
        }
        for cut in 0..IKE_PROPOSAL.len() {
            assert!(parse(&IKE_PROPOSAL[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn tlv_attributes_and_spis_round_trip() {
        let proposals = vec![
            Proposal {
                number: 1,
                protocol: ProtocolId::ESP,
                spi: vec![0xc0, 1, 2, 3],
                transforms: vec![Transform {
                    kind: transform_type::ENCR,
                    id: 20,
                    attributes: vec![
                        Attribute::key_length(256),
                        Attribute::Tlv {
                            kind: 99,
                            value: vec![1, 2, 3],
                        },
                    ],
                }],
            },
            Proposal {
                number: 2,
                protocol: ProtocolId::ESP,
                spi: vec![0xc0, 1, 2, 3],
                transforms: vec![Transform {
                    kind: transform_type::ESN,
                    id: 0,
                    attributes: vec![],
                }],
            },
        ];
        let mut out = Vec::new();
        emit(&proposals, &mut out);
        assert_eq!(parse(&out).expect("parsing"), proposals);
    }
}
