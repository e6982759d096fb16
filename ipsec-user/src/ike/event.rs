//! What the I/O-free core returns: datagrams to send and events for the daemon (install or
//! remove SAs, log failures), like the ESP engine core's results.
//!
//! Contract: an [`Output`] is everything one call produced, in order. Datagrams are complete
//! UDP payloads (with the 4-octet non-ESP marker when sent from or to the NAT-T port, RFC 3948
//! §2.2). Events carry keys only in [`ChildSa`], whose `Debug` is redacted; no event prints a
//! key.

use std::net::SocketAddr;

use zeroize::Zeroizing;

use crate::model::Mode;

use super::payload::NotifyType;
use super::proposal::{EspSuite, IkeSuite};
use super::selector::TrafficSelector;

/// One UDP datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Datagram {
    /// Our address and port to send from (500 or 4500).
    pub local: SocketAddr,
    /// The peer's address and port.
    pub remote: SocketAddr,
    /// The UDP payload.
    pub bytes: Vec<u8>,
}

/// The keys of one direction of a CHILD_SA.
pub struct DirectionKeys {
    /// The encryption key (GCM: with its 4-octet salt).
    pub encryption: Zeroizing<Vec<u8>>,
    /// The integrity key (empty for GCM).
    pub integrity: Zeroizing<Vec<u8>>,
}

/// A negotiated CHILD_SA (an ESP SA pair) to install.
pub struct ChildSa {
    /// The configured peer.
    pub peer: String,
    /// The IKE SA it belongs to (SPIi, SPIr).
    pub ike_spis: ([u8; 8], [u8; 8]),
    /// The SPI we chose: ESP we receive carries it.
    pub inbound_spi: u32,
    /// The SPI the peer chose: ESP we send carries it.
    pub outbound_spi: u32,
    pub suite: EspSuite,
    pub inbound: DirectionKeys,
    pub outbound: DirectionKeys,
    pub mode: Mode,
    /// Our side's and the peer's traffic, as narrowed by the exchange.
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
    /// The IKE endpoints: with `encapsulated`, ESP goes in UDP between these (port 4500).
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// NAT detected (or faked by a peer that wants UDP encapsulation): ESP in UDP, RFC 3948.
    pub encapsulated: bool,
    /// The inbound SPI of the CHILD_SA this one replaces (a rekey): install this one first,
    /// then remove that one when its deletion is reported.
    pub rekeys: Option<u32>,
    /// When ESP we send moves to this CHILD_SA (make before break).
    pub send_from: SendFrom,
}

/// When ESP we send moves to a new CHILD_SA (RFC 7296 §2.8: make before break).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendFrom {
    /// At once: the peer receives on it already (it answered our request, or this is the IKE
    /// SA's first CHILD_SA).
    Now,
    /// Once the CHILD_SA it rekeys (`rekeys`) is deleted: the peer started the rekey and
    /// installs this one before it deletes the old one (§2.8). ESP arriving on this one proves
    /// the same earlier. Until then ESP we send stays on the old one, which the peer still
    /// receives on.
    AfterRekeyed,
    /// Never: the redundant CHILD_SA of a simultaneous rekey (§2.8.1), deleted at once.
    Never,
}

impl std::fmt::Debug for ChildSa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSa")
            .field("peer", &self.peer)
            .field("inbound_spi", &format_args!("{:#010x}", self.inbound_spi))
            .field("outbound_spi", &format_args!("{:#010x}", self.outbound_spi))
            .field("suite", &self.suite)
            .field("keys", &"<redacted>")
            .field("mode", &self.mode)
            .field("local_ts", &self.local_ts)
            .field("remote_ts", &self.remote_ts)
            .field("encapsulated", &self.encapsulated)
            .field("rekeys", &self.rekeys)
            .field("send_from", &self.send_from)
            .finish_non_exhaustive()
    }
}

/// Why an exchange failed; each is logged by the daemon with the peer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The peer's AUTH did not verify with our PSK (or its identity was not the configured one).
    #[error("authentication failed: the peer's auth payload does not verify with the psk")]
    PeerAuthentication,
    /// The peer refused our AUTH (it sent AUTHENTICATION_FAILED).
    #[error("authentication failed: the peer refused our auth (AUTHENTICATION_FAILED)")]
    AuthenticationRefused,
    /// No IKE proposal in common (sent or received NO_PROPOSAL_CHOSEN).
    #[error("no ike proposal chosen")]
    NoIkeProposal,
    /// No ESP proposal in common: the IKE SA stands without a CHILD_SA.
    #[error("no esp proposal chosen")]
    NoEspProposal,
    /// The traffic selectors do not overlap (TS_UNACCEPTABLE).
    #[error("traffic selectors unacceptable")]
    TsUnacceptable,
    /// Transport mode asked for by one side and refused by the other.
    #[error("mode mismatch: {0}")]
    Mode(&'static str),
    /// The peer answered with another error notify.
    #[error("peer error {}", .0.name())]
    PeerError(NotifyType),
    /// The peer broke the protocol (a proposal we did not offer, a bad KE, ...).
    #[error("protocol violation: {0}")]
    Protocol(&'static str),
    /// No answer after every retransmission.
    #[error("no response after {0} retransmissions")]
    Timeout(u32),
}

/// Something the daemon acts on or logs.
#[derive(Debug)]
pub enum Event {
    /// An IKE SA finished IKE_AUTH.
    IkeSaEstablished {
        peer: String,
        spis: ([u8; 8], [u8; 8]),
        suite: IkeSuite,
        initiator: bool,
        encapsulated: bool,
    },
    /// A CHILD_SA to install.
    ChildSaEstablished(Box<ChildSa>),
    /// A CHILD_SA to remove (deleted by either side, or with its IKE SA).
    ChildSaDeleted {
        peer: String,
        inbound_spi: u32,
        outbound_spi: u32,
    },
    /// An IKE SA is gone (its CHILD_SAs were reported deleted just before).
    IkeSaDeleted {
        peer: String,
        spis: ([u8; 8], [u8; 8]),
    },
    /// An exchange with a configured peer failed.
    Failed { peer: String, failure: Failure },
    /// A datagram was dropped without an answer (not IKE, unknown peer or SA, failed integrity,
    /// replayed or out-of-window message ID): count it, log it at debug level.
    Dropped {
        remote: SocketAddr,
        reason: &'static str,
    },
    /// IKE_SA_INIT was answered with a COOKIE (§2.6): half-open SAs are over the bound.
    CookieSent { remote: SocketAddr },
    /// Both sides rekeyed the same SA at once (RFC 7296 §2.8.1 for a CHILD_SA, §2.8.2 for the
    /// IKE SA) and our own exchange was just answered: the exchange with the lowest nonce made
    /// the redundant SA. `ours_survives` tells whether the SA our exchange made is the one both
    /// sides keep. Nothing to act on (the deletions follow as usual): log it.
    RekeyCollision {
        peer: String,
        /// The IKE SA collided (else a CHILD_SA).
        ike: bool,
        ours_survives: bool,
    },
    /// The IKE SA was rekeyed (§2.18): its CHILD_SAs now belong to the SA with `new_spis`
    /// (they stay installed, with the same SPIs and keys). The old SA goes away without an
    /// `IkeSaDeleted`.
    IkeSaRekeyed {
        peer: String,
        old_spis: ([u8; 8], [u8; 8]),
        new_spis: ([u8; 8], [u8; 8]),
    },
}

/// Everything one call produced.
#[derive(Debug, Default)]
pub struct Output {
    pub datagrams: Vec<Datagram>,
    pub events: Vec<Event>,
}

impl Output {
    pub(crate) fn event(&mut self, event: Event) {
        self.events.push(event);
    }

    pub(crate) fn drop_reason(&mut self, remote: SocketAddr, reason: &'static str) {
        self.events.push(Event::Dropped { remote, reason });
    }
}
