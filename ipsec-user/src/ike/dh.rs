//! The Diffie-Hellman groups of the Key Exchange payload (RFC 7296 §3.4): 31 (Curve25519,
//! RFC 8031), 19 (256-bit random ECP, RFC 5903) and 14 (2048-bit MODP, RFC 3526).
//!
//! Contract:
//! - A [`KeyShare`] holds one ephemeral private value and its public value as it goes on the
//!   wire (32 octets for X25519, x || y for ECP-256 (RFC 5903 §7), the 256-octet big-endian
//!   value for MODP-2048); the private value is wiped on drop.
//! - [`KeyShare::agree`] validates the peer's value before use and returns the shared secret
//!   g^ir in the form RFC 7296 §2.14 feeds to the PRF (the X25519 output, the x coordinate for
//!   ECP (RFC 5903 §7), the padded MODP value). Refused: a wrong length; an X25519 result of
//!   all zeros (RFC 8031 §2.2); a point off the curve or at infinity; a MODP value outside
//!   1 < y < p-1 (RFC 7296 §5 and SP 800-56A's range check).
//! - num-bigint cannot wipe its own temporaries: the MODP exponent and the shared secret are
//!   held in `Zeroizing` buffers, the intermediate big numbers of one exponentiation are not.

use num_bigint::BigUint;
use zeroize::Zeroizing;

#[cfg(test)]
thread_local! {
    /// Key pairs generated and agreements computed on this thread: tests check that
    /// unauthenticated floods cost no DH.
    pub(crate) static DH_OPERATIONS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The groups this implementation negotiates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DhGroup {
    /// 14: 2048-bit MODP (RFC 3526 §3).
    Modp2048,
    /// 19: 256-bit random ECP (RFC 5903).
    Ecp256,
    /// 31: Curve25519 (RFC 8031).
    Curve25519,
}

/// RFC 3526 §3: the 2048-bit MODP prime; the generator is 2.
const MODP2048_P: &str = "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD129024E088A67CC74020BBEA63B139B22514A08798E3404DDEF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7EDEE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3DC2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F83655D23DCA3AD961C62F356208552BB9ED529077096966D670C354E4ABC9804F1746C08CA18217C32905E462E36CE3BE39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9DE2BCBF6955817183995497CEA956AE515D2261898FA051015728E5A8AACAA68FFFFFFFFFFFFFFFF";
/// The MODP-2048 value length, octets.
const MODP_LEN: usize = 256;
/// Length of the private MODP exponent: 256 bits, twice the group's ~112-bit strength
/// (RFC 3526 §8 asks for at least twice).
const MODP_EXPONENT_LEN: usize = 32;

impl DhGroup {
    /// Every group, strongest-first as a default order.
    pub const ALL: [Self; 3] = [Self::Curve25519, Self::Ecp256, Self::Modp2048];

    /// The IANA transform ID (§3.3.2, Transform Type 4).
    pub fn id(self) -> u16 {
        match self {
            Self::Modp2048 => 14,
            Self::Ecp256 => 19,
            Self::Curve25519 => 31,
        }
    }

    /// The group of an IANA transform ID.
    pub fn from_id(id: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.id() == id)
    }

    /// strongSwan's keyword.
    pub fn name(self) -> &'static str {
        match self {
            Self::Modp2048 => "modp2048",
            Self::Ecp256 => "ecp256",
            Self::Curve25519 => "x25519",
        }
    }

    /// Length of the public value on the wire.
    pub fn public_len(self) -> usize {
        match self {
            Self::Modp2048 => MODP_LEN,
            Self::Ecp256 => 64,
            Self::Curve25519 => 32,
        }
    }
}

/// Why a peer's public value was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DhError {
    #[error("{group} public value must be {expected} bytes, got {got}")]
    Length {
        group: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{group} public value is not a valid group element")]
    Invalid { group: &'static str },
    #[error("x25519 shared secret is all zeros (rfc 8031 §2.2)")]
    AllZero,
}

enum Private {
    X25519(x25519_dalek::StaticSecret),
    Ecp256(p256::SecretKey),
    /// The exponent, big-endian.
    Modp(Zeroizing<Vec<u8>>),
}

/// One side's ephemeral key pair for one exchange.
pub struct KeyShare {
    group: DhGroup,
    private: Private,
    public: Vec<u8>,
}

impl std::fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyShare")
            .field("group", &self.group)
            .field("private", &"<redacted>")
            .finish_non_exhaustive()
    }
}

fn modp_p() -> BigUint {
    BigUint::parse_bytes(MODP2048_P.as_bytes(), 16).expect("the RFC 3526 prime is hex")
}

/// `value` big-endian, left-padded with zeros to `len` octets.
fn padded(value: &BigUint, len: usize) -> Zeroizing<Vec<u8>> {
    let bytes = Zeroizing::new(value.to_bytes_be());
    let mut out = Zeroizing::new(vec![0; len.saturating_sub(bytes.len())]);
    out.extend_from_slice(&bytes);
    out
}

impl KeyShare {
    /// A fresh key pair from the thread's CSPRNG.
    pub fn generate(group: DhGroup) -> Self {
        #[cfg(test)]
        DH_OPERATIONS.with(|n| n.set(n.get() + 1));
        loop {
            let mut private = Zeroizing::new(vec![
                0u8;
                if group == DhGroup::Modp2048 {
                    MODP_EXPONENT_LEN
                } else {
                    32
                }
            ]);
            rand::fill(&mut private[..]);
            // Only ECP can refuse a value (zero or not below the order: about 2^-32 likely).
            if let Some(share) = Self::from_private(group, &private) {
                return share;
            }
        }
    }

    /// The key pair of a given private value (known-answer tests). None when the value is not
    /// a valid private key of the group.
    pub fn from_private(group: DhGroup, private: &[u8]) -> Option<Self> {
        let (private, public) = match group {
            DhGroup::Curve25519 => {
                let bytes: [u8; 32] = private.try_into().ok()?;
                let secret = x25519_dalek::StaticSecret::from(bytes);
                let public = x25519_dalek::PublicKey::from(&secret).to_bytes().to_vec();
                (Private::X25519(secret), public)
            }
            DhGroup::Ecp256 => {
                let secret = p256::SecretKey::from_slice(private).ok()?;
                let point = secret.public_key().to_sec1_bytes();
                // Uncompressed SEC1: 0x04 || x || y; RFC 5903 §7 sends x || y.
                let public = point.get(1..)?.to_vec();
                (Private::Ecp256(secret), public)
            }
            DhGroup::Modp2048 => {
                let x = BigUint::from_bytes_be(private);
                let public = BigUint::from(2u8).modpow(&x, &modp_p());
                (
                    Private::Modp(Zeroizing::new(private.to_vec())),
                    padded(&public, MODP_LEN).to_vec(),
                )
            }
        };
        Some(Self {
            group,
            private,
            public,
        })
    }

    pub fn group(&self) -> DhGroup {
        self.group
    }

    /// The public value, as the KE payload carries it.
    pub fn public(&self) -> &[u8] {
        &self.public
    }

    /// The shared secret g^ir with the peer's public value `peer`.
    ///
    /// # Errors
    /// [`DhError`] when `peer` is not a valid public value of the group (see the module
    /// contract).
    pub fn agree(&self, peer: &[u8]) -> Result<Zeroizing<Vec<u8>>, DhError> {
        #[cfg(test)]
        DH_OPERATIONS.with(|n| n.set(n.get() + 1));
        let group = self.group.name();
        if peer.len() != self.group.public_len() {
            return Err(DhError::Length {
                group,
                expected: self.group.public_len(),
                got: peer.len(),
            });
        }
        match &self.private {
            Private::X25519(secret) => {
                let mut bytes = [0; 32];
                bytes.copy_from_slice(peer);
                let shared = secret.diffie_hellman(&x25519_dalek::PublicKey::from(bytes));
                // RFC 8031 §2.2: MUST check for the all-zero value (a low-order peer point).
                if !shared.was_contributory() {
                    return Err(DhError::AllZero);
                }
                Ok(Zeroizing::new(shared.as_bytes().to_vec()))
            }
            Private::Ecp256(secret) => {
                let mut sec1 = Vec::with_capacity(65);
                sec1.push(4);
                sec1.extend_from_slice(peer);
                let public = p256::PublicKey::from_sec1_bytes(&sec1)
                    .map_err(|_| DhError::Invalid { group })?;
                let shared = secret.diffie_hellman(&public);
                Ok(Zeroizing::new(shared.raw_secret_bytes().to_vec()))
            }
            Private::Modp(x) => {
                let p = modp_p();
                let y = BigUint::from_bytes_be(peer);
                let one = BigUint::from(1u8);
                if y <= one || y >= &p - &one {
                    return Err(DhError::Invalid { group });
                }
                // num-bigint has no zeroize: the temporaries of this exponentiation are freed
                // unwiped (the exponent's bytes and the result we return are wiped).
                Ok(padded(&y.modpow(&BigUint::from_bytes_be(x), &p), MODP_LEN))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).expect("hex")
    }

    /// RFC 7748 §6.1: Alice and Bob.
    #[test]
    fn rfc7748_x25519_vectors() {
        let a = KeyShare::from_private(
            DhGroup::Curve25519,
            &unhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a"),
        )
        .expect("alice's key");
        let b = KeyShare::from_private(
            DhGroup::Curve25519,
            &unhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb"),
        )
        .expect("bob's key");
        assert_eq!(
            a.public(),
            unhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
        );
        assert_eq!(
            b.public(),
            unhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
        );
        let shared = unhex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742");
        assert_eq!(*a.agree(b.public()).expect("alice agrees"), shared);
        assert_eq!(*b.agree(a.public()).expect("bob agrees"), shared);
    }

    /// RFC 8031 §2.2: a low-order point (here 0 and 1) gives the all-zero secret: refused.
    #[test]
    fn rfc8031_all_zero_is_refused() {
        let share = KeyShare::generate(DhGroup::Curve25519);
        let mut one = [0; 32];
        one[0] = 1;
        assert_eq!(share.agree(&[0; 32]), Err(DhError::AllZero));
        assert_eq!(share.agree(&one), Err(DhError::AllZero));
        assert!(matches!(share.agree(&[0; 31]), Err(DhError::Length { .. })));
    }

    /// RFC 5903 §8.1: the 256-bit random ECP group.
    #[test]
    fn rfc5903_ecp256_vectors() {
        let i = KeyShare::from_private(
            DhGroup::Ecp256,
            &unhex("C88F01F5 10D9AC3F 70A292DA A2316DE5 44E9AAB8 AFE84049 C62A9C57 862D1433"),
        )
        .expect("i");
        let r = KeyShare::from_private(
            DhGroup::Ecp256,
            &unhex("C6EF9C5D 78AE012A 011164AC B397CE20 88685D8F 06BF9BE0 B283AB46 476BEE53"),
        )
        .expect("r");
        assert_eq!(
            i.public(),
            unhex(
                "DAD0B653 94221CF9 B051E1FE CA5787D0 98DFE637 FC90B9EF 945D0C37 72581180 \
                 5271A046 1CDB8252 D61F1C45 6FA3E59A B1F45B33 ACCF5F58 389E0577 B8990BB3"
            )
        );
        assert_eq!(
            r.public(),
            unhex(
                "D12DFB52 89C8D4F8 1208B702 70398C34 2296970A 0BCCB74C 736FC755 4494BF63 \
                 56FBF3CA 366CC23E 8157854C 13C58D6A AC23F046 ADA30F83 53E74F33 039872AB"
            )
        );
        // §8.1: g^ir's x coordinate is the shared secret (RFC 5903 §7).
        let shared =
            unhex("D6840F6B 42F6EDAF D13116E0 E1256520 2FEF8E9E CE7DCE03 812464D0 4B9442DE");
        assert_eq!(*i.agree(r.public()).expect("i agrees"), shared);
        assert_eq!(*r.agree(i.public()).expect("r agrees"), shared);
        // A point off the curve: y changed.
        let mut bad = r.public().to_vec();
        bad[63] ^= 1;
        assert_eq!(i.agree(&bad), Err(DhError::Invalid { group: "ecp256" }));
    }

    #[test]
    fn modp2048_agrees_and_checks_the_range() {
        let a = KeyShare::generate(DhGroup::Modp2048);
        let b = KeyShare::generate(DhGroup::Modp2048);
        assert_eq!(a.public().len(), 256);
        let shared = a.agree(b.public()).expect("a agrees");
        assert_eq!(shared.len(), 256);
        assert_eq!(shared, b.agree(a.public()).expect("b agrees"));
        // 2^x for the exponent 1 is 2: the public value of a known private value.
        let two = KeyShare::from_private(DhGroup::Modp2048, &[1]).expect("exponent 1");
        assert_eq!(two.public()[255], 2);
        assert!(two.public()[..255].iter().all(|&b| b == 0));
        let p = unhex(MODP2048_P);
        let mut p_minus_1 = p.clone();
        p_minus_1[255] -= 1;
        let mut one = vec![0; 256];
        one[255] = 1;
        for bad in [vec![0; 256], one, p_minus_1, p] {
            assert_eq!(a.agree(&bad), Err(DhError::Invalid { group: "modp2048" }));
        }
    }

    #[test]
    fn debug_never_shows_the_private_value() {
        let share = KeyShare::from_private(DhGroup::Curve25519, &[0x42; 32]).expect("a key");
        let text = format!("{share:?}");
        assert!(
            text.contains("redacted") && !text.contains("42, 42"),
            "{text}"
        );
    }
}
