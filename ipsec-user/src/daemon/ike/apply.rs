//! `xipsec apply` and IKE peers: peers are compared like SAs (by name, every `ike peer add`
//! option, the PSK as bytes and never shown), and an SP that names a changed peer is removed
//! and added again with it (a peer in use cannot be removed under its policies).
//!
//! Contract: `REDACTED` (what `export` prints for a PSK) stands for the running PSK of the
//! peer of the same name; with no such peer the item is refused (by `apply`, naming the line).

use std::collections::BTreeMap;

use crate::daemon::protocol::{BatchItem, Change, DifferenceKind};
use crate::model::{Peer, Spd, opt};

/// `item` (an `ike peer add`) with a PSK placeholder replaced by the running peer's PSK.
pub(crate) fn resolved_peer(running: &Spd, item: &BatchItem, placeholder: &str) -> BatchItem {
    let Change::PeerAdd(args) = &item.change else {
        return item.clone();
    };
    let Some(peer) = args.peer_name.as_deref().and_then(|n| running.peer(n)) else {
        return item.clone();
    };
    let mut args = args.clone();
    if args.psk.as_deref() == Some(placeholder) {
        args.psk = Some(format!("0x{}", hex::encode(peer.psk.as_bytes())));
    }
    BatchItem {
        line: item.line,
        change: Change::PeerAdd(args),
    }
}

/// The `ike peer add` options (without `--`) on which `a` and `b` differ.
fn peer_fields(a: &Peer, b: &Peer) -> Vec<String> {
    [
        (opt::LOCAL, a.local != b.local),
        (opt::REMOTE, a.remote != b.remote),
        (opt::PSK, a.psk != b.psk),
        (opt::IKE_PROPOSAL, a.ike_proposal != b.ike_proposal),
        (opt::ESP_PROPOSAL, a.esp_proposal != b.esp_proposal),
        (opt::LIFETIME, a.lifetime != b.lifetime),
        (opt::IKE_LIFETIME, a.ike_lifetime != b.ike_lifetime),
        (opt::REKEY_MARGIN, a.rekey_margin != b.rekey_margin),
        (opt::DPD, a.dpd != b.dpd),
        (opt::INITIATE, a.initiate != b.initiate),
    ]
    .iter()
    .filter(|(_, differs)| *differs)
    .map(|(option, _)| option.trim_start_matches('-').to_owned())
    .collect()
}

/// Per peer name in either configuration that differs: added, removed or changed.
pub(crate) fn peer_differences(running: &Spd, desired: &Spd) -> BTreeMap<String, DifferenceKind> {
    let mut out = BTreeMap::new();
    for peer in running.peers() {
        let kind = match desired.peer(&peer.name) {
            None => DifferenceKind::Removed,
            Some(want) => {
                let fields = peer_fields(peer, want);
                if fields.is_empty() {
                    continue;
                }
                DifferenceKind::Changed { fields }
            }
        };
        out.insert(peer.name.clone(), kind);
    }
    for peer in desired.peers() {
        if running.peer(&peer.name).is_none() {
            out.insert(peer.name.clone(), DifferenceKind::Added);
        }
    }
    out
}

/// SPs the file leaves as they are but whose peer changes: removed and added again with it.
pub(crate) fn readd_peer_users(
    running: &Spd,
    desired: &Spd,
    peers: &BTreeMap<String, DifferenceKind>,
    sp_changes: &mut BTreeMap<String, DifferenceKind>,
) {
    for sp in running.sps() {
        if let Some(peer) = sp.ike_peer.as_deref().filter(|p| {
            matches!(peers.get(*p), Some(DifferenceKind::Changed { .. }))
                && !sp_changes.contains_key(&sp.name)
        }) && desired.sp(&sp.name).is_some()
        {
            sp_changes.insert(
                sp.name.clone(),
                DifferenceKind::Readded {
                    sa: peer.to_owned(),
                },
            );
        }
    }
}
