//! IKEv2 key derivation with PRF_HMAC_SHA2_256 (RFC 4868 §2.2): prf, prf+ (RFC 7296 §2.13),
//! SKEYSEED and the seven SK_* keys (§2.14), a rekeyed IKE SA's SKEYSEED (§2.18), CHILD_SA
//! KEYMAT (§2.17) and the PSK AUTH value (§2.15).
//!
//! Contract:
//! - Pure functions over byte strings; every key they return lives in a `Zeroizing` buffer (or
//!   a struct of them), wiped on drop, and no type here prints a key (`Debug` is redacted).
//! - prf+ refuses to produce more than 255 blocks (§2.13), never the case for the suites here.
//! - Known answers come from `tests/fixtures/ike_kat.py`, an independent implementation
//!   (Python's hmac and `cryptography`); its output is committed as `tests/fixtures/ike_kat.json`.

use hmac::{KeyInit, Mac};
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// PRF_HMAC_SHA2_256's output (and preferred key) length, octets.
pub const PRF_LEN: usize = 32;
/// §2.15's pad string.
const KEY_PAD: &[u8] = b"Key Pad for IKEv2";

/// prf(key, data[0] | data[1] | ...).
pub fn prf(key: &[u8], data: &[&[u8]]) -> Zeroizing<[u8; PRF_LEN]> {
    let mut mac = <HmacSha256 as KeyInit>::new_from_slice(key).expect("hmac takes any key length");
    for part in data {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0; PRF_LEN]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// prf+(key, seed) truncated to `len` octets (§2.13): T1 = prf(K, S | 0x01),
/// Tn = prf(K, Tn-1 | S | n).
///
/// # Panics
/// When `len` needs more than 255 blocks (8160 octets): a caller bug, no suite needs it.
pub fn prf_plus(key: &[u8], seed: &[&[u8]], len: usize) -> Zeroizing<Vec<u8>> {
    assert!(
        len <= 255 * PRF_LEN,
        "prf+ of {len} octets: over 255 blocks"
    );
    let mut out = Zeroizing::new(Vec::with_capacity(len + PRF_LEN));
    let mut previous = Zeroizing::new([0; PRF_LEN]);
    let mut n = 1u8;
    while out.len() < len {
        let counter = [n];
        let mut parts: Vec<&[u8]> = Vec::with_capacity(seed.len() + 2);
        if n > 1 {
            parts.push(&previous[..]);
        }
        parts.extend_from_slice(seed);
        parts.push(&counter);
        previous = prf(key, &parts);
        out.extend_from_slice(&previous[..]);
        n = n.wrapping_add(1);
    }
    out.truncate(len);
    out
}

/// §2.14: SKEYSEED = prf(Ni | Nr, g^ir).
pub fn skeyseed(ni: &[u8], nr: &[u8], shared: &[u8]) -> Zeroizing<[u8; PRF_LEN]> {
    let mut key = Zeroizing::new(Vec::with_capacity(ni.len() + nr.len()));
    key.extend_from_slice(ni);
    key.extend_from_slice(nr);
    prf(&key, &[shared])
}

/// §2.18: a rekeyed IKE SA's SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr).
pub fn rekey_skeyseed(
    old_sk_d: &[u8],
    shared: &[u8],
    ni: &[u8],
    nr: &[u8],
) -> Zeroizing<[u8; PRF_LEN]> {
    prf(old_sk_d, &[shared, ni, nr])
}

/// The next `n` octets of a prf+ stream, as a key of their own.
fn take_key(rest: &mut &[u8], n: usize) -> Zeroizing<Vec<u8>> {
    let (key, tail) = rest.split_at(n.min(rest.len()));
    *rest = tail;
    Zeroizing::new(key.to_vec())
}

/// The lengths of an IKE SA's encryption and integrity keys (octets; GCM's includes its salt,
/// integrity is 0 for an AEAD).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyLengths {
    pub encryption: usize,
    pub integrity: usize,
}

/// The seven keys of an IKE SA (§2.14).
pub struct IkeKeys {
    pub sk_d: Zeroizing<Vec<u8>>,
    pub sk_ai: Zeroizing<Vec<u8>>,
    pub sk_ar: Zeroizing<Vec<u8>>,
    pub sk_ei: Zeroizing<Vec<u8>>,
    pub sk_er: Zeroizing<Vec<u8>>,
    pub sk_pi: Zeroizing<Vec<u8>>,
    pub sk_pr: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for IkeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IkeKeys(<redacted>)")
    }
}

impl IkeKeys {
    /// {SK_d | SK_ai | SK_ar | SK_ei | SK_er | SK_pi | SK_pr} =
    /// prf+(SKEYSEED, Ni | Nr | SPIi | SPIr).
    pub fn derive(
        lengths: KeyLengths,
        skeyseed: &[u8],
        ni: &[u8],
        nr: &[u8],
        spi_i: &[u8; 8],
        spi_r: &[u8; 8],
    ) -> Self {
        let KeyLengths {
            encryption: e,
            integrity: a,
        } = lengths;
        let total = 3 * PRF_LEN + 2 * a + 2 * e;
        let stream = prf_plus(skeyseed, &[ni, nr, spi_i, spi_r], total);
        let mut rest = &stream[..];
        let mut next = |n: usize| take_key(&mut rest, n);
        Self {
            sk_d: next(PRF_LEN),
            sk_ai: next(a),
            sk_ar: next(a),
            sk_ei: next(e),
            sk_er: next(e),
            sk_pi: next(PRF_LEN),
            sk_pr: next(PRF_LEN),
        }
    }
}

/// The keys of one CHILD_SA (§2.17), by direction: `i2r` protects what the IKE SA's initiator
/// sends, `r2i` what the responder sends. Each is the encryption key (with GCM's salt) followed
/// by the integrity key.
pub struct ChildKeys {
    pub i2r_encryption: Zeroizing<Vec<u8>>,
    pub i2r_integrity: Zeroizing<Vec<u8>>,
    pub r2i_encryption: Zeroizing<Vec<u8>>,
    pub r2i_integrity: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for ChildKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChildKeys(<redacted>)")
    }
}

impl ChildKeys {
    /// KEYMAT = prf+(SK_d, [g^ir (new) |] Ni | Nr), taken as initiator-to-responder encryption
    /// and integrity keys, then responder-to-initiator ones.
    pub fn derive(
        lengths: KeyLengths,
        sk_d: &[u8],
        pfs_shared: Option<&[u8]>,
        ni: &[u8],
        nr: &[u8],
    ) -> Self {
        let KeyLengths {
            encryption: e,
            integrity: a,
        } = lengths;
        let mut seed: Vec<&[u8]> = Vec::with_capacity(3);
        if let Some(shared) = pfs_shared {
            seed.push(shared);
        }
        seed.extend_from_slice(&[ni, nr]);
        let stream = prf_plus(sk_d, &seed, 2 * (e + a));
        let mut rest = &stream[..];
        let mut next = |n: usize| take_key(&mut rest, n);
        Self {
            i2r_encryption: next(e),
            i2r_integrity: next(a),
            r2i_encryption: next(e),
            r2i_integrity: next(a),
        }
    }
}

/// §2.15: AUTH = prf(prf(Shared Secret, "Key Pad for IKEv2"), <SignedOctets>) with
/// SignedOctets = RealMessage | Nonce (the peer's) | prf(SK_p, RestOfIDPayload), where
/// `real_message` is the signer's IKE_SA_INIT message, `peer_nonce` the other side's nonce,
/// `sk_p` the signer's SK_pi or SK_pr and `id_body` its ID payload body.
pub fn psk_auth(
    psk: &[u8],
    real_message: &[u8],
    peer_nonce: &[u8],
    sk_p: &[u8],
    id_body: &[u8],
) -> Zeroizing<[u8; PRF_LEN]> {
    let maced_id = prf(sk_p, &[id_body]);
    let pad = prf(psk, &[KEY_PAD]);
    prf(&pad[..], &[real_message, peer_nonce, &maced_id[..]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ike::dh::{DhGroup, KeyShare};
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use std::process::Command;

    const KAT_JSON: &str = include_str!("../../../tests/fixtures/ike_kat.json");

    fn kat() -> BTreeMap<String, String> {
        serde_json::from_str(KAT_JSON).expect("parsing ike_kat.json")
    }

    fn want(kat: &BTreeMap<String, String>, name: &str) -> Vec<u8> {
        hex::decode(&kat[name]).unwrap_or_else(|e| panic!("{name} in ike_kat.json: {e}"))
    }

    /// Ni and Nr of `ike_kat.py`: 0x10..0x30 and 0x80..0xa0.
    fn nonces() -> ([u8; 32], [u8; 32]) {
        let mut ni = [0; 32];
        let mut nr = [0; 32];
        for (i, value) in (0u8..32).enumerate() {
            ni[i] = 0x10 + value;
            nr[i] = 0x80 + value;
        }
        (ni, nr)
    }
    const SPI_I: [u8; 8] = [1, 2, 3, 4, 5, 6, 7, 8];
    const SPI_R: [u8; 8] = [0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8];
    const PSK: &[u8] = b"a shared secret of sufficient length";

    fn shared(group: DhGroup, a: &str, b: &str) -> Zeroizing<Vec<u8>> {
        let a = KeyShare::from_private(group, &hex::decode(a).expect("hex")).expect("key a");
        let b = KeyShare::from_private(group, &hex::decode(b).expect("hex")).expect("key b");
        a.agree(b.public()).expect("agreeing")
    }

    /// RFC 4231 §4.2 (test case 1) and §4.3 (case 2) through `prf`.
    #[test]
    fn prf_is_hmac_sha256_rfc4231() {
        assert_eq!(
            hex::encode(prf(&[0x0b; 20], &[b"Hi There"])),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        assert_eq!(
            hex::encode(prf(b"Jefe", &[b"what do ya ", b"want for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn prf_plus_chains_blocks() {
        let long = prf_plus(b"key", &[b"seed"], 100);
        assert_eq!(long.len(), 100);
        let t1 = prf(b"key", &[b"seed", &[1]]);
        let t2 = prf(b"key", &[&t1[..], b"seed", &[2]]);
        assert_eq!(long[..32], t1[..]);
        assert_eq!(long[32..64], t2[..]);
        assert_eq!(prf_plus(b"key", &[b"seed"], 40)[..], long[..40]);
    }

    /// Everything `ike_kat.py` computes, computed here.
    #[test]
    fn derivation_matches_the_independent_implementation() {
        let kat = kat();
        let (ni, nr) = nonces();
        let g_ir = shared(
            DhGroup::Curve25519,
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        );
        assert_eq!(*g_ir, want(&kat, "g_ir"));
        let g_ir_ecp = shared(
            DhGroup::Ecp256,
            "C88F01F510D9AC3F70A292DAA2316DE544E9AAB8AFE84049C62A9C57862D1433",
            "C6EF9C5D78AE012A011164ACB397CE2088685D8F06BF9BE0B283AB46476BEE53",
        );
        assert_eq!(*g_ir_ecp, want(&kat, "g_ir_ecp256"));
        let seed = skeyseed(&ni, &nr, &g_ir);
        assert_eq!(seed[..], want(&kat, "skeyseed"));
        let cbc = KeyLengths {
            encryption: 16,
            integrity: 32,
        };
        let gcm = KeyLengths {
            encryption: 36,
            integrity: 0,
        };
        for (name, lengths) in [("cbc", cbc), ("gcm", gcm)] {
            let keys = IkeKeys::derive(lengths, &seed[..], &ni, &nr, &SPI_I, &SPI_R);
            let all = [
                ("d", &keys.sk_d),
                ("ai", &keys.sk_ai),
                ("ar", &keys.sk_ar),
                ("ei", &keys.sk_ei),
                ("er", &keys.sk_er),
                ("pi", &keys.sk_pi),
                ("pr", &keys.sk_pr),
            ];
            for (label, key) in all {
                assert_eq!(
                    **key,
                    want(&kat, &format!("{name}_sk_{label}")),
                    "{name} sk_{label}"
                );
            }
        }
        let keys = IkeKeys::derive(cbc, &seed[..], &ni, &nr, &SPI_I, &SPI_R);
        let child = ChildKeys::derive(cbc, &keys.sk_d, None, &ni, &nr);
        let joined: Vec<u8> = [
            &child.i2r_encryption,
            &child.i2r_integrity,
            &child.r2i_encryption,
            &child.r2i_integrity,
        ]
        .iter()
        .flat_map(|k| k.iter().copied())
        .collect();
        assert_eq!(joined, want(&kat, "child_cbc_keymat"));
        let child_gcm = |pfs: Option<&[u8]>| {
            let lengths = KeyLengths {
                encryption: 20,
                integrity: 0,
            };
            let c = ChildKeys::derive(lengths, &keys.sk_d, pfs, &ni, &nr);
            assert!(c.i2r_integrity.is_empty() && c.r2i_integrity.is_empty());
            [c.i2r_encryption.to_vec(), c.r2i_encryption.to_vec()].concat()
        };
        assert_eq!(child_gcm(None), want(&kat, "child_gcm_keymat"));
        assert_eq!(child_gcm(Some(&g_ir_ecp)), want(&kat, "child_pfs_keymat"));
        assert_eq!(
            rekey_skeyseed(&keys.sk_d, &g_ir_ecp, &ni, &nr)[..],
            want(&kat, "rekey_skeyseed")
        );

        let message1: Vec<u8> = (0..200u8)
            .chain(b"the initiator's first message".iter().copied())
            .collect();
        let id_i = [&[2u8, 0, 0, 0][..], b"initiator.example"].concat();
        let auth_i = psk_auth(PSK, &message1, &nr, &keys.sk_pi, &id_i);
        assert_eq!(auth_i[..], want(&kat, "auth_i"));
        let message2: Vec<u8> = (100..250u8)
            .chain(b"the responder's first message".iter().copied())
            .collect();
        let mut id_r = vec![5u8, 0, 0, 0, 0xfd];
        id_r.extend_from_slice(&[0; 14]);
        id_r.push(2);
        let auth_r = psk_auth(PSK, &message2, &ni, &keys.sk_pr, &id_r);
        assert_eq!(auth_r[..], want(&kat, "auth_r"));
    }

    /// The committed answers are what the script prints today: rerun it when python3 and
    /// `cryptography` are present; under CI their absence fails the test.
    #[test]
    fn committed_answers_are_the_scripts_output() {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/ike_kat.py");
        let available = Command::new("python3")
            .args(["-c", "import cryptography"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !available {
            assert!(
                !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
                "ike_kat.py needs python3 with cryptography (pip install cryptography)"
            );
            eprintln!("ike_kat.py: not run: python3 with cryptography is not installed");
            return;
        }
        let out = Command::new("python3")
            .arg(&script)
            .output()
            .expect("running ike_kat.py");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), KAT_JSON);
    }

    #[test]
    fn debug_is_redacted() {
        let (ni, nr) = nonces();
        let keys = IkeKeys::derive(
            KeyLengths {
                encryption: 16,
                integrity: 32,
            },
            &[7; 32],
            &ni,
            &nr,
            &SPI_I,
            &SPI_R,
        );
        assert_eq!(format!("{keys:?}"), "IkeKeys(<redacted>)");
    }
}
