//! CREATE_CHILD_SA (RFC 7296 §1.3): rekeying a CHILD_SA (§1.3.3, §2.8) or adding one (§1.3.1),
//! from either side of the IKE SA, with optional PFS (a KE payload, §1.3.1 and §2.17).
//!
//! Contract:
//! - [`start`] offers a new CHILD_SA replacing the one we receive on with `old_inbound`
//!   (N(REKEY_SA) names it): our ESP proposals (with their DH groups for PFS: then a KE of the
//!   first), a fresh nonce, the configured traffic selectors and mode.
//! - [`request`] answers the peer's offer: the CHILD_SA it rekeys must exist (else
//!   CHILD_SA_NOT_FOUND); proposals in our order; a KE of another group than the chosen one is
//!   answered INVALID_KE_PAYLOAD; traffic selectors narrowed (§2.9). An SA payload of IKE
//!   proposals is a rekey of the IKE SA (`ike_rekey`).
//! - §2.25: a rekey of a CHILD_SA we are deleting, or any CHILD_SA request while we rekey the
//!   IKE SA, is answered TEMPORARY_FAILURE. Our rekey answered TEMPORARY_FAILURE is retried
//!   after a short random delay; answered CHILD_SA_NOT_FOUND, the peer no longer has the
//!   CHILD_SA (its Delete crossed our rekey), so we remove it too. Neither is a failure to log.
//! - The new CHILD_SA is reported with `rekeys` naming the old one; the old one stays installed
//!   until the side that started the rekey deletes it (§2.8: make before break), which [`response`]
//!   does as soon as the new one is up. The side that started it sends on the new one at once
//!   ([`SendFrom::Now`]: the peer installed it before answering); the side that answered keeps
//!   sending on the old one until it is deleted ([`SendFrom::AfterRekeyed`]), since the
//!   initiator installs the new one only when it reads the answer. KEYMAT is prf+(SK_d, [g^ir |] Ni | Nr) with this
//!   exchange's nonces, i2r meaning from this exchange's initiator (§2.17).
//! - Simultaneous rekeys of one CHILD_SA (§2.8.1): each side answers the other's request as
//!   usual and notes the collision (the new CHILD_SA and the lower of that exchange's nonces).
//!   When our own exchange is answered, the exchange with the lowest of the four nonces made the
//!   redundant CHILD_SA: if that is ours, we install it (the peer may already send on it: no
//!   gap; we never send on it, [`SendFrom::Never`]) and delete it at once, and leave the old
//!   one to the peer; otherwise ours survives and
//!   we delete the old one, and the peer deletes its redundant one. Both sides end with the
//!   survivor only. Either way [`Event::RekeyCollision`] says which.

use std::collections::HashMap;
use std::time::Instant;

use crate::model::Mode;

use super::config::{PeerConfig, Settings};
use super::dh::{DhGroup, KeyShare};
use super::event::{ChildSa, DirectionKeys, Event, Failure, Output, SendFrom};
use super::initiator::{error_notify, find_notify, nonce};
use super::keys::{ChildKeys, KeyLengths};
use super::message::{ExchangeType, Message};
use super::payload::{Delete, Notify, NotifyType, Payload, ProtocolId};
use super::proposal::{self, EspSuite, encryption_key_len, integrity_key_len};
use super::responder::unused_child_spi;
use super::sa::{Child, IkeSa, RequestKind};
use super::selector::{self, TrafficSelector};

/// The peer's rekey of a CHILD_SA we were rekeying too (§2.8.1).
pub(crate) struct ChildCollision {
    /// Our inbound SPI of the CHILD_SA both rekeyed.
    pub old_inbound: u32,
    /// The lower nonce of the peer's exchange.
    pub lowest: Vec<u8>,
}

/// What we offered in an outstanding CREATE_CHILD_SA.
pub(crate) struct RekeyOffer {
    pub old_inbound: Option<u32>,
    pub spi: u32,
    pub ni: Vec<u8>,
    pub share: Option<KeyShare>,
    pub local_ts: Vec<TrafficSelector>,
    pub remote_ts: Vec<TrafficSelector>,
}

/// Sends our CREATE_CHILD_SA request rekeying the CHILD_SA we receive on with `old_inbound`.
pub(crate) fn start(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    old_inbound: u32,
    others: &HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    let spi = unused_child_spi(sa, others);
    let ni = nonce();
    let group = proposal::first_group(&peer.esp_proposals);
    let share = group.map(KeyShare::generate);
    let mut payloads = vec![Payload::Notify(Notify {
        protocol: ProtocolId::ESP,
        spi: old_inbound.to_be_bytes().to_vec(),
        kind: NotifyType::REKEY_SA,
        data: Vec::new(),
    })];
    if peer.mode == Mode::Transport {
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::USE_TRANSPORT_MODE,
            Vec::new(),
        )));
    }
    payloads.push(Payload::Sa(proposal::to_wire(
        &peer.esp_proposals,
        &spi.to_be_bytes(),
        true,
    )));
    payloads.push(Payload::Nonce(ni.clone()));
    if let Some(share) = &share {
        payloads.push(Payload::Ke {
            group: share.group().id(),
            data: share.public().to_vec(),
        });
    }
    payloads.push(Payload::TsI(peer.local_ts.clone()));
    payloads.push(Payload::TsR(peer.remote_ts.clone()));
    sa.rekey.push_back(RekeyOffer {
        old_inbound: Some(old_inbound),
        spi,
        ni,
        share,
        local_ts: peer.local_ts.clone(),
        remote_ts: peer.remote_ts.clone(),
    });
    sa.send_request(
        settings,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        RequestKind::CreateChild,
        now,
        out,
    );
}

/// The payloads of a CREATE_CHILD_SA message that matter here.
#[derive(Default)]
pub(crate) struct Offer<'a> {
    pub sa: Option<&'a Vec<super::sa_payload::Proposal>>,
    pub nonce: Option<&'a Vec<u8>>,
    pub ke: Option<(u16, &'a Vec<u8>)>,
    pub tsi: Option<&'a Vec<TrafficSelector>>,
    pub tsr: Option<&'a Vec<TrafficSelector>>,
}

pub(crate) fn gather(payloads: &[Payload]) -> Offer<'_> {
    let mut offer = Offer::default();
    for p in payloads {
        match p {
            Payload::Sa(s) => offer.sa = Some(s),
            Payload::Nonce(n) => offer.nonce = Some(n),
            Payload::Ke { group, data } => offer.ke = Some((*group, data)),
            Payload::TsI(t) => offer.tsi = Some(t),
            Payload::TsR(t) => offer.tsr = Some(t),
            _ => {}
        }
    }
    offer
}

/// The keys of a CREATE_CHILD_SA's CHILD_SA as (i2r, r2i).
fn keys(
    sa: &IkeSa,
    suite: EspSuite,
    shared: Option<&[u8]>,
    ni: &[u8],
    nr: &[u8],
) -> Option<(DirectionKeys, DirectionKeys)> {
    let ike_keys = sa.keys.as_ref()?;
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let k = ChildKeys::derive(lengths, &ike_keys.sk_d, shared, ni, nr);
    Some((
        DirectionKeys {
            encryption: k.i2r_encryption,
            integrity: k.i2r_integrity,
        },
        DirectionKeys {
            encryption: k.r2i_encryption,
            integrity: k.r2i_integrity,
        },
    ))
}

fn refuse(settings: &Settings, sa: &mut IkeSa, id: u32, kind: NotifyType, out: &mut Output) {
    sa.respond(
        settings,
        ExchangeType::CREATE_CHILD_SA,
        id,
        vec![Payload::Notify(Notify::new(kind, Vec::new()))],
        out,
    );
}

/// A responder's answer for a chosen CHILD_SA: USE_TRANSPORT_MODE when transport, and the SA
/// payload of the chosen proposal under our new SPI.
pub(crate) fn chosen_child(
    mode: Mode,
    number: u8,
    inbound_spi: u32,
    chosen: &proposal::Chosen,
) -> Vec<Payload> {
    let mut answer = Vec::new();
    if mode == Mode::Transport {
        answer.push(Payload::Notify(Notify::new(
            NotifyType::USE_TRANSPORT_MODE,
            Vec::new(),
        )));
    }
    answer.push(Payload::Sa(vec![proposal::reply(
        number,
        ProtocolId::ESP,
        &inbound_spi.to_be_bytes(),
        chosen,
    )]));
    answer
}

/// The peer's CREATE_CHILD_SA request.
#[allow(
    clippy::too_many_lines,
    reason = "one exchange step, in the RFC's order"
)]
pub(crate) fn request(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    others: &HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    let id = message.header.message_id;
    let payloads = &message.payloads;
    let offer = gather(payloads);
    if offer
        .sa
        .and_then(|s| s.first())
        .is_some_and(|p| p.protocol == ProtocolId::IKE)
    {
        super::ike_rekey::request(settings, peer, sa, message, others, now, out);
        return;
    }
    let (Some(offered), Some(ni), Some(tsi), Some(tsr)) =
        (offer.sa, offer.nonce, offer.tsi, offer.tsr)
    else {
        refuse(settings, sa, id, NotifyType::INVALID_SYNTAX, out);
        return;
    };
    if sa.ike_rekey.is_some() {
        // §2.25.2: no CHILD_SA business while the IKE SA is being rekeyed.
        refuse(settings, sa, id, NotifyType::TEMPORARY_FAILURE, out);
        return;
    }
    let mut old = None;
    if let Some(n) = find_notify(payloads, NotifyType::REKEY_SA) {
        let outbound = <[u8; 4]>::try_from(n.spi.as_slice())
            .ok()
            .map(u32::from_be_bytes);
        let Some(child) = sa
            .children
            .iter()
            .find(|c| Some(c.outbound_spi) == outbound)
        else {
            refuse(settings, sa, id, NotifyType::CHILD_SA_NOT_FOUND, out);
            return;
        };
        if sa.deleting_child(child.inbound_spi) {
            // §2.25.1: it is being closed.
            refuse(settings, sa, id, NotifyType::TEMPORARY_FAILURE, out);
            return;
        }
        old = Some(child.inbound_spi);
    }
    let failed = |sa: &IkeSa, failure, out: &mut Output| {
        out.event(Event::Failed {
            peer: sa.peer.clone(),
            failure,
        });
    };
    let Some((number, chosen)) = proposal::select(&peer.esp_proposals, offered, offer.ke.is_some())
    else {
        refuse(settings, sa, id, NotifyType::NO_PROPOSAL_CHOSEN, out);
        failed(sa, Failure::NoEspProposal, out);
        return;
    };
    let Some(suite) = chosen.esp() else { return };
    let outbound_spi = offered
        .iter()
        .find(|p| p.number == number)
        .and_then(|p| <[u8; 4]>::try_from(p.spi.as_slice()).ok())
        .map(u32::from_be_bytes);
    let Some(outbound_spi) = outbound_spi else {
        refuse(settings, sa, id, NotifyType::INVALID_SYNTAX, out);
        return;
    };
    let (share, shared) = match (suite.group, offer.ke) {
        (None, _) => (None, None),
        (Some(group), Some((ke_group, data))) if ke_group == group.id() => {
            let share = KeyShare::generate(group);
            let Ok(shared) = share.agree(data) else {
                refuse(settings, sa, id, NotifyType::INVALID_SYNTAX, out);
                return;
            };
            (Some(share), Some(shared))
        }
        (Some(group), _) => {
            let ke = Notify::new(
                NotifyType::INVALID_KE_PAYLOAD,
                group.id().to_be_bytes().to_vec(),
            );
            let answer = vec![Payload::Notify(ke)];
            sa.respond(settings, ExchangeType::CREATE_CHILD_SA, id, answer, out);
            return;
        }
    };
    let remote_ts = selector::narrow(tsi, &peer.remote_ts);
    let local_ts = selector::narrow(tsr, &peer.local_ts);
    if remote_ts.is_empty() || local_ts.is_empty() {
        refuse(settings, sa, id, NotifyType::TS_UNACCEPTABLE, out);
        failed(sa, Failure::TsUnacceptable, out);
        return;
    }
    let transport = find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some();
    let mode = if peer.mode == Mode::Transport && transport {
        Mode::Transport
    } else if peer.mode == Mode::Tunnel {
        Mode::Tunnel
    } else {
        refuse(settings, sa, id, NotifyType::NO_PROPOSAL_CHOSEN, out);
        failed(
            sa,
            Failure::Mode("the peer asked for tunnel mode, we want transport"),
            out,
        );
        return;
    };
    let nr = nonce();
    let Some((i2r, r2i)) = keys(sa, suite, shared.as_deref().map(|s| &s[..]), ni, &nr) else {
        return;
    };
    let inbound_spi = unused_child_spi(sa, others);
    let mut answer = chosen_child(mode, number, inbound_spi, &chosen);
    answer.push(Payload::Nonce(nr.clone()));
    if let Some(share) = &share {
        answer.push(Payload::Ke {
            group: share.group().id(),
            data: share.public().to_vec(),
        });
    }
    answer.push(Payload::TsI(remote_ts.clone()));
    answer.push(Payload::TsR(local_ts.clone()));
    sa.respond(settings, ExchangeType::CREATE_CHILD_SA, id, answer, out);
    if let Some(old) = old {
        // The peer deletes the old CHILD_SA (or, after a collision, whoever wins does).
        retire(sa, old);
        if sa.rekey.iter().any(|o| o.old_inbound == Some(old)) {
            sa.child_collisions.push(ChildCollision {
                old_inbound: old,
                lowest: super::ike_rekey::lowest(ni, &nr).to_vec(),
            });
        }
    }
    sa.children
        .push(Child::new(inbound_spi, outbound_spi, &peer.lifetimes, now));
    out.event(Event::ChildSaEstablished(Box::new(ChildSa {
        peer: sa.peer.clone(),
        ike_spis: sa.spis(),
        inbound_spi,
        outbound_spi,
        suite,
        inbound: i2r,
        outbound: r2i,
        mode,
        local_ts,
        remote_ts,
        local: sa.local,
        remote: sa.remote,
        encapsulated: sa.nat,
        rekeys: old,
        // The peer installs the new CHILD_SA when it reads this answer, and deletes the old one
        // after: until then it may not receive on the new one yet.
        send_from: if old.is_some() {
            SendFrom::AfterRekeyed
        } else {
            SendFrom::Now
        },
    })));
}

/// The answer to our CREATE_CHILD_SA: the new CHILD_SA reported, then the old one deleted.
pub(crate) fn response(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    now: Instant,
    out: &mut Output,
) {
    let Some(offer) = sa.rekey.pop_front() else {
        return;
    };
    let payloads = &message.payloads;
    let fail = |sa: &IkeSa, failure, out: &mut Output| {
        out.event(Event::Failed {
            peer: sa.peer.clone(),
            failure,
        });
    };
    // Whatever the answer, a collision on this CHILD_SA is settled by it.
    let collision = offer.old_inbound.and_then(|old| {
        let at = sa
            .child_collisions
            .iter()
            .position(|c| c.old_inbound == old)?;
        Some(sa.child_collisions.remove(at))
    });
    if let Some(error) = error_notify(payloads) {
        if let Some(old) = offer.old_inbound
            && collision.is_none()
        {
            refused(settings, sa, old, error, now, out);
        }
        if matches!(
            error,
            NotifyType::TEMPORARY_FAILURE | NotifyType::CHILD_SA_NOT_FOUND
        ) {
            return;
        }
        let failure = match error {
            NotifyType::NO_PROPOSAL_CHOSEN => Failure::NoEspProposal,
            NotifyType::TS_UNACCEPTABLE => Failure::TsUnacceptable,
            other => Failure::PeerError(other),
        };
        fail(sa, failure, out);
        return;
    }
    let answer = gather(payloads);
    let (Some(reply), Some(nr), Some(tsi), Some(tsr)) =
        (answer.sa, answer.nonce, answer.tsi, answer.tsr)
    else {
        fail(
            sa,
            Failure::Protocol("create_child_sa response lacks sa, nonce or ts"),
            out,
        );
        return;
    };
    let suite =
        proposal::accept(&peer.esp_proposals, reply, offer.share.is_some()).and_then(|c| c.esp());
    let outbound_spi = reply
        .first()
        .and_then(|p| <[u8; 4]>::try_from(p.spi.as_slice()).ok())
        .map(u32::from_be_bytes);
    let (Some(suite), Some(outbound_spi)) = (suite, outbound_spi) else {
        fail(
            sa,
            Failure::Protocol("responder chose an esp proposal we did not offer"),
            out,
        );
        return;
    };
    let shared = match (&offer.share, answer.ke, suite.group) {
        (None, None, None) => None,
        (Some(share), Some((group, data)), Some(chosen))
            if Some(chosen) == DhGroup::from_id(group) && chosen == share.group() =>
        {
            let Ok(shared) = share.agree(data) else {
                fail(
                    sa,
                    Failure::Protocol("responder's ke is not a valid public value"),
                    out,
                );
                return;
            };
            Some(shared)
        }
        _ => {
            fail(
                sa,
                Failure::Protocol("responder's ke does not match the chosen group"),
                out,
            );
            return;
        }
    };
    if !selector::within(tsi, &offer.local_ts) || !selector::within(tsr, &offer.remote_ts) {
        fail(
            sa,
            Failure::Protocol("responder widened the traffic selectors"),
            out,
        );
        return;
    }
    let mode = if find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some() {
        Mode::Transport
    } else {
        Mode::Tunnel
    };
    if mode != peer.mode {
        fail(sa, Failure::Mode("the responder chose another mode"), out);
        return;
    }
    let Some((i2r, r2i)) = keys(sa, suite, shared.as_deref().map(|s| &s[..]), &offer.ni, nr) else {
        return;
    };
    let mut child = Child::new(offer.spi, outbound_spi, &peer.lifetimes, now);
    // §2.8.1: the exchange with the lowest nonce made the redundant CHILD_SA.
    let redundant = collision
        .as_ref()
        .is_some_and(|c| super::ike_rekey::lowest(&offer.ni, nr) < c.lowest.as_slice());
    if collision.is_some() {
        out.event(Event::RekeyCollision {
            peer: sa.peer.clone(),
            ike: false,
            ours_survives: !redundant,
        });
    }
    child.retiring = redundant;
    sa.children.push(child);
    out.event(Event::ChildSaEstablished(Box::new(ChildSa {
        peer: sa.peer.clone(),
        ike_spis: sa.spis(),
        inbound_spi: offer.spi,
        outbound_spi,
        suite,
        inbound: r2i,
        outbound: i2r,
        mode,
        local_ts: tsi.clone(),
        remote_ts: tsr.clone(),
        local: sa.local,
        remote: sa.remote,
        encapsulated: sa.nat,
        rekeys: offer.old_inbound,
        send_from: if redundant {
            SendFrom::Never
        } else {
            SendFrom::Now
        },
    })));
    // §2.8: the side that rekeyed deletes the old CHILD_SA once the new one is up; after a
    // collision we lost, our redundant new one instead (the peer deletes the old one).
    let doomed = if redundant {
        Some(offer.spi)
    } else {
        offer.old_inbound
    };
    if let Some(doomed) = doomed
        && sa.children.iter().any(|c| c.inbound_spi == doomed)
        && !sa.deleting_child(doomed)
    {
        retire(sa, doomed);
        sa.send_request(
            settings,
            ExchangeType::INFORMATIONAL,
            vec![Payload::Delete(Delete {
                protocol: ProtocolId::ESP,
                spis: vec![doomed.to_be_bytes()],
            })],
            RequestKind::DeleteChild {
                inbound_spi: doomed,
            },
            now,
            out,
        );
    }
}

/// Marks the CHILD_SA we receive on with `inbound_spi` as on its way out (no more rekeys).
fn retire(sa: &mut IkeSa, inbound_spi: u32) {
    if let Some(c) = sa
        .children
        .iter_mut()
        .find(|c| c.inbound_spi == inbound_spi)
    {
        c.retiring = true;
    }
}

/// Our rekey of `old` was refused with `error` (no collision to settle): TEMPORARY_FAILURE
/// retries later (§2.25), CHILD_SA_NOT_FOUND removes it (the peer's Delete crossed our
/// rekey), anything else leaves it to expire.
fn refused(
    settings: &Settings,
    sa: &mut IkeSa,
    old: u32,
    error: NotifyType,
    now: Instant,
    out: &mut Output,
) {
    let Some(at) = sa.children.iter().position(|c| c.inbound_spi == old) else {
        return;
    };
    match error {
        NotifyType::TEMPORARY_FAILURE => {
            sa.children[at].rekey_at = super::lifetimes::retry_at(settings, now);
        }
        NotifyType::CHILD_SA_NOT_FOUND => {
            let child = sa.children.remove(at);
            out.event(Event::ChildSaDeleted {
                peer: sa.peer.clone(),
                inbound_spi: child.inbound_spi,
                outbound_spi: child.outbound_spi,
            });
        }
        _ => sa.children[at].rekey_at = sa.children[at].expire_at,
    }
}
