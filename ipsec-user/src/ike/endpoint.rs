//! The IKE endpoint: the configured peers, every IKE SA by our SPI, the responder's half-open
//! bound with its COOKIE secret, and the dispatch of datagrams and timers to the exchanges.
//!
//! Contract (the API the daemon drives; no sockets, no clock, no threads):
//! - [`Ike::receive`] takes one UDP payload as it arrived (with its local and remote socket
//!   addresses, the non-ESP marker included on port 4500) and the time; [`Ike::initiate`],
//!   [`Ike::delete_ike_sa`] and [`Ike::delete_child_sa`] start exchanges; [`Ike::on_timeout`]
//!   retransmits and expires. Each returns an [`Output`]: datagrams to send, events to act on.
//! - [`Ike::next_deadline`] says when to call [`Ike::on_timeout`] next.
//! - Unauthenticated input never creates state beyond one half-open SA per IKE_SA_INIT from a
//!   configured peer's address, and above [`Settings::half_open_limit`] not even that without a
//!   valid COOKIE (§2.6). A datagram that fails to parse or authenticate is dropped with an
//!   [`Event::Dropped`] and no answer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use super::config::{ConfigError, PeerConfig, Settings};
use super::cookie::CookieSecrets;
use super::event::{Event, Output};
use super::message::{ExchangeType, Header, Message};
use super::payload::{Delete, Notify, NotifyType, Payload, ProtocolId};
use super::proposal::IkeSuite;
use super::sa::{IkeSa, RequestKind, Role, SaState};
use super::{create_child, ike_rekey, informational, initiator, lifetimes, responder};

/// What `ike sa list` shows of one IKE SA (never keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IkeSaInfo {
    pub peer: String,
    pub initiator: bool,
    pub state: SaState,
    /// Replaced by a rekey, or the redundant SA of a simultaneous rekey: it carries nothing and
    /// goes when the peer deletes it or its short expiry comes.
    pub retiring: bool,
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub suite: Option<IkeSuite>,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub encapsulated: bool,
    pub established: Option<Instant>,
    /// (inbound SPI, outbound SPI) of each CHILD_SA.
    pub children: Vec<(u32, u32)>,
    /// When the IKE SA is rekeyed (jitter included; `None` when none is scheduled: being
    /// replaced, deleted or not yet established), and when it ends unrekeyed.
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// Per CHILD_SA, in `children`'s order: when it is rekeyed (`None` once a successor exists
    /// or its Delete is under way) and when its lifetime ends.
    pub child_timers: Vec<(Option<Instant>, Instant)>,
    pub messages_received: u64,
    pub messages_sent: u64,
}

/// The IKEv2 endpoint.
pub struct Ike {
    pub(crate) settings: Settings,
    pub(crate) peers: Vec<PeerConfig>,
    /// Every IKE SA, by our SPI.
    pub(crate) sas: HashMap<[u8; 8], IkeSa>,
    /// Responder SAs by (initiator address, SPIi): a retransmitted IKE_SA_INIT finds its SA.
    pub(crate) half_open: HashMap<(SocketAddr, [u8; 8]), [u8; 8]>,
    /// The COOKIE secrets, rotated with time (§2.6).
    pub(crate) cookies: CookieSecrets,
}

/// The error of an operation the daemon asked for.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum IkeError {
    #[error("no peer named '{0}'")]
    UnknownPeer(String),
    #[error("no established ike sa with peer '{0}'")]
    NoSa(String),
    #[error("no child sa with inbound spi {0:#010x}")]
    NoChild(u32),
    #[error(
        "the ike sa with peer '{0}' has no child sa to rekey (none, or each already being replaced)"
    )]
    NoChildOf(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A random SPI: 8 octets, never zero (§3.1: zero means "not yet known").
pub(crate) fn random_ike_spi() -> [u8; 8] {
    loop {
        let mut spi = [0; 8];
        rand::fill(&mut spi[..]);
        if spi != [0; 8] {
            return spi;
        }
    }
}

impl Ike {
    pub fn new(settings: Settings) -> Self {
        Self {
            cookies: CookieSecrets::new(settings.cookie_rotation),
            settings,
            peers: Vec::new(),
            sas: HashMap::new(),
            half_open: HashMap::new(),
        }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Adds a peer.
    ///
    /// # Errors
    /// [`IkeError::Config`] when it does not validate or its name is taken; nothing changes.
    pub fn add_peer(&mut self, peer: PeerConfig) -> Result<(), IkeError> {
        peer.validate()?;
        if self.peers.iter().any(|p| p.name == peer.name) {
            return Err(ConfigError::Duplicate(peer.name).into());
        }
        self.peers.push(peer);
        Ok(())
    }

    /// Removes a peer and deletes its SAs (INFORMATIONAL delete sent, SAs reported deleted).
    ///
    /// # Errors
    /// [`IkeError::UnknownPeer`].
    pub fn remove_peer(&mut self, name: &str, now: Instant) -> Result<Output, IkeError> {
        let index = self
            .peers
            .iter()
            .position(|p| p.name == name)
            .ok_or_else(|| IkeError::UnknownPeer(name.to_owned()))?;
        let mut out = Output::default();
        let ours: Vec<[u8; 8]> = self
            .sas
            .iter()
            .filter(|(_, sa)| sa.peer == name)
            .map(|(spi, _)| *spi)
            .collect();
        for spi in ours {
            if let Some(mut sa) = self.sas.remove(&spi) {
                sa.notify_delete(&self.settings, &mut out);
                self.forget(&sa, &mut out);
            }
        }
        self.peers.remove(index);
        let _ = now;
        Ok(out)
    }

    pub fn peers(&self) -> &[PeerConfig] {
        &self.peers
    }

    fn peer(&self, name: &str) -> Result<&PeerConfig, IkeError> {
        self.peers
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| IkeError::UnknownPeer(name.to_owned()))
    }

    /// Our SPI of the established IKE SA with `peer`.
    fn established_spi(&self, peer: &str) -> Result<[u8; 8], IkeError> {
        self.sas
            .iter()
            .find(|(_, sa)| sa.peer == peer && sa.state == SaState::Established && !sa.quiet)
            .map(|(spi, _)| *spi)
            .ok_or_else(|| IkeError::NoSa(peer.to_owned()))
    }

    /// The settings and the established IKE SA with `peer`.
    fn established(&mut self, peer: &str) -> Result<(&Settings, &mut IkeSa), IkeError> {
        let sa = self
            .sas
            .values_mut()
            .find(|sa| sa.peer == peer && sa.state == SaState::Established && !sa.quiet)
            .ok_or_else(|| IkeError::NoSa(peer.to_owned()))?;
        Ok((&self.settings, sa))
    }

    /// Starts IKE_SA_INIT with a configured peer.
    ///
    /// # Errors
    /// [`IkeError::UnknownPeer`].
    pub fn initiate(&mut self, peer: &str, now: Instant) -> Result<Output, IkeError> {
        let config = self.peer(peer)?;
        let mut out = Output::default();
        let sa = initiator::start(&self.settings, config, now, &mut out);
        self.sas.insert(sa.our_spi(), sa);
        Ok(out)
    }

    /// Deletes the IKE SA (and so its CHILD_SAs) with `peer`: INFORMATIONAL Delete, the SAs
    /// reported deleted when the peer answers (or retransmissions run out).
    ///
    /// # Errors
    /// [`IkeError::NoSa`] when no IKE SA with `peer` is established.
    pub fn delete_ike_sa(&mut self, peer: &str, now: Instant) -> Result<Output, IkeError> {
        let (settings, sa) = self.established(peer)?;
        let mut out = Output::default();
        sa.state = SaState::Deleting;
        sa.send_delete(settings, now, &mut out);
        Ok(out)
    }

    /// Deletes one CHILD_SA, named by the SPI we receive on (INFORMATIONAL Delete; reported
    /// deleted when the peer answers).
    ///
    /// # Errors
    /// [`IkeError::NoChild`].
    pub fn delete_child_sa(&mut self, inbound_spi: u32, now: Instant) -> Result<Output, IkeError> {
        let settings = &self.settings;
        let sa = self
            .sas
            .values_mut()
            .find(|sa| sa.children.iter().any(|c| c.inbound_spi == inbound_spi))
            .ok_or(IkeError::NoChild(inbound_spi))?;
        let mut out = Output::default();
        let delete = vec![Payload::Delete(Delete {
            protocol: ProtocolId::ESP,
            spis: vec![inbound_spi.to_be_bytes()],
        })];
        sa.send_request(
            settings,
            ExchangeType::INFORMATIONAL,
            delete,
            RequestKind::DeleteChild { inbound_spi },
            now,
            &mut out,
        );
        Ok(out)
    }

    /// Rekeys the CHILD_SA we receive on with `inbound_spi` (CREATE_CHILD_SA, §1.3.3): the new
    /// CHILD_SA is reported with `rekeys: Some(inbound_spi)`, then the old one is deleted.
    ///
    /// # Errors
    /// [`IkeError::NoChild`].
    pub fn rekey_child_sa(&mut self, inbound_spi: u32, now: Instant) -> Result<Output, IkeError> {
        let spi = self
            .sas
            .iter()
            .find(|(_, sa)| {
                sa.state == SaState::Established
                    && !sa.quiet
                    && sa.children.iter().any(|c| c.inbound_spi == inbound_spi)
            })
            .map(|(spi, _)| *spi)
            .ok_or(IkeError::NoChild(inbound_spi))?;
        let mut sa = self
            .sas
            .remove(&spi)
            .ok_or(IkeError::NoChild(inbound_spi))?;
        let mut out = Output::default();
        match self.peers.iter().find(|p| p.name == sa.peer) {
            Some(peer) => create_child::start(
                &self.settings,
                peer,
                &mut sa,
                inbound_spi,
                &self.sas,
                now,
                &mut out,
            ),
            None => return Err(IkeError::UnknownPeer(sa.peer)),
        }
        self.sas.insert(spi, sa);
        Ok(out)
    }

    /// Rekeys every CHILD_SA of the established IKE SA with `peer` that is not already being
    /// replaced (one CREATE_CHILD_SA each, queued behind any outstanding request; an operator's
    /// `ike sa rekey --child`). Returns the inbound SPIs of the CHILD_SAs being rekeyed.
    ///
    /// # Errors
    /// [`IkeError::UnknownPeer`], [`IkeError::NoSa`] when no IKE SA with `peer` is established,
    /// [`IkeError::NoChildOf`] when it has no CHILD_SA to rekey.
    pub fn rekey_children(
        &mut self,
        peer: &str,
        now: Instant,
    ) -> Result<(Output, Vec<u32>), IkeError> {
        self.peer(peer)?;
        let spi = self.established_spi(peer)?;
        let mut sa = self
            .sas
            .remove(&spi)
            .ok_or_else(|| IkeError::NoSa(peer.to_owned()))?;
        let due: Vec<u32> = sa
            .children
            .iter()
            .filter(|c| !c.retiring)
            .filter(|c| {
                !sa.rekey
                    .iter()
                    .any(|o| o.old_inbound == Some(c.inbound_spi))
            })
            .map(|c| c.inbound_spi)
            .collect();
        let mut out = Output::default();
        if let Some(config) = self.peers.iter().find(|p| p.name == peer) {
            for old in &due {
                create_child::start(
                    &self.settings,
                    config,
                    &mut sa,
                    *old,
                    &self.sas,
                    now,
                    &mut out,
                );
            }
        }
        self.sas.insert(spi, sa);
        if due.is_empty() {
            return Err(IkeError::NoChildOf(peer.to_owned()));
        }
        Ok((out, due))
    }

    /// Rekeys the IKE SA with `peer` (CREATE_CHILD_SA, §1.3.2, §2.18): its CHILD_SAs move to
    /// the new IKE SA ([`Event::IkeSaRekeyed`]), then the old one is deleted. `on_timeout` does
    /// this by itself `rekey_margin` before `ike_lifetime` ends. Nothing is sent when a rekey
    /// of it is already under way.
    ///
    /// # Errors
    /// [`IkeError::NoSa`] when no IKE SA with `peer` is established.
    pub fn rekey_ike_sa(&mut self, peer: &str, now: Instant) -> Result<Output, IkeError> {
        let spi = self.established_spi(peer)?;
        self.peer(peer)?;
        let mut out = Output::default();
        let Some(mut sa) = self.sas.remove(&spi) else {
            return Err(IkeError::NoSa(peer.to_owned()));
        };
        if sa.ike_rekey.is_none()
            && let Some(config) = self.peers.iter().find(|p| p.name == peer)
        {
            ike_rekey::start(&self.settings, config, &mut sa, &self.sas, now, &mut out);
        }
        self.sas.insert(spi, sa);
        Ok(out)
    }

    /// The daemon saw authentic ESP arrive on the CHILD_SA we receive on with `inbound_spi`:
    /// the peer is alive, so dead peer detection waits (optional; without it only IKE messages
    /// count). Unknown SPIs are ignored.
    pub fn note_inbound_esp(&mut self, inbound_spi: u32, now: Instant) {
        if let Some(sa) = self
            .sas
            .values_mut()
            .find(|sa| sa.children.iter().any(|c| c.inbound_spi == inbound_spi))
        {
            sa.last_heard = sa.last_heard.max(now);
        }
    }

    /// Entries the core holds in its tables (IKE SAs, half-open index, peers): what a flood of
    /// IKE_SA_INIT could grow, bounded by [`Settings::half_open_limit`].
    pub fn stored_entries(&self) -> usize {
        self.sas.len() + self.half_open.len() + self.peers.len()
    }

    /// Sends an empty INFORMATIONAL request to `peer` (liveness, §1.4; dead peer detection):
    /// an answer proves the peer alive; running out of retransmissions deletes the SAs
    /// ([`Failure::Timeout`](super::event::Failure::Timeout), then the deletion events).
    ///
    /// # Errors
    /// [`IkeError::NoSa`] when no IKE SA with `peer` is established.
    pub fn check_liveness(&mut self, peer: &str, now: Instant) -> Result<Output, IkeError> {
        let (settings, sa) = self.established(peer)?;
        let mut out = Output::default();
        sa.send_liveness(settings, now, &mut out);
        Ok(out)
    }

    /// Every IKE SA, for `ike sa list`.
    pub fn ike_sas(&self) -> Vec<IkeSaInfo> {
        let mut list: Vec<IkeSaInfo> = self
            .sas
            .values()
            .map(|sa| IkeSaInfo {
                peer: sa.peer.clone(),
                initiator: sa.role == Role::Initiator,
                state: sa.state,
                retiring: sa.quiet,
                spi_i: sa.spi_i,
                spi_r: sa.spi_r,
                suite: sa.suite,
                local: sa.local,
                remote: sa.remote,
                encapsulated: sa.nat,
                established: sa.established,
                children: sa
                    .children
                    .iter()
                    .map(|c| (c.inbound_spi, c.outbound_spi))
                    .collect(),
                rekey_at: sa
                    .rekey_at
                    .filter(|_| sa.state == SaState::Established && !sa.quiet),
                expire_at: sa.expire_at,
                child_timers: sa
                    .children
                    .iter()
                    .map(|c| ((!c.retiring).then_some(c.rekey_at), c.expire_at))
                    .collect(),
                messages_received: sa.received,
                messages_sent: sa.sent,
            })
            .collect();
        list.sort_by(|a, b| (&a.peer, a.spi_i).cmp(&(&b.peer, b.spi_i)));
        list
    }

    /// Responder SAs waiting for IKE_AUTH.
    pub fn half_open_count(&self) -> usize {
        self.sas
            .values()
            .filter(|sa| sa.state == SaState::HalfOpen)
            .count()
    }

    /// When [`Self::on_timeout`] is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.sas
            .values()
            .filter_map(|sa| sa.deadline(&self.settings, self.lifetimes_of(&sa.peer)))
            .min()
    }

    fn lifetimes_of(&self, peer: &str) -> Option<&super::config::Lifetimes> {
        self.peers
            .iter()
            .find(|p| p.name == peer)
            .map(|p| &p.lifetimes)
    }

    /// Retransmits due requests; gives up SAs whose retransmissions are spent and half-open SAs
    /// that waited too long; rekeys, expires and checks liveness as the peers' [`Lifetimes`]
    /// say (`lifetimes`).
    ///
    /// [`Lifetimes`]: super::config::Lifetimes
    pub fn on_timeout(&mut self, now: Instant) -> Output {
        let mut out = Output::default();
        let spis: Vec<[u8; 8]> = self.sas.keys().copied().collect();
        for spi in spis {
            let Some(mut sa) = self.sas.remove(&spi) else {
                continue;
            };
            if sa.expired(&self.settings, now) {
                self.forget(&sa, &mut out);
                continue;
            }
            if !sa.on_timeout(&self.settings, now, &mut out) {
                if !sa.quiet {
                    out.event(Event::Failed {
                        peer: sa.peer.clone(),
                        failure: super::event::Failure::Timeout(self.settings.retransmit_tries),
                    });
                }
                self.forget(&sa, &mut out);
                continue;
            }
            let keep = match self.peers.iter().find(|p| p.name == sa.peer) {
                Some(peer) => {
                    lifetimes::tick(&self.settings, peer, &mut sa, &self.sas, now, &mut out)
                }
                None => true,
            };
            if keep {
                self.sas.insert(spi, sa);
            } else {
                self.forget(&sa, &mut out);
            }
        }
        out
    }

    /// Drops every SA without a word to the peers (the daemon stops, after it sent its Deletes
    /// with [`Self::delete_ike_sa`]): each CHILD_SA and IKE SA reported deleted.
    pub fn forget_all(&mut self) -> Output {
        let mut out = Output::default();
        let mut sas: Vec<IkeSa> = self.sas.drain().map(|(_, sa)| sa).collect();
        sas.sort_by_key(IkeSa::our_spi);
        for sa in &sas {
            self.forget(sa, &mut out);
        }
        out
    }

    /// Drops an SA: its CHILD_SAs and itself reported deleted (when it had any), its half-open
    /// index entry gone.
    pub(crate) fn forget(&mut self, sa: &IkeSa, out: &mut Output) {
        self.half_open.retain(|_, spi| *spi != sa.our_spi());
        if sa.quiet {
            // Replaced by a rekey, or a redundant new SA: it owns nothing to report.
            debug_assert!(sa.children.is_empty(), "a quiet sa owns no child sa");
            return;
        }
        for child in &sa.children {
            out.event(Event::ChildSaDeleted {
                peer: sa.peer.clone(),
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        if sa.established.is_some() {
            out.event(Event::IkeSaDeleted {
                peer: sa.peer.clone(),
                spis: sa.spis(),
            });
        }
    }

    /// One received UDP payload: `local` is the address it arrived on, `remote` its source.
    pub fn receive(
        &mut self,
        local: SocketAddr,
        remote: SocketAddr,
        datagram: &[u8],
        now: Instant,
    ) -> Output {
        let mut out = Output::default();
        let bytes = if local.port() == self.settings.natt_port {
            // RFC 3948 §2.2: IKE on port 4500 follows four zero octets; anything else there is
            // ESP (the datapath's) or a NAT keepalive (one 0xff octet, §2.3).
            let Some(([0, 0, 0, 0], rest)) = datagram.split_first_chunk::<4>() else {
                out.drop_reason(remote, "not ike on the nat-t port");
                return out;
            };
            rest
        } else {
            datagram
        };
        let Ok(message) = Message::parse(bytes) else {
            out.drop_reason(remote, "malformed ike message");
            return out;
        };
        let header = message.header;
        if header.exchange == ExchangeType::IKE_SA_INIT
            && !header.is_response()
            && header.spi_r == [0; 8]
        {
            responder::init_request(self, local, remote, &message, bytes, now, &mut out);
            return out;
        }
        let our_spi = if header.from_initiator() {
            header.spi_r
        } else {
            header.spi_i
        };
        let Some(mut sa) = self.sas.remove(&our_spi) else {
            out.drop_reason(remote, "unknown ike sa");
            return out;
        };
        let keep = Self::dispatch(
            &self.settings,
            &self.peers,
            &mut self.sas,
            &mut sa,
            (local, remote),
            (&header, &message, bytes),
            now,
            &mut out,
        );
        if let Some(new) = sa.successor.take() {
            self.sas.insert(new.our_spi(), *new);
        }
        if keep {
            self.sas.insert(our_spi, sa);
        } else {
            // The peer deleted an SA whose rekey crossed its own: the peer's new SA survives.
            if let Some(peer) = self.peers.iter().find(|p| p.name == sa.peer) {
                ike_rekey::settle_to_peer(
                    &self.settings,
                    peer,
                    &mut sa,
                    &mut self.sas,
                    now,
                    &mut out,
                );
            }
            self.forget(&sa, &mut out);
        }
        out
    }

    /// A message for an existing SA; false when the SA is to be forgotten.
    #[allow(
        clippy::too_many_arguments,
        clippy::too_many_lines,
        reason = "the endpoint's parts and the received datagram's, once"
    )]
    fn dispatch(
        settings: &Settings,
        peers: &[PeerConfig],
        sas: &mut HashMap<[u8; 8], IkeSa>,
        sa: &mut IkeSa,
        (local, remote): (SocketAddr, SocketAddr),
        (header, message, bytes): (&Header, &Message, &[u8]),
        now: Instant,
        out: &mut Output,
    ) -> bool {
        // The original initiator must be the other side (§3.1's I flag).
        if header.from_initiator() == (sa.role == Role::Initiator) {
            out.drop_reason(remote, "initiator flag of our own role");
            return true;
        }
        let Some(peer) = peers.iter().find(|p| p.name == sa.peer) else {
            out.drop_reason(remote, "peer removed");
            return false;
        };
        if sa.opener.is_none() {
            if header.exchange == ExchangeType::IKE_SA_INIT
                && header.is_response()
                && sa.state == SaState::InitSent
                && sa
                    .pending
                    .as_ref()
                    .is_some_and(|p| p.message_id == header.message_id)
            {
                sa.received += 1;
                return initiator::init_response(settings, peer, sa, message, bytes, now, out);
            }
            out.drop_reason(remote, "unexpected message before keys");
            return true;
        }
        let Some(Ok(decrypted)) = sa.opener.as_ref().map(|o| o.open(bytes, message)) else {
            out.drop_reason(remote, "sk payload failed to authenticate or parse");
            return true;
        };
        sa.received += 1;
        sa.last_heard = now;
        if header.is_response() {
            let Some(pending) = &sa.pending else {
                out.drop_reason(remote, "response without a request");
                return true;
            };
            if pending.message_id != header.message_id {
                out.drop_reason(remote, "response to another message id");
                return true;
            }
            let kind = pending.kind.clone();
            sa.complete_request(settings, now, out);
            return match kind {
                RequestKind::Auth => {
                    initiator::auth_response(settings, peer, sa, &decrypted, now, out)
                }
                RequestKind::Init | RequestKind::Liveness => true,
                RequestKind::DeleteIke => false,
                RequestKind::CreateChild => {
                    create_child::response(settings, peer, sa, &decrypted, now, out);
                    true
                }
                RequestKind::RekeyIke => {
                    ike_rekey::response(settings, peer, sa, &decrypted, sas, now, out);
                    true
                }
                RequestKind::DeleteChild { inbound_spi } => {
                    informational::child_deleted(sa, inbound_spi, out);
                    true
                }
            };
        }
        // A request: the next expected message ID, or a retransmission of the last one.
        if header.message_id.wrapping_add(1) == sa.expected_request_id
            && let Some((id, datagram)) = &sa.last_response
            && *id == header.message_id
        {
            out.datagrams.push(datagram.clone());
            sa.sent += 1;
            return true;
        }
        if header.message_id != sa.expected_request_id {
            out.drop_reason(remote, "request outside the message id window");
            return true;
        }
        sa.expected_request_id = sa.expected_request_id.wrapping_add(1);
        // A responder follows the initiator to the address it now uses (the switch to 4500).
        sa.local = local;
        sa.remote = remote;
        match header.exchange {
            ExchangeType::IKE_AUTH if sa.state == SaState::HalfOpen => {
                responder::auth_request(settings, peer, sa, &decrypted, now, out, sas)
            }
            ExchangeType::INFORMATIONAL => informational::request(settings, sa, &decrypted, out),
            ExchangeType::CREATE_CHILD_SA if sa.state == SaState::Established && !sa.quiet => {
                create_child::request(settings, peer, sa, &decrypted, sas, now, out);
                true
            }
            ExchangeType::CREATE_CHILD_SA => {
                // §2.25.2: the IKE SA is being deleted or replaced.
                let busy = Notify::new(NotifyType::TEMPORARY_FAILURE, Vec::new());
                let id = header.message_id;
                sa.respond(
                    settings,
                    header.exchange,
                    id,
                    vec![Payload::Notify(busy)],
                    out,
                );
                true
            }
            _ => {
                out.drop_reason(remote, "unexpected exchange");
                true
            }
        }
    }
}
