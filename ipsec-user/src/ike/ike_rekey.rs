//! Rekeying the IKE SA (RFC 7296 §1.3.2, §2.18) and the collision of two such rekeys (§2.8.2).
//!
//! Contract:
//! - [`start`] sends CREATE_CHILD_SA with our IKE proposals under a new SPI (the proposal's
//!   8-octet SPI field), a nonce and a KE of the first proposal's group; INVALID_KE_PAYLOAD is
//!   retried once with the group asked for (if we offered it).
//! - The new IKE SA's keys: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), then
//!   {SK_d | SK_ai | ...} = prf+(SKEYSEED, Ni | Nr | SPIi | SPIr), the nonces and SPIs of this
//!   exchange, SPIi the new SPI of the side that started it (§2.18): that side is the new SA's
//!   original initiator. Message IDs start at 0 on the new SA.
//! - Make before break: the CHILD_SAs move to the new SA ([`Event::IkeSaRekeyed`]) as soon as
//!   it exists, on both sides; the side that started the rekey then deletes the old SA, which is
//!   dropped without events (it owns nothing any more). The responder keeps the old SA (quiet)
//!   until that Delete comes, or for about the retransmission span.
//! - §2.25.2: a rekey request is answered TEMPORARY_FAILURE while we delete the IKE SA or have a
//!   CHILD_SA exchange outstanding; an answer of TEMPORARY_FAILURE to ours retries after a short
//!   random delay.
//! - §2.8.2, both sides rekey at once: each answers the other's request, so each side has two
//!   new IKE SAs. The exchange whose lowest nonce (of its Ni and Nr) is the lowest of the four
//!   made the redundant SA, which its initiator deletes; the other one is the survivor, whose
//!   initiator deletes the old SA. Both sides compute the same survivor once their own exchange
//!   is answered; until then the SA the peer's exchange made stays quiet (no events, no
//!   CHILD_SAs). If our own exchange fails, or the peer deletes the old SA first, the peer's
//!   new SA is the survivor.

use std::collections::HashMap;
use std::time::Instant;

use super::config::{PeerConfig, Settings};
use super::create_child::gather;
use super::dh::{DhGroup, KeyShare};
use super::endpoint::random_ike_spi;
use super::event::{Event, Failure, Output};
use super::initiator::{error_notify, find_notify, nonce};
use super::keys::{IkeKeys, KeyLengths, rekey_skeyseed};
use super::lifetimes;
use super::message::{ExchangeType, Message};
use super::payload::{Notify, NotifyType, Payload, ProtocolId};
use super::proposal::{self, IkeSuite, encryption_key_len, integrity_key_len};
use super::sa::{IkeSa, RequestKind, Role, SaState};
use super::sk::{SkOpener, SkSealer};

/// Our outstanding rekey of the IKE SA.
pub(crate) struct IkeRekeyOffer {
    /// Our SPI of the new SA (its SPIi).
    pub spi: [u8; 8],
    pub ni: Vec<u8>,
    pub share: KeyShare,
    /// INVALID_KE_PAYLOAD retries so far.
    pub retries: u8,
}

/// The peer's rekey that crossed ours: the SA it made (our SPI of it) and its lowest nonce.
pub(crate) struct IkeCollision {
    pub spi: [u8; 8],
    pub lowest: Vec<u8>,
}

/// The lower of an exchange's two nonces (§2.8.1 compares these).
pub(crate) fn lowest<'a>(ni: &'a [u8], nr: &'a [u8]) -> &'a [u8] {
    ni.min(nr)
}

/// An IKE SPI no SA of ours has.
fn unused_ike_spi(sa: &IkeSa, others: &HashMap<[u8; 8], IkeSa>) -> [u8; 8] {
    loop {
        let spi = random_ike_spi();
        if spi != sa.our_spi() && !others.contains_key(&spi) {
            return spi;
        }
    }
}

/// How long a replaced or redundant SA is kept for its Delete: about the retransmission span.
fn retire_at(settings: &Settings, now: Instant) -> Instant {
    now + settings.retransmit_base * (2u32 << settings.retransmit_tries.min(16))
}

/// Sends our rekey of `sa`.
pub(crate) fn start(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    others: &HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    let group = proposal::first_group(&peer.ike_proposals).unwrap_or(DhGroup::Curve25519);
    start_with(settings, peer, sa, others, group, 0, now, out);
}

#[allow(
    clippy::too_many_arguments,
    reason = "start's arguments and the retry state"
)]
fn start_with(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    others: &HashMap<[u8; 8], IkeSa>,
    group: DhGroup,
    retries: u8,
    now: Instant,
    out: &mut Output,
) {
    let spi = unused_ike_spi(sa, others);
    let ni = nonce();
    let share = KeyShare::generate(group);
    let payloads = vec![
        Payload::Sa(proposal::to_wire(&peer.ike_proposals, &spi, true)),
        Payload::Nonce(ni.clone()),
        Payload::Ke {
            group: group.id(),
            data: share.public().to_vec(),
        },
    ];
    sa.ike_rekey = Some(IkeRekeyOffer {
        spi,
        ni,
        share,
        retries,
    });
    sa.send_request(
        settings,
        ExchangeType::CREATE_CHILD_SA,
        payloads,
        RequestKind::RekeyIke,
        now,
        out,
    );
}

/// The new IKE SA of a rekey of `old`, keyed (§2.18) and established.
#[allow(
    clippy::too_many_arguments,
    reason = "the exchange's results, named as §2.18 does"
)]
fn derive(
    peer: &PeerConfig,
    old: &IkeSa,
    role: Role,
    (spi_i, spi_r): ([u8; 8], [u8; 8]),
    suite: IkeSuite,
    shared: &[u8],
    (ni, nr): (&[u8], &[u8]),
    now: Instant,
) -> Option<IkeSa> {
    let old_keys = old.keys.as_ref()?;
    let seed = rekey_skeyseed(&old_keys.sk_d, shared, ni, nr);
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let keys = IkeKeys::derive(lengths, &seed[..], ni, nr, &spi_i, &spi_r);
    let (seal, open) = match role {
        Role::Initiator => ((&keys.sk_ei, &keys.sk_ai), (&keys.sk_er, &keys.sk_ar)),
        Role::Responder => ((&keys.sk_er, &keys.sk_ar), (&keys.sk_ei, &keys.sk_ai)),
    };
    let sealer = SkSealer::new(suite.encryption, suite.integrity, seal.0, seal.1).ok()?;
    let opener = SkOpener::new(suite.encryption, suite.integrity, open.0, open.1).ok()?;
    let mut new = IkeSa::new(old.peer.clone(), role, old.local, old.remote, now);
    new.state = SaState::Established;
    new.spi_i = spi_i;
    new.spi_r = spi_r;
    new.nat = old.nat;
    new.ni = ni.to_vec();
    new.nr = nr.to_vec();
    new.suite = Some(suite);
    new.sealer = Some(sealer);
    new.opener = Some(opener);
    new.keys = Some(keys);
    new.established = Some(now);
    lifetimes::establish(&mut new, &peer.lifetimes, now);
    Some(new)
}

/// `new` replaces `old`: the CHILD_SAs move, `old` waits quietly for its Delete.
fn adopt(
    settings: &Settings,
    peer: &PeerConfig,
    old: &mut IkeSa,
    new: &mut IkeSa,
    now: Instant,
    out: &mut Output,
) {
    new.children = std::mem::take(&mut old.children);
    new.quiet = false;
    lifetimes::establish(new, &peer.lifetimes, now);
    old.quiet = true;
    old.state = SaState::Deleting;
    old.rekey_at = None;
    old.expire_at = Some(retire_at(settings, now));
    out.event(Event::IkeSaRekeyed {
        peer: old.peer.clone(),
        old_spis: old.spis(),
        new_spis: new.spis(),
    });
}

/// The peer's rekey that crossed ours wins (ours failed, or the peer deleted the old SA):
/// the CHILD_SAs move to the SA it made.
pub(crate) fn settle_to_peer(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    sas: &mut HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    if let Some(collision) = sa.ike_collision.take()
        && let Some(new) = sas.get_mut(&collision.spi)
    {
        out.event(Event::RekeyCollision {
            peer: sa.peer.clone(),
            ike: true,
            ours_survives: false,
        });
        adopt(settings, peer, sa, new, now, out);
    }
}

fn refuse(settings: &Settings, sa: &mut IkeSa, id: u32, notify: Notify, out: &mut Output) {
    sa.respond(
        settings,
        ExchangeType::CREATE_CHILD_SA,
        id,
        vec![Payload::Notify(notify)],
        out,
    );
}

/// The peer's CREATE_CHILD_SA rekeying this IKE SA (an SA payload of IKE proposals).
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
    let temporary = || Notify::new(NotifyType::TEMPORARY_FAILURE, Vec::new());
    if sa.state != SaState::Established || sa.child_exchange_pending() {
        refuse(settings, sa, id, temporary(), out);
        return;
    }
    let offer = gather(&message.payloads);
    let (offered, ni, ke) = (offer.sa, offer.nonce, offer.ke);
    let syntax = || Notify::new(NotifyType::INVALID_SYNTAX, Vec::new());
    let (Some(offered), Some(ni), Some((group, ke_data))) = (offered, ni, ke) else {
        refuse(settings, sa, id, syntax(), out);
        return;
    };
    let Some((number, chosen)) = proposal::select(&peer.ike_proposals, offered, true) else {
        refuse(
            settings,
            sa,
            id,
            Notify::new(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new()),
            out,
        );
        out.event(Event::Failed {
            peer: sa.peer.clone(),
            failure: Failure::NoIkeProposal,
        });
        return;
    };
    let Some(suite) = chosen.ike() else { return };
    if group != suite.group.id() {
        let wanted = suite.group.id().to_be_bytes().to_vec();
        let notify = Notify::new(NotifyType::INVALID_KE_PAYLOAD, wanted);
        refuse(settings, sa, id, notify, out);
        return;
    }
    let their_spi = offered
        .iter()
        .find(|p| p.number == number)
        .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
        .filter(|spi| *spi != [0; 8]);
    let Some(their_spi) = their_spi else {
        refuse(settings, sa, id, syntax(), out);
        return;
    };
    let share = KeyShare::generate(suite.group);
    let Ok(shared) = share.agree(ke_data) else {
        refuse(settings, sa, id, syntax(), out);
        return;
    };
    let our_spi = unused_ike_spi(sa, others);
    let nr = nonce();
    let Some(mut new) = derive(
        peer,
        sa,
        Role::Responder,
        (their_spi, our_spi),
        suite,
        &shared,
        (ni, &nr),
        now,
    ) else {
        return;
    };
    let answer = vec![
        Payload::Sa(vec![proposal::reply(
            number,
            ProtocolId::IKE,
            &our_spi,
            &chosen,
        )]),
        Payload::Nonce(nr.clone()),
        Payload::Ke {
            group: suite.group.id(),
            data: share.public().to_vec(),
        },
    ];
    sa.respond(settings, ExchangeType::CREATE_CHILD_SA, id, answer, out);
    if sa.ike_rekey.is_some() {
        // §2.8.2: ours crossed it; which one survives is settled when ours is answered.
        sa.ike_collision = Some(IkeCollision {
            spi: our_spi,
            lowest: lowest(ni, &nr).to_vec(),
        });
        new.quiet = true;
        new.expire_at = Some(retire_at(settings, now));
    } else {
        adopt(settings, peer, sa, &mut new, now, out);
    }
    sa.successor = Some(Box::new(new));
}

/// The answer to our rekey of `sa` (decrypted).
pub(crate) fn response(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    sas: &mut HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    let Some(offer) = sa.ike_rekey.take() else {
        return;
    };
    let payloads = &message.payloads;
    if let Some(invalid) = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD) {
        let wanted = <[u8; 2]>::try_from(invalid.data.as_slice())
            .ok()
            .and_then(|g| DhGroup::from_id(u16::from_be_bytes(g)))
            .filter(|g| {
                peer.ike_proposals
                    .iter()
                    .any(|p| p.groups().any(|o| o == *g))
            });
        if let Some(group) = wanted
            && offer.retries < 1
            && sa.ike_collision.is_none()
        {
            start_with(settings, peer, sa, sas, group, offer.retries + 1, now, out);
            return;
        }
    }
    if let Some(error) = error_notify(payloads) {
        if error == NotifyType::TEMPORARY_FAILURE {
            sa.rekey_at = Some(lifetimes::retry_at(settings, now));
        } else {
            // The SA lives out its lifetime; the peer may still rekey it.
            sa.rekey_at = None;
            out.event(Event::Failed {
                peer: sa.peer.clone(),
                failure: if error == NotifyType::NO_PROPOSAL_CHOSEN {
                    Failure::NoIkeProposal
                } else {
                    Failure::PeerError(error)
                },
            });
        }
        settle_to_peer(settings, peer, sa, sas, now, out);
        return;
    }
    match answer(peer, sa, &offer, message, now) {
        Ok(new) => settle(settings, peer, sa, &offer, new, sas, now, out),
        Err(failure) => {
            sa.rekey_at = None;
            out.event(Event::Failed {
                peer: sa.peer.clone(),
                failure,
            });
            settle_to_peer(settings, peer, sa, sas, now, out);
        }
    }
}

/// The new SA the responder's answer makes.
fn answer(
    peer: &PeerConfig,
    sa: &IkeSa,
    offer: &IkeRekeyOffer,
    message: &Message,
    now: Instant,
) -> Result<IkeSa, Failure> {
    let answer = gather(&message.payloads);
    let (reply, nr, ke) = (answer.sa, answer.nonce, answer.ke);
    let (Some(reply), Some(nr), Some((group, ke_data))) = (reply, nr, ke) else {
        return Err(Failure::Protocol(
            "ike rekey response lacks sa, nonce or ke",
        ));
    };
    let suite = proposal::accept(&peer.ike_proposals, reply, true)
        .and_then(|c| c.ike())
        .ok_or(Failure::Protocol(
            "responder chose a proposal we did not offer",
        ))?;
    let spi_r = reply
        .first()
        .and_then(|p| <[u8; 8]>::try_from(p.spi.as_slice()).ok())
        .filter(|spi| *spi != [0; 8])
        .ok_or(Failure::Protocol(
            "ike rekey response without a responder spi",
        ))?;
    if suite.group != offer.share.group() || group != suite.group.id() {
        return Err(Failure::Protocol(
            "responder's group is not the one of our ke",
        ));
    }
    let shared = offer
        .share
        .agree(ke_data)
        .map_err(|_| Failure::Protocol("responder's ke is not a valid public value"))?;
    derive(
        peer,
        sa,
        Role::Initiator,
        (offer.spi, spi_r),
        suite,
        &shared,
        (&offer.ni, nr),
        now,
    )
    .ok_or(Failure::Protocol("ike sa keys"))
}

/// Our rekey made `new`: it survives unless a crossing rekey of the peer's has the higher
/// lowest nonce (§2.8.2); the initiator of the survivor deletes the old SA, the initiator of
/// the redundant one deletes that.
#[allow(
    clippy::too_many_arguments,
    reason = "the exchange's state on both SAs"
)]
fn settle(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    offer: &IkeRekeyOffer,
    mut new: IkeSa,
    sas: &mut HashMap<[u8; 8], IkeSa>,
    now: Instant,
    out: &mut Output,
) {
    let ours_lose = sa
        .ike_collision
        .as_ref()
        .is_some_and(|c| lowest(&offer.ni, &new.nr) < c.lowest.as_slice());
    if ours_lose {
        settle_to_peer(settings, peer, sa, sas, now, out);
        new.quiet = true;
        new.expire_at = Some(retire_at(settings, now));
        new.send_delete(settings, now, out);
    } else {
        // Ours survives; a crossing SA of the peer's stays quiet until the peer deletes it (or,
        // if the peer never learns it lost, until it expires unused).
        if sa.ike_collision.take().is_some() {
            out.event(Event::RekeyCollision {
                peer: sa.peer.clone(),
                ike: true,
                ours_survives: true,
            });
        }
        adopt(settings, peer, sa, &mut new, now, out);
        sa.send_delete(settings, now, out);
    }
    sa.successor = Some(Box::new(new));
}
