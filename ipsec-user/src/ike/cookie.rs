//! The responder's COOKIE secrets (RFC 7296 §2.6): rotated every
//! [`Settings::cookie_rotation`](super::config::Settings::cookie_rotation), the previous one still
//! accepted for one period so a cookie sent just before a rotation still works.
//!
//! Contract: time comes only from the `now` of the call (no clock); the secrets live in
//! `Zeroizing` buffers. A cookie is `<version> | HMAC-SHA-256(secret, Ni | IPi | SPIi)[..16]`
//! (`natd::versioned_cookie`); the version octet names the secret, so checking costs one HMAC
//! whatever the version, and a cookie of an unknown or retired version is simply invalid.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::natd::versioned_cookie;

fn fresh() -> Zeroizing<[u8; 32]> {
    let mut secret = Zeroizing::new([0; 32]);
    rand::fill(&mut secret[..]);
    secret
}

/// The current and previous secrets.
pub(crate) struct CookieSecrets {
    current: Zeroizing<[u8; 32]>,
    previous: Option<Zeroizing<[u8; 32]>>,
    version: u8,
    /// When the current secret took over (the first cookie's time until then).
    since: Option<Instant>,
    period: Duration,
}

impl CookieSecrets {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            current: fresh(),
            previous: None,
            version: 1,
            since: None,
            // A zero period would rotate on every call; one second is the floor.
            period: period.max(Duration::from_secs(1)),
        }
    }

    /// Rotates when the current secret's period is over (twice or more: both replaced).
    fn rotate(&mut self, now: Instant) {
        let since = *self.since.get_or_insert(now);
        let elapsed = now.saturating_duration_since(since);
        if elapsed < self.period {
            return;
        }
        self.previous = if elapsed < 2 * self.period {
            Some(std::mem::replace(&mut self.current, fresh()))
        } else {
            self.current = fresh();
            None
        };
        self.version = self.version.wrapping_add(1);
        self.since = Some(now);
    }

    /// The COOKIE to send an initiator at `ip` with `ni` and `spi_i`.
    pub(crate) fn make(&mut self, now: Instant, ni: &[u8], ip: IpAddr, spi_i: [u8; 8]) -> Vec<u8> {
        self.rotate(now);
        versioned_cookie(&self.current[..], self.version, ni, ip, spi_i)
    }

    /// True when `offered` is a cookie of the current or the previous secret for these values.
    pub(crate) fn check(
        &mut self,
        now: Instant,
        offered: &[u8],
        ni: &[u8],
        ip: IpAddr,
        spi_i: [u8; 8],
    ) -> bool {
        self.rotate(now);
        let Some(&version) = offered.first() else {
            return false;
        };
        let secret = if version == self.version {
            &self.current
        } else if version == self.version.wrapping_sub(1)
            && let Some(previous) = &self.previous
        {
            previous
        } else {
            return false;
        };
        versioned_cookie(&secret[..], version, ni, ip, spi_i)
            .ct_eq(offered)
            .into()
    }

    /// The version of the current secret (tests watch it change).
    #[cfg(test)]
    pub(crate) fn version(&self) -> u8 {
        self.version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_previous_secret_works_for_one_period_only() {
        let start = Instant::now();
        let minute = Duration::from_mins(1);
        let mut secrets = CookieSecrets::new(minute);
        let ip: IpAddr = "fd00::1".parse().expect("an address");
        let ni = [7; 32];
        let spi = [1; 8];
        let first = secrets.make(start, &ni, ip, spi);
        assert!(secrets.check(start + minute / 2, &first, &ni, ip, spi));
        // Rotated: a new cookie differs, the old one is still good for this period.
        let second = secrets.make(start + minute, &ni, ip, spi);
        assert_ne!(first, second);
        assert_eq!(secrets.version(), 2);
        assert!(secrets.check(start + minute, &first, &ni, ip, spi));
        assert!(secrets.check(start + minute, &second, &ni, ip, spi));
        // Two rotations later the first is refused, the second still (previous) accepted.
        assert!(secrets.check(start + 2 * minute, &second, &ni, ip, spi));
        assert!(!secrets.check(start + 2 * minute, &first, &ni, ip, spi));
        // A long silence retires both.
        let third = secrets.make(start + 2 * minute, &ni, ip, spi);
        assert!(!secrets.check(start + 10 * minute, &third, &ni, ip, spi));
        // The cookie binds its inputs, and a forged version gets nowhere.
        let fresh = secrets.make(start + 10 * minute, &ni, ip, spi);
        assert!(!secrets.check(start + 10 * minute, &fresh, &ni, ip, [2; 8]));
        let mut forged = fresh.clone();
        forged[0] = forged[0].wrapping_add(7);
        assert!(!secrets.check(start + 10 * minute, &forged, &ni, ip, spi));
        assert!(!secrets.check(start + 10 * minute, &[], &ni, ip, spi));
    }
}
