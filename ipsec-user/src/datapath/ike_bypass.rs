//! ESP in UDP and the IKE bypass in the maps: which local UDP ports carry ESP
//! (`XIPSEC_UDP_ENCAP_PORTS`, from the SAs with `udp_encap`), and which (local, remote) address
//! pairs are IKE peers whose IKE is never classified (`XIPSEC_IKE_PEERS`, set by the daemon).
//!
//! Contract:
//! - Both ports of every SA with UDP encapsulation are marked (the SA does not say which end is
//!   local; the ports are 4500 unless a NAT moved one). A port is marked before the SPD that
//!   needs it is flipped in, and unmarked after the SPD that no longer needs it is: ESP in UDP
//!   of an SA being installed is never classified as clear UDP.
//! - [`KernelDatapath::set_ike_peers`] replaces the peer set by adding the new pairs first and
//!   removing the stale ones after, so a pair in both sets is present throughout.

use std::collections::{BTreeSet, HashSet};
use std::net::Ipv6Addr;

use ipsec_common::abi::{self, IkePeerKey};

use super::DatapathError;
use super::kernel::{KernelDatapath, map_io};
use crate::model::Spd;

/// The local UDP ports of ESP in UDP that `spd` needs.
fn wanted_ports(spd: &Spd) -> BTreeSet<u16> {
    spd.sas()
        .iter()
        .filter_map(|sa| sa.udp_encap)
        .flat_map(|encap| [encap.source_port, encap.destination_port])
        .collect()
}

fn set_port(dp: &mut KernelDatapath, port: u16, marked: bool) -> Result<(), DatapathError> {
    dp.maps
        .udp_encap_ports
        .set(u32::from(port), u32::from(marked), 0)
        .map_err(map_io(abi::UDP_ENCAP_PORTS))
}

/// Marks the ports `spd` needs that are not marked yet (before its tables are flipped in).
pub(super) fn mark_encap_ports(dp: &mut KernelDatapath, spd: &Spd) -> Result<(), DatapathError> {
    for port in wanted_ports(spd) {
        if !dp.encap_ports.contains(&port) {
            set_port(dp, port, true)?;
            dp.encap_ports.insert(port);
        }
    }
    Ok(())
}

/// Unmarks the ports `spd` no longer needs (after its tables are flipped in).
pub(super) fn unmark_encap_ports(dp: &mut KernelDatapath, spd: &Spd) -> Result<(), DatapathError> {
    let wanted = wanted_ports(spd);
    let stale: Vec<u16> = dp.encap_ports.difference(&wanted).copied().collect();
    for port in stale {
        set_port(dp, port, false)?;
        dp.encap_ports.remove(&port);
    }
    Ok(())
}

/// Makes the peer set `spd`'s IKE peers, before its tables are flipped in: a peer and the SPs
/// that name it can arrive in one change, and its IKE must pass from the first packet.
pub(super) fn sync_ike_peers(dp: &mut KernelDatapath, spd: &Spd) -> Result<(), DatapathError> {
    let pairs: BTreeSet<(Ipv6Addr, Ipv6Addr)> =
        spd.peers().iter().map(|p| (p.local, p.remote)).collect();
    dp.set_ike_peers(&pairs.into_iter().collect::<Vec<_>>())
}

impl KernelDatapath {
    /// Makes `pairs` ((local, remote) addresses of the configured IKE peers) the set whose IKE
    /// (UDP 500, or UDP 4500 behind the non-ESP marker) XDP ingress and TC egress pass without
    /// classification. New pairs are added before stale ones are removed: a pair in both the
    /// old and the new set never disappears in between. At most `abi::MAX_IKE_PEERS` pairs.
    pub fn set_ike_peers(&mut self, pairs: &[(Ipv6Addr, Ipv6Addr)]) -> Result<(), DatapathError> {
        let io = map_io(abi::IKE_PEERS);
        let wanted: HashSet<IkePeerKey> = pairs
            .iter()
            .map(|(local, remote)| IkePeerKey {
                local: local.octets(),
                remote: remote.octets(),
            })
            .collect();
        if wanted.len() > abi::MAX_IKE_PEERS as usize {
            return Err(DatapathError::TooManyIkePeers {
                count: wanted.len(),
                limit: abi::MAX_IKE_PEERS,
            });
        }
        let old: Vec<IkePeerKey> = self
            .maps
            .ike_peers
            .keys()
            .collect::<Result<_, _>>()
            .map_err(io)?;
        for key in &wanted {
            self.maps.ike_peers.insert(key, 1, 0).map_err(io)?;
        }
        for key in old.iter().filter(|key| !wanted.contains(key)) {
            self.maps.ike_peers.remove(key).map_err(io)?;
        }
        Ok(())
    }

    /// The configured IKE peer pairs, as the kernel holds them (tests, `status`).
    pub fn ike_peers(&self) -> Result<Vec<(Ipv6Addr, Ipv6Addr)>, DatapathError> {
        let mut pairs: Vec<(Ipv6Addr, Ipv6Addr)> = self
            .maps
            .ike_peers
            .keys()
            .map(|key| key.map(|k| (Ipv6Addr::from(k.local), Ipv6Addr::from(k.remote))))
            .collect::<Result<_, _>>()
            .map_err(map_io(abi::IKE_PEERS))?;
        pairs.sort_unstable();
        Ok(pairs)
    }
}
