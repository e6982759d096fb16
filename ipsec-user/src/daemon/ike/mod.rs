//! IKEv2 in the daemon: one task owns the I/O-free core ([`crate::ike::Ike`]), its UDP sockets
//! and its timer, and turns what the core reports into state changes through the control
//! worker, the one owner of the state.
//!
//! Contract:
//! - Configuration flows one way: after every committed change the control worker sends the
//!   peers and their SPs' selectors ([`config::desired`]); the task adds, replaces or removes
//!   peers in the core when what they ask for changed (a changed peer's SAs are deleted and
//!   negotiated again), and initiates `--initiate always` peers (at start, after `ike peer add`,
//!   and again a few seconds after their IKE SA is gone).
//! - Sockets: one UDP socket per (peer local address, port 500 and 4500), bound lazily and
//!   retried while the address is not there yet. Every datagram goes to the core with the
//!   address it arrived on; on 4500 the core takes only those with the non-ESP marker.
//! - Events: `ChildSaEstablished` -> two `ike` SAs installed through [`Control::ike`] and bound
//!   to the peer's SPs (on rekey the old inbound SA stays accepted until `ChildSaDeleted`,
//!   through the model's `former`); if the state refuses them (an SPI in use) the CHILD_SA is
//!   deleted again. `ChildSaDeleted` -> its SAs removed (the SPs unbound: their flows fail
//!   closed). `Failed` -> a warning naming the peer and the RFC 7296 notify
//!   (`AUTHENTICATION_FAILED`, `NO_PROPOSAL_CHOSEN`, ...).
//! - `ike` SAs live in memory only (see `model::spd::ike`); after a restart `always` peers
//!   negotiate again and the flows stay dropped until they have. When the daemon stops
//!   ([`IkeLink::stop`], SIGTERM), each established IKE SA is deleted with an INFORMATIONAL
//!   Delete (sent, retransmitted once after half a second, a second at most in all), so the peer
//!   drops its SAs at once; then the negotiated SAs are removed from the state (fail closed).
//! - Events are acted on before the datagrams of the same step are sent (make before break):
//!   a new CHILD_SA is installed before the answer that lets the peer use it, and a CHILD_SA
//!   the peer deleted is gone (its flows moved to its successor) before the Delete is
//!   answered. The responder of a rekey keeps sending on the old CHILD_SA until the initiator
//!   deletes it ([`crate::ike::SendFrom::AfterRekeyed`]); ESP arriving on the new one ends the
//!   wait earlier ([`waiting_with_esp`], checked every tick).
//! - `ike sa rekey` ([`rekey`]) rekeys a peer's CHILD_SAs or IKE SA on demand.
//! - IKE itself must never be subject to the SPD: every datapath sync makes the peers' (local,
//!   remote) address pairs the set whose UDP 500/4500 XDP and TC let through
//!   (`datapath/ike_bypass.rs`).

mod apply;
mod config;
mod install;
mod runtime;

use tokio::sync::{mpsc, oneshot};
use tracing::info;

use super::protocol::{ExportedPeer, PeerEntry, Response};
use crate::ike::{ChildSa, SendFrom};
use crate::model::{ModelError, OutboundSwitch, Spd};

pub(crate) use apply::{peer_differences, readd_peer_users, resolved_peer};
pub(crate) use config::check_peer;
pub(crate) use runtime::spawn;

/// A change the IKE task asks of the state.
pub(crate) enum IkeJob {
    /// Install a CHILD_SA's two SAs and bind the peer's SPs to them.
    Install(Box<ChildSa>),
    /// Remove the SAs of a deleted CHILD_SA (inbound and outbound SPI).
    Remove { peer: String, spis: [u32; 2] },
    /// ESP arrived on these inbound `ike` SAs ([`waiting_with_esp`]): their CHILD_SAs' outbound
    /// SAs may carry the flows now.
    Promote { inbound: Vec<String> },
}

/// The inbound `ike` SAs whose CHILD_SA waits for the one it rekeys to be deleted before
/// sending, and on which ESP arrived already: the peer installed them, so the wait can end
/// (the fallback of make before break when the peer's Delete is late).
/// The counters are read only when some CHILD_SA waits.
pub(crate) fn waiting_with_esp(
    spd: &Spd,
    counters: impl FnOnce() -> crate::daemon::port::Counters,
) -> Vec<String> {
    let waiting = spd.ike_outbound_waiting();
    if waiting.is_empty() {
        return Vec::new();
    }
    let counters = counters();
    waiting
        .into_iter()
        .filter(|sa| counters.sa.get(&sa.id).is_some_and(|c| c.packets > 0))
        .map(|sa| sa.name.clone())
        .collect()
}

/// Apply `job` to `spd` (unchanged on error); the log line to write once it is committed.
///
/// # Errors
/// Why the SAs could not be installed.
pub(crate) fn apply(spd: &mut Spd, job: IkeJob) -> Result<Box<dyn FnOnce() + Send>, String> {
    match job {
        IkeJob::Install(child) => {
            let (inbound, outbound) = install::sa_pair(&child)
                .ok_or_else(|| "an ipv4 child sa cannot be installed".to_owned())?;
            let names = (inbound.name.clone(), outbound.name.clone());
            let switch = match (child.send_from, child.rekeys) {
                (SendFrom::AfterRekeyed, Some(old)) => OutboundSwitch::AfterReplaced {
                    replaces: install::sa_name(&child.peer, old),
                },
                (SendFrom::Never, _) => OutboundSwitch::Never,
                _ => OutboundSwitch::Now,
            };
            spd.install_ike_child(&child.peer, inbound, outbound, switch)
                .map_err(|e: ModelError| e.to_string())?;
            let (peer, rekeys, suite) = (child.peer.clone(), child.rekeys, child.suite);
            let send_from = child.send_from;
            Ok(Box::new(move || {
                info!(
                    peer, inbound = %names.0, outbound = %names.1,
                    encryption = suite.encryption.as_str(), integrity = suite.integrity.as_str(),
                    rekeys = rekeys.map(|spi| format!("{spi:08x}")).as_deref().unwrap_or("-"),
                    send_from = ?send_from,
                    "ike: child sa installed"
                );
            }))
        }
        IkeJob::Promote { inbound } => {
            let moved = spd.promote_ike_outbound(&inbound);
            Ok(Box::new(move || {
                if moved {
                    info!(sas = ?inbound, "ike: esp arrived on a rekeyed child sa; sending on it");
                }
            }))
        }
        IkeJob::Remove { peer, spis } => {
            let removed = spd.remove_ike_sas(&spis);
            Ok(Box::new(move || {
                if !removed.is_empty() {
                    info!(peer, sas = ?removed, "ike: child sa removed");
                }
            }))
        }
    }
}

/// The `on-demand` peers with an unbound outbound SP whose packet counter grew since the last
/// call (`seen` holds the counts; the first sight of an SP only records it). The kernel counts
/// an `ipsec` SP's packets before the ESP engine drops them for want of an SA, so this is the
/// datapath's signal that a flow wants a CHILD_SA.
pub(crate) fn demanded(
    spd: &Spd,
    counters: &crate::daemon::port::Counters,
    seen: &mut std::collections::HashMap<String, u64>,
) -> Vec<String> {
    let mut peers = Vec::new();
    let mut live = std::collections::HashSet::new();
    for peer in spd
        .peers()
        .iter()
        .filter(|p| p.initiate == crate::model::Initiate::OnDemand)
    {
        for sp in spd
            .ike_sps(&peer.name)
            .filter(|sp| sp.sa_name.is_none() && sp.direction == crate::model::Direction::Out)
        {
            let packets = counters.sp.get(&sp.id).map_or(0, |c| c.packets);
            live.insert(sp.name.clone());
            let before = seen.insert(sp.name.clone(), packets);
            if before.is_some_and(|b| packets > b) && !peers.contains(&peer.name) {
                peers.push(peer.name.clone());
            }
        }
    }
    seen.retain(|name, _| live.contains(name));
    peers
}

/// Commands from the control worker to the IKE task.
pub(crate) enum Command {
    /// The committed peers and selectors.
    Configure(Vec<config::Desired>),
    /// `ike sa list`.
    List(oneshot::Sender<Response>),
    /// A flow of this `on-demand` peer found no SA ([`demanded`]); rate-limited by the task.
    OnDemand(String),
    /// The daemon stops: Delete every established IKE SA (bounded, see `runtime`), remove the
    /// negotiated SAs, answer, end the task.
    Stop(oneshot::Sender<()>),
    /// `ike sa rekey`: the peer (known to the state) and whether the IKE SA (else its
    /// CHILD_SAs).
    Rekey {
        peer: String,
        ike: bool,
        reply: oneshot::Sender<Response>,
    },
}

/// `ike sa rekey`: refuses a missing or unknown `--peer-name` here (from the committed state),
/// then hands the rekey to the IKE task, which answers (an error when no IKE SA with the peer
/// is established). Nothing changes on error.
pub(crate) fn rekey(
    spd: &Spd,
    link: Option<&IkeLink>,
    peer_name: Option<String>,
    ike: bool,
    reply: oneshot::Sender<Response>,
) {
    let error = |message: String| Response::Error { message };
    let answer = match peer_name {
        None => error(format!(
            "{}: required; the name of an ike peer (see ike peer list)",
            crate::model::opt::PEER_NAME
        )),
        Some(name) if spd.peer(&name).is_none() => error(format!(
            "{}: no peer named '{}'; see ike peer list",
            crate::model::opt::PEER_NAME,
            name.escape_debug()
        )),
        Some(peer) => {
            let Some(link) = link else {
                let _ = reply.send(error(format!(
                    "no established ike sa with peer '{peer}' (ike is not running); nothing changed"
                )));
                return;
            };
            if let Err(mpsc::error::SendError(Command::Rekey { reply, .. })) =
                link.0.send(Command::Rekey { peer, ike, reply })
            {
                let _ = reply.send(error("the daemon is shutting down; nothing changed".into()));
            }
            return;
        }
    };
    let _ = reply.send(answer);
}

/// The control worker's handle on the IKE task.
#[derive(Clone)]
pub(crate) struct IkeLink(mpsc::UnboundedSender<Command>);

impl IkeLink {
    pub(crate) fn configure(&self, spd: &Spd) {
        let _ = self.0.send(Command::Configure(config::desired(spd)));
    }

    /// The daemon stops: the IKE task tells each peer with an established IKE SA (an
    /// INFORMATIONAL Delete, so it removes its SAs at once instead of waiting for dead peer
    /// detection), removes the negotiated SAs from the state (their flows fail closed) and
    /// ends. Returns when it has, or after [`runtime::STOP_BOUND`] at most.
    pub(crate) async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.0.send(Command::Stop(done)).is_ok() {
            let _ = tokio::time::timeout(runtime::STOP_BOUND, stopped).await;
        }
    }

    pub(crate) fn list(&self, reply: oneshot::Sender<Response>) {
        if let Err(mpsc::error::SendError(Command::List(reply))) = self.0.send(Command::List(reply))
        {
            let _ = reply.send(Response::IkeSaList(Vec::new()));
        }
    }
}

/// Every peer with everything `ike peer add` needs, for `export`; the PSK only `with_keys`.
pub(crate) fn exported_peers(spd: &Spd, with_keys: bool) -> Vec<ExportedPeer> {
    spd.peers()
        .iter()
        .map(|p| ExportedPeer {
            name: p.name.clone(),
            local: p.local,
            remote: p.remote,
            psk: with_keys.then(|| p.psk.clone()),
            ike_proposal: p.ike_proposal.clone(),
            esp_proposal: p.esp_proposal.clone(),
            lifetime: p.lifetime,
            ike_lifetime: p.ike_lifetime,
            rekey_margin: p.rekey_margin,
            dpd: p.dpd,
            initiate: p.initiate,
        })
        .collect()
}

/// `ike peer list`: every peer (its `ike peer add` options but the PSK), its SPs and its `ike`
/// SAs.
pub(crate) fn peer_entries(spd: &Spd) -> Vec<PeerEntry> {
    spd.peers()
        .iter()
        .zip(exported_peers(spd, false))
        .map(|(p, exported)| PeerEntry {
            peer: exported,
            auth: "psk".to_owned(),
            in_use_by: spd.ike_sps(&p.name).map(|sp| sp.name.clone()).collect(),
            sas: spd
                .sas()
                .iter()
                .filter(|sa| spd.ike_owner(&sa.name) == Some(p.name.as_str()))
                .map(|sa| sa.name.clone())
                .collect(),
        })
        .collect()
}
