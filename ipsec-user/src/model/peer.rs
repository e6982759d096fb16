//! `Peer`: an IKEv2 peer (`ike peer add`), validated and persisted with the SPD.
//!
//! Contract: [`Peer::parse`] checks everything about one peer that the model can check on its
//! own: the name (like SA names, at most [`MAX_PEER_NAME_LEN`] so the generated SA names
//! `ike-<peer>-<spi>` fit), two IPv6 addresses, `--auth psk`, the PSK syntax (`0x` hex or text,
//! like manual keys), lifetimes against each other, the initiation policy. The proposal syntax
//! and the PSK's minimum length are the IKE core's rules: the daemon checks them with the core's
//! own parsers before it calls `Spd::add_peer` (the model reaches nothing but `wire`), and again
//! on every loaded state. Uniqueness and use by SPs are the SPD's business.
//!
//! Defaults a strongSwan user recognises: IKE proposal `aes128-sha256-x25519`, ESP proposals
//! `aes128gcm16,aes128-sha256` (no PFS group: the first CHILD_SA never has one), CHILD_SA
//! lifetime 1 h, IKE SA 4 h, rekeyed 9 min (`rekey_time` = lifetime - margin) before the end,
//! liveness checks after 30 s of silence, and `--initiate always`.

use std::net::Ipv6Addr;

use serde::{Deserialize, Serialize};

use super::args::{PeerAddArgs, opt};
use super::error::{ModelError, shown};
use super::key::Key;
use super::parse::{self, allowed};

/// Longest peer name: SA names (at most 64 characters) are `ike-<peer>-<8 hex digits>`.
pub const MAX_PEER_NAME_LEN: usize = 64 - "ike--01234567".len();

/// The IKE proposal of a peer added without `--ike-proposal`.
pub const DEFAULT_IKE_PROPOSAL: &str = "aes128-sha256-x25519";
/// The ESP proposals of a peer added without `--esp-proposal`.
pub const DEFAULT_ESP_PROPOSAL: &str = "aes128gcm16,aes128-sha256";
/// Seconds; strongSwan's defaults (`life_time` 1 h for CHILD_SAs, `rekey_time` 4 h for IKE SAs).
pub(crate) const DEFAULT_LIFETIME: u32 = 3600;
pub(crate) const DEFAULT_IKE_LIFETIME: u32 = 14_400;
pub(crate) const DEFAULT_REKEY_MARGIN: u32 = 540;
pub(crate) const DEFAULT_DPD: u32 = 30;
/// The shortest lifetime accepted: below it rekeying would be most of the traffic.
pub(crate) const MIN_LIFETIME: u32 = 10;

const LIFETIME_ALLOWED: &str = "use a number of seconds, 10 to 31536000";
const DPD_ALLOWED: &str = "use a number of seconds, 0 (off) to 3600";
const INITIATE_ALLOWED: &str = "use always, on-demand or never";
const AUTH_ALLOWED: &str = "use psk";
const ADDRESS_ALLOWED: &str = "use an ipv6 address";

/// When this host starts negotiating with the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Initiate {
    /// At daemon start, after `ike peer add`, and again whenever the IKE SA is gone.
    Always,
    /// When the ESP engine drops a packet of one of the peer's SPs for want of an SA.
    OnDemand,
    /// Never: the peer initiates.
    Never,
}

impl Initiate {
    pub const ALL: &'static [(Self, &'static str)] = &[
        (Self::Always, "always"),
        (Self::OnDemand, "on-demand"),
        (Self::Never, "never"),
    ];

    pub fn as_str(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(v, _)| *v == self)
            .map_or("always", |(_, s)| s)
    }
}

/// A configured IKE peer. `Debug` prints the PSK's length only ([`Key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Peer {
    pub name: String,
    /// Our address: IKE is sent from it and the SAs' local end.
    pub local: Ipv6Addr,
    pub remote: Ipv6Addr,
    /// The pre-shared key (RFC 7296 §2.15), persisted as hex like manual keys.
    pub psk: Key,
    /// strongSwan's syntax, as typed (checked by the IKE core's parser).
    pub ike_proposal: String,
    pub esp_proposal: String,
    /// Seconds a CHILD_SA lives.
    pub lifetime: u32,
    /// Seconds an IKE SA lives.
    pub ike_lifetime: u32,
    /// Seconds before the end of a lifetime at which the SA is rekeyed.
    pub rekey_margin: u32,
    /// Seconds of silence before a liveness check; 0 = none.
    pub dpd: u32,
    pub initiate: Initiate,
}

fn seconds(
    option: &'static str,
    value: Option<&String>,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    allowed: &'static str,
) -> Result<u32, ModelError> {
    let Some(text) = value else {
        return Ok(default);
    };
    text.trim_end_matches('s')
        .parse::<u32>()
        .ok()
        .filter(|v| range.contains(v))
        .ok_or_else(|| ModelError::Invalid {
            option,
            value: shown(text),
            allowed,
        })
}

fn address(option: &'static str, value: Option<&String>) -> Result<Ipv6Addr, ModelError> {
    let text = parse::required(value, option, ADDRESS_ALLOWED)?;
    text.parse::<Ipv6Addr>()
        .ok()
        .filter(|a| !a.is_unspecified() && !a.is_multicast())
        .ok_or_else(|| ModelError::Invalid {
            option,
            value: shown(text),
            allowed: ADDRESS_ALLOWED,
        })
}

impl Peer {
    /// Builds a peer from `ike peer add` arguments; see the module contract.
    pub(crate) fn parse(args: &PeerAddArgs) -> Result<Self, ModelError> {
        let name = parse::required(args.peer_name.as_ref(), opt::PEER_NAME, allowed::NAME)?;
        let name = parse::name(opt::PEER_NAME, name)?;
        let local = address(opt::LOCAL, args.local.as_ref())?;
        let remote = address(opt::REMOTE, args.remote.as_ref())?;
        let auth = parse::required(args.auth.as_ref(), opt::AUTH, AUTH_ALLOWED)?;
        if !auth.eq_ignore_ascii_case("psk") {
            return Err(ModelError::Invalid {
                option: opt::AUTH,
                value: shown(auth),
                allowed: AUTH_ALLOWED,
            });
        }
        let psk = parse::key(
            opt::PSK,
            parse::required(
                args.psk.as_ref(),
                opt::PSK,
                "give 0x followed by hex digits, or ascii text; at least 16 bytes",
            )?,
        )?;
        let proposal = |value: Option<&String>, default: &str| {
            value.map_or_else(|| default.to_owned(), |v| v.trim().to_ascii_lowercase())
        };
        let ike_proposal = proposal(args.ike_proposal.as_ref(), DEFAULT_IKE_PROPOSAL);
        let esp_proposal = proposal(args.esp_proposal.as_ref(), DEFAULT_ESP_PROPOSAL);
        let lifetime = seconds(
            opt::LIFETIME,
            args.lifetime.as_ref(),
            DEFAULT_LIFETIME,
            MIN_LIFETIME..=31_536_000,
            LIFETIME_ALLOWED,
        )?;
        let ike_lifetime = seconds(
            opt::IKE_LIFETIME,
            args.ike_lifetime.as_ref(),
            DEFAULT_IKE_LIFETIME,
            MIN_LIFETIME..=31_536_000,
            LIFETIME_ALLOWED,
        )?;
        let margin_given = args.rekey_margin.is_some();
        let mut rekey_margin = seconds(
            opt::REKEY_MARGIN,
            args.rekey_margin.as_ref(),
            DEFAULT_REKEY_MARGIN,
            1..=31_536_000,
            "use a number of seconds, 1 or more, below --lifetime and --ike-lifetime",
        )?;
        if !margin_given {
            // A short lifetime without a margin: rekey at two thirds of it, as a margin of 9 min
            // would not fit.
            rekey_margin = rekey_margin.min(lifetime.min(ike_lifetime) / 3).max(1);
        }
        let dpd = seconds(
            opt::DPD,
            args.dpd.as_ref(),
            DEFAULT_DPD,
            0..=3600,
            DPD_ALLOWED,
        )?;
        let initiate = match &args.initiate {
            None => Initiate::Always,
            Some(value) => parse::keyword(opt::INITIATE, value, Initiate::ALL, INITIATE_ALLOWED)?,
        };
        let peer = Self {
            name,
            local,
            remote,
            psk,
            ike_proposal,
            esp_proposal,
            lifetime,
            ike_lifetime,
            rekey_margin,
            dpd,
            initiate,
        };
        peer.check()?;
        Ok(peer)
    }

    /// Every invariant of one peer that the model can check (see the module contract).
    pub(crate) fn check(&self) -> Result<(), ModelError> {
        if !parse::is_valid_name(&self.name) || self.name.len() > MAX_PEER_NAME_LEN {
            return Err(ModelError::Peer {
                option: opt::PEER_NAME,
                reason: format!(
                    "'{}' is not valid; use 1 to {MAX_PEER_NAME_LEN} characters from A-Z a-z 0-9 _ . -",
                    shown(&self.name)
                ),
            });
        }
        if self.local == self.remote {
            return Err(ModelError::Peer {
                option: opt::REMOTE,
                reason: "the same address as --local; give the peer's address".to_owned(),
            });
        }
        if self.psk.is_empty() {
            return Err(ModelError::Peer {
                option: opt::PSK,
                reason: "the key is empty".to_owned(),
            });
        }
        for (option, lifetime) in [
            (opt::LIFETIME, self.lifetime),
            (opt::IKE_LIFETIME, self.ike_lifetime),
        ] {
            if lifetime < MIN_LIFETIME {
                return Err(ModelError::Peer {
                    option,
                    reason: format!("{lifetime} s is too short; {LIFETIME_ALLOWED}"),
                });
            }
            if self.rekey_margin >= lifetime {
                return Err(ModelError::Peer {
                    option: opt::REKEY_MARGIN,
                    reason: format!(
                        "{} s is not below {option} {lifetime} s; give a smaller margin",
                        self.rekey_margin
                    ),
                });
            }
        }
        if self.ike_proposal.is_empty() || self.esp_proposal.is_empty() {
            return Err(ModelError::Peer {
                option: if self.ike_proposal.is_empty() {
                    opt::IKE_PROPOSAL
                } else {
                    opt::ESP_PROPOSAL
                },
                reason: "empty; give proposals like aes128-sha256-x25519".to_owned(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn args(name: &str) -> PeerAddArgs {
        PeerAddArgs {
            peer_name: Some(name.into()),
            local: Some("fd00::1".into()),
            remote: Some("fd00::2".into()),
            auth: Some("psk".into()),
            psk: Some("a secret of 24 bytes....".into()),
            ..PeerAddArgs::default()
        }
    }

    #[test]
    fn defaults_and_rejections() {
        let peer = Peer::parse(&args("p1")).expect("a valid peer");
        assert_eq!(peer.ike_proposal, DEFAULT_IKE_PROPOSAL);
        assert_eq!(
            (peer.lifetime, peer.rekey_margin, peer.initiate),
            (3600, 540, Initiate::Always)
        );
        let rejected = |edit: fn(&mut PeerAddArgs)| {
            let mut a = args("p1");
            edit(&mut a);
            Peer::parse(&a).expect_err("refused").to_string()
        };
        assert_eq!(
            rejected(|a| a.remote = Some("fd00::1".into())),
            "--remote: the same address as --local; give the peer's address"
        );
        assert_eq!(
            rejected(|a| a.auth = Some("rsa".into())),
            "--auth: 'rsa' is not valid; use psk"
        );
        assert_eq!(
            rejected(|a| a.local = Some("192.0.2.1".into())),
            "--local: '192.0.2.1' is not valid; use an ipv6 address"
        );
        assert_eq!(
            rejected(|a| {
                a.lifetime = Some("60".into());
                a.rekey_margin = Some("60".into());
            }),
            "--rekey-margin: 60 s is not below --lifetime 60 s; give a smaller margin"
        );
        assert_eq!(
            rejected(|a| a.initiate = Some("sometimes".into())),
            "--initiate: 'sometimes' is not valid; use always, on-demand or never"
        );
        assert!(rejected(|a| a.peer_name = Some("x".repeat(52))).starts_with("--peer-name: '"));
        let mut short = args("p1");
        short.lifetime = Some("30".into());
        assert_eq!(Peer::parse(&short).expect("valid").rekey_margin, 10);
    }
}
