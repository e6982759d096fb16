//! NAT detection (RFC 7296 §2.23) and the stateless COOKIE (§2.6).
//!
//! Contract: pure functions. The NAT_DETECTION_*_IP data is SHA-1(SPIi | SPIr | IP | Port)
//! (SPIr zero in the IKE_SA_INIT request); a COOKIE is a version octet and the first 16 octets
//! of HMAC-SHA-256(secret, Ni | IPi | SPIi), checked in constant time. Which secret and version
//! are current is `cookie`'s business (rotation).

use std::net::{IpAddr, SocketAddr};

use sha1::{Digest, Sha1};
use subtle::ConstantTimeEq;

use super::keys::prf;

/// SHA-1(SPIi | SPIr | IP | Port) of one address.
pub fn nat_hash(spi_i: &[u8; 8], spi_r: &[u8; 8], addr: SocketAddr) -> [u8; 20] {
    let mut hash = Sha1::new();
    hash.update(spi_i);
    hash.update(spi_r);
    match addr.ip() {
        IpAddr::V4(a) => hash.update(a.octets()),
        IpAddr::V6(a) => hash.update(a.octets()),
    }
    hash.update(addr.port().to_be_bytes());
    hash.finalize().into()
}

/// The version octet of the cookies made with the current secret.
const COOKIE_VERSION: u8 = 1;
const COOKIE_LEN: usize = 17;

/// The COOKIE for an initiator at `ip` with `ni` and `spi_i`.
pub fn cookie(secret: &[u8], ni: &[u8], ip: IpAddr, spi_i: &[u8; 8]) -> Vec<u8> {
    versioned_cookie(secret, COOKIE_VERSION, ni, ip, *spi_i)
}

/// The COOKIE made with the secret numbered `version` (§2.6's `<VersionIDofSecret>`).
pub(crate) fn versioned_cookie(
    secret: &[u8],
    version: u8,
    ni: &[u8],
    ip: IpAddr,
    spi_i: [u8; 8],
) -> Vec<u8> {
    let ip = match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    };
    let mac = prf(secret, &[ni, &ip, &spi_i]);
    let mut out = Vec::with_capacity(COOKIE_LEN);
    out.push(version);
    out.extend_from_slice(&mac[..COOKIE_LEN - 1]);
    out
}

/// True when `offered` is the cookie [`cookie`] makes for these values.
pub fn cookie_ok(secret: &[u8], offered: &[u8], ni: &[u8], ip: IpAddr, spi_i: &[u8; 8]) -> bool {
    cookie(secret, ni, ip, spi_i).ct_eq(offered).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_bind_nonce_address_and_spi() {
        let ip: IpAddr = "fd00::1".parse().expect("an address");
        let c = cookie(b"secret", b"nonce", ip, &[1; 8]);
        assert_eq!(c.len(), COOKIE_LEN);
        assert!(cookie_ok(b"secret", &c, b"nonce", ip, &[1; 8]));
        assert!(!cookie_ok(b"secret", &c, b"nonce!", ip, &[1; 8]));
        assert!(!cookie_ok(
            b"secret",
            &c,
            b"nonce",
            "fd00::2".parse().expect("ip"),
            &[1; 8]
        ));
        assert!(!cookie_ok(b"secret", &c, b"nonce", ip, &[2; 8]));
        assert!(!cookie_ok(b"other", &c, b"nonce", ip, &[1; 8]));
        assert!(!cookie_ok(b"secret", &c[..16], b"nonce", ip, &[1; 8]));
    }

    #[test]
    fn nat_hash_covers_address_and_port() {
        let a: SocketAddr = "[fd00::1]:500".parse().expect("a socket address");
        let b: SocketAddr = "[fd00::1]:4500".parse().expect("a socket address");
        assert_ne!(nat_hash(&[1; 8], &[0; 8], a), nat_hash(&[1; 8], &[0; 8], b));
        assert_ne!(nat_hash(&[1; 8], &[0; 8], a), nat_hash(&[1; 8], &[2; 8], a));
    }
}
