//! From the SPD to the IKE core's configuration: a model [`Peer`] and the SPs that name it
//! become one [`PeerConfig`] (proposals, PSK, lifetimes, the CHILD_SA's mode and traffic
//! selectors).
//!
//! Contract:
//! - [`check_peer`] is the IKE core's half of `ike peer add`'s validation (its proposal parsers,
//!   `Psk::new`'s minimum length), with messages naming the option; the model calls it before
//!   it adds a peer, and [`desired`] applies the same rules to a loaded state.
//! - Traffic selectors, one list per peer from all its SPs: an `out` SP gives (source ->
//!   local TS, destination -> remote TS), an `in` SP the mirror (destination -> local, source ->
//!   remote); protocol `tcp`/`udp` with its ports, `icmp6` as the protocol with any type, `any`
//!   as everything. Duplicates are dropped. So two hosts whose SPs mirror each other propose
//!   the same selectors, and each narrows the other's to its own (RFC 7296 §2.9).
//! - One CHILD_SA per peer: its mode is the mode of the peer's first SP (creation order). SPs
//!   of another mode are left out of the selectors and never bound: their flows stay dropped
//!   (fail closed), and [`desired`] says so in `mixed_modes`.

use std::net::IpAddr;
use std::time::Duration;

use crate::ike::proposal::{parse_esp, parse_ike};
use crate::ike::selector::TrafficSelector;
use crate::ike::{Identity, Lifetimes, PeerConfig, Psk};
use crate::model::{Direction, Mode, ModelError, Peer, Sp, Spd, UpperLayerProtocol, opt};

/// `ike peer add`'s checks that belong to the IKE core; see the module contract.
///
/// # Errors
/// [`ModelError::Peer`] naming `--ike-proposal`, `--esp-proposal` or `--psk`.
pub(crate) fn check_peer(peer: &Peer) -> Result<(), ModelError> {
    parse_ike(&peer.ike_proposal).map_err(|e| ModelError::Peer {
        option: opt::IKE_PROPOSAL,
        reason: format!("{e}; e.g. aes128-sha256-x25519 or aes256-sha256-ecp256"),
    })?;
    parse_esp(&peer.esp_proposal).map_err(|e| ModelError::Peer {
        option: opt::ESP_PROPOSAL,
        reason: format!("{e}; e.g. aes128gcm16 or aes128-sha256"),
    })?;
    Psk::new(peer.psk.as_bytes()).map_err(|e| ModelError::Peer {
        option: opt::PSK,
        reason: format!("{e} (a short psk can be guessed offline from one captured exchange)"),
    })?;
    Ok(())
}

/// What the IKE task should run for one peer; compared to decide whether a peer changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Desired {
    pub(crate) peer: Peer,
    pub(crate) mode: Mode,
    pub(crate) local_ts: Vec<TrafficSelector>,
    pub(crate) remote_ts: Vec<TrafficSelector>,
    /// Names of the SPs left unbound because their mode is not the CHILD_SA's.
    pub(crate) mixed_modes: Vec<String>,
}

impl Desired {
    /// Whether the core can run this peer: without selectors (no SP names it yet) there is
    /// nothing to negotiate.
    pub(crate) fn runnable(&self) -> bool {
        !self.local_ts.is_empty() && !self.remote_ts.is_empty()
    }

    /// The core's configuration of this peer.
    ///
    /// # Errors
    /// The [`check_peer`] message when a loaded peer no longer passes the core's checks.
    pub(crate) fn config(&self) -> Result<PeerConfig, ModelError> {
        let peer = &self.peer;
        check_peer(peer)?;
        let bad = |e: &dyn std::fmt::Display| ModelError::Peer {
            option: opt::PEER_NAME,
            reason: e.to_string(),
        };
        Ok(PeerConfig {
            name: peer.name.clone(),
            local: IpAddr::V6(peer.local),
            remote: IpAddr::V6(peer.remote),
            local_id: Identity::address(IpAddr::V6(peer.local)),
            remote_id: Some(Identity::address(IpAddr::V6(peer.remote))),
            psk: Psk::new(peer.psk.as_bytes()).map_err(|e| bad(&e))?,
            ike_proposals: parse_ike(&peer.ike_proposal).map_err(|e| bad(&e))?,
            esp_proposals: parse_esp(&peer.esp_proposal).map_err(|e| bad(&e))?,
            mode: self.mode,
            local_ts: self.local_ts.clone(),
            remote_ts: self.remote_ts.clone(),
            lifetimes: lifetimes(peer),
        })
    }
}

/// The core's lifetimes of a peer.
pub(crate) fn lifetimes(peer: &Peer) -> Lifetimes {
    Lifetimes {
        ike_lifetime: Duration::from_secs(u64::from(peer.ike_lifetime)),
        child_lifetime: Duration::from_secs(u64::from(peer.lifetime)),
        rekey_margin: Duration::from_secs(u64::from(peer.rekey_margin)),
        dpd: (peer.dpd > 0).then(|| Duration::from_secs(u64::from(peer.dpd))),
    }
}

/// One selector of an SP's side.
fn selector(
    net: ipnet::Ipv6Net,
    protocol: UpperLayerProtocol,
    port: Option<u16>,
) -> TrafficSelector {
    let mut ts = TrafficSelector::prefix(ipnet::IpNet::V6(net));
    match protocol {
        UpperLayerProtocol::Any => {}
        UpperLayerProtocol::Icmp6 => ts.protocol = crate::model::NEXT_HEADER_ICMPV6,
        UpperLayerProtocol::Tcp | UpperLayerProtocol::Udp => {
            ts.protocol = if protocol == UpperLayerProtocol::Tcp {
                6
            } else {
                17
            };
            if let Some(port) = port {
                ts.start_port = port;
                ts.end_port = port;
            }
        }
    }
    ts
}

/// Every peer of `spd` with its SPs' selectors; see the module contract.
pub(crate) fn desired(spd: &Spd) -> Vec<Desired> {
    spd.peers()
        .iter()
        .map(|peer| {
            let sps: Vec<&Sp> = spd.ike_sps(&peer.name).collect();
            let mode = sps.first().map_or(Mode::Transport, |sp| sp.mode);
            let (mut local_ts, mut remote_ts, mut mixed_modes) =
                (Vec::new(), Vec::new(), Vec::new());
            let push = |list: &mut Vec<TrafficSelector>, ts: TrafficSelector| {
                if !list.contains(&ts) {
                    list.push(ts);
                }
            };
            for sp in sps {
                if sp.mode != mode {
                    mixed_modes.push(sp.name.clone());
                    continue;
                }
                let source = selector(sp.source, sp.protocol, sp.source_port);
                let destination = selector(sp.destination, sp.protocol, sp.destination_port);
                let (local, remote) = match sp.direction {
                    Direction::Out => (source, destination),
                    Direction::In => (destination, source),
                };
                push(&mut local_ts, local);
                push(&mut remote_ts, remote);
            }
            Desired {
                peer: peer.clone(),
                mode,
                local_ts,
                remote_ts,
                mixed_modes,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{IkeSpAddArgs, PeerAddArgs, SpAddArgs};

    fn peer(psk: &str, ike: Option<&str>) -> PeerAddArgs {
        PeerAddArgs {
            peer_name: Some("p".into()),
            local: Some("fd00::1".into()),
            remote: Some("fd00::2".into()),
            auth: Some("psk".into()),
            psk: Some(psk.into()),
            ike_proposal: ike.map(Into::into),
            ..PeerAddArgs::default()
        }
    }

    #[test]
    fn the_core_refuses_short_psks_and_bad_proposals_by_option() {
        let mut spd = Spd::new();
        let error = spd
            .add_peer(&peer("fifteen bytes!!", None), check_peer)
            .expect_err("short psk");
        assert!(
            error
                .to_string()
                .starts_with("--psk: psk: 15 bytes is too short; at least 16 bytes"),
            "{error}"
        );
        let error = spd
            .add_peer(
                &peer("sixteen bytes!!!", Some("aes128-md5-x25519")),
                check_peer,
            )
            .expect_err("bad proposal");
        assert!(error.to_string().starts_with("--ike-proposal: "), "{error}");
        assert!(spd.peers().is_empty(), "nothing added");
        spd.add_peer(&peer("sixteen bytes!!!", None), check_peer)
            .expect("a valid peer");
    }

    #[test]
    fn selectors_mirror_in_and_out_sps() {
        let mut spd = Spd::new();
        spd.add_peer(&peer("sixteen bytes!!!", None), check_peer)
            .expect("a valid peer");
        for (name, dir, src, dst) in [
            ("o", "out", "fd00::1/128", "fd00::2/128"),
            ("i", "in", "fd00::2/128", "fd00::1/128"),
        ] {
            spd.add_ike_sp(&IkeSpAddArgs {
                sp: SpAddArgs {
                    sp_source: Some(src.into()),
                    sp_destination: Some(dst.into()),
                    source_port: Some("any".into()),
                    destination_port: Some("any".into()),
                    upper_layer_protocol: Some("tcp".into()),
                    flow_direction: Some(dir.into()),
                    sp_name: Some(name.into()),
                    ..SpAddArgs::default()
                },
                ike_peer: Some("p".into()),
            })
            .expect("an ike sp");
        }
        let desired = desired(&spd);
        assert_eq!(desired.len(), 1);
        let d = &desired[0];
        assert_eq!((d.local_ts.len(), d.remote_ts.len()), (1, 1), "{d:?}");
        assert_eq!(
            d.local_ts[0].start,
            "fd00::1".parse::<IpAddr>().expect("addr")
        );
        assert_eq!(d.local_ts[0].protocol, 6);
        assert!(d.runnable());
        d.config().expect("a core configuration");
    }
}
