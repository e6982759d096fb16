//! `Sa`: a validated security association, and the rules for building one from `sa add`.
//!
//! `Sa::parse` checks everything about one SA on its own (syntax, mode against `any`, keys against
//! algorithms); `Sa::check` re-checks the same invariants on a record loaded from the state file.
//! Rules that involve other SAs (unique name, unique SPI, limits) live in `spd`.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use super::args::{SaAddArgs, opt};
use super::error::ModelError;
use super::key::Key;
use super::parse::{self, allowed};
use super::types::{EncryptionAlgorithm, IntegrityAlgorithm, Mode};

/// A security association: how traffic is protected.
///
/// `Debug` is derived: the keys are [`Key`]s, whose `Debug` prints only their length (tested in
/// `tests/keys_hygiene.rs`), and which wipe themselves on drop.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sa {
    /// Slot in the kernel SA map, 0..MAX_SA, the lowest free one at creation.
    pub id: u32,
    pub name: String,
    /// `None` = any (transport mode only).
    pub source: Option<Ipv6Addr>,
    /// `None` = any (transport mode only).
    pub destination: Option<Ipv6Addr>,
    pub mode: Mode,
    pub spi: u32,
    pub encryption: EncryptionAlgorithm,
    /// Empty for NULL encryption.
    pub encryption_key: Key,
    pub integrity: IntegrityAlgorithm,
    pub integrity_key: Key,
    /// ESP inside UDP (RFC 3948) between these ports, or plain ESP when `None`. Not an ESXi
    /// option: negotiated by IKE behind a NAT (and always with strongSwan's kernel-libipsec).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_encap: Option<UdpEncap>,
}

/// The UDP ports of UDP-encapsulated ESP (RFC 3948), as seen by this SA's sender: `source_port`
/// is the SA source's port, `destination_port` the SA destination's (4500 unless a NAT moved it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UdpEncap {
    pub source_port: u16,
    pub destination_port: u16,
}

/// What `--udp-encapsulation` accepts.
const UDP_ENCAP_ALLOWED: &str =
    "use PORT (both ends, e.g. 4500) or SRC:DST (e.g. 4500:4500), ports 1 to 65535";

impl UdpEncap {
    /// `--udp-encapsulation PORTS`: `PORT` (both ends) or `SRC:DST`, each 1 to 65535.
    pub(crate) fn parse(text: &str) -> Result<Self, ModelError> {
        let invalid = || ModelError::Invalid {
            option: opt::UDP_ENCAPSULATION,
            value: super::error::shown(text),
            allowed: UDP_ENCAP_ALLOWED,
        };
        // Digits only: `u16::from_str` would also take a leading `+`.
        let port = |p: &str| {
            p.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| p.parse::<u16>().ok())
                .flatten()
                .filter(|&p| p != 0)
                .ok_or_else(invalid)
        };
        let (source, destination) = text.split_once(':').unwrap_or((text, text));
        Ok(Self {
            source_port: port(source)?,
            destination_port: port(destination)?,
        })
    }
}

// The key fields wipe themselves when dropped; nothing else in an SA is secret.
impl zeroize::ZeroizeOnDrop for Sa {}

impl Sa {
    /// Builds an SA from `sa add` arguments, with `id` 0 (the SPD assigns it). Options are checked
    /// in the order of the spec's table, then against each other.
    pub(crate) fn parse(args: &SaAddArgs) -> Result<Self, ModelError> {
        let (source, destination) = parse::sa_endpoints(
            args.sa_source.as_ref(),
            args.sa_destination.as_ref(),
            allowed::SA_ADDRESS,
        )?;
        let mode = parse::keyword(
            opt::SA_MODE,
            parse::required(args.sa_mode.as_ref(), opt::SA_MODE, allowed::MODE)?,
            Mode::ALL,
            allowed::MODE,
        )?;
        let spi = parse::spi(parse::required(
            args.sa_spi.as_ref(),
            opt::SA_SPI,
            allowed::SPI,
        )?)?;
        let encryption = parse::keyword(
            opt::ENCRYPTION_ALGORITHM,
            parse::required(
                args.encryption_algorithm.as_ref(),
                opt::ENCRYPTION_ALGORITHM,
                allowed::ENCRYPTION,
            )?,
            EncryptionAlgorithm::ALL,
            allowed::ENCRYPTION,
        )?;
        let encryption_key = match (encryption, &args.encryption_key) {
            (EncryptionAlgorithm::Null, None) => Key::default(),
            (EncryptionAlgorithm::Null, Some(_)) => return Err(ModelError::KeyWithNull),
            (algorithm, None) => {
                return Err(ModelError::KeyMissing {
                    option: opt::ENCRYPTION_KEY,
                    algorithm: algorithm.as_str(),
                    len: algorithm.key_len(),
                });
            }
            (_, Some(text)) => parse::key(opt::ENCRYPTION_KEY, text)?,
        };
        let (integrity, integrity_key) = parse_integrity(encryption, args)?;
        let name = parse::name(
            opt::SA_NAME,
            parse::required(args.sa_name.as_ref(), opt::SA_NAME, allowed::NAME)?,
        )?;
        let sa = Self {
            id: 0,
            name,
            source,
            destination,
            mode,
            spi,
            encryption,
            encryption_key,
            integrity,
            integrity_key,
            udp_encap: args
                .udp_encapsulation
                .as_deref()
                .map(UdpEncap::parse)
                .transpose()?,
        };
        sa.check()?;
        Ok(sa)
    }

    /// The AES key of an AES-GCM SA (its key without the 4-byte salt): two SAs must never share
    /// one (RFC 4106 §8, see `Spd::add_sa`). `None` for other algorithms.
    pub(crate) fn gcm_aes_key(&self) -> Option<&[u8]> {
        let key = self.encryption_key.as_bytes();
        self.encryption
            .needs_unique_iv()
            .then(|| &key[..key.len().saturating_sub(4)])
    }

    /// Every invariant of one SA that does not involve other records.
    pub(crate) fn check(&self) -> Result<(), ModelError> {
        if !parse::is_valid_name(&self.name) {
            return Err(ModelError::Invalid {
                option: opt::SA_NAME,
                value: super::error::shown(&self.name),
                allowed: allowed::NAME,
            });
        }
        if self.mode == Mode::Tunnel {
            if self.source.is_none() {
                return Err(ModelError::AnyInTunnel {
                    option: opt::SA_SOURCE,
                });
            }
            if self.destination.is_none() {
                return Err(ModelError::AnyInTunnel {
                    option: opt::SA_DESTINATION,
                });
            }
        }
        if self.spi < 0x100 {
            return Err(ModelError::ReservedSpi { spi: self.spi });
        }
        if let Some(encap) = self.udp_encap {
            check_udp_encap(encap, self.source, self.destination)?;
        }
        check_encryption_key(self.encryption, &self.encryption_key)?;
        // A loaded record pairs `none` with a combined-mode cipher and nothing else.
        if self.encryption.is_combined() != (self.integrity == IntegrityAlgorithm::None) {
            return Err(if self.encryption.is_combined() {
                ModelError::IntegrityWithCombined {
                    option: opt::INTEGRITY_ALGORITHM,
                    encryption: self.encryption.as_str(),
                }
            } else {
                ModelError::Invalid {
                    option: opt::INTEGRITY_ALGORITHM,
                    value: self.integrity.as_str().to_owned(),
                    allowed: allowed::INTEGRITY,
                }
            });
        }
        check_key_len(
            opt::INTEGRITY_KEY,
            self.integrity.as_str(),
            self.integrity.key_len(),
            &self.integrity_key,
        )
    }
}

/// UDP encapsulation needs both addresses (the datagrams go to one peer) and non-zero ports.
fn check_udp_encap(
    encap: UdpEncap,
    source: Option<Ipv6Addr>,
    destination: Option<Ipv6Addr>,
) -> Result<(), ModelError> {
    if source.is_none() {
        return Err(ModelError::UdpEncapWithAny {
            option: opt::SA_SOURCE,
        });
    }
    if destination.is_none() {
        return Err(ModelError::UdpEncapWithAny {
            option: opt::SA_DESTINATION,
        });
    }
    if encap.source_port == 0 || encap.destination_port == 0 {
        return Err(ModelError::Invalid {
            option: opt::UDP_ENCAPSULATION,
            value: format!("{}:{}", encap.source_port, encap.destination_port),
            allowed: UDP_ENCAP_ALLOWED,
        });
    }
    Ok(())
}

/// `--integrity-algorithm` and `--integrity-key`: required with a cipher that needs them, refused
/// with a combined-mode one (AES-GCM authenticates by itself; RFC 4106 defines no separate
/// integrity algorithm), which gets `none` and an empty key.
fn parse_integrity(
    encryption: EncryptionAlgorithm,
    args: &SaAddArgs,
) -> Result<(IntegrityAlgorithm, Key), ModelError> {
    if encryption.is_combined() {
        let refused = |option| ModelError::IntegrityWithCombined {
            option,
            encryption: encryption.as_str(),
        };
        if args.integrity_algorithm.is_some() {
            return Err(refused(opt::INTEGRITY_ALGORITHM));
        }
        if args.integrity_key.is_some() {
            return Err(refused(opt::INTEGRITY_KEY));
        }
        return Ok((IntegrityAlgorithm::None, Key::default()));
    }
    let integrity = parse::keyword(
        opt::INTEGRITY_ALGORITHM,
        parse::required(
            args.integrity_algorithm.as_ref(),
            opt::INTEGRITY_ALGORITHM,
            allowed::INTEGRITY,
        )?,
        IntegrityAlgorithm::SELECTABLE,
        allowed::INTEGRITY,
    )?;
    let integrity_key = match &args.integrity_key {
        None => {
            return Err(ModelError::KeyMissing {
                option: opt::INTEGRITY_KEY,
                algorithm: integrity.as_str(),
                len: integrity.key_len(),
            });
        }
        Some(text) => parse::key(opt::INTEGRITY_KEY, text)?,
    };
    Ok((integrity, integrity_key))
}

/// Exact length, and for 3DES three distinct thirds (RFC 2451 §2.3 wants K1 != K2 and K2 != K3,
/// otherwise EDE collapses to single DES).
fn check_encryption_key(algorithm: EncryptionAlgorithm, key: &Key) -> Result<(), ModelError> {
    if algorithm == EncryptionAlgorithm::Null {
        return if key.is_empty() {
            Ok(())
        } else {
            Err(ModelError::KeyWithNull)
        };
    }
    check_key_len(
        opt::ENCRYPTION_KEY,
        algorithm.as_str(),
        algorithm.key_len(),
        key,
    )?;
    if algorithm == EncryptionAlgorithm::TripleDesCbc {
        let (k1, rest) = key.as_bytes().split_at(8);
        let (k2, k3) = rest.split_at(8);
        if k1 == k2 || k2 == k3 {
            return Err(ModelError::WeakTripleDesKey);
        }
    }
    Ok(())
}

fn check_key_len(
    option: &'static str,
    algorithm: &'static str,
    len: usize,
    key: &Key,
) -> Result<(), ModelError> {
    if key.len() == len {
        Ok(())
    } else {
        Err(ModelError::KeyLength {
            option,
            algorithm,
            len,
            actual: key.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{example_sa_args, sa_args};

    fn rejected(args: &SaAddArgs) -> String {
        Sa::parse(args)
            .expect_err("expecting sa add to fail")
            .to_string()
    }

    #[test]
    fn spec_example_is_accepted() {
        let sa = Sa::parse(&example_sa_args()).expect("parsing the spec's sa add example");
        assert_eq!(sa.name, "sa1");
        assert_eq!(sa.source, Some("3ffe:501:ffff::a".parse().expect("addr")));
        assert_eq!(
            sa.destination,
            Some("3ffe:501:ffff:1::1".parse().expect("addr"))
        );
        assert_eq!(sa.mode, Mode::Transport);
        assert_eq!(sa.spi, 0x1000);
        assert_eq!(sa.encryption, EncryptionAlgorithm::TripleDesCbc);
        assert_eq!(sa.encryption_key.as_bytes(), b"ipv6readylogo3descbcout2");
        assert_eq!(sa.integrity, IntegrityAlgorithm::HmacSha1);
        assert_eq!(sa.integrity_key.as_bytes(), b"ipv6readylogsha1out2");
    }

    #[test]
    fn key_lengths_are_exact() {
        let ok = [
            (
                "aes128-cbc",
                "0123456789abcdef",
                "hmac-sha2-256",
                "0123456789abcdef0123456789abcdef",
            ),
            (
                "3des-cbc",
                "aaaaaaaabbbbbbbbaaaaaaaa",
                "hmac-sha1",
                "01234567890123456789",
            ),
        ];
        for (enc, ekey, integ, ikey) in ok {
            let sa = Sa::parse(&sa_args(enc, Some(ekey), integ, ikey)).expect("valid key lengths");
            assert_eq!(sa.encryption_key.len(), sa.encryption.key_len());
        }
        let sa = Sa::parse(&sa_args("null", None, "hmac-sha1", "01234567890123456789"))
            .expect("null encryption has no key");
        assert!(sa.encryption_key.is_empty());

        assert_eq!(
            rejected(&sa_args(
                "aes128-cbc",
                Some("0123456789abcde"),
                "hmac-sha1",
                "01234567890123456789"
            )),
            "--encryption-key: aes128-cbc needs a 16-byte key, got 15 bytes; give 0x followed by 32 hex digits, or 16 ascii characters"
        );
        assert_eq!(
            rejected(&sa_args(
                "aes128-cbc",
                Some("0123456789abcdef"),
                "hmac-sha2-256",
                "0x00"
            )),
            "--integrity-key: hmac-sha2-256 needs a 32-byte key, got 1 bytes; give 0x followed by 64 hex digits, or 32 ascii characters"
        );
        assert_eq!(
            rejected(&sa_args(
                "3des-cbc",
                Some("aaaaaaaaaaaaaaaabbbbbbbb"),
                "hmac-sha1",
                "01234567890123456789"
            )),
            "--encryption-key: 3des-cbc needs three different 8-byte keys (k1 != k2 and k2 != k3)"
        );
        assert_eq!(
            rejected(&sa_args(
                "3des-cbc",
                Some("aaaaaaaabbbbbbbbbbbbbbbb"),
                "hmac-sha1",
                "01234567890123456789"
            )),
            "--encryption-key: 3des-cbc needs three different 8-byte keys (k1 != k2 and k2 != k3)"
        );
    }

    #[test]
    fn any_only_in_transport_mode() {
        let mut args = example_sa_args();
        args.sa_source = Some("any".into());
        args.sa_destination = Some("any".into());
        let sa = Sa::parse(&args).expect("any in transport mode");
        assert_eq!((sa.source, sa.destination), (None, None));
        args.sa_mode = Some("tunnel".into());
        assert_eq!(
            rejected(&args),
            "--sa-source: any is allowed in transport mode only; give an ipv6 address for tunnel mode"
        );
        args.sa_source = Some("2001:db8::1".into());
        assert_eq!(
            rejected(&args),
            "--sa-destination: any is allowed in transport mode only; give an ipv6 address for tunnel mode"
        );
    }

    #[test]
    fn records_are_rechecked() {
        let mut sa = Sa::parse(&example_sa_args()).expect("parsing the example");
        sa.encryption_key = Key::new(vec![1; 23]);
        assert!(sa.check().is_err(), "short 3des key in a record");
        sa.encryption = EncryptionAlgorithm::Null;
        assert_eq!(sa.check(), Err(ModelError::KeyWithNull));
        sa.encryption_key = Key::default();
        sa.check().expect("null with an empty key");
        sa.spi = 0xff;
        assert_eq!(sa.check(), Err(ModelError::ReservedSpi { spi: 0xff }));
    }
}
