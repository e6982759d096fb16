//! What the daemon configures: peers (addresses, identities, PSK, proposals, the CHILD_SA's
//! mode and traffic selectors) and the endpoint's settings (half-open bound, retransmission).
//!
//! Contract: a [`PeerConfig`] is validated once, by [`PeerConfig::validate`], when it is added;
//! the PSK is held in a `Zeroizing` buffer and never printed (`Debug` is redacted).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use zeroize::Zeroizing;

use crate::model::Mode;

use super::payload::{Identification, ProtocolId, id_type};
use super::proposal::Proposal;
use super::selector::TrafficSelector;

/// The shortest PSK accepted (the rule: shorter keys are guessable offline from one
/// captured IKE_AUTH exchange).
pub const MIN_PSK_LEN: usize = 16;

/// An identity (§3.5) of the types this implementation configures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// ID_IPV6_ADDR.
    Ipv6(Ipv6Addr),
    /// ID_IPV4_ADDR.
    Ipv4(Ipv4Addr),
    /// ID_FQDN (strongSwan `id = host.example` or `@host`).
    Fqdn(String),
}

impl Identity {
    /// The identity of an address (strongSwan's default: a peer is identified by its address).
    pub fn address(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V6(a) => Self::Ipv6(a),
            IpAddr::V4(a) => Self::Ipv4(a),
        }
    }

    /// The ID payload body of this identity.
    pub fn to_payload(&self) -> Identification {
        match self {
            Self::Ipv6(a) => Identification {
                id_type: id_type::IPV6_ADDR,
                data: a.octets().to_vec(),
            },
            Self::Ipv4(a) => Identification {
                id_type: id_type::IPV4_ADDR,
                data: a.octets().to_vec(),
            },
            Self::Fqdn(name) => Identification {
                id_type: id_type::FQDN,
                data: name.as_bytes().to_vec(),
            },
        }
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ipv6(a) => a.fmt(f),
            Self::Ipv4(a) => a.fmt(f),
            Self::Fqdn(name) => f.write_str(name),
        }
    }
}

/// A pre-shared key, wiped on drop, never printed.
#[derive(Clone)]
pub struct Psk(Zeroizing<Vec<u8>>);

impl Psk {
    /// # Errors
    /// [`ConfigError::PskTooShort`] below [`MIN_PSK_LEN`] bytes.
    pub fn new(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.len() < MIN_PSK_LEN {
            return Err(ConfigError::PskTooShort { len: bytes.len() });
        }
        Ok(Self(Zeroizing::new(bytes.to_vec())))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Psk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Psk(<redacted>)")
    }
}

/// One configured peer.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    /// Unique among the peers; names the SAs in events.
    pub name: String,
    /// Our address and the peer's (IKE runs between them on ports 500 and 4500).
    pub local: IpAddr,
    pub remote: IpAddr,
    pub local_id: Identity,
    /// The identity the peer must prove; `None` accepts any (the PSK still has to match).
    pub remote_id: Option<Identity>,
    pub psk: Psk,
    /// IKE proposals (`proposal::parse_ike`), best first.
    pub ike_proposals: Vec<Proposal>,
    /// ESP proposals (`proposal::parse_esp`), best first.
    pub esp_proposals: Vec<Proposal>,
    /// The CHILD_SA's mode: transport asks for (or accepts) `USE_TRANSPORT_MODE`.
    pub mode: Mode,
    /// Our side's and the peer's traffic: TSi/TSr as initiator, what TSr/TSi are narrowed to as
    /// responder.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// When this peer's SAs are rekeyed and the peer checked for life.
    pub lifetimes: Lifetimes,
}

/// SA lifetimes and liveness checks of one peer (`ike peer add --lifetime`, `--ike-lifetime`,
/// `--rekey-margin`, `--dpd`). The defaults are strongSwan's: IKE SA rekeyed after 4 h, CHILD_SA
/// after 1 h, each `rekey_margin` before its lifetime ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long an IKE SA lives; rekeyed `rekey_margin` (less some jitter) before the end.
    pub ike_lifetime: Duration,
    /// How long a CHILD_SA lives; rekeyed `rekey_margin` (less some jitter) before the end.
    pub child_lifetime: Duration,
    /// How long before the end of a lifetime the rekey starts (taken as at most half the
    /// lifetime; zero rekeys nothing: the SAs just expire).
    pub rekey_margin: Duration,
    /// Send a liveness check after this long without hearing from the peer; `None` = never.
    pub dpd: Option<Duration>,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            ike_lifetime: Duration::from_hours(4),
            child_lifetime: Duration::from_hours(1),
            rekey_margin: Duration::from_mins(9),
            dpd: Some(Duration::from_secs(30)),
        }
    }
}

/// Why a peer configuration was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    #[error("psk: {len} bytes is too short; at least {MIN_PSK_LEN} bytes")]
    PskTooShort { len: usize },
    #[error("peer name '{0}' is already configured")]
    Duplicate(String),
    #[error("{0}")]
    Invalid(&'static str),
}

impl PeerConfig {
    /// Checks what the types cannot: families, proposals of the right protocol, selectors.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the problem.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() {
            return Err(ConfigError::Invalid("peer name is empty"));
        }
        if self.local.is_ipv4() != self.remote.is_ipv4() {
            return Err(ConfigError::Invalid(
                "local and remote addresses are of different families",
            ));
        }
        if self.ike_proposals.is_empty()
            || self
                .ike_proposals
                .iter()
                .any(|p| p.protocol != ProtocolId::IKE)
        {
            return Err(ConfigError::Invalid("ike proposals: none, or not ike ones"));
        }
        if self.esp_proposals.is_empty()
            || self
                .esp_proposals
                .iter()
                .any(|p| p.protocol != ProtocolId::ESP)
        {
            return Err(ConfigError::Invalid("esp proposals: none, or not esp ones"));
        }
        if self.local_ts.is_empty() || self.remote_ts.is_empty() {
            return Err(ConfigError::Invalid("traffic selectors: none"));
        }
        Ok(())
    }
}

/// The endpoint's settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Responder IKE SAs waiting for IKE_AUTH beyond which IKE_SA_INIT needs a COOKIE (§2.6).
    pub half_open_limit: usize,
    /// How long a half-open responder SA is kept.
    pub half_open_timeout: Duration,
    /// First retransmission timeout; doubled each time (§2.1's exponential backoff).
    pub retransmit_base: Duration,
    /// Retransmissions before the exchange (and its IKE SA) is given up.
    pub retransmit_tries: u32,
    /// The IKE port (500) and the NAT-T port (4500, RFC 3948 / §2.23).
    pub ike_port: u16,
    pub natt_port: u16,
    /// How often the COOKIE secret changes (§2.6); cookies of the previous secret are still
    /// accepted for one period.
    pub cookie_rotation: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            half_open_limit: 32,
            half_open_timeout: Duration::from_secs(30),
            retransmit_base: Duration::from_secs(1),
            retransmit_tries: 5,
            ike_port: 500,
            natt_port: 4500,
            cookie_rotation: Duration::from_mins(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_psks_are_refused_and_psks_never_print() {
        assert_eq!(
            Psk::new(b"fifteen bytes!!")
                .expect_err("15 bytes")
                .to_string(),
            "psk: 15 bytes is too short; at least 16 bytes"
        );
        let psk = Psk::new(b"sixteen bytes!!!").expect("16 bytes");
        assert_eq!(format!("{psk:?}"), "Psk(<redacted>)");
    }

    #[test]
    fn identities_encode_as_id_payloads() {
        let v6 = Identity::Ipv6("fd00::1".parse().expect("an address")).to_payload();
        assert_eq!((v6.id_type, v6.data.len()), (id_type::IPV6_ADDR, 16));
        let fqdn = Identity::Fqdn("a.example".into()).to_payload();
        assert_eq!(fqdn.body(), b"\x02\0\0\0a.example");
    }
}
