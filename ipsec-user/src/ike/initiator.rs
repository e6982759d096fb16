//! The initiator's side of IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2, §2.6, §2.7, §2.15, §2.23).
//!
//! Contract: [`start`] builds the SA and its IKE_SA_INIT request (our proposals, a KE of the
//! first group we propose, Ni, both NAT_DETECTION notifies). [`init_response`] follows a COOKIE
//! or an INVALID_KE_PAYLOAD (with a group we offered) by retrying, at most twice; otherwise it
//! checks the responder chose one of our proposals and its KE, derives the keys and sends
//! IKE_AUTH (moving to port 4500 when NAT was detected) with our PSK AUTH and the first
//! CHILD_SA. [`auth_response`] verifies the responder's AUTH before anything else and reports
//! the IKE SA and the CHILD_SA (or why the CHILD_SA failed). Every return value says whether the
//! SA is kept.

use std::net::SocketAddr;
use std::time::Instant;

use subtle::ConstantTimeEq;

use crate::model::Mode;

use super::config::{PeerConfig, Settings};
use super::dh::{DhGroup, KeyShare};
use super::endpoint::random_ike_spi;
use super::event::{ChildSa, DirectionKeys, Event, Failure, Output, SendFrom};
use super::keys::{ChildKeys, IkeKeys, KeyLengths, psk_auth, skeyseed};
use super::message::{ExchangeType, Message};
use super::natd::nat_hash;
use super::payload::{Notify, NotifyType, Payload, auth_method};
use super::proposal::{self, encryption_key_len, integrity_key_len};
use super::sa::{ChildOffer, IkeSa, RequestKind, Role, SaState};
use super::selector;
use super::sk::{SkOpener, SkSealer};

/// Nonce length: 32 octets, at least half the PRF key size (§2.10).
pub(crate) const NONCE_LEN: usize = 32;

pub(crate) fn nonce() -> Vec<u8> {
    let mut n = vec![0; NONCE_LEN];
    rand::fill(&mut n[..]);
    n
}

/// A random CHILD_SA SPI outside the reserved 1..=255 (RFC 4303 §2.1).
pub(crate) fn random_child_spi() -> u32 {
    loop {
        let mut b = [0; 4];
        rand::fill(&mut b);
        let spi = u32::from_be_bytes(b);
        if spi > 255 {
            return spi;
        }
    }
}

/// The two NAT_DETECTION notifies of a message from `local` to `remote`.
pub(crate) fn nat_notifies(
    spi_i: [u8; 8],
    spi_r: [u8; 8],
    local: SocketAddr,
    remote: SocketAddr,
) -> [Payload; 2] {
    [
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_SOURCE_IP,
            nat_hash(&spi_i, &spi_r, local).to_vec(),
        )),
        Payload::Notify(Notify::new(
            NotifyType::NAT_DETECTION_DESTINATION_IP,
            nat_hash(&spi_i, &spi_r, remote).to_vec(),
        )),
    ]
}

/// True when the peer's NAT_DETECTION notifies say there is a NAT between us (or the peer
/// fakes one to get UDP encapsulation, as strongSwan's kernel-libipsec does): its source hash
/// is not that of the address we saw it come from, or its destination hash not ours.
pub(crate) fn nat_detected(
    payloads: &[Payload],
    spi_i: [u8; 8],
    spi_r: [u8; 8],
    local: SocketAddr,
    remote: SocketAddr,
) -> bool {
    let mut sources = Vec::new();
    let mut destination = None;
    for p in payloads {
        if let Payload::Notify(n) = p {
            if n.kind == NotifyType::NAT_DETECTION_SOURCE_IP {
                sources.push(n.data.as_slice());
            } else if n.kind == NotifyType::NAT_DETECTION_DESTINATION_IP {
                destination = Some(n.data.as_slice());
            }
        }
    }
    if sources.is_empty() && destination.is_none() {
        return false;
    }
    let source_seen = nat_hash(&spi_i, &spi_r, remote);
    let peer_behind_nat = !sources.iter().any(|s| *s == source_seen);
    let we_behind_nat = destination.is_some_and(|d| d != nat_hash(&spi_i, &spi_r, local));
    peer_behind_nat || we_behind_nat
}

pub(crate) fn find_notify(payloads: &[Payload], kind: NotifyType) -> Option<&Notify> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind == kind => Some(n),
        _ => None,
    })
}

/// The first error notify of a message, if any.
pub(crate) fn error_notify(payloads: &[Payload]) -> Option<NotifyType> {
    payloads.iter().find_map(|p| match p {
        Payload::Notify(n) if n.kind.is_error() => Some(n.kind),
        _ => None,
    })
}

fn init_payloads(peer: &PeerConfig, sa: &IkeSa, share: &KeyShare) -> Vec<Payload> {
    let mut payloads = Vec::new();
    if let Some(cookie) = &sa.cookie {
        // §2.6: the COOKIE notify comes first.
        payloads.push(Payload::Notify(Notify::new(
            NotifyType::COOKIE,
            cookie.clone(),
        )));
    }
    payloads.push(Payload::Sa(proposal::to_wire(
        &peer.ike_proposals,
        &[],
        true,
    )));
    payloads.push(Payload::Ke {
        group: share.group().id(),
        data: share.public().to_vec(),
    });
    payloads.push(Payload::Nonce(sa.ni.clone()));
    payloads.extend(nat_notifies(sa.spi_i, [0; 8], sa.local, sa.remote));
    payloads
}

/// A new initiator SA with its IKE_SA_INIT request sent.
pub(crate) fn start(
    settings: &Settings,
    peer: &PeerConfig,
    now: Instant,
    out: &mut Output,
) -> IkeSa {
    let local = SocketAddr::new(peer.local, settings.ike_port);
    let remote = SocketAddr::new(peer.remote, settings.ike_port);
    let mut sa = IkeSa::new(peer.name.clone(), Role::Initiator, local, remote, now);
    sa.spi_i = random_ike_spi();
    sa.ni = nonce();
    let group = proposal::first_group(&peer.ike_proposals).unwrap_or(DhGroup::Curve25519);
    let share = KeyShare::generate(group);
    let payloads = init_payloads(peer, &sa, &share);
    sa.share = Some(share);
    sa.send_request(
        settings,
        ExchangeType::IKE_SA_INIT,
        payloads,
        RequestKind::Init,
        now,
        out,
    );
    sa
}

fn fail(sa: &IkeSa, failure: Failure, out: &mut Output) -> bool {
    out.event(Event::Failed {
        peer: sa.peer.clone(),
        failure,
    });
    false
}

/// The IKE_SA_INIT response.
#[allow(
    clippy::too_many_lines,
    reason = "one exchange step, in the RFC's order"
)]
pub(crate) fn init_response(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    bytes: &[u8],
    now: Instant,
    out: &mut Output,
) -> bool {
    let payloads = &message.payloads;
    if let Some(cookie) = find_notify(payloads, NotifyType::COOKIE) {
        if sa.init_retries >= 2 || cookie.data.is_empty() || cookie.data.len() > 64 {
            return fail(sa, Failure::Protocol("cookie loop or bad cookie"), out);
        }
        sa.init_retries += 1;
        sa.cookie = Some(cookie.data.clone());
        let Some(share) = sa.share.take() else {
            return false;
        };
        let retry = init_payloads(peer, sa, &share);
        sa.share = Some(share);
        sa.restart_init(settings, retry, now, out);
        return true;
    }
    if let Some(invalid) = find_notify(payloads, NotifyType::INVALID_KE_PAYLOAD) {
        // §1.2: retry with the group the responder asks for, if we offered it.
        let wanted = <[u8; 2]>::try_from(invalid.data.as_slice())
            .ok()
            .and_then(|g| DhGroup::from_id(u16::from_be_bytes(g)));
        let offered = wanted.filter(|g| {
            peer.ike_proposals
                .iter()
                .any(|p| p.groups().any(|o| o == *g))
        });
        let current = sa.share.as_ref().map(KeyShare::group);
        return match offered {
            Some(group) if sa.init_retries < 2 && Some(group) != current => {
                sa.init_retries += 1;
                let share = KeyShare::generate(group);
                let retry = init_payloads(peer, sa, &share);
                sa.share = Some(share);
                sa.restart_init(settings, retry, now, out);
                true
            }
            _ => fail(
                sa,
                Failure::Protocol("invalid ke payload for a group we did not offer"),
                out,
            ),
        };
    }
    if let Some(error) = error_notify(payloads) {
        let failure = if error == NotifyType::NO_PROPOSAL_CHOSEN {
            Failure::NoIkeProposal
        } else {
            Failure::PeerError(error)
        };
        return fail(sa, failure, out);
    }
    let mut sa_payload = None;
    let mut ke = None;
    let mut nr = None;
    for p in payloads {
        match p {
            Payload::Sa(proposals) => sa_payload = Some(proposals),
            Payload::Ke { group, data } => ke = Some((*group, data)),
            Payload::Nonce(n) => nr = Some(n),
            _ => {}
        }
    }
    let (Some(reply), Some((group, ke_data)), Some(nr)) = (sa_payload, ke, nr) else {
        return fail(
            sa,
            Failure::Protocol("ike_sa_init response lacks sa, ke or nonce"),
            out,
        );
    };
    let Some(suite) = proposal::accept(&peer.ike_proposals, reply, true).and_then(|c| c.ike())
    else {
        return fail(
            sa,
            Failure::Protocol("responder chose a proposal we did not offer"),
            out,
        );
    };
    let Some(share) = sa.share.take() else {
        return false;
    };
    if suite.group != share.group() || group != share.group().id() {
        return fail(
            sa,
            Failure::Protocol("responder's group is not the one of our ke"),
            out,
        );
    }
    let Ok(shared) = share.agree(ke_data) else {
        return fail(
            sa,
            Failure::Protocol("responder's ke is not a valid public value"),
            out,
        );
    };
    sa.spi_r = message.header.spi_r;
    if sa.spi_r == [0; 8] {
        return fail(sa, Failure::Protocol("responder spi is zero"), out);
    }
    sa.nr.clone_from(nr);
    sa.init_response = bytes.to_vec();
    sa.nat = nat_detected(payloads, sa.spi_i, sa.spi_r, sa.local, sa.remote);
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let seed = skeyseed(&sa.ni, &sa.nr, &shared);
    let keys = IkeKeys::derive(lengths, &seed[..], &sa.ni, &sa.nr, &sa.spi_i, &sa.spi_r);
    let (Ok(sealer), Ok(opener)) = (
        SkSealer::new(suite.encryption, suite.integrity, &keys.sk_ei, &keys.sk_ai),
        SkOpener::new(suite.encryption, suite.integrity, &keys.sk_er, &keys.sk_ar),
    ) else {
        return fail(sa, Failure::Protocol("ike sa keys"), out);
    };
    sa.suite = Some(suite);
    sa.sealer = Some(sealer);
    sa.opener = Some(opener);
    if sa.nat {
        // §2.23: with NAT, IKE_AUTH and everything after it goes to port 4500.
        sa.local.set_port(settings.natt_port);
        sa.remote.set_port(settings.natt_port);
    }

    let id = peer.local_id.to_payload();
    let auth = psk_auth(
        peer.psk.bytes(),
        &sa.init_request,
        &sa.nr,
        &keys.sk_pi,
        &id.body(),
    );
    sa.keys = Some(keys);
    let spi = random_child_spi();
    let offer = ChildOffer {
        spi,
        local_ts: peer.local_ts.clone(),
        remote_ts: peer.remote_ts.clone(),
    };
    let mut auth_payloads = vec![
        Payload::IdI(id),
        Payload::Notify(Notify::new(NotifyType::INITIAL_CONTACT, Vec::new())),
        Payload::Auth {
            method: auth_method::SHARED_KEY_MIC,
            data: auth.to_vec(),
        },
    ];
    if peer.mode == Mode::Transport {
        auth_payloads.push(Payload::Notify(Notify::new(
            NotifyType::USE_TRANSPORT_MODE,
            Vec::new(),
        )));
    }
    auth_payloads.push(Payload::Sa(proposal::to_wire(
        &peer.esp_proposals,
        &spi.to_be_bytes(),
        false,
    )));
    auth_payloads.push(Payload::TsI(offer.local_ts.clone()));
    auth_payloads.push(Payload::TsR(offer.remote_ts.clone()));
    sa.child_offer = Some(offer);
    sa.state = SaState::AuthSent;
    sa.complete_request(settings, now, out);
    sa.send_request(
        settings,
        ExchangeType::IKE_AUTH,
        auth_payloads,
        RequestKind::Auth,
        now,
        out,
    );
    true
}

/// The IKE_AUTH response (decrypted).
pub(crate) fn auth_response(
    _settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    now: Instant,
    out: &mut Output,
) -> bool {
    let payloads = &message.payloads;
    if find_notify(payloads, NotifyType::AUTHENTICATION_FAILED).is_some() {
        return fail(sa, Failure::AuthenticationRefused, out);
    }
    let mut id = None;
    let mut auth = None;
    for p in payloads {
        match p {
            Payload::IdR(i) => id = Some(i),
            Payload::Auth { method, data } => auth = Some((*method, data)),
            _ => {}
        }
    }
    let (Some(id), Some((method, auth)), Some(keys)) = (id, auth, &sa.keys) else {
        if let Some(error) = error_notify(payloads) {
            return fail(sa, Failure::PeerError(error), out);
        }
        return fail(
            sa,
            Failure::Protocol("ike_auth response lacks idr or auth"),
            out,
        );
    };
    let expected = psk_auth(
        peer.psk.bytes(),
        &sa.init_response,
        &sa.ni,
        &keys.sk_pr,
        &id.body(),
    );
    let id_ok = peer
        .remote_id
        .as_ref()
        .is_none_or(|want| want.to_payload() == *id);
    if method != auth_method::SHARED_KEY_MIC || !id_ok || !bool::from(expected.ct_eq(auth)) {
        return fail(sa, Failure::PeerAuthentication, out);
    }
    sa.state = SaState::Established;
    sa.established = Some(now);
    super::lifetimes::establish(sa, &peer.lifetimes, now);
    let Some(suite) = sa.suite else {
        return false;
    };
    out.event(Event::IkeSaEstablished {
        peer: sa.peer.clone(),
        spis: sa.spis(),
        suite,
        initiator: true,
        encapsulated: sa.nat,
    });
    if let Some(child) = first_child(peer, sa, payloads, now, out) {
        out.event(Event::ChildSaEstablished(Box::new(child)));
    }
    true
}

/// The CHILD_SA of the IKE_AUTH response, or the reason it failed (reported; the IKE SA stays).
fn first_child(
    peer: &PeerConfig,
    sa: &mut IkeSa,
    payloads: &[Payload],
    now: Instant,
    out: &mut Output,
) -> Option<ChildSa> {
    let offer = sa.child_offer.take()?;
    let mut child_sa = None;
    let mut tsi = None;
    let mut tsr = None;
    for p in payloads {
        match p {
            Payload::Sa(s) => child_sa = Some(s),
            Payload::TsI(t) => tsi = Some(t),
            Payload::TsR(t) => tsr = Some(t),
            _ => {}
        }
    }
    let failure = |failure| Event::Failed {
        peer: sa.peer.clone(),
        failure,
    };
    if let Some(error) = error_notify(payloads) {
        out.event(failure(match error {
            NotifyType::NO_PROPOSAL_CHOSEN => Failure::NoEspProposal,
            NotifyType::TS_UNACCEPTABLE => Failure::TsUnacceptable,
            other => Failure::PeerError(other),
        }));
        return None;
    }
    let (Some(reply), Some(tsi), Some(tsr)) = (child_sa, tsi, tsr) else {
        out.event(failure(Failure::Protocol(
            "ike_auth response lacks sa or ts",
        )));
        return None;
    };
    let suite = proposal::accept(&peer.esp_proposals, reply, false).and_then(|c| c.esp());
    let outbound_spi = reply
        .first()
        .and_then(|p| <[u8; 4]>::try_from(p.spi.as_slice()).ok())
        .map(u32::from_be_bytes);
    let (Some(suite), Some(outbound_spi)) = (suite, outbound_spi) else {
        out.event(failure(Failure::Protocol(
            "responder chose an esp proposal we did not offer",
        )));
        return None;
    };
    if !selector::within(tsi, &offer.local_ts) || !selector::within(tsr, &offer.remote_ts) {
        out.event(failure(Failure::Protocol(
            "responder widened the traffic selectors",
        )));
        return None;
    }
    let transport = find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some();
    let mode = match (peer.mode, transport) {
        (Mode::Transport, true) => Mode::Transport,
        (Mode::Tunnel, false) => Mode::Tunnel,
        (Mode::Transport, false) => {
            out.event(failure(Failure::Mode(
                "the responder chose tunnel mode, we want transport",
            )));
            return None;
        }
        (Mode::Tunnel, true) => {
            out.event(failure(Failure::Mode(
                "transport mode answered to a tunnel request",
            )));
            return None;
        }
    };
    let keys = sa.keys.as_ref()?;
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let k = ChildKeys::derive(lengths, &keys.sk_d, None, &sa.ni, &sa.nr);
    sa.children.push(super::sa::Child::new(
        offer.spi,
        outbound_spi,
        &peer.lifetimes,
        now,
    ));
    Some(ChildSa {
        peer: sa.peer.clone(),
        ike_spis: sa.spis(),
        inbound_spi: offer.spi,
        outbound_spi,
        suite,
        inbound: DirectionKeys {
            encryption: k.r2i_encryption,
            integrity: k.r2i_integrity,
        },
        outbound: DirectionKeys {
            encryption: k.i2r_encryption,
            integrity: k.i2r_integrity,
        },
        mode,
        local_ts: tsi.clone(),
        remote_ts: tsr.clone(),
        local: sa.local,
        remote: sa.remote,
        encapsulated: sa.nat,
        rekeys: None,
        send_from: SendFrom::Now,
    })
}
