//! Proposals: strongSwan's syntax (`aes128-sha256-x25519`, `aes128gcm16-prfsha256-ecp256`,
//! ESP `aes128gcm16`), their SA-payload transforms (RFC 7296 §3.3.2) and the responder's choice.
//!
//! Contract:
//! - [`parse_ike`]/[`parse_esp`] take a comma-separated list of proposals, each a `-`-separated
//!   list of keywords; a proposal may name several algorithms of one kind (strongSwan's
//!   `aes128-aes256-sha256-x25519-ecp256`). A keyword that is not known, a kind that is missing,
//!   integrity with an AEAD or none without one is refused with the reason; nothing is guessed
//!   except what strongSwan also fills in: an IKE proposal without a PRF gets `prfsha256`, and an
//!   ESP proposal without `esn`/`noesn` is `noesn`.
//! - Selection as responder ([`select`]): **our order wins**. We walk our proposals in our order,
//!   and for each the peer's proposals in theirs; the first pair that shares one algorithm of
//!   every kind is chosen, each kind taking the first of *our* algorithms the peer offers. Why:
//!   the configured list is the operator's policy (best first), and it is strongSwan's default
//!   (`prefer_configured_proposals = yes`), so xipsec and charon choose the same suite whichever
//!   of them responds.
//! - An initiator checks the responder's answer with [`accept`]: one proposal, one transform of
//!   each kind, all taken from one proposal we sent.
//! - The ESP algorithms are the model's ([`EncryptionAlgorithm`], [`IntegrityAlgorithm`]), so a
//!   negotiated CHILD_SA is an SA the engine already implements. A DH group in an ESP proposal
//!   is PFS for CREATE_CHILD_SA; the IKE_AUTH exchange ignores it (§1.2).

use crate::model::{EncryptionAlgorithm, IntegrityAlgorithm};

use super::dh::DhGroup;
use super::payload::ProtocolId;
use super::sa_payload::{self, Attribute, Transform, transform_type};

/// The PRFs this implementation offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Prf {
    /// PRF_HMAC_SHA2_256 (RFC 4868), transform ID 5.
    HmacSha256,
}

/// One algorithm of a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Encryption(EncryptionAlgorithm),
    Prf(Prf),
    Integrity(IntegrityAlgorithm),
    Dh(DhGroup),
    /// Extended sequence numbers: only `false` (32-bit) is offered.
    Esn(bool),
}

impl Algorithm {
    /// The transform of the SA payload.
    pub fn transform(self) -> Transform {
        let (kind, id, bits) = match self {
            Self::Encryption(e) => {
                let (id, bits) = match e {
                    EncryptionAlgorithm::TripleDesCbc => (3, None),
                    EncryptionAlgorithm::Null => (11, None),
                    EncryptionAlgorithm::Aes128Cbc => (12, Some(128)),
                    EncryptionAlgorithm::Aes256Cbc => (12, Some(256)),
                    EncryptionAlgorithm::Aes128Gcm => (20, Some(128)),
                    EncryptionAlgorithm::Aes256Gcm => (20, Some(256)),
                };
                (transform_type::ENCR, id, bits)
            }
            Self::Prf(Prf::HmacSha256) => (transform_type::PRF, 5, None),
            Self::Integrity(i) => {
                let id = match i {
                    IntegrityAlgorithm::HmacSha1 => 2,
                    IntegrityAlgorithm::HmacSha256 => 12,
                    IntegrityAlgorithm::None => 0,
                };
                (transform_type::INTEG, id, None)
            }
            Self::Dh(g) => (transform_type::DH, g.id(), None),
            Self::Esn(on) => (transform_type::ESN, u16::from(on), None),
        };
        Transform {
            kind,
            id,
            attributes: bits.map(Attribute::key_length).into_iter().collect(),
        }
    }

    /// The algorithm a transform names, if it is one of ours (exactly: an attribute we do not
    /// expect makes it unknown, §3.3.6).
    pub fn from_transform(t: &Transform) -> Option<Self> {
        let algorithm = match (t.kind, t.id, t.key_length()) {
            (transform_type::ENCR, 3, None) => Self::Encryption(EncryptionAlgorithm::TripleDesCbc),
            (transform_type::ENCR, 11, None) => Self::Encryption(EncryptionAlgorithm::Null),
            (transform_type::ENCR, 12, Some(128)) => {
                Self::Encryption(EncryptionAlgorithm::Aes128Cbc)
            }
            (transform_type::ENCR, 12, Some(256)) => {
                Self::Encryption(EncryptionAlgorithm::Aes256Cbc)
            }
            (transform_type::ENCR, 20, Some(128)) => {
                Self::Encryption(EncryptionAlgorithm::Aes128Gcm)
            }
            (transform_type::ENCR, 20, Some(256)) => {
                Self::Encryption(EncryptionAlgorithm::Aes256Gcm)
            }
            (transform_type::PRF, 5, None) => Self::Prf(Prf::HmacSha256),
            (transform_type::INTEG, 2, None) => Self::Integrity(IntegrityAlgorithm::HmacSha1),
            (transform_type::INTEG, 12, None) => Self::Integrity(IntegrityAlgorithm::HmacSha256),
            (transform_type::INTEG, 0, None) => Self::Integrity(IntegrityAlgorithm::None),
            (transform_type::DH, id, None) => Self::Dh(DhGroup::from_id(id)?),
            (transform_type::ESN, 0, None) => Self::Esn(false),
            (transform_type::ESN, 1, None) => Self::Esn(true),
            _ => return None,
        };
        (t.attributes.len() == usize::from(t.key_length().is_some())).then_some(algorithm)
    }

    fn kind(self) -> u8 {
        self.transform().kind
    }
}

/// Key length of an encryption algorithm as keying material (GCM's includes the 4-octet salt,
/// RFC 5282 §7.1 / RFC 4106 §8.1).
pub fn encryption_key_len(e: EncryptionAlgorithm) -> usize {
    match e {
        EncryptionAlgorithm::Null => 0,
        EncryptionAlgorithm::Aes128Cbc => 16,
        EncryptionAlgorithm::Aes128Gcm => 20,
        EncryptionAlgorithm::TripleDesCbc => 24,
        EncryptionAlgorithm::Aes256Cbc => 32,
        EncryptionAlgorithm::Aes256Gcm => 36,
    }
}

/// Key length of an integrity algorithm (RFC 2404, RFC 4868 §2.1.1).
pub fn integrity_key_len(i: IntegrityAlgorithm) -> usize {
    match i {
        IntegrityAlgorithm::None => 0,
        IntegrityAlgorithm::HmacSha1 => 20,
        IntegrityAlgorithm::HmacSha256 => 32,
    }
}

/// True for the combined-mode (AEAD) algorithms.
pub fn is_aead(e: EncryptionAlgorithm) -> bool {
    matches!(
        e,
        EncryptionAlgorithm::Aes128Gcm | EncryptionAlgorithm::Aes256Gcm
    )
}

/// One proposal: the algorithms offered, in preference order, for IKE or ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub protocol: ProtocolId,
    pub algorithms: Vec<Algorithm>,
}

/// The negotiated IKE SA suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IkeSuite {
    pub encryption: EncryptionAlgorithm,
    /// `None` for an AEAD.
    pub integrity: IntegrityAlgorithm,
    pub prf: Prf,
    pub group: DhGroup,
}

/// The negotiated CHILD_SA (ESP) suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EspSuite {
    pub encryption: EncryptionAlgorithm,
    /// `None` for an AEAD.
    pub integrity: IntegrityAlgorithm,
    /// The PFS group of a CREATE_CHILD_SA, when one was negotiated.
    pub group: Option<DhGroup>,
}

/// Why a proposal string was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ProposalError {
    #[error("proposal '{proposal}': unknown keyword '{keyword}'; {allowed}")]
    Unknown {
        proposal: String,
        keyword: String,
        allowed: &'static str,
    },
    #[error("proposal '{proposal}': {reason}")]
    Invalid {
        proposal: String,
        reason: &'static str,
    },
    #[error("empty proposal list")]
    Empty,
}

const IKE_ALLOWED: &str = "allowed: aes128, aes256, aes128gcm16, aes256gcm16, 3des (encryption); \
     sha256, sha1 (integrity); prfsha256; x25519, ecp256, modp2048 (groups)";
const ESP_ALLOWED: &str = "allowed: aes128, aes256, aes128gcm16, aes256gcm16, 3des, null \
     (encryption); sha256, sha1 (integrity); x25519, ecp256, modp2048 (pfs groups); noesn";

fn keyword(word: &str) -> Option<Algorithm> {
    use EncryptionAlgorithm as E;
    use IntegrityAlgorithm as I;
    Some(match word {
        "aes128" | "aes128cbc" => Algorithm::Encryption(E::Aes128Cbc),
        "aes256" | "aes256cbc" => Algorithm::Encryption(E::Aes256Cbc),
        "aes128gcm16" | "aes128gcm128" => Algorithm::Encryption(E::Aes128Gcm),
        "aes256gcm16" | "aes256gcm128" => Algorithm::Encryption(E::Aes256Gcm),
        "3des" => Algorithm::Encryption(E::TripleDesCbc),
        "null" => Algorithm::Encryption(E::Null),
        "sha256" | "sha2_256" => Algorithm::Integrity(I::HmacSha256),
        "sha1" => Algorithm::Integrity(I::HmacSha1),
        "prfsha256" => Algorithm::Prf(Prf::HmacSha256),
        "x25519" | "curve25519" => Algorithm::Dh(DhGroup::Curve25519),
        "ecp256" => Algorithm::Dh(DhGroup::Ecp256),
        "modp2048" => Algorithm::Dh(DhGroup::Modp2048),
        "noesn" => Algorithm::Esn(false),
        _ => return None,
    })
}

fn parse_list(text: &str, protocol: ProtocolId) -> Result<Vec<Proposal>, ProposalError> {
    let (allowed, ike) = if protocol == ProtocolId::IKE {
        (IKE_ALLOWED, true)
    } else {
        (ESP_ALLOWED, false)
    };
    let mut proposals = Vec::new();
    for one in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let invalid = |reason| ProposalError::Invalid {
            proposal: one.to_owned(),
            reason,
        };
        let mut algorithms: Vec<Algorithm> = Vec::new();
        for word in one.split('-') {
            let algorithm =
                keyword(&word.to_ascii_lowercase()).ok_or_else(|| ProposalError::Unknown {
                    proposal: one.to_owned(),
                    keyword: word.to_owned(),
                    allowed,
                })?;
            let wrong_side = match algorithm {
                Algorithm::Prf(_) => !ike,
                Algorithm::Esn(_) | Algorithm::Encryption(EncryptionAlgorithm::Null) => ike,
                _ => false,
            };
            if wrong_side {
                return Err(ProposalError::Unknown {
                    proposal: one.to_owned(),
                    keyword: word.to_owned(),
                    allowed,
                });
            }
            if !algorithms.contains(&algorithm) {
                algorithms.push(algorithm);
            }
        }
        let has = |kind: u8| algorithms.iter().any(|a| a.kind() == kind);
        let aead: Vec<bool> = algorithms
            .iter()
            .filter_map(|a| match a {
                Algorithm::Encryption(e) => Some(is_aead(*e)),
                _ => None,
            })
            .collect();
        if aead.is_empty() {
            return Err(invalid("no encryption algorithm"));
        }
        if aead.iter().any(|&a| a != aead[0]) {
            return Err(invalid(
                "aead and non-aead encryption cannot share a proposal (write two proposals)",
            ));
        }
        match (aead[0], has(transform_type::INTEG)) {
            (true, true) => return Err(invalid("aes-gcm authenticates by itself: no integrity")),
            (false, false) => return Err(invalid("no integrity algorithm")),
            _ => {}
        }
        if ike {
            if !has(transform_type::DH) {
                return Err(invalid(
                    "no diffie-hellman group (x25519, ecp256, modp2048)",
                ));
            }
            if !has(transform_type::PRF) {
                // strongSwan's default for sha256 integrity and for an AEAD alike.
                algorithms.push(Algorithm::Prf(Prf::HmacSha256));
            }
        } else if !has(transform_type::ESN) {
            algorithms.push(Algorithm::Esn(false));
        }
        proposals.push(Proposal {
            protocol,
            algorithms,
        });
    }
    if proposals.is_empty() {
        return Err(ProposalError::Empty);
    }
    Ok(proposals)
}

/// Parses IKE proposals (`aes128-sha256-x25519,aes128gcm16-prfsha256-ecp256`).
///
/// # Errors
/// [`ProposalError`] naming the proposal and what is wrong with it.
pub fn parse_ike(text: &str) -> Result<Vec<Proposal>, ProposalError> {
    parse_list(text, ProtocolId::IKE)
}

/// Parses ESP proposals (`aes128gcm16,aes128-sha256`).
///
/// # Errors
/// [`ProposalError`] naming the proposal and what is wrong with it.
pub fn parse_esp(text: &str) -> Result<Vec<Proposal>, ProposalError> {
    parse_list(text, ProtocolId::ESP)
}

/// The defaults: what strongSwan 5.9 offers first, restricted to what xipsec implements.
pub const DEFAULT_IKE: &str = "aes128-sha256-x25519,aes128gcm16-prfsha256-x25519,\
     aes256-sha256-ecp256,aes128-sha256-modp2048";
/// The default ESP proposals: GCM first (the engine's fastest suite), then CBC.
pub const DEFAULT_ESP: &str = "aes128gcm16,aes256gcm16,aes128-sha256";

impl Proposal {
    /// The SA-payload proposal numbered `number`, with `spi`. `with_dh` false leaves out the DH
    /// transforms (ESP in IKE_AUTH, §1.2).
    pub fn to_wire(&self, number: u8, spi: &[u8], with_dh: bool) -> sa_payload::Proposal {
        sa_payload::Proposal {
            number,
            protocol: self.protocol,
            spi: spi.to_vec(),
            transforms: self
                .algorithms
                .iter()
                .filter(|a| with_dh || !matches!(a, Algorithm::Dh(_)))
                .map(|a| a.transform())
                .collect(),
        }
    }

    /// The DH groups of this proposal, in order.
    pub fn groups(&self) -> impl Iterator<Item = DhGroup> + '_ {
        self.algorithms.iter().filter_map(|a| match a {
            Algorithm::Dh(g) => Some(*g),
            _ => None,
        })
    }
}

/// The SA payload of a list of our proposals.
pub fn to_wire(ours: &[Proposal], spi: &[u8], with_dh: bool) -> Vec<sa_payload::Proposal> {
    ours.iter()
        .zip(1u8..)
        .map(|(p, n)| p.to_wire(n, spi, with_dh))
        .collect()
}

/// The first DH group named in `proposals` (the KE an initiator sends first).
pub(crate) fn first_group(proposals: &[Proposal]) -> Option<DhGroup> {
    proposals.iter().flat_map(Proposal::groups).next()
}

/// What a chosen proposal reduces to: one algorithm per kind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chosen {
    pub algorithms: Vec<Algorithm>,
}

impl Chosen {
    fn get<T>(&self, f: impl Fn(&Algorithm) -> Option<T>) -> Option<T> {
        self.algorithms.iter().find_map(f)
    }

    /// The IKE suite, when this is one.
    pub fn ike(&self) -> Option<IkeSuite> {
        let encryption = self.get(|a| match a {
            Algorithm::Encryption(e) => Some(*e),
            _ => None,
        })?;
        Some(IkeSuite {
            encryption,
            integrity: self.integrity(),
            prf: self.get(|a| match a {
                Algorithm::Prf(p) => Some(*p),
                _ => None,
            })?,
            group: self.group()?,
        })
    }

    /// The ESP suite, when this is one.
    pub fn esp(&self) -> Option<EspSuite> {
        Some(EspSuite {
            encryption: self.get(|a| match a {
                Algorithm::Encryption(e) => Some(*e),
                _ => None,
            })?,
            integrity: self.integrity(),
            group: self.group(),
        })
    }

    fn integrity(&self) -> IntegrityAlgorithm {
        self.get(|a| match a {
            Algorithm::Integrity(i) => Some(*i),
            _ => None,
        })
        .unwrap_or(IntegrityAlgorithm::None)
    }

    fn group(&self) -> Option<DhGroup> {
        self.get(|a| match a {
            Algorithm::Dh(g) => Some(*g),
            _ => None,
        })
    }
}

const KINDS: [u8; 5] = [
    transform_type::ENCR,
    transform_type::PRF,
    transform_type::INTEG,
    transform_type::DH,
    transform_type::ESN,
];

/// Our proposal `ours` against one of the peer's: the first of our algorithms of each kind the
/// peer offers. `with_dh` false ignores DH transforms on both sides (IKE_AUTH's CHILD_SA).
fn match_one(ours: &Proposal, theirs: &sa_payload::Proposal, with_dh: bool) -> Option<Chosen> {
    if ours.protocol != theirs.protocol {
        return None;
    }
    let offered: Vec<Option<Algorithm>> = theirs
        .transforms
        .iter()
        .map(Algorithm::from_transform)
        .collect();
    let mut algorithms = Vec::new();
    for kind in KINDS {
        if kind == transform_type::DH && !with_dh {
            continue;
        }
        let mine: Vec<Algorithm> = ours
            .algorithms
            .iter()
            .copied()
            .filter(|a| a.kind() == kind)
            .collect();
        let theirs_has_kind = theirs
            .transforms
            .iter()
            .any(|t| t.kind == kind && !(kind == transform_type::INTEG && t.id == 0));
        let mine_has_kind = mine
            .iter()
            .any(|a| *a != Algorithm::Integrity(IntegrityAlgorithm::None));
        match (mine_has_kind, theirs_has_kind) {
            (false, false) => {}
            // A peer that leaves out ESN means no ESN (strongSwan always sends it).
            (true, false)
                if kind == transform_type::ESN && mine.contains(&Algorithm::Esn(false)) =>
            {
                algorithms.push(Algorithm::Esn(false));
            }
            (true, true) => algorithms.push(*mine.iter().find(|a| offered.contains(&Some(**a)))?),
            _ => return None,
        }
    }
    Some(Chosen { algorithms })
}

/// The responder's choice (see the module contract for the order): the peer's proposal that was
/// chosen (its number) and what it reduces to. None: `NO_PROPOSAL_CHOSEN`.
pub fn select(
    ours: &[Proposal],
    theirs: &[sa_payload::Proposal],
    with_dh: bool,
) -> Option<(u8, Chosen)> {
    ours.iter().find_map(|mine| {
        theirs
            .iter()
            .find_map(|t| match_one(mine, t, with_dh).map(|c| (t.number, c)))
    })
}

/// The proposal a responder sends back: the chosen algorithms, under the peer's proposal
/// number and with the responder's SPI.
pub fn reply(
    number: u8,
    protocol: ProtocolId,
    spi: &[u8],
    chosen: &Chosen,
) -> sa_payload::Proposal {
    sa_payload::Proposal {
        number,
        protocol,
        spi: spi.to_vec(),
        transforms: chosen.algorithms.iter().map(|a| a.transform()).collect(),
    }
}

/// The initiator's check of a responder's SA payload: exactly one proposal, one transform of
/// each kind, all from one of the proposals we sent, with that proposal's number. The chosen
/// algorithms, or None (the responder broke §2.7: the SA must not be used).
pub fn accept(ours: &[Proposal], reply: &[sa_payload::Proposal], with_dh: bool) -> Option<Chosen> {
    let [answer] = reply else { return None };
    let mine = ours.get(usize::from(answer.number).checked_sub(1)?)?;
    let mut kinds: Vec<u8> = answer.transforms.iter().map(|t| t.kind).collect();
    kinds.sort_unstable();
    if kinds.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    let chosen = match_one(mine, answer, with_dh)?;
    // Every transform of the answer must be one we chose, none extra.
    let expected = answer
        .transforms
        .iter()
        .filter(|t| with_dh || t.kind != transform_type::DH)
        .count();
    (chosen.algorithms.len() == expected
        || chosen.algorithms.len() == expected + 1
            && !answer
                .transforms
                .iter()
                .any(|t| t.kind == transform_type::ESN))
    .then_some(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use EncryptionAlgorithm as E;
    use IntegrityAlgorithm as I;

    #[test]
    fn strongswan_syntax_parses() {
        let ike = parse_ike("aes128-sha256-x25519, aes256-sha256-ecp256,aes128gcm16-prfsha256-x25519,aes128-sha256-modp2048")
            .expect("parsing");
        assert_eq!(ike.len(), 4);
        let suites: Vec<IkeSuite> = ike
            .iter()
            .map(|p| {
                Chosen {
                    algorithms: p.algorithms.clone(),
                }
                .ike()
                .expect("an ike suite")
            })
            .collect();
        assert_eq!(
            suites[0],
            IkeSuite {
                encryption: E::Aes128Cbc,
                integrity: I::HmacSha256,
                prf: Prf::HmacSha256,
                group: DhGroup::Curve25519,
            }
        );
        assert_eq!(suites[1].group, DhGroup::Ecp256);
        assert_eq!(
            (suites[2].encryption, suites[2].integrity),
            (E::Aes128Gcm, I::None)
        );
        assert_eq!(suites[3].group, DhGroup::Modp2048);
        // The PRF is filled in as strongSwan does.
        let gcm = parse_ike("aes256gcm16-x25519").expect("parsing");
        assert!(gcm[0].algorithms.contains(&Algorithm::Prf(Prf::HmacSha256)));

        let esp = parse_esp("aes128-sha256,aes128gcm16,aes256gcm16,3des-sha1,null-sha256")
            .expect("parsing");
        let esp: Vec<EspSuite> = esp
            .iter()
            .map(|p| {
                Chosen {
                    algorithms: p.algorithms.clone(),
                }
                .esp()
                .expect("an esp suite")
            })
            .collect();
        assert_eq!(
            esp[0],
            EspSuite {
                encryption: E::Aes128Cbc,
                integrity: I::HmacSha256,
                group: None,
            }
        );
        assert_eq!(
            (esp[2].encryption, esp[2].integrity),
            (E::Aes256Gcm, I::None)
        );
        assert_eq!(esp[4].encryption, E::Null);
    }

    #[test]
    fn bad_proposals_are_refused_with_the_reason() {
        let cases = [
            ("aes128-sha256", "no diffie-hellman group"),
            ("aes128-x25519", "no integrity algorithm"),
            ("aes128gcm16-sha256-x25519", "authenticates by itself"),
            ("aes128-blowfish-x25519", "unknown keyword 'blowfish'"),
            ("null-sha256-x25519", "unknown keyword 'null'"),
            ("sha256-x25519", "no encryption"),
            ("aes128-aes128gcm16-sha256-x25519", "aead and non-aead"),
            ("", "empty proposal list"),
        ];
        for (text, why) in cases {
            let err = parse_ike(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err}");
        }
        let err = parse_esp("aes128-sha256-prfsha256").expect_err("prf in esp");
        assert!(
            err.to_string().contains("unknown keyword 'prfsha256'"),
            "{err}"
        );
    }

    #[test]
    fn wire_transforms_round_trip() {
        for p in parse_ike(DEFAULT_IKE)
            .expect("defaults")
            .into_iter()
            .chain(parse_esp(DEFAULT_ESP).expect("defaults"))
        {
            for a in &p.algorithms {
                assert_eq!(Algorithm::from_transform(&a.transform()), Some(*a), "{a:?}");
            }
        }
        // An AES-CBC transform without a key length is not ours (§3.3.5 requires it).
        let bare = Transform {
            kind: transform_type::ENCR,
            id: 12,
            attributes: vec![],
        };
        assert_eq!(Algorithm::from_transform(&bare), None);
    }

    #[test]
    fn responder_prefers_its_own_order() {
        let ours = parse_ike("aes256-sha256-ecp256,aes128-sha256-x25519").expect("ours");
        let theirs = to_wire(
            &parse_ike("aes128-sha256-x25519-ecp256,aes256-sha256-ecp256").expect("theirs"),
            &[],
            true,
        );
        let (number, chosen) = select(&ours, &theirs, true).expect("a match");
        // Our first proposal matches their second: ours wins over their order.
        assert_eq!(number, 2);
        let suite = chosen.ike().expect("ike");
        assert_eq!(
            (suite.encryption, suite.group),
            (E::Aes256Cbc, DhGroup::Ecp256)
        );
        // Within a proposal, the first of our groups they offer.
        let ours = parse_ike("aes128-sha256-ecp256-x25519").expect("ours");
        let (number, chosen) = select(&ours, &theirs, true).expect("a match");
        assert_eq!(number, 1);
        assert_eq!(chosen.ike().expect("ike").group, DhGroup::Ecp256);

        let none = parse_ike("aes128-sha256-modp2048").expect("ours");
        assert_eq!(select(&none, &theirs, true), None);
        // The initiator accepts the reply and nothing else.
        let sent = parse_ike("aes128-sha256-x25519-ecp256,aes256-sha256-ecp256").expect("sent");
        let answer = reply(number, ProtocolId::IKE, &[], &chosen);
        assert!(accept(&sent, std::slice::from_ref(&answer), true).is_some());
        let mut two_groups = answer.clone();
        two_groups
            .transforms
            .push(Algorithm::Dh(DhGroup::Curve25519).transform());
        assert_eq!(accept(&sent, &[two_groups], true), None);
        let mut foreign = answer;
        foreign.transforms[0] = Algorithm::Encryption(E::Aes128Gcm).transform();
        assert_eq!(accept(&sent, &[foreign], true), None);
    }

    #[test]
    fn esp_ignores_dh_in_ike_auth_and_defaults_esn() {
        let ours = parse_esp("aes128gcm16").expect("ours");
        let mut theirs = to_wire(
            &parse_esp("aes128gcm16-x25519").expect("theirs"),
            &[1, 2, 3, 4],
            true,
        );
        let (_, chosen) = select(&ours, &theirs, false).expect("a match");
        assert_eq!(
            chosen.esp().expect("esp"),
            EspSuite {
                encryption: E::Aes128Gcm,
                integrity: I::None,
                group: None,
            }
        );
        // A peer that only offers extended sequence numbers is refused.
        theirs[0]
            .transforms
            .retain(|t| t.kind != transform_type::ESN);
        theirs[0].transforms.push(Algorithm::Esn(true).transform());
        assert_eq!(select(&ours, &theirs, false), None);
    }
}
