//! The responder's side of IKE_SA_INIT and IKE_AUTH (RFC 7296 §1.2, §2.6, §2.9, §2.15, §2.21).
//!
//! Contract:
//! - [`init_request`] answers only configured peers' addresses. Above the half-open bound it
//!   answers with a COOKIE and keeps no state until the initiator echoes it (§2.6). No common
//!   proposal: NO_PROPOSAL_CHOSEN (reported as [`Failure::NoIkeProposal`]); a KE of another
//!   group than the chosen one: INVALID_KE_PAYLOAD naming ours, statelessly. Otherwise a
//!   half-open SA, indexed by (address, SPIi) so a retransmitted request gets the same answer.
//! - [`auth_request`] checks the initiator's identity and AUTH before anything else: a wrong PSK
//!   is answered with AUTHENTICATION_FAILED and the SA is dropped
//!   ([`Failure::PeerAuthentication`]). Then the CHILD_SA: ESP proposal (our order), traffic
//!   selectors narrowed to the configured ones (§2.9), mode (transport only when both want it);
//!   a CHILD_SA that fails leaves the IKE SA established and is answered with the error notify.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Instant;

use subtle::ConstantTimeEq;

use crate::model::Mode;

use super::config::{PeerConfig, Settings};
use super::create_child::chosen_child;
use super::dh::KeyShare;
use super::endpoint::{Ike, random_ike_spi};
use super::event::{ChildSa, DirectionKeys, Event, Failure, Output, SendFrom};
use super::initiator::{
    error_notify, find_notify, nat_detected, nat_notifies, nonce, random_child_spi,
};
use super::keys::{ChildKeys, IkeKeys, KeyLengths, psk_auth, skeyseed};
use super::message::{ExchangeType, Header, Message, flags};
use super::payload::{Notify, NotifyType, Payload, ProtocolId, auth_method};
use super::proposal::{self, encryption_key_len, integrity_key_len};
use super::sa::{Child, IkeSa, Role, SaState, datagram};
use super::selector;
use super::sk::{SkOpener, SkSealer};

/// A stateless answer to an IKE_SA_INIT request: just one notify.
fn notify_only(
    settings: &Settings,
    request: &Header,
    local: SocketAddr,
    remote: SocketAddr,
    notify: Notify,
    out: &mut Output,
) {
    let message = Message {
        header: Header {
            spi_i: request.spi_i,
            spi_r: [0; 8],
            exchange: ExchangeType::IKE_SA_INIT,
            flags: flags::RESPONSE,
            message_id: 0,
        },
        payloads: vec![Payload::Notify(notify)],
    };
    if let Ok(bytes) = message.emit() {
        out.datagrams.push(datagram(settings, local, remote, bytes));
    }
}

/// Half-open SAs beyond which even a valid cookie gets no state: twice the bound (at least 16).
pub(crate) fn hard_half_open_cap(settings: &Settings) -> usize {
    settings.half_open_limit.saturating_mul(2).max(16)
}

/// An IKE_SA_INIT request (SPIr zero).
#[allow(
    clippy::too_many_lines,
    reason = "one exchange step, in the RFC's order"
)]
pub(crate) fn init_request(
    ike: &mut Ike,
    local: SocketAddr,
    remote: SocketAddr,
    message: &Message,
    bytes: &[u8],
    now: Instant,
    out: &mut Output,
) {
    let header = message.header;
    if header.message_id != 0 || !header.from_initiator() {
        out.drop_reason(
            remote,
            "ike_sa_init request with a message id or without the i flag",
        );
        return;
    }
    // A retransmission: the same answer again (§2.1).
    if let Some(spi) = ike.half_open.get(&(remote, header.spi_i))
        && let Some(sa) = ike.sas.get_mut(spi)
    {
        if sa.init_request == bytes
            && let Some((_, answer)) = &sa.last_response
        {
            out.datagrams.push(answer.clone());
            sa.sent += 1;
        } else {
            out.drop_reason(remote, "another ike_sa_init under a known spi");
        }
        return;
    }
    let Some(peer) = ike
        .peers
        .iter()
        .find(|p| p.remote == remote.ip() && p.local == local.ip())
    else {
        out.drop_reason(
            remote,
            "ike_sa_init from an address that is no configured peer",
        );
        return;
    };
    let settings = &ike.settings;
    let payloads = &message.payloads;
    let mut offered = None;
    let mut ke = None;
    let mut ni = None;
    for p in payloads {
        match p {
            Payload::Sa(s) => offered = Some(s),
            Payload::Ke { group, data } => ke = Some((*group, data)),
            Payload::Nonce(n) => ni = Some(n),
            _ => {}
        }
    }
    let (Some(offered), Some((group, ke_data)), Some(ni)) = (offered, ke, ni) else {
        out.drop_reason(remote, "ike_sa_init request lacks sa, ke or nonce");
        return;
    };
    // §2.6: over the bound, only an initiator that echoes our cookie gets state; and even with
    // cookies, no more than twice the bound (a peer's address spoofed by someone who sees our
    // answers). No DH, no allocation beyond the answer, before this check.
    let half_open = ike.half_open_count();
    if half_open >= settings.half_open_limit {
        let echoed = match payloads.first() {
            Some(Payload::Notify(n)) if n.kind == NotifyType::COOKIE => Some(&n.data),
            _ => None,
        };
        let valid =
            echoed.is_some_and(|c| ike.cookies.check(now, c, ni, remote.ip(), header.spi_i));
        if !valid {
            let value = ike.cookies.make(now, ni, remote.ip(), header.spi_i);
            notify_only(
                settings,
                &header,
                local,
                remote,
                Notify::new(NotifyType::COOKIE, value),
                out,
            );
            out.event(Event::CookieSent { remote });
            return;
        }
        if half_open >= hard_half_open_cap(settings) {
            out.drop_reason(remote, "half-open ike sas at the hard bound");
            return;
        }
    }
    let Some((number, chosen)) = proposal::select(&peer.ike_proposals, offered, true) else {
        notify_only(
            settings,
            &header,
            local,
            remote,
            Notify::new(NotifyType::NO_PROPOSAL_CHOSEN, Vec::new()),
            out,
        );
        out.event(Event::Failed {
            peer: peer.name.clone(),
            failure: Failure::NoIkeProposal,
        });
        return;
    };
    let Some(suite) = chosen.ike() else {
        return;
    };
    if group != suite.group.id() {
        // §1.2: name the group we want; the initiator retries. No state is kept.
        notify_only(
            settings,
            &header,
            local,
            remote,
            Notify::new(
                NotifyType::INVALID_KE_PAYLOAD,
                suite.group.id().to_be_bytes().to_vec(),
            ),
            out,
        );
        return;
    }
    let share = KeyShare::generate(suite.group);
    let Ok(shared) = share.agree(ke_data) else {
        out.drop_reason(remote, "invalid key exchange value");
        return;
    };
    let mut sa = IkeSa::new(peer.name.clone(), Role::Responder, local, remote, now);
    sa.spi_i = header.spi_i;
    sa.spi_r = random_ike_spi();
    while ike.sas.contains_key(&sa.spi_r) {
        sa.spi_r = random_ike_spi();
    }
    sa.ni.clone_from(ni);
    sa.nr = nonce();
    sa.init_request = bytes.to_vec();
    sa.nat = nat_detected(payloads, sa.spi_i, [0; 8], local, remote);
    sa.expected_request_id = 1;
    sa.suite = Some(suite);
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let seed = skeyseed(&sa.ni, &sa.nr, &shared);
    let keys = IkeKeys::derive(lengths, &seed[..], &sa.ni, &sa.nr, &sa.spi_i, &sa.spi_r);
    let mut answer = vec![
        Payload::Sa(vec![proposal::reply(number, ProtocolId::IKE, &[], &chosen)]),
        Payload::Ke {
            group: suite.group.id(),
            data: share.public().to_vec(),
        },
        Payload::Nonce(sa.nr.clone()),
    ];
    answer.extend(nat_notifies(sa.spi_i, sa.spi_r, local, remote));
    sa.respond(settings, ExchangeType::IKE_SA_INIT, 0, answer, out);
    sa.init_response = match &sa.last_response {
        Some((_, d)) => d.bytes.clone(),
        None => return,
    };
    let (Ok(sealer), Ok(opener)) = (
        SkSealer::new(suite.encryption, suite.integrity, &keys.sk_er, &keys.sk_ar),
        SkOpener::new(suite.encryption, suite.integrity, &keys.sk_ei, &keys.sk_ai),
    ) else {
        return;
    };
    sa.sealer = Some(sealer);
    sa.opener = Some(opener);
    sa.keys = Some(keys);
    sa.received = 1;
    ike.half_open.insert((remote, sa.spi_i), sa.spi_r);
    ike.sas.insert(sa.spi_r, sa);
}

/// The IKE_AUTH request (decrypted). False when the SA is to be dropped.
#[allow(
    clippy::too_many_lines,
    reason = "one exchange step, in the RFC's order"
)]
pub(crate) fn auth_request(
    settings: &Settings,
    peer: &PeerConfig,
    sa: &mut IkeSa,
    message: &Message,
    now: Instant,
    out: &mut Output,
    others: &HashMap<[u8; 8], IkeSa>,
) -> bool {
    let message_id = message.header.message_id;
    let payloads = &message.payloads;
    let mut id = None;
    let mut auth = None;
    for p in payloads {
        match p {
            Payload::IdI(i) => id = Some(i),
            Payload::Auth { method, data } => auth = Some((*method, data)),
            _ => {}
        }
    }
    let Some(keys) = &sa.keys else {
        return false;
    };
    let verified = match (id, auth) {
        (Some(id), Some((method, auth))) => {
            let expected = psk_auth(
                peer.psk.bytes(),
                &sa.init_request,
                &sa.nr,
                &keys.sk_pi,
                &id.body(),
            );
            let id_ok = peer
                .remote_id
                .as_ref()
                .is_none_or(|want| want.to_payload() == *id);
            method == auth_method::SHARED_KEY_MIC && id_ok && bool::from(expected.ct_eq(auth))
        }
        _ => false,
    };
    if !verified {
        // §2.21.2: answer AUTHENTICATION_FAILED (encrypted) and forget the SA.
        sa.respond(
            settings,
            ExchangeType::IKE_AUTH,
            message_id,
            vec![Payload::Notify(Notify::new(
                NotifyType::AUTHENTICATION_FAILED,
                Vec::new(),
            ))],
            out,
        );
        out.event(Event::Failed {
            peer: sa.peer.clone(),
            failure: Failure::PeerAuthentication,
        });
        return false;
    }
    let our_id = peer.local_id.to_payload();
    let our_auth = psk_auth(
        peer.psk.bytes(),
        &sa.init_response,
        &sa.ni,
        &keys.sk_pr,
        &our_id.body(),
    );
    let mut answer = vec![
        Payload::IdR(our_id),
        Payload::Auth {
            method: auth_method::SHARED_KEY_MIC,
            data: our_auth.to_vec(),
        },
    ];
    let child = match negotiate_child(peer, sa, payloads, others, now) {
        Ok((child, child_payloads)) => {
            answer.extend(child_payloads);
            Some(child)
        }
        Err((notify, failure)) => {
            answer.push(Payload::Notify(Notify::new(notify, Vec::new())));
            out.event(Event::Failed {
                peer: sa.peer.clone(),
                failure,
            });
            None
        }
    };
    sa.respond(settings, ExchangeType::IKE_AUTH, message_id, answer, out);
    sa.state = SaState::Established;
    sa.established = Some(now);
    super::lifetimes::establish(sa, &peer.lifetimes, now);
    if let Some(suite) = sa.suite {
        out.event(Event::IkeSaEstablished {
            peer: sa.peer.clone(),
            spis: sa.spis(),
            suite,
            initiator: false,
            encapsulated: sa.nat,
        });
    }
    if let Some(child) = child {
        out.event(Event::ChildSaEstablished(Box::new(child)));
    }
    true
}

/// An SPI no CHILD_SA of any IKE SA receives on.
pub(crate) fn unused_child_spi(sa: &IkeSa, others: &HashMap<[u8; 8], IkeSa>) -> u32 {
    loop {
        let spi = random_child_spi();
        let used = |s: &IkeSa| s.children.iter().any(|c| c.inbound_spi == spi);
        if !used(sa) && !others.values().any(used) {
            return spi;
        }
    }
}

type ChildResult = Result<(ChildSa, Vec<Payload>), (NotifyType, Failure)>;

/// The first CHILD_SA as the responder: its SA, and the payloads that answer it.
fn negotiate_child(
    peer: &PeerConfig,
    sa: &mut IkeSa,
    payloads: &[Payload],
    others: &HashMap<[u8; 8], IkeSa>,
    now: Instant,
) -> ChildResult {
    let mut offered = None;
    let mut tsi = None;
    let mut tsr = None;
    for p in payloads {
        match p {
            Payload::Sa(s) => offered = Some(s),
            Payload::TsI(t) => tsi = Some(t),
            Payload::TsR(t) => tsr = Some(t),
            _ => {}
        }
    }
    let protocol = || {
        (
            NotifyType::INVALID_SYNTAX,
            Failure::Protocol("ike_auth lacks sa or ts"),
        )
    };
    let (Some(offered), Some(tsi), Some(tsr)) = (offered, tsi, tsr) else {
        return Err(protocol());
    };
    if let Some(error) = error_notify(payloads) {
        return Err((NotifyType::NO_PROPOSAL_CHOSEN, Failure::PeerError(error)));
    }
    let no_proposal = (NotifyType::NO_PROPOSAL_CHOSEN, Failure::NoEspProposal);
    let (number, chosen) =
        proposal::select(&peer.esp_proposals, offered, false).ok_or(no_proposal.clone())?;
    let suite = chosen.esp().ok_or(no_proposal.clone())?;
    let outbound_spi = offered
        .iter()
        .find(|p| p.number == number)
        .and_then(|p| <[u8; 4]>::try_from(p.spi.as_slice()).ok())
        .map(u32::from_be_bytes)
        .ok_or(no_proposal)?;
    // §2.9: TSi is the initiator's (the peer's) side, TSr ours.
    let remote_ts = selector::narrow(tsi, &peer.remote_ts);
    let local_ts = selector::narrow(tsr, &peer.local_ts);
    if remote_ts.is_empty() || local_ts.is_empty() {
        return Err((NotifyType::TS_UNACCEPTABLE, Failure::TsUnacceptable));
    }
    let transport = find_notify(payloads, NotifyType::USE_TRANSPORT_MODE).is_some();
    let mode = match (peer.mode, transport) {
        (Mode::Transport, true) => Mode::Transport,
        // §1.3.1: a responder may refuse transport mode by not echoing the notify.
        (Mode::Tunnel, _) => Mode::Tunnel,
        (Mode::Transport, false) => {
            return Err((
                NotifyType::NO_PROPOSAL_CHOSEN,
                Failure::Mode("the initiator asked for tunnel mode, we want transport"),
            ));
        }
    };
    let inbound_spi = unused_child_spi(sa, others);
    let keys = sa.keys.as_ref().ok_or(protocol())?;
    let lengths = KeyLengths {
        encryption: encryption_key_len(suite.encryption),
        integrity: integrity_key_len(suite.integrity),
    };
    let k = ChildKeys::derive(lengths, &keys.sk_d, None, &sa.ni, &sa.nr);
    let mut answer = chosen_child(mode, number, inbound_spi, &chosen);
    answer.push(Payload::TsI(remote_ts.clone()));
    answer.push(Payload::TsR(local_ts.clone()));
    sa.children
        .push(Child::new(inbound_spi, outbound_spi, &peer.lifetimes, now));
    let child = ChildSa {
        peer: sa.peer.clone(),
        ike_spis: sa.spis(),
        inbound_spi,
        outbound_spi,
        suite,
        inbound: DirectionKeys {
            encryption: k.i2r_encryption,
            integrity: k.i2r_integrity,
        },
        outbound: DirectionKeys {
            encryption: k.r2i_encryption,
            integrity: k.r2i_integrity,
        },
        mode,
        local_ts,
        remote_ts,
        local: sa.local,
        remote: sa.remote,
        encapsulated: sa.nat,
        rekeys: None,
        send_from: SendFrom::Now,
    };
    Ok((child, answer))
}
