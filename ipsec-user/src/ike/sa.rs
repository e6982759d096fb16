//! One IKE SA's state: role, SPIs, addresses, the IKE_SA_INIT material AUTH signs, keys, the
//! message-ID windows (size 1, §2.3), the one outstanding request and its retransmission
//! schedule, and the CHILD_SAs it owns.
//!
//! Contract: requests go out through [`IkeSa::send_request`], which queues while one is
//! outstanding (window of 1) and schedules the retransmission; answers through
//! [`IkeSa::respond`], which keeps the answer for a retransmitted request (§2.1). Both seal with
//! the SA's keys once it has them.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::config::{Lifetimes, Settings};
use super::create_child::{ChildCollision, RekeyOffer};
use super::dh::KeyShare;
use super::event::{Datagram, Output};
use super::ike_rekey::{IkeCollision, IkeRekeyOffer};
use super::keys::IkeKeys;
use super::lifetimes;
use super::message::{ExchangeType, Header, Message, flags};
use super::payload::Payload;
use super::proposal::IkeSuite;
use super::selector::TrafficSelector;
use super::sk::{SkOpener, SkSealer};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    Initiator,
    Responder,
}

/// Where the IKE SA stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaState {
    /// Initiator: IKE_SA_INIT sent.
    InitSent,
    /// Responder: IKE_SA_INIT answered, waiting for IKE_AUTH (half-open, §2.6).
    HalfOpen,
    /// Initiator: IKE_AUTH sent.
    AuthSent,
    /// IKE_AUTH done.
    Established,
    /// Our delete of the IKE SA is outstanding.
    Deleting,
}

/// What an outstanding request was, to act on its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestKind {
    Init,
    Auth,
    DeleteIke,
    DeleteChild {
        inbound_spi: u32,
    },
    Liveness,
    CreateChild,
    /// CREATE_CHILD_SA rekeying this IKE SA (§1.3.2).
    RekeyIke,
}

/// The request awaiting its response.
pub(crate) struct Pending {
    pub message_id: u32,
    pub kind: RequestKind,
    /// The datagram as sent, for retransmission.
    datagram: Datagram,
    pub retransmits: u32,
    pub next_at: Instant,
}

/// A CHILD_SA of this IKE SA, with its timers.
#[derive(Clone, Debug)]
pub(crate) struct Child {
    pub inbound_spi: u32,
    pub outbound_spi: u32,
    /// When to start rekeying it (lifetime less the margin and a jitter).
    pub rekey_at: Instant,
    /// When it dies if not rekeyed by then.
    pub expire_at: Instant,
    /// A successor exists or its Delete is under way: no more rekeys.
    pub retiring: bool,
}

impl Child {
    /// A new CHILD_SA, its rekey scheduled from `lifetimes` (with jitter).
    pub(crate) fn new(
        inbound_spi: u32,
        outbound_spi: u32,
        lifetimes: &Lifetimes,
        now: Instant,
    ) -> Self {
        let (rekey_at, expire_at) = lifetimes::schedule(lifetimes.child_lifetime, lifetimes, now);
        Self {
            inbound_spi,
            outbound_spi,
            rekey_at,
            expire_at,
            retiring: false,
        }
    }
}

/// What the initiator offered for the first CHILD_SA (checked against the answer).
pub(crate) struct ChildOffer {
    pub spi: u32,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
}

pub(crate) struct IkeSa {
    pub peer: String,
    pub role: Role,
    pub state: SaState,
    pub spi_i: [u8; 8],
    pub spi_r: [u8; 8],
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// NAT detected (or a peer that wants UDP encapsulation): port 4500 after IKE_SA_INIT.
    pub nat: bool,
    pub share: Option<KeyShare>,
    pub ni: Vec<u8>,
    pub nr: Vec<u8>,
    /// The initiator's IKE_SA_INIT request and the responder's answer, as sent (AUTH signs
    /// them, §2.15).
    pub init_request: Vec<u8>,
    pub init_response: Vec<u8>,
    /// The COOKIE the responder asked for, echoed in the retried IKE_SA_INIT.
    pub cookie: Option<Vec<u8>>,
    /// IKE_SA_INIT retries after COOKIE or INVALID_KE_PAYLOAD (bounded against loops).
    pub init_retries: u8,
    pub suite: Option<IkeSuite>,
    pub keys: Option<IkeKeys>,
    pub sealer: Option<SkSealer>,
    pub opener: Option<SkOpener>,
    pub next_request_id: u32,
    pub expected_request_id: u32,
    /// The last response sent, by message ID, for a retransmitted request.
    pub last_response: Option<(u32, Datagram)>,
    pub pending: Option<Pending>,
    queue: VecDeque<(ExchangeType, Vec<Payload>, RequestKind)>,
    pub children: Vec<Child>,
    pub child_offer: Option<ChildOffer>,
    /// Our outstanding CREATE_CHILD_SA offers, in the order sent (window of one: answered in
    /// that order).
    pub rekey: VecDeque<RekeyOffer>,
    /// Our outstanding rekey of this IKE SA.
    pub ike_rekey: Option<IkeRekeyOffer>,
    /// CHILD_SAs the peer rekeyed while we were rekeying them too (§2.8.1), until our own
    /// exchange settles which new one stays.
    pub child_collisions: Vec<ChildCollision>,
    /// The peer's rekey of this IKE SA that crossed ours (§2.8.2).
    pub ike_collision: Option<IkeCollision>,
    /// A new IKE SA made by an exchange on this one, for the endpoint to file under its SPI.
    pub successor: Option<Box<IkeSa>>,
    /// Replaced by a rekey (or a redundant new SA): dropped without events.
    pub quiet: bool,
    /// When this SA is rekeyed, and when it dies unrekeyed (established SAs).
    pub rekey_at: Option<Instant>,
    pub expire_at: Option<Instant>,
    /// The last authenticated message from the peer (or ESP it sent, when the daemon says so):
    /// dead peer detection counts from here.
    pub last_heard: Instant,
    pub created: Instant,
    pub established: Option<Instant>,
    /// Messages received and sent on this SA (retransmissions included).
    pub received: u64,
    pub sent: u64,
}

impl IkeSa {
    pub(crate) fn new(
        peer: String,
        role: Role,
        local: SocketAddr,
        remote: SocketAddr,
        now: Instant,
    ) -> Self {
        Self {
            peer,
            role,
            state: if role == Role::Initiator {
                SaState::InitSent
            } else {
                SaState::HalfOpen
            },
            spi_i: [0; 8],
            spi_r: [0; 8],
            local,
            remote,
            nat: false,
            share: None,
            ni: Vec::new(),
            nr: Vec::new(),
            init_request: Vec::new(),
            init_response: Vec::new(),
            cookie: None,
            init_retries: 0,
            suite: None,
            keys: None,
            sealer: None,
            opener: None,
            next_request_id: 0,
            expected_request_id: 0,
            last_response: None,
            pending: None,
            queue: VecDeque::new(),
            children: Vec::new(),
            child_offer: None,
            rekey: VecDeque::new(),
            ike_rekey: None,
            child_collisions: Vec::new(),
            ike_collision: None,
            successor: None,
            quiet: false,
            rekey_at: None,
            expire_at: None,
            last_heard: now,
            created: now,
            established: None,
            received: 0,
            sent: 0,
        }
    }

    /// Our SPI: the key of this SA in the endpoint's table.
    pub(crate) fn our_spi(&self) -> [u8; 8] {
        match self.role {
            Role::Initiator => self.spi_i,
            Role::Responder => self.spi_r,
        }
    }

    pub(crate) fn spis(&self) -> ([u8; 8], [u8; 8]) {
        (self.spi_i, self.spi_r)
    }

    pub(crate) fn header(&self, exchange: ExchangeType, message_id: u32, response: bool) -> Header {
        let mut f = 0;
        if self.role == Role::Initiator {
            f |= flags::INITIATOR;
        }
        if response {
            f |= flags::RESPONSE;
        }
        Header {
            spi_i: self.spi_i,
            spi_r: self.spi_r,
            exchange,
            flags: f,
            message_id,
        }
    }

    /// The datagram of `bytes` from our current address to the peer's, with the non-ESP marker
    /// on the NAT-T port.
    pub(crate) fn datagram(&self, settings: &Settings, bytes: Vec<u8>) -> Datagram {
        datagram(settings, self.local, self.remote, bytes)
    }

    /// The message as bytes: sealed in SK once the SA has keys, plain before.
    fn encode(&mut self, header: &Header, payloads: Vec<Payload>) -> Option<Vec<u8>> {
        match &mut self.sealer {
            Some(sealer) => sealer.seal(header, &payloads).ok(),
            None => Message {
                header: *header,
                payloads,
            }
            .emit()
            .ok(),
        }
    }

    /// Sends a request, or queues it behind the outstanding one.
    pub(crate) fn send_request(
        &mut self,
        settings: &Settings,
        exchange: ExchangeType,
        payloads: Vec<Payload>,
        kind: RequestKind,
        now: Instant,
        out: &mut Output,
    ) {
        if self.pending.is_some() {
            self.queue.push_back((exchange, payloads, kind));
            return;
        }
        let message_id = self.next_request_id;
        let header = self.header(exchange, message_id, false);
        let Some(bytes) = self.encode(&header, payloads) else {
            return;
        };
        if kind == RequestKind::Init {
            self.init_request.clone_from(&bytes);
        }
        self.next_request_id = self.next_request_id.wrapping_add(1);
        let datagram = self.datagram(settings, bytes);
        out.datagrams.push(datagram.clone());
        self.sent += 1;
        self.pending = Some(Pending {
            message_id,
            kind,
            datagram,
            retransmits: 0,
            next_at: now + settings.retransmit_base,
        });
    }

    /// Sends an empty INFORMATIONAL request (liveness, §1.4).
    pub(crate) fn send_liveness(&mut self, settings: &Settings, now: Instant, out: &mut Output) {
        self.send_request(
            settings,
            ExchangeType::INFORMATIONAL,
            Vec::new(),
            RequestKind::Liveness,
            now,
            out,
        );
    }

    /// Sends a Delete of this IKE SA as a request (the SA goes when it is answered).
    pub(crate) fn send_delete(&mut self, settings: &Settings, now: Instant, out: &mut Output) {
        self.send_request(
            settings,
            ExchangeType::INFORMATIONAL,
            vec![ike_delete()],
            RequestKind::DeleteIke,
            now,
            out,
        );
    }

    /// Sends a Delete of this IKE SA once, without waiting for the answer (the SA is being
    /// dropped: peer removed, lifetime over). Nothing before the SA has keys.
    pub(crate) fn notify_delete(&mut self, settings: &Settings, out: &mut Output) {
        let header = self.header(ExchangeType::INFORMATIONAL, self.next_request_id, false);
        let delete = [ike_delete()];
        if let Some(sealer) = &mut self.sealer
            && let Ok(bytes) = sealer.seal(&header, &delete)
        {
            out.datagrams.push(self.datagram(settings, bytes));
            self.sent += 1;
        }
    }

    /// Replaces the outstanding IKE_SA_INIT request (after COOKIE or INVALID_KE_PAYLOAD) with
    /// a new one under message ID 0.
    pub(crate) fn restart_init(
        &mut self,
        settings: &Settings,
        payloads: Vec<Payload>,
        now: Instant,
        out: &mut Output,
    ) {
        self.pending = None;
        self.next_request_id = 0;
        self.send_request(
            settings,
            ExchangeType::IKE_SA_INIT,
            payloads,
            RequestKind::Init,
            now,
            out,
        );
    }

    /// The response to the outstanding request arrived: clears it and sends the next queued
    /// request, if any.
    pub(crate) fn complete_request(&mut self, settings: &Settings, now: Instant, out: &mut Output) {
        self.pending = None;
        if let Some((exchange, payloads, kind)) = self.queue.pop_front() {
            self.send_request(settings, exchange, payloads, kind, now, out);
        }
    }

    /// Answers request `message_id` and keeps the answer for a retransmitted request.
    pub(crate) fn respond(
        &mut self,
        settings: &Settings,
        exchange: ExchangeType,
        message_id: u32,
        payloads: Vec<Payload>,
        out: &mut Output,
    ) {
        let header = self.header(exchange, message_id, true);
        let Some(bytes) = self.encode(&header, payloads) else {
            return;
        };
        let datagram = self.datagram(settings, bytes);
        out.datagrams.push(datagram.clone());
        self.sent += 1;
        self.last_response = Some((message_id, datagram));
    }

    /// Retransmits the outstanding request when due (§2.1: the timeout doubles each time).
    /// False when every retransmission is spent: the SA is dead.
    pub(crate) fn on_timeout(
        &mut self,
        settings: &Settings,
        now: Instant,
        out: &mut Output,
    ) -> bool {
        let Some(pending) = &mut self.pending else {
            return true;
        };
        if now < pending.next_at {
            return true;
        }
        if pending.retransmits >= settings.retransmit_tries {
            return false;
        }
        pending.retransmits += 1;
        let factor = 1u32 << pending.retransmits.min(16);
        pending.next_at = now + settings.retransmit_base.saturating_mul(factor);
        out.datagrams.push(pending.datagram.clone());
        self.sent += 1;
        true
    }

    /// When this SA next needs [`Self::on_timeout`] (or expires half-open, or one of its
    /// lifetime timers is due: `lifetimes`).
    pub(crate) fn deadline(
        &self,
        settings: &Settings,
        peer: Option<&Lifetimes>,
    ) -> Option<Instant> {
        let retransmit = self.pending.as_ref().map(|p| p.next_at);
        let expiry =
            (self.state == SaState::HalfOpen).then(|| self.created + settings.half_open_timeout);
        let timers = peer.and_then(|l| lifetimes::deadline(self, l));
        [retransmit, expiry, timers].into_iter().flatten().min()
    }

    /// True while a request is outstanding (and so the queue may hold more).
    pub(crate) fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// True when a Delete of the CHILD_SA we receive on with `inbound_spi` is outstanding or
    /// queued (§2.25.1: a rekey of it is then answered TEMPORARY_FAILURE).
    pub(crate) fn deleting_child(&self, inbound_spi: u32) -> bool {
        let kind = RequestKind::DeleteChild { inbound_spi };
        self.pending.as_ref().is_some_and(|p| p.kind == kind)
            || self.queue.iter().any(|(_, _, k)| *k == kind)
    }

    /// True when a CHILD_SA exchange of ours (create, rekey, delete) is outstanding or queued
    /// (§2.25.2: a rekey of the IKE SA is then answered TEMPORARY_FAILURE).
    pub(crate) fn child_exchange_pending(&self) -> bool {
        let child = |k: &RequestKind| {
            matches!(
                k,
                RequestKind::CreateChild | RequestKind::DeleteChild { .. }
            )
        };
        self.pending.as_ref().is_some_and(|p| child(&p.kind))
            || self.queue.iter().any(|(_, _, k)| child(k))
    }

    /// Half-open for longer than allowed.
    pub(crate) fn expired(&self, settings: &Settings, now: Instant) -> bool {
        self.state == SaState::HalfOpen
            && now.saturating_duration_since(self.created) >= settings.half_open_timeout
    }
}

/// The Delete payload of an IKE SA (§3.11: no SPIs).
fn ike_delete() -> Payload {
    Payload::Delete(super::payload::Delete {
        protocol: super::payload::ProtocolId::IKE,
        spis: Vec::new(),
    })
}

/// A datagram from `local` to `remote`, with the non-ESP marker (four zero octets, RFC 3948
/// §2.2) when either end is the NAT-T port.
pub(crate) fn datagram(
    settings: &Settings,
    local: SocketAddr,
    remote: SocketAddr,
    bytes: Vec<u8>,
) -> Datagram {
    let bytes = if local.port() == settings.natt_port || remote.port() == settings.natt_port {
        let mut marked = Vec::with_capacity(bytes.len() + 4);
        marked.extend_from_slice(&[0; 4]);
        marked.extend_from_slice(&bytes);
        marked
    } else {
        bytes
    };
    Datagram {
        local,
        remote,
        bytes,
    }
}
